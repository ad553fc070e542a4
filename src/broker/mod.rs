//! The broker seam: how a published message reaches the topics of every node.
//!
//! Transports and topics never talk to Redis or to each other across nodes; they publish through
//! a [`Broker`]. The in-process broker (the embedded default) hands the message to this node's
//! topic; a cluster broker plugs in behind the same trait.
mod local;

pub use local::LocalBroker;

use crate::topic::{Audience, Message, PublishError};

/// Publishes messages to topics, on this node and (for cluster brokers) on every other node.
pub trait Broker: Send + Sync + 'static {
    /// Publish `message` to `topic` for `audience`. Returns once the message is accepted for
    /// delivery; an error means it was refused (the caller tells its client).
    fn publish(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> Result<(), PublishError>;

    /// Whether the broker can currently reach every node (`/readyz`).
    fn is_ready(&self) -> bool {
        true
    }
}
