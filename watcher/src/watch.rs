//! One blocking-query loop per service, done the way Consul's documentation asks:
//! block on the last index, reset when the index goes backwards, never block on index 0, pace
//! every request with a token bucket, back off with jitter on errors, and publish only when the
//! instance set really changed (a blocking query may return without a change).

use std::time::Duration;

use consul::index::{self, Next};
use consul::{Client, Instance, View};
use tracing::{debug, warn};

use crate::state::State;
use common::backoff::{Backoff, TokenBucket};

/// How a service is watched.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Health (passing only) or catalog (everything registered).
    pub view: View,
    /// The `wait` of each blocking query.
    pub wait: Duration,
    /// Requests per second per service, sustained.
    pub rate: f64,
    /// Requests allowed back to back before the rate applies.
    pub burst: u32,
    /// Shortest backoff after an error.
    pub backoff_min: Duration,
    /// Longest backoff after an error.
    pub backoff_max: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            view: View::Health,
            wait: Duration::from_secs(300),
            rate: 10.0,
            burst: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The loop's memory between two answers.
#[derive(Debug, Default)]
struct Progress {
    index: u64,
    last: Option<Vec<Instance>>,
}

impl Progress {
    /// After a failed read, Consul may have restarted with an empty state whose index is below
    /// ours: blocking on our old index would then hang until the new index overtakes it (up to
    /// `wait`). So the next read after any failure is a fresh, non-blocking one.
    fn failed(&mut self) {
        self.index = 0;
    }

    /// Applies one answer; returns the set to publish if it differs from the last one published.
    fn apply(&mut self, service: &str, returned: u64, instances: Vec<Instance>) -> Option<Vec<Instance>> {
        match index::next(self.index, returned) {
            Next::Reset => {
                warn!(
                    service,
                    from = self.index,
                    to = returned,
                    "Consul index went backwards (restart or restore); re-reading"
                );
                self.index = 0;
            }
            Next::Block(i) => self.index = i,
        }
        if self.last.as_ref() == Some(&instances) {
            return None;
        }
        self.last = Some(instances.clone());
        Some(instances)
    }
}

/// Watches one service until the task is dropped, writing every change into `state`.
pub async fn watch_service(client: Client, service: String, cfg: WatchConfig, state: State) {
    let mut progress = Progress::default();
    let mut bucket = TokenBucket::new(cfg.burst, cfg.rate);
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    loop {
        bucket.take().await;
        match client.instances(cfg.view, &service, progress.index, cfg.wait).await {
            Ok(r) => {
                backoff.reset();
                state.set_status(&service, true, None);
                let returned = r.index;
                if let Some(set) = progress.apply(&service, returned, r.instances) {
                    debug!(service, index = returned, instances = set.len(), "instance set changed");
                    state.set_snapshot(&service, returned, set);
                } else {
                    debug!(service, index = returned, "blocking query returned without a change");
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(service, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read service from Consul");
                state.set_status(&service, false, Some(e.to_string()));
                progress.failed();
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(port: u16) -> Instance {
        Instance::new(format!("web-{port}"), "n", "127.0.0.1", port)
    }

    #[test]
    fn publishes_first_read_and_real_changes_only() {
        let mut p = Progress::default();
        assert_eq!(p.apply("web", 10, vec![inst(1)]), Some(vec![inst(1)]));
        assert_eq!(p.index, 10);
        // Index moved (another service changed) but our set did not: nothing to publish.
        assert_eq!(p.apply("web", 12, vec![inst(1)]), None);
        assert_eq!(p.index, 12);
        assert_eq!(p.apply("web", 13, vec![inst(1), inst(2)]), Some(vec![inst(1), inst(2)]));
    }

    #[test]
    fn index_going_backwards_resets_and_still_publishes_the_new_truth() {
        let mut p = Progress::default();
        p.apply("web", 1000, vec![inst(1), inst(2)]);
        // Consul restarted with an empty state.
        assert_eq!(p.apply("web", 7, vec![]), Some(vec![]));
        assert_eq!(p.index, 0, "next read must be a fresh, non-blocking one");
        assert_eq!(p.apply("web", 7, vec![]), None);
        assert_eq!(p.index, 7);
    }

    #[test]
    fn after_a_failure_the_next_read_does_not_block_on_an_old_index() {
        let mut p = Progress::default();
        p.apply("web", 1000, vec![inst(1)]);
        p.failed();
        assert_eq!(p.index, 0);
        // Same set as before the outage: nothing to publish.
        assert_eq!(p.apply("web", 12, vec![inst(1)]), None);
        assert_eq!(p.index, 12);
    }

    #[test]
    fn index_zero_from_consul_is_treated_as_one() {
        let mut p = Progress::default();
        p.apply("web", 0, vec![]);
        assert_eq!(p.index, 1);
    }
}
