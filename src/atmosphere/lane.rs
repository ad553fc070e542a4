//! The Atmosphere WebSocket fast lane: while a client is caught up with its topic, the topic
//! writes each message's shared frame straight to the client's WebSocket (see
//! [`crate::topic::DirectWrite`]), with no message to the connection actor.
//!
//! The lane lives in the WebSocket's outbox, under the WebSocket's lock; the connection lends it
//! when nothing is pending and takes it back before it reads its cursor or writes itself.
use std::sync::Arc;

use bytestring::ByteString;
use tokio::time::Instant;

use crate::node::{Node, Stats};
use crate::protocol::atmosphere::Framing;
use crate::topic::{DirectWrite, Envelope, SessionId};
use crate::transport::ws::{whole_text_frame, Shared};
use crate::transport::WriteOutcome;

/// The lane's state while lent: the client has every message up to `cursor` (in topic
/// `epoch`), and the topic may write the next ones in `framing`.
pub struct Lane {
    /// The topic may write (cleared at the first message it cannot write).
    pub open: bool,
    pub session: SessionId,
    pub node: Arc<Node>,
    pub framing: Framing,
    pub epoch: u64,
    pub cursor: u64,
    /// When the last message the topic wrote was accepted by the topic.
    pub last_write: Option<Instant>,
}

impl DirectWrite for Shared<Lane> {
    fn try_deliver(&self, epoch: u64, envelope: &Envelope) -> bool {
        self.through_lane(|lane, writer| {
            if !lane.open {
                return false;
            }
            if lane.epoch != epoch || envelope.seq != lane.cursor + 1 {
                lane.open = false;
                return false;
            }
            if !envelope.audience.includes(&lane.session) {
                lane.cursor = envelope.seq;
                return true;
            }
            let framing = lane.framing;
            let frame = envelope.wrapped(framing.index(), || {
                whole_text_frame(atmosphere_frame(envelope, framing).as_bytes())
            });
            // Full or closed: the lane closes and the message goes to the actor, which sees
            // the same outcome when it writes and applies its policy.
            if writer.write_whole(frame) != WriteOutcome::Written {
                lane.open = false;
                return false;
            }
            lane.cursor = envelope.seq;
            lane.last_write = Some(envelope.accepted_at);
            Stats::add(&lane.node.stats.delivered, 1);
            true
        })
    }
}

/// The envelope's frame in `framing`, encoded by the first recipient that needs it and shared
/// by the others (the connection's writes and the topic's direct writes alike).
pub fn atmosphere_frame(envelope: &Envelope, framing: Framing) -> &ByteString {
    envelope.frame(framing.index(), |text| framing.encode(text))
}
