//! Transports: protocol-blind I/O for the session actors, and the one contract they write by.
//!
//! A session writes frames into a [`Sink`] without waiting: a WebSocket's [`ws::Outbox`] or a
//! streaming [`body::Body`]. A full sink answers [`WriteOutcome::Full`] and the session waits
//! with [`writable::WaitWritable`]; a long-poll is parked in a [`long_poll::Parked`] until there
//! is something to answer. Nothing here knows topics, protocols or the node: this module
//! imports no other module of the crate.
pub mod body;
mod client;
pub mod long_poll;
pub mod request_body;
mod sink;
pub mod writable;
mod write;
pub mod ws;

pub use client::{browser_secret, client_address, new_browser_cookie, BROWSER_COOKIE};
pub use sink::Sink;
pub use write::WriteOutcome;

/// Which of the four transports carries a session now (for the node's gauges and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    WebSocket,
    Sse,
    Streaming,
    LongPolling,
}

impl TransportKind {
    pub const ALL: [TransportKind; 4] = [
        TransportKind::WebSocket,
        TransportKind::Sse,
        TransportKind::Streaming,
        TransportKind::LongPolling,
    ];

    /// The name atmosphere.js gives it (`transport` option), used as the metric label.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::Streaming => "streaming",
            TransportKind::LongPolling => "long-polling",
        }
    }

    /// A pushing HTTP response's kind: SSE or plain streaming.
    pub fn of_body(sse: bool) -> Self {
        if sse {
            TransportKind::Sse
        } else {
            TransportKind::Streaming
        }
    }
}
