//! Fixed-window rate limits for tunnel handshakes (per client address and per system key).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts attempts per key in fixed windows; a limit of 0 disables the check.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    state: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    counts: HashMap<String, (Instant, u32)>,
    last_purge: Option<Instant>,
}

impl RateLimiter {
    /// `limit` attempts per `window` for each key.
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            state: Mutex::default(),
        }
    }

    /// Record an attempt for `key`; false when the key is over its limit in this window.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.window;
        if st
            .last_purge
            .is_none_or(|t| now.duration_since(t) >= window)
        {
            st.counts
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            st.last_purge = Some(now);
        }
        let entry = st.counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_attempts_over_the_limit_until_the_window_ends() {
        let rl = RateLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(rl.allow_at("a", t0));
        assert!(rl.allow_at("a", t0));
        assert!(!rl.allow_at("a", t0));
        assert!(rl.allow_at("b", t0), "keys are independent");
        assert!(rl.allow_at("a", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn zero_limit_disables_the_check() {
        let rl = RateLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            assert!(rl.allow("a"));
        }
    }
}
