//! What one Nimbus node shares across its HTTP workers: configuration, topics, broker,
//! connections and counters.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::broker::{Broker, BrokerError, LocalBroker};
use crate::cluster::{RedisBroker, RedisSettings};
use crate::config::Config;
use crate::topic::TopicRegistry;
use crate::transport::ConnectionRegistry;

/// The node's shared state; cheap to clone behind an `Arc`.
pub struct Node {
    pub config: Config,
    /// Sent as `X-Nimbus-Node` on every response.
    pub id: String,
    pub topics: TopicRegistry,
    pub broker: Arc<dyn Broker>,
    pub connections: ConnectionRegistry,
    pub stats: Stats,
    /// Shutting down: not ready, handing clients to other nodes.
    draining: AtomicBool,
}

impl Node {
    /// A node with the in-process broker.
    pub fn new(config: Config) -> Arc<Self> {
        let id = Self::id_from(&config);
        let topics = TopicRegistry::new(config.history_limits());
        let broker = Arc::new(LocalBroker::new(topics.clone()));
        Self::assemble(config, id, topics, broker)
    }

    /// A node of a cluster: the Redis broker at `config.redis_url`, which must be reachable now.
    pub async fn clustered(config: Config) -> Result<Arc<Self>, BrokerError> {
        let id = Self::id_from(&config);
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
            node_id: id.clone(),
            history_messages: limits.max_messages,
            history_age: limits.max_age,
            session_ttl: config.session_ttl(),
        };
        let broker = RedisBroker::connect(settings, topics.clone()).await?;
        topics.set_cluster(broker.clone());
        Ok(Self::assemble(config, id, topics, broker))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn id_from(config: &Config) -> String {
        config.node_id.clone().unwrap_or_else(|| {
            format!("nimbus-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        })
    }

    fn assemble(
        config: Config,
        id: String,
        topics: TopicRegistry,
        broker: Arc<dyn Broker>,
    ) -> Arc<Self> {
        Arc::new(Node {
            config,
            id,
            topics,
            broker,
            connections: ConnectionRegistry::default(),
            stats: Stats::default(),
            draining: AtomicBool::new(false),
        })
    }
}

/// Counters of what the node did; served at `/_nimbus/stats` and logged where they matter.
#[derive(Default)]
pub struct Stats {
    /// Messages accepted from clients for publishing.
    pub published: AtomicU64,
    /// Frames handed to client transports (handshakes and heartbeats excluded).
    pub delivered: AtomicU64,
    /// Messages a client missed because the topic history had already dropped them.
    pub missed: AtomicU64,
    /// Connections closed by the slow-consumer policy.
    pub slow_consumers_dropped: AtomicU64,
    /// Client heartbeats swallowed.
    pub client_heartbeats: AtomicU64,
    /// WebSocket connections open now (Atmosphere and Cettia), closing ones included.
    pub websockets_open: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    pub node: String,
    /// Whether the node runs with a cluster broker, and whether that broker is reachable.
    pub clustered: bool,
    pub broker_ready: bool,
    pub connections: usize,
    pub topics: usize,
    pub published: u64,
    pub delivered: u64,
    pub missed: u64,
    pub slow_consumers_dropped: u64,
    pub client_heartbeats: u64,
    pub websockets_open: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Node {
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            node: self.id.clone(),
            clustered: self.broker.numbers_messages(),
            broker_ready: self.broker.is_ready(),
            connections: self.connections.len(),
            topics: self.topics.len(),
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            missed: s.missed.load(Ordering::Relaxed),
            slow_consumers_dropped: s.slow_consumers_dropped.load(Ordering::Relaxed),
            client_heartbeats: s.client_heartbeats.load(Ordering::Relaxed),
            websockets_open: s.websockets_open.load(Ordering::Relaxed),
        }
    }
}
