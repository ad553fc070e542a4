//! Wire protocols: pure codecs with no I/O.
//!
//! A protocol reads a request into protocol-neutral options (which transport, which session,
//! how to frame) and encodes outgoing messages into the exact bytes its clients expect. The
//! connection actors in [`crate::transport`] stay blind to the protocol beyond these calls.
pub mod atmosphere;
pub mod cettia;
pub mod vibe;
