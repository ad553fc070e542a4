//! Presence: who is in a topic. A member is a signed-in user (its connections to the topic
//! counted as one member) with the public `info` of its token; anonymous connections count
//! as clients only. Counts cost O(1) to read and member lists are read in pages (by user id,
//! after a cursor), so a room of 100,000 answers in one bounded round trip.
//!
//! Each node keeps the truth about its own clients here: per topic, its users with how many
//! connections each has on this node. Alone, that is all there is. In a cluster a node writes
//! its counts to the shared store ([`SharedPresence`], the Redis bridge) as absolute numbers
//! (`user u has n connections to topic t on this node`): writes coalesce, may be retried and
//! may arrive in any order without a member ever being counted twice or left behind. Every
//! node also beats; a node whose beat stops is reaped by the others, its members leaving once.
//!
//! Sessions enter through [`Presence::enter`], which returns a [`Present`] guard: dropping it
//! (the session left the topic, or ended) is the leave, so no path can forget one.
mod local;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Notify;

use crate::topic::{Message, StoreError, TopicId, TopicRegistry};
use crate::webhook::{Webhooks, ONLINE};

pub use local::Local;

/// How often a node writes what changed to the shared store (changes in between coalesce).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often a node beats in the shared store and looks for nodes whose beat stopped.
const BEAT_EVERY: Duration = Duration::from_secs(2);
/// Most member entries a page may hold.
pub const MAX_PAGE: usize = 1000;
/// Member entries in a page whose reader names no limit.
pub const DEFAULT_PAGE: usize = 100;

/// A topic's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Distinct signed-in users.
    pub users: u64,
    /// Connections, anonymous ones included.
    pub clients: u64,
}

/// One member of a topic.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Member {
    pub user: String,
    /// The public `info` of the member's token, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// A page of members in user-id order, and the cursor of the next page (`None` at the end).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Page {
    pub members: Vec<Member>,
    pub cursor: Option<String>,
}

/// Pseudo-topics counting every session by its client address and by its user, for the
/// connection caps (see [`Presence::tally`]). Real topics start with `/`, so no topic is one.
pub const BY_ADDRESS: &str = "connections:address";
pub const BY_USER: &str = "connections:user";

/// Whether `topic` is one of the connection tallies ([`BY_ADDRESS`], [`BY_USER`]): counted
/// like any topic, announced to no one (no notices, no webhook events).
pub fn is_tally(topic: &str) -> bool {
    topic == BY_ADDRESS || topic == BY_USER
}

/// The count a node holds for one user (or, `user` empty, its anonymous clients) in one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    pub topic: TopicId,
    /// Empty for the node's anonymous clients of the topic.
    pub user: Arc<str>,
    pub clients: u64,
    /// The member's public info (sent with the count that makes it a member).
    pub info: Option<Arc<Value>>,
}

/// The cluster's side of presence (the Redis bridge implements it).
pub trait SharedPresence: Send + Sync + 'static {
    /// Store this node's counts (absolute: the store applies the difference from what it held
    /// for this node).
    fn write(&self, counts: Vec<Count>) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Say this node is alive, and take the members of nodes whose beat stopped out of every
    /// topic (each such member leaves once, whichever node reaps it). Returns `true` when the
    /// store did not know this node (its first beat, or the store lost its data, or reaped it
    /// after a stall): the node then writes all its counts again.
    fn beat(&self) -> BoxFuture<'static, Result<bool, StoreError>>;

    /// The topic's counts, cluster-wide.
    fn stats(&self, topic: TopicId) -> BoxFuture<'static, Result<Stats, StoreError>>;

    /// The connections `user` has in `topic` in the whole cluster, and how many of them the
    /// store holds for this node (as last written).
    fn held(
        &self,
        topic: TopicId,
        user: Arc<str>,
    ) -> BoxFuture<'static, Result<(u64, u64), StoreError>>;

    /// Up to `limit` members after user id `after`, cluster-wide.
    fn page(
        &self,
        topic: TopicId,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Page, StoreError>>;
}

/// The notice a topic's members who asked for presence receive when `user` joins (with its
/// public `info`) or leaves: `{"nimbus": "presence", "event": "join" | "leave", "user", "info"?}`.
/// The cluster's scripts write the same shape.
pub fn notice(joined: bool, user: &str, info: Option<&Value>) -> Message {
    let mut event = serde_json::json!({
        "nimbus": "presence",
        "event": if joined { "join" } else { "leave" },
        "user": user,
    });
    if let (true, Some(info)) = (joined, info) {
        event["info"] = info.clone();
    }
    Message {
        text: event.to_string().into(),
        json: true,
    }
}

/// The node's presence: its own clients, and the cluster's store when it has one.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where join and leave notices go when the node is alone (in a cluster the store sends
    /// them, once, to every node).
    topics: TopicRegistry,
    /// The backend's events (alone, this node queues them; in a cluster the store does). With
    /// webhooks on, each membership of a user also counts in the [`ONLINE`] pseudo-topic.
    webhooks: Webhooks,
    /// [`ONLINE`] as a topic id, made once.
    online_topic: TopicId,
    local: Mutex<Local>,
    /// (topic, user) whose count changed since the last write to the shared store.
    dirty: Mutex<HashSet<(TopicId, Arc<str>)>>,
    shared: std::sync::OnceLock<Arc<dyn SharedPresence>>,
    wake: Notify,
}

/// A connection's place in a topic's presence; dropping it is the leave.
pub struct Present {
    presence: Presence,
    topic: TopicId,
    user: Arc<str>,
    /// Also counted in the [`ONLINE`] pseudo-topic.
    online: bool,
    /// Joins and leaves are told (notices, webhooks); not for the tallies.
    announced: bool,
}

impl std::fmt::Debug for Present {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Present")
            .field("topic", &self.topic)
            .field("user", &self.user)
            .finish()
    }
}

// === impl Presence ===

impl Presence {
    /// The presence of a node whose topics are `topics`, telling `webhooks` who comes and goes.
    pub fn new(topics: TopicRegistry, webhooks: Webhooks) -> Self {
        Presence {
            inner: Arc::new(Inner {
                topics,
                webhooks,
                online_topic: TopicId::from(ONLINE),
                local: Mutex::default(),
                dirty: Mutex::default(),
                shared: std::sync::OnceLock::new(),
                wake: Notify::new(),
            }),
        }
    }

    /// A connection of `user` (`None`: anonymous) with public `info` joins `topic`.
    pub fn enter(
        &self,
        topic: TopicId,
        user: Option<Arc<str>>,
        info: Option<Arc<Value>>,
    ) -> Present {
        let user = user.unwrap_or_else(|| Arc::from(""));
        self.join(topic, user, info, true)
    }

    fn join(
        &self,
        topic: TopicId,
        user: Arc<str>,
        info: Option<Arc<Value>>,
        announced: bool,
    ) -> Present {
        let online = announced && !user.is_empty() && self.inner.webhooks.enabled();
        let online_topic = &self.inner.online_topic;
        let (joined, came_online) = {
            let mut local = self.inner.local.lock();
            let joined = local.add(&topic, &user, info.clone());
            (
                joined,
                online && local.add(online_topic, &user, info.clone()),
            )
        };
        let alone = self.changed(&topic, &user);
        if online {
            self.changed(online_topic, &user);
        }
        if alone && announced {
            let webhooks = &self.inner.webhooks;
            if came_online {
                webhooks.record(ONLINE, &user, true, info.as_deref());
            }
            if joined {
                let notice = notice(true, &user, info.as_deref());
                self.inner.topics.notify(&topic, notice);
                webhooks.record(&topic, &user, true, info.as_deref());
            }
        }
        Present {
            presence: self.clone(),
            topic,
            user,
            online,
            announced,
        }
    }

    /// A session counted under `key` in the tally `topic` ([`BY_ADDRESS`], [`BY_USER`]): no
    /// one is told; dropping the guard uncounts it.
    pub fn tally(&self, topic: &'static str, key: Arc<str>) -> Present {
        debug_assert!(is_tally(topic));
        self.join(TopicId::from(topic), key, None, false)
    }

    /// How many sessions `key` holds in the tally `topic`, cluster-wide: the store's count for
    /// the other nodes, this node's own now (the store may not have its latest yet). If the
    /// store cannot be reached, this node's alone.
    pub async fn held(&self, topic: &'static str, key: &Arc<str>) -> u64 {
        let topic = TopicId::from(topic);
        let here = self.inner.local.lock().count(&topic, key).clients;
        let Some(shared) = self.inner.shared.get() else {
            return here;
        };
        match shared.held(topic, key.clone()).await {
            Ok((cluster, mine)) => cluster.saturating_sub(mine) + here,
            Err(error) => {
                tracing::warn!(%error, "connection caps: the cluster's counts are unreachable; counting this node's");
                here
            }
        }
    }

    fn exit(&self, topic: &TopicId, user: &Arc<str>, online: bool, announced: bool) {
        let online_topic = &self.inner.online_topic;
        let (left, went_offline) = {
            let mut local = self.inner.local.lock();
            let left = local.remove(topic, user);
            (left, online && local.remove(online_topic, user))
        };
        let alone = self.changed(topic, user);
        if online {
            self.changed(online_topic, user);
        }
        if alone && announced {
            let webhooks = &self.inner.webhooks;
            if left {
                self.inner.topics.notify(topic, notice(false, user, None));
                webhooks.record(topic, user, false, None);
            }
            if went_offline {
                webhooks.record(ONLINE, user, false, None);
            }
        }
    }

    /// Note a change of `user`'s count in `topic`; returns whether this node is alone (it then
    /// tells the topic's members itself; in a cluster the store tells every node, once).
    fn changed(&self, topic: &TopicId, user: &Arc<str>) -> bool {
        if self.inner.shared.get().is_none() {
            return true;
        }
        self.inner
            .dirty
            .lock()
            .insert((topic.clone(), user.clone()));
        self.inner.wake.notify_one();
        false
    }

    /// Share presence with the cluster through `shared`, and keep doing so: spawns the task
    /// that writes this node's changes and beats. Called once, inside the node's runtime.
    pub fn share(&self, shared: Arc<dyn SharedPresence>) {
        if self.inner.shared.set(shared.clone()).is_err() {
            return;
        }
        let presence = self.clone();
        tokio::spawn(async move { presence.run(shared).await });
    }

    async fn run(self, shared: Arc<dyn SharedPresence>) {
        let mut beat = tokio::time::interval(BEAT_EVERY);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = beat.tick() => match shared.beat().await {
                    Ok(true) => self.all_dirty(),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "presence: cannot beat; retrying"),
                },
                _ = flush.tick() => {}
                _ = self.inner.wake.notified() => {}
            }
            self.flush(&*shared).await;
            if Arc::strong_count(&self.inner) == 1 {
                return; // the node is gone
            }
        }
    }

    fn all_dirty(&self) {
        let all = self.inner.local.lock().keys();
        self.inner.dirty.lock().extend(all);
    }

    /// Write what changed since the last write; what fails is written again next time.
    async fn flush(&self, shared: &dyn SharedPresence) {
        let dirty: Vec<(TopicId, Arc<str>)> = self.inner.dirty.lock().drain().collect();
        if dirty.is_empty() {
            return;
        }
        let counts: Vec<Count> = {
            let local = self.inner.local.lock();
            dirty
                .iter()
                .map(|(topic, user)| local.count(topic, user))
                .collect()
        };
        if let Err(error) = shared.write(counts).await {
            tracing::warn!(%error, "presence: cannot write to the cluster; retrying");
            self.inner.dirty.lock().extend(dirty);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The topic's counts (cluster-wide in a cluster).
    pub async fn stats(&self, topic: &str) -> Result<Stats, StoreError> {
        match self.inner.shared.get() {
            Some(shared) => shared.stats(topic.into()).await,
            None => Ok(self.inner.local.lock().stats(topic)),
        }
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) members of the topic after user id `after`, in
    /// user-id order (cluster-wide in a cluster).
    pub async fn page(
        &self,
        topic: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        match self.inner.shared.get() {
            Some(shared) => shared.page(topic.into(), after, limit).await,
            None => Ok(self.inner.local.lock().page(topic, after.as_deref(), limit)),
        }
    }

    /// This node's own members of `topic` with their connection counts (for tests and stats).
    pub fn here(&self, topic: &str) -> BTreeMap<String, u64> {
        self.inner.local.lock().here(topic)
    }
}

impl Drop for Present {
    fn drop(&mut self) {
        self.presence
            .exit(&self.topic, &self.user, self.online, self.announced);
    }
}
