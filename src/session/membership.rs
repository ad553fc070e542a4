//! A session's membership of one topic: where its client stands (the cursor), and catching up
//! from there, from this node's replay history or, in a cluster, from the shared history.
//!
//! Both protocols' actors keep one [`Membership`] per topic they joined and ask it, whenever
//! their client can take more, what comes next: a [`Replay`] of messages after the cursor, or
//! a [`Fetch`] from the shared history first (the cursor is older than what this node's topic
//! holds: the client was served by another node until now). Nothing is copied per client while
//! it is away; the topic's history is shared by every member.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use futures_util::future::BoxFuture;

use crate::topic::{Backlog, Envelope, JoinAck, StoreError, TopicState, Upstream};

/// Most messages fetched from the shared history at once.
const FETCH_BATCH: usize = 1000;
/// How long to wait before asking an unreachable cluster again (nothing is skipped meanwhile).
const FETCH_RETRY: Duration = Duration::from_secs(1);

/// One topic joined by one session.
pub struct Membership {
    /// The topic's answer to the join: its shared state and its broadcaster.
    pub ack: JoinAck,
    /// The topic epoch `cursor` belongs to (cursors of two epochs are not comparable).
    pub epoch: u64,
    /// The sequence of the last message handed to the client.
    pub cursor: u64,
    /// The earliest cursor this session may take (in `epoch`): where it joined, or where a
    /// record of the cluster says it stood. What a client acknowledges never reaches before
    /// it, so a new session cannot read what was published before it came.
    floor: u64,
    /// The topic's last message when the session joined (in `epoch`): messages up to it that
    /// the histories no longer hold are history the client asked for, not messages it lost.
    joined_at: u64,
    /// Messages after the cursor fetched from the shared history, oldest first.
    backlog: VecDeque<Arc<Envelope>>,
    /// A fetch from the shared history is under way.
    fetching: bool,
    /// Its place in the topic's presence, if the topic keeps one: dropped with the membership.
    present: Option<super::Present>,
}

/// Messages after the cursor, oldest first, and how many the histories no longer held.
pub struct Replay {
    pub messages: Vec<Arc<Envelope>>,
    pub missed: u64,
}

/// A read of the shared history this membership needs before it can go on.
pub struct Fetch {
    epoch: u64,
    read: BoxFuture<'static, Result<Backlog, StoreError>>,
}

// === impl Membership ===

impl Membership {
    /// A new member starts after the topic's last message, or `history` messages before it
    /// (history on join: they are replayed first, from this node's or the shared history,
    /// then the live ones, in order).
    pub fn new(ack: JoinAck, history: usize) -> Self {
        let start = history_start(&ack, history);
        Membership {
            epoch: ack.topic.epoch(),
            cursor: start,
            floor: start,
            joined_at: ack.cursor,
            ack,
            backlog: VecDeque::new(),
            fetching: false,
            present: None,
        }
    }

    /// Count the session's client in the topic's presence (if the topic keeps one) for as
    /// long as this membership lasts.
    pub fn with_presence(mut self, present: Option<super::Present>) -> Self {
        self.present = present;
        self
    }

    pub fn topic(&self) -> &Arc<TopicState> {
        &self.ack.topic
    }

    /// Whether a fetch from the shared history is under way (what arrives meanwhile is read
    /// from the histories when it ends).
    pub fn is_fetching(&self) -> bool {
        self.fetching
    }

    /// Whether the client has every message the topic numbered: nothing to replay or fetch.
    pub fn caught_up(&self) -> bool {
        !self.fetching
            && self.backlog.is_empty()
            && self.epoch == self.ack.topic.epoch()
            && self.cursor == self.ack.topic.last_seq()
    }

    /// Whether `envelope` is the next message for the client, in the current epoch.
    pub fn is_next(&self, envelope: &Envelope) -> bool {
        self.epoch == self.ack.topic.epoch() && envelope.seq == self.cursor + 1
    }

    /// Follow the topic into a new epoch: the old cursor means nothing there. Returns whether
    /// the epoch changed.
    pub fn sync_epoch(&mut self) -> bool {
        let epoch = self.ack.topic.epoch();
        if epoch == self.epoch {
            return false;
        }
        self.epoch = epoch;
        self.cursor = self.ack.topic.start_seq();
        self.floor = self.cursor;
        self.joined_at = 0;
        self.backlog.clear();
        true
    }

    /// Take over a cursor recorded elsewhere (another node's record, a client's token), if it
    /// belongs to the current epoch. `forward_only`: a membership that already served its
    /// client only moves forward.
    pub fn resume(&mut self, epoch: u64, cursor: u64, forward_only: bool) {
        self.sync_epoch();
        if epoch != self.epoch || epoch == 0 {
            return;
        }
        self.cursor = if forward_only {
            self.cursor.max(cursor)
        } else {
            cursor
        };
        // A record of the cluster is trusted: the session stood there.
        self.floor = self.floor.min(self.cursor);
    }

    /// The earliest cursor the session may take in the current epoch.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Take the floor a record of the cluster gives the session (where it joined, on the node
    /// that first served it), if it belongs to the current epoch.
    pub fn adopt_floor(&mut self, epoch: u64, floor: u64) {
        self.sync_epoch();
        if epoch == self.epoch && epoch != 0 {
            self.floor = self.floor.min(floor);
        }
    }

    /// What the client says it has seen (Atmosphere's session token), in the current epoch:
    /// the cursor moves there, but never before the session's floor. Returns whether that is
    /// behind the cursor (an answer was lost on the way).
    pub fn acknowledge(&mut self, seq: u64) -> bool {
        let seq = seq.max(self.floor);
        let behind = seq < self.cursor;
        self.cursor = seq;
        behind
    }

    /// Clustered: the read of the shared history needed before replaying, if this node's
    /// history does not reach back to the cursor. `None` without a cluster, while a fetch is
    /// under way, or when the local history (or the fetched backlog) has what comes next.
    pub fn fetch(&mut self, upstream: Option<&Arc<dyn Upstream>>) -> Option<Fetch> {
        let upstream = upstream?;
        if self.fetching {
            return None;
        }
        self.sync_epoch();
        self.drop_delivered();
        let topic = &self.ack.topic;
        if !self.backlog.is_empty() || topic.last_seq() <= self.cursor {
            return None;
        }
        let first = topic.history.read().first_seq();
        if first.is_some_and(|first| first <= self.cursor + 1) {
            return None;
        }
        self.fetching = true;
        Some(Fetch {
            epoch: self.epoch,
            read: upstream.backlog(topic.id.clone(), self.epoch, self.cursor, FETCH_BATCH),
        })
    }

    /// Take the result of a [`Fetch`]. Returns how many messages neither history holds any
    /// more (the cursor skips them), or the error (the caller retries later).
    pub fn fetched(
        &mut self,
        epoch: u64,
        result: Result<Backlog, StoreError>,
    ) -> Result<u64, StoreError> {
        self.fetching = false;
        let backlog = result?;
        if epoch != self.epoch {
            return Ok(0); // the topic restarted its numbering meanwhile
        }
        let from = self.cursor;
        if backlog.messages.is_empty() {
            // Nothing more in the shared history: continue where this node's history begins.
            let topic = &self.ack.topic;
            let target = topic
                .history
                .read()
                .first_seq()
                .map_or(topic.last_seq(), |first| first - 1);
            let missed = target.saturating_sub(self.cursor);
            self.cursor = self.cursor.max(target);
            return Ok(self.lost(from, missed));
        }
        self.backlog.extend(backlog.messages);
        Ok(self.lost(from, backlog.missed))
    }

    /// Of `missed` messages right after cursor `from`, those the client lost: not the ones
    /// from before it joined that it asked for as history and the histories no longer hold.
    fn lost(&self, from: u64, missed: u64) -> u64 {
        missed.saturating_sub(self.joined_at.saturating_sub(from))
    }

    /// Up to `limit` messages after the cursor: the fetched backlog first, then this node's
    /// history. When the history lost everything after the cursor, the cursor jumps to the
    /// topic's last message and the loss is counted in `missed`.
    pub fn replay(&mut self, limit: usize) -> Replay {
        self.sync_epoch();
        self.drop_delivered();
        if !self.backlog.is_empty() {
            return Replay {
                messages: self.backlog.iter().take(limit).cloned().collect(),
                missed: 0,
            };
        }
        let topic = self.ack.topic.clone();
        let from = self.cursor;
        let replay = topic.history.read().after(self.cursor, limit, |_| true);
        let mut missed = replay.missed;
        if replay.messages.is_empty() && topic.last_seq() > self.cursor {
            missed = topic.last_seq() - self.cursor;
            self.cursor = topic.last_seq();
        }
        Replay {
            messages: replay.messages,
            missed: self.lost(from, missed),
        }
    }

    fn drop_delivered(&mut self) {
        while self.backlog.front().is_some_and(|e| e.seq <= self.cursor) {
            self.backlog.pop_front();
        }
    }
}

/// Where a member that asks for the topic's last `history` messages starts: counting back
/// over the messages to every subscriber (a new session is in no other audience) in this
/// node's history, and past it, in a cluster, as if every older message were to everyone.
fn history_start(ack: &JoinAck, history: usize) -> u64 {
    if history == 0 {
        return ack.cursor;
    }
    let local = ack.topic.history.read();
    let mut wanted = history as u64;
    let mut oldest = ack.cursor + 1;
    for envelope in local.newest_first().filter(|e| e.seq <= ack.cursor) {
        oldest = envelope.seq;
        if matches!(envelope.audience, crate::topic::Audience::All) {
            wanted -= 1;
            if wanted == 0 {
                return envelope.seq - 1;
            }
        }
    }
    (oldest - 1).saturating_sub(wanted)
}

// === impl Fetch ===

impl Fetch {
    /// Run the fetch inside actor `A`, holding its mailbox (nothing else is handled until the
    /// backlog is in), then hand the result to the membership `find` returns and run `then`:
    /// at once, or after a pause if the cluster could not be read. `then` normally asks the
    /// membership again, so an unreachable cluster delays the client but skips nothing.
    pub fn run<A, F, T>(self, ctx: &mut Context<A>, find: F, then: T)
    where
        A: Actor<Context = Context<A>> + Reports,
        F: FnOnce(&mut A) -> Option<&mut Membership> + 'static,
        T: FnOnce(&mut A, &mut Context<A>) + 'static,
    {
        let Fetch { epoch, read } = self;
        ctx.wait(wrap_future(read).map(move |result, act: &mut A, ctx| {
            let outcome = match find(act) {
                Some(membership) => membership.fetched(epoch, result),
                None => return,
            };
            match outcome {
                Ok(missed) => {
                    act.missed(missed);
                    then(act, ctx);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the cluster history; retrying");
                    ctx.run_later(FETCH_RETRY, then);
                }
            }
        }));
    }
}

/// What a session actor reports about its client, counted the same way for every protocol.
pub trait Reports {
    /// `missed` messages were lost for the client: the histories no longer held them.
    fn missed(&mut self, missed: u64);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::prelude::*;

    use super::*;
    use crate::topic::{Audience, Deliver, HistoryLimits, Message, TopicRegistry};

    /// A member that takes its deliveries and does nothing with them: the tests read the
    /// membership, as a session would when its client can take more.
    struct Quiet;

    impl Actor for Quiet {
        type Context = Context<Self>;
    }

    impl Handler<Deliver> for Quiet {
        type Result = ();
        fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
    }

    fn registry(max_messages: usize) -> TopicRegistry {
        TopicRegistry::new(HistoryLimits {
            max_messages,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
            budget_bytes: 1 << 24,
        })
    }

    async fn join(topics: &TopicRegistry, topic: &str, session: &str) -> Membership {
        let recipient = Quiet.start().recipient();
        Membership::new(topics.join(topic, session.into(), recipient).await, 0)
    }

    /// Publish `texts`, then wait until the topic has numbered them (a join queued behind
    /// them is answered after them).
    async fn publish(topics: &TopicRegistry, topic: &str, texts: &[&str]) {
        for text in texts {
            topics
                .publish(topic, Audience::All, Message::text(text.to_string()))
                .unwrap();
        }
        let _ = join(topics, topic, "barrier").await;
    }

    fn texts(replay: &Replay) -> Vec<&str> {
        replay.messages.iter().map(|e| &*e.text).collect()
    }

    #[actix_rt::test]
    async fn a_new_member_starts_after_the_last_message() {
        let topics = registry(100);
        let _first = join(&topics, "/t", "first").await;
        publish(&topics, "/t", &["a", "b"]).await;
        let mut late = join(&topics, "/t", "late").await;
        assert_eq!(late.cursor, 2);
        assert!(late.caught_up());
        publish(&topics, "/t", &["c"]).await;
        let replay = late.replay(10);
        assert_eq!((texts(&replay), replay.missed), (vec!["c"], 0));
    }

    #[actix_rt::test]
    async fn what_the_history_no_longer_holds_is_counted_missed() {
        let topics = registry(2);
        let mut member = join(&topics, "/t", "m").await;
        publish(&topics, "/t", &["1", "2", "3", "4", "5"]).await;
        let replay = member.replay(10);
        assert_eq!((texts(&replay), replay.missed), (vec!["4", "5"], 3));
    }

    #[actix_rt::test]
    async fn an_acknowledgement_never_reaches_before_the_session_joined() {
        let topics = registry(100);
        let _first = join(&topics, "/t", "first").await;
        publish(&topics, "/t", &["before-1", "before-2"]).await;
        let mut member = join(&topics, "/t", "m").await;
        assert!(
            !member.acknowledge(0),
            "not behind: clamped to where it joined"
        );
        assert_eq!(member.cursor, 2);
        publish(&topics, "/t", &["after"]).await;
        assert_eq!(texts(&member.replay(10)), vec!["after"]);
        // Acknowledging less than was handed out is an answer lost on the way: resent.
        member.cursor = 3;
        assert!(member.acknowledge(2));
        assert_eq!(texts(&member.replay(10)), vec!["after"]);
    }

    #[actix_rt::test]
    async fn history_on_join_replays_the_last_messages_first_and_none_counts_as_lost() {
        let topics = registry(3);
        let _first = join(&topics, "/t", "first").await;
        publish(&topics, "/t", &["1", "2", "3", "4", "5"]).await;
        let recipient = Quiet.start().recipient();
        let ack = topics.join("/t", "asks".into(), recipient).await;
        let mut member = Membership::new(ack, 20);
        assert!(!member.caught_up());
        assert!(
            !member.acknowledge(0),
            "the floor is where its history starts"
        );
        publish(&topics, "/t", &["6"]).await;
        let replay = member.replay(10);
        assert_eq!(
            texts(&replay),
            vec!["4", "5", "6"],
            "what the history holds"
        );
        assert_eq!(replay.missed, 0, "history it asked for is not a loss");
        member.cursor = 6;
        assert!(member.caught_up());

        let recipient = Quiet.start().recipient();
        let ack = topics.join("/t", "two".into(), recipient).await;
        let mut two = Membership::new(ack, 2);
        assert_eq!(texts(&two.replay(10)), vec!["5", "6"]);
    }

    #[actix_rt::test]
    async fn a_record_of_the_cluster_is_trusted_and_another_epochs_is_not() {
        let topics = registry(100);
        let _first = join(&topics, "/t", "first").await;
        publish(&topics, "/t", &["1", "2", "3"]).await;
        let mut member = join(&topics, "/t", "m").await;
        let epoch = member.epoch;
        member.resume(epoch + 1, 0, false);
        assert_eq!(
            member.cursor, 3,
            "a cursor of another epoch means nothing here"
        );
        member.resume(epoch, 1, false);
        assert_eq!(member.cursor, 1);
        assert!(
            !member.acknowledge(0),
            "the record lowered the floor to 1, no further"
        );
        assert_eq!(texts(&member.replay(10)), vec!["2", "3"]);
        member.resume(epoch, 0, true);
        assert_eq!(
            member.cursor, 1,
            "a membership that served its client only moves forward"
        );
    }
}
