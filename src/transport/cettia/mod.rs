//! Cettia and Vibe sockets, and the Rust API applications build on them.
//!
//! A [`Cettia`] is the server side of the protocol on one node: it owns the sockets (one
//! [`socket::SocketActor`] each), the open HTTP transports, and the application's handlers. An
//! application registers handlers — on socket open, close and delete, on events by type (with a
//! [`Reply`] when the client asked for one) — and sends to one [`Socket`], to a topic (every
//! Atmosphere and Cettia client in it, through the broker) or to every socket with a tag.
//!
//! ```no_run
//! # use nimbus::cettia::{Cettia, Value};
//! # fn app(node: std::sync::Arc<nimbus::node::Node>) {
//! let cettia = Cettia::new(node);
//! cettia.on_open(|socket| socket.tag("online"));
//! cettia.on("echo", |socket, data, _reply| {
//!     let _ = socket.send("echo", data);
//! });
//! cettia.on("ask", |_socket, data, reply| {
//!     if let Some(reply) = reply {
//!         reply.resolve(data);
//!     }
//! });
//! cettia.send_to_tag("online", "notice", Value::from("hello"));
//! # }
//! ```
pub mod cluster;
pub mod socket;
pub mod websocket;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;

use crate::broker::{ControlPlane, RecordKind};
use crate::node::{Node, Stats};
pub use crate::protocol::cettia::Value;
use crate::protocol::cettia::WireMessage;
use crate::topic::{Audience, Message, PublishError, SessionId, TopicId};
use cluster::{Control, Handled, SocketRecord, Target, HANDOVER_WAIT, INBOUND_WAIT, MAX_BUFFERED};
use socket::{
    CloseSocket, Emit, ForwardedInbound, HandOver, JoinTopic, LeaveTopic, SendReply, SocketActor,
};

/// Which wire dialect a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Cettia 1.0 (`/cettia`): server-issued ids, handshakes, resumption.
    Cettia,
    /// Vibe 3.0.0-Alpha1 (`/vibe`): client-chosen ids, one transport per socket.
    Vibe,
}

/// Called with the outcome of an outbound event the client replied to: `Ok` when it resolved,
/// `Err` when it rejected (or the reply can no longer come).
pub type ReplyCallback = Box<dyn FnOnce(&Socket, Result<Value, Value>) + Send>;
type SocketHandler = Arc<dyn Fn(&Socket) + Send + Sync>;
type EventHandler = Arc<dyn Fn(&Socket, Value, Option<Reply>) + Send + Sync>;

/// The handlers of an application.
#[derive(Default, Clone)]
pub(crate) struct Handlers {
    on_socket: Vec<SocketHandler>,
    on_open: Vec<SocketHandler>,
    on_close: Vec<SocketHandler>,
    on_delete: Vec<SocketHandler>,
    on_event: HashMap<String, Arc<Vec<EventHandler>>>,
}

/// The Cettia/Vibe server of one node. Cheap to clone.
#[derive(Clone)]
pub struct Cettia {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<Node>,
    handlers: RwLock<Arc<Handlers>>,
    sockets: Mutex<HashMap<SessionId, SocketEntry>>,
    /// HTTP transport id → its socket and the generation the socket gave it.
    transports: Mutex<HashMap<Arc<str>, TransportEntry>>,
    heartbeat_ms: AtomicU64,
    fast_heartbeat_ms: AtomicU64,
    /// Clustered: the broker's control plane (socket records, the control channel).
    control: Option<Arc<dyn ControlPlane>>,
    /// Clustered: sockets being moved to this node from another one.
    resuming: Mutex<HashMap<SessionId, Resuming>>,
    /// Clustered: POSTs forwarded to another node, waiting for the socket's answer.
    acks: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Handled>>>,
}

/// POSTs this node holds while another node's socket handles their events, at most; beyond it
/// a POST is refused with 503 (its client retries on a new transport).
const MAX_FORWARDED_POSTS: usize = 4096;

/// Clustered: who waits for the answer to a forwarded client event.
#[derive(Debug, Clone)]
pub(crate) struct InboundAck {
    pub(crate) ack: String,
    pub(crate) origin: String,
}

/// A forwarded client event got no answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ForwardError {
    #[error("no node answered for this transport in time")]
    Unanswered,
    #[error("too many client events are being forwarded; retry")]
    Busy,
    #[error("this node is not clustered")]
    NotClustered,
}

/// A socket on its way to this node.
struct Resuming {
    /// Identifies this node's handover request on the control channel.
    nonce: String,
    /// The request went by on the channel: control messages after it are this node's to apply.
    seen_request: bool,
    /// Sends and client events for the socket that arrived after the request, in order.
    buffered: Vec<Control>,
    /// Told whether the previous owner had the socket (and wrote its final record).
    handed: Option<tokio::sync::oneshot::Sender<bool>>,
    /// The HTTP transport being continued here, if the move is for one of its polls.
    transport: Option<String>,
}

/// A live socket: what it shares with handles, and its actor.
type SocketEntry = (Arc<SocketShared>, Addr<SocketActor>);
/// An HTTP transport: its socket and the generation the socket gave it.
type TransportEntry = (Addr<SocketActor>, u64);

/// What a socket shares with the handles the application holds.
pub(crate) struct SocketShared {
    pub(crate) id: SessionId,
    pub(crate) dialect: Dialect,
    /// The query parameters of the request that created the socket.
    pub(crate) params: Vec<(String, String)>,
    pub(crate) tags: Mutex<HashSet<String>>,
    topics: Mutex<Vec<TopicId>>,
    deleted: AtomicBool,
}

/// A Vibe client chose the id of a live socket of another dialect.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("this socket id is in use by another socket; choose another")]
pub struct IdInUse;

/// Why a send did not happen.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SendError {
    #[error("the socket was deleted")]
    Deleted,
    #[error("the socket's mailbox is full; retry later")]
    Full,
    #[error("no socket with this id")]
    NoSuchSocket,
    #[error("binary data cannot be published to a topic")]
    BinaryToTopic,
    #[error("data cannot be written as JSON: {0}")]
    Encode(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl Cettia {
    /// A server with no handlers (sockets connect, exchange heartbeats and replies, nothing else).
    pub fn new(node: Arc<Node>) -> Self {
        let heartbeat_ms = node.config.cettia_heartbeat_ms;
        let fast_heartbeat_ms = node.config.cettia_fast_heartbeat_ms;
        let control = node.broker.control();
        let cettia = Cettia {
            inner: Arc::new(Inner {
                node,
                handlers: RwLock::new(Arc::new(Handlers::default())),
                sockets: Mutex::new(HashMap::new()),
                transports: Mutex::new(HashMap::new()),
                heartbeat_ms: AtomicU64::new(heartbeat_ms),
                fast_heartbeat_ms: AtomicU64::new(fast_heartbeat_ms),
                control: control.clone(),
                resuming: Mutex::new(HashMap::new()),
                acks: Mutex::new(HashMap::new()),
            }),
        };
        if let Some(control) = control {
            // One Cettia server per node takes the control messages (the last one created).
            let server = Arc::downgrade(&cettia.inner);
            control.set_control_handler(Arc::new(move |payload: &[u8]| {
                if let Some(inner) = server.upgrade() {
                    Cettia { inner }.on_control(payload);
                }
            }));
        }
        cettia
    }

    /// What `nimbus` does out of the box: a socket joins the topics named by its `topic` query
    /// parameters and carries the tags named by its `tag` parameters; `echo` is sent back to its sender; `message` is published to the socket's
    /// topics, where Atmosphere and Cettia clients alike receive it.
    pub fn with_defaults(node: Arc<Node>) -> Self {
        let cettia = Cettia::new(node);
        cettia.on_socket(|socket| {
            let topics: Vec<String> = socket.query("topic").map(str::to_string).collect();
            for topic in topics {
                socket.join(&topic);
            }
            let tags: Vec<String> = socket.query("tag").map(str::to_string).collect();
            for tag in tags {
                socket.tag(&tag);
            }
        });
        cettia.on("echo", |socket, data, _| {
            if let Err(error) = socket.send("echo", data) {
                tracing::debug!(socket = %socket.id(), %error, "echo not sent");
            }
        });
        let server = cettia.clone();
        cettia.on("message", move |socket, data, reply| {
            let mut outcome = Ok(());
            for topic in socket.topics() {
                if let Err(error) = server.publish(&topic, data.clone()) {
                    outcome = Err(error);
                }
            }
            match (reply, outcome) {
                (Some(reply), Ok(())) => reply.resolve(Value::Nil),
                (Some(reply), Err(error)) => reply.reject(Value::from(error.to_string())),
                (None, Err(error)) => {
                    tracing::debug!(socket = %socket.id(), %error, "message not published")
                }
                (None, Ok(())) => {}
            }
        });
        cettia
    }

    fn update(&self, change: impl FnOnce(&mut Handlers)) {
        let mut handlers = self.inner.handlers.write();
        change(Arc::make_mut(&mut handlers));
    }

    pub(crate) fn handlers(&self) -> Arc<Handlers> {
        self.inner.handlers.read().clone()
    }

    /// Called once when a socket is created, before its first handshake.
    pub fn on_socket(&self, f: impl Fn(&Socket) + Send + Sync + 'static) {
        self.update(|h| h.on_socket.push(Arc::new(f)));
    }

    /// Called at every handshake: a new socket, or one resumed on a new transport.
    pub fn on_open(&self, f: impl Fn(&Socket) + Send + Sync + 'static) {
        self.update(|h| h.on_open.push(Arc::new(f)));
    }

    /// Called when a socket loses its transport (it may come back within the resume window).
    pub fn on_close(&self, f: impl Fn(&Socket) + Send + Sync + 'static) {
        self.update(|h| h.on_close.push(Arc::new(f)));
    }

    /// Called once when a socket is deleted: its resume window ran out, or it was closed.
    pub fn on_delete(&self, f: impl Fn(&Socket) + Send + Sync + 'static) {
        self.update(|h| h.on_delete.push(Arc::new(f)));
    }

    /// Called for every event of type `kind`; `reply` is there when the client asked for one.
    pub fn on(
        &self,
        kind: &str,
        f: impl Fn(&Socket, Value, Option<Reply>) + Send + Sync + 'static,
    ) {
        self.update(|h| {
            let list = h.on_event.entry(kind.to_string()).or_default();
            Arc::make_mut(list).push(Arc::new(f));
        });
    }

    /// Set the heartbeat announced to sockets created from now on (`cettia-heartbeat` and
    /// `cettia-_heartbeat`, in milliseconds).
    pub fn set_heartbeat(&self, heartbeat_ms: u64, fast_heartbeat_ms: u64) {
        self.inner
            .heartbeat_ms
            .store(heartbeat_ms, Ordering::Relaxed);
        self.inner
            .fast_heartbeat_ms
            .store(fast_heartbeat_ms, Ordering::Relaxed);
    }

    pub(crate) fn heartbeat(&self) -> (u64, u64) {
        (
            self.inner.heartbeat_ms.load(Ordering::Relaxed),
            self.inner.fast_heartbeat_ms.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn resume_window(&self) -> Duration {
        Duration::from_secs(self.inner.node.config.cettia_resume_window_secs)
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.inner.node
    }

    /// The live socket with `id`, if any.
    pub fn socket(&self, id: &str) -> Option<Socket> {
        let sockets = self.inner.sockets.lock();
        sockets.get(id).map(|(shared, addr)| Socket {
            shared: shared.clone(),
            addr: addr.clone(),
            server: self.clone(),
        })
    }

    /// Every live socket of this node.
    pub fn sockets(&self) -> Vec<Socket> {
        let sockets = self.inner.sockets.lock();
        sockets
            .values()
            .map(|(shared, addr)| Socket {
                shared: shared.clone(),
                addr: addr.clone(),
                server: self.clone(),
            })
            .collect()
    }

    /// Sockets of this node that carry `tag`.
    pub fn tagged(&self, tag: &str) -> Vec<Socket> {
        self.sockets()
            .into_iter()
            .filter(|s| s.shared.tags.lock().contains(tag))
            .collect()
    }

    /// Send an event to every socket tagged `tag`: on this node at once (the count returned),
    /// and in a cluster on every other node too (one control-channel PUBLISH; those are not
    /// counted).
    pub fn send_to_tag(&self, tag: &str, kind: &str, data: Value) -> usize {
        let reached = self
            .tagged(tag)
            .iter()
            .filter(|s| s.send(kind, data.clone()).is_ok())
            .count();
        if let Some(control) = &self.inner.control {
            self.publish_control(Control::Send {
                target: Target::Tag(tag.to_string()),
                kind: kind.to_string(),
                data,
                origin: control.node_id().to_string(),
            });
        }
        reached
    }

    /// Send an event to the socket `id`, whichever node holds it: at once when it is on this
    /// node; in a cluster otherwise through the control channel (the node holding it delivers,
    /// or queues it while the socket is away). Alone, an unknown id is
    /// [`SendError::NoSuchSocket`]; in a cluster a socket nobody holds never gets it.
    pub fn send_to(&self, id: &str, kind: &str, data: Value) -> Result<(), SendError> {
        if let Some(socket) = self.socket(id).filter(|s| s.addr.connected()) {
            return socket.send(kind, data);
        }
        let Some(control) = &self.inner.control else {
            return Err(SendError::NoSuchSocket);
        };
        self.publish_control(Control::Send {
            target: Target::Socket(id.to_string()),
            kind: kind.to_string(),
            data,
            origin: control.node_id().to_string(),
        });
        Ok(())
    }

    /// Publish `data` to `topic` through the broker: Cettia sockets in it receive a `message`
    /// event, Atmosphere clients the text (a string as is, other data as JSON text).
    pub fn publish(&self, topic: &str, data: Value) -> Result<(), SendError> {
        let message = match data {
            Value::String(s) => match s.into_str() {
                Some(text) => Message::text(text),
                None => return Err(SendError::Encode("string is not UTF-8".into())),
            },
            other => {
                if crate::protocol::cettia::event::contains_binary(&other) {
                    return Err(SendError::BinaryToTopic);
                }
                let json = crate::protocol::cettia::event::json(&other)
                    .map_err(|e| SendError::Encode(e.to_string()))?;
                Message {
                    text: json.into(),
                    json: true,
                }
            }
        };
        self.inner
            .node
            .broker
            .publish(topic, Audience::All, message)?;
        Stats::add(&self.inner.node.stats.published, 1);
        Ok(())
    }

    /// The socket for a request: the live one with `id` if there is one (resumption), else a
    /// new socket (with `id` for Vibe, whose clients choose it; a fresh UUID for Cettia).
    pub(crate) fn socket_for(
        &self,
        dialect: Dialect,
        id: Option<&str>,
        params: &[(String, String)],
    ) -> Result<Addr<SocketActor>, IdInUse> {
        let mut sockets = self.inner.sockets.lock();
        if let Some(id) = id {
            if let Some((shared, addr)) = sockets.get(id) {
                if addr.connected() {
                    if shared.dialect == dialect {
                        return Ok(addr.clone());
                    }
                    if dialect == Dialect::Vibe {
                        // A client-chosen id must not take over another protocol's socket.
                        return Err(IdInUse);
                    }
                }
            }
        }
        let id: SessionId = match (dialect, id) {
            (Dialect::Vibe, Some(id)) => id.into(),
            _ => uuid::Uuid::new_v4().to_string().into(),
        };
        let shared = Arc::new(SocketShared {
            id: id.clone(),
            dialect,
            params: params.to_vec(),
            tags: Mutex::new(HashSet::new()),
            topics: Mutex::new(Vec::new()),
            deleted: AtomicBool::new(false),
        });
        let addr = SocketActor::new(shared.clone(), self.clone()).start();
        sockets.insert(id, (shared, addr.clone()));
        Ok(addr)
    }

    pub(crate) fn forget_socket(&self, id: &str, addr: &Addr<SocketActor>) {
        let mut sockets = self.inner.sockets.lock();
        if let Some((shared, a)) = sockets.get(id) {
            if a == addr {
                shared.deleted.store(true, Ordering::Relaxed);
                sockets.remove(id);
            }
        }
    }

    pub(crate) fn register_transport(
        &self,
        id: Arc<str>,
        addr: Addr<SocketActor>,
        generation: u64,
    ) {
        self.inner.transports.lock().insert(id, (addr, generation));
    }

    pub(crate) fn transport(&self, id: &str) -> Option<(Addr<SocketActor>, u64)> {
        self.inner.transports.lock().get(id).cloned()
    }

    /// Forget transport `id` if it belongs to `addr` (a socket that moved to another node).
    pub(crate) fn forget_transport_of(&self, id: &str, addr: &Addr<SocketActor>) {
        let mut transports = self.inner.transports.lock();
        if transports.get(id).is_some_and(|(a, _)| a == addr) {
            transports.remove(id);
        }
    }

    /// Forget transport `id` if it still belongs to `addr` at `generation`.
    pub(crate) fn forget_transport(&self, id: &str, addr: &Addr<SocketActor>, generation: u64) {
        let mut transports = self.inner.transports.lock();
        if transports
            .get(id)
            .is_some_and(|(a, g)| a == addr && *g == generation)
        {
            transports.remove(id);
        }
    }

    /// Live sockets and HTTP transports on this node (for tests and stats).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.inner.sockets.lock().len(),
            self.inner.transports.lock().len(),
        )
    }
}

/// A handle to one socket; cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct Socket {
    shared: Arc<SocketShared>,
    addr: Addr<SocketActor>,
    server: Cettia,
}

impl Socket {
    /// The socket id (`cettia-id`, or the Vibe client's `id`).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn dialect(&self) -> Dialect {
        self.shared.dialect
    }

    /// Values of query parameter `name` on the request that created the socket.
    pub fn query<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.shared
            .params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Send an event. While the socket is between transports it is kept (bounded) and
    /// delivered when the client resumes.
    pub fn send(&self, kind: &str, data: Value) -> Result<(), SendError> {
        self.emit(kind, data, None)
    }

    /// Send an event asking for a reply; `callback` runs with the client's answer.
    pub fn send_with_reply(
        &self,
        kind: &str,
        data: Value,
        callback: impl FnOnce(&Socket, Result<Value, Value>) + Send + 'static,
    ) -> Result<(), SendError> {
        self.emit(kind, data, Some(Box::new(callback)))
    }

    fn emit(
        &self,
        kind: &str,
        data: Value,
        on_reply: Option<ReplyCallback>,
    ) -> Result<(), SendError> {
        if self.shared.deleted.load(Ordering::Relaxed) {
            return Err(SendError::Deleted);
        }
        self.addr
            .try_send(Emit {
                kind: kind.to_string(),
                data,
                on_reply,
            })
            .or_else(|e| match e {
                actix::prelude::SendError::Full(_) => Err(SendError::Full),
                // Moved to another node (clustered): the send follows it there.
                actix::prelude::SendError::Closed(emit)
                    if emit.on_reply.is_none() && self.server.control().is_some() =>
                {
                    self.server.send_to(self.id(), &emit.kind, emit.data)
                }
                actix::prelude::SendError::Closed(_) => Err(SendError::Deleted),
            })
    }

    /// Close the socket's transport (the client may resume), or delete the socket if it has
    /// none.
    pub fn close(&self) {
        let _ = self.addr.try_send(CloseSocket);
    }

    /// Join `topic` (`/chat/lobby`): its messages arrive as `message` events.
    pub fn join(&self, topic: &str) {
        let topic: TopicId = topic.into();
        {
            let mut topics = self.shared.topics.lock();
            if topics.contains(&topic) {
                return;
            }
            topics.push(topic.clone());
        }
        let _ = self.addr.try_send(JoinTopic(topic));
    }

    /// Leave `topic`.
    pub fn leave(&self, topic: &str) {
        self.shared.topics.lock().retain(|t| &**t != topic);
        let _ = self.addr.try_send(LeaveTopic(topic.into()));
    }

    /// The topics the socket is in.
    pub fn topics(&self) -> Vec<TopicId> {
        self.shared.topics.lock().clone()
    }

    pub fn tag(&self, tag: &str) {
        self.shared.tags.lock().insert(tag.to_string());
    }

    pub fn untag(&self, tag: &str) {
        self.shared.tags.lock().remove(tag);
    }

    pub fn tags(&self) -> Vec<String> {
        self.shared.tags.lock().iter().cloned().collect()
    }

    /// The server this socket belongs to.
    pub fn server(&self) -> &Cettia {
        &self.server
    }
}

/// The answer to an inbound event that asked for one; the first call wins.
#[derive(Clone)]
pub struct Reply {
    socket: Socket,
    id: Value,
    done: Arc<AtomicBool>,
}

impl Reply {
    pub(crate) fn new(socket: Socket, id: Value) -> Self {
        Reply {
            socket,
            id,
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Resolve: the client's resolved callback runs with `data`.
    pub fn resolve(&self, data: Value) {
        self.answer(data, false);
    }

    /// Reject: the client's rejected callback runs with `data`.
    pub fn reject(&self, data: Value) {
        self.answer(data, true);
    }

    fn answer(&self, data: Value, exception: bool) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = self.socket.addr.try_send(SendReply {
            id: self.id.clone(),
            data,
            exception,
        });
        // Moved to another node (clustered): the reply follows the socket there.
        if let Err(actix::prelude::SendError::Closed(reply)) = sent {
            if self.socket.server.control().is_some() {
                let data = socket::reply_data(reply.id, reply.data, reply.exception);
                let _ = self.socket.server.send_to(self.socket.id(), "reply", data);
            }
        }
    }
}

/// Removes a [`Resuming`] entry however the resumption ends (also when the request that started
/// it is dropped).
struct ResumingGuard<'a> {
    server: &'a Cettia,
    id: SessionId,
    nonce: String,
}

impl Drop for ResumingGuard<'_> {
    fn drop(&mut self) {
        let mut resuming = self.server.inner.resuming.lock();
        if resuming
            .get(&self.id)
            .is_some_and(|r| r.nonce == self.nonce)
        {
            resuming.remove(&self.id);
        }
    }
}

/// Removes a forwarded POST's waiter however the POST ends.
struct AckGuard<'a> {
    server: &'a Cettia,
    ack: String,
}

impl Drop for AckGuard<'_> {
    fn drop(&mut self) {
        self.server.inner.acks.lock().remove(&self.ack);
    }
}

// === Cettia in a cluster (see `cluster.rs`) ===

impl Cettia {
    /// The cluster's control plane, when this node is clustered.
    pub(crate) fn control(&self) -> Option<&Arc<dyn ControlPlane>> {
        self.inner.control.as_ref()
    }

    fn publish_control(&self, message: Control) {
        let Some(control) = &self.inner.control else {
            return;
        };
        let publish = control.publish_control(message.encode());
        tokio::spawn(async move {
            if let Err(error) = publish.await {
                tracing::warn!(%error, "control message not published");
            }
        });
    }

    /// A live Cettia socket of this node.
    fn live(&self, id: &str) -> Option<Addr<SocketActor>> {
        let sockets = self.inner.sockets.lock();
        sockets
            .get(id)
            .filter(|(shared, addr)| shared.dialect == Dialect::Cettia && addr.connected())
            .map(|(_, addr)| addr.clone())
    }

    /// The socket for a request: [`Cettia::socket_for`], except that in a cluster a Cettia id
    /// this node does not hold is looked up in the cluster and moved here if it is alive.
    pub(crate) async fn socket_for_request(
        &self,
        dialect: Dialect,
        id: Option<&str>,
        params: &[(String, String)],
    ) -> Result<Addr<SocketActor>, IdInUse> {
        if let (Dialect::Cettia, Some(id), Some(_)) = (dialect, id, &self.inner.control) {
            if self.live(id).is_none() {
                if let Some(addr) = self.resume_remote(id, None).await {
                    return Ok(addr);
                }
            }
        }
        self.socket_for(dialect, id, params)
    }

    /// Move socket `id` to this node from wherever it is (see `cluster.rs`): load its record,
    /// ask its owner to hand it over, recreate it here. `None` when the cluster has no such
    /// socket (or cannot be reached).
    pub(crate) async fn resume_remote(
        &self,
        id: &str,
        transport: Option<&str>,
    ) -> Option<Addr<SocketActor>> {
        let control = self.inner.control.clone()?;
        // Another request of the same client is moving it here already: wait for that one.
        let deadline = Instant::now() + 2 * HANDOVER_WAIT;
        while self.inner.resuming.lock().contains_key(id) {
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(addr) = self.live(id) {
            return Some(addr);
        }
        let record = match control.load_record(RecordKind::CettiaSocket, id).await {
            Ok(Some(bytes)) => SocketRecord::decode(&bytes)
                .map_err(|error| tracing::warn!(socket = %id, %error, "unreadable socket record"))
                .ok()?,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(socket = %id, %error, "cannot read the socket record");
                return None;
            }
        };
        let me = control.node_id().to_string();
        let nonce = uuid::Uuid::new_v4().to_string();
        let (handed, answer) = tokio::sync::oneshot::channel();
        {
            let mut resuming = self.inner.resuming.lock();
            if resuming.contains_key(id) {
                return None;
            }
            resuming.insert(
                id.into(),
                Resuming {
                    nonce: nonce.clone(),
                    seen_request: false,
                    buffered: Vec::new(),
                    handed: Some(handed),
                    transport: transport.map(str::to_string),
                },
            );
        }
        let guard = ResumingGuard {
            server: self,
            id: id.into(),
            nonce: nonce.clone(),
        };
        let record = if record.owner == me {
            // Written by this node (a restarted node with the same id): nobody else holds it.
            record
        } else {
            let request = Control::Handover {
                id: id.to_string(),
                from: me.clone(),
                owner: record.owner.clone(),
                nonce,
            };
            if let Err(error) = control.publish_control(request.encode()).await {
                tracing::warn!(socket = %id, %error, "cannot ask for the socket");
                return None;
            }
            match tokio::time::timeout(HANDOVER_WAIT, answer).await {
                Ok(Ok(true)) => match control.load_record(RecordKind::CettiaSocket, id).await {
                    Ok(Some(bytes)) => SocketRecord::decode(&bytes).unwrap_or(record),
                    _ => record,
                },
                Ok(_) => record,
                Err(_) => {
                    tracing::info!(socket = %id, owner = %record.owner,
                        "the socket's node did not answer; continuing from its last record");
                    record
                }
            }
        };
        let tags = record.tags.clone();
        // Under the lock of the resumptions: a control message for the socket is either
        // buffered (and applied here, before anything else reaches it) or, once the socket is
        // registered, delivered to it; never both (see `on_control`).
        let addr = {
            let mut resuming = self.inner.resuming.lock();
            let buffered = match resuming.get(id) {
                Some(r) if r.nonce == guard.nonce => {
                    resuming.remove(id).map(|r| r.buffered).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            let continuing: Option<Arc<str>> = transport.map(Arc::from);
            let addr = self.restore(id, record, continuing.clone());
            if let Some(tid) = continuing {
                // Until the poll attaches it (with its real generation), client events for the
                // transport find the socket; a poll with this placeholder gets an empty answer.
                self.register_transport(tid, addr.clone(), u64::MAX);
            }
            for message in buffered {
                match message {
                    Control::Send {
                        target, kind, data, ..
                    } => {
                        let ours = match &target {
                            Target::Socket(_) => true,
                            Target::Tag(tag) => tags.contains(tag),
                        };
                        if ours {
                            // At most MAX_BUFFERED of them.
                            addr.do_send(Emit {
                                kind,
                                data,
                                on_reply: None,
                            });
                        }
                    }
                    Control::Inbound {
                        transport,
                        message,
                        origin,
                        ack,
                    } => addr.do_send(ForwardedInbound {
                        transport: transport.into(),
                        message,
                        ack: Some(InboundAck { ack, origin }),
                    }),
                    _ => {}
                }
            }
            addr
        };
        drop(guard);
        tracing::debug!(socket = %id, "socket moved to this node");
        Some(addr)
    }

    /// Recreate a socket from its record (continuing HTTP transport `continuing`, if any).
    fn restore(
        &self,
        id: &str,
        record: SocketRecord,
        continuing: Option<Arc<str>>,
    ) -> Addr<SocketActor> {
        let mut sockets = self.inner.sockets.lock();
        if let Some((_, addr)) = sockets.get(id).filter(|(_, a)| a.connected()) {
            return addr.clone();
        }
        let shared = Arc::new(SocketShared {
            id: id.into(),
            dialect: Dialect::Cettia,
            params: record.params.clone(),
            tags: Mutex::new(record.tags.iter().cloned().collect()),
            topics: Mutex::new(
                record
                    .topics
                    .iter()
                    .map(|t| TopicId::from(t.topic.as_str()))
                    .collect(),
            ),
            deleted: AtomicBool::new(false),
        });
        let addr = SocketActor::restored(shared.clone(), self.clone(), record, continuing).start();
        sockets.insert(id.into(), (shared, addr.clone()));
        addr
    }

    /// Clustered: remember which socket an HTTP transport belongs to, so that its next
    /// request may land on any node.
    pub(crate) fn record_transport(&self, transport_id: &str, socket_id: &str) {
        let Some(control) = &self.inner.control else {
            return;
        };
        let save = control.save_record(
            RecordKind::CettiaTransport,
            transport_id,
            socket_id.as_bytes().to_vec(),
            self.resume_window(),
        );
        tokio::spawn(async move {
            if let Err(error) = save.await {
                tracing::debug!(%error, "transport record not saved");
            }
        });
    }

    /// Clustered: the socket of an HTTP transport opened on another node, moved here.
    pub(crate) async fn socket_of_remote_transport(
        &self,
        transport_id: &str,
    ) -> Option<Addr<SocketActor>> {
        let control = self.inner.control.clone()?;
        let bytes = control
            .load_record(RecordKind::CettiaTransport, transport_id)
            .await
            .ok()??;
        let id = String::from_utf8(bytes).ok()?;
        match self.live(&id) {
            Some(addr) => Some(addr),
            None => self.resume_remote(&id, Some(transport_id)).await,
        }
    }

    /// Clustered: hand a client event POSTed here to the node that has its transport, and wait
    /// until its socket has handled it (so that the client's next event, sent after this POST is
    /// answered, comes after it wherever it lands).
    pub(crate) async fn forward_inbound(
        &self,
        transport_id: &str,
        message: WireMessage,
    ) -> Result<Handled, ForwardError> {
        let Some(control) = &self.inner.control else {
            return Err(ForwardError::NotClustered);
        };
        let ack = uuid::Uuid::new_v4().to_string();
        let (answer, answered) = tokio::sync::oneshot::channel();
        {
            let mut acks = self.inner.acks.lock();
            if acks.len() >= MAX_FORWARDED_POSTS {
                return Err(ForwardError::Busy);
            }
            acks.insert(ack.clone(), answer);
        }
        // Removes the waiter however this ends (answered, timed out, the client left).
        let _waiting = AckGuard {
            server: self,
            ack: ack.clone(),
        };
        self.publish_control(Control::Inbound {
            transport: transport_id.to_string(),
            message,
            origin: control.node_id().to_string(),
            ack,
        });
        match tokio::time::timeout(INBOUND_WAIT, answered).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => Err(ForwardError::Unanswered),
        }
    }

    /// Clustered: tell the node holding a forwarded POST what became of its event.
    pub(crate) fn answer_inbound(&self, ack: InboundAck, outcome: Handled) {
        let Some(control) = &self.inner.control else {
            return;
        };
        if ack.origin == control.node_id() {
            self.resolve_forwarded(&ack.ack, outcome);
            return;
        }
        self.publish_control(Control::Handled {
            ack: ack.ack,
            to: ack.origin,
            outcome,
        });
    }

    /// Answer the forwarded POST waiting for `ack`, if it still waits.
    fn resolve_forwarded(&self, ack: &str, outcome: Handled) {
        if let Some(waiter) = self.inner.acks.lock().remove(ack) {
            let _ = waiter.send(outcome);
        }
    }

    /// Clustered: abort a transport held by another node.
    pub(crate) fn forward_abort(&self, transport_id: &str) {
        if let Some(control) = &self.inner.control {
            self.publish_control(Control::Abort {
                transport: transport_id.to_string(),
                origin: control.node_id().to_string(),
            });
        }
    }

    /// A message on the control channel (every node's, this one's included, in channel order).
    fn on_control(&self, payload: &[u8]) {
        let Some(control) = &self.inner.control else {
            return;
        };
        let message = match Control::decode(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "ignoring a control message");
                return;
            }
        };
        let me = control.node_id();
        match message {
            Control::Handover {
                id,
                from,
                owner,
                nonce,
            } => {
                if from == me {
                    if let Some(r) = self.inner.resuming.lock().get_mut(id.as_str()) {
                        if r.nonce == nonce {
                            r.seen_request = true;
                        }
                    }
                    return;
                }
                // From now on this node no longer has the socket: later sends are the new
                // node's (it buffers what follows its request).
                let held = {
                    let mut sockets = self.inner.sockets.lock();
                    match sockets.get(id.as_str()) {
                        Some((shared, _)) if shared.dialect == Dialect::Cettia => {
                            sockets.remove(id.as_str())
                        }
                        _ => None,
                    }
                };
                match held {
                    Some((_, addr)) => addr.do_send(HandOver { to: from, nonce }),
                    None if owner == me => self.publish_control(Control::Handed {
                        id,
                        to: from,
                        nonce,
                        held: false,
                    }),
                    None => {}
                }
            }
            Control::Handed {
                id,
                to,
                nonce,
                held,
            } => {
                if to != me {
                    return;
                }
                if let Some(r) = self.inner.resuming.lock().get_mut(id.as_str()) {
                    if r.nonce == nonce {
                        if let Some(handed) = r.handed.take() {
                            let _ = handed.send(held);
                        }
                    }
                }
            }
            Control::Send { ref origin, .. } if origin == me => {
                // Delivered here already.
            }
            Control::Send {
                target,
                kind,
                data,
                origin,
            } => {
                // Held while delivering: a socket being moved here is registered under it too.
                let mut resuming = self.inner.resuming.lock();
                let mut moving_here = false;
                for (socket, r) in resuming.iter_mut() {
                    let for_it = match &target {
                        Target::Socket(id) => id == &**socket,
                        Target::Tag(_) => true,
                    };
                    if r.seen_request && for_it {
                        moving_here |= matches!(target, Target::Socket(_));
                        if r.buffered.len() < MAX_BUFFERED {
                            r.buffered.push(Control::Send {
                                target: target.clone(),
                                kind: kind.clone(),
                                data: data.clone(),
                                origin: origin.clone(),
                            });
                        } else {
                            tracing::warn!(socket = %socket, "too many sends while the socket moves; dropped");
                        }
                    }
                }
                if moving_here {
                    return;
                }
                let reached = match &target {
                    Target::Socket(id) => self.socket(id).into_iter().collect(),
                    Target::Tag(tag) => self.tagged(tag),
                };
                for socket in reached {
                    if let Err(error) = socket.send(&kind, data.clone()) {
                        tracing::warn!(socket = %socket.id(), %error, "send from another node dropped");
                    }
                }
            }
            Control::Inbound {
                transport,
                message,
                origin,
                ack,
            } => {
                // Also when this node posted it: the transport may have moved here since.
                let mut resuming = self.inner.resuming.lock();
                if let Some((addr, _)) = self.transport(&transport).filter(|(a, _)| a.connected()) {
                    // The socket answers once it has handled the event (a socket that has just
                    // moved on leaves the answer to its new node, which buffered the event).
                    addr.do_send(ForwardedInbound {
                        transport: transport.into(),
                        message,
                        ack: Some(InboundAck { ack, origin }),
                    });
                    return;
                }
                let moving = resuming
                    .values_mut()
                    .find(|r| r.seen_request && r.transport.as_deref() == Some(transport.as_str()));
                if let Some(r) = moving.filter(|r| r.buffered.len() < MAX_BUFFERED) {
                    r.buffered.push(Control::Inbound {
                        transport,
                        message,
                        origin,
                        ack,
                    });
                }
            }
            Control::Handled { ack, to, outcome } => {
                if to == me {
                    self.resolve_forwarded(&ack, outcome);
                }
            }
            Control::Abort { transport, .. } => {
                if let Some((addr, generation)) = self.transport(&transport) {
                    addr.do_send(socket::TransportClosed(generation));
                }
            }
        }
    }
}
