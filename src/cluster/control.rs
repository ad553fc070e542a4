//! The control plane of the Redis broker: records under `nimbus:c:`/`nimbus:t:` with a TTL,
//! and the control channel `nimbus:ctl` (subscribed at connect on the node's one connection,
//! resubscribed by the connection manager after a reconnect; sharded pub/sub on a Redis
//! Cluster).
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{keys, unreachable, RedisBroker};
use crate::broker::{BrokerError, ControlHandler, ControlPlane, RecordKind};

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl ControlPlane for RedisBroker {
    fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    fn publish_control(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<(), BrokerError>> {
        let mut conn = self.conn.clone();
        let command = conn.publish_command();
        Box::pin(async move {
            redis::cmd(command)
                .arg(keys::CONTROL)
                .arg(payload)
                .query_async::<()>(&mut conn)
                .await
                .map_err(unreachable)
        })
    }

    fn set_control_handler(&self, handler: ControlHandler) {
        *self.control_handler.write() = Some(handler);
    }

    fn save_record(
        &self,
        kind: RecordKind,
        id: &str,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let mut conn = self.conn.clone();
        let key = keys::record(kind, id);
        Box::pin(async move {
            redis::cmd("SET")
                .arg(key)
                .arg(payload)
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async::<()>(&mut conn)
                .await
                .map_err(unreachable)
        })
    }

    fn touch_record(
        &self,
        kind: RecordKind,
        id: &str,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let mut conn = self.conn.clone();
        let key = keys::record(kind, id);
        Box::pin(async move {
            redis::cmd("PEXPIRE")
                .arg(key)
                .arg(ttl_ms(ttl))
                .query_async::<()>(&mut conn)
                .await
                .map_err(unreachable)
        })
    }

    fn load_record(
        &self,
        kind: RecordKind,
        id: &str,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, BrokerError>> {
        let mut conn = self.conn.clone();
        let key = keys::record(kind, id);
        Box::pin(async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
                .map_err(unreachable)
        })
    }

    fn delete_record(
        &self,
        kind: RecordKind,
        id: &str,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let mut conn = self.conn.clone();
        let key = keys::record(kind, id);
        Box::pin(async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut conn)
                .await
                .map_err(unreachable)
        })
    }
}
