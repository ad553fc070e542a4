//! Presence in Redis: each topic's members cluster-wide, written by every node as absolute
//! counts of its own connections, and the reaping of nodes that stopped beating.
//!
//! Per topic (under its hash tag): `users` (user -> connections in the cluster), `info` (user
//! -> public info), `list` (the user ids, a sorted set read by lexical range for pages),
//! `clients` (connections) and, per node instance, `held` (user -> its connections). Per node
//! instance: the topics it holds presence in. One sorted set lists every instance with its
//! last beat. An instance is this process (`<node id>:<random>`), so a node restarted with
//! the same id does not inherit what its previous life held: that is reaped.
use std::time::Duration;

use futures_util::future::{try_join_all, BoxFuture};
use redis::Script;

use super::{keys, now_ms, unreachable, RedisBroker};
use std::sync::Arc;

use crate::presence::{is_tally, notice, Count, Member, Page, SharedPresence, Stats};
use crate::topic::{StoreError, TopicId};
use crate::webhook::{Event, ONLINE};

/// A node whose last beat is older than this is dead: its members leave.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);
/// Most dead instances reaped per beat.
const REAP_BATCH: usize = 8;

/// The presence scripts.
pub struct Scripts {
    set: Script,
    reap: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            set: Script::new(include_str!("presence_set.lua")),
            reap: Script::new(include_str!("presence_reap.lua")),
        }
    }
}

fn topic_keys<'a>(script: &'a Script, topic: &str) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys::presence(topic, "users"))
        .key(keys::presence(topic, "info"))
        .key(keys::presence(topic, "list"))
        .key(keys::presence(topic, "clients"));
    invocation
}

impl RedisBroker {
    /// Write one count; returns whether this instance holds nothing more in the topic.
    async fn write_count(&self, count: Count) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let info = count
            .info
            .as_deref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        // The pseudo-topic of online users tells no one; its changes are webhook events only.
        // The connection tallies tell no one at all.
        let tally = is_tally(&count.topic);
        let notices = &*count.topic != ONLINE && !tally;
        let joined = notices.then(|| notice(true, &count.user, count.info.as_deref()).text);
        let left = notices.then(|| notice(false, &count.user, None).text);
        let mut invocation = topic_keys(&self.presence_scripts.set, &count.topic);
        let (change, held_left): (i64, u64) = invocation
            .key(keys::presence_held(&count.topic, &self.instance))
            .key(keys::channel(&count.topic))
            .arg(&*count.user)
            .arg(count.clients)
            .arg(info)
            .arg(joined.as_deref().unwrap_or(""))
            .arg(left.as_deref().unwrap_or(""))
            .arg(self.conn.publish_command())
            .invoke_async(&mut conn)
            .await
            .map_err(unreachable)?;
        match change {
            1 => tracing::debug!(topic = %count.topic, user = %count.user, "member joined"),
            -1 => tracing::debug!(topic = %count.topic, user = %count.user, "member left"),
            _ => {}
        }
        if change != 0 && self.settings.webhooks && !tally {
            let event = Event::new(
                &count.topic,
                &count.user,
                change == 1,
                count.info.as_deref(),
                &self.settings.node_id,
            );
            self.queue_event(&event).await?;
        }
        Ok(held_left == 0)
    }

    /// Take the members of `instance` (dead) out of every topic it held.
    async fn reap(&self, instance: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let index = keys::presence_topics(instance);
        let topics: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        // The node id part of `<node id>:<random>`.
        let node = instance.rsplit_once(':').map_or(instance, |(node, _)| node);
        for topic in topics {
            let mut invocation = topic_keys(&self.presence_scripts.reap, &topic);
            let tally = is_tally(&topic);
            let notices = if topic == ONLINE || tally { "" } else { "1" };
            let left: Vec<String> = invocation
                .key(keys::presence_held(&topic, instance))
                .key(keys::channel(&topic))
                .arg(self.conn.publish_command())
                .arg(notices)
                .invoke_async(&mut conn)
                .await
                .map_err(unreachable)?;
            for user in left {
                if tally {
                    continue;
                }
                tracing::info!(%topic, %user, %instance, "member left with its node");
                if self.settings.webhooks {
                    self.queue_event(&Event::new(&topic, &user, false, None, node))
                        .await?;
                }
            }
        }
        redis::pipe()
            .cmd("DEL")
            .arg(&index)
            .ignore()
            .cmd("ZREM")
            .arg(keys::PRESENCE_BEATS)
            .arg(instance)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unreachable)
    }
}

impl SharedPresence for RedisBroker {
    fn write(&self, counts: Vec<Count>) -> BoxFuture<'static, Result<(), StoreError>> {
        let Some(broker) = self.me.upgrade() else {
            return Box::pin(async { Ok(()) });
        };
        Box::pin(async move {
            let mut conn = broker.conn.clone();
            let index = keys::presence_topics(&broker.instance);
            // The index first: a node that dies after the counts is reaped from it.
            let mut topics: Vec<&str> = counts
                .iter()
                .filter(|c| c.clients > 0)
                .map(|c| &*c.topic)
                .collect();
            topics.sort_unstable();
            topics.dedup();
            if !topics.is_empty() {
                redis::cmd("SADD")
                    .arg(&index)
                    .arg(&topics)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unreachable)?;
            }
            // Concurrent on the multiplexed connection: one pipeline's worth of round trips.
            let emptied = try_join_all(counts.into_iter().map(|count| {
                let topic = count.topic.clone();
                let broker = &broker;
                async move { Ok::<_, StoreError>((topic, broker.write_count(count).await?)) }
            }))
            .await?;
            let gone: Vec<&str> = emptied
                .iter()
                .filter(|(_, empty)| *empty)
                .map(|(topic, _)| &**topic)
                .collect();
            if !gone.is_empty() {
                redis::cmd("SREM")
                    .arg(&index)
                    .arg(&gone)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unreachable)?;
            }
            Ok(())
        })
    }

    fn beat(&self) -> BoxFuture<'static, Result<bool, StoreError>> {
        let Some(broker) = self.me.upgrade() else {
            return Box::pin(async { Ok(false) });
        };
        Box::pin(async move {
            let mut conn = broker.conn.clone();
            let now = now_ms();
            let dead_before = now.saturating_sub(DEAD_AFTER.as_millis() as u64);
            let (added, dead): (u64, Vec<String>) = redis::pipe()
                .cmd("ZADD")
                .arg(keys::PRESENCE_BEATS)
                .arg(now)
                .arg(&broker.instance)
                .cmd("ZRANGEBYSCORE")
                .arg(keys::PRESENCE_BEATS)
                .arg("-inf")
                .arg(dead_before)
                .arg("LIMIT")
                .arg(0)
                .arg(REAP_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            for instance in dead.iter().filter(|i| **i != broker.instance) {
                broker.reap(instance).await?;
            }
            Ok(added == 1)
        })
    }

    fn stats(&self, topic: TopicId) -> BoxFuture<'static, Result<Stats, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let (users, clients): (u64, Option<i64>) = redis::pipe()
                .cmd("ZCARD")
                .arg(keys::presence(&topic, "list"))
                .cmd("GET")
                .arg(keys::presence(&topic, "clients"))
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            Ok(Stats {
                users,
                clients: clients.unwrap_or(0).max(0) as u64,
            })
        })
    }

    fn held(
        &self,
        topic: TopicId,
        user: Arc<str>,
    ) -> BoxFuture<'static, Result<(u64, u64), StoreError>> {
        let mut conn = self.conn.clone();
        let mine = keys::presence_held(&topic, &self.instance);
        Box::pin(async move {
            let (cluster, mine): (Option<i64>, Option<i64>) = redis::pipe()
                .cmd("HGET")
                .arg(keys::presence(&topic, "users"))
                .arg(&*user)
                .cmd("HGET")
                .arg(mine)
                .arg(&*user)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            let count = |n: Option<i64>| n.unwrap_or(0).max(0) as u64;
            Ok((count(cluster), count(mine)))
        })
    }

    fn page(
        &self,
        topic: TopicId,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Page, StoreError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let start = after.map_or_else(|| "-".to_string(), |after| format!("({after}"));
            let mut users: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(keys::presence(&topic, "list"))
                .arg(start)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(limit + 1)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            let more = users.len() > limit;
            users.truncate(limit);
            if users.is_empty() {
                return Ok(Page::default());
            }
            let infos: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(keys::presence(&topic, "info"))
                .arg(&users)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            let cursor = more.then(|| users.last().cloned()).flatten();
            let members = users
                .into_iter()
                .zip(infos)
                .map(|(user, info)| Member {
                    user,
                    info: info.and_then(|i| serde_json::from_str(&i).ok()),
                })
                .collect();
            Ok(Page { members, cursor })
        })
    }
}
