//! Prometheus metrics, served at `GET /metrics` in the text format, every name prefixed
//! `nimbus_`.
//!
//! Counters on the delivery path stay the plain atomics of the node's `Stats` (one relaxed
//! add per delivery); the edge (`server/metrics.rs`) reads them at scrape time into a registry
//! built for that scrape, with the labelled families kept here (auth failures by reason, limit hits by limit), the sessions
//! by protocol and transport ([`OnTransport`], moved by each session as its transport changes),
//! and two latency histograms observed once per message or round trip, never per delivery:
//! publish-to-write (kept by the topics) and the Redis round trip (kept by the cluster bridge).
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::transport::TransportKind;

/// A label set of one `name` label (`reason`, `limit`, ...).
type Labels = Vec<(&'static str, &'static str)>;

/// The labelled counters of a node; clones count into the same families.
#[derive(Default, Clone)]
pub struct Metrics {
    auth_failures: Family<Labels, Counter>,
    limit_hits: Family<Labels, Counter>,
    permission_denials: Family<Labels, Counter>,
    /// Webhook events by outcome: `delivered`, `failed` (an attempt; retried), `dropped`.
    webhook_events: Family<Labels, Counter>,
    /// Sessions by protocol and the transport that carries them now (or carried them last).
    transports: Arc<TransportGauges>,
}

/// The two session protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Atmosphere = 0,
    Cettia = 1,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Atmosphere => "atmosphere",
            Protocol::Cettia => "cettia",
        }
    }
}

/// Sessions per protocol and transport: one atomic each, moved at attach, not per message.
#[derive(Default)]
struct TransportGauges {
    open: [[AtomicI64; 4]; 2],
}

/// A session's place in the node's transport gauges: [`OnTransport::set`] when a transport of
/// some kind attaches; dropping it (the session ends) takes the session out.
pub struct OnTransport {
    gauges: Arc<TransportGauges>,
    protocol: Protocol,
    now: Option<TransportKind>,
}

// === impl OnTransport ===

impl OnTransport {
    /// A session of `protocol` counted in `metrics`, on no transport yet.
    pub fn new(metrics: &Metrics, protocol: Protocol) -> Self {
        OnTransport {
            gauges: metrics.transports.clone(),
            protocol,
            now: None,
        }
    }

    /// The session is carried by `kind` now.
    pub fn set(&mut self, kind: TransportKind) {
        if self.now == Some(kind) {
            return;
        }
        self.leave();
        self.gauge(kind).fetch_add(1, Ordering::Relaxed);
        self.now = Some(kind);
    }

    fn gauge(&self, kind: TransportKind) -> &AtomicI64 {
        &self.gauges.open[self.protocol as usize][kind as usize]
    }

    fn leave(&mut self) {
        if let Some(kind) = self.now.take() {
            self.gauge(kind).fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for OnTransport {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A latency histogram in seconds, 0.5 ms to about 16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

// === impl Metrics ===

impl Metrics {
    /// Count a refused or ended identity: `reason` is `missing`, `expired`, `invalid`,
    /// `foreign_session` or `expired_live` (a live connection whose token ran out).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Count a request or client stopped by a limit.
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&vec![("limit", limit)]).inc();
    }

    /// Count `n` webhook events that were `delivered`, `failed` an attempt, or were `dropped`.
    pub fn webhook_events(&self, outcome: &'static str, n: u64) {
        self.webhook_events
            .get_or_create(&vec![("outcome", outcome)])
            .inc_by(n);
    }

    /// How many webhook events had `outcome` so far.
    pub fn webhook_events_count(&self, outcome: &'static str) -> u64 {
        self.webhook_events
            .get_or_create(&vec![("outcome", outcome)])
            .get()
    }

    /// Register the families kept here (sessions by transport, refusals) for one scrape.
    pub fn register(&self, registry: &mut Registry) {
        let open = Family::<Labels, Gauge>::default();
        for protocol in [Protocol::Atmosphere, Protocol::Cettia] {
            for kind in TransportKind::ALL {
                let n =
                    self.transports.open[protocol as usize][kind as usize].load(Ordering::Relaxed);
                open.get_or_create(&vec![
                    ("protocol", protocol.name()),
                    ("transport", kind.name()),
                ])
                .set(n);
            }
        }
        registry.register(
            "sessions_open",
            "Client sessions on this node by protocol and the transport that carries them now \
             (or did last, between two long-polls)",
            open,
        );
        registry.register(
            "auth_failures",
            "Clients refused or ended for their identity, by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "limit_hits",
            "Requests and clients stopped by a limit, by limit",
            self.limit_hits.clone(),
        );
        registry.register(
            "webhook_events",
            "Backend webhook events by outcome (delivered, failed attempts, dropped)",
            self.webhook_events.clone(),
        );
        registry.register(
            "permission_denials",
            "Subscriptions and publishes a topic's namespace refused, by action",
            self.permission_denials.clone(),
        );
    }

    /// Count an action a topic's namespace refused (`subscribe` or `publish`).
    pub fn permission_denied(&self, action: &'static str) {
        self.permission_denials
            .get_or_create(&vec![("action", action)])
            .inc();
    }
}
