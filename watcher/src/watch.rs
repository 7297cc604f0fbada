//! Per-service mode: one blocking-query loop per service ([`crate::query`]: block on the last
//! index, reset when it goes backwards, pace with a token bucket, back off on errors), publishing
//! only when the instance set really changed (a blocking query may return without a change).
//!
//! [`watch_followed`] runs one such loop per followed service, starting and stopping them as the
//! catalog follower ([`crate::follow`]) says, each on the client its [`Pool`] hands out (one
//! client for all in per-service mode; a few HTTP/2 connections in streams mode,
//! [`crate::streams`]).

use std::collections::HashMap;
use std::time::Duration;

use consul::{Client, View};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::debug;

use crate::follow::Event;
use crate::outage::confirm_empty;
use crate::query::{Answer, Query, Subject};
use crate::state::State;
use crate::streams::{Lane, Pool};

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

/// Watches one service until the task is dropped, writing every change into `state`.
pub async fn watch_service(client: Client, service: String, cfg: WatchConfig, state: State) {
    watch_service_on(Lane { client, permits: None }, service, cfg, state).await;
}

/// [`watch_service`] on a lane of a [`Pool`]: each read holds one of the lane's permits (if it
/// has any) while it is in flight.
pub async fn watch_service_on(lane: Lane, service: String, cfg: WatchConfig, state: State) {
    let mut query = Query::new(Subject::Service(service.clone()), &cfg, 0);
    let (client, permits, cfg, service) = (&lane.client, &lane.permits, &cfg, service.as_str());
    loop {
        // Compared with the published set, as in multiplexed mode.
        let had = state.has_instances(service);
        let read = query.next(|index| async move {
            let _permit = match permits {
                Some(p) => p.acquire().await.ok(),
                None => None,
            };
            let r = client.instances(cfg.view, service, index, cfg.wait).await?;
            confirm_empty(client, had, r).await
        });
        match read.await {
            Ok(Answer { value: r, .. }) => {
                state.set_status(service, true, None);
                let (index, instances) = (r.index, r.instances.len());
                if state.set_snapshot_if_changed(service, index, r.instances) {
                    debug!(service, index, instances, "instance set changed");
                } else {
                    debug!(service, index, "blocking query returned without a change");
                }
            }
            Err(e) => state.set_status(service, false, Some(e.to_string())),
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
