//! A topic's replay history: the last messages, bounded by count, bytes and age.
//!
//! This is the "cache" Atmosphere keeps per client, kept once per topic instead: a client's
//! cache is the part of the history after its cursor.
//!
//! Every history of a node also draws on one [`HistoryBudget`] (`--history-budget-bytes`),
//! since the number of topics has no bound of its own. Policy when the node is over it: the
//! oldest messages of the node go first, whichever topic holds them (the budget keeps every
//! retained message in arrival order); each message so evicted is counted
//! (`nimbus_history_evictions_total`), and a client whose cursor was before it counts it as
//! missed when it catches up.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::Envelope;

/// Bounds of a topic's history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
    /// The node's [`HistoryBudget`], over every topic.
    pub budget_bytes: usize,
}

/// The node-wide bound on the memory of every topic's history.
#[derive(Debug)]
pub struct HistoryBudget {
    max: usize,
    used: AtomicUsize,
    /// Messages evicted because the node was over its budget.
    evicted: AtomicU64,
    /// Messages retained by every history now.
    retained: AtomicUsize,
    /// Every retained message, oldest first (with entries of messages gone since, dropped
    /// when met and swept when they outnumber the live ones).
    order: Mutex<VecDeque<Retained>>,
}

/// One message a history retained, as the budget remembers it.
#[derive(Debug)]
struct Retained {
    history: Weak<RwLock<History>>,
    envelope: Weak<Envelope>,
}

impl HistoryBudget {
    pub fn new(max: usize) -> Self {
        HistoryBudget {
            max: max.max(1),
            used: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            retained: AtomicUsize::new(0),
            order: Mutex::new(VecDeque::new()),
        }
    }

    /// `history` (not locked by the caller) has just retained `envelope`: note it, then, while
    /// the node is over its budget, evict the node's oldest messages.
    pub fn note(&self, history: &Arc<RwLock<History>>, envelope: &Arc<Envelope>) {
        let mut order = self.order.lock();
        order.push_back(Retained {
            history: Arc::downgrade(history),
            envelope: Arc::downgrade(envelope),
        });
        if order.len() > 2 * self.retained.load(Ordering::Relaxed) + 1024 {
            order.retain(|r| r.envelope.strong_count() > 0);
        }
        // Lock order: the budget's list, then one history at a time (a history never takes
        // the list while it is locked), so evictions across topics cannot deadlock.
        while self.is_over() {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            let (Some(history), true) =
                (oldest.history.upgrade(), oldest.envelope.strong_count() > 0)
            else {
                continue;
            };
            if history.write().evict_if_oldest(&oldest.envelope) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Bytes charged to the budget now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Messages evicted for the budget so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn is_over(&self) -> bool {
        self.used() > self.max
    }
}

/// What a retained message costs the budget: the envelope, its text, and the two frames a
/// delivery builds from it (the wire format and its whole WebSocket frame), which live as long
/// as the envelope.
fn cost(envelope: &Envelope) -> usize {
    envelope.weight() + 2 * envelope.text.len()
}

/// What a message of `text_len` bytes will cost every history that retains it (see `cost`).
pub fn retained_cost(text_len: usize) -> usize {
    3 * text_len + std::mem::size_of::<Envelope>()
}

/// The retained messages of one topic, oldest first.
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    budget: Arc<HistoryBudget>,
    entries: VecDeque<Arc<Envelope>>,
    bytes: usize,
    /// What this history has charged to the budget.
    charged: usize,
    /// Messages evicted so far (they can no longer be replayed).
    pub evicted: u64,
}

/// What a cursor can still replay.
pub struct Replay {
    /// Messages after the cursor, oldest first.
    pub messages: Vec<Arc<Envelope>>,
    /// Messages after the cursor that were already evicted: lost for this client.
    pub missed: u64,
}

impl History {
    pub fn new(limits: HistoryLimits, budget: Arc<HistoryBudget>) -> Self {
        History {
            limits,
            budget,
            entries: VecDeque::new(),
            bytes: 0,
            charged: 0,
            evicted: 0,
        }
    }

    pub fn push(&mut self, envelope: Arc<Envelope>) {
        self.bytes += envelope.weight();
        let cost = cost(&envelope);
        self.charged += cost;
        self.budget.used.fetch_add(cost, Ordering::Relaxed);
        self.entries.push_back(envelope);
        self.budget.retained.fetch_add(1, Ordering::Relaxed);
        while self.entries.len() > self.limits.max_messages
            || (self.bytes > self.limits.max_bytes && self.entries.len() > 1)
        {
            self.evict_oldest();
        }
    }

    /// Evict the oldest message if it is `envelope` (the budget's oldest); whether it was.
    fn evict_if_oldest(&mut self, envelope: &Weak<Envelope>) -> bool {
        let oldest = self
            .entries
            .front()
            .is_some_and(|front| std::ptr::eq(Arc::as_ptr(front), envelope.as_ptr()));
        if oldest {
            self.evict_oldest();
        }
        oldest
    }

    /// Drop entries older than the age limit.
    pub fn expire(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if now.duration_since(front.accepted_at) <= self.limits.max_age {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.bytes -= old.weight();
            self.refund(cost(&old));
            self.budget.retained.fetch_sub(1, Ordering::Relaxed);
            self.evicted += 1;
        }
    }

    fn refund(&mut self, cost: usize) {
        self.charged -= cost;
        self.budget.used.fetch_sub(cost, Ordering::Relaxed);
    }

    /// Up to `limit` messages after `cursor` that `accept` lets through, and how many messages
    /// after `cursor` were evicted before anyone could replay them.
    pub fn after(&self, cursor: u64, limit: usize, accept: impl Fn(&Envelope) -> bool) -> Replay {
        let first = self.entries.front().map(|e| e.seq);
        let missed = match first {
            Some(first) if first > cursor + 1 => first - cursor - 1,
            _ => 0,
        };
        let start = match first {
            Some(first) if cursor >= first => (cursor - first + 1) as usize,
            _ => 0,
        };
        let messages = self
            .entries
            .iter()
            .skip(start)
            .filter(|e| accept(e))
            .take(limit)
            .cloned()
            .collect();
        Replay { messages, missed }
    }

    /// Forget everything (the topic's numbering restarted).
    pub fn clear(&mut self) {
        self.budget
            .retained
            .fetch_sub(self.entries.len(), Ordering::Relaxed);
        self.entries.clear();
        self.bytes = 0;
        self.refund(self.charged);
    }

    /// The retained messages, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Arc<Envelope>> {
        self.entries.iter().rev()
    }

    /// Sequence of the oldest retained message.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Drop for History {
    /// A topic that goes away gives its share of the budget back.
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.charged, Ordering::Relaxed);
        self.budget
            .retained
            .fetch_sub(self.entries.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{Audience, Message};

    fn env(seq: u64, text: &str) -> Arc<Envelope> {
        Arc::new(Envelope::new(
            "/t".into(),
            seq,
            Audience::All,
            Message::text(text),
        ))
    }

    fn limits(max_messages: usize) -> HistoryLimits {
        HistoryLimits {
            max_messages,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(60),
            budget_bytes: usize::MAX,
        }
    }

    fn unbounded() -> Arc<HistoryBudget> {
        Arc::new(HistoryBudget::new(usize::MAX))
    }

    #[test]
    fn replays_after_cursor_in_order() {
        let mut h = History::new(limits(10), unbounded());
        for seq in 1..=5 {
            h.push(env(seq, "m"));
        }
        let r = h.after(2, usize::MAX, |_| true);
        assert_eq!(
            r.messages.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(r.missed, 0);
        assert!(h.after(5, usize::MAX, |_| true).messages.is_empty());
    }

    #[test]
    fn counts_what_was_evicted_past_a_cursor() {
        let mut h = History::new(limits(3), unbounded());
        for seq in 1..=6 {
            h.push(env(seq, "m"));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.evicted, 3);
        // Cursor 1: messages 2 and 3 were evicted before this client saw them.
        let r = h.after(1, usize::MAX, |_| true);
        assert_eq!(r.missed, 2);
        assert_eq!(
            r.messages.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
    }

    #[test]
    fn byte_limit_keeps_at_least_the_newest() {
        let mut h = History::new(
            HistoryLimits {
                max_messages: 100,
                max_bytes: 1,
                max_age: Duration::from_secs(60),
                budget_bytes: usize::MAX,
            },
            unbounded(),
        );
        h.push(env(1, "aaaa"));
        h.push(env(2, "bbbb"));
        assert_eq!(h.len(), 1);
        assert_eq!(h.after(0, 10, |_| true).messages[0].seq, 2);
    }

    /// Over the node's budget the node's oldest messages go first, whichever topic holds them;
    /// a topic that goes away gives its share back.
    #[test]
    fn the_node_budget_evicts_the_oldest_messages_of_any_topic() {
        let one = cost(&env(0, "0123456789"));
        let budget = Arc::new(HistoryBudget::new(10 * one));
        let quiet = Arc::new(RwLock::new(History::new(limits(100), budget.clone())));
        let busy = Arc::new(RwLock::new(History::new(limits(100), budget.clone())));
        let push = |history: &Arc<RwLock<History>>, seq| {
            let envelope = env(seq, "0123456789");
            history.write().push(envelope.clone());
            budget.note(history, &envelope);
        };
        for seq in 1..=4 {
            push(&quiet, seq);
        }
        for seq in 1..=8 {
            push(&busy, seq);
        }
        // 12 retained for 10: the two oldest (quiet's first two) went.
        assert_eq!(quiet.read().first_seq(), Some(3));
        assert_eq!(busy.read().len(), 8);
        assert_eq!(budget.evicted(), 2);
        for seq in 9..=20 {
            push(&busy, seq);
        }
        assert_eq!(quiet.read().len(), 0);
        assert_eq!(busy.read().first_seq(), Some(11));
        assert!(budget.used() <= budget.max());
        drop(busy);
        assert_eq!(budget.used(), 0);
    }
}
