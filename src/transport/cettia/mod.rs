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
pub mod socket;
pub mod websocket;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;

use crate::node::{Node, Stats};
pub use crate::protocol::cettia::Value;
use crate::topic::{Audience, Message, PublishError, SessionId, TopicId};
use socket::{CloseSocket, Emit, JoinTopic, LeaveTopic, SendReply, SocketActor};

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
    params: Vec<(String, String)>,
    tags: Mutex<HashSet<String>>,
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
        Cettia {
            inner: Arc::new(Inner {
                node,
                handlers: RwLock::new(Arc::new(Handlers::default())),
                sockets: Mutex::new(HashMap::new()),
                transports: Mutex::new(HashMap::new()),
                heartbeat_ms: AtomicU64::new(heartbeat_ms),
                fast_heartbeat_ms: AtomicU64::new(fast_heartbeat_ms),
            }),
        }
    }

    /// What `nimbus` does out of the box: a socket joins the topics named by its `topic` query
    /// parameters; `echo` is sent back to its sender; `message` is published to the socket's
    /// topics, where Atmosphere and Cettia clients alike receive it.
    pub fn with_defaults(node: Arc<Node>) -> Self {
        let cettia = Cettia::new(node);
        cettia.on_socket(|socket| {
            let topics: Vec<String> = socket.query("topic").map(str::to_string).collect();
            for topic in topics {
                socket.join(&topic);
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

    /// Send an event to every socket of this node tagged `tag`; returns how many were reached.
    pub fn send_to_tag(&self, tag: &str, kind: &str, data: Value) -> usize {
        self.tagged(tag)
            .iter()
            .filter(|s| s.send(kind, data.clone()).is_ok())
            .count()
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
            .map_err(|e| match e {
                actix::prelude::SendError::Full(_) => SendError::Full,
                actix::prelude::SendError::Closed(_) => SendError::Deleted,
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
    addr: Addr<SocketActor>,
    id: Value,
    done: Arc<AtomicBool>,
}

impl Reply {
    pub(crate) fn new(addr: Addr<SocketActor>, id: Value) -> Self {
        Reply {
            addr,
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
        let _ = self.addr.try_send(SendReply {
            id: self.id.clone(),
            data,
            exception,
        });
    }
}
