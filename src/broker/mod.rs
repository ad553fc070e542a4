//! The broker seam: how a published message reaches the topics of every node.
//!
//! Transports and topics never talk to Redis or to each other across nodes; they go through a
//! [`Broker`]. The in-process broker (the embedded default) hands a message to this node's
//! topic, which numbers it. A cluster broker (`crate::cluster`) numbers messages itself, keeps
//! each topic's history where every node can read it, relays messages to the nodes that have
//! local members, and keeps the session records that let a client continue on any node.
mod control;
mod local;
mod session;

pub use control::{ControlHandler, ControlPlane, RecordKind};
pub use local::LocalBroker;
pub use session::SessionRecord;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use thiserror::Error;

use crate::topic::{Audience, Envelope, Message, PublishError, SessionId, TopicId};

/// Why a broker operation failed (the cluster store was unreachable or answered nonsense).
#[derive(Debug, Error, Clone)]
pub enum BrokerError {
    #[error("the cluster store is unreachable: {0}")]
    Unreachable(String),
    #[error("the cluster store answered something unexpected: {0}")]
    Protocol(String),
}

/// Where a topic stands in the cluster: its epoch and the last sequence number given out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicPosition {
    pub epoch: u64,
    pub seq: u64,
}

/// Messages of a topic read back from the shared history.
#[derive(Debug, Default)]
pub struct Backlog {
    /// The messages after the requested sequence, oldest first.
    pub messages: Vec<Arc<Envelope>>,
    /// Messages after the requested sequence that the history no longer holds.
    pub missed: u64,
}

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

    /// A topic got its first local member: start relaying its messages to this node and say
    /// where it stands.
    fn open_topic(
        &self,
        _topic: TopicId,
    ) -> BoxFuture<'static, Result<TopicPosition, BrokerError>> {
        Box::pin(async { Ok(TopicPosition::default()) })
    }

    /// The topic's last local member left: stop relaying it to this node.
    fn close_topic(&self, _topic: TopicId) {}

    /// Where a topic stands now, without opening it.
    fn position(&self, _topic: TopicId) -> BoxFuture<'static, Result<TopicPosition, BrokerError>> {
        Box::pin(async { Ok(TopicPosition::default()) })
    }

    /// Up to `limit` messages of `topic` (in `epoch`) after sequence `after`, from the shared
    /// history. The in-process broker has none: topics keep their own.
    fn backlog(
        &self,
        _topic: TopicId,
        _epoch: u64,
        _after: u64,
        _limit: usize,
    ) -> BoxFuture<'static, Result<Backlog, BrokerError>> {
        Box::pin(async { Ok(Backlog::default()) })
    }

    /// A long-poll of `session` arrives on this node: return the session's record as it was
    /// and mark it as polling here, in one step (a poll that finds the record still marked
    /// means the client gave up on its previous poll). `None` when the broker keeps no records.
    fn begin_poll(
        &self,
        _session: SessionId,
    ) -> BoxFuture<'static, Result<Option<SessionRecord>, BrokerError>> {
        Box::pin(async { Ok(None) })
    }

    /// The session's record, if the broker keeps records and has one.
    fn load_session(
        &self,
        _session: SessionId,
    ) -> BoxFuture<'static, Result<Option<SessionRecord>, BrokerError>> {
        Box::pin(async { Ok(None) })
    }

    /// Store the session's record (where its client stands), so any node can continue it.
    fn save_session(
        &self,
        _session: SessionId,
        _record: SessionRecord,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
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
}
