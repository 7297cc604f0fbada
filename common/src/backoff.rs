//! Pacing for loops that talk to Consul or Docker: jittered exponential backoff after errors, and
//! a token bucket so that even a misbehaving server (a blocking query that returns at once,
//! forever) never turns a loop into a busy loop.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Exponential backoff with "equal jitter": each delay is uniform in `[d/2, d]`, `d` doubling
/// from `min` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    last: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self { min, max: max.max(min), next: min, last: min }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.last = d;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// The nominal delay the last [`Backoff::next_delay`] was based on (`min` before the first),
    /// without advancing: for callers that want "the current pace" rather than another failure.
    pub fn current(&self) -> Duration {
        self.last
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
        self.last = self.min;
    }
}

/// A token bucket: `burst` requests at once, then `rate` per second.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        let capacity = f64::from(burst.max(1));
        Self { capacity, tokens: capacity, per_sec: per_sec.max(0.001), last: Instant::now() }
    }

    /// Waits until a token is available and takes it.
    pub async fn take(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.capacity);
        self.last = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.last = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        assert!(delays[5] >= Duration::from_millis(400), "{delays:?}");
        b.reset();
        assert_eq!(b.current(), Duration::from_millis(100));
        assert!(b.next_delay() <= Duration::from_millis(100));
        b.next_delay();
        assert_eq!(b.current(), Duration::from_millis(200));
        assert_eq!(b.current(), Duration::from_millis(200), "current() does not advance");
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.current(), Duration::from_millis(800), "capped");
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_paces() {
        let mut bucket = TokenBucket::new(3, 10.0);
        let start = Instant::now();
        for _ in 0..3 {
            bucket.take().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        for _ in 0..10 {
            bucket.take().await;
        }
        // Ten more at 10/s take about a second: no spinning.
        assert!(start.elapsed() >= Duration::from_millis(990), "{:?}", start.elapsed());
    }
}
