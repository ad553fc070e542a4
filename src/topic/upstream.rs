//! The topic's way up to the cluster, owned by the topic: what a broadcaster asks of whatever
//! numbers its messages and keeps its shared history (the Redis broker, in a cluster).
//!
//! The topic defines the trait and the broker implements it, so `topic` depends on nothing
//! above it (the same inversion as [`super::DirectWrite`] for the WebSocket write).
use std::sync::Arc;

use futures_util::future::BoxFuture;
use thiserror::Error;

use super::{Envelope, TopicId};

/// Why the cluster store could not be asked (unreachable, or it answered nonsense). Topics,
/// sessions and the control plane share it: they all ask the same store.
#[derive(Debug, Error, Clone)]
pub enum StoreError {
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

/// The cluster as a topic sees it: interest, position and shared history.
pub trait Upstream: Send + Sync + 'static {
    /// The topic got its first local member: start relaying its messages to this node and say
    /// where it stands.
    fn open(&self, topic: TopicId) -> BoxFuture<'static, Result<TopicPosition, StoreError>>;

    /// The topic's last local member left: stop relaying it to this node.
    fn close(&self, topic: TopicId);

    /// Where the topic stands now, without opening it.
    fn position(&self, topic: TopicId) -> BoxFuture<'static, Result<TopicPosition, StoreError>>;

    /// Up to `limit` messages of `topic` (in `epoch`) after sequence `after`, from the shared
    /// history.
    fn backlog(
        &self,
        topic: TopicId,
        epoch: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<Backlog, StoreError>>;
}
