//! The cluster control plane: small records any node can read, and one control channel every
//! node listens to.
//!
//! Cettia sockets use it to move between nodes (a socket record with a TTL, a handover asked
//! and confirmed on the channel) and for sends addressed to a socket id or a tag, whichever
//! node holds the Cettia socket. Payloads are opaque bytes here; their meaning belongs to the
//! transport that writes them (`crate::cettia::cluster`). The in-process broker has no control
//! plane: a single node needs none.
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::topic::StoreError;

/// Which kind of record a key names (each kind is its own key space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A Cettia socket: its state, so another node can continue it.
    CettiaSocket,
    /// A Cettia HTTP transport id: the socket it belongs to.
    CettiaTransport,
}

/// Who a control message is for. Cettia's messages are MessagePack maps; the session core's
/// commands (the backend API acting on every node) are JSON objects, so the first byte tells
/// them apart without an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlChannel {
    Cettia = 0,
    Sessions = 1,
}

impl ControlChannel {
    pub fn of(payload: &[u8]) -> Self {
        if payload.first() == Some(&b'{') {
            ControlChannel::Sessions
        } else {
            ControlChannel::Cettia
        }
    }
}

/// Called, in channel order, with every control message published by any node (this one
/// included). It must not block: it runs on the node's relay task.
pub type ControlHandler = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Records and the control channel of a cluster broker.
pub trait ControlPlane: Send + Sync + 'static {
    /// This node's id in the cluster.
    fn node_id(&self) -> &str;

    /// Publish a message on the control channel (one Redis write). Messages are queued at the
    /// call, so what one node publishes goes out in call order; the future tells when it did.
    fn publish_control(&self, payload: Vec<u8>) -> BoxFuture<'static, Result<(), StoreError>>;

    /// How many node processes are alive in the cluster (beating within the presence
    /// deadline), this one included: how many answers a survey of every node waits for.
    fn live_nodes(&self) -> BoxFuture<'static, Result<usize, StoreError>>;

    /// Where the control messages of `channel` go; replaces its previous handler.
    fn set_control_handler(&self, channel: ControlChannel, handler: ControlHandler);

    /// Store a record that expires after `ttl`.
    fn save_record(
        &self,
        kind: RecordKind,
        id: &str,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Push back the expiry of a record, if it exists.
    fn touch_record(
        &self,
        kind: RecordKind,
        id: &str,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    fn load_record(
        &self,
        kind: RecordKind,
        id: &str,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, StoreError>>;

    fn delete_record(
        &self,
        kind: RecordKind,
        id: &str,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
}
