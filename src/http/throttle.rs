//! Failure counters for the login limits: how many times a key (an email,
//! a client address, or both) failed in the current window.
//!
//! governor's limiters count every call and cannot be asked "is this key
//! blocked?" without spending a cell. A login limit must count only
//! failures, yet refuse a blocked key before its password is checked (else
//! the limit would not slow a guesser down), so it needs a peek; that is
//! all this adds. The map is trimmed by the housekeeping task, so keys of
//! past windows do not pile up.

use dashmap::DashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct FailureLimiter<K: Eq + Hash> {
    limit: u32,
    window: Duration,
    failures: DashMap<K, Window>,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl<K: Eq + Hash> FailureLimiter<K> {
    /// At most `limit` failures per key in each `window`.
    pub fn new(limit: u32, window: Duration) -> FailureLimiter<K> {
        FailureLimiter {
            limit: limit.max(1),
            window,
            failures: DashMap::new(),
        }
    }

    /// Whether `key` used up its failures in the current window.
    pub fn is_blocked(&self, key: &K) -> bool {
        self.failures
            .get(key)
            .is_some_and(|w| w.started.elapsed() < self.window && w.failures >= self.limit)
    }

    /// Counts one failure of `key`.
    pub fn failed(&self, key: K) {
        let now = Instant::now();
        let mut entry = self.failures.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(entry.started) >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Drops keys whose window is over.
    pub fn trim(&self) {
        self.failures
            .retain(|_, w| w.started.elapsed() < self.window);
    }

    pub fn len(&self) -> usize {
        self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_count_and_windows_end() {
        let limiter = FailureLimiter::new(2, Duration::from_millis(50));
        assert!(!limiter.is_blocked(&"a"));
        limiter.failed("a");
        assert!(!limiter.is_blocked(&"a"));
        limiter.failed("a");
        assert!(limiter.is_blocked(&"a"));
        assert!(!limiter.is_blocked(&"b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!limiter.is_blocked(&"a"));
        limiter.trim();
        assert!(limiter.is_empty());
        limiter.failed("a");
        assert!(!limiter.is_blocked(&"a"));
        assert_eq!(limiter.len(), 1);
    }
}
