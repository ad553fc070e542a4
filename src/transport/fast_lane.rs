//! A connection's fast lane: while a WebSocket client is caught up with its topic, the topic
//! writes its frames straight to the socket (see [`DirectWrite`]).
//!
//! The connection actor lends the lane when nothing is pending (its socket has room, its cursor
//! is the topic's last sequence) and takes it back whenever it needs its cursor or its socket
//! (any message, timer or reconnect). While the lane is lent, the cursor lives here, under a
//! lock the topic and the actor share; the topic closes the lane itself at the first message
//! it cannot write in order, which then goes to the actor as usual.
use std::sync::Arc;

use actix_http::ws::OpCode;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::ws::{Outbox, Outcome};
use crate::node::{Node, Stats};
use crate::protocol::atmosphere::Framing;
use crate::topic::{DirectWrite, Envelope, SessionId};

/// One connection's lane.
pub struct FastLane {
    session: SessionId,
    node: Arc<Node>,
    lane: Mutex<Lane>,
}

/// The lane's state.
struct Lane {
    /// The topic may write (the actor lent the lane and nothing went wrong since).
    open: bool,
    /// The actor lent the lane and has not taken it back: `cursor` is the truth.
    lent: bool,
    epoch: u64,
    cursor: u64,
    /// When the topic last wrote a frame (the actor's heartbeat timer counts from it).
    last_write: Option<Instant>,
    outbox: Option<Outbox>,
    framing: Framing,
}

/// What the actor gets back when it takes the lane.
pub struct Returned {
    pub cursor: u64,
    pub last_write: Option<Instant>,
}

// === impl FastLane ===

impl FastLane {
    pub fn new(session: SessionId, node: Arc<Node>, framing: Framing) -> Self {
        FastLane {
            session,
            node,
            lane: Mutex::new(Lane {
                open: false,
                lent: false,
                epoch: 0,
                cursor: 0,
                last_write: None,
                outbox: None,
                framing,
            }),
        }
    }

    /// Lend the lane: the client has everything up to `cursor` (in `epoch`), and frames of
    /// `framing` may be written to `outbox`.
    pub fn lend(&self, outbox: &Outbox, framing: Framing, epoch: u64, cursor: u64) {
        let mut lane = self.lane.lock();
        lane.open = true;
        lane.lent = true;
        lane.epoch = epoch;
        lane.cursor = cursor;
        lane.last_write = None;
        lane.framing = framing;
        lane.outbox = Some(outbox.clone());
    }

    /// Take the lane back; `None` if it was not lent.
    pub fn take_back(&self) -> Option<Returned> {
        let mut lane = self.lane.lock();
        if !lane.lent {
            return None;
        }
        lane.open = false;
        lane.lent = false;
        lane.outbox = None;
        Some(Returned {
            cursor: lane.cursor,
            last_write: lane.last_write.take(),
        })
    }
}

impl DirectWrite for FastLane {
    fn try_deliver(&self, epoch: u64, envelope: &Envelope) -> bool {
        let mut lane = self.lane.lock();
        if !lane.open {
            return false;
        }
        if lane.epoch != epoch || envelope.seq != lane.cursor + 1 {
            lane.open = false;
            return false;
        }
        if !envelope.audience.includes(&self.session) {
            lane.cursor = envelope.seq;
            return true;
        }
        let framing = lane.framing;
        let frame = envelope.frame(framing.index(), |text| framing.encode(text));
        let outcome = match &lane.outbox {
            Some(outbox) => outbox.send(OpCode::Text, frame.as_bytes()),
            None => Outcome::Closed,
        };
        match outcome {
            Outcome::Accepted => {
                lane.cursor = envelope.seq;
                lane.last_write = Some(Instant::now());
                Stats::add(&self.node.stats.delivered, 1);
                true
            }
            // The actor sees the same outcome when it writes, and applies its policy.
            Outcome::Full | Outcome::Closed => {
                lane.open = false;
                false
            }
        }
    }
}
