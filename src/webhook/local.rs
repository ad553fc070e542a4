//! The webhook queue of a node alone: in memory, bounded. When the backend stays away long
//! enough for [`MAX_QUEUED`] events to wait, the oldest are dropped (counted in `/metrics` as
//! `webhook_events{outcome="dropped"}` and logged): the node keeps serving rather than grow.
use std::collections::VecDeque;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Event, Source};
use crate::metrics::Metrics;
use crate::topic::StoreError;

/// Most events waiting for the backend on a node alone.
pub const MAX_QUEUED: usize = 10_000;
/// How long [`Source::take`] waits for an event before answering empty.
const IDLE_WAIT: Duration = Duration::from_millis(500);

pub struct Local {
    queue: Mutex<VecDeque<Event>>,
    next_id: Mutex<u64>,
    /// A random part of every id, so ids stay unique across restarts of the node.
    epoch: String,
    added: Notify,
    metrics: Metrics,
}

impl Local {
    pub fn new(metrics: Metrics) -> Self {
        Local {
            queue: Mutex::default(),
            next_id: Mutex::new(0),
            epoch: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            added: Notify::new(),
            metrics,
        }
    }

    /// Queue `event`, giving it its id; drops the oldest waiting event when full.
    pub fn push(&self, mut event: Event) {
        let n = {
            let mut next = self.next_id.lock();
            *next += 1;
            *next
        };
        event.id = format!("{}-{n}", self.epoch);
        let dropped = {
            let mut queue = self.queue.lock();
            let dropped = if queue.len() >= MAX_QUEUED {
                queue.pop_front()
            } else {
                None
            };
            queue.push_back(event);
            dropped
        };
        if let Some(old) = dropped {
            self.metrics.webhook_events("dropped", 1);
            tracing::warn!(id = %old.id, max = MAX_QUEUED,
                "webhooks: the backend is away and the queue is full; oldest event dropped");
        }
        self.added.notify_one();
    }

    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source for Local {
    fn take(&self, max: usize) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(async move {
            let added = self.added.notified();
            let first: Vec<Event> = self.queue.lock().iter().take(max).cloned().collect();
            if !first.is_empty() {
                return Ok(first);
            }
            let _ = tokio::time::timeout(IDLE_WAIT, added).await;
            Ok(self.queue.lock().iter().take(max).cloned().collect())
        })
    }

    fn done(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut queue = self.queue.lock();
        // Delivered events are at the front, unless dropped meanwhile.
        let mut ids: std::collections::HashSet<String> = ids.into_iter().collect();
        while queue.front().is_some_and(|e| ids.remove(&e.id)) {
            queue.pop_front();
        }
        if !ids.is_empty() {
            queue.retain(|e| !ids.contains(&e.id));
        }
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::Kind;

    fn event(user: &str) -> Event {
        Event::new("/room", user, true, None, "n1")
    }

    #[tokio::test]
    async fn taken_events_stay_until_done_and_ids_are_unique() {
        let local = Local::new(Metrics::default());
        local.push(event("a"));
        local.push(event("b"));
        let taken = local.take(10).await.unwrap();
        assert_eq!(taken.len(), 2);
        assert_ne!(taken[0].id, taken[1].id);
        assert_eq!(taken[0].kind, Kind::Joined);
        let again = local.take(1).await.unwrap();
        assert_eq!(again[0].id, taken[0].id, "not done: taken again, same id");
        local.done(vec![taken[0].id.clone()]).await.unwrap();
        let rest = local.take(10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].user, "b");
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_and_counts_it() {
        let metrics = Metrics::default();
        let local = Local::new(metrics.clone());
        for n in 0..MAX_QUEUED + 3 {
            local.push(event(&format!("u{n}")));
        }
        assert_eq!(local.len(), MAX_QUEUED);
        let first = local.take(1).await.unwrap();
        assert_eq!(first[0].user, "u3", "the three oldest went");
        assert_eq!(metrics.webhook_events_count("dropped"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_queue_answers_empty_after_a_short_wait() {
        let local = Local::new(Metrics::default());
        assert!(local.take(10).await.unwrap().is_empty());
        assert!(local.is_empty());
    }
}
