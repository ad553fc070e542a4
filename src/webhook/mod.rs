//! Backend webhooks: the node tells the application's backend when users come and go.
//!
//! Four events, all from presence (so only topics whose namespace keeps presence count):
//! `joined` and `left` when a user becomes or stops being a member of a topic, `online` and
//! `offline` when a user becomes a member of its first topic or leaves its last one, anywhere
//! in the cluster. Anonymous clients make no events.
//!
//! Delivery is at least once: events wait in a queue until the backend answers a POST of them
//! with 2xx, retried with exponential backoff (0.5 s doubling to 8 s) while it does not. Each
//! event carries an `id` the backend deduplicates by (a retry after a lost answer repeats ids,
//! never makes new ones). Every POST is signed: `X-Nimbus-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>" under --webhook-secret>`.
//!
//! Alone, the queue is this node's memory ([`Local`], bounded). In a cluster it is a Redis
//! stream every node reads as one consumer group ([`Source`], the Redis bridge): the scripts
//! that change the cluster's presence queue the events, so a member of a node killed with
//! `kill -9` leaves through whichever node reaps it, and what a node took but did not deliver
//! before it died is claimed by another after [`CLAIM_AFTER`].
mod deliver;
mod local;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::topic::StoreError;

pub use deliver::signature;
pub use local::{Local, MAX_QUEUED};

/// Events taken by a node that stopped answering are claimed by another node after this long.
pub const CLAIM_AFTER: Duration = Duration::from_secs(30);
/// Most events in one POST.
pub const BATCH: usize = 100;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Online,
    Offline,
    Joined,
    Left,
}

impl Kind {
    /// The events of a member entering and leaving `topic` (the node's [`ONLINE`] pseudo-topic
    /// stands for "any topic").
    pub fn pair(topic: &str) -> (Kind, Kind) {
        if topic == ONLINE {
            (Kind::Online, Kind::Offline)
        } else {
            (Kind::Joined, Kind::Left)
        }
    }
}

/// The pseudo-topic presence counts a user's memberships of every topic in, for `online` and
/// `offline` (a real topic starts with `/`).
pub const ONLINE: &str = "online";

/// One event, as the backend receives it (`id` set by the queue that holds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Given by the queue (in the cluster's stream, the entry id, so not stored in the entry).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub user: String,
    /// The topic (`joined`, `left`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The member's public info from its token (`joined`, `online`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// When it happened, Unix milliseconds.
    pub at: u64,
    /// The node that held the user's connections.
    pub node: String,
}

impl Event {
    /// The event of `user` entering (`entered`) or leaving `topic` (see [`Kind::pair`]).
    pub fn new(topic: &str, user: &str, entered: bool, info: Option<&Value>, node: &str) -> Self {
        let (enter, leave) = Kind::pair(topic);
        Event {
            id: String::new(),
            kind: if entered { enter } else { leave },
            user: user.to_string(),
            topic: (topic != ONLINE).then(|| topic.to_string()),
            info: if entered { info.cloned() } else { None },
            at: unix_ms(),
            node: node.to_string(),
        }
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where events wait for delivery: taken (and kept) until [`Source::done`] with their ids.
pub trait Source: Send + Sync + 'static {
    /// Up to `max` events not yet delivered, oldest first; waits a little (well under a second)
    /// when there are none, then answers empty.
    fn take(&self, max: usize) -> BoxFuture<'_, Result<Vec<Event>, StoreError>>;

    /// The backend has these.
    fn done(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Where the backend is and how to sign for it (`--webhook-url`, `--webhook-secret`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub secret: String,
    /// How long one POST may take.
    pub timeout: Duration,
}

/// The node's webhooks: off, or a backend and the queue its events wait in.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    settings: Settings,
    node: String,
    local: Arc<Local>,
    /// The cluster's queue, when the node has one (otherwise `local`).
    shared: OnceLock<Arc<dyn Source>>,
    metrics: Metrics,
}

impl Webhooks {
    /// Webhooks to `settings` (none: off) for node `node`.
    pub fn new(settings: Option<Settings>, node: &str, metrics: Metrics) -> Self {
        Webhooks {
            inner: settings.map(|settings| {
                Arc::new(Inner {
                    settings,
                    node: node.to_string(),
                    local: Arc::new(Local::new(metrics.clone())),
                    shared: OnceLock::new(),
                    metrics,
                })
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A node alone: queue the event of `user` entering or leaving `topic` (in a cluster the
    /// presence scripts queue it in Redis instead).
    pub fn record(&self, topic: &str, user: &str, entered: bool, info: Option<&Value>) {
        if let Some(inner) = &self.inner {
            let event = Event::new(topic, user, entered, info, &inner.node);
            inner.local.push(event);
        }
    }

    /// Deliver from the cluster's queue rather than this node's memory.
    pub fn share(&self, source: Arc<dyn Source>) {
        if let Some(inner) = &self.inner {
            let _ = inner.shared.set(source);
        }
    }

    /// Start delivering (once, inside the node's runtime; after [`Webhooks::share`] if
    /// clustered). The task ends when the node is dropped.
    pub fn start(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let source: Arc<dyn Source> = match inner.shared.get() {
            Some(shared) => shared.clone(),
            None => inner.local.clone(),
        };
        let weak = Arc::downgrade(inner);
        tokio::spawn(deliver::run(
            weak,
            source,
            inner.settings.clone(),
            inner.metrics.clone(),
        ));
    }
}
