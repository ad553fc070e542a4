//! What one Nimbus node shares across its HTTP workers: configuration, topics, broker and
//! counters. The edge (`crate::server`) builds it; the sessions of both protocols read it.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::broker::{Broker, LocalBroker};
use crate::config::Config;
use crate::gate::{Access, ConfigError, Gate, Permissions};
use crate::topic::TopicRegistry;
use crate::transport::ws::WebSocketGauge;

/// The node's shared state; cheap to clone behind an `Arc`.
pub struct Node {
    pub config: Config,
    /// Sent as `X-Nimbus-Node` on every response.
    pub id: String,
    pub topics: TopicRegistry,
    pub broker: Arc<dyn Broker>,
    /// WebSockets open now, against `--max-websockets`.
    pub websockets: Arc<WebSocketGauge>,
    /// Every check a client meets: identity, session ids, permissions, limits.
    pub gate: Gate,
    pub stats: Stats,
    /// Labelled counters for `/metrics` (see `crate::metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Who is in each topic (this node's clients, and the cluster's when it has one).
    pub presence: crate::presence::Presence,
    /// The backend's events about who comes and goes (`--webhook-url`).
    pub webhooks: crate::webhook::Webhooks,
    /// Shutting down: not ready, handing clients to other nodes.
    draining: AtomicBool,
}

impl Node {
    /// A node with the in-process broker.
    pub fn new(config: Config) -> Result<Arc<Self>, ConfigError> {
        let topics = TopicRegistry::new(config.history_limits());
        let broker = Arc::new(LocalBroker::new(topics.clone()));
        Self::with_broker(config, topics, broker)
    }

    /// A node whose messages go through `broker` to `topics` (the edge builds the cluster's,
    /// see `crate::server::compose`). Token keys or a configuration file that cannot be used
    /// are an error: the node does not start.
    pub fn with_broker(
        config: Config,
        topics: TopicRegistry,
        broker: Arc<dyn Broker>,
    ) -> Result<Arc<Self>, ConfigError> {
        let metrics = crate::metrics::Metrics::default();
        let gate = Gate::new(
            Access::new(
                &config.key_settings(),
                config.session_ids,
                config.allow_anonymous,
                config.session_secret.clone(),
            )?,
            Permissions::load(config.config.as_deref())?,
            crate::gate::limits::Limits::new(config.limit_settings()),
            config.max_topics_per_connection,
            metrics.clone(),
        );
        let id = Self::id_for(&config);
        let webhooks =
            crate::webhook::Webhooks::new(config.webhook_settings(), &id, metrics.clone());
        let presence = crate::presence::Presence::new(topics.clone(), webhooks.clone());
        Ok(Arc::new(Node {
            gate,
            id,
            websockets: Arc::new(WebSocketGauge::new(config.websocket_limit())),
            config,
            topics,
            broker,
            stats: Stats::default(),
            metrics,
            presence,
            webhooks,
            draining: AtomicBool::new(false),
        }))
    }

    /// Whether messages are numbered by a cluster (and sessions kept where every node reads
    /// them) rather than by this node's topics.
    pub fn is_clustered(&self) -> bool {
        self.broker.numbers_messages()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The node's id: `--node-id`, or a fresh one.
    pub fn id_for(config: &Config) -> String {
        config.node_id.clone().unwrap_or_else(|| {
            format!("nimbus-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
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
    /// The counters now, with the node's `connections` (Atmosphere clients) counted by the edge.
    pub fn snapshot(&self, connections: usize) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            node: self.id.clone(),
            clustered: self.broker.numbers_messages(),
            broker_ready: self.broker.is_ready(),
            connections,
            topics: self.topics.len(),
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            missed: s.missed.load(Ordering::Relaxed),
            slow_consumers_dropped: s.slow_consumers_dropped.load(Ordering::Relaxed),
            client_heartbeats: s.client_heartbeats.load(Ordering::Relaxed),
            websockets_open: self.websockets.open(),
        }
    }
}
