//! Transports: protocol-blind I/O for the session actors, and the one contract they write by.
//!
//! A session writes frames into a [`Sink`] without waiting: a WebSocket's [`ws::Outbox`] or a
//! streaming [`body::Body`]. A full sink answers [`WriteOutcome::Full`] and the session waits
//! with [`writable::WaitWritable`]; a long-poll is parked in a [`long_poll::Parked`] until there
//! is something to answer. Nothing here knows topics, protocols or the node: this module
//! imports no other module of the crate.
pub mod body;
pub mod long_poll;
mod sink;
pub mod writable;
mod write;
pub mod ws;

pub use sink::Sink;
pub use write::WriteOutcome;
