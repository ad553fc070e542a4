//! Prometheus metrics, served at `GET /metrics` in the text format, every name prefixed
//! `nimbus_`.
//!
//! Counters on the delivery path stay the plain atomics of [`crate::node::Stats`] (one relaxed
//! add per delivery); they are read at scrape time into a registry built for that scrape, with
//! the labelled families kept here (auth failures by reason, limit hits by limit).
use std::sync::atomic::Ordering;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::node::Node;

/// A label set of one `name` label (`reason`, `limit`, ...).
type Labels = Vec<(&'static str, &'static str)>;

/// The labelled counters of a node.
#[derive(Default)]
pub struct Metrics {
    auth_failures: Family<Labels, Counter>,
    limit_hits: Family<Labels, Counter>,
}

/// What the edge counts beyond the node: open sessions per protocol and transport.
#[derive(Debug, Default)]
pub struct Sessions {
    /// `(protocol, transport, open)`.
    pub open: Vec<(&'static str, &'static str, u64)>,
}

/// Count a refused or ended identity: `reason` is `missing`, `expired`, `invalid`,
/// `foreign_session` or `expired_live` (a live connection whose token ran out).
pub fn count_auth_failure(node: &Node, reason: &'static str) {
    node.metrics
        .auth_failures
        .get_or_create(&vec![("reason", reason)])
        .inc();
}

/// Count a request or client stopped by a limit.
pub fn count_limit_hit(node: &Node, limit: &'static str) {
    node.metrics
        .limit_hits
        .get_or_create(&vec![("limit", limit)])
        .inc();
}

/// The node's metrics in the Prometheus text format.
pub fn render(node: &Node, sessions: &Sessions) -> String {
    let mut registry = Registry::with_prefix("nimbus");
    register_counters(&mut registry, node);
    register_gauges(&mut registry, node);
    let open = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
    for (protocol, transport, n) in &sessions.open {
        open.get_or_create(&vec![("protocol", *protocol), ("transport", *transport)])
            .set(*n as i64);
    }
    registry.register(
        "sessions_open",
        "Client sessions on this node by protocol and current transport",
        open,
    );
    registry.register(
        "auth_failures",
        "Clients refused or ended for their identity, by reason",
        node.metrics.auth_failures.clone(),
    );
    registry.register(
        "limit_hits",
        "Requests and clients stopped by a limit, by limit",
        node.metrics.limit_hits.clone(),
    );
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// The delivery path's counters, read now.
fn register_counters(registry: &mut Registry, node: &Node) {
    let stats = &node.stats;
    let counter = |n: &std::sync::atomic::AtomicU64| ConstCounter::new(n.load(Ordering::Relaxed));
    registry.register(
        "messages_published",
        "Messages accepted from clients and the API for publishing",
        counter(&stats.published),
    );
    registry.register(
        "messages_delivered",
        "Messages written to client transports (handshakes and heartbeats excluded)",
        counter(&stats.delivered),
    );
    registry.register(
        "messages_missed",
        "Messages clients missed because the histories no longer held them",
        counter(&stats.missed),
    );
    registry.register(
        "slow_consumer_closes",
        "Transports closed by the slow-consumer policy",
        counter(&stats.slow_consumers_dropped),
    );
    registry.register(
        "client_heartbeats",
        "Client heartbeats received",
        counter(&stats.client_heartbeats),
    );
}

/// What the node holds now.
fn register_gauges(registry: &mut Registry, node: &Node) {
    registry.register(
        "topics",
        "Topics with a broadcaster on this node",
        ConstGauge::new(node.topics.len() as i64),
    );
    let budget = node.topics.budget();
    registry.register(
        "history_bytes",
        "Memory charged to the node's history budget (messages and their frames)",
        ConstGauge::new(budget.used() as i64),
    );
    registry.register(
        "history_budget_bytes",
        "The node's history budget (--history-budget-bytes)",
        ConstGauge::new(budget.max() as i64),
    );
    registry.register(
        "history_evictions",
        "Messages evicted from histories because the node was over its budget",
        ConstCounter::new(budget.evicted()),
    );
    registry.register(
        "websockets_open",
        "WebSockets open on this node",
        ConstGauge::new(node.websockets.open() as i64),
    );
    registry.register(
        "broker_ready",
        "1 when the broker (Redis in a cluster) is reachable",
        ConstGauge::new(i64::from(node.broker.is_ready())),
    );
}
