//! Cursor notes: where each pushing client stands, written to its session record in batches.
//!
//! A WebSocket, SSE or streaming client's cursor is noted every couple of seconds so that, if
//! its node dies, another node resumes it close to where it was. One Redis round trip per
//! client per note would make this the node's most frequent Redis write; instead notes are
//! collected (the newest per client) and written together every [`NOTE_INTERVAL`] with one
//! pipeline of `cursor.lua` calls, which only ever move a record's cursor forward: a note that
//! is written after a newer record (a client that detached meanwhile) cannot undo it.
use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use parking_lot::Mutex;
use redis::Script;

use super::{keys, RedisBroker};
use crate::broker::SessionRecord;
use crate::topic::SessionId;

/// How often collected notes are written.
pub const NOTE_INTERVAL: Duration = Duration::from_millis(250);
/// Most notes held between two writes; more are dropped (and counted), their clients are
/// noted again at their next interval.
const MAX_NOTES: usize = 100_000;

/// Notes waiting for the next write.
pub struct CursorNotes {
    pending: Mutex<HashMap<SessionId, SessionRecord>>,
    script: Script,
}

// === impl CursorNotes ===

impl CursorNotes {
    pub fn new() -> Self {
        CursorNotes {
            pending: Mutex::new(HashMap::new()),
            script: Script::new(include_str!("cursor.lua")),
        }
    }

    /// Keep the newest note of `session`. Returns `false` if it was dropped (too many).
    pub fn note(&self, session: SessionId, record: SessionRecord) -> bool {
        let mut pending = self.pending.lock();
        if pending.len() >= MAX_NOTES && !pending.contains_key(&session) {
            return false;
        }
        pending.insert(session, record);
        true
    }

    /// Forget the pending note of `session` (a full record is being written).
    pub fn forget(&self, session: &str) {
        self.pending.lock().remove(session);
    }

    fn take(&self) -> HashMap<SessionId, SessionRecord> {
        std::mem::take(&mut *self.pending.lock())
    }
}

impl Default for CursorNotes {
    fn default() -> Self {
        Self::new()
    }
}

/// Write the collected notes every [`NOTE_INTERVAL`], for as long as the broker lives.
pub async fn write_loop(broker: Weak<RedisBroker>) {
    let mut interval = tokio::time::interval(NOTE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let notes = broker.cursor_notes.take();
        if notes.is_empty() {
            continue;
        }
        let ttl = broker.session_ttl_ms();
        let node = broker.settings.node_id.clone();
        let script = &broker.cursor_notes.script;
        let invocations: Vec<_> = notes
            .iter()
            .map(|(session, record)| {
                let mut invocation = script.key(keys::session(session));
                invocation
                    .arg(record.epoch)
                    .arg(record.cursor)
                    .arg(ttl)
                    .arg(record.topic.as_deref().unwrap_or_default())
                    .arg(record.node.as_deref().unwrap_or(&node));
                invocation
            })
            .collect();
        let mut pipe = redis::pipe();
        for invocation in &invocations {
            pipe.invoke_script(invocation).ignore();
        }
        let mut conn = broker.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {}
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // Redis lost its script cache (a restart): one by one, which loads the script.
                for invocation in &invocations {
                    if let Err(error) = invocation.invoke_async::<()>(&mut conn).await {
                        tracing::debug!(%error, "cannot write a cursor note");
                        break;
                    }
                }
            }
            // Unreachable: the notes are lost, each client is noted again at its next interval
            // (a record is at most that much older).
            Err(error) => tracing::debug!(%error, notes = notes.len(), "cannot write cursor notes"),
        }
    }
}
