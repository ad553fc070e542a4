//! The socket actor: one Cettia (or Vibe) socket, whatever transport currently carries it.
//!
//! States: *opened* (a transport is attached and handshaken) and *closed* (between
//! transports); deletion stops the actor. A closed Cettia socket waits the resume window for its
//! client to reconnect with its `cettia-id`; a Vibe socket is deleted with its transport.
//!
//! Everything sent to the socket goes through one bounded outbound queue (`pending`) whenever it
//! cannot be written at once: while the socket is between transports, between two long-polls,
//! or while a pushing transport is full. Policy: a socket without transport keeps at most
//! `--max-lag-messages` messages for its client, dropping the oldest (counted as `missed`); an
//! attached transport more than `--max-lag-messages` behind is closed as a slow consumer (the
//! socket keeps the queue and the client resumes), its lag being the queue past the backlog it
//! attached with, the same measure as Atmosphere's ([`crate::session::lagging`]). The queue thus
//! holds at most twice the bound and the handshake. On resume the queue is written in order
//! after the handshake, once.
//!
//! In a cluster (see `cluster.rs`) the socket keeps its record up to date, hands itself over
//! to the node its client came back to ([`HandOver`](super::messages::HandOver): its transport ends without `close`, it
//! stops without `delete`), and a socket recreated from a record continues its topics from the
//! record's cursors, reading what this node's topic no longer holds from the shared history.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::cluster::{Control, SocketRecord, Target, TopicCursor};
use super::messages::{PollAnswer, PushFraming};
use super::{Cettia, Reply, ReplyCallback, Socket, SocketShared};
use crate::broker::RecordKind;
use crate::metrics::{OnTransport, Protocol};
use crate::node::Stats;
use crate::protocol::cettia::{framing, Event, EventError, Value, WireMessage};
use crate::session::expiry::{self, Expires};
use crate::session::{self, Membership};
use crate::topic::{Leave, TopicId};
use crate::transport::Sink;

/// A long-poll transport whose client does not poll again within this is closed (Cettia 1.0).
pub const LONG_POLL_REPOLL: Duration = Duration::from_secs(3);
/// How long the id of a closed HTTP transport is remembered (late polls get an empty answer).
pub(super) const TRANSPORT_TOMBSTONE: Duration = Duration::from_secs(10);
/// Outbound events awaiting the client's `reply`, at most; the oldest is rejected beyond it.
pub(super) const MAX_REPLY_CALLBACKS: usize = 1024;
/// Envelope frame slot of the shared JSON tail of a topic message (slots 0-3 are Atmosphere's).
pub(super) const TOPIC_TAIL_SLOT: usize = 4;
/// Most messages replayed from a topic history at once.
pub(super) const MAX_REPLAY: usize = 1024;
/// Clustered: how often the socket considers writing its record.
pub(super) const RECORD_TICK: Duration = Duration::from_secs(1);
/// Clustered: an attached socket whose cursors or counter moved rewrites its record at most
/// this often (what a client of a killed node may receive twice).
pub(super) const ATTACHED_RECORD_EVERY: Duration = Duration::from_secs(2);
/// Clustered: how long a socket handed over to another node keeps its mailbox open, forwarding
/// to the new node what was already queued for it (an `echo` its last event asked for, a
/// reply) instead of dropping it. Handles that send later find the actor stopped and send
/// through the cluster themselves.
pub(super) const MOVED_LINGER: Duration = Duration::from_secs(1);

pub(super) enum Transport {
    Push {
        sink: Sink,
        framing: PushFraming,
        body_watch: Option<SpawnHandle>,
        /// A [`crate::transport::writable::WaitWritable`] future is pending.
        waiting: bool,
    },
    LongPoll {
        jsonp: Option<String>,
        parked: Option<oneshot::Sender<PollAnswer>>,
        /// Closes the transport when the client does not poll again in time.
        repoll: Option<SpawnHandle>,
    },
}

/// One queued outbound message; Vibe long-polling keeps it until the client acknowledges `id`.
pub(super) struct Outgoing {
    pub(super) message: WireMessage,
    pub(super) vibe_id: Option<String>,
}

/// The socket actor.
pub struct SocketActor {
    pub(super) shared: Arc<SocketShared>,
    pub(super) server: Cettia,
    pub(super) transport: Option<Transport>,
    pub(super) transport_id: Option<Arc<str>>,
    /// Its place in the node's sessions-by-transport gauge.
    pub(super) on_transport: OnTransport,
    /// Bumped at every attach and detach: stale notices and requests are recognised.
    pub(super) generation: u64,
    pub(super) pending: VecDeque<Outgoing>,
    /// How many of `pending`'s oldest messages were queued before the current transport
    /// attached: what the client was owed on its return, which is not lag.
    pub(super) backlog: usize,
    pub(super) next_event_id: u64,
    pub(super) replies: HashMap<String, ReplyCallback>,
    pub(super) reply_order: VecDeque<String>,
    pub(super) heartbeat: Option<SpawnHandle>,
    pub(super) heartbeat_ms: u64,
    pub(super) fast_heartbeat_ms: u64,
    pub(super) delete_timer: Option<SpawnHandle>,
    pub(super) topics: HashMap<TopicId, Membership>,
    /// The socket was handshaken at least once (the client knows its id).
    pub(super) created_fired: bool,
    /// Close reason for the WebSocket being closed (slow consumer).
    pub(super) close_reason: Option<actix_http::ws::CloseReason>,
    /// Clustered, recreated from a record: the topics to rejoin at their cursors.
    pub(super) restore_topics: Vec<TopicCursor>,
    /// Clustered: the HTTP transport this socket was moved here to continue.
    pub(super) continuing: Option<Arc<str>>,
    /// Handed over to another node: stops without `close` or `delete`.
    pub(super) moved: bool,
    /// Clustered: the state changed since the record was last written.
    pub(super) record_dirty: bool,
    pub(super) last_saved: Option<Instant>,
    pub(super) saved_tags: Vec<String>,
    /// Runs out with the identity's token.
    pub(super) token_timer: Option<SpawnHandle>,
    /// The socket's place in the connection counts (the caps); a socket moved here from
    /// another node is counted when the request that moved it says who its client is.
    counted: Option<session::Counted>,
}

impl SocketActor {
    pub(super) fn new(shared: Arc<SocketShared>, server: Cettia) -> Self {
        let (heartbeat_ms, fast_heartbeat_ms) = server.heartbeat();
        let first_id = shared.dialect.first_event_id();
        SocketActor {
            on_transport: OnTransport::new(&server.node().metrics, Protocol::Cettia),
            shared,
            server,
            transport: None,
            transport_id: None,
            generation: 0,
            pending: VecDeque::new(),
            backlog: 0,
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
            token_timer: None,
            counted: None,
        }
    }

    /// Counted in the connection caps through `counted` while the socket lives here.
    pub(super) fn counted(mut self, counted: session::Counted) -> Self {
        self.counted = Some(counted);
        self
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
    pub(super) fn snapshot(&self, owner: &str) -> SocketRecord {
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
    pub(super) fn save_record(&mut self) {
        if let Some(save) = self.record_save() {
            actix::spawn(save);
        }
    }

    /// Clustered (Cettia): the write of the socket record as it is now, to be run (a failure
    /// is logged: the next write repeats it).
    pub(super) fn record_save(&mut self) -> Option<BoxFuture<'static, ()>> {
        let control = self.server.control()?;
        if !self.shared.dialect.resumes() || self.moved {
            return None;
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
        Some(Box::pin(async move {
            if let Err(error) = save.await {
                tracing::debug!(socket = %id, %error, "socket record not saved");
            }
        }))
    }

    /// Clustered: write the record if it is due (see `cluster.rs` for when).
    pub(super) fn record_tick(&mut self) {
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

    pub(super) fn socket_handle(&self, ctx: &Context<Self>) -> Socket {
        Socket {
            shared: self.shared.clone(),
            addr: ctx.address(),
            server: self.server.clone(),
        }
    }

    pub(super) fn max_pending(&self) -> usize {
        (self.server.node().config.max_lag_messages as usize).max(1)
    }

    pub(super) fn next_id(&mut self) -> String {
        let id = self.next_event_id;
        self.next_event_id += 1;
        self.record_dirty = true;
        id.to_string()
    }
}

impl SocketActor {
    /// A new transport: replace the old one, handshake, deliver the queue. Answers its
    /// generation and (clustered) the write of the socket record, which the caller runs.
    pub(super) fn attach(
        &mut self,
        transport: Transport,
        transport_id: Option<Arc<str>>,
        heartbeat_ms: Option<u64>,
        continued: bool,
        ctx: &mut Context<Self>,
    ) -> (u64, Option<BoxFuture<'static, ()>>) {
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
        } else if self.shared.dialect.handshakes() && !continued {
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
        if self.shared.dialect.handshakes() && !continued {
            // A handshake owed to a transport that never took it (it came in the record).
            if matches!(self.pending.front(), Some(o) if framing::is_socket_handshake(&o.message)) {
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
        self.backlog = self.pending.len();
        self.arm_heartbeat(ctx);
        if !continued {
            let socket = self.socket_handle(ctx);
            for handler in self.server.handlers().on_open.iter() {
                handler(&socket);
            }
        }
        self.flush(ctx);
        (self.generation, self.record_save())
    }

    pub(super) fn arm_heartbeat(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn close_transport(&mut self, ctx: &mut Context<Self>) {
        self.close_transport_because(ctx, None);
    }

    /// [`Self::close_transport`] with a WebSocket close reason.
    pub(super) fn close_transport_because(
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
        if !self.shared.dialect.resumes() {
            ctx.stop();
            return;
        }
        self.save_record();
        let window = self.server.resume_window();
        self.delete_timer = Some(ctx.run_later(window, |act, ctx| {
            if act.transport.is_none() {
                tracing::debug!(socket = %act.shared.id, "resume window over: deleting the socket");
                ctx.stop();
            }
        }));
    }

    /// End the current transport (and fire `close`); returns whether there was one.
    pub(super) fn drop_transport(&mut self, ctx: &mut Context<Self>) -> bool {
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
        if matches!(self.pending.front(), Some(o) if o.vibe_id.is_none() && framing::is_socket_handshake(&o.message))
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
    pub(super) fn on_event(&mut self, event: Event, ctx: &mut Context<Self>) {
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
}

impl Actor for SocketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(session::MAILBOX);
        // A socket nobody attaches to (its first request failed) must not live forever.
        let window = self.server.resume_window();
        self.delete_timer = Some(ctx.run_later(window, |act, ctx| {
            if act.transport.is_none() {
                ctx.stop();
            }
        }));
        if self.server.control().is_some() && self.shared.dialect.resumes() {
            ctx.run_interval(RECORD_TICK, |act, _| act.record_tick());
            // Recreated from a record: rejoin its topics before anything else is handled,
            // continuing from the record's cursors.
            for TopicCursor {
                topic,
                epoch,
                cursor,
            } in std::mem::take(&mut self.restore_topics)
            {
                // The gate decides again on this node: a grant may have gone meanwhile.
                let who = self.shared.identity.lock().clone();
                let gate = &self.server.node().gate;
                let Some(cleared) = gate
                    .subscribe(&who, 0, [topic.as_str()])
                    .ok()
                    .and_then(|mut c| c.pop())
                else {
                    tracing::info!(socket = %self.shared.id, %topic,
                        "not rejoined after the move: the gate refuses it now");
                    self.shared.topics.lock().retain(|t| **t != *topic);
                    continue;
                };
                let topic: TopicId = topic.as_str().into();
                self.join(cleared, (0, false), ctx, move |mut membership, act, ctx| {
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
            if self.shared.dialect.resumes() {
                let delete = control.delete_record(RecordKind::CettiaSocket, &self.shared.id);
                actix::spawn(async move {
                    let _ = delete.await;
                });
            }
        }
    }
}

impl SocketActor {
    /// Leave every topic (the socket stops, or its topics continue on another node).
    pub(super) fn leave_topics(&mut self) {
        for (_, membership) in self.topics.drain() {
            membership.ack.addr.do_send(Leave {
                session: self.shared.id.clone(),
            });
        }
    }

    /// Whether HTTP transport `id` is this socket's: attached, or the one it was moved here to
    /// continue.
    pub(super) fn carries(&self, id: &str) -> bool {
        let attached = self.transport.is_some() && self.transport_id.as_deref() == Some(id);
        attached || self.continuing.as_deref() == Some(id)
    }

    /// Clustered, handed over: send what was queued for the socket to wherever it is now.
    pub(super) fn forward_send(&self, kind: String, data: Value) {
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

pub(super) fn decode_inbound(message: &WireMessage) -> Result<Event, EventError> {
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

impl Handler<super::messages::Identify> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: super::messages::Identify, ctx: &mut Context<Self>) {
        expiry::arm(self, &msg.0, ctx);
        if self.counted.is_none() {
            self.counted = Some(session::count(self.server.node(), &msg.0));
        }
        *self.shared.identity.lock() = msg.0;
    }
}

impl Expires for SocketActor {
    fn token_timer(&mut self) -> &mut Option<SpawnHandle> {
        &mut self.token_timer
    }

    /// The client hears why (an `error` event, "token expired"), then its transport closes (a
    /// WebSocket with `1008`); reconnecting with the old token is refused with 401.
    fn token_expired(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!(socket = %self.shared.id, "token expired: closing the transport");
        self.server.node().metrics.auth_failure("expired_live");
        let id = self.next_id();
        self.send_event(Event::new(id, "error", Value::from("token expired")), ctx);
        self.close_transport_because(ctx, Some(expiry::token_expired()));
    }
}
