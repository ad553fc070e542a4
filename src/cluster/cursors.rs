//! Cursor notes: where each pushing client stands, written to its session record in batches.
//!
//! A WebSocket, SSE or streaming client's cursor is noted every couple of seconds so that, if
//! its node dies, another node resumes it close to where it was. One Redis round trip per
//! client per note would make this the node's most frequent Redis write; instead notes are
//! collected (the newest per client) and written together every [`NOTE_INTERVAL`] in one
//! pipeline.
//!
//! A note goes to its own field of the record, [`NOTED`] (`"<epoch>:<cursor>"`), and readers
//! take the later of it and the record's own position (see `record_from`), so a note written
//! after a newer record (a client that detached meanwhile, maybe resumed on another node)
//! cannot undo it. That makes a note two plain commands (`HSET`, `PEXPIRE`); a Lua script that
//! compared before writing cost Redis ~18 µs per note instead of ~3, and with thousands of
//! pushing clients the notes were most of Redis's CPU (`INFO commandstats`).
use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use parking_lot::Mutex;

use super::{keys, RedisBroker};
use crate::topic::SessionId;

/// How often collected notes are written.
pub const NOTE_INTERVAL: Duration = Duration::from_millis(250);
/// Most notes held between two writes; more are dropped (and counted), their clients are
/// noted again at their next interval.
const MAX_NOTES: usize = 100_000;

/// The record field a note writes.
pub const NOTED: &str = "noted";

/// Notes waiting for the next write.
pub struct CursorNotes {
    /// The newest position noted per client: topic epoch, cursor.
    pending: Mutex<HashMap<SessionId, (u64, u64)>>,
}

// === impl CursorNotes ===

impl CursorNotes {
    pub fn new() -> Self {
        CursorNotes {
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Keep the newest note of `session`. Returns `false` if it was dropped (too many).
    pub fn note(&self, session: SessionId, epoch: u64, cursor: u64) -> bool {
        let mut pending = self.pending.lock();
        if pending.len() >= MAX_NOTES && !pending.contains_key(&session) {
            return false;
        }
        pending.insert(session, (epoch, cursor));
        true
    }

    /// Forget the pending note of `session` (a full record is being written).
    pub fn forget(&self, session: &str) {
        self.pending.lock().remove(session);
    }

    fn take(&self) -> HashMap<SessionId, (u64, u64)> {
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
        let ttl = broker.session_ttl_ms() as i64;
        let mut pipe = redis::pipe();
        for (session, &(epoch, cursor)) in &notes {
            let key = keys::session(session);
            pipe.hset(&key, NOTED, noted(epoch, cursor))
                .ignore()
                .pexpire(&key, ttl)
                .ignore();
        }
        let mut conn = broker.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {}
            // Unreachable: the notes are lost, each client is noted again at its next interval
            // (a record is at most that much older).
            Err(error) => tracing::debug!(%error, notes = notes.len(), "cannot write cursor notes"),
        }
    }
}

/// A note's value.
fn noted(epoch: u64, cursor: u64) -> String {
    format!("{epoch}:{cursor}")
}

/// The position a note holds, if it is one.
pub fn parse_noted(value: &str) -> Option<(u64, u64)> {
    let (epoch, cursor) = value.split_once(':')?;
    Some((epoch.parse().ok()?, cursor.parse().ok()?))
}
