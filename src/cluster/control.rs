//! The control plane of the Redis broker: records under `nimbus:c:`/`nimbus:t:` with a TTL,
//! and the control channel `nimbus:ctl` (subscribed at connect on the node's one connection,
//! resubscribed by the connection manager after a reconnect; sharded pub/sub on a Redis
//! Cluster).
use std::sync::Weak;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::presence::DEAD_AFTER;
use super::{keys, unreachable, RedisBroker};
use crate::broker::{ControlChannel, ControlHandler, ControlPlane, RecordKind};
use crate::topic::StoreError;

/// Control messages waiting to be published, at most; beyond it a publish is refused.
pub(super) const CONTROL_QUEUE: usize = 10_000;

/// A control message waiting for its PUBLISH, and who to tell.
pub(super) type ControlJob = (Vec<u8>, oneshot::Sender<Result<(), StoreError>>);

/// Publish control messages one at a time, in the order they were handed over: what one node
/// publishes (sends to one socket, a handover and what follows it) keeps its order.
pub(super) async fn control_loop(broker: Weak<RedisBroker>, mut jobs: mpsc::Receiver<ControlJob>) {
    while let Some((payload, done)) = jobs.recv().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let mut conn = broker.conn.clone();
        let command = conn.publish_command();
        let result = redis::cmd(command)
            .arg(keys::CONTROL)
            .arg(payload)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unreachable);
        let _ = done.send(result);
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl ControlPlane for RedisBroker {
    fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    fn publish_control(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<(), StoreError>> {
        let (done, published) = oneshot::channel();
        let queued = self
            .control_jobs
            .try_send((payload, done))
            .map_err(|_| StoreError::Unreachable("the control queue is full".into()));
        Box::pin(async move {
            queued?;
            published
                .await
                .unwrap_or_else(|_| Err(StoreError::Unreachable("the broker stopped".into())))
        })
    }

    fn live_nodes(&self) -> BoxFuture<'static, Result<usize, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let alive_since = super::now_ms().saturating_sub(DEAD_AFTER.as_millis() as u64);
            redis::cmd("ZCOUNT")
                .arg(keys::PRESENCE_BEATS)
                .arg(alive_since)
                .arg("+inf")
                .query_async::<usize>(&mut conn)
                .await
                .map_err(unreachable)
        })
    }

    fn set_control_handler(&self, channel: ControlChannel, handler: ControlHandler) {
        self.control_handlers.write()[channel as usize] = Some(handler);
    }

    fn save_record(
        &self,
        kind: RecordKind,
        id: &str,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
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
    ) -> BoxFuture<'static, Result<(), StoreError>> {
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
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StoreError>> {
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
    ) -> BoxFuture<'static, Result<(), StoreError>> {
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
