//! Limits every client meets, whichever protocol it speaks: how fast it may publish, how fast
//! an address may open connections, and how many connections an address or a user may hold.
//!
//! Publishing: one token bucket per signed-in user, or per client address for anonymous
//! clients (`--max-publishes-per-sec`, the burst as large), kept by `governor` in one keyed
//! limiter of the node. Opening: one bucket per address (`--max-connects-per-address-per-sec`).
//! The keyed state is bounded: buckets that are full again are dropped every `SWEEP_EVERY`
//! checks. Holding: the caps ([`Caps`]) are compared with the cluster's counts, which the
//! session layer reads from presence (the gate knows no store).
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two sweeps of the buckets that are full again.
const SWEEP_EVERY: u64 = 4096;

/// The settings of [`Limits`]; `0` turns a limit off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Messages per second per user (or anonymous address).
    pub publishes_per_sec: u32,
    /// What one user (or anonymous address) may have in the replay histories: bytes charged
    /// at most, within any `history_age`.
    pub history_share: u64,
    pub history_age: Duration,
    /// New connections per second per address, on one node.
    pub connects_per_sec: u32,
    pub caps: Caps,
}

/// How many connections one client may hold in the whole cluster; `0` = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub per_address: u64,
    pub per_user: u64,
}

impl Caps {
    /// Whether any connection count needs keeping.
    pub fn any(&self) -> bool {
        self.per_address > 0 || self.per_user > 0
    }
}

/// One token bucket per key, `per_sec` tokens a second and bursts as large; `0`: none.
fn keyed<K: std::hash::Hash + Eq + Clone>(per_sec: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(per_sec).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

/// A bucket of `bytes` that refills whole over `age` (`0` bytes: none). A client that sent
/// its share has to wait until what it sent could have aged out of the histories.
fn share(bytes: u64, age: Duration) -> Option<DefaultKeyedRateLimiter<String>> {
    let burst = NonZeroU32::new(u32::try_from(bytes).unwrap_or(u32::MAX))?;
    let period = (age / burst.get()).max(Duration::from_nanos(1));
    Quota::with_period(period).map(|quota| RateLimiter::keyed(quota.allow_burst(burst)))
}

/// The rate limits of a node.
pub struct Limits {
    publish: Option<DefaultKeyedRateLimiter<String>>,
    /// Bytes of history: a bucket as large as the share, refilled over the history's age.
    history: Option<DefaultKeyedRateLimiter<String>>,
    connects: Option<DefaultKeyedRateLimiter<IpAddr>>,
    caps: Caps,
    checks: AtomicU64,
}

// === impl Limits ===

impl Limits {
    pub fn new(settings: Settings) -> Self {
        Limits {
            publish: keyed(settings.publishes_per_sec),
            history: share(settings.history_share, settings.history_age),
            connects: keyed(settings.connects_per_sec),
            caps: settings.caps,
            checks: AtomicU64::new(0),
        }
    }

    /// Only a publish rate of `per_sec` (tests).
    #[cfg(test)]
    pub fn publishing(per_sec: u32) -> Self {
        Limits::new(Settings {
            publishes_per_sec: per_sec,
            ..Settings::default()
        })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Whether `address` may open one more connection now.
    pub fn admit_connect(&self, address: IpAddr) -> bool {
        let Some(limiter) = &self.connects else {
            return true;
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&address).is_ok()
    }

    /// Whether client `key` may publish `n` more messages now.
    pub fn admit_publish(&self, key: &String, n: u32) -> bool {
        let Some(limiter) = &self.publish else {
            return true;
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            if let Some(history) = &self.history {
                history.retain_recent();
                history.shrink_to_fit();
            }
        }
        let Some(n) = NonZeroU32::new(n) else {
            return true;
        };
        // More than the burst at once can never pass: refused like any other excess.
        matches!(limiter.check_key_n(key, n), Ok(Ok(())))
    }

    /// Whether client `key` may add `bytes` more to the histories now.
    pub fn admit_history(&self, key: &String, bytes: usize) -> bool {
        let Some(limiter) = &self.history else {
            return true;
        };
        let Some(n) = u32::try_from(bytes).ok().and_then(NonZeroU32::new) else {
            return bytes == 0;
        };
        matches!(limiter.check_key_n(key, n), Ok(Ok(())))
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
        let limits = Limits::publishing(5);
        let admitted = (0..20)
            .filter(|_| limits.admit_publish(&"a".into(), 1))
            .count();
        assert_eq!(
            admitted, 5,
            "the burst, then nothing within the same second"
        );
        assert!(limits.admit_publish(&"b".into(), 1));
        assert_eq!(limits.tracked(), 2);
        let off = Limits::publishing(0);
        assert!((0..1000).all(|_| off.admit_publish(&"a".into(), 1)));
    }

    #[test]
    fn a_client_past_its_history_share_waits_for_its_messages_to_age_out() {
        let limits = Limits::new(Settings {
            history_share: 1000,
            history_age: Duration::from_secs(3600),
            ..Settings::default()
        });
        let (a, b) = ("ip:a".to_string(), "ip:b".to_string());
        assert!(limits.admit_history(&a, 600));
        assert!(
            !limits.admit_history(&a, 600),
            "600 + 600 is over the share"
        );
        assert!(limits.admit_history(&a, 400), "what is left of it");
        assert!(
            !limits.admit_history(&a, 1),
            "a share refills over an hour, not at once"
        );
        assert!(
            limits.admit_history(&b, 1000),
            "another client's share is its own"
        );
        assert!(
            !limits.admit_history(&b, 5000),
            "more than a share at once, never"
        );
        assert!(
            Limits::publishing(1).admit_history(&a, 1 << 30),
            "no share: no limit"
        );
    }

    #[test]
    fn an_address_over_its_connect_rate_is_refused_and_others_are_not() {
        let limits = Limits::new(Settings {
            connects_per_sec: 3,
            ..Settings::default()
        });
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let admitted = (0..10).filter(|_| limits.admit_connect(a)).count();
        assert_eq!(admitted, 3);
        assert!(limits.admit_connect(b));
        let off = Limits::publishing(1);
        assert!((0..100).all(|_| off.admit_connect(a)), "no connect limit");
    }
}
