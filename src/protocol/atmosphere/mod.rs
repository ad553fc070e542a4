//! The Atmosphere protocol as `atmosphere.js` 5 speaks it.
//!
//! `request` reads the `X-Atmosphere-*` parameters (query string and headers, headers winning);
//! `frame` builds the handshake, `len|msg` frames and SSE events.
pub mod frame;
pub mod request;

pub use frame::{handshake, Framing};
pub use request::{AtmosphereRequest, RequestError, TransportKind};
