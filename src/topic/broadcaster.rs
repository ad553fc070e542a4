//! The broadcaster actor of one topic on this node.
//!
//! With the in-process broker it numbers the messages published to it. With a cluster broker
//! the broker numbers them and they arrive here already numbered ([`Sequenced`]), possibly out
//! of order (this node's own publishes and other nodes' relayed ones travel different paths):
//! the broadcaster hands them to members strictly in sequence order, holds back what arrives
//! early, and fetches from the shared history what does not arrive at all.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::RwLock;
use prometheus_client::metrics::histogram::Histogram;
use tokio::time::Instant;

use super::upstream::{Backlog, StoreError, TopicPosition, Upstream};
use super::{
    Audience, DirectWrite, Envelope, History, HistoryBudget, HistoryLimits, Message, SessionId,
    TopicId,
};

/// How long an empty topic lingers before it frees itself (a member may be between two polls).
const IDLE_GRACE: Duration = Duration::from_secs(5);
/// How often history is trimmed by age and lagging members are re-nudged.
const MAINTENANCE_TICK: Duration = Duration::from_millis(200);
/// Mailbox of a topic: publishes wait here while a fan-out runs.
const MAILBOX: usize = 4096;
/// How long a message that arrived early waits for the ones before it before they are fetched
/// from the shared history.
const GAP_WAIT: Duration = Duration::from_millis(100);
/// How often (in maintenance ticks) a clustered topic that received nothing since the last time
/// compares its position with the cluster's, to notice relayed messages that never arrived (a
/// relay connection that was down).
const POSITION_CHECK_TICKS: u32 = 5;
/// Most messages fetched from the shared history at once.
const CATCH_UP_BATCH: usize = 1000;

/// A message for one member; the member replays from the history if it sees a gap.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver(pub Arc<Envelope>);

/// Add a member; answered with the topic's shared state and the member's starting cursor.
#[derive(Message)]
#[rtype(result = "JoinAck")]
pub struct Join {
    pub session: SessionId,
    pub recipient: Recipient<Deliver>,
    /// The member asked for the topic's notices (see [`Notice`]).
    pub notices: bool,
}

/// A notice about the topic (presence: who joined, who left) for the members that asked for
/// notices: unnumbered (its envelope's sequence is 0), kept in no history, at most once. A
/// member whose mailbox is full does not get it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notice(pub Message);

/// Set how a member can be written to directly (see [`DirectWrite`]), e.g. its new WebSocket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDirect {
    pub session: SessionId,
    pub direct: Arc<dyn DirectWrite>,
}

/// What a new member needs: where to replay from and where the history lives.
#[derive(Clone)]
pub struct JoinAck {
    pub topic: Arc<TopicState>,
    pub addr: Addr<Broadcaster>,
    /// The last sequence accepted before the member joined: it starts after it.
    pub cursor: u64,
}

/// Remove a member (its disconnect path).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: SessionId,
}

/// How many members the topic has on this node (for the backend API).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountMembers;

/// Publish a message to the topic (in-process broker: the topic numbers it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub audience: Audience,
    pub message: Message,
}

/// A message the cluster broker already numbered (in `epoch`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sequenced {
    pub epoch: u64,
    pub envelope: Arc<Envelope>,
}

/// The part of a topic that members read without a message round trip.
#[derive(Debug)]
pub struct TopicState {
    pub id: TopicId,
    /// Which broadcaster instance of this topic id on this node (the registry's handle).
    pub instance: u64,
    /// Distinguishes successive numberings of the same topic id: sequences restart in a new
    /// epoch, so cursors from an older epoch are not comparable. In-process, every broadcaster
    /// instance is a new epoch; in a cluster the epoch is the cluster's and changes only if the
    /// cluster forgot the topic (or this node could not reach it when the topic opened).
    epoch: AtomicU64,
    /// The sequence the current epoch started from here: a member whose cursor belongs to an
    /// older epoch restarts from it.
    start_seq: AtomicU64,
    pub history: Arc<RwLock<History>>,
    last_seq: AtomicU64,
}

impl TopicState {
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Where members of an older epoch restart (read after [`TopicState::epoch`]).
    pub fn start_seq(&self) -> u64 {
        self.start_seq.load(Ordering::Acquire)
    }

    /// Begin `epoch` at `seq` (the last sequence already given out).
    fn restart(&self, epoch: u64, seq: u64) {
        self.history.write().clear();
        self.last_seq.store(seq, Ordering::Release);
        self.start_seq.store(seq, Ordering::Release);
        self.epoch.store(epoch, Ordering::Release);
    }
}

struct Member {
    recipient: Recipient<Deliver>,
    direct: Option<Arc<dyn DirectWrite>>,
    /// Its mailbox was full at the last fan-out: it is re-nudged by the maintenance tick.
    behind: bool,
    /// It takes the topic's notices.
    notices: bool,
}

/// Asked by an idle broadcaster whether it may free itself: `true` when the registry dropped
/// it (a newer instance of the same topic id may have taken its place, and stays).
pub type Release = Box<dyn Fn(&TopicState) -> bool + Send>;

/// The broadcaster actor: members, sequence numbers, history.
pub struct Broadcaster {
    state: Arc<TopicState>,
    members: HashMap<SessionId, Member>,
    /// The node's history budget.
    budget: Arc<HistoryBudget>,
    /// The node's publish-to-write latency, observed once per message fanned out.
    latency: Histogram,
    release: Release,
    /// The cluster, when messages arrive numbered by it.
    cluster: Option<Arc<dyn Upstream>>,
    /// Numbered messages that arrived before their predecessors, by sequence.
    early: BTreeMap<u64, Arc<Envelope>>,
    /// A fetch of missing messages from the shared history is scheduled or running.
    catching_up: bool,
    /// Where the topic stood (epoch, last sequence) at the previous position check. A topic
    /// whose messages keep arriving learns of a lost relay from the next one (a gap), so only a
    /// topic that stood still since then asks the cluster where it stands: one Redis call per
    /// quiet topic and node per check, none for busy ones (a thousand busy rooms on three nodes
    /// cost Redis 3,000 script calls a second, more than their publishes).
    checked_at: (u64, u64),
    /// The cluster could not be reached when the topic opened: its position is unknown.
    detached: bool,
    ticks: u32,
    /// Members skipped because their mailbox was full (they catch up from the history).
    pub skipped: u64,
}

impl Broadcaster {
    pub fn new(
        id: TopicId,
        epoch: u64,
        limits: HistoryLimits,
        budget: Arc<HistoryBudget>,
        latency: Histogram,
        release: Release,
        cluster: Option<Arc<dyn Upstream>>,
    ) -> Self {
        Broadcaster {
            state: Arc::new(TopicState {
                id,
                instance: epoch,
                epoch: AtomicU64::new(epoch),
                start_seq: AtomicU64::new(0),
                history: Arc::new(RwLock::new(History::new(limits, budget.clone()))),
                last_seq: AtomicU64::new(0),
            }),
            members: HashMap::new(),
            budget,
            latency,
            release,
            cluster,
            early: BTreeMap::new(),
            catching_up: false,
            checked_at: (0, 0),
            detached: false,
            ticks: 0,
            skipped: 0,
        }
    }

    pub fn state(&self) -> &Arc<TopicState> {
        &self.state
    }

    fn fan_out(&mut self, envelope: &Arc<Envelope>) {
        let epoch = self.state.epoch();
        let mut members = self.members.iter_mut().peekable();
        while let Some((id, member)) = members.next() {
            if let Some(direct) = members.peek().and_then(|(_, next)| next.direct.as_deref()) {
                super::direct::prefetch(direct);
            }
            if let Some(direct) = &member.direct {
                if direct.try_deliver(epoch, envelope) {
                    continue;
                }
            }
            if member.behind || !envelope.audience.includes(id) {
                continue;
            }
            if let Err(SendError::Full(_)) = member.recipient.try_send(Deliver(envelope.clone())) {
                member.behind = true;
                self.skipped += 1;
            }
        }
        if !self.members.is_empty() {
            self.latency.observe(envelope.age_secs());
        }
    }

    /// Append the next message of the topic and hand it to the members.
    fn accept(&mut self, envelope: Arc<Envelope>) {
        self.state.history.write().push(envelope.clone());
        // Outside the history's lock: over the node's budget this evicts the node's oldest
        // messages, maybe of other topics.
        self.budget.note(&self.state.history, &envelope);
        self.state.last_seq.store(envelope.seq, Ordering::Release);
        self.fan_out(&envelope);
    }

    /// A numbered message from the cluster: deliver it in order, hold it if it is early.
    fn ingest(&mut self, epoch: u64, envelope: Arc<Envelope>, ctx: &mut Context<Self>) {
        let current = self.state.epoch();
        if epoch != current {
            if epoch < current {
                return; // left over from a numbering the cluster has since forgotten
            }
            tracing::warn!(topic = %self.state.id, epoch, "topic numbering restarted in the cluster");
            self.early.clear();
            // A topic that never had a position (it opened detached) starts here; otherwise
            // every message of the new numbering is new to every member: start before the
            // first, and fetch what did not arrive.
            let start = if current == 0 {
                envelope.seq.saturating_sub(1)
            } else {
                0
            };
            self.detached = false;
            self.state.restart(epoch, start);
        }
        let last = self.state.last_seq();
        if envelope.seq <= last {
            return; // already delivered (a relay that overlapped a fetch)
        }
        if envelope.seq == last + 1 {
            self.accept(envelope);
            self.drain_early();
        } else {
            self.early.insert(envelope.seq, envelope);
            self.schedule_catch_up(ctx, GAP_WAIT);
        }
    }

    fn drain_early(&mut self) {
        while let Some(entry) = self.early.first_entry() {
            let next = self.state.last_seq() + 1;
            if *entry.key() < next {
                entry.remove();
            } else if *entry.key() == next {
                let envelope = entry.remove();
                self.accept(envelope);
            } else {
                break;
            }
        }
    }

    fn schedule_catch_up(&mut self, ctx: &mut Context<Self>, after: Duration) {
        if self.catching_up {
            return;
        }
        self.catching_up = true;
        ctx.run_later(after, |act, ctx| {
            let target = act.early.keys().next().map(|first| first - 1);
            match target {
                Some(target) if target > act.state.last_seq() => act.catch_up(ctx, target),
                _ => act.catching_up = false,
            }
        });
    }

    /// Fetch from the shared history what this node did not receive, up to `target`.
    fn catch_up(&mut self, ctx: &mut Context<Self>, target: u64) {
        let Some(cluster) = self.cluster.clone() else {
            self.catching_up = false;
            return;
        };
        self.catching_up = true;
        let last = self.state.last_seq();
        let epoch = self.state.epoch();
        let limit = ((target - last) as usize).min(CATCH_UP_BATCH);
        let fetch = cluster.backlog(self.state.id.clone(), epoch, last, limit);
        ctx.wait(fetch.into_actor(self).map(
            move |result: Result<Backlog, StoreError>, act, ctx| {
                act.catching_up = false;
                match result {
                    Ok(backlog) => {
                        let fetched = backlog.messages.len();
                        for envelope in backlog.messages {
                            act.ingest(epoch, envelope, ctx);
                        }
                        if fetched == 0 && act.state.last_seq() < target {
                            // The shared history no longer holds them: skip the gap. Members
                            // count what they missed when they replay across it.
                            tracing::warn!(topic = %act.state.id, from = act.state.last_seq(),
                                to = target, "messages expired from the cluster history");
                            act.state.restart(epoch, target);
                        }
                        act.drain_early();
                        if !act.early.is_empty() {
                            act.schedule_catch_up(ctx, Duration::ZERO);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(topic = %act.state.id, %error, "cannot fetch missing messages; retrying");
                        act.schedule_catch_up(ctx, Duration::from_millis(500));
                    }
                }
            },
        ));
    }

    /// Compare with the cluster's position: catch up on messages whose relay was lost, and
    /// attach a topic that opened while the cluster was unreachable.
    fn check_position(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if self.catching_up {
            return;
        }
        let fetch = if self.detached {
            cluster.open(self.state.id.clone())
        } else {
            cluster.position(self.state.id.clone())
        };
        ctx.spawn(fetch.into_actor(self).map(
            |result: Result<TopicPosition, StoreError>, act, ctx| {
                let Ok(position) = result else { return };
                if act.detached {
                    // Opened while the cluster was unreachable: members start from now.
                    act.detached = false;
                    if position.epoch != act.state.epoch() {
                        act.early.clear();
                        act.state.restart(position.epoch, position.seq);
                    }
                } else if position.epoch > act.state.epoch() {
                    // The cluster forgot the topic (Redis restarted empty) and numbering began
                    // again: everything numbered since is new to every member.
                    tracing::warn!(topic = %act.state.id, epoch = position.epoch,
                        "topic numbering restarted in the cluster");
                    act.early.clear();
                    act.state.restart(position.epoch, 0);
                    if position.seq > 0 {
                        act.catch_up(ctx, position.seq);
                    }
                } else if position.epoch == act.state.epoch()
                    && position.seq > act.state.last_seq()
                    && !act.catching_up
                {
                    act.catch_up(ctx, position.seq);
                }
            },
        ));
    }

    fn latest(&self) -> Option<Arc<Envelope>> {
        let history = self.state.history.read();
        history
            .after(self.state.last_seq().saturating_sub(1), 1, |_| true)
            .messages
            .into_iter()
            .next()
    }

    /// Free the topic once it has no members. Alone (no cluster) a topic also keeps its
    /// history for those who join later until the history expires; in a cluster the shared
    /// history keeps it.
    fn free_if_idle(&mut self, ctx: &mut Context<Self>) {
        let keeps_history = self.cluster.is_none() && !self.state.history.read().is_empty();
        if self.members.is_empty() && !keeps_history && (self.release)(&self.state) {
            tracing::debug!(topic = %self.state.id, "freeing idle topic");
            if let Some(cluster) = &self.cluster {
                cluster.close(self.state.id.clone());
            }
            ctx.stop();
        }
    }

    /// Clustered: open the topic in the cluster before anything else is handled, so members
    /// join at the cluster's position. An unreachable cluster leaves the topic detached (its
    /// members are served, it attaches at the next position check).
    fn open_in_cluster(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let open = cluster.open(self.state.id.clone());
        ctx.wait(open.into_actor(self).map(|result, act, _| match result {
            Ok(position) => act.state.restart(position.epoch, position.seq),
            Err(error) => {
                tracing::warn!(topic = %act.state.id, %error, "cluster unreachable; topic opens detached");
                act.detached = true;
                act.state.restart(0, 0);
            }
        }));
    }
}

impl Actor for Broadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        self.open_in_cluster(ctx);
        ctx.run_interval(MAINTENANCE_TICK, |act, ctx| {
            act.ticks = act.ticks.wrapping_add(1);
            if act.ticks % POSITION_CHECK_TICKS == 0 {
                let now = (act.state.epoch(), act.state.last_seq());
                if act.detached || now == act.checked_at {
                    act.check_position(ctx);
                }
                act.checked_at = now;
            }
            act.state.history.write().expire(Instant::now());
            let any_behind = act.members.values().any(|m| m.behind);
            if any_behind {
                if let Some(latest) = act.latest() {
                    for member in act.members.values_mut().filter(|m| m.behind) {
                        if member.recipient.try_send(Deliver(latest.clone())).is_ok() {
                            member.behind = false;
                        }
                    }
                }
            }
        });
        ctx.run_interval(IDLE_GRACE, |act, ctx| {
            if act.members.is_empty() {
                act.free_if_idle(ctx);
            }
        });
    }
}

impl Handler<Join> for Broadcaster {
    type Result = MessageResult<Join>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        self.members.insert(
            msg.session,
            Member {
                recipient: msg.recipient,
                direct: None,
                behind: false,
                notices: msg.notices,
            },
        );
        MessageResult(JoinAck {
            topic: self.state.clone(),
            addr: ctx.address(),
            cursor: self.state.last_seq(),
        })
    }
}

impl Handler<SetDirect> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: SetDirect, _ctx: &mut Context<Self>) {
        if let Some(member) = self.members.get_mut(&msg.session) {
            member.direct = Some(msg.direct);
        }
    }
}

impl Handler<Leave> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        self.members.remove(&msg.session);
    }
}

impl Handler<CountMembers> for Broadcaster {
    type Result = usize;

    fn handle(&mut self, _: CountMembers, _ctx: &mut Context<Self>) -> usize {
        self.members.len()
    }
}

impl Handler<Publish> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Context<Self>) {
        let seq = self.state.last_seq() + 1;
        let envelope = Arc::new(Envelope::new(
            self.state.id.clone(),
            seq,
            msg.audience,
            msg.message,
        ));
        self.accept(envelope);
    }
}

impl Handler<Notice> for Broadcaster {
    type Result = ();

    fn handle(&mut self, Notice(message): Notice, _ctx: &mut Context<Self>) {
        let envelope = Arc::new(Envelope::new(
            self.state.id.clone(),
            0,
            Audience::All,
            message,
        ));
        for member in self.members.values().filter(|m| m.notices) {
            let _ = member.recipient.try_send(Deliver(envelope.clone()));
        }
    }
}

impl Handler<Sequenced> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Sequenced, ctx: &mut Context<Self>) {
        self.ingest(msg.epoch, msg.envelope, ctx);
    }
}
