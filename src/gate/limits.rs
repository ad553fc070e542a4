//! Limits every session meets, whichever protocol it speaks: how fast it may publish.
//!
//! One token bucket per session (`--max-publishes-per-sec`, the burst as large), kept by
//! `governor` in one keyed limiter of the node. A client's message over its rate is refused
//! by the gate: `429` for a POST, `1008` for a WebSocket, counted as
//! `nimbus_limit_hits_total{limit="publish_rate"}`. The keyed state is bounded: buckets of
//! sessions that are full again are dropped every `SWEEP_EVERY` checks.
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two sweeps of the buckets that are full again.
const SWEEP_EVERY: u64 = 4096;

/// The rate limits of a node.
pub struct Limits {
    publish: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

// === impl Limits ===

impl Limits {
    /// `per_sec` messages per second per session, bursts as large; `0` = no limit.
    pub fn new(per_sec: u32) -> Self {
        Limits {
            publish: NonZeroU32::new(per_sec).map(|n| RateLimiter::keyed(Quota::per_second(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether client `key` may publish `n` more messages now.
    pub fn admit_publish(&self, key: String, n: u32) -> bool {
        let Some(limiter) = &self.publish else {
            return true;
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let Some(n) = NonZeroU32::new(n) else {
            return true;
        };
        // More than the burst at once can never pass: refused like any other excess.
        matches!(limiter.check_key_n(&key, n), Ok(Ok(())))
    }

    /// Buckets kept now (for tests of the bound).
    pub fn tracked(&self) -> usize {
        self.publish.as_ref().map_or(0, |l| l.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_over_its_rate_is_refused_and_others_are_not() {
        let limits = Limits::new(5);
        let admitted = (0..20)
            .filter(|_| limits.admit_publish("a".into(), 1))
            .count();
        assert_eq!(
            admitted, 5,
            "the burst, then nothing within the same second"
        );
        assert!(limits.admit_publish("b".into(), 1));
        assert_eq!(limits.tracked(), 2);
        let off = Limits::new(0);
        assert!((0..1000).all(|_| off.admit_publish("a".into(), 1)));
    }
}
