//! Wire protocols: pure codecs with no I/O.
//!
//! A protocol reads a request into protocol-neutral options (which transport, which session,
//! how to frame) and encodes outgoing messages into the exact bytes its clients expect. The
//! session actors of `crate::atmosphere` and `crate::cettia` call them; the transports under
//! those stay blind to every protocol.
pub mod atmosphere;
pub mod cettia;
