//! What the connection actor is told: by its transports (attach, detach, a message, a poll),
//! by the application and by operators (drop the transport, close).
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::oneshot;

use super::lane::Lane;
use crate::broker::SessionRecord;
use crate::protocol::atmosphere::Framing;
use crate::session::InboundError;
use crate::transport::body::Body;
use crate::transport::Sink;

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
    pub sink: Sink<Lane>,
    pub mode: Mode,
    /// For response bodies: tells when the client went away.
    pub body: Option<Body>,
    /// Clustered: the session's record, telling where its client stands if another node
    /// served it last.
    pub resume: Option<SessionRecord>,
}

/// The transport of generation `0` went away (WebSocket closed, TCP closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach(pub u64);

/// A message from the client on its WebSocket.
#[derive(Message)]
#[rtype(result = "Result<(), InboundError>")]
pub struct Inbound(pub ByteString);

/// A long-poll request; answered on `reply` now or when something arrives.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll {
    pub request: PollRequest,
    pub reply: oneshot::Sender<PollReply>,
}

/// What one poll asks of its connection.
pub struct PollRequest {
    pub mode: Mode,
    /// The tracking-id `0` poll: answer with only the handshake.
    pub handshake_only: bool,
    /// The client is (re)connecting: start the body with a handshake.
    pub reconnect: bool,
    /// `X-Atmosphere-Session-Token` echoed by the client: the cursor it has acknowledged.
    pub session_token: Option<String>,
    /// Clustered: the session's record, for a client without a token.
    pub resume: Option<SessionRecord>,
}

/// The body of a long-poll response and the token that acknowledges it.
#[derive(Debug)]
pub struct PollReply {
    pub body: Bytes,
    pub session_token: String,
    /// Where the client stands once it has this body (the token, unencoded).
    pub epoch: u64,
    pub cursor: u64,
    /// The session's floor in `epoch` (see `Membership::acknowledge`).
    pub floor: u64,
}

/// Drop the current transport but keep the connection (and its cursor) for the reconnect
/// window: the client reconnects and resumes. Used by operators before maintenance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropTransport;

/// Who the client is on this request: the connection keeps the newest identity, and its
/// transport ends when that identity's token expires.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Identify(pub crate::session::Identity);

/// The client's departure (`X-Atmosphere-Transport=close`), or the application closing it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// The backend API disconnects the client: its transport closes (a WebSocket with `1000`,
/// "disconnected by the server") and its connection ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect;
