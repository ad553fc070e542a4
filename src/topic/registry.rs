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
    state: Arc<TopicState>,
    epoch: u64,
}

/// The last messages of a topic, for a reader outside it (the backend API's `history`).
#[derive(Debug, Default)]
pub struct Recent {
    /// The numbering they belong to.
    pub epoch: u64,
    /// Oldest first, only those published to every subscriber.
    pub messages: Vec<Arc<Envelope>>,
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
        let broadcaster = Broadcaster::new(
            id.clone(),
            epoch,
            self.inner.limits,
            budget,
            self.inner.latency.clone(),
            release,
            cluster,
        );
        let state = broadcaster.state().clone();
        let addr = broadcaster.start();
        topics.insert(
            id,
            Entry {
                addr: addr.clone(),
                state,
                epoch,
            },
        );
        addr
    }

    /// Up to `limit` of the last messages this node's topic holds for every subscriber,
    /// oldest first; `None` when the node has no such topic.
    pub fn recent(&self, topic: &str, limit: usize) -> Option<Recent> {
        let state = self.inner.topics.lock().get(topic)?.state.clone();
        let epoch = state.epoch();
        let history = state.history.read();
        let mut messages: Vec<Arc<Envelope>> = history
            .newest_first()
            .filter(|e| matches!(e.audience, Audience::All))
            .take(limit)
            .cloned()
            .collect();
        messages.reverse();
        Some(Recent { epoch, messages })
    }

    /// Join `topic` as `session`; creates the topic if needed.
    pub async fn join(
        &self,
        topic: &str,
        session: SessionId,
        recipient: Recipient<Deliver>,
    ) -> JoinAck {
        self.join_with_notices(topic, session, recipient, false)
            .await
    }

    /// Join `topic` as [`TopicRegistry::join`] does; with `notices`, the member also gets the
    /// topic's notices (presence).
    pub async fn join_with_notices(
        &self,
        topic: &str,
        session: SessionId,
        recipient: Recipient<Deliver>,
        notices: bool,
    ) -> JoinAck {
        loop {
            let addr = self.get_or_create(topic);
            match addr
                .send(Join {
                    session: session.clone(),
                    recipient: recipient.clone(),
                    notices,
                })
                .await
            {
                Ok(ack) => return ack,
                // The topic freed itself while our join was queued: make a new one.
                Err(_) => self.remove_stale(topic, &addr),
            }
        }
    }

    /// Publish to the topic of this node, which numbers the message (the in-process broker).
    /// A topic with no members is made for it: its history keeps the message for those who
    /// join later and ask for it, until the history's age or the node's budget drops it.
    pub fn publish(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> Result<(), PublishError> {
        let addr = self.get_or_create(topic);
        match addr.try_send(Publish { audience, message }) {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => Err(PublishError::Overloaded(topic.into())),
            // Stopped between lookup and send: it had no members and an empty history. A
            // fresh instance takes the message.
            Err(SendError::Closed(Publish { audience, message })) => {
                self.remove_stale(topic, &addr);
                self.publish(topic, audience, message)
            }
        }
    }

    /// Hand a notice (presence) to the members of this node's topic that asked for notices,
    /// if the node has the topic.
    pub fn notify(&self, topic: &str, message: Message) {
        let addr = self.inner.topics.lock().get(topic).map(|e| e.addr.clone());
        if let Some(addr) = addr {
            let _ = addr.try_send(super::Notice(message));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use actix::prelude::*;
    use parking_lot::Mutex;

    use super::*;
    use crate::topic::{Deliver, Leave};

    /// A member that writes down the sequence of every delivery; its mailbox holds `capacity`.
    struct Recorder {
        seen: Arc<Mutex<Vec<u64>>>,
        capacity: usize,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(self.capacity);
        }
    }

    impl Handler<Deliver> for Recorder {
        type Result = ();
        fn handle(&mut self, Deliver(envelope): Deliver, _: &mut Context<Self>) {
            self.seen.lock().push(envelope.seq);
        }
    }

    /// Answered once everything queued before it was handled.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Settle;

    impl Handler<Settle> for Recorder {
        type Result = ();
        fn handle(&mut self, _: Settle, _: &mut Context<Self>) {}
    }

    fn registry() -> TopicRegistry {
        TopicRegistry::new(HistoryLimits {
            max_messages: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
            budget_bytes: 1 << 24,
        })
    }

    async fn member(
        topics: &TopicRegistry,
        topic: &str,
        id: &str,
        capacity: usize,
    ) -> (Addr<Recorder>, Arc<Mutex<Vec<u64>>>, JoinAck) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let addr = Recorder {
            seen: seen.clone(),
            capacity,
        }
        .start();
        let ack = topics
            .join(topic, id.into(), addr.clone().recipient())
            .await;
        (addr, seen, ack)
    }

    fn publish(topics: &TopicRegistry, topic: &str, n: usize) {
        for i in 0..n {
            let message = crate::topic::Message::text(format!("m{i}"));
            topics.publish(topic, Audience::All, message).unwrap();
        }
    }

    #[actix_rt::test]
    async fn members_get_each_message_once_in_order_and_one_that_left_none() {
        let topics = registry();
        let (a, seen_a, ack) = member(&topics, "/t", "a", 64).await;
        let (b, seen_b, _) = member(&topics, "/t", "b", 64).await;
        assert_eq!(ack.cursor, 0);
        publish(&topics, "/t", 3);
        ack.addr.do_send(Leave {
            session: "b".into(),
        });
        publish(&topics, "/t", 1);
        assert_eq!(topics.member_counts().await, vec![("/t".into(), 1)]);
        a.send(Settle).await.unwrap();
        b.send(Settle).await.unwrap();
        assert_eq!(*seen_a.lock(), vec![1, 2, 3, 4]);
        assert_eq!(*seen_b.lock(), vec![1, 2, 3]);
        assert_eq!(ack.topic.last_seq(), 4);
    }

    /// A member on another thread that is stuck (its first delivery waits for `stuck`).
    struct Stuck {
        stuck: Arc<Mutex<()>>,
        seen: Arc<Mutex<Vec<u64>>>,
    }

    impl Actor for Stuck {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(1);
        }
    }

    impl Handler<Deliver> for Stuck {
        type Result = ();
        fn handle(&mut self, Deliver(envelope): Deliver, _: &mut Context<Self>) {
            drop(self.stuck.lock());
            self.seen.lock().push(envelope.seq);
        }
    }

    // The lock is held across awaits on purpose: it keeps the other thread's member stuck.
    #[allow(clippy::await_holding_lock)]
    #[actix_rt::test]
    async fn a_member_with_a_full_mailbox_is_skipped_and_the_history_keeps_the_rest() {
        let topics = registry();
        let stuck = Arc::new(Mutex::new(()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arbiter = Arbiter::new();
        let slow = Stuck::start_in_arbiter(&arbiter.handle(), {
            let (stuck, seen) = (stuck.clone(), seen.clone());
            move |_| Stuck { stuck, seen }
        });
        let held = stuck.lock();
        let ack = topics.join("/t", "slow".into(), slow.recipient()).await;
        let (fast, seen_fast, _) = member(&topics, "/t", "fast", 64).await;
        publish(&topics, "/t", 20);
        let _ = topics.member_counts().await; // the topic has handled the twenty
        drop(held);
        fast.send(Settle).await.unwrap();
        assert_eq!(
            *seen_fast.lock(),
            (1..=20).collect::<Vec<u64>>(),
            "others never wait"
        );
        let got = seen.lock().clone();
        assert!(
            got.len() < 20,
            "a stuck mailbox of one took them all: {got:?}"
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        // Everything the topic accepted is kept: the skipped member catches up from there.
        let after = got.last().copied().unwrap_or(0);
        let history = ack.topic.history.read().after(after, 100, |_| true);
        let rest: Vec<u64> = history.messages.iter().map(|e| e.seq).collect();
        assert_eq!(rest, ((after + 1)..=20).collect::<Vec<u64>>());
        assert_eq!(history.missed, 0);
        arbiter.stop();
    }

    #[actix_rt::test]
    async fn a_topic_without_members_keeps_what_was_published_for_who_asks_later() {
        let topics = registry();
        assert!(topics.recent("/quiet", 10).is_none());
        publish(&topics, "/quiet", 3);
        topics
            .publish(
                "/quiet",
                Audience::One("someone".into()),
                crate::topic::Message::text("for one session"),
            )
            .unwrap();
        assert_eq!(topics.member_counts().await, vec![("/quiet".into(), 0)]);
        let recent = topics.recent("/quiet", 2).expect("the topic exists");
        let texts: Vec<&str> = recent.messages.iter().map(|e| &*e.text).collect();
        assert_eq!(
            texts,
            vec!["m1", "m2"],
            "the last two for everyone, oldest first"
        );
        let (_, seen, ack) = member(&topics, "/quiet", "late", 64).await;
        assert_eq!(ack.cursor, 4, "a member starts after them unless it asks");
        assert!(seen.lock().is_empty());
    }
}
