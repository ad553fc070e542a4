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

/// Which wire dialect a socket speaks: one server, two codecs. What differs between them is
/// asked of the dialect here, so the socket actor stays one state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Cettia 1.0 (`/cettia`): server-issued ids, handshakes, resumption.
    Cettia,
    /// Vibe 3.0.0-Alpha1 (`/vibe`): client-chosen ids, one transport per socket.
    Vibe,
}

impl Dialect {
    /// The id of a socket's first server event (the Vibe seed's is "1", as the Java server
    /// numbers them).
    pub fn first_event_id(self) -> u64 {
        match self {
            Dialect::Cettia => 0,
            Dialect::Vibe => 1,
        }
    }

    /// Every transport starts with a socket handshake announcing the id and the heartbeats.
    pub fn handshakes(self) -> bool {
        self == Dialect::Cettia
    }

    /// A socket outlives its transport: it waits the resume window for its client, keeps a
    /// record a cluster can continue it from, and can move between nodes.
    pub fn resumes(self) -> bool {
        self == Dialect::Cettia
    }

    /// Long-polls acknowledge events (`lastEventIds`): an answer carries every unacknowledged
    /// event, rather than one event per poll.
    pub fn acknowledges_events(self) -> bool {
        self == Dialect::Vibe
    }
}
