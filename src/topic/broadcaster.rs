//! The broadcaster actor of one topic on this node.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::RwLock;
use tokio::time::Instant;

use super::registry::TopicRegistry;
use super::{Audience, Envelope, History, HistoryLimits, Message, SessionId, TopicId};

/// How long an empty topic lingers before it frees itself (a member may be between two polls).
const IDLE_GRACE: Duration = Duration::from_secs(5);
/// How often history is trimmed by age and lagging members are re-nudged.
const MAINTENANCE_TICK: Duration = Duration::from_millis(200);
/// Mailbox of a topic: publishes wait here while a fan-out runs.
const MAILBOX: usize = 4096;

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

/// Publish a message to the topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub audience: Audience,
    pub message: Message,
}

/// The part of a topic that members read without a message round trip.
#[derive(Debug)]
pub struct TopicState {
    pub id: TopicId,
    /// Distinguishes successive broadcaster instances of the same topic id: sequences restart
    /// at 1 in a new epoch, so cursors from an older epoch are not comparable.
    pub epoch: u64,
    pub history: RwLock<History>,
    last_seq: AtomicU64,
}

impl TopicState {
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }
}

struct Member {
    recipient: Recipient<Deliver>,
    /// Its mailbox was full at the last fan-out: it is re-nudged by the maintenance tick.
    behind: bool,
}

/// The broadcaster actor: members, sequence numbers, history.
pub struct Broadcaster {
    state: Arc<TopicState>,
    members: HashMap<SessionId, Member>,
    registry: TopicRegistry,
    /// Members skipped because their mailbox was full (they catch up from the history).
    pub skipped: u64,
}

impl Broadcaster {
    pub fn new(id: TopicId, epoch: u64, limits: HistoryLimits, registry: TopicRegistry) -> Self {
        Broadcaster {
            state: Arc::new(TopicState {
                id,
                epoch,
                history: RwLock::new(History::new(limits)),
                last_seq: AtomicU64::new(0),
            }),
            members: HashMap::new(),
            registry,
            skipped: 0,
        }
    }

    pub fn state(&self) -> &Arc<TopicState> {
        &self.state
    }

    fn fan_out(&mut self, envelope: &Arc<Envelope>) {
        for (id, member) in self.members.iter_mut() {
            if member.behind || !envelope.audience.includes(id) {
                continue;
            }
            if let Err(SendError::Full(_)) = member.recipient.try_send(Deliver(envelope.clone())) {
                member.behind = true;
                self.skipped += 1;
            }
        }
    }

    fn latest(&self) -> Option<Arc<Envelope>> {
        let history = self.state.history.read();
        history
            .after(self.state.last_seq().saturating_sub(1), 1, |_| true)
            .messages
            .into_iter()
            .next()
    }

    fn free_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.members.is_empty() && self.registry.remove_if_current(&self.state) {
            tracing::debug!(topic = %self.state.id, "freeing idle topic");
            ctx.stop();
        }
    }
}

impl Actor for Broadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(MAINTENANCE_TICK, |act, _| {
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
                behind: false,
            },
        );
        MessageResult(JoinAck {
            topic: self.state.clone(),
            addr: ctx.address(),
            cursor: self.state.last_seq(),
        })
    }
}

impl Handler<Leave> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        self.members.remove(&msg.session);
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
        self.state.history.write().push(envelope.clone());
        self.state.last_seq.store(seq, Ordering::Release);
        self.fan_out(&envelope);
    }
}
