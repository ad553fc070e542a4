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
mod handle;
mod handlers;
pub mod http;
pub mod messages;
mod outbound;
mod roaming;
pub mod socket;
mod topics;
mod websocket;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;

use crate::broker::{ControlChannel, ControlPlane};
use crate::node::{Node, Stats};
use crate::protocol::cettia::Dialect;
pub use crate::protocol::cettia::Value;
use crate::session::{Counted, Identity, LocalSessions};
use crate::topic::{Audience, Message, PublishError, SessionId, TopicId};
use cluster::{Control, Handled, Target};
use socket::SocketActor;

pub use handle::{JoinOptions, Reply, Socket};

/// The topic message `data` is: a string as is, other data as JSON text (binary data cannot
/// go to a topic, whose Atmosphere clients read text).
fn topic_message(data: Value) -> Result<Message, SendError> {
    match data {
        Value::String(s) => match s.into_str() {
            Some(text) => Ok(Message::text(text)),
            None => Err(SendError::Encode("string is not UTF-8".into())),
        },
        other => {
            if crate::protocol::cettia::event::contains_binary(&other) {
                return Err(SendError::BinaryToTopic);
            }
            let json = crate::protocol::cettia::event::json(&other)
                .map_err(|e| SendError::Encode(e.to_string()))?;
            Ok(Message {
                text: json.into(),
                json: true,
            })
        }
    }
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
    /// Who the client is, from the socket's newest request (its id is bound to the user).
    pub(crate) identity: Mutex<Identity>,
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
    /// The topic's namespace does not let this client publish.
    #[error("{0}")]
    Denied(String),
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
            control.set_control_handler(
                ControlChannel::Cettia,
                Arc::new(move |payload: &[u8]| {
                    if let Some(inner) = server.upgrade() {
                        Cettia { inner }.on_control(payload);
                    }
                }),
            );
        }
        cettia
    }

    /// What `nimbus` does out of the box: a socket joins the topics named by its `topic` query
    /// parameters (after each one's last `history` messages, and with `presence` events, if
    /// it asks) and carries the tags named by its `tag` parameters; `echo` is sent back to its sender; `message` is published to the socket's
    /// topics, where Atmosphere and Cettia clients alike receive it.
    pub fn with_defaults(node: Arc<Node>) -> Self {
        let cettia = Cettia::new(node);
        cettia.on_socket(|socket| {
            let topics: Vec<String> = socket.query("topic").map(str::to_string).collect();
            // `history=N`: each topic's last N messages first (history on join);
            // `presence=true`: `presence` events when users join and leave.
            let options = JoinOptions {
                history: socket
                    .query("history")
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                presence: socket.query("presence").any(|v| v == "true"),
            };
            for topic in topics {
                // The gate let the request in with these topics; one refused now (the socket
                // resumed with a token that lost a grant) is said to the client.
                if let Err(refused) = socket.join_with(&topic, options) {
                    let _ = socket.send("error", Value::from(refused.to_string()));
                }
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
            let topics = socket.topics();
            let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
            // The event paid one token of the socket's rate; a message to many topics pays
            // one per topic, all at once, or none of it is published.
            // Encoded once: its size is what the history share is charged, and every topic
            // shares its text.
            let outcome = topic_message(data).and_then(|message| {
                server
                    .node()
                    .gate
                    .publish(
                        &socket.identity(),
                        socket.id(),
                        &names,
                        1,
                        message.text.len(),
                    )
                    .map_err(|refused| SendError::Denied(refused.to_string()))?;
                let mut outcome = Ok(());
                for topic in &names {
                    if let Err(error) = server.publish_message(topic, message.clone()) {
                        outcome = Err(error);
                    }
                }
                outcome
            });
            match (reply, outcome) {
                (Some(reply), Ok(())) => reply.resolve(Value::Nil),
                (Some(reply), Err(error)) => reply.reject(Value::from(error.to_string())),
                // Without a reply callback the client hears of a refusal as an `error` event.
                (None, Err(SendError::Denied(why))) => {
                    let _ = socket.send("error", Value::from(why));
                }
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
        self.publish_message(topic, topic_message(data)?)
    }

    fn publish_message(&self, topic: &str, message: Message) -> Result<(), SendError> {
        self.inner
            .node
            .broker
            .publish(topic, Audience::All, message)?;
        Stats::add(&self.inner.node.stats.published, 1);
        Ok(())
    }

    /// The socket for a request: the live one with `id` if there is one (resumption), else a
    /// new socket (with `id` for Vibe, whose clients choose it; a fresh id for Cettia),
    /// counted in the connection caps by `counted`.
    pub(crate) fn socket_for(
        &self,
        dialect: Dialect,
        id: Option<&str>,
        params: &[(String, String)],
        who: &Identity,
        counted: Counted,
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
            _ => self.node().gate.issue(who).into(),
        };
        let shared = Arc::new(SocketShared {
            id: id.clone(),
            dialect,
            params: params.to_vec(),
            tags: Mutex::new(HashSet::new()),
            topics: Mutex::new(Vec::new()),
            deleted: AtomicBool::new(false),
            identity: Mutex::new(who.clone()),
        });
        let addr = SocketActor::new(shared.clone(), self.clone())
            .counted(counted)
            .start();
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

// === impl LocalSessions for Cettia ===

/// The backend API's commands on this node's Cettia sockets. A disconnect closes the socket's
/// transport (`close` fires; the client may resume with its id and a valid token).
impl LocalSessions for Cettia {
    fn disconnect(&self, user: Option<&str>, session: Option<&str>) -> usize {
        let found = self.select(|shared| {
            session.is_some_and(|s| *s == *shared.id)
                || user.is_some_and(|u| shared.identity.lock().user_id() == Some(u))
        });
        for addr in &found {
            addr.do_send(messages::Disconnect);
        }
        found.len()
    }

    fn unsubscribe(&self, user: &str, topic: &str) -> usize {
        let found = self.select(|shared| {
            shared.identity.lock().user_id() == Some(user)
                && shared.topics.lock().iter().any(|t| &**t == topic)
        });
        for addr in &found {
            addr.do_send(messages::LeaveTopic(topic.into()));
        }
        found.len()
    }

    fn sessions_of(&self, user: &str, topic: &str) -> Vec<SessionId> {
        let sockets = self.inner.sockets.lock();
        sockets
            .iter()
            .filter(|(_, (shared, addr))| {
                addr.connected()
                    && shared.identity.lock().user_id() == Some(user)
                    && shared.topics.lock().iter().any(|t| &**t == topic)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn protocol(&self) -> &'static str {
        "cettia"
    }

    fn count(&self) -> usize {
        self.counts().0
    }
}

impl Cettia {
    fn select(&self, matches: impl Fn(&SocketShared) -> bool) -> Vec<Addr<SocketActor>> {
        let sockets = self.inner.sockets.lock();
        sockets
            .values()
            .filter(|(shared, addr)| addr.connected() && matches(shared))
            .map(|(_, addr)| addr.clone())
            .collect()
    }
}
