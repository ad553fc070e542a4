//! What a socket actor is told: by its transports (attach, a poll, a client message, the end
//! of a transport), by the application (send, reply, join, close) and by the cluster (hand
//! over, a client event POSTed to another node).
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{InboundAck, ReplyCallback};
use crate::protocol::cettia::{Value, WireMessage};
use crate::session::InboundError;
use crate::topic::TopicId;
use crate::transport::body::Body;
use crate::transport::Sink;

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
    /// Which transport it is (for the node's gauges).
    pub kind: crate::transport::TransportKind,
    /// For response bodies: tells when the client went away.
    pub body: Option<Body>,
    pub transport_id: Option<Arc<str>>,
    /// Vibe: the heartbeat the client chose.
    pub heartbeat_ms: Option<u64>,
}

/// Attach a long-poll transport.
#[derive(Message)]
#[rtype(result = "AttachedLongPoll")]
pub struct AttachLongPoll {
    pub transport_id: Arc<str>,
    pub jsonp: Option<String>,
    pub heartbeat_ms: Option<u64>,
    /// The transport was opened on another node and continues here: no new handshake, no
    /// `open` (its client sees one transport).
    pub continued: bool,
}

/// A long-poll transport attached: its generation and, for a new transport of a clustered
/// socket, the writes another node needs to continue it (the socket's record and which socket
/// the transport belongs to). The open is answered only once they are done: the client polls
/// right after it, and that poll may land on any node.
#[derive(MessageResponse)]
pub struct AttachedLongPoll {
    pub generation: u64,
    pub records_saved: Option<BoxFuture<'static, ()>>,
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

/// The backend API disconnects the socket: its transport closes (a WebSocket with `1000`,
/// "disconnected by the server").
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect;

/// Join a topic: its messages reach the socket as `message` events, after the topic's last
/// `history` messages (history on join).
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinTopic {
    pub topic: crate::session::Cleared,
    pub history: usize,
    /// The socket also receives the topic's presence notices, as `presence` events.
    pub presence: bool,
}

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

/// Who the socket's client is on its newest request: its transport ends when that identity's
/// token expires.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Identify(pub crate::session::Identity);
