//! The Cettia 1.0 wire protocol: query parameters in, handshakes, events and transport frames
//! out. Pure codecs, no I/O; the socket actor (`transport::cettia`) and the HTTP handlers
//! (`server::cettia`) use them.
pub mod event;
pub mod framing;
pub mod request;

pub use event::{Event, EventError, Value, WireMessage};
pub use request::{CettiaRequest, RequestError, TransportName, When};
