//! The in-process broker: a single node, no external service.

use super::Broker;
use crate::topic::{Audience, Message, PublishError, TopicRegistry};

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
    fn publish(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> Result<(), PublishError> {
        self.topics.publish(topic, audience, message)
    }
}
