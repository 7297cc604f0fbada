//! [`Backoff`]: exponential delays with jitter between retries, so a Docker or Consul outage is
//! retried promptly at first and then at a bounded, unsynchronised pace; never a busy loop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff from `base` doubling up to `max`, each delay jittered down by up to 25%.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max` (at least `base`).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base), attempt: 0 }
    }

    /// The next delay; each call doubles the nominal delay up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Jitter from the clock: enough to desynchronise restarts, no RNG dependency needed.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let cut = nominal.mul_f64(f64::from(nanos % 250) / 1000.0);
        nominal.saturating_sub(cut).max(Duration::from_millis(50))
    }

    /// The delay the last [`Backoff::next_delay`] was based on (`base` before the first), without
    /// advancing: for callers that want "the current pace" rather than another failure.
    pub fn current(&self) -> Duration {
        self.base.saturating_mul(1u32 << self.attempt.saturating_sub(1).min(16)).min(self.max)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(75));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(750));
        b.reset();
        assert_eq!(b.current(), Duration::from_millis(100));
        assert!(b.next_delay() <= Duration::from_millis(100));
        b.next_delay();
        assert_eq!(b.current(), Duration::from_millis(200));
        assert_eq!(b.current(), Duration::from_millis(200), "current() does not advance");
    }

    #[test]
    fn never_zero_and_cap_at_least_base() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(b.next_delay() >= Duration::from_millis(50));
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert!(b.next_delay() > Duration::from_secs(1));
    }
}
