//! Reconnect backoff (REFERENCE 1.12), with the jitter the reference lacks (PROTOCOL section 10).
//!
//! Nominal delays are base, 2×base, 4×base … capped; each returned delay has "equal jitter"
//! (uniform in [nominal/2, nominal]) so that many agents cut off by one relay restart do not
//! reconnect in lockstep. Randomness comes from a seed the caller supplies.

use core::time::Duration;

/// First delay after a failure (the reference `RECONNECT_DELAY`).
pub const DEFAULT_BASE: Duration = Duration::from_secs(5);
/// Largest nominal delay (the reference `MAX_RECONNECT_DELAY`).
pub const DEFAULT_CAP: Duration = Duration::from_secs(300);
/// A connection that lasted longer than this resets the delay to the base.
pub const RESET_AFTER: Duration = Duration::from_secs(60);
/// Smallest nominal delay, whatever the configuration says: a zero base must not become a
/// reconnect storm.
pub const MIN_DELAY: Duration = Duration::from_millis(100);

/// Exponential backoff with equal jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    nominal: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff from `base` doubling up to `cap`. Both are raised to [`MIN_DELAY`]; a cap below
    /// the base wins (no delay exceeds the cap).
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Backoff {
        let cap = cap.max(MIN_DELAY);
        let base = base.max(MIN_DELAY).min(cap);
        Backoff {
            base,
            cap,
            nominal: base,
            rng: seed,
        }
    }

    /// The nominal delay the next call to [`Backoff::next_delay`] jitters.
    pub fn nominal(&self) -> Duration {
        self.nominal
    }

    /// The delay before the next attempt, then doubles the nominal delay up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = nominal.checked_mul(2).unwrap_or(self.cap).min(self.cap);
        let total = nominal.as_nanos();
        let half = total / 2;
        let span = total - half;
        // span < 2^96 (Duration::MAX in nanoseconds), so span + 1 cannot overflow.
        let jitter = u128::from(self.next_random()) % (span + 1);
        duration_from_nanos(half + jitter)
    }

    /// Reports how long the last connection lasted; a long one resets the delay.
    pub fn connection_ended(&mut self, lasted: Duration) {
        if lasted > RESET_AFTER {
            self.reset();
        }
    }

    /// Back to the base delay.
    pub fn reset(&mut self) {
        self.nominal = self.base;
    }

    /// splitmix64: small, fast and good enough for jitter.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BASE, DEFAULT_CAP, 0)
    }
}

/// A Duration of `nanos`, which never exceeds the nanoseconds of an existing Duration.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and fits in u32.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests;
