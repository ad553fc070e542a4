//! Atmosphere sessions, and the Rust API applications build on them.
//!
//! Every path Nimbus does not reserve is an Atmosphere topic. A client (an atmosphere.js
//! tracking id) is one [`connection::Connection`] actor on this node, whatever transport
//! carries it: WebSocket, SSE, HTTP streaming or long-polling. An [`Atmosphere`] is the
//! protocol's server on one node: it owns the connections and the application's hooks, in
//! the shape of Atmosphere's own `@ManagedService` (`@Ready`, `@Message`, `@Disconnect`):
//!
//! - [`Atmosphere::on_open`]: a client opened (its connection joined its topic);
//! - [`Atmosphere::on_message`]: a client sent a message; the hook accepts it, transforms it
//!   or refuses it ([`Verdict`]). Accepted messages are published to the client's topic,
//!   where every Atmosphere and Cettia client of it receives them: with no hook at all this
//!   is the stock echo-broadcast of the `nimbus` binary;
//! - [`Atmosphere::on_leave`]: the client left: it said so, its window to reconnect ran out,
//!   or (long-polling) it stopped polling. Once per client and node.
//!
//! and sends to a client ([`Client::send`]) or to a topic ([`Atmosphere::publish`]), through
//! the broker, so that they reach the client on whichever node serves it.
//!
//! ```no_run
//! # use nimbus::atmosphere::{Atmosphere, Verdict};
//! # fn app(node: std::sync::Arc<nimbus::node::Node>) {
//! let atmosphere = Atmosphere::new(node);
//! atmosphere.on_message(|_client, text| match text.len() {
//!     0..=280 => Verdict::Accept,
//!     _ => Verdict::Refuse("messages are 280 bytes at most".into()),
//! });
//! atmosphere.on_leave(|client| {
//!     let _ = client.server().publish(client.topic(), &format!("{} left", client.id()));
//! });
//! # }
//! ```
//!
//! Hooks run on this node, for the clients this node serves: in a cluster without sticky
//! sessions a long-polling client may be served by several nodes in turn, and each node's
//! hooks see it open and leave.
mod connection;
mod handlers;
pub mod http;
mod lane;
mod long_polling;
pub mod messages;
mod polling;
mod registry;
mod streaming;
mod websocket;

use std::sync::Arc;

use actix::Addr;
use bytestring::ByteString;
use parking_lot::RwLock;

pub use connection::Connection;
pub use lane::atmosphere_frame;
use registry::ConnectionRegistry;

use crate::node::{Node, Stats};
use crate::protocol::atmosphere::frame::PADDING;
use crate::session::{Identity, InboundError, LocalSessions};
use crate::topic::{Audience, Message, PublishError, SessionId, TopicId};

/// What an `on_message` hook decides about a client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it as it is (to the next hook, then to the topic).
    Accept,
    /// Publish this text instead.
    Transform(String),
    /// Publish nothing; the client is told why (a POST gets `403` with the reason, a
    /// WebSocket closes with `1008` and the reason).
    Refuse(String),
}

type ClientHook = Arc<dyn Fn(&Client) + Send + Sync>;
type MessageHook = Arc<dyn Fn(&Client, &str) -> Verdict + Send + Sync>;

/// The hooks of an application.
#[derive(Default, Clone)]
struct Hooks {
    on_open: Vec<ClientHook>,
    on_message: Vec<MessageHook>,
    on_leave: Vec<ClientHook>,
}

/// The Atmosphere server of one node. Cheap to clone.
#[derive(Clone)]
pub struct Atmosphere {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<Node>,
    hooks: RwLock<Arc<Hooks>>,
    connections: ConnectionRegistry,
}

/// One Atmosphere client, as the application's hooks see it.
#[derive(Clone)]
pub struct Client {
    id: SessionId,
    topic: TopicId,
    server: Atmosphere,
    /// Who the client is (anonymous without a token).
    identity: Identity,
}

// === impl Atmosphere ===

impl Atmosphere {
    /// A server without hooks: every client message is published to its topic.
    pub fn new(node: Arc<Node>) -> Self {
        Atmosphere {
            inner: Arc::new(Inner {
                node,
                hooks: RwLock::new(Arc::new(Hooks::default())),
                connections: ConnectionRegistry::default(),
            }),
        }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.inner.node
    }

    fn update(&self, change: impl FnOnce(&mut Hooks)) {
        let mut hooks = self.inner.hooks.write();
        change(Arc::make_mut(&mut hooks));
    }

    fn hooks(&self) -> Arc<Hooks> {
        self.inner.hooks.read().clone()
    }

    /// Called once when a client opens: its connection on this node has joined its topic.
    pub fn on_open(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        self.update(|h| h.on_open.push(Arc::new(f)));
    }

    /// Called for every message a client sends (heartbeats and empty messages excluded),
    /// hooks in the order they were added, each seeing what the one before let through.
    pub fn on_message(&self, f: impl Fn(&Client, &str) -> Verdict + Send + Sync + 'static) {
        self.update(|h| h.on_message.push(Arc::new(f)));
    }

    /// Called once when a client leaves this node (see the module's documentation).
    pub fn on_leave(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        self.update(|h| h.on_leave.push(Arc::new(f)));
    }

    /// Publish `text` to every client of `topic`, on every node.
    pub fn publish(&self, topic: &str, text: &str) -> Result<(), PublishError> {
        self.send(topic, Audience::All, Message::text(ByteString::from(text)))
    }

    /// A live client of this node.
    pub fn client(&self, id: &str) -> Option<Client> {
        let topic = self.inner.connections.topic_of(id)?;
        Some(Client::new(id.into(), topic, self.clone()))
    }

    /// Clients this node serves now.
    pub fn len(&self) -> usize {
        self.inner.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live connection (for operator actions).
    pub fn connections(&self) -> Vec<Addr<Connection>> {
        self.inner.connections.all()
    }

    fn send(&self, topic: &str, audience: Audience, message: Message) -> Result<(), PublishError> {
        self.node().broker.publish(topic, audience, message)?;
        Stats::add(&self.node().stats.published, 1);
        Ok(())
    }

    /// What a client's message publishes: nothing for heartbeats (swallowed and counted) and
    /// empty messages (they carry nothing for anyone), otherwise what the hooks let through.
    pub(crate) fn judge(
        &self,
        from: &Client,
        text: ByteString,
    ) -> Result<Option<Message>, InboundError> {
        if &*text == PADDING {
            Stats::add(&self.node().stats.client_heartbeats, 1);
            return Ok(None);
        }
        if text.is_empty() {
            return Ok(None);
        }
        // A client without a tracking id (a plain POST) paid its rate at the edge.
        let paid = u32::from(from.id().is_empty());
        self.node()
            .gate
            .publish(&from.identity, from.id(), &[from.topic()], paid, text.len())?;
        let mut text = text;
        for hook in self.hooks().on_message.iter() {
            match hook(from, &text) {
                Verdict::Accept => {}
                Verdict::Transform(new) => text = ByteString::from(new),
                Verdict::Refuse(why) => return Err(InboundError::Refused(why)),
            }
        }
        Ok(Some(Message { text, json: false }))
    }

    /// A client's message, judged and published to its topic.
    pub(crate) fn receive(&self, from: &Client, text: ByteString) -> Result<(), InboundError> {
        if let Some(message) = self.judge(from, text)? {
            self.send(from.topic(), Audience::All, message)?;
        }
        Ok(())
    }

    pub(crate) fn opened(&self, client: &Client) {
        for hook in self.hooks().on_open.iter() {
            hook(client);
        }
    }

    pub(crate) fn left(&self, client: &Client) {
        for hook in self.hooks().on_leave.iter() {
            hook(client);
        }
    }

    pub(crate) fn registry(&self) -> &ConnectionRegistry {
        &self.inner.connections
    }

    /// Forget connection `id` if it still maps to `addr`.
    pub(crate) fn forget(&self, id: &str, addr: &Addr<Connection>) {
        self.inner.connections.remove(id, addr);
    }
}

// === impl Client ===

impl Client {
    pub(crate) fn new(id: SessionId, topic: TopicId, server: Atmosphere) -> Self {
        Client {
            id,
            topic,
            server,
            identity: Identity::anonymous(),
        }
    }

    pub(crate) fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// The signed-in user (its token's `sub`); `None` when anonymous.
    pub fn user(&self) -> Option<&str> {
        self.identity.user_id()
    }

    /// Who the client is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The client's tracking id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The client's topic (its request path).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The server the client belongs to.
    pub fn server(&self) -> &Atmosphere {
        &self.server
    }

    /// Send `text` to this client alone, through its topic (so it reaches it on whichever
    /// node serves it, and in order with the topic's other messages).
    pub fn send(&self, text: &str) -> Result<(), PublishError> {
        let message = Message::text(ByteString::from(text));
        self.server
            .send(&self.topic, Audience::One(self.id.clone()), message)
    }

    /// Close the client's connection on this node (its transport ends, `on_leave` fires).
    pub fn close(&self) {
        if let Some(connection) = self.server.inner.connections.get(&self.id) {
            connection.do_send(messages::Close);
        }
    }
}

// === impl LocalSessions for Atmosphere ===

/// The backend API's commands on this node's Atmosphere clients. A disconnected client's
/// connection ends (its `on_leave` fires); atmosphere.js reconnects by itself, so a user to keep
/// out must also lose its token.
impl LocalSessions for Atmosphere {
    fn disconnect(&self, user: Option<&str>, session: Option<&str>) -> usize {
        let found = self.inner.connections.select(|id, _, u| {
            session.is_some_and(|s| s == id) || user.is_some_and(|wanted| u == Some(wanted))
        });
        for (_, connection) in &found {
            connection.do_send(messages::Disconnect);
        }
        found.len()
    }

    /// An Atmosphere client has one topic: unsubscribing it ends its connection.
    fn unsubscribe(&self, user: &str, topic: &str) -> usize {
        let found = self
            .inner
            .connections
            .select(|_, t, u| t == topic && u == Some(user));
        for (_, connection) in &found {
            connection.do_send(messages::Close);
        }
        found.len()
    }

    fn sessions_of(&self, user: &str, topic: &str) -> Vec<SessionId> {
        self.inner
            .connections
            .select(|_, t, u| t == topic && u == Some(user))
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    fn protocol(&self) -> &'static str {
        "atmosphere"
    }

    fn count(&self) -> usize {
        self.len()
    }
}
