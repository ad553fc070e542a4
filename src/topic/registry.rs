//! The topics of this node by id: created on first use, freed when idle.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix::prelude::*;
use parking_lot::Mutex;
use thiserror::Error;

use super::broadcaster::{Release, TopicState};
use super::upstream::Upstream;
use super::{
    Audience, Broadcaster, Deliver, Envelope, HistoryBudget, HistoryLimits, Join, JoinAck, Message,
    Publish, Sequenced, SessionId, TopicId,
};

/// Why a publish was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("topic {0} is overloaded; retry later")]
    Overloaded(TopicId),
    #[error(
        "the cluster is unreachable and this node's queue of messages for it is full; retry later"
    )]
    ClusterBacklogFull,
}

/// Shared handle to the node's topics.
#[derive(Clone)]
pub struct TopicRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    topics: Mutex<HashMap<TopicId, Entry>>,
    limits: HistoryLimits,
    /// The memory bound every topic's history shares.
    budget: Arc<HistoryBudget>,
    /// Publish-to-write latency of every topic of the node (see `crate::metrics`).
    latency: prometheus_client::metrics::histogram::Histogram,
    next_epoch: AtomicU64,
    /// Set when the node runs in a cluster: topics then take numbered messages.
    cluster: OnceLock<Arc<dyn Upstream>>,
}

#[derive(Clone)]
struct Entry {
    addr: Addr<Broadcaster>,
    epoch: u64,
}

impl TopicRegistry {
    pub fn new(limits: HistoryLimits) -> Self {
        TopicRegistry {
            inner: Arc::new(Inner {
                topics: Mutex::new(HashMap::new()),
                budget: Arc::new(HistoryBudget::new(limits.budget_bytes)),
                latency: crate::metrics::latency_histogram(),
                limits,
                // Epochs start from the clock so a restarted node does not reuse them.
                next_epoch: AtomicU64::new(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(1),
                ),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// Switch to clustered topics: `upstream` numbers messages and holds the shared history.
    /// Called once, before the first topic opens.
    pub fn set_cluster(&self, upstream: Arc<dyn Upstream>) {
        let _ = self.inner.cluster.set(upstream);
    }

    /// The cluster's side of the topics, when the node is clustered.
    pub fn upstream(&self) -> Option<&Arc<dyn Upstream>> {
        self.inner.cluster.get()
    }

    fn get_or_create(&self, id: &str) -> Addr<Broadcaster> {
        let mut topics = self.inner.topics.lock();
        if let Some(entry) = topics.get(id) {
            if entry.addr.connected() {
                return entry.addr.clone();
            }
        }
        let id: TopicId = id.into();
        let epoch = self.inner.next_epoch.fetch_add(1, Ordering::Relaxed);
        let cluster = self.inner.cluster.get().cloned();
        let registry = self.clone();
        let release: Release = Box::new(move |state| registry.remove_if_current(state));
        let budget = self.inner.budget.clone();
        let addr = Broadcaster::new(
            id.clone(),
            epoch,
            self.inner.limits,
            budget,
            self.inner.latency.clone(),
            release,
            cluster,
        )
        .start();
        topics.insert(
            id,
            Entry {
                addr: addr.clone(),
                epoch,
            },
        );
        addr
    }

    /// Join `topic` as `session`; creates the topic if needed.
    pub async fn join(
        &self,
        topic: &str,
        session: SessionId,
        recipient: Recipient<Deliver>,
    ) -> JoinAck {
        loop {
            let addr = self.get_or_create(topic);
            match addr
                .send(Join {
                    session: session.clone(),
                    recipient: recipient.clone(),
                })
                .await
            {
                Ok(ack) => return ack,
                // The topic freed itself while our join was queued: make a new one.
                Err(_) => self.remove_stale(topic, &addr),
            }
        }
    }

    /// Publish to the local topic, if it exists (no local members means no local delivery).
    pub fn publish(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> Result<(), PublishError> {
        let addr = self.inner.topics.lock().get(topic).map(|e| e.addr.clone());
        let Some(addr) = addr else { return Ok(()) };
        match addr.try_send(Publish { audience, message }) {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => Err(PublishError::Overloaded(topic.into())),
            // Stopped between lookup and send: it had no members, so nobody is waiting.
            Err(SendError::Closed(_)) => Ok(()),
        }
    }

    /// Hand a message numbered by the cluster to the local topic, if this node has one. A full
    /// topic mailbox drops it: the topic fetches it from the shared history when it notices
    /// the gap.
    pub fn ingest(&self, epoch: u64, envelope: Arc<Envelope>) {
        let addr = self
            .inner
            .topics
            .lock()
            .get(&*envelope.topic)
            .map(|e| e.addr.clone());
        if let Some(addr) = addr {
            let _ = addr.try_send(Sequenced { epoch, envelope });
        }
    }

    /// Every live topic of this node with its number of members here, in name order.
    pub async fn member_counts(&self) -> Vec<(TopicId, usize)> {
        let topics: Vec<(TopicId, Addr<Broadcaster>)> = {
            let map = self.inner.topics.lock();
            map.iter()
                .map(|(id, e)| (id.clone(), e.addr.clone()))
                .collect()
        };
        let mut counts = Vec::with_capacity(topics.len());
        for (id, addr) in topics {
            if let Ok(n) = addr.send(super::broadcaster::CountMembers).await {
                counts.push((id, n));
            }
        }
        counts.sort();
        counts
    }

    /// The node-wide history budget (for metrics).
    pub fn budget(&self) -> &HistoryBudget {
        &self.inner.budget
    }

    /// The topics' publish-to-write latency histogram.
    pub fn latency(&self) -> &prometheus_client::metrics::histogram::Histogram {
        &self.inner.latency
    }

    /// Number of live topics on this node.
    pub fn len(&self) -> usize {
        self.inner.topics.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove_stale(&self, topic: &str, addr: &Addr<Broadcaster>) {
        let mut topics = self.inner.topics.lock();
        if topics.get(topic).is_some_and(|e| e.addr == *addr) {
            topics.remove(topic);
        }
    }

    /// Called by an idle broadcaster: unregister it unless a newer instance took its place.
    fn remove_if_current(&self, state: &TopicState) -> bool {
        let mut topics = self.inner.topics.lock();
        if topics
            .get(&state.id)
            .is_some_and(|e| e.epoch == state.instance)
        {
            topics.remove(&state.id);
            true
        } else {
            false
        }
    }
}
