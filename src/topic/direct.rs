//! Direct delivery: a member whose transport can take a frame without a message to its actor.
//!
//! A WebSocket client that is caught up with its topic lends the topic a way to write to its
//! socket; the topic then delivers by writing the shared frame to the socket itself, with no
//! actor message and no task wake-up per recipient. Anything out of the ordinary (the member
//! fell behind, its socket is full, it is reconnecting) makes the member refuse, and the
//! message goes to its actor as [`super::Deliver`], which serves it from the history.
use super::Envelope;

/// Implemented by members that can be written to directly.
pub trait DirectWrite: Send + Sync {
    /// Deliver `envelope`, numbered in topic `epoch`, now. Returns `false` when the member
    /// cannot take it directly; the topic then hands it to the member's actor.
    fn try_deliver(&self, epoch: u64, envelope: &Envelope) -> bool;
}
