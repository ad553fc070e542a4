//! `GET /metrics`: the node's Prometheus page, every name prefixed `nimbus_`.
//!
//! Built afresh for each scrape from what the node keeps: the plain atomic counters of the
//! delivery path ([`Stats`](crate::node::Stats)), the topics' gauges and latency histogram,
//! the broker's round trips, and the labelled families of [`crate::metrics::Metrics`].
use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::node::Node;

/// A label set of one `name` label.
type Labels = Vec<(&'static str, &'static str)>;

pub async fn metrics(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(render(&node))
}

/// The node's metrics in the Prometheus text format.
fn render(node: &Node) -> String {
    let mut registry = Registry::with_prefix("nimbus");
    register_counters(&mut registry, node);
    register_gauges(&mut registry, node);
    node.metrics.register(&mut registry);
    registry.register(
        "publish_to_write_seconds",
        "From a message's publishing (on any node) to its fan-out to this node's subscribers",
        node.topics.latency().clone(),
    );
    node.broker.register_metrics(&mut registry);
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
    let dropped = Family::<Labels, Counter>::default();
    dropped
        .get_or_create(&vec![("reason", "history_gone")])
        .inc_by(stats.missed.load(Ordering::Relaxed));
    dropped
        .get_or_create(&vec![("reason", "relay_queue_full")])
        .inc_by(node.broker.relays_dropped());
    registry.register(
        "deliveries_dropped",
        "Deliveries dropped, by reason: history_gone (the client never gets them: the history \
         no longer held them when it came back), relay_queue_full (this node fell behind the \
         cluster's relay; its topics fetched them back from the shared history)",
        dropped,
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
