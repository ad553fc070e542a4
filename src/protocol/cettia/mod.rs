//! The Cettia 1.0 wire protocol: query parameters in, handshakes, events and transport frames
//! out, with Vibe 3.0.0-Alpha1 as a dialect ([`vibe`]: its own parameters and stream framing,
//! the same events). Pure codecs, no I/O; the socket actor and the HTTP handlers of
//! `crate::cettia` use them.
pub mod event;
pub mod framing;
pub mod request;
pub mod vibe;

pub use event::{Event, EventError, Value, WireMessage};
pub use request::{CettiaRequest, RequestError, TransportName, When};
