//! The in-process broker: a single node, no external service.
use bytestring::ByteString;

use super::Broker;
use crate::topic::{Audience, PublishError, TopicRegistry};

/// Delivers to this node's topics only.
pub struct LocalBroker {
    topics: TopicRegistry,
}

impl LocalBroker {
    pub fn new(topics: TopicRegistry) -> Self {
        LocalBroker { topics }
    }
}

impl Broker for LocalBroker {
    fn publish(&self, topic: &str, audience: Audience, text: ByteString) -> Result<(), PublishError> {
        self.topics.publish(topic, audience, text)
    }
}
