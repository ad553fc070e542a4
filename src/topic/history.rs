//! A topic's replay history: the last messages, bounded by count, bytes and age.
//!
//! This is the "cache" Atmosphere keeps per client, kept once per topic instead: a client's
//! cache is the part of the history after its cursor.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Envelope;

/// Bounds of a topic's history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// The retained messages of one topic, oldest first.
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    entries: VecDeque<Arc<Envelope>>,
    bytes: usize,
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
    pub fn new(limits: HistoryLimits) -> Self {
        History {
            limits,
            entries: VecDeque::new(),
            bytes: 0,
            evicted: 0,
        }
    }

    pub fn push(&mut self, envelope: Arc<Envelope>) {
        self.bytes += envelope.weight();
        self.entries.push_back(envelope);
        while self.entries.len() > self.limits.max_messages
            || (self.bytes > self.limits.max_bytes && self.entries.len() > 1)
        {
            self.evict_oldest();
        }
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
            self.evicted += 1;
        }
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
        self.entries.clear();
        self.bytes = 0;
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
        }
    }

    #[test]
    fn replays_after_cursor_in_order() {
        let mut h = History::new(limits(10));
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
        let mut h = History::new(limits(3));
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
        let mut h = History::new(HistoryLimits {
            max_messages: 100,
            max_bytes: 1,
            max_age: Duration::from_secs(60),
        });
        h.push(env(1, "aaaa"));
        h.push(env(2, "bbbb"));
        assert_eq!(h.len(), 1);
        assert_eq!(h.after(0, 10, |_| true).messages[0].seq, 2);
    }
}
