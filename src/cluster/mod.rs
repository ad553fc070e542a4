//! The cluster bridge: the Redis broker that lets any node serve any client.
//!
//! - **Numbering and history.** Publishes run through one script (`publish.lua`) that numbers
//!   each message in its topic, appends it to the topic's history stream (trimmed by count,
//!   expired by age) and relays it on the topic's channel: O(1) Redis writes per broadcast,
//!   whatever the audience. The publishes that queue while one call is out go in the next call
//!   together (one round trip and one script run for up to 256 messages, `BATCH_MESSAGES`).
//!   A client's "cache" is its cursor in that history, so any node can serve it.
//! - **Relay.** One multiplexed RESP3 connection per node (redis-rs `ConnectionManager`, which
//!   reconnects and resubscribes by itself) subscribes to a topic's channel while the node has
//!   local members of it. A node ignores its own relays: it hands its publishes to its local
//!   topic as soon as the script has numbered them.
//! - **Sessions.** A small record per client (topic, cursor, whether a long-poll is
//!   outstanding, node) lets the next poll or reconnect land on any node.
//! - **Control plane** (`control.rs`). Records with a TTL (Cettia sockets and their HTTP
//!   transports) and one control channel, `nimbus:ctl`, on the same connection: Cettia socket
//!   handovers and sends addressed to a socket id or a tag, one PUBLISH each.
//! - **Outages.** Publishes wait in a bounded queue while Redis is unreachable and go out, in
//!   order, when it is back; a full queue refuses new publishes (503). `/readyz` reports the
//!   outage. Topics notice relays they missed by comparing positions and fetch them from the
//!   history.
mod control;
mod cursors;
mod keys;
mod link;
mod presence;
pub mod relay;
mod secret;
mod webhooks;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use redis::{PushInfo, PushKind, Script, Value};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

use self::link::Link;
use crate::broker::{Broker, ControlHandler, ControlPlane, Published, SessionRecord};
use crate::topic::{
    Audience, Backlog, Envelope, Message, PublishError, SessionId, StoreError, TopicId,
    TopicPosition, TopicRegistry, Upstream,
};

/// Publishes that may wait for Redis during an outage before new ones are refused.
const PUBLISH_QUEUE: usize = 10_000;
/// Relayed messages waiting for dispatch; beyond it they are dropped and fetched back from the
/// history by the topics that notice the gap.
const RELAY_QUEUE: usize = 16_384;
/// How long a topic's numbering is remembered after its last publish or open.
const META_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often Redis is pinged for `/readyz`.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the Redis broker, from the node's configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One Redis URL, or the seed nodes of a Redis Cluster.
    pub urls: Vec<String>,
    /// The URLs are seed nodes of a Redis Cluster: relay with sharded pub/sub.
    pub cluster: bool,
    pub node_id: String,
    /// Longest history per topic (approximate, `MAXLEN ~`).
    pub history_messages: usize,
    /// Oldest history entry served (older ones count as missed), and the history's TTL.
    pub history_age: Duration,
    /// How long a session record outlives its client's last visit.
    pub session_ttl: Duration,
    /// Queue backend webhook events as presence changes.
    pub webhooks: bool,
}

/// How long a confirmed publish waits for its numbering before it is answered "queued".
const CONFIRM_WAIT: Duration = Duration::from_secs(2);

/// A publish waiting for the script.
struct PublishJob {
    topic: TopicId,
    audience: Audience,
    message: Message,
    /// Told once the message is numbered.
    numbered: Option<oneshot::Sender<()>>,
    /// When this node accepted it (unix ms), for the publish-to-write latency.
    accepted_ms: u64,
}

/// The Redis broker.
pub struct RedisBroker {
    settings: RedisSettings,
    conn: Link,
    topics: TopicRegistry,
    publisher: mpsc::Sender<PublishJob>,
    /// Local topics per relay channel: subscribe on the first, unsubscribe after the last.
    subscriptions: tokio::sync::Mutex<HashMap<TopicId, usize>>,
    ready: AtomicBool,
    /// Relayed messages dropped because the relay queue was full.
    relays_dropped: Arc<AtomicU64>,
    open_script: Script,
    /// Where control-channel messages go (the node's Cettia server).
    control_handlers: parking_lot::RwLock<[Option<ControlHandler>; 2]>,
    /// Control messages waiting for their PUBLISH, in order.
    control_jobs: mpsc::Sender<control::ControlJob>,
    /// Pushing clients' cursors, written in batches.
    cursor_notes: cursors::CursorNotes,
    /// Publish scripts' and health pings' round trips, for `/metrics`.
    round_trips: prometheus_client::metrics::histogram::Histogram,
    /// Messages per publish call, for `/metrics`.
    publish_batches: prometheus_client::metrics::histogram::Histogram,
    /// Itself, for futures that outlive a call.
    me: Weak<RedisBroker>,
    /// This process among the cluster's nodes, for presence (`<node id>:<random>`).
    instance: String,
    presence_scripts: presence::Scripts,
    /// The webhook stream's consumer group is known to exist.
    webhook_group: AtomicBool,
}

/// Counters of the bridge, for `/_nimbus/stats`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BridgeStats {
    pub relays_dropped: u64,
}

fn unreachable(error: redis::RedisError) -> StoreError {
    StoreError::Unreachable(error.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RedisBroker {
    /// Connect to Redis (failing if it cannot be reached now) and start the bridge's tasks on
    /// the current runtime.
    pub async fn connect(
        settings: RedisSettings,
        topics: TopicRegistry,
    ) -> Result<Arc<Self>, StoreError> {
        let (push_tx, push_rx) = mpsc::channel::<PushInfo>(RELAY_QUEUE);
        let relays_dropped = Arc::new(AtomicU64::new(0));
        let dropped_in_sender = relays_dropped.clone();
        let push = move |info: PushInfo| {
            if push_tx.try_send(info).is_err() {
                dropped_in_sender.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        let conn = Link::connect(&settings.urls, settings.cluster, push)
            .await
            .map_err(unreachable)?;
        let (publisher, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (control_jobs, control_rx) = mpsc::channel(control::CONTROL_QUEUE);
        let settings_node_id = settings.node_id.clone();
        let broker = Arc::new_cyclic(|me| RedisBroker {
            settings,
            conn,
            topics,
            publisher,
            subscriptions: tokio::sync::Mutex::new(HashMap::new()),
            ready: AtomicBool::new(true),
            relays_dropped,
            open_script: Script::new(include_str!("open.lua")),
            control_handlers: parking_lot::RwLock::new([None, None]),
            control_jobs,
            cursor_notes: cursors::CursorNotes::new(),
            round_trips: crate::metrics::latency_histogram(),
            publish_batches: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 9),
            ),
            me: me.clone(),
            instance: format!(
                "{}:{}",
                settings_node_id,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            presence_scripts: presence::Scripts::default(),
            webhook_group: AtomicBool::new(false),
        });
        broker
            .conn
            .clone()
            .subscribe(keys::CONTROL)
            .await
            .map_err(unreachable)?;
        tokio::spawn(publish_loop(Arc::downgrade(&broker), publish_rx));
        tokio::spawn(control::control_loop(Arc::downgrade(&broker), control_rx));
        tokio::spawn(relay_loop(Arc::downgrade(&broker), push_rx));
        tokio::spawn(health_loop(Arc::downgrade(&broker)));
        tokio::spawn(cursors::write_loop(Arc::downgrade(&broker)));
        Ok(broker)
    }

    pub fn stats(&self) -> BridgeStats {
        BridgeStats {
            relays_dropped: self.relays_dropped.load(Ordering::Relaxed),
        }
    }

    fn session_ttl_ms(&self) -> u64 {
        self.settings.session_ttl.as_millis() as u64
    }

    /// Hand a relayed message to the local topic (own relays are skipped: the publisher
    /// already handed them over).
    fn dispatch(&self, push: PushInfo) {
        if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
            return;
        }
        let mut data = push.data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            return;
        };
        if channel == keys::CONTROL.as_bytes() {
            let channel = crate::broker::ControlChannel::of(&payload);
            let handler = self.control_handlers.read()[channel as usize].clone();
            if let Some(handler) = handler {
                handler(&payload);
            }
            return;
        }
        let Some(topic) = std::str::from_utf8(&channel)
            .ok()
            .and_then(keys::topic_of_channel)
        else {
            return;
        };
        if let Some(notice) = payload.strip_prefix(b"!") {
            // A presence notice (see `presence_set.lua`): for every node, its own included.
            if let Ok(text) = std::str::from_utf8(notice) {
                let message = crate::topic::Message {
                    text: text.to_string().into(),
                    json: true,
                };
                self.topics.notify(topic, message);
            }
            return;
        }
        match relay::decode(topic, &payload) {
            Ok(relayed) if relayed.node == self.settings.node_id => {}
            Ok(relayed) => self.topics.ingest(relayed.epoch, relayed.envelope),
            Err(error) => tracing::warn!(%topic, %error, "ignoring a relay message"),
        }
    }
}

/// Most messages one publish call carries on a single Redis, and the most text bytes: enough
/// that a busy node's publishes cost Redis one script run and one round trip per batch rather
/// than per message (the chat shape, where every member publishes), few enough that one call
/// does not hold Redis for long.
const BATCH_MESSAGES: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// Run publishes through the script in the order they were accepted, as many per call as have
/// queued while the previous call was out (none is held back to fill a batch); while Redis is
/// unreachable, retry the same batch (the rest waits behind it, bounded).
async fn publish_loop(broker: Weak<RedisBroker>, mut jobs: mpsc::Receiver<PublishJob>) {
    let script = Script::new(include_str!("publish.lua"));
    // Batch ids: this process's random prefix and a counter.
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let mut counter: u64 = 0;
    let mut batch = Vec::with_capacity(BATCH_MESSAGES);
    while let Some(first) = jobs.recv().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        // On a Redis Cluster one call's keys must share a slot: one message per call.
        let most = if broker.settings.cluster {
            1
        } else {
            BATCH_MESSAGES
        };
        let mut bytes = first.message.text.len();
        batch.push(first);
        while batch.len() < most && bytes < BATCH_BYTES {
            let Ok(job) = jobs.try_recv() else { break };
            bytes += job.message.text.len();
            batch.push(job);
        }
        counter += 1;
        let marker = keys::publish_marker(&batch[0].topic, &format!("{prefix}-{counter}"));
        let numbers = broker.publish_batch(&script, &marker, &batch).await;
        for (job, numbers) in batch.drain(..).zip(numbers.chunks_exact(2)) {
            let mut envelope = Envelope::new(job.topic, numbers[1], job.audience, job.message);
            envelope.published_ms = job.accepted_ms;
            broker.topics.ingest(numbers[0], Arc::new(envelope));
            if let Some(numbered) = job.numbered {
                let _ = numbered.send(());
            }
        }
    }
}

impl RedisBroker {
    /// Number, store and relay `batch` in one script call, retried until Redis answers; the
    /// epoch and sequence number of each message, in order.
    async fn publish_batch(&self, script: &Script, marker: &str, batch: &[PublishJob]) -> Vec<u64> {
        let settings = &self.settings;
        let mut conn = self.conn.clone();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(marker)
            .arg(now_ms())
            .arg(settings.history_messages)
            .arg(settings.history_age.as_millis() as u64)
            .arg(META_TTL.as_millis() as u64)
            .arg(&settings.node_id)
            .arg(conn.publish_command());
        for job in batch {
            invocation
                .key(keys::meta(&job.topic))
                .key(keys::history(&job.topic))
                .key(keys::channel(&job.topic))
                .arg(relay::encode_audience(&job.audience))
                .arg(relay::encode_json_flag(job.message.json))
                .arg(&*job.message.text);
        }
        let mut delay = Duration::from_millis(50);
        loop {
            let sent = tokio::time::Instant::now();
            let result: redis::RedisResult<Vec<u64>> = invocation.invoke_async(&mut conn).await;
            match result {
                Ok(numbers) if numbers.len() == 2 * batch.len() => {
                    self.round_trips.observe(sent.elapsed().as_secs_f64());
                    self.publish_batches.observe(batch.len() as f64);
                    return numbers;
                }
                Ok(numbers) => {
                    // Only a reused batch id could do this; the marker expires within a minute.
                    tracing::error!(
                        expected = 2 * batch.len(),
                        got = numbers.len(),
                        "the publish script answered for another batch"
                    );
                }
                Err(error) => {
                    self.ready.store(false, Ordering::Relaxed);
                    tracing::warn!(topic = %batch[0].topic, %error, "publish waits for Redis");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

async fn relay_loop(broker: Weak<RedisBroker>, mut pushes: mpsc::Receiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        if push.kind == PushKind::Disconnection {
            broker.ready.store(false, Ordering::Relaxed);
            tracing::warn!("lost the Redis connection; reconnecting");
        }
        broker.dispatch(push);
    }
}

async fn health_loop(broker: Weak<RedisBroker>) {
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let mut conn = broker.conn.clone();
        let sent = tokio::time::Instant::now();
        let ok = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok();
        if ok {
            broker.round_trips.observe(sent.elapsed().as_secs_f64());
        }
        let was = broker.ready.swap(ok, Ordering::Relaxed);
        if ok != was {
            if ok {
                tracing::info!("Redis reachable again");
            } else {
                tracing::warn!("Redis unreachable");
            }
        }
    }
}

/// The fields of a session record, in the order `begin_poll` and `load_session` read them.
const RECORD_FIELDS: [&str; 7] = [
    "topic",
    "epoch",
    "cursor",
    "polling",
    "node",
    "floor",
    cursors::NOTED,
];

/// A record from its [`RECORD_FIELDS`] (none if no field is set: there is no record).
///
/// Its position is the later of the record's own and its cursor note's: cursors only move
/// forward, and epochs are numbered by time, so the later one is the true one whichever was
/// written last (see `cluster::cursors`).
fn record_from(fields: Vec<Option<String>>) -> Option<SessionRecord> {
    if fields.iter().all(Option::is_none) {
        return None;
    }
    let mut fields = fields.into_iter();
    let mut next = || fields.next().flatten();
    let (topic, epoch, cursor, polling, node, floor, noted) =
        (next(), next(), next(), next(), next(), next(), next());
    let number = |v: Option<String>| v.and_then(|v| v.parse().ok()).unwrap_or(0);
    let saved = (number(epoch), number(cursor));
    let noted = noted.as_deref().and_then(cursors::parse_noted);
    let (epoch, cursor) = noted.map_or(saved, |noted| noted.max(saved));
    // The floor belongs to the saved epoch; a note of a later one makes it meaningless.
    let floor = floor
        .and_then(|f| f.parse().ok())
        .filter(|_| epoch == saved.0);
    Some(SessionRecord {
        topic,
        epoch,
        cursor,
        polling: polling.is_some_and(|v| v == "1"),
        node,
        floor,
    })
}

// === impl Upstream for RedisBroker ===

impl Upstream for RedisBroker {
    fn open(&self, topic: TopicId) -> BoxFuture<'static, Result<TopicPosition, StoreError>> {
        let this = self.arc();
        Box::pin(async move {
            {
                let mut subscriptions = this.subscriptions.lock().await;
                let count = subscriptions.entry(topic.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    let mut conn = this.conn.clone();
                    if let Err(error) = conn.subscribe(&keys::channel(&topic)).await {
                        subscriptions.remove(&topic);
                        return Err(unreachable(error));
                    }
                }
            }
            match this.position(topic.clone()).await {
                Ok(position) => Ok(position),
                Err(error) => {
                    this.close(topic);
                    Err(error)
                }
            }
        })
    }

    fn close(&self, topic: TopicId) {
        let this = self.arc();
        tokio::spawn(async move {
            let mut subscriptions = this.subscriptions.lock().await;
            let Some(count) = subscriptions.get_mut(&topic) else {
                return;
            };
            *count -= 1;
            if *count == 0 {
                subscriptions.remove(&topic);
                let mut conn = this.conn.clone();
                if let Err(error) = conn.unsubscribe(&keys::channel(&topic)).await {
                    tracing::debug!(%topic, %error, "unsubscribe failed");
                }
            }
        });
    }

    fn position(&self, topic: TopicId) -> BoxFuture<'static, Result<TopicPosition, StoreError>> {
        let mut conn = self.conn.clone();
        let script = self.open_script.clone();
        Box::pin(async move {
            let (epoch, seq): (u64, u64) = script
                .key(keys::meta(&topic))
                .key(keys::history(&topic))
                .arg(now_ms())
                .arg(META_TTL.as_millis() as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(unreachable)?;
            Ok(TopicPosition { epoch, seq })
        })
    }

    fn backlog(
        &self,
        topic: TopicId,
        epoch: u64,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<Backlog, StoreError>> {
        let mut conn = self.conn.clone();
        let max_age_ms = self.settings.history_age.as_millis() as u64;
        Box::pin(async move {
            let (current_epoch, reply): (Option<u64>, redis::streams::StreamRangeReply) =
                redis::pipe()
                    .cmd("HGET")
                    .arg(keys::meta(&topic))
                    .arg("epoch")
                    .cmd("XRANGE")
                    .arg(keys::history(&topic))
                    .arg(format!("{}-0", after + 1))
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1))
                    .query_async(&mut conn)
                    .await
                    .map_err(unreachable)?;
            if current_epoch != Some(epoch) {
                return Ok(Backlog::default());
            }
            let oldest_ms = now_ms().saturating_sub(max_age_ms);
            let mut backlog = Backlog::default();
            let mut expected = after + 1;
            for entry in reply.ids {
                let seq = entry
                    .id
                    .split_once('-')
                    .and_then(|(seq, _)| seq.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Protocol(format!("history id {}", entry.id)))?;
                let published: u64 = entry.get("t").unwrap_or(0);
                if seq < expected {
                    continue;
                }
                backlog.missed += seq - expected;
                expected = seq + 1;
                if published < oldest_ms {
                    backlog.missed += 1;
                    continue;
                }
                let text: String = entry.get("m").unwrap_or_default();
                let audience: String = entry.get("a").unwrap_or_else(|| "*".into());
                let json: String = entry.get("j").unwrap_or_default();
                let audience = relay::decode_audience(&audience)
                    .map_err(|e| StoreError::Protocol(e.to_string()))?;
                let message = Message {
                    text: text.into(),
                    json: json == "1",
                };
                backlog.messages.push(Arc::new(Envelope::new(
                    topic.clone(),
                    seq,
                    audience,
                    message,
                )));
            }
            Ok(backlog)
        })
    }
}

// === impl Broker for RedisBroker ===

impl Broker for RedisBroker {
    fn publish(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> Result<(), PublishError> {
        self.publisher
            .try_send(PublishJob {
                topic: topic.into(),
                audience,
                message,
                numbered: None,
                accepted_ms: now_ms(),
            })
            .map_err(|_| PublishError::ClusterBacklogFull)
    }

    fn publish_confirmed(
        &self,
        topic: &str,
        audience: Audience,
        message: Message,
    ) -> BoxFuture<'static, Result<Published, PublishError>> {
        let (numbered, confirmation) = oneshot::channel();
        let queued = self
            .publisher
            .try_send(PublishJob {
                topic: topic.into(),
                audience,
                message,
                numbered: Some(numbered),
                accepted_ms: now_ms(),
            })
            .map_err(|_| PublishError::ClusterBacklogFull);
        Box::pin(async move {
            queued?;
            match tokio::time::timeout(CONFIRM_WAIT, confirmation).await {
                Ok(Ok(())) => Ok(Published::Numbered),
                _ => Ok(Published::Queued),
            }
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn numbers_messages(&self) -> bool {
        true
    }

    fn begin_poll(
        &self,
        session: SessionId,
    ) -> BoxFuture<'static, Result<Option<SessionRecord>, StoreError>> {
        let mut conn = self.conn.clone();
        let node = self.settings.node_id.clone();
        let ttl = self.session_ttl_ms();
        Box::pin(async move {
            let key = keys::session(&session);
            // Not MULTI/EXEC: a client holds one poll at a time, so no other poll of this
            // session runs between the read and the write, and the one connection keeps them
            // in order (a transaction costs Redis two more commands and the node two more
            // replies to parse, on every poll).
            let (fields,): (Vec<Option<String>>,) = redis::pipe()
                .cmd("HMGET")
                .arg(&key)
                .arg(&RECORD_FIELDS)
                .hset_multiple(&key, &[("polling", "1"), ("node", node.as_str())])
                .ignore()
                .pexpire(&key, ttl as i64)
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            Ok(record_from(fields))
        })
    }

    fn load_session(
        &self,
        session: SessionId,
    ) -> BoxFuture<'static, Result<Option<SessionRecord>, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let fields: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(keys::session(&session))
                .arg(&RECORD_FIELDS)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            Ok(record_from(fields))
        })
    }

    fn note_cursor(&self, session: SessionId, epoch: u64, cursor: u64) {
        if !self.cursor_notes.note(session, epoch, cursor) {
            tracing::debug!("too many cursor notes waiting; dropping one");
        }
    }

    fn save_session(
        &self,
        session: SessionId,
        record: SessionRecord,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        // This record is newer than any note of the session still waiting.
        self.cursor_notes.forget(&session);
        let mut conn = self.conn.clone();
        let ttl = self.session_ttl_ms();
        let node = self.settings.node_id.clone();
        Box::pin(async move {
            let key = keys::session(&session);
            let fields = [
                ("topic", record.topic.unwrap_or_default()),
                ("epoch", record.epoch.to_string()),
                ("cursor", record.cursor.to_string()),
                (
                    "polling",
                    if record.polling { "1" } else { "0" }.to_string(),
                ),
                ("node", record.node.unwrap_or(node)),
                // No floor known: the epoch's start, which holds back nothing.
                ("floor", record.floor.unwrap_or(0).to_string()),
            ];
            // One connection keeps the two in order; nothing needs them atomic (see `begin_poll`).
            redis::pipe()
                .hset_multiple(&key, &fields)
                .ignore()
                .pexpire(&key, ttl as i64)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(unreachable)
        })
    }

    fn control(&self) -> Option<Arc<dyn ControlPlane>> {
        Some(self.arc())
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "redis_rtt_seconds",
            "Round trips to Redis: publish calls and health pings",
            self.round_trips.clone(),
        );
        registry.register(
            "redis_publish_batch_messages",
            "Messages per publish call to Redis (what queued while the previous call was out)",
            self.publish_batches.clone(),
        );
    }

    fn relays_dropped(&self) -> u64 {
        self.relays_dropped.load(Ordering::Relaxed)
    }
}

impl RedisBroker {
    /// A strong handle for futures that outlive the call (the broker lives as long as its node).
    fn arc(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("the broker outlives the calls made on it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(epoch: &str, cursor: &str, noted: Option<&str>) -> Vec<Option<String>> {
        let mut fields: Vec<Option<String>> = ["t", epoch, cursor, "0", "n1", "2"]
            .iter()
            .map(|v| Some(v.to_string()))
            .collect();
        fields.push(noted.map(str::to_string));
        fields
    }

    fn position(fields: Vec<Option<String>>) -> (u64, u64) {
        let record = record_from(fields).expect("a record");
        (record.epoch, record.cursor)
    }

    #[test]
    fn a_record_stands_where_the_later_of_its_save_and_its_note_says() {
        // No note, or a note behind the record (written late, after a detach saved it).
        assert_eq!(position(fields("7", "40", None)), (7, 40));
        assert_eq!(position(fields("7", "40", Some("7:35"))), (7, 40));
        assert_eq!(position(fields("7", "40", Some("6:90"))), (7, 40));
        // A note ahead of the record: the client moved on since the record was saved.
        assert_eq!(position(fields("7", "40", Some("7:52"))), (7, 52));
        assert_eq!(position(fields("7", "40", Some("8:3"))), (8, 3));
        // A note alone (its record expired or was lost) still says where the client was.
        let only_note = vec![None, None, None, None, None, None, Some("7:52".to_string())];
        assert_eq!(position(only_note), (7, 52));
        // A damaged note is ignored.
        assert_eq!(position(fields("7", "40", Some("7-52"))), (7, 40));
        assert!(record_from(vec![None; RECORD_FIELDS.len()]).is_none());
    }

    #[test]
    fn a_records_floor_holds_in_its_own_epoch_only() {
        let floor = |fields| record_from(fields).expect("a record").floor;
        assert_eq!(floor(fields("7", "40", None)), Some(2));
        assert_eq!(floor(fields("7", "40", Some("7:52"))), Some(2));
        assert_eq!(
            floor(fields("7", "40", Some("8:3"))),
            None,
            "a note of a later epoch"
        );
    }
}
