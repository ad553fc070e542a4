//! Composition: the edge builds the node, and in a cluster the Redis broker under it. Nothing
//! below the edge knows which broker it got.
use std::sync::Arc;

use crate::cluster::{RedisBroker, RedisSettings};
use crate::config::Config;
use crate::node::Node;
use crate::session::ConfigError;
use crate::topic::{StoreError, TopicRegistry};

/// Why a node of a cluster did not start: Redis (retried) or its configuration (not).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Node {
    /// A node of a cluster: the Redis broker at `config.redis_url`, which must be reachable now.
    /// Its topics take their numbering and shared history from the same broker.
    pub async fn clustered(config: Config) -> Result<Arc<Node>, StartError> {
        let topics = TopicRegistry::new(config.history_limits());
        let limits = config.history_limits();
        let settings = RedisSettings {
            urls: config
                .redis_url
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(|url| url.trim().to_string())
                .filter(|url| !url.is_empty())
                .collect(),
            cluster: config.redis_cluster,
            node_id: Node::id_for(&config),
            history_messages: limits.max_messages,
            history_age: limits.max_age,
            session_ttl: config.session_ttl(),
            webhooks: config.webhook_url.is_some(),
        };
        let broker = RedisBroker::connect(settings.clone(), topics.clone()).await?;
        topics.set_cluster(broker.clone());
        let mut config = config;
        // The broker and the node must answer to the same id.
        config.node_id = Some(settings.node_id);
        // Session ids issued on one node must hold on every other.
        if config.session_secret.is_none() {
            let candidate = crate::session::random_secret();
            config.session_secret = Some(broker.shared_secret(&candidate).await?);
        }
        let node = Node::with_broker(config, topics, broker.clone())?;
        // Presence is shared through the same Redis: every node counts its own clients there.
        node.presence.share(broker.clone());
        // So are webhook events: any node delivers them, and speaks for a node that died.
        node.webhooks.share(broker);
        Ok(node)
    }
}
