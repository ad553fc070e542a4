//! Transports: the connection actors and the one contract every transport implements.
//!
//! A [`Connection`] actor is one logical client (an Atmosphere tracking id). It outlives the
//! transports attached to it: a long-polling client is one connection across many polls, and a
//! WebSocket, SSE or streaming client that reconnects with its tracking id re-attaches to the
//! same connection and resumes from its cursor. The per-transport modules turn an HTTP request
//! into an attachment; [`Sink`] is what the connection writes frames into.
mod connection;
pub mod long_polling;
mod registry;
mod sink;
pub mod sse_streaming;
pub mod websocket;
pub mod ws;

pub(crate) use connection::atmosphere_frame;
pub use connection::{
    client_message, publish_from_client, Attach, Close, Connection, Detach, DropTransport, Inbound,
    InboundError, Mode, Poll, PollReply,
};
pub use registry::ConnectionRegistry;
pub use sink::{Sink, WriteOutcome};
pub mod cettia;
