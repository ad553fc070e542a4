//! The connection actor: one logical Atmosphere client, whatever transport currently carries it.
//!
//! It is a member of its topic and keeps a cursor there (a [`Membership`] of the session
//! core). A message arriving in order for a writable transport is written at once; anything
//! else (a gap, a reconnect, a long-poll between polls, a WebSocket that was full) is served from
//! the topic history after the cursor. Nothing is copied per client while it is away.
//!
//! In a cluster the cursor may point before what this node's topic holds (the client was
//! served by another node until now): the membership fetches the missing part from the
//! cluster's shared history first.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::BytesMut;
use bytestring::ByteString;
use tokio::time::Instant;

use super::lane::{atmosphere_frame, Lane};
use super::messages::{Mode, PollReply};
use super::{Atmosphere, Client};
use crate::broker::SessionRecord;
use crate::metrics::{OnTransport, Protocol};
use crate::node::{Node, Stats};
use crate::protocol::atmosphere::{frame::PADDING, handshake};
use crate::session::expiry::{self, Expires};
use crate::session::{self, Cleared, Identity, Membership, Present, Reports};
use crate::topic::{Envelope, Leave, SessionId, SetDirect, TopicId};
use crate::transport::body::Body;
use crate::transport::long_poll::Parked;
use crate::transport::writable::{Pushes, WaitWritable};
use crate::transport::ws::Outbox;
use crate::transport::{Sink, WriteOutcome};

/// Most frames in one long-poll response.
pub(super) const MAX_POLL_BATCH: usize = 256;
/// How long a long-poll is held when server heartbeats are off.
pub(super) const DEFAULT_POLL_HOLD: Duration = Duration::from_secs(30);
/// Clustered: how often a pushing transport's cursor is written to its session record (what a
/// client replays twice at most if its node dies).
const CURSOR_FLUSH: Duration = Duration::from_secs(2);
/// Notices (presence) kept for a client between two polls or while its sink is full.
const MAX_NOTICES: usize = 64;

/// One logical client.
pub struct Connection {
    pub(super) id: SessionId,
    pub(super) topic_id: TopicId,
    pub(super) server: Atmosphere,
    pub(super) node: Arc<Node>,
    /// Set once the topic answered the join (the actor waits for it before anything else).
    pub(super) membership: Option<Membership>,
    /// A transport was attached or a poll answered at least once.
    pub(super) served: bool,
    /// Clustered: the cursor last written to the session record.
    flushed_cursor: u64,
    pub(super) mode: Mode,
    pub(super) sink: Option<Sink<Lane>>,
    /// Bumped at every attach and detach so stale wake-ups and detach notices are ignored.
    pub(super) generation: u64,
    /// The sink was full; a [`WaitWritable`] future is pending.
    pub(super) waiting_writable: bool,
    pub(super) body_watch: Option<SpawnHandle>,
    pub(super) parked: Option<Parked<PollReply>>,
    /// The last long-poll answer did not reach the client: its next poll is a reconnect.
    pub(super) poll_aborted: bool,
    expiry: Option<SpawnHandle>,
    pub(super) last_write: Instant,
    /// The topic's last sequence when the current transport attached: the replay backlog up to
    /// it is not lag (see [`Connection::enforce_lag_limit`]).
    pub(super) replay_target: u64,
    /// The WebSocket whose outbox the topic knows as this member's fast lane (see [`Lane`]); the
    /// lane is lent while a WebSocket client is caught up.
    direct: Option<Outbox<Lane>>,
    /// The application was told the client opened: it is told when it leaves.
    opened: bool,
    /// Who the client is (from its newest request).
    pub(super) identity: Identity,
    /// Runs out with the identity's token.
    token_timer: Option<SpawnHandle>,
    /// How many of the topic's last messages it starts with (history on join).
    history: usize,
    /// Its place in the topic's presence, handed to the membership once joined.
    present: Option<Present>,
    /// The session's place in the connection counts (the caps), for as long as it lives here.
    counted: session::Counted,
    /// The topic's notices not yet written (bounded: the oldest go first), if it takes them.
    pub(super) notices: Option<VecDeque<Arc<Envelope>>>,
    /// Its place in the node's sessions-by-transport gauge.
    pub(super) on_transport: OnTransport,
}

impl Connection {
    /// A connection of client `id` to `topic`, which the gate let it into.
    pub fn new(id: SessionId, topic: Cleared, server: Atmosphere, mode: Mode) -> Self {
        let topic_id = topic.into_topic();
        Connection {
            on_transport: OnTransport::new(&server.node().metrics, Protocol::Atmosphere),
            node: server.node().clone(),
            server,
            topic_id,
            membership: None,
            served: false,
            flushed_cursor: 0,
            mode,
            sink: None,
            generation: 0,
            waiting_writable: false,
            body_watch: None,
            parked: None,
            poll_aborted: false,
            expiry: None,
            last_write: Instant::now(),
            replay_target: 0,
            direct: None,
            opened: false,
            identity: Identity::anonymous(),
            token_timer: None,
            history: 0,
            present: None,
            counted: session::Counted::default(),
            notices: None,
            id,
        }
    }

    /// Counted in the connection caps through `counted` while the connection lives.
    pub fn counted(mut self, counted: session::Counted) -> Self {
        self.counted = counted;
        self
    }

    /// Start with the topic's last `history` messages (history on join), counted in the
    /// topic's presence through `present` while the connection is in it, and taking the
    /// topic's presence notices if `notices`.
    pub fn joining(mut self, history: usize, present: Option<Present>, notices: bool) -> Self {
        self.history = history;
        self.present = present;
        self.notices = notices.then(VecDeque::new);
        self
    }

    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The client as the application's hooks see it.
    pub(super) fn client(&self) -> Client {
        Client::new(self.id.clone(), self.topic_id.clone(), self.server.clone())
            .with_identity(self.identity.clone())
    }

    /// The client's newest identity; its token's expiry ends the transport.
    pub(super) fn identify(&mut self, identity: Identity, ctx: &mut Context<Self>) {
        expiry::arm(self, &identity, ctx);
        self.identity = identity;
    }

    /// Sequence of the last message handed to the client.
    pub(super) fn cursor(&self) -> u64 {
        self.membership.as_ref().map_or(0, |m| m.cursor)
    }

    /// The topic epoch the cursor belongs to.
    pub(super) fn epoch(&self) -> u64 {
        self.membership.as_ref().map_or(0, |m| m.epoch)
    }

    pub(super) fn set_cursor(&mut self, cursor: u64) {
        if let Some(membership) = &mut self.membership {
            membership.cursor = cursor;
        }
    }

    /// The topic's last sequence (the cursor when the topic is not joined yet).
    pub(super) fn last_seq(&self) -> u64 {
        self.membership.as_ref().map_or(0, |m| m.topic().last_seq())
    }

    /// Hand one envelope to the sink. Returns whether the caller may continue writing.
    pub(super) fn write_envelope(&mut self, envelope: &Envelope, ctx: &mut Context<Self>) -> bool {
        if !envelope.audience.includes(&self.id) {
            self.set_cursor(envelope.seq);
            return true;
        }
        let frame = atmosphere_frame(envelope, self.mode.framing);
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        match sink.try_write(frame) {
            WriteOutcome::Written => {
                self.set_cursor(envelope.seq);
                self.last_write = Instant::now();
                Stats::add(&self.node.stats.delivered, 1);
                true
            }
            WriteOutcome::Full => {
                self.wait_writable(ctx);
                false
            }
            WriteOutcome::Closed => {
                self.detach(ctx, None);
                false
            }
        }
    }

    /// A notice of the topic (presence) for the client: written at once to a pushing
    /// transport that can take it, answered to a parked poll, kept for the next poll
    /// otherwise (the oldest dropped beyond [`MAX_NOTICES`]).
    pub(super) fn notice(&mut self, envelope: Arc<Envelope>, ctx: &mut Context<Self>) {
        let Some(notices) = &mut self.notices else {
            return;
        };
        if notices.len() >= MAX_NOTICES {
            notices.pop_front();
        }
        notices.push_back(envelope);
        if self.parked.is_some() {
            self.complete_parked(ctx);
        } else {
            self.pump(ctx);
        }
    }

    /// Write the notices waiting for the client; returns whether the sink took them all.
    fn write_notices(&mut self, ctx: &mut Context<Self>) -> bool {
        while let Some(envelope) = self.notices.as_mut().and_then(VecDeque::pop_front) {
            let frame = atmosphere_frame(&envelope, self.mode.framing);
            let Some(sink) = self.sink.as_mut() else {
                return false;
            };
            match sink.try_write(frame) {
                WriteOutcome::Written => self.last_write = Instant::now(),
                WriteOutcome::Full => {
                    if let Some(notices) = &mut self.notices {
                        notices.push_front(envelope);
                    }
                    self.wait_writable(ctx);
                    return false;
                }
                WriteOutcome::Closed => {
                    self.detach(ctx, None);
                    return false;
                }
            }
        }
        true
    }

    /// Write everything after the cursor that the histories hold, until the sink is full.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.sink.is_none() || self.waiting_writable {
                return;
            }
            self.take_lane();
            if !self.write_notices(ctx) {
                return;
            }
            if self.fetch_first(ctx, |act, ctx| act.pump(ctx)).is_none() {
                return;
            }
            let replay = self.replay(MAX_POLL_BATCH);
            if replay.is_empty() {
                self.lend_lane();
                return;
            }
            for envelope in replay {
                if !self.write_envelope(&envelope, ctx) {
                    return;
                }
            }
        }
    }

    /// Clustered: if this node's history does not reach back to the cursor, read the rest from
    /// the shared history first, then run `then`. Gives `then` back when there is nothing to
    /// read (the caller goes on at once).
    pub(super) fn fetch_first<T>(&mut self, ctx: &mut Context<Self>, then: T) -> Option<T>
    where
        T: FnOnce(&mut Self, &mut Context<Self>) + 'static,
    {
        let upstream = self.node.topics.upstream().cloned();
        let Some(fetch) = self
            .membership
            .as_mut()
            .and_then(|m| m.fetch(upstream.as_ref()))
        else {
            return Some(then);
        };
        fetch.run(ctx, |act: &mut Self| act.membership.as_mut(), then);
        None
    }

    /// Messages after the cursor, oldest first; counts (and skips) what the history lost.
    pub(super) fn replay(&mut self, limit: usize) -> Vec<Arc<Envelope>> {
        let Some(membership) = &mut self.membership else {
            return Vec::new();
        };
        let replay = membership.replay(limit);
        self.missed(replay.missed);
        replay.messages
    }

    /// Take the fast lane back from the topic (if lent): the cursor and the last write time
    /// are the actor's again. Called first by everything that reads the cursor or the sink.
    pub(super) fn take_lane(&mut self) {
        let Some(Sink::WebSocket(outbox)) = &self.sink else {
            return;
        };
        if let Some(lane) = outbox.take_back() {
            self.set_cursor(lane.cursor);
            if let Some(at) = lane.last_write {
                self.last_write = at;
            }
        }
    }

    /// Catch up with the cursor of the lane while it stays lent (the lane's stays the true one:
    /// it only moves forward, and taking the lane back overwrites this copy).
    fn peek_lane(&mut self) {
        if let Some(Sink::WebSocket(outbox)) = &self.sink {
            if let Some(cursor) = outbox.peek_lane(|lane| lane.cursor) {
                self.set_cursor(cursor);
            }
        }
    }

    /// Lend the fast lane to the topic if nothing is pending: a WebSocket with room, the
    /// cursor at the topic's last message, nothing fetched or being fetched.
    pub(super) fn lend_lane(&mut self) {
        let (Some(Sink::WebSocket(outbox)), Some(membership)) = (&self.sink, &self.membership)
        else {
            return;
        };
        if self.waiting_writable || !membership.caught_up() {
            return;
        }
        // A new WebSocket: tell the topic (until it knows, it hands messages to the actor).
        if !self.direct.as_ref().is_some_and(|known| known.same(outbox)) {
            membership.ack.addr.do_send(SetDirect {
                session: self.id.clone(),
                direct: outbox.shared(),
            });
            self.direct = Some(outbox.clone());
        }
        outbox.lend(Lane {
            open: true,
            session: self.id.clone(),
            node: self.node.clone(),
            framing: self.mode.framing,
            epoch: membership.epoch,
            cursor: membership.cursor,
            last_write: None,
        });
    }

    pub(super) fn wait_writable(&mut self, ctx: &mut Context<Self>) {
        if !self.waiting_writable {
            self.waiting_writable = true;
            ctx.spawn(WaitWritable::new(self.generation));
        }
        self.enforce_lag_limit(ctx);
    }

    /// The slow-consumer policy ([`session::lagging`]): the connection is behind by what was
    /// published since its transport attached (past the history it replays) and is not yet
    /// written. A dropped client keeps its cursor and resumes from the history.
    pub(super) fn enforce_lag_limit(&mut self, ctx: &mut Context<Self>) {
        if self.membership.is_none() {
            return;
        }
        let lag = self
            .last_seq()
            .saturating_sub(self.cursor().max(self.replay_target));
        if let Some(reason) = session::lagging(&self.node, &self.id, lag) {
            self.detach(ctx, Some(reason));
        }
    }

    /// Drop the current transport; the connection waits `reconnect_window` for the client.
    pub(super) fn detach(
        &mut self,
        ctx: &mut Context<Self>,
        reason: Option<actix_http::ws::CloseReason>,
    ) {
        self.take_lane();
        self.generation += 1;
        self.waiting_writable = false;
        if let Some(handle) = self.body_watch.take() {
            ctx.cancel_future(handle);
        }
        // The record is written before the transport closes: a client told to go (a drain, the
        // slow-consumer policy) reconnects at once, maybe to another node, which must find
        // where it stands.
        let sink = self.sink.take();
        let save = self.save_cursor();
        actix::spawn(async move {
            if let Some(save) = save {
                save.await;
            }
            if let Some(sink) = sink {
                sink.close(reason);
            }
        });
        self.arm_expiry(ctx, self.node.config.reconnect_window());
    }

    /// Watch a response body: the transport of `generation` detaches when its client leaves.
    pub(super) fn watch_body(&mut self, body: Body, generation: u64, ctx: &mut Context<Self>) {
        self.body_watch = Some(ctx.spawn(body.closed().into_actor(self).map(
            move |_, act, ctx| {
                if act.generation == generation {
                    act.detach(ctx, None);
                }
            },
        )));
    }

    /// Clustered: note where the client stands for its session record, if it moved (the
    /// broker writes notes in batches; a detach writes the record itself, see `save_cursor`).
    fn flush_cursor(&mut self) {
        if !self.node.is_clustered() || self.cursor() == self.flushed_cursor {
            return;
        }
        self.flushed_cursor = self.cursor();
        self.node
            .broker
            .note_cursor(self.id.clone(), self.epoch(), self.cursor());
    }

    fn save_cursor(&mut self) -> Option<impl std::future::Future<Output = ()> + 'static> {
        if !self.node.is_clustered() || self.cursor() == self.flushed_cursor {
            return None;
        }
        self.flushed_cursor = self.cursor();
        let record = self.record(false);
        let save = self.node.broker.save_session(self.id.clone(), record);
        let id = self.id.clone();
        Some(async move {
            if let Err(error) = save.await {
                tracing::debug!(session = %id, %error, "cannot save the session record");
            }
        })
    }

    /// The session record for where the client stands now.
    pub fn record(&self, polling: bool) -> SessionRecord {
        SessionRecord {
            topic: Some(self.topic_id.to_string()),
            epoch: self.epoch(),
            cursor: self.cursor(),
            polling,
            node: Some(self.node.id.clone()),
            floor: Some(self.floor()),
        }
    }

    /// The earliest cursor the session may take (see `Membership::acknowledge`).
    pub(super) fn floor(&self) -> u64 {
        self.membership.as_ref().map_or(0, Membership::floor)
    }

    /// Take over the cursor of a record written by another node (or by an earlier visit): a
    /// connection that never served its client starts there; one that did moves forward only.
    /// The record may be ahead of this node's topic (relays still on their way): the client
    /// has those messages already.
    pub(super) fn resume_from(&mut self, record: Option<&SessionRecord>) {
        let served = self.served;
        if let (Some(record), Some(membership)) = (record, &mut self.membership) {
            membership.resume(record.epoch, record.cursor, served);
            membership.adopt_floor(record.epoch, record.floor.unwrap_or(0));
        }
    }

    pub(super) fn arm_expiry(&mut self, ctx: &mut Context<Self>, after: Duration) {
        self.cancel_expiry(ctx);
        self.expiry = Some(ctx.run_later(after, |act, ctx| {
            if act.sink.is_none() && act.parked.is_none() {
                tracing::debug!(session = %act.id, "client did not come back; disconnecting");
                ctx.stop();
            }
        }));
    }

    pub(super) fn cancel_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
    }

    pub(super) fn handshake_frame(&self) -> ByteString {
        let client_hb_ms = self.node.config.client_heartbeat_secs * 1000;
        handshake(self.mode.framing, &self.id, client_hb_ms, PADDING)
    }

    fn send_heartbeat(&mut self, ctx: &mut Context<Self>) {
        let frame = self.mode.framing.encode(PADDING);
        if let Some(sink) = self.sink.as_mut() {
            match sink.try_write(&frame) {
                WriteOutcome::Written => self.last_write = Instant::now(),
                WriteOutcome::Full => {}
                WriteOutcome::Closed => self.detach(ctx, None),
            }
        }
    }

    /// Periodic check: heartbeats for idle pushing transports, abandoned parked polls.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.take_lane();
        if let Some(heartbeat) = self.mode.heartbeat {
            if self.sink.is_some()
                && !self.waiting_writable
                && self.last_write.elapsed() >= heartbeat
            {
                self.send_heartbeat(ctx);
            }
        }
        if self.parked.as_ref().is_some_and(Parked::is_abandoned) {
            if let Some(parked) = self.parked.take() {
                parked.cancel(ctx);
            }
            self.poll_aborted = true;
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
        }
        self.lend_lane();
    }

    /// Clustered: write the cursor to the session record every [`CURSOR_FLUSH`], the
    /// connections' flushes spread over the interval (thousands of connections flushing in the
    /// same tick would be a burst of Redis writes that delays deliveries).
    fn schedule_cursor_flush(&mut self, ctx: &mut Context<Self>) {
        let offset = CURSOR_FLUSH.mul_f64(spread(&self.id));
        ctx.run_later(offset, |_, ctx| {
            ctx.run_interval(CURSOR_FLUSH, |act, _| {
                if act.sink.is_some() {
                    act.peek_lane();
                    act.flush_cursor();
                }
            });
        });
    }
}

impl Reports for Connection {
    fn missed(&mut self, missed: u64) {
        session::count_missed(&self.node, &self.id, missed);
    }
}

impl Pushes for Connection {
    type Lane = Lane;

    fn sink_of(&mut self, generation: u64) -> Option<&mut Sink<Lane>> {
        (generation == self.generation)
            .then_some(self.sink.as_mut())
            .flatten()
    }

    fn writable(&mut self, ctx: &mut Context<Self>) {
        self.waiting_writable = false;
        self.pump(ctx);
    }

    fn unwritable(&mut self, ctx: &mut Context<Self>) {
        self.detach(ctx, None);
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(session::MAILBOX);
        let node = self.node.clone();
        let (topic, session, recipient) = (
            self.topic_id.clone(),
            self.id.clone(),
            ctx.address().recipient(),
        );
        let notices = self.notices.is_some();
        let join = async move {
            node.topics
                .join_with_notices(&topic, session, recipient, notices)
                .await
        };
        // Nothing else is handled until the topic has answered: the cursor must be set first.
        ctx.wait(join.into_actor(self).map(|ack, act, _| {
            act.flushed_cursor = ack.cursor;
            act.membership =
                Some(Membership::new(ack, act.history).with_presence(act.present.take()));
            act.opened = true;
            act.server.opened(&act.client());
        }));
        if self.node.is_clustered() {
            self.schedule_cursor_flush(ctx);
        }
        let tick = self
            .node
            .config
            .heartbeat()
            .map_or(Duration::from_secs(5), |hb| hb / 4);
        ctx.run_interval(
            tick.clamp(Duration::from_millis(100), Duration::from_secs(15)),
            |act, ctx| act.tick(ctx),
        );
        self.arm_expiry(ctx, self.node.config.reconnect_window());
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.take_lane();
        // Before leaving the topic: the answer's session token names the topic epoch.
        self.release_parked_poll(ctx);
        if let Some(membership) = self.membership.take() {
            membership.ack.addr.do_send(Leave {
                session: self.id.clone(),
            });
        }
        if let Some(sink) = self.sink.take() {
            sink.close(Some(actix_http::ws::CloseCode::Normal.into()));
        }
        self.server.forget(&self.id, &ctx.address());
        if self.opened {
            self.server.left(&self.client());
        }
        tracing::debug!(session = %self.id, topic = %self.topic_id, "disconnected");
    }
}

/// A fraction in `[0, 1)` derived from `id`, to spread periodic work over an interval.
fn spread(id: &str) -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(id) % 10_000) as f64 / 10_000.0
}

/// Build a long-poll body of at most `limit` frames from `replay`, for client `id`; returns it,
/// the cursor it reaches (from `cursor`) and how many messages it holds.
pub(super) fn poll_frames(
    id: &str,
    mode: Mode,
    replay: Vec<Arc<Envelope>>,
    limit: u64,
    mut cursor: u64,
    body: &mut BytesMut,
) -> (u64, u64) {
    let mut count = 0;
    for envelope in replay {
        if count == limit {
            break;
        }
        cursor = envelope.seq;
        if envelope.audience.includes(id) {
            let frame = atmosphere_frame(&envelope, mode.framing);
            if frame.is_empty() {
                // An empty message without TrackMessageSize is an empty body, which the
                // client takes for "nothing yet": it cannot be delivered. Skip it; counting
                // it would leave the poll parked on it and wedge every message behind it.
                continue;
            }
            body.extend_from_slice(frame.as_bytes());
            count += 1;
        }
    }
    (cursor, count)
}

impl Expires for Connection {
    fn token_timer(&mut self) -> &mut Option<SpawnHandle> {
        &mut self.token_timer
    }

    /// A parked poll is answered (the client's next one is refused at the door); a pushing
    /// transport is closed, a WebSocket with `1008` "token expired".
    fn token_expired(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(session = %self.id, "token expired: ending the transport");
        self.node.metrics.auth_failure("expired_live");
        if self.release_parked_poll(ctx) {
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
        }
        if self.sink.is_some() {
            self.detach(ctx, Some(expiry::token_expired()));
        }
    }
}
