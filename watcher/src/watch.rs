//! Per-service mode: one blocking-query loop per service, done the way Consul's documentation
//! asks: block on the last index, reset when the index goes backwards, never block on index 0,
//! pace every request with a token bucket, back off with jitter on errors, and publish only when
//! the instance set really changed (a blocking query may return without a change).
//!
//! [`watch_followed`] runs one such loop per followed service, starting and stopping them as the
//! catalog follower ([`crate::follow`]) says, each on the client its [`Pool`] hands out (one
//! client for all in per-service mode; a few HTTP/2 connections in streams mode,
//! [`crate::streams`]). The `Cursor` rules here are shared by every loop.

use std::collections::HashMap;
use std::time::Duration;

use consul::index::{self, Next};
use consul::{Client, Instance, View};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::outage::{confirm_empty, Outage};

use crate::follow::Event;
use crate::state::State;
use crate::streams::{Lane, Pool};
use common::backoff::{Backoff, TokenBucket};

/// How a service is watched.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Health (instances whose checks all have an allowed status) or catalog (everything
    /// registered).
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
            view: View::default(),
            wait: Duration::from_secs(300),
            rate: 10.0,
            burst: 5,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Where a blocking-query loop stands: the index to block on, and whether everything it knew
/// must be re-read (first answer, an index reset, or a failure before it). Shared by the
/// per-service loops and the multiplexed watch.
#[derive(Debug)]
pub(crate) struct Cursor {
    pub(crate) index: u64,
    fresh: bool,
}

impl Cursor {
    /// Continues from an index read earlier (0: a fresh read).
    pub(crate) fn at(index: u64) -> Self {
        Self { index, fresh: false }
    }

    /// Applies an answer's index; true if every service must be re-read (first answer, or a
    /// reset / failure before it).
    pub(crate) fn advance(&mut self, what: &str, returned: u64) -> bool {
        let everything = std::mem::replace(&mut self.fresh, false);
        match index::next(self.index, returned) {
            Next::Reset => {
                warn!(
                    what,
                    from = self.index,
                    to = returned,
                    "Consul index went backwards (restart or restore); re-reading"
                );
                self.index = 0;
                true
            }
            Next::Block(i) => {
                self.index = i;
                everything
            }
        }
    }

    pub(crate) fn failed(&mut self) {
        self.index = 0;
        self.fresh = true;
    }
}

impl Default for Cursor {
    fn default() -> Self {
        Self { index: 0, fresh: true }
    }
}

/// The loop's memory between two answers.
#[derive(Debug, Default)]
struct Progress {
    cursor: Cursor,
    last: Option<Vec<Instance>>,
}

impl Progress {
    /// After a failed read, Consul may have restarted with an empty state whose index is below
    /// ours: blocking on our old index would then hang until the new index overtakes it (up to
    /// `wait`). So the next read after any failure is a fresh, non-blocking one.
    fn failed(&mut self) {
        self.cursor.failed();
    }

    /// Applies one answer; returns the set to publish if it differs from the last one published.
    fn apply(&mut self, service: &str, returned: u64, instances: Vec<Instance>) -> Option<Vec<Instance>> {
        self.cursor.advance(service, returned);
        if self.last.as_ref() == Some(&instances) {
            return None;
        }
        self.last = Some(instances.clone());
        Some(instances)
    }
}

/// Watches one service until the task is dropped, writing every change into `state`.
pub async fn watch_service(client: Client, service: String, cfg: WatchConfig, state: State) {
    watch_service_on(Lane { client, permits: None }, service, cfg, state).await;
}

/// [`watch_service`] on a lane of a [`Pool`]: each read holds one of the lane's permits (if it
/// has any) while it is in flight.
pub async fn watch_service_on(lane: Lane, service: String, cfg: WatchConfig, state: State) {
    let mut progress = Progress::default();
    let mut bucket = TokenBucket::new(cfg.burst, cfg.rate);
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut outage = Outage::default();
    let client = &lane.client;
    loop {
        bucket.take().await;
        let permit = match &lane.permits {
            Some(p) => p.acquire().await.ok(),
            None => None,
        };
        let read = match client.instances(cfg.view, &service, progress.cursor.index, cfg.wait).await {
            Ok(r) => confirm_empty(client, progress.last.as_ref().is_some_and(|l| !l.is_empty()), r).await,
            Err(e) => Err(e),
        };
        drop(permit);
        match read {
            Ok(r) => {
                backoff.reset();
                if outage.recovered() {
                    info!(service, "the service can be read from Consul again");
                }
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
                if outage.failed(&e) {
                    warn!(service, error = %e, "cannot read the service from Consul; retrying with backoff (logged again when this changes)");
                } else {
                    debug!(service, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read the service from Consul");
                }
                state.set_status(&service, false, Some(e.to_string()));
                progress.failed();
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Watches the static `services`, and every service the follower's `events` add, each with its
/// own loop on the client `pool` assigns it; stops a service's loop (and frees its place in the
/// pool) when it goes. Ends when `events` closes; dropping it stops every loop.
pub async fn watch_followed(
    pool: Pool,
    cfg: WatchConfig,
    state: State,
    services: Vec<String>,
    mut events: mpsc::Receiver<Event>,
) {
    let mut set = JoinSet::new();
    let mut running: HashMap<String, AbortHandle> = HashMap::new();
    let start = |set: &mut JoinSet<()>, running: &mut HashMap<String, AbortHandle>, service: String| {
        if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(service) {
            let service = slot.key().clone();
            let lane = pool.assign(&service);
            slot.insert(set.spawn(watch_service_on(lane, service, cfg.clone(), state.clone())));
        }
    };
    for s in services {
        start(&mut set, &mut running, s);
    }
    while let Some(event) = events.recv().await {
        let Event::Answer { change, .. } = event else { continue };
        for (service, _) in &change.gone {
            if let Some(task) = running.remove(service) {
                task.abort();
                pool.release(service);
            }
        }
        for service in change.added {
            start(&mut set, &mut running, service);
        }
        // Reap the loops just aborted, so a churning catalog does not grow the set.
        while set.try_join_next().is_some() {}
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
        assert_eq!(p.cursor.index, 10);
        // Index moved (another service changed) but our set did not: nothing to publish.
        assert_eq!(p.apply("web", 12, vec![inst(1)]), None);
        assert_eq!(p.cursor.index, 12);
        assert_eq!(p.apply("web", 13, vec![inst(1), inst(2)]), Some(vec![inst(1), inst(2)]));
    }

    #[test]
    fn index_going_backwards_resets_and_still_publishes_the_new_truth() {
        let mut p = Progress::default();
        p.apply("web", 1000, vec![inst(1), inst(2)]);
        // Consul restarted with an empty state.
        assert_eq!(p.apply("web", 7, vec![]), Some(vec![]));
        assert_eq!(p.cursor.index, 0, "next read must be a fresh, non-blocking one");
        assert_eq!(p.apply("web", 7, vec![]), None);
        assert_eq!(p.cursor.index, 7);
    }

    #[test]
    fn after_a_failure_the_next_read_does_not_block_on_an_old_index() {
        let mut p = Progress::default();
        p.apply("web", 1000, vec![inst(1)]);
        p.failed();
        assert_eq!(p.cursor.index, 0);
        // Same set as before the outage: nothing to publish.
        assert_eq!(p.apply("web", 12, vec![inst(1)]), None);
        assert_eq!(p.cursor.index, 12);
    }

    #[test]
    fn index_zero_from_consul_is_treated_as_one() {
        let mut p = Progress::default();
        p.apply("web", 0, vec![]);
        assert_eq!(p.cursor.index, 1);
    }

    #[test]
    fn cursor_rereads_everything_after_reset_or_failure() {
        let mut c = Cursor::default();
        assert!(c.advance("x", 10), "first answer");
        assert!(!c.advance("x", 12));
        c.failed();
        assert_eq!(c.index, 0);
        assert!(c.advance("x", 3));
        assert!(!c.advance("x", 4));
        assert!(c.advance("x", 2), "an index going backwards");
        assert_eq!(c.index, 0, "the next read is a fresh one");
        assert!(!c.advance("x", 2));
    }
}
