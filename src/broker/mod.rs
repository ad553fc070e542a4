//! The broker seam: how a published message reaches the topics of every node.
//!
//! Sessions never talk to Redis or to each other across nodes; they go through a [`Broker`]
//! (topics reach the cluster through their own [`crate::topic::Upstream`]). The in-process broker (the embedded default) hands a message to this node's
//! topic, which numbers it. A cluster broker (`crate::cluster`) numbers messages itself, keeps
//! each topic's history where every node can read it, relays messages to the nodes that have
//! local members, and keeps the session records that let a client continue on any node.
mod control;
mod local;
mod session;

pub use control::{ControlChannel, ControlHandler, ControlPlane, RecordKind};
pub use local::LocalBroker;
pub use session::SessionRecord;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::topic::{Audience, Message, PublishError, SessionId, StoreError};

/// How far a publish got before its publisher was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Numbered and in the topic's history: it reaches every subscriber, on every node.
    Numbered,
    /// Queued on this node while the cluster is unreachable; it goes out, in order, when the
    /// cluster is back (and is lost if this node dies first).
    Queued,
}

/// Publishes messages to topics, on this node and (for cluster brokers) on every other node.
pub trait Broker: Send + Sync + 'static {
    /// Publish `message` to `topic` for `audience`. Returns once the message is accepted for
    /// delivery; an error means it was refused (the caller tells its client).
    fn publish(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> Result<(), PublishError>;

    /// Publish and wait (briefly) until the message is numbered, for publishers that can be
    /// told (an HTTP POST): the answer says how far it got.
    fn publish_confirmed(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> BoxFuture<'static, Result<Published, PublishError>> {
        let result = self
            .publish(topic, audience, message)
            .map(|()| Published::Numbered);
        Box::pin(async move { result })
    }

    /// Whether the broker can currently reach every node (`/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Whether the broker numbers messages (and hands them to topics already numbered) rather
    /// than letting each node's topic number its own.
    fn numbers_messages(&self) -> bool {
        false
    }

    /// A long-poll of `session` arrives on this node: return the session's record as it was
    /// and mark it as polling here, in one step (a poll that finds the record still marked
    /// means the client gave up on its previous poll). `None` when the broker keeps no records.
    fn begin_poll(
        &self,
        _session: SessionId,
    ) -> BoxFuture<'static, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// The session's record, if the broker keeps records and has one.
    fn load_session(
        &self,
        _session: SessionId,
    ) -> BoxFuture<'static, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// Store the session's record (where its client stands), so any node can continue it.
    fn save_session(
        &self,
        _session: SessionId,
        _record: SessionRecord,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Note where a pushing client stands (`cursor` in topic `epoch`), without waiting: brokers
    /// that keep records write these notes in batches, moving a record's cursor forward only
    /// (see `cluster::cursors`).
    fn note_cursor(&self, _session: SessionId, _epoch: u64, _cursor: u64) {}

    /// The cluster's control plane (records and a control channel), if the broker has one.
    fn control(&self) -> Option<Arc<dyn ControlPlane>> {
        None
    }

    /// Add the broker's own metrics (round trips to its store, publish batches) to a scrape's
    /// registry; the in-process broker has none.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Messages relayed from other nodes that this node dropped because it could not keep up
    /// (its topics fetch them back from the shared history).
    fn relays_dropped(&self) -> u64 {
        0
    }
}
