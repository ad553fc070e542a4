//! The connection actor: one logical client, whatever transport currently carries it.
//!
//! It is a member of its topic and keeps a cursor, the sequence of the last message handed to
//! its client. A message arriving in order for a writable transport is written at once; anything
//! else (a gap, a reconnect, a long-poll between polls, a socket that was full) is served from
//! the topic history after the cursor. Nothing is copied per client while it is away.
//!
//! In a cluster the cursor may point before what this node's topic holds (the client was
//! served by another node until now): the missing part is fetched from the cluster's shared
//! history into a small backlog first.
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll as TaskPoll};
use std::time::Duration;

use actix::prelude::*;
use actix::ActorFuture;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::sink::{Sink, WriteOutcome};
use crate::broker::SessionRecord;
use crate::node::{Node, Stats};
use crate::protocol::atmosphere::{frame::PADDING, handshake, Framing};
use crate::topic::{
    Audience, Deliver, Envelope, JoinAck, Leave, Message, SessionId, SetDirect, TopicId,
};

/// Messages a connection's mailbox holds before the topic skips it (it then catches up from
/// the history, so a full mailbox delays a client but loses nothing the history still has).
const MAILBOX: usize = 256;
/// Most frames in one long-poll response.
const MAX_POLL_BATCH: usize = 256;
/// How long a long-poll is held when server heartbeats are off.
const DEFAULT_POLL_HOLD: Duration = Duration::from_secs(30);
/// Most messages fetched from the cluster's shared history at once.
const BACKLOG_BATCH: usize = 1000;
/// Clustered: how often a pushing transport's cursor is written to its session record (what a
/// client replays twice at most if its node dies).
const CURSOR_FLUSH: Duration = Duration::from_secs(2);

/// How frames are written on the current transport.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub framing: Framing,
    /// Send the `uuid|hb|X|` handshake first.
    pub protocol: bool,
    /// Idle time after which the padding is sent; `None` = no server heartbeat.
    pub heartbeat: Option<Duration>,
}

/// Attach a pushing transport (WebSocket, SSE, streaming); answered with its generation.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Attach {
    pub sink: Sink,
    pub mode: Mode,
    /// For response bodies: a sender whose `closed()` tells that the client went away.
    pub body_closed: Option<mpsc::Sender<Bytes>>,
    /// Clustered: the session's record, telling where its client stands if another node
    /// served it last.
    pub resume: Option<SessionRecord>,
}

/// The transport of generation `0` went away (WebSocket closed, TCP closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach(pub u64);

/// A message from the client (a WebSocket frame or a POST body).
#[derive(Message)]
#[rtype(result = "Result<(), InboundError>")]
pub struct Inbound(pub ByteString);

/// Why an inbound message was refused.
#[derive(Debug, Error)]
pub enum InboundError {
    #[error(transparent)]
    Publish(#[from] crate::topic::PublishError),
}

/// A long-poll request; answered on `reply` now or when something arrives.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll {
    pub mode: Mode,
    /// The tracking-id `0` poll: answer with only the handshake.
    pub handshake_only: bool,
    /// The client is (re)connecting: start the body with a handshake.
    pub reconnect: bool,
    /// `X-Atmosphere-Session-Token` echoed by the client: the cursor it has acknowledged.
    pub session_token: Option<String>,
    /// Clustered: the session's record, for a client without a token.
    pub resume: Option<SessionRecord>,
    pub reply: oneshot::Sender<PollReply>,
}

/// The body of a long-poll response and the token that acknowledges it.
#[derive(Debug)]
pub struct PollReply {
    pub body: Bytes,
    pub session_token: String,
    /// Where the client stands once it has this body (the token, unencoded).
    pub epoch: u64,
    pub cursor: u64,
}

/// Drop the current transport but keep the connection (and its cursor) for the reconnect
/// window: the client reconnects and resumes. Used by operators before maintenance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropTransport;

/// The client's departure (`X-Atmosphere-Transport=close`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

struct ParkedPoll {
    reply: oneshot::Sender<PollReply>,
    timer: SpawnHandle,
}

/// One logical client.
pub struct Connection {
    id: SessionId,
    topic_id: TopicId,
    node: Arc<Node>,
    /// Set once the topic answered the join (the actor waits for it before anything else).
    membership: Option<JoinAck>,
    /// Sequence of the last message handed to the client.
    cursor: u64,
    /// The topic epoch `cursor` belongs to.
    cursor_epoch: u64,
    /// Clustered: messages after the cursor fetched from the shared history, oldest first.
    backlog: VecDeque<Arc<Envelope>>,
    backfilling: bool,
    /// A transport was attached or a poll answered at least once.
    served: bool,
    /// Clustered: the cursor last written to the session record.
    flushed_cursor: u64,
    mode: Mode,
    sink: Option<Sink>,
    /// Bumped at every attach and detach so stale wake-ups and detach notices are ignored.
    generation: u64,
    /// The sink was full; a [`WaitWritable`] future is pending.
    waiting_writable: bool,
    body_watch: Option<SpawnHandle>,
    parked: Option<ParkedPoll>,
    /// The last long-poll answer did not reach the client: its next poll is a reconnect.
    poll_aborted: bool,
    expiry: Option<SpawnHandle>,
    last_write: Instant,
    /// The topic's last sequence when the current transport attached: the replay backlog up to
    /// it is not lag (see [`Connection::enforce_lag_limit`]).
    replay_target: u64,
    /// The socket whose outbox the topic knows as this member's fast lane (see
    /// [`super::ws::Outbox`]); the lane is lent while a WebSocket client is caught up.
    direct: Option<super::ws::Outbox>,
}

impl Connection {
    pub fn new(id: SessionId, topic_id: TopicId, node: Arc<Node>, mode: Mode) -> Self {
        Connection {
            topic_id,
            membership: None,
            cursor: 0,
            cursor_epoch: 0,
            backlog: VecDeque::new(),
            backfilling: false,
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
            id,
            node,
        }
    }

    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// Hand one envelope to the sink. Returns whether the caller may continue writing.
    fn write_envelope(&mut self, envelope: &Envelope, ctx: &mut Context<Self>) -> bool {
        if !envelope.audience.includes(&self.id) {
            self.cursor = envelope.seq;
            return true;
        }
        let frame = atmosphere_frame(envelope, self.mode.framing);
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        match sink.try_write(frame) {
            WriteOutcome::Written => {
                self.cursor = envelope.seq;
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

    /// Write everything after the cursor that the history holds, until the sink is full.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.sink.is_none() || self.waiting_writable {
                return;
            }
            if self.needs_backfill() {
                self.backfill(ctx, |act, ctx| act.pump(ctx));
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

    /// Take the fast lane back from the topic (if lent): the cursor and the last write time
    /// are the actor's again. Called first by everything that reads the cursor or the sink.
    fn take_lane(&mut self) {
        let Some(Sink::Socket(outbox)) = &self.sink else {
            return;
        };
        if let Some(returned) = outbox.take_back() {
            self.cursor = returned.cursor;
            if let Some(at) = returned.last_write {
                self.last_write = at;
            }
        }
    }

    /// Catch up with the cursor of the lane while it stays lent (the lane's stays the true one:
    /// it only moves forward, and taking the lane back overwrites this copy).
    fn peek_lane(&mut self) {
        if let Some(Sink::Socket(outbox)) = &self.sink {
            if let Some(cursor) = outbox.lane_cursor() {
                self.cursor = cursor;
            }
        }
    }

    /// Lend the fast lane to the topic if nothing is pending: a WebSocket with room, the
    /// cursor at the topic's last message, no backlog, no replay under way.
    fn lend_lane(&mut self) {
        let (Some(Sink::Socket(outbox)), Some(membership)) = (&self.sink, &self.membership) else {
            return;
        };
        if self.waiting_writable
            || self.backfilling
            || !self.backlog.is_empty()
            || membership.topic.epoch() != self.cursor_epoch
            || membership.topic.last_seq() != self.cursor
        {
            return;
        }
        // A new socket: tell the topic (until it knows, it hands messages to the actor).
        if !self.direct.as_ref().is_some_and(|known| known.same(outbox)) {
            membership.addr.do_send(SetDirect {
                session: self.id.clone(),
                direct: outbox.direct(),
            });
            self.direct = Some(outbox.clone());
        }
        outbox.lend(
            &self.id,
            &self.node,
            self.mode.framing,
            self.cursor_epoch,
            self.cursor,
        );
    }

    /// Follow the topic into a new epoch: the old cursor means nothing there.
    fn sync_epoch(&mut self) {
        let Some(membership) = &self.membership else {
            return;
        };
        let epoch = membership.topic.epoch();
        if epoch != self.cursor_epoch {
            self.cursor = membership.topic.start_seq();
            self.cursor_epoch = epoch;
            self.backlog.clear();
        }
    }

    /// Clustered: the cursor is older than this node's history of the topic, and the rest must
    /// come from the cluster's shared history.
    fn needs_backfill(&mut self) -> bool {
        if self.backfilling || !self.node.broker.numbers_messages() {
            return false;
        }
        self.sync_epoch();
        while self.backlog.front().is_some_and(|e| e.seq <= self.cursor) {
            self.backlog.pop_front();
        }
        let Some(membership) = &self.membership else {
            return false;
        };
        if !self.backlog.is_empty() || membership.topic.last_seq() <= self.cursor {
            return false;
        }
        let first = membership.topic.history.read().first_seq();
        first.is_none_or(|first| first > self.cursor + 1)
    }

    /// Fetch the messages after the cursor from the shared history, then run `then`. While
    /// the cluster is unreachable `then` is retried later: nothing is skipped.
    fn backfill(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let Some(membership) = &self.membership else {
            return;
        };
        let topic = membership.topic.clone();
        let fetch = self.node.broker.backlog(
            self.topic_id.clone(),
            self.cursor_epoch,
            self.cursor,
            BACKLOG_BATCH,
        );
        self.backfilling = true;
        ctx.wait(fetch.into_actor(self).map(move |result, act, ctx| {
            act.backfilling = false;
            match result {
                Ok(backlog) if backlog.messages.is_empty() => {
                    // Nothing left in the shared history: continue where this node's begins.
                    let target = topic
                        .history
                        .read()
                        .first_seq()
                        .map_or(topic.last_seq(), |first| first - 1);
                    act.count_missed(target.saturating_sub(act.cursor));
                    act.cursor = act.cursor.max(target);
                    then(act, ctx);
                }
                Ok(backlog) => {
                    act.count_missed(backlog.missed);
                    act.backlog.extend(backlog.messages);
                    then(act, ctx);
                }
                Err(error) => {
                    tracing::warn!(session = %act.id, %error, "cannot read the cluster history; retrying");
                    ctx.run_later(Duration::from_secs(1), then);
                }
            }
        }));
    }

    fn count_missed(&self, missed: u64) {
        if missed > 0 {
            Stats::add(&self.node.stats.missed, missed);
            tracing::warn!(session = %self.id, topic = %self.topic_id, missed,
                "client fell behind the topic history; messages lost for it");
        }
    }

    /// Messages after the cursor, oldest first; counts (and skips) what the history lost.
    fn replay(&mut self, limit: usize) -> Vec<Arc<Envelope>> {
        self.sync_epoch();
        while self.backlog.front().is_some_and(|e| e.seq <= self.cursor) {
            self.backlog.pop_front();
        }
        if !self.backlog.is_empty() {
            return self.backlog.iter().take(limit).cloned().collect();
        }
        let Some(membership) = &self.membership else {
            return Vec::new();
        };
        let topic = membership.topic.clone();
        let replay = topic.history.read().after(self.cursor, limit, |_| true);
        let mut missed = replay.missed;
        if replay.messages.is_empty() && topic.last_seq() > self.cursor {
            missed = topic.last_seq() - self.cursor;
            self.cursor = topic.last_seq();
        }
        self.count_missed(missed);
        replay.messages
    }

    fn wait_writable(&mut self, ctx: &mut Context<Self>) {
        if !self.waiting_writable {
            self.waiting_writable = true;
            ctx.spawn(WaitWritable {
                generation: self.generation,
            });
        }
        self.enforce_lag_limit(ctx);
    }

    /// The slow-consumer policy: a client more than `max_lag_messages` behind its socket is
    /// disconnected; it keeps its cursor and resumes from the history when it reconnects.
    ///
    /// Lag counts only what was published since the transport attached and is not yet written:
    /// the backlog a reconnecting client replays from the history is not lag, or a client
    /// dropped once (more than `max_lag_messages` behind) would be dropped again on every
    /// reconnect while its replay fills the socket, and could never catch up.
    fn enforce_lag_limit(&mut self, ctx: &mut Context<Self>) {
        let Some(membership) = &self.membership else {
            return;
        };
        let lag = membership
            .topic
            .last_seq()
            .saturating_sub(self.cursor.max(self.replay_target));
        if lag > self.node.config.max_lag_messages {
            Stats::add(&self.node.stats.slow_consumers_dropped, 1);
            tracing::warn!(session = %self.id, topic = %self.topic_id, lag,
                "slow consumer: closing its transport, it resumes from the history on reconnect");
            let reason = actix_http::ws::CloseReason {
                code: actix_http::ws::CloseCode::Again,
                description: Some("slow consumer".into()),
            };
            self.detach(ctx, Some(reason));
        }
    }

    /// Drop the current transport; the connection waits `reconnect_window` for the client.
    fn detach(&mut self, ctx: &mut Context<Self>, reason: Option<actix_http::ws::CloseReason>) {
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

    /// Clustered: note where the client stands for its session record, if it moved (the
    /// broker writes notes in batches; a detach writes the record itself, see `save_cursor`).
    fn flush_cursor(&mut self) {
        if !self.node.broker.numbers_messages() || self.cursor == self.flushed_cursor {
            return;
        }
        self.flushed_cursor = self.cursor;
        self.node
            .broker
            .note_cursor(self.id.clone(), self.cursor_epoch, self.cursor);
    }

    fn save_cursor(&mut self) -> Option<impl std::future::Future<Output = ()> + 'static> {
        if !self.node.broker.numbers_messages() || self.cursor == self.flushed_cursor {
            return None;
        }
        self.flushed_cursor = self.cursor;
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
            epoch: self.cursor_epoch,
            cursor: self.cursor,
            polling,
            node: Some(self.node.id.clone()),
        }
    }

    /// Take over the cursor of a record written by another node (or by an earlier visit): a
    /// connection that never served its client starts there; one that did moves forward only.
    fn resume_from(&mut self, record: Option<&SessionRecord>) {
        self.sync_epoch();
        let Some(cursor) = record.and_then(|r| r.cursor_in(self.cursor_epoch)) else {
            return;
        };
        // The record may be ahead of this node's topic (relays still on their way): the client
        // has those messages already.
        if !self.served {
            self.cursor = cursor;
        } else {
            self.cursor = self.cursor.max(cursor);
        }
    }

    fn arm_expiry(&mut self, ctx: &mut Context<Self>, after: Duration) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        self.expiry = Some(ctx.run_later(after, |act, ctx| {
            if act.sink.is_none() && act.parked.is_none() {
                tracing::debug!(session = %act.id, "client did not come back; disconnecting");
                ctx.stop();
            }
        }));
    }

    fn cancel_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
    }

    fn handshake_frame(&self) -> ByteString {
        let client_hb_ms = self.node.config.client_heartbeat_secs * 1000;
        handshake(self.mode.framing, &self.id, client_hb_ms, PADDING)
    }

    fn session_token(&self, cursor: u64) -> String {
        format!("{}-{cursor}", self.cursor_epoch)
    }

    /// Move the cursor to what the client acknowledged. Behind it: the last answer was lost on
    /// the way (returns `true`: the client is reconnecting). Ahead of it: another node served
    /// the client since (a cluster without sticky sessions). Tokens from another topic epoch
    /// are ignored.
    fn apply_session_token(&mut self, token: Option<&str>) -> bool {
        self.sync_epoch();
        let (Some(token), Some(_)) = (token, &self.membership) else {
            return false;
        };
        let Some((epoch, seq)) = token.split_once('-') else {
            return false;
        };
        if epoch.parse() != Ok(self.cursor_epoch) {
            return false;
        }
        let Ok(seq) = seq.parse::<u64>() else {
            return false;
        };
        if seq < self.cursor {
            self.cursor = seq;
            return true;
        }
        // Ahead even of this node's topic: the relays of the last messages have not reached
        // this node yet. The client has them; they must not be sent again when they arrive.
        if seq > self.cursor {
            self.cursor = seq;
        }
        false
    }

    /// Build a long-poll body from the history; returns it, the cursor it reaches, and how
    /// many messages it holds. Without `TrackMessageSize` a body carries exactly one message.
    fn poll_body(&mut self, with_handshake: bool) -> (BytesMut, u64, u64) {
        let mut body = BytesMut::new();
        let framing = self.mode.framing;
        if with_handshake && self.mode.protocol {
            body.extend_from_slice(self.handshake_frame().as_bytes());
            if !framing.track_message_size {
                return (body, self.cursor, 0);
            }
        }
        let limit = if framing.track_message_size {
            MAX_POLL_BATCH
        } else {
            1
        };
        let mut cursor = self.cursor;
        let mut count = 0;
        for envelope in self.replay(MAX_POLL_BATCH) {
            if count == limit as u64 {
                break;
            }
            cursor = envelope.seq;
            if envelope.audience.includes(&self.id) {
                let frame = atmosphere_frame(&envelope, self.mode.framing);
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
        (body, cursor.max(self.cursor), count)
    }

    /// Answer a long-poll; the cursor moves only if the client was still there to take it.
    fn answer_poll(
        &mut self,
        reply: oneshot::Sender<PollReply>,
        body: BytesMut,
        cursor: u64,
        count: u64,
    ) {
        let session_token = self.session_token(cursor);
        self.served = true;
        match reply.send(PollReply {
            body: body.freeze(),
            session_token,
            epoch: self.cursor_epoch,
            cursor,
        }) {
            Ok(()) => {
                self.cursor = cursor;
                Stats::add(&self.node.stats.delivered, count);
            }
            Err(_) => self.poll_aborted = true,
        }
    }

    /// A message arrived while a poll is parked: complete it with what the history has.
    fn complete_parked(&mut self, ctx: &mut Context<Self>) {
        let Some(parked) = self.parked.take() else {
            return;
        };
        if parked.reply.is_closed() {
            ctx.cancel_future(parked.timer);
            self.poll_aborted = true;
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
            return;
        }
        if self.needs_backfill() {
            self.parked = Some(parked);
            self.backfill(ctx, |act, ctx| act.complete_parked(ctx));
            return;
        }
        let (body, cursor, count) = self.poll_body(false);
        if body.is_empty() {
            self.parked = Some(parked);
            return;
        }
        ctx.cancel_future(parked.timer);
        self.answer_poll(parked.reply, body, cursor, count);
        self.arm_expiry(ctx, self.node.config.long_poll_expiry());
    }

    /// Answer a parked poll with an empty body (the client simply polls again); returns
    /// whether one was parked.
    fn release_parked_poll(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(parked) = self.parked.take() else {
            return false;
        };
        ctx.cancel_future(parked.timer);
        let session_token = self.session_token(self.cursor);
        let _ = parked.reply.send(PollReply {
            body: Bytes::new(),
            session_token,
            epoch: self.cursor_epoch,
            cursor: self.cursor,
        });
        true
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
        if self.parked.as_ref().is_some_and(|p| p.reply.is_closed()) {
            if let Some(parked) = self.parked.take() {
                ctx.cancel_future(parked.timer);
            }
            self.poll_aborted = true;
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
        }
        self.lend_lane();
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        let node = self.node.clone();
        let (topic, session, recipient) = (
            self.topic_id.clone(),
            self.id.clone(),
            ctx.address().recipient(),
        );
        let join = async move { node.topics.join(&topic, session, recipient).await };
        // Nothing else is handled until the topic has answered: the cursor must be set first.
        ctx.wait(join.into_actor(self).map(|ack, act, _| {
            act.cursor = ack.cursor;
            act.cursor_epoch = ack.topic.epoch();
            act.flushed_cursor = ack.cursor;
            act.membership = Some(ack);
        }));
        if self.node.broker.numbers_messages() {
            // Spread the connections' flushes over the interval: thousands of connections
            // flushing in the same tick would be a burst of Redis writes that delays deliveries.
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
            membership.addr.do_send(Leave {
                session: self.id.clone(),
            });
        }
        if let Some(sink) = self.sink.take() {
            sink.close(Some(actix_http::ws::CloseCode::Normal.into()));
        }
        self.node.connections.remove(&self.id, &ctx.address());
        tracing::debug!(session = %self.id, topic = %self.topic_id, "disconnected");
    }
}

impl Handler<Deliver> for Connection {
    type Result = ();

    fn handle(&mut self, Deliver(envelope): Deliver, ctx: &mut Context<Self>) {
        self.take_lane();
        self.sync_epoch();
        if envelope.seq <= self.cursor {
            self.lend_lane();
            return;
        }
        if self.parked.is_some() {
            self.complete_parked(ctx);
        } else if self.sink.is_none() {
            // Away (between polls or reconnecting): the history keeps it for us.
        } else if self.waiting_writable {
            self.enforce_lag_limit(ctx);
        } else if envelope.seq == self.cursor + 1 {
            if self.write_envelope(&envelope, ctx) {
                self.lend_lane();
            }
        } else {
            self.pump(ctx);
        }
    }
}

impl Handler<Attach> for Connection {
    type Result = u64;

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> u64 {
        self.take_lane();
        if let Some(old) = self.sink.take() {
            tracing::debug!(session = %self.id, "replacing a transport the client abandoned");
            old.close(None);
        }
        if let Some(parked) = self.parked.take() {
            ctx.cancel_future(parked.timer);
        }
        if let Some(handle) = self.body_watch.take() {
            ctx.cancel_future(handle);
        }
        self.cancel_expiry(ctx);
        self.generation += 1;
        self.waiting_writable = false;
        self.resume_from(msg.resume.as_ref());
        self.served = true;
        self.mode = msg.mode;
        self.sink = Some(msg.sink);
        self.last_write = Instant::now();
        self.replay_target = self
            .membership
            .as_ref()
            .map_or(self.cursor, |m| m.topic.last_seq());
        let generation = self.generation;
        if let Some(body) = msg.body_closed {
            let closed = async move { body.closed().await };
            self.body_watch = Some(ctx.spawn(closed.into_actor(self).map(move |_, act, ctx| {
                if act.generation == generation {
                    act.detach(ctx, None);
                }
            })));
        }
        if self.mode.protocol {
            let frame = self.handshake_frame();
            if let Some(sink) = self.sink.as_mut() {
                if sink.try_write(&frame) != WriteOutcome::Written {
                    self.detach(ctx, None);
                    return generation;
                }
            }
        }
        self.pump(ctx);
        generation
    }
}

impl Handler<Detach> for Connection {
    type Result = ();

    fn handle(&mut self, Detach(generation): Detach, ctx: &mut Context<Self>) {
        if generation == self.generation {
            self.detach(ctx, None);
        }
    }
}

impl Handler<Inbound> for Connection {
    type Result = Result<(), InboundError>;

    fn handle(&mut self, Inbound(text): Inbound, _ctx: &mut Context<Self>) -> Self::Result {
        publish_from_client(&self.node, &self.topic_id, text)
    }
}

/// A client message: swallow heartbeats, publish the rest to everyone in the topic.
pub fn publish_from_client(node: &Node, topic: &str, text: ByteString) -> Result<(), InboundError> {
    if let Some(message) = client_message(node, text) {
        node.broker.publish(topic, Audience::All, message)?;
        Stats::add(&node.stats.published, 1);
    }
    Ok(())
}

/// What a client's message publishes: nothing for heartbeats (swallowed and counted) and empty
/// messages (they carry nothing for anyone; an empty POST is ignored the same way).
pub fn client_message(node: &Node, text: ByteString) -> Option<Message> {
    if &*text == PADDING {
        Stats::add(&node.stats.client_heartbeats, 1);
        return None;
    }
    (!text.is_empty()).then_some(Message { text, json: false })
}

impl Handler<Poll> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Poll, ctx: &mut Context<Self>) {
        self.take_lane();
        self.cancel_expiry(ctx);
        let mut reconnect = msg.reconnect || self.poll_aborted;
        // A client holds one poll at a time: a new one means it gave up on the old one.
        if self.release_parked_poll(ctx) {
            reconnect = true;
        }
        self.poll_aborted = false;
        self.mode = msg.mode;
        // An older token means our last answer never reached the client: its request failed,
        // so atmosphere.js is reconnecting and takes the next body's first message as the
        // handshake. Resend with one in front (as for an aborted poll above). A connection that
        // never answered this client (it was served elsewhere) has nothing to compare with.
        let fresh = !self.served;
        if msg.session_token.is_none() {
            self.resume_from(msg.resume.as_ref());
        }
        if self.apply_session_token(msg.session_token.as_deref()) && !fresh {
            reconnect = true;
        }
        if self.needs_backfill() {
            self.backfill(ctx, move |act, ctx| act.answer_or_park(msg, reconnect, ctx));
        } else {
            self.answer_or_park(msg, reconnect, ctx);
        }
    }
}

impl Connection {
    fn answer_or_park(&mut self, msg: Poll, reconnect: bool, ctx: &mut Context<Self>) {
        if msg.handshake_only {
            let body = BytesMut::from(self.handshake_frame().as_bytes().as_ref());
            let cursor = self.cursor;
            self.answer_poll(msg.reply, body, cursor, 0);
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
            return;
        }
        let (body, cursor, count) = self.poll_body(reconnect);
        if !body.is_empty() {
            self.answer_poll(msg.reply, body, cursor, count);
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
            return;
        }
        let hold = self.mode.heartbeat.unwrap_or(DEFAULT_POLL_HOLD);
        let timer = ctx.run_later(hold, |act, ctx| {
            // Nothing arrived: complete the poll with the heartbeat padding (or empty).
            let Some(parked) = act.parked.take() else {
                return;
            };
            let body = match act.mode.heartbeat {
                Some(_) => BytesMut::from(act.mode.framing.encode(PADDING).as_bytes().as_ref()),
                None => BytesMut::new(),
            };
            let cursor = act.cursor;
            act.answer_poll(parked.reply, body, cursor, 0);
            act.arm_expiry(ctx, act.node.config.long_poll_expiry());
        });
        self.parked = Some(ParkedPoll {
            reply: msg.reply,
            timer,
        });
    }
}

impl Handler<DropTransport> for Connection {
    type Result = ();

    fn handle(&mut self, _: DropTransport, ctx: &mut Context<Self>) {
        if self.release_parked_poll(ctx) {
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
        }
        if self.sink.is_some() {
            self.detach(ctx, Some(actix_http::ws::CloseCode::Restart.into()));
        }
    }
}

impl Handler<Close> for Connection {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The envelope's frame in `framing`, encoded by the first recipient that needs it and shared
/// by the others (the connection's writes and the topic's direct writes alike).
pub(crate) fn atmosphere_frame(envelope: &Envelope, framing: Framing) -> &ByteString {
    envelope.frame(framing.index(), |text| framing.encode(text))
}

/// A fraction in `[0, 1)` derived from `id`, to spread periodic work over an interval.
fn spread(id: &str) -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(id) % 10_000) as f64 / 10_000.0
}

// === impl WaitWritable ===

/// Resolves when the connection's sink can take frames again, then resumes pumping.
struct WaitWritable {
    generation: u64,
}

impl ActorFuture<Connection> for WaitWritable {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Connection,
        ctx: &mut Context<Connection>,
        task: &mut TaskContext<'_>,
    ) -> TaskPoll<()> {
        if act.generation != self.generation {
            return TaskPoll::Ready(());
        }
        let Some(sink) = act.sink.as_mut() else {
            return TaskPoll::Ready(());
        };
        match sink.poll_writable(task) {
            TaskPoll::Pending => TaskPoll::Pending,
            TaskPoll::Ready(Ok(())) => {
                act.waiting_writable = false;
                act.pump(ctx);
                TaskPoll::Ready(())
            }
            TaskPoll::Ready(Err(())) => {
                act.detach(ctx, None);
                TaskPoll::Ready(())
            }
        }
    }
}
