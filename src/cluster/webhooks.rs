//! The cluster's webhook queue: one Redis stream ([`keys::WEBHOOKS`]) that the presence writes
//! and reaps add events to, read by every node as one consumer group. A node delivers what it
//! read and acknowledges it (the entry is then deleted); until then the entry is pending for
//! that node, which retries it. Entries a node has held for [`CLAIM_AFTER`] without
//! acknowledging (it died, or its backend calls hang) are claimed by the next node that looks.
//! The stream is capped near [`MAX_QUEUED`] entries: beyond, the oldest are trimmed.
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Value;

use super::{keys, unreachable, RedisBroker};
use crate::topic::StoreError;
use crate::webhook::{Event, Source, CLAIM_AFTER};

/// Most events the stream keeps (approximately) while the backend is away.
pub const MAX_QUEUED: usize = 100_000;
/// How long a node waits before looking again when no event was waiting.
const IDLE_WAIT: Duration = Duration::from_millis(250);

impl RedisBroker {
    /// Queue `event` for the backend (its id is the stream entry's).
    pub(super) async fn queue_event(&self, event: &Event) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).expect("events serialize");
        redis::cmd("XADD")
            .arg(keys::WEBHOOKS)
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_QUEUED)
            .arg("*")
            .arg("e")
            .arg(json)
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unreachable)
    }

    async fn ensure_group(&self) -> Result<(), StoreError> {
        if self.webhook_group.load(Ordering::Relaxed) {
            return Ok(());
        }
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::WEBHOOKS)
            .arg(keys::WEBHOOK_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut self.conn.clone())
            .await;
        match created {
            Ok(()) => {}
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) => return Err(unreachable(error)),
        }
        self.webhook_group.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Read this node's entries: `"0"` those it holds and has not acknowledged, `">"` new ones.
    async fn read_events(&self, from: &str, max: usize) -> Result<Vec<Event>, StoreError> {
        let reply: Result<Value, _> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(keys::WEBHOOK_GROUP)
            .arg(&self.instance)
            .arg("COUNT")
            .arg(max)
            .arg("STREAMS")
            .arg(keys::WEBHOOKS)
            .arg(from)
            .query_async(&mut self.conn.clone())
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                if error.code() == Some("NOGROUP") {
                    // Redis lost the stream (a restart without persistence): create it again.
                    self.webhook_group.store(false, Ordering::Relaxed);
                }
                return Err(unreachable(error));
            }
        };
        let mut entries = Vec::new();
        collect_entries(&reply, &mut entries);
        let mut events = Vec::with_capacity(entries.len());
        let mut trimmed = Vec::new();
        for (id, json) in entries {
            match json.and_then(|j| serde_json::from_str::<Event>(&j).ok()) {
                Some(mut event) => {
                    event.id = id;
                    events.push(event);
                }
                // Trimmed while pending (or unreadable): nothing to deliver.
                None => trimmed.push(id),
            }
        }
        if !trimmed.is_empty() {
            tracing::warn!(
                count = trimmed.len(),
                "webhooks: events trimmed before delivery"
            );
            self.acknowledge(trimmed).await?;
        }
        Ok(events)
    }

    /// Take over entries other nodes have held too long.
    async fn claim_stale(&self, max: usize) -> Result<(), StoreError> {
        redis::cmd("XAUTOCLAIM")
            .arg(keys::WEBHOOKS)
            .arg(keys::WEBHOOK_GROUP)
            .arg(&self.instance)
            .arg(CLAIM_AFTER.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async::<Value>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unreachable)
    }

    async fn acknowledge(&self, ids: Vec<String>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        redis::pipe()
            .cmd("XACK")
            .arg(keys::WEBHOOKS)
            .arg(keys::WEBHOOK_GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(keys::WEBHOOKS)
            .arg(&ids)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unreachable)
    }
}

/// The `(entry id, "e" field)` pairs of a stream read reply, RESP2 or RESP3 alike; a pending
/// entry whose content was trimmed has no field.
fn collect_entries(value: &Value, out: &mut Vec<(String, Option<String>)>) {
    let text = |v: &Value| match v {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match value {
        Value::Array(items) => {
            if let [id, fields @ (Value::Array(_) | Value::Nil)] = items.as_slice() {
                if let Some(id) = text(id).filter(|id| is_entry_id(id)) {
                    let field = match fields {
                        Value::Array(kv) => kv
                            .chunks(2)
                            .find(|pair| text(&pair[0]).as_deref() == Some("e"))
                            .and_then(|pair| pair.get(1).and_then(text)),
                        _ => None,
                    };
                    out.push((id, field));
                    return;
                }
            }
            for item in items {
                collect_entries(item, out);
            }
        }
        Value::Map(pairs) => {
            for (_, v) in pairs {
                collect_entries(v, out);
            }
        }
        _ => {}
    }
}

fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

impl Source for RedisBroker {
    fn take(&self, max: usize) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(async move {
            self.ensure_group().await?;
            self.claim_stale(max).await?;
            // What this node holds first (retries, and what it just claimed), then new ones.
            let mine = self.read_events("0", max).await?;
            if !mine.is_empty() {
                return Ok(mine);
            }
            let new = self.read_events(">", max).await?;
            if new.is_empty() {
                tokio::time::sleep(IDLE_WAIT).await;
            }
            Ok(new)
        })
    }

    fn done(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.acknowledge(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_are_found_in_both_reply_shapes_and_trimmed_ones_have_no_content() {
        let entries = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("e"), bulk("{}")])]),
            Value::Array(vec![bulk("2-5"), Value::Nil]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("nimbus:wh"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("nimbus:wh"), entries)]);
        for reply in [resp2, resp3] {
            let mut out = Vec::new();
            collect_entries(&reply, &mut out);
            assert_eq!(
                out,
                [
                    ("1-0".to_string(), Some("{}".to_string())),
                    ("2-5".to_string(), None)
                ]
            );
        }
        let mut out = Vec::new();
        collect_entries(&Value::Nil, &mut out);
        assert!(out.is_empty());
    }
}
