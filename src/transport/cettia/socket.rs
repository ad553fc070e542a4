//! The socket actor: one Cettia (or Vibe) socket, whatever transport currently carries it.
//!
//! States: *opened* (a transport is attached and handshaken) and *closed* (between
//! transports); deletion stops the actor. A closed Cettia socket waits the resume window for its
//! client to reconnect with its `cettia-id`; a Vibe socket is deleted with its transport.
//!
//! Everything sent to the socket goes through one bounded outbound queue (`pending`) whenever it
//! cannot be written at once: while the socket is between transports, between two long-polls,
//! or while a pushing transport is full. The queue holds at most `max_lag_messages` messages.
//! Policy when it is full: an attached transport is closed (slow consumer; the socket keeps the
//! queue and the client resumes), and a socket without transport drops its oldest message
//! (counted as `missed`). On resume the queue is written in order after the handshake, once.
//!
//! In a cluster (see `cluster.rs`) the socket keeps its record up to date, hands itself over
//! to the node its client came back to ([`HandOver`]: its transport ends without `close`, it
//! stops without `delete`), and a socket recreated from a record continues its topics from the
//! record's cursors, reading what this node's topic no longer holds from the shared history.
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll as TaskPoll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::ActorFuture;
use bytes::Bytes;
use bytestring::ByteString;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::cluster::{Control, Handled, SocketRecord, Target, TopicCursor};
use super::{Cettia, Dialect, InboundAck, Reply, ReplyCallback, Socket, SocketShared};
use crate::broker::RecordKind;
use crate::node::Stats;
use crate::protocol::cettia::{event, framing, Event, EventError, Value, WireMessage};
use crate::protocol::vibe;
use crate::topic::{Deliver, Envelope, JoinAck, Leave, TopicId};
use crate::transport::{Sink, WriteOutcome};

/// Messages the socket's mailbox holds (topic deliveries beyond it catch up from the history).
const MAILBOX: usize = 256;
/// A long-poll transport whose client does not poll again within this is closed (Cettia 1.0).
pub const LONG_POLL_REPOLL: Duration = Duration::from_secs(3);
/// How long the id of a closed HTTP transport is remembered (late polls get an empty answer).
const TRANSPORT_TOMBSTONE: Duration = Duration::from_secs(10);
/// Outbound events awaiting the client's `reply`, at most; the oldest is rejected beyond it.
const MAX_REPLY_CALLBACKS: usize = 1024;
/// Envelope frame slot of the shared JSON tail of a topic message (slots 0-3 are Atmosphere's).
const TOPIC_TAIL_SLOT: usize = 4;
/// Most messages replayed from a topic history at once.
const MAX_REPLAY: usize = 1024;
/// Clustered: how often the socket considers writing its record.
const RECORD_TICK: Duration = Duration::from_secs(1);
/// Clustered: an attached socket whose cursors or counter moved rewrites its record at most
/// this often (what a client of a killed node may receive twice).
const ATTACHED_RECORD_EVERY: Duration = Duration::from_secs(2);
/// Clustered: how long a socket handed over to another node keeps its mailbox open, forwarding
/// to the new node what was already queued for it (an `echo` its last event asked for, a
/// reply) instead of dropping it. Handles that send later find the actor stopped and send
/// through the cluster themselves.
const MOVED_LINGER: Duration = Duration::from_secs(1);

/// How a pushing transport frames messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFraming {
    /// One WebSocket frame per message, text or binary.
    WebSocket,
    /// Cettia HTTP streaming: `data: 1<text>` / `data: 2<base64>`.
    CettiaStream,
    /// Vibe streaming: `data: <json>`.
    VibeStream,
}

/// Attach a pushing transport; answered with its generation.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct AttachPush {
    pub sink: Sink,
    pub framing: PushFraming,
    /// For response bodies: a sender whose `closed()` tells that the client went away.
    pub body_closed: Option<mpsc::Sender<Bytes>>,
    pub transport_id: Option<Arc<str>>,
    /// Vibe: the heartbeat the client chose.
    pub heartbeat_ms: Option<u64>,
}

/// Attach a long-poll transport; answered with its generation.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct AttachLongPoll {
    pub transport_id: Arc<str>,
    pub jsonp: Option<String>,
    pub heartbeat_ms: Option<u64>,
    /// The transport was opened on another node and continues here: no new handshake, no
    /// `open` (its client sees one transport).
    pub continued: bool,
}

/// The answer to one long-poll.
#[derive(Debug)]
pub struct PollAnswer {
    pub body: Bytes,
    pub content_type: &'static str,
}

/// One long-poll of transport `generation`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LongPoll {
    pub generation: u64,
    pub reply: oneshot::Sender<PollAnswer>,
    /// Dropped by the HTTP handler when it ends (answered or abandoned by the client).
    pub guard: oneshot::Sender<()>,
    /// Vibe: the events the client received.
    pub last_event_ids: Vec<String>,
}

/// A message from the client on transport `generation` (an HTTP transport also names itself:
/// its id outlives generations when it moves between nodes).
#[derive(Message)]
#[rtype(result = "Result<(), InboundError>")]
pub struct TransportInbound {
    pub generation: u64,
    pub transport: Option<Arc<str>>,
    pub message: WireMessage,
}

/// Why an inbound message was refused.
#[derive(Debug, Error)]
pub enum InboundError {
    #[error("this transport is closed")]
    TransportClosed,
    /// Clustered: the socket has just moved to another node; forward the message there.
    #[error("the socket moved to another node")]
    Moved,
    #[error(transparent)]
    Event(#[from] EventError),
}

/// Transport `generation` is gone (WebSocket closed, body dropped, abort request, protocol error).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TransportClosed(pub u64);

/// Send an event from the application.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Emit {
    pub kind: String,
    pub data: Value,
    pub on_reply: Option<ReplyCallback>,
}

/// Answer an inbound event that asked for a reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendReply {
    pub id: Value,
    pub data: Value,
    pub exception: bool,
}

/// The application closes the socket: its transport if it has one, the socket otherwise.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSocket;

/// Join a topic: its messages reach the socket as `message` events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinTopic(pub TopicId);

/// Leave a topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveTopic(pub TopicId);

/// Clustered: the client came back to node `to`; write the final record, tell `to`, stop
/// (without `close` or `delete`: the socket lives on there).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver {
    pub to: String,
    pub nonce: String,
}

/// Clustered: a client event for HTTP transport `transport`, POSTed to another node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForwardedInbound {
    pub transport: Arc<str>,
    pub message: WireMessage,
    /// Who waits for the outcome.
    pub(crate) ack: Option<InboundAck>,
}

enum Transport {
    Push {
        sink: Sink,
        framing: PushFraming,
        body_watch: Option<SpawnHandle>,
        /// A [`WaitWritable`] future is pending.
        waiting: bool,
    },
    LongPoll {
        jsonp: Option<String>,
        parked: Option<oneshot::Sender<PollAnswer>>,
        /// Closes the transport when the client does not poll again in time.
        repoll: Option<SpawnHandle>,
    },
}

struct Membership {
    ack: JoinAck,
    /// The topic epoch `cursor` belongs to.
    epoch: u64,
    cursor: u64,
    /// Messages after the cursor are being read from the cluster's shared history.
    fetching: bool,
}

impl Membership {
    fn new(ack: JoinAck) -> Self {
        Membership {
            epoch: ack.topic.epoch(),
            cursor: ack.cursor,
            ack,
            fetching: false,
        }
    }
}

/// One queued outbound message; Vibe long-polling keeps it until the client acknowledges `id`.
struct Outgoing {
    message: WireMessage,
    vibe_id: Option<String>,
}

/// The socket actor.
pub struct SocketActor {
    shared: Arc<SocketShared>,
    server: Cettia,
    transport: Option<Transport>,
    transport_id: Option<Arc<str>>,
    /// Bumped at every attach and detach: stale notices and requests are recognised.
    generation: u64,
    pending: VecDeque<Outgoing>,
    next_event_id: u64,
    replies: HashMap<String, ReplyCallback>,
    reply_order: VecDeque<String>,
    heartbeat: Option<SpawnHandle>,
    heartbeat_ms: u64,
    fast_heartbeat_ms: u64,
    delete_timer: Option<SpawnHandle>,
    topics: HashMap<TopicId, Membership>,
    /// The socket was handshaken at least once (the client knows its id).
    created_fired: bool,
    /// Close reason for the WebSocket being closed (slow consumer).
    close_reason: Option<actix_http::ws::CloseReason>,
    /// Clustered, recreated from a record: the topics to rejoin at their cursors.
    restore_topics: Vec<TopicCursor>,
    /// Clustered: the HTTP transport this socket was moved here to continue.
    continuing: Option<Arc<str>>,
    /// Handed over to another node: stops without `close` or `delete`.
    moved: bool,
    /// Clustered: the state changed since the record was last written.
    record_dirty: bool,
    last_saved: Option<Instant>,
    saved_tags: Vec<String>,
}

impl SocketActor {
    pub(super) fn new(shared: Arc<SocketShared>, server: Cettia) -> Self {
        let (heartbeat_ms, fast_heartbeat_ms) = server.heartbeat();
        let first_id = match shared.dialect {
            Dialect::Cettia => 0,
            // The Vibe seed's first server event is "1", as the Java server numbers them.
            Dialect::Vibe => 1,
        };
        SocketActor {
            shared,
            server,
            transport: None,
            transport_id: None,
            generation: 0,
            pending: VecDeque::new(),
            next_event_id: first_id,
            replies: HashMap::new(),
            reply_order: VecDeque::new(),
            heartbeat: None,
            heartbeat_ms,
            fast_heartbeat_ms,
            delete_timer: None,
            topics: HashMap::new(),
            created_fired: false,
            close_reason: None,
            restore_topics: Vec::new(),
            continuing: None,
            moved: false,
            record_dirty: false,
            last_saved: None,
            saved_tags: Vec::new(),
        }
    }

    /// A Cettia socket continued from its record (written by another node).
    pub(super) fn restored(
        shared: Arc<SocketShared>,
        server: Cettia,
        record: SocketRecord,
        continuing: Option<Arc<str>>,
    ) -> Self {
        let mut actor = SocketActor::new(shared, server);
        actor.continuing = continuing;
        actor.next_event_id = record.next_event_id;
        actor.heartbeat_ms = record.heartbeat_ms;
        actor.fast_heartbeat_ms = record.fast_heartbeat_ms;
        actor.pending = record
            .pending
            .into_iter()
            .map(|message| Outgoing {
                message,
                vibe_id: None,
            })
            .collect();
        // Its client knows it: `on_socket` fired where it was created, `delete` fires here.
        actor.created_fired = true;
        actor.restore_topics = record.topics;
        actor.record_dirty = true;
        actor
    }

    /// Clustered: where the socket stands, for another node to continue it.
    fn snapshot(&self, owner: &str) -> SocketRecord {
        let mut tags: Vec<String> = self.shared.tags.lock().iter().cloned().collect();
        tags.sort();
        SocketRecord {
            owner: owner.to_string(),
            params: self.shared.params.clone(),
            tags,
            topics: self
                .topics
                .iter()
                .map(|(topic, m)| TopicCursor {
                    topic: topic.to_string(),
                    epoch: m.epoch,
                    cursor: m.cursor,
                })
                .collect(),
            next_event_id: self.next_event_id,
            heartbeat_ms: self.heartbeat_ms,
            fast_heartbeat_ms: self.fast_heartbeat_ms,
            // A handshake not yet written travels too: a long-poll transport continued on
            // another node still owes it to its client (a new transport replaces it).
            pending: self.pending.iter().map(|o| o.message.clone()).collect(),
        }
    }

    /// Clustered (Cettia): write the socket record now, with a TTL of the resume window.
    fn save_record(&mut self) {
        let Some(control) = self.server.control() else {
            return;
        };
        if self.shared.dialect != Dialect::Cettia || self.moved {
            return;
        }
        let record = self.snapshot(control.node_id());
        self.saved_tags = record.tags.clone();
        self.record_dirty = false;
        self.last_saved = Some(Instant::now());
        let save = control.save_record(
            RecordKind::CettiaSocket,
            &self.shared.id,
            record.encode(),
            self.server.resume_window(),
        );
        let id = self.shared.id.clone();
        actix::spawn(async move {
            if let Err(error) = save.await {
                tracing::debug!(socket = %id, %error, "socket record not saved");
            }
        });
    }

    /// Clustered: write the record if it is due (see `cluster.rs` for when).
    fn record_tick(&mut self) {
        if !self.record_dirty {
            let mut tags: Vec<String> = self.shared.tags.lock().iter().cloned().collect();
            tags.sort();
            self.record_dirty = tags != self.saved_tags;
        }
        let since = self.last_saved.map_or(Duration::MAX, |t| t.elapsed());
        let due = if self.transport.is_none() {
            self.record_dirty
        } else {
            self.record_dirty && since >= ATTACHED_RECORD_EVERY
        };
        if due || since >= self.server.resume_window() / 3 {
            self.save_record();
        }
    }

    fn socket_handle(&self, ctx: &Context<Self>) -> Socket {
        Socket {
            shared: self.shared.clone(),
            addr: ctx.address(),
            server: self.server.clone(),
        }
    }

    fn max_pending(&self) -> usize {
        (self.server.node().config.max_lag_messages as usize).max(1)
    }

    fn next_id(&mut self) -> String {
        let id = self.next_event_id;
        self.next_event_id += 1;
        self.record_dirty = true;
        id.to_string()
    }

    /// Encode and send an event.
    fn send_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        let vibe_id = event.id.as_str().map(str::to_string);
        match event.encode() {
            Ok(message) => self.send_message(message, vibe_id, ctx),
            Err(error) => {
                tracing::warn!(socket = %self.shared.id, %error, "event not sent");
            }
        }
    }

    /// Write a message now if the transport can take it, queue it otherwise.
    fn send_message(
        &mut self,
        message: WireMessage,
        vibe_id: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let outgoing = Outgoing { message, vibe_id };
        if self.pending.is_empty() {
            match &mut self.transport {
                Some(Transport::Push {
                    sink,
                    framing,
                    waiting: false,
                    ..
                }) => match write_push(sink, *framing, &outgoing.message) {
                    WriteOutcome::Written => {
                        Stats::add(&self.server.node().stats.delivered, 1);
                        return;
                    }
                    WriteOutcome::Full => {
                        self.pending.push_back(outgoing);
                        self.wait_writable(ctx);
                        return;
                    }
                    WriteOutcome::Closed => {
                        self.pending.push_back(outgoing);
                        self.close_transport(ctx);
                        return;
                    }
                },
                Some(Transport::LongPoll { parked, .. })
                    if parked.is_some() && self.shared.dialect == Dialect::Cettia =>
                {
                    if let Some(reply) = parked.take() {
                        self.pending.push_back(outgoing);
                        self.answer_poll(reply, ctx);
                        return;
                    }
                }
                _ => {}
            }
        }
        self.enqueue(outgoing, ctx);
        if self.shared.dialect == Dialect::Vibe {
            self.complete_vibe_poll(ctx);
        }
    }

    /// Queue a message; apply the queue's bound.
    fn enqueue(&mut self, outgoing: Outgoing, ctx: &mut Context<Self>) {
        self.pending.push_back(outgoing);
        if self.pending.len() <= self.max_pending() {
            return;
        }
        if self.transport.is_some() {
            Stats::add(&self.server.node().stats.slow_consumers_dropped, 1);
            tracing::warn!(socket = %self.shared.id, "slow consumer: closing its transport; it resumes with its queue");
            let reason = actix_http::ws::CloseReason {
                code: actix_http::ws::CloseCode::Again,
                description: Some("slow consumer".into()),
            };
            self.close_transport_because(ctx, Some(reason));
        }
        while self.pending.len() > self.max_pending() {
            self.pending.pop_front();
            Stats::add(&self.server.node().stats.missed, 1);
        }
    }

    fn wait_writable(&mut self, ctx: &mut Context<Self>) {
        if let Some(Transport::Push { waiting, .. }) = &mut self.transport {
            if !*waiting {
                *waiting = true;
                ctx.spawn(WaitWritable {
                    generation: self.generation,
                });
            }
        }
    }

    /// Write queued messages into a pushing transport until it is full.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let delivered = &self.server.node().stats.delivered;
        let Some(Transport::Push {
            sink,
            framing,
            waiting,
            ..
        }) = &mut self.transport
        else {
            return;
        };
        if *waiting {
            return;
        }
        while let Some(front) = self.pending.front() {
            match write_push(sink, *framing, &front.message) {
                WriteOutcome::Written => {
                    self.pending.pop_front();
                    Stats::add(delivered, 1);
                }
                WriteOutcome::Full => {
                    self.wait_writable(ctx);
                    return;
                }
                WriteOutcome::Closed => {
                    self.close_transport(ctx);
                    return;
                }
            }
        }
    }

    /// Answer a Cettia long-poll with the next queued message (or park nothing: caller checked).
    fn answer_poll(&mut self, reply: oneshot::Sender<PollAnswer>, ctx: &mut Context<Self>) {
        let Some(Transport::LongPoll { jsonp, repoll, .. }) = &mut self.transport else {
            return;
        };
        let Some(outgoing) = self.pending.pop_front() else {
            return;
        };
        let answer = poll_answer(jsonp.as_deref(), &outgoing.message);
        if reply.send(answer).is_err() {
            // The client left before the answer went out: keep the message for its return.
            self.pending.push_front(outgoing);
            self.close_transport(ctx);
            return;
        }
        Stats::add(&self.server.node().stats.delivered, 1);
        let generation = self.generation;
        *repoll = Some(ctx.run_later(LONG_POLL_REPOLL, move |act, ctx| {
            if act.generation == generation {
                tracing::debug!(socket = %act.shared.id, "long-poll not renewed in time");
                act.close_transport(ctx);
            }
        }));
    }

    /// Vibe long-polling: answer a parked poll with every unacknowledged event.
    fn complete_vibe_poll(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            return;
        }
        let Some(Transport::LongPoll {
            jsonp,
            parked,
            repoll,
        }) = &mut self.transport
        else {
            return;
        };
        let Some(reply) = parked.take() else {
            return;
        };
        let texts: Vec<&str> = self
            .pending
            .iter()
            .filter_map(|o| match &o.message {
                WireMessage::Text(t) => Some(&**t),
                WireMessage::Binary(_) => None,
            })
            .collect();
        let body = vibe::long_poll_body(texts.into_iter());
        let answer = poll_answer(jsonp.as_deref(), &WireMessage::Text(body.into()));
        if reply.send(answer).is_err() {
            self.close_transport(ctx);
            return;
        }
        let generation = self.generation;
        *repoll = Some(ctx.run_later(LONG_POLL_REPOLL, move |act, ctx| {
            if act.generation == generation {
                act.close_transport(ctx);
            }
        }));
    }

    /// A new transport: replace the old one, handshake, deliver the queue.
    fn attach(
        &mut self,
        transport: Transport,
        transport_id: Option<Arc<str>>,
        heartbeat_ms: Option<u64>,
        continued: bool,
        ctx: &mut Context<Self>,
    ) -> u64 {
        if self.transport.is_some() {
            tracing::debug!(socket = %self.shared.id, "replacing a transport the client abandoned");
            self.drop_transport(ctx);
        }
        if let Some(handle) = self.delete_timer.take() {
            ctx.cancel_future(handle);
        }
        self.generation += 1;
        self.transport = Some(transport);
        self.transport_id = transport_id;
        if let Some(hb) = heartbeat_ms {
            self.heartbeat_ms = hb;
        } else if self.shared.dialect == Dialect::Cettia && !continued {
            // Every handshake carries the server's current heartbeat (as the reference server's
            // does): a socket resumed after the application changed it takes the new value.
            (self.heartbeat_ms, self.fast_heartbeat_ms) = self.server.heartbeat();
        }
        if !self.created_fired {
            self.created_fired = true;
            let socket = self.socket_handle(ctx);
            for handler in self.server.handlers().on_socket.iter() {
                handler(&socket);
            }
        }
        if self.shared.dialect == Dialect::Cettia && !continued {
            // A handshake owed to a transport that never took it (it came in the record).
            if matches!(self.pending.front(), Some(o) if is_handshake(&o.message)) {
                self.pending.pop_front();
            }
            let handshake = framing::socket_handshake(
                &self.shared.id,
                self.heartbeat_ms,
                self.fast_heartbeat_ms,
            );
            self.pending.push_front(Outgoing {
                message: WireMessage::Text(handshake.into()),
                vibe_id: None,
            });
        }
        self.arm_heartbeat(ctx);
        if !continued {
            let socket = self.socket_handle(ctx);
            for handler in self.server.handlers().on_open.iter() {
                handler(&socket);
            }
        }
        self.flush(ctx);
        self.save_record();
        self.generation
    }

    fn arm_heartbeat(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.heartbeat.take() {
            ctx.cancel_future(handle);
        }
        if self.heartbeat_ms == 0 {
            return;
        }
        let generation = self.generation;
        self.heartbeat = Some(ctx.run_later(Duration::from_millis(self.heartbeat_ms), move |act, ctx| {
            if act.generation == generation && act.transport.is_some() {
                tracing::debug!(socket = %act.shared.id, "heartbeat failed: closing the transport");
                act.close_transport(ctx);
            }
        }));
    }

    /// Close the current transport; the socket becomes closed (Cettia: deleted after the
    /// resume window unless the client comes back; Vibe: deleted now).
    fn close_transport(&mut self, ctx: &mut Context<Self>) {
        self.close_transport_because(ctx, None);
    }

    /// [`Self::close_transport`] with a WebSocket close reason.
    fn close_transport_because(
        &mut self,
        ctx: &mut Context<Self>,
        reason: Option<actix_http::ws::CloseReason>,
    ) {
        self.close_reason = reason;
        let dropped = self.drop_transport(ctx);
        self.close_reason = None;
        if !dropped {
            return;
        }
        match self.shared.dialect {
            Dialect::Vibe => ctx.stop(),
            Dialect::Cettia => {
                self.save_record();
                let window = self.server.resume_window();
                self.delete_timer = Some(ctx.run_later(window, |act, ctx| {
                    if act.transport.is_none() {
                        tracing::debug!(socket = %act.shared.id, "resume window over: deleting the socket");
                        ctx.stop();
                    }
                }));
            }
        }
    }

    /// End the current transport (and fire `close`); returns whether there was one.
    fn drop_transport(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(transport) = self.transport.take() else {
            return false;
        };
        self.generation += 1;
        // The transport this socket was moved here to continue has come and gone.
        self.continuing = None;
        match transport {
            Transport::Push {
                sink, body_watch, ..
            } => {
                if let Some(handle) = body_watch {
                    ctx.cancel_future(handle);
                }
                sink.close(self.close_reason.take());
            }
            Transport::LongPoll { parked, repoll, .. } => {
                if let Some(handle) = repoll {
                    ctx.cancel_future(handle);
                }
                // A parked poll ends with an empty body: the client's sign of a closed transport.
                if let Some(reply) = parked {
                    let _ = reply.send(PollAnswer {
                        body: Bytes::new(),
                        content_type: "text/plain; charset=utf-8",
                    });
                }
            }
        }
        if let Some(handle) = self.heartbeat.take() {
            ctx.cancel_future(handle);
        }
        if let Some(tid) = self.transport_id.take() {
            let server = self.server.clone();
            let generation = self.generation - 1;
            ctx.run_later(TRANSPORT_TOMBSTONE, move |_, ctx| {
                server.forget_transport(&tid, &ctx.address(), generation)
            });
        }
        // The handshake of a transport that never carried it is not an event to keep.
        if matches!(self.pending.front(), Some(o) if o.vibe_id.is_none() && is_handshake(&o.message))
        {
            self.pending.pop_front();
        }
        if !self.moved {
            let socket = self.socket_handle(ctx);
            for handler in self.server.handlers().on_close.iter() {
                handler(&socket);
            }
        }
        true
    }

    /// An event from the client.
    fn on_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        match event.kind.as_str() {
            "heartbeat" => {
                self.arm_heartbeat(ctx);
                Stats::add(&self.server.node().stats.client_heartbeats, 1);
                let id = self.next_id();
                self.send_event(Event::new(id, "heartbeat", Value::Nil), ctx);
            }
            "reply" => {
                let get = |name: &str| match &event.data {
                    Value::Map(entries) => entries
                        .iter()
                        .find(|(k, _)| k.as_str() == Some(name))
                        .map(|(_, v)| v.clone()),
                    _ => None,
                };
                let id = match get("id") {
                    Some(Value::String(s)) => s.into_str(),
                    Some(v) if v.is_number() => Some(v.to_string()),
                    _ => None,
                };
                let Some(callback) = id.and_then(|id| self.replies.remove(&id)) else {
                    return;
                };
                let data = get("data").unwrap_or(Value::Nil);
                let exception = get("exception").and_then(|v| v.as_bool()).unwrap_or(false);
                let socket = self.socket_handle(ctx);
                callback(&socket, if exception { Err(data) } else { Ok(data) });
            }
            kind => {
                let handlers = self.server.handlers().on_event.get(kind).cloned();
                let reply = event
                    .reply
                    .then(|| Reply::new(self.socket_handle(ctx), event.id.clone()));
                let Some(handlers) = handlers else {
                    if let Some(reply) = reply {
                        reply.reject(Value::from(format!("no handler for event {kind}")));
                    }
                    return;
                };
                let socket = self.socket_handle(ctx);
                for handler in handlers.iter() {
                    handler(&socket, event.data.clone(), reply.clone());
                }
            }
        }
    }

    /// A topic message for this socket: a `message` event whose data is the text (a JSON
    /// string) or, for JSON messages, the JSON itself.
    fn deliver_topic_message(&mut self, envelope: &Envelope, ctx: &mut Context<Self>) {
        let tail = envelope.frame(TOPIC_TAIL_SLOT, |text| {
            let data = if envelope.json {
                text.to_string()
            } else {
                serde_json::to_string(text).unwrap_or_else(|_| "null".into())
            };
            ByteString::from(event::json_tail("message", &data, false))
        });
        let id = self.next_id();
        let mut json = String::with_capacity(tail.len() + 16);
        json.push_str("{\"id\":\"");
        json.push_str(&id);
        json.push_str("\",");
        json.push_str(tail);
        self.send_message(WireMessage::Text(json.into()), Some(id), ctx);
    }
}

fn is_handshake(message: &WireMessage) -> bool {
    matches!(message, WireMessage::Text(t) if t.starts_with("?cettia-version="))
}

fn write_push(sink: &mut Sink, framing: PushFraming, message: &WireMessage) -> WriteOutcome {
    match (framing, message) {
        (PushFraming::WebSocket, WireMessage::Text(text)) => sink.try_write(text),
        (PushFraming::WebSocket, WireMessage::Binary(bytes)) => sink.try_write_bytes(bytes.clone()),
        (PushFraming::CettiaStream, message) => {
            sink.try_write_bytes(framing::stream_message(message))
        }
        (PushFraming::VibeStream, WireMessage::Text(text)) => {
            sink.try_write_bytes(vibe::stream_event(text))
        }
        // Vibe carries text only; a binary event cannot be written (it was logged when made).
        (PushFraming::VibeStream, WireMessage::Binary(_)) => WriteOutcome::Written,
    }
}

fn poll_answer(jsonp: Option<&str>, message: &WireMessage) -> PollAnswer {
    match (jsonp, message) {
        (Some(callback), WireMessage::Text(text)) => PollAnswer {
            body: Bytes::from(framing::jsonp(callback, text)),
            content_type: "text/javascript; charset=utf-8",
        },
        (None, WireMessage::Text(text)) => PollAnswer {
            body: text.as_bytes().clone(),
            content_type: "text/plain; charset=utf-8",
        },
        // JSONP cannot carry binary: send nothing rather than a corrupt script.
        (Some(_), WireMessage::Binary(_)) => PollAnswer {
            body: Bytes::new(),
            content_type: "text/javascript; charset=utf-8",
        },
        (None, WireMessage::Binary(bytes)) => PollAnswer {
            body: bytes.clone(),
            content_type: "application/octet-stream",
        },
    }
}

impl Actor for SocketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        // A socket nobody attaches to (its first request failed) must not live forever.
        let window = self.server.resume_window();
        self.delete_timer = Some(ctx.run_later(window, |act, ctx| {
            if act.transport.is_none() {
                ctx.stop();
            }
        }));
        if self.server.control().is_some() && self.shared.dialect == Dialect::Cettia {
            ctx.run_interval(RECORD_TICK, |act, _| act.record_tick());
            // Recreated from a record: rejoin its topics before anything else is handled,
            // continuing from the record's cursors.
            for TopicCursor {
                topic,
                epoch,
                cursor,
            } in std::mem::take(&mut self.restore_topics)
            {
                let topic: TopicId = topic.as_str().into();
                self.join(topic.clone(), ctx, move |mut membership, act, ctx| {
                    if membership.epoch == epoch {
                        // Ahead of this node's topic (relays in flight): the client has those;
                        // behind it: caught up below, from the shared history.
                        membership.cursor = cursor;
                    } else {
                        tracing::info!(socket = %act.shared.id, %topic,
                            "topic numbering restarted while the socket moved");
                    }
                    act.topics.insert(topic.clone(), membership);
                    act.catch_up(topic, ctx);
                });
            }
        }
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.leave_topics();
        self.server.forget_socket(&self.shared.id, &ctx.address());
        for (_, callback) in self.replies.drain() {
            drop(callback);
        }
        if self.moved {
            return;
        }
        if self.created_fired {
            let socket = self.socket_handle(ctx);
            for handler in self.server.handlers().on_delete.iter() {
                handler(&socket);
            }
        }
        if let Some(control) = self.server.control() {
            if self.shared.dialect == Dialect::Cettia {
                let delete = control.delete_record(RecordKind::CettiaSocket, &self.shared.id);
                actix::spawn(async move {
                    let _ = delete.await;
                });
            }
        }
    }
}

impl Handler<AttachPush> for SocketActor {
    type Result = u64;

    fn handle(&mut self, msg: AttachPush, ctx: &mut Context<Self>) -> u64 {
        let transport = Transport::Push {
            sink: msg.sink,
            framing: msg.framing,
            body_watch: None,
            waiting: false,
        };
        let generation = self.attach(transport, msg.transport_id, msg.heartbeat_ms, false, ctx);
        if let Some(body) = msg.body_closed {
            let closed = async move { body.closed().await };
            let handle = ctx.spawn(closed.into_actor(self).map(move |_, act, ctx| {
                if act.generation == generation {
                    act.close_transport(ctx);
                }
            }));
            if let Some(Transport::Push { body_watch, .. }) = &mut self.transport {
                *body_watch = Some(handle);
            }
        }
        generation
    }
}

impl Handler<AttachLongPoll> for SocketActor {
    type Result = u64;

    fn handle(&mut self, msg: AttachLongPoll, ctx: &mut Context<Self>) -> u64 {
        let transport = Transport::LongPoll {
            jsonp: msg.jsonp,
            parked: None,
            repoll: None,
        };
        let generation = self.attach(
            transport,
            Some(msg.transport_id.clone()),
            msg.heartbeat_ms,
            msg.continued,
            ctx,
        );
        if !msg.continued && self.shared.dialect == Dialect::Cettia {
            // Clustered: its next poll may land on another node, which looks its socket up.
            self.server
                .record_transport(&msg.transport_id, &self.shared.id);
        }
        // The client polls right after the open answer; if it never does, the transport ends.
        if let Some(Transport::LongPoll { repoll, .. }) = &mut self.transport {
            *repoll = Some(ctx.run_later(LONG_POLL_REPOLL, move |act, ctx| {
                if act.generation == generation {
                    act.close_transport(ctx);
                }
            }));
        }
        generation
    }
}

impl Handler<LongPoll> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: LongPoll, ctx: &mut Context<Self>) {
        let empty = || PollAnswer {
            body: Bytes::new(),
            content_type: "text/plain; charset=utf-8",
        };
        if msg.generation != self.generation {
            // A closed (aborted, expired, replaced) transport: an empty answer says so.
            let _ = msg.reply.send(empty());
            return;
        }
        let Some(Transport::LongPoll { parked, repoll, .. }) = &mut self.transport else {
            let _ = msg.reply.send(empty());
            return;
        };
        if let Some(handle) = repoll.take() {
            ctx.cancel_future(handle);
        }
        if let Some(old) = parked.take() {
            let _ = old.send(empty());
        }
        if self.shared.dialect == Dialect::Vibe {
            let acked = msg.last_event_ids;
            self.pending
                .retain(|o| !o.vibe_id.as_ref().is_some_and(|id| acked.contains(id)));
        }
        if let Some(Transport::LongPoll { parked, .. }) = &mut self.transport {
            *parked = Some(msg.reply);
        }
        // The HTTP handler drops its guard when it ends; if the poll is still parked then,
        // the client went away.
        let generation = self.generation;
        let mut guard = msg.guard;
        ctx.spawn(
            async move { guard.closed().await }
                .into_actor(self)
                .map(move |_, act, ctx| {
                    if act.generation != generation {
                        return;
                    }
                    if let Some(Transport::LongPoll {
                        parked: Some(reply),
                        ..
                    }) = &act.transport
                    {
                        if reply.is_closed() {
                            act.close_transport(ctx);
                        }
                    }
                }),
        );
        match self.shared.dialect {
            Dialect::Cettia => {
                if !self.pending.is_empty() {
                    if let Some(Transport::LongPoll { parked, .. }) = &mut self.transport {
                        if let Some(reply) = parked.take() {
                            self.answer_poll(reply, ctx);
                        }
                    }
                }
            }
            Dialect::Vibe => self.complete_vibe_poll(ctx),
        }
    }
}

impl Handler<TransportInbound> for SocketActor {
    type Result = Result<(), InboundError>;

    fn handle(&mut self, msg: TransportInbound, ctx: &mut Context<Self>) -> Self::Result {
        if self.moved {
            return Err(InboundError::Moved);
        }
        let current = match &msg.transport {
            // An HTTP transport: the same id, attached, or the one this socket moved here to
            // continue (its poll has not attached it yet).
            Some(id) => self.carries(id),
            None => msg.generation == self.generation && self.transport.is_some(),
        };
        if !current {
            return Err(InboundError::TransportClosed);
        }
        match decode_inbound(&msg.message) {
            Ok(event) => {
                self.on_event(event, ctx);
                Ok(())
            }
            // The transport closes itself (a WebSocket with 1007, a POST's stream or poll).
            Err(error) => {
                tracing::debug!(socket = %self.shared.id, %error, "bad event: its transport closes");
                Err(error.into())
            }
        }
    }
}

impl Handler<TransportClosed> for SocketActor {
    type Result = ();

    fn handle(&mut self, TransportClosed(generation): TransportClosed, ctx: &mut Context<Self>) {
        if generation == self.generation {
            self.close_transport(ctx);
        }
    }
}

impl Handler<Emit> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: Emit, ctx: &mut Context<Self>) {
        if self.moved {
            // Queued before the move: it follows the socket (a reply callback cannot).
            self.forward_send(msg.kind, msg.data);
            return;
        }
        let id = self.next_id();
        let reply = msg.on_reply.is_some();
        if let Some(callback) = msg.on_reply {
            if self.replies.len() >= MAX_REPLY_CALLBACKS {
                if let Some(oldest) = self.reply_order.pop_front() {
                    if let Some(cb) = self.replies.remove(&oldest) {
                        let socket = self.socket_handle(ctx);
                        cb(
                            &socket,
                            Err(Value::from("too many events awaiting a reply")),
                        );
                    }
                }
            }
            self.replies.insert(id.clone(), callback);
            self.reply_order.push_back(id.clone());
            if self.reply_order.len() > 2 * MAX_REPLY_CALLBACKS {
                let replies = &self.replies;
                self.reply_order.retain(|id| replies.contains_key(id));
            }
        }
        let mut event = Event::new(id, msg.kind, msg.data);
        event.reply = reply;
        self.send_event(event, ctx);
    }
}

impl Handler<SendReply> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: SendReply, ctx: &mut Context<Self>) {
        let data = reply_data(msg.id, msg.data, msg.exception);
        if self.moved {
            self.forward_send("reply".into(), data);
            return;
        }
        let id = self.next_id();
        self.send_event(Event::new(id, "reply", data), ctx);
    }
}

impl Handler<CloseSocket> for SocketActor {
    type Result = ();

    fn handle(&mut self, _: CloseSocket, ctx: &mut Context<Self>) {
        if self.transport.is_some() {
            self.close_transport(ctx);
        } else {
            ctx.stop();
        }
    }
}

impl SocketActor {
    /// Join `topic`, then run `then` with the membership. Nothing else is handled until the
    /// topic has answered, so no message is missed.
    fn join(
        &mut self,
        topic: TopicId,
        ctx: &mut Context<Self>,
        then: impl FnOnce(Membership, &mut Self, &mut Context<Self>) + 'static,
    ) {
        let topics = self.server.node().topics.clone();
        let session = self.shared.id.clone();
        let recipient = ctx.address().recipient::<Deliver>();
        ctx.wait(
            async move { topics.join(&topic, session, recipient).await }
                .into_actor(self)
                .map(move |ack, act, ctx| then(Membership::new(ack), act, ctx)),
        );
    }
}

impl Handler<JoinTopic> for SocketActor {
    type Result = ();

    fn handle(&mut self, JoinTopic(topic): JoinTopic, ctx: &mut Context<Self>) {
        if self.topics.contains_key(&topic) || self.moved {
            return;
        }
        self.join(topic.clone(), ctx, move |membership, act, _| {
            act.topics.insert(topic, membership);
            act.record_dirty = true;
        });
    }
}

impl Handler<LeaveTopic> for SocketActor {
    type Result = ();

    fn handle(&mut self, LeaveTopic(topic): LeaveTopic, _ctx: &mut Context<Self>) {
        if let Some(membership) = self.topics.remove(&topic) {
            self.record_dirty = true;
            membership.ack.addr.do_send(Leave {
                session: self.shared.id.clone(),
            });
        }
    }
}

impl Handler<Deliver> for SocketActor {
    type Result = ();

    fn handle(&mut self, Deliver(envelope): Deliver, ctx: &mut Context<Self>) {
        let Some(membership) = self.topics.get_mut(&envelope.topic) else {
            return;
        };
        if membership.fetching {
            return; // read from the history by the fetch under way
        }
        if membership.epoch == membership.ack.topic.epoch() && envelope.seq == membership.cursor + 1
        {
            membership.cursor = envelope.seq;
            self.record_dirty = true;
            if envelope.audience.includes(&self.shared.id) {
                self.deliver_topic_message(&envelope, ctx);
            }
            return;
        }
        // A gap (our mailbox was full, or the socket came from another node): catch up.
        self.catch_up(envelope.topic.clone(), ctx);
    }
}

impl SocketActor {
    /// Deliver what `topic` holds after the socket's cursor: from this node's history, or,
    /// clustered, from the shared history for the part this node's topic never had.
    fn catch_up(&mut self, topic: TopicId, ctx: &mut Context<Self>) {
        loop {
            let Some(membership) = self.topics.get_mut(&topic) else {
                return;
            };
            if membership.fetching {
                return;
            }
            let state = membership.ack.topic.clone();
            if membership.epoch != state.epoch() {
                // A new numbering: the old cursor means nothing in it.
                membership.epoch = state.epoch();
                membership.cursor = state.start_seq();
            }
            let (epoch, cursor, last) = (membership.epoch, membership.cursor, state.last_seq());
            if cursor >= last {
                return;
            }
            let first = state.history.read().first_seq();
            let local = first.is_some_and(|first| first <= cursor + 1);
            if !local && self.server.node().broker.numbers_messages() {
                membership.fetching = true;
                let fetch =
                    self.server
                        .node()
                        .broker
                        .backlog(topic.clone(), epoch, cursor, MAX_REPLAY);
                ctx.wait(fetch.into_actor(self).map(move |result, act, ctx| {
                    let Some(membership) = act.topics.get_mut(&topic) else {
                        return;
                    };
                    membership.fetching = false;
                    if membership.epoch != epoch || membership.cursor != cursor {
                        act.catch_up(topic, ctx);
                        return;
                    }
                    match result {
                        Ok(backlog) if backlog.messages.is_empty() => {
                            // The shared history has nothing more: continue where this node's
                            // history begins.
                            let target = first.map_or(last, |first| first - 1).max(cursor);
                            membership.cursor = target;
                            act.count_missed(target - cursor);
                        }
                        Ok(backlog) => {
                            act.count_missed(backlog.missed);
                            act.deliver_batch(&topic, backlog.messages, ctx);
                        }
                        Err(error) => {
                            tracing::warn!(socket = %act.shared.id, %error,
                                "cannot read the cluster history; retrying");
                            ctx.run_later(Duration::from_secs(1), move |act, ctx| {
                                act.catch_up(topic, ctx)
                            });
                            return;
                        }
                    }
                    act.catch_up(topic, ctx);
                }));
                return;
            }
            let replay = state.history.read().after(cursor, MAX_REPLAY, |_| true);
            self.count_missed(replay.missed);
            if replay.messages.is_empty() {
                if let Some(membership) = self.topics.get_mut(&topic) {
                    membership.cursor = last;
                }
                return;
            }
            self.deliver_batch(&topic, replay.messages, ctx);
        }
    }

    /// Deliver topic messages after the cursor, in order.
    fn deliver_batch(
        &mut self,
        topic: &TopicId,
        batch: Vec<Arc<Envelope>>,
        ctx: &mut Context<Self>,
    ) {
        for envelope in batch {
            let Some(membership) = self.topics.get_mut(topic) else {
                return;
            };
            if envelope.seq <= membership.cursor {
                continue;
            }
            membership.cursor = envelope.seq;
            self.record_dirty = true;
            if envelope.audience.includes(&self.shared.id) {
                self.deliver_topic_message(&envelope, ctx);
            }
        }
    }

    fn count_missed(&self, missed: u64) {
        if missed > 0 {
            Stats::add(&self.server.node().stats.missed, missed);
            tracing::warn!(socket = %self.shared.id, missed,
                "socket fell behind the topic history; messages lost for it");
        }
    }
}

impl Handler<HandOver> for SocketActor {
    type Result = ();

    fn handle(&mut self, HandOver { to, nonce }: HandOver, ctx: &mut Context<Self>) {
        if self.moved {
            return;
        }
        if let Some(tid) = &self.transport_id {
            self.server.forget_transport_of(tid, &ctx.address());
        }
        // Taken before the transport ends: a handshake it still owes travels with the socket.
        let record = self.snapshot(&to);
        // Set first: the transport ends without `close`, the record writes stop.
        self.moved = true;
        self.drop_transport(ctx);
        if let Some(handle) = self.delete_timer.take() {
            ctx.cancel_future(handle);
        }
        // Topic messages are the new node's from the record's cursors on.
        self.leave_topics();
        if let Some(control) = self.server.control() {
            let save = control.save_record(
                RecordKind::CettiaSocket,
                &self.shared.id,
                record.encode(),
                self.server.resume_window(),
            );
            let handed = Control::Handed {
                id: self.shared.id.to_string(),
                to: to.clone(),
                nonce,
                held: true,
            }
            .encode();
            let control = control.clone();
            let id = self.shared.id.clone();
            actix::spawn(async move {
                if let Err(error) = save.await {
                    tracing::warn!(socket = %id, %error, "final socket record not saved");
                }
                // Only now: the new node reads the record when it hears this.
                let _ = control.publish_control(handed).await;
            });
        }
        tracing::debug!(socket = %self.shared.id, node = %to, "socket handed over");
        ctx.run_later(MOVED_LINGER, |_, ctx| ctx.stop());
    }
}

impl Handler<ForwardedInbound> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: ForwardedInbound, ctx: &mut Context<Self>) {
        if self.moved {
            // The new node buffered it too (it came after the handover request) and answers.
            return;
        }
        let outcome = if !self.carries(&msg.transport) {
            Handled::TransportClosed // a transport the socket no longer has
        } else {
            match decode_inbound(&msg.message) {
                Ok(event) => {
                    self.on_event(event, ctx);
                    Handled::Taken
                }
                Err(error) => {
                    tracing::debug!(socket = %self.shared.id, %error, "bad event: its transport closes");
                    if self.transport_id.as_deref() == Some(&*msg.transport) {
                        self.close_transport(ctx);
                    }
                    Handled::BadEvent(error.to_string())
                }
            }
        };
        if let Some(ack) = msg.ack {
            self.server.answer_inbound(ack, outcome);
        }
    }
}

impl SocketActor {
    /// Leave every topic (the socket stops, or its topics continue on another node).
    fn leave_topics(&mut self) {
        for (_, membership) in self.topics.drain() {
            membership.ack.addr.do_send(Leave {
                session: self.shared.id.clone(),
            });
        }
    }

    /// Whether HTTP transport `id` is this socket's: attached, or the one it was moved here to
    /// continue.
    fn carries(&self, id: &str) -> bool {
        let attached = self.transport.is_some() && self.transport_id.as_deref() == Some(id);
        attached || self.continuing.as_deref() == Some(id)
    }

    /// Clustered, handed over: send what was queued for the socket to wherever it is now.
    fn forward_send(&self, kind: String, data: Value) {
        if self.server.control().is_none() {
            return;
        }
        self.server.publish_control(Control::Send {
            target: Target::Socket(self.shared.id.to_string()),
            kind,
            data,
            // No origin: every node, this one too, delivers it to the socket if it holds it
            // (the socket may even have come back here).
            origin: String::new(),
        });
    }
}

fn decode_inbound(message: &WireMessage) -> Result<Event, EventError> {
    match message {
        WireMessage::Text(text) => Event::decode_text(text),
        WireMessage::Binary(bytes) => Event::decode_binary(bytes),
    }
}

/// The data of a `reply` event: which event it answers, with what, resolved or rejected.
pub(crate) fn reply_data(id: Value, data: Value, exception: bool) -> Value {
    Value::Map(vec![
        (Value::from("id"), id),
        (Value::from("data"), data),
        (Value::from("exception"), Value::from(exception)),
    ])
}

/// Resolves when the socket's pushing transport can take frames again, then flushes the queue.
struct WaitWritable {
    generation: u64,
}

impl ActorFuture<SocketActor> for WaitWritable {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut SocketActor,
        ctx: &mut Context<SocketActor>,
        task: &mut TaskContext<'_>,
    ) -> TaskPoll<()> {
        if act.generation != self.generation {
            return TaskPoll::Ready(());
        }
        let Some(Transport::Push { sink, waiting, .. }) = &mut act.transport else {
            return TaskPoll::Ready(());
        };
        match sink.poll_writable(task) {
            TaskPoll::Pending => TaskPoll::Pending,
            TaskPoll::Ready(Ok(())) => {
                *waiting = false;
                act.flush(ctx);
                TaskPoll::Ready(())
            }
            TaskPoll::Ready(Err(())) => {
                act.close_transport(ctx);
                TaskPoll::Ready(())
            }
        }
    }
}
