//! Multiplexed watching: many services over a handful of connections.
//!
//! One blocking query per service costs one HTTP connection per service, and Consul refuses more
//! than `limits.http_max_conns_per_client` (200 by default) from one address. Beyond a few
//! services the watcher instead holds two blocking queries and works out which services changed:
//!
//! - `/v1/health/state/any`: every check with its status and `ModifyIndex`. A service whose
//!   checks changed (added, removed, status or index moved) is dirty; a node-level check that
//!   changed status (a node failing) makes every service dirty.
//! - `/v1/catalog/services`: every service with its tags. A service whose tags changed, or that
//!   appeared or went, is dirty. This query belongs to [`crate::follow`], which hands every
//!   answer on ([`Event`]); when it follows services by tag, each answer also says which
//!   services are followed from now on (dirty: read from scratch) and which went (dropped). A service that has an instance without a check of its own (or
//!   no instance) may have changed too, since registering such an instance moves no check: on
//!   a cluster of a few nodes, one blocking query per node ([`crate::nodes`]) says which ones
//!   did; on a larger one, a node-by-node catalog scan ([`crate::scan`]) does, when that costs
//!   fewer requests than re-reading them all.
//!
//! Dirty services are re-read (non-blocking, at most [`READ_CONCURRENCY`] at once) and published
//! only if their set really changed. After any failed read, or an index going backwards, every
//! service is re-read. A full re-read also runs every `resync` as a safety net for changes no
//! index shows (an instance re-registered under the same ID with the same check).
//!
//! The cluster-wide answers name services as registered (`Web`), while the re-reads, like the
//! per-service mode, get every spelling Consul takes for the same service: names are matched
//! through [`Watched`] (the current one, in [`Names`]), so both modes publish the same sets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul::Client;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify, Semaphore};
use tracing::{debug, info, warn};

use crate::budget::budgeted;
use crate::checks::CheckPrints;
use crate::follow::Event;
use crate::followed::{Change, Follower};
use crate::names::{Names, Watched};
use crate::nodes::{Mark, NodeWatches};
use crate::query::{self, Answer, Query, Retry};
use crate::scan::CatalogScan;
use crate::state::State;
use crate::watch::WatchConfig;

/// Non-blocking reads (service re-reads and catalog-scan node reads together) in flight at once.
/// With the two blocking queries, the node watches ([`crate::nodes::MAX_NODE_WATCHES`]) and the
/// client's idle connections ([`consul::client::MAX_IDLE_CONNECTIONS`]) this bounds the
/// connections to Consul.
pub const READ_CONCURRENCY: usize = 6;

/// Which services need a re-read; shared by the two watch loops and the reader.
#[derive(Default)]
struct Dirty {
    set: Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl Dirty {
    fn mark<'a>(&self, services: impl IntoIterator<Item = &'a String>) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let before = set.len();
        set.extend(services.into_iter().cloned());
        if set.len() > before {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.set.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What the watcher knows between reads.
struct Shared {
    /// The followed services.
    names: Names,
    dirty: Dirty,
    /// Services with an instance that has no check of its own, or with no instance.
    checkless: Mutex<BTreeSet<String>>,
    /// The read budget shared by re-reads and catalog scans.
    reads: Arc<Semaphore>,
    /// Watch loops still without a first answer. The first full read waits for both baselines:
    /// a read taken before a baseline could miss a change made between the two.
    baselines_missing: AtomicUsize,
}

impl Shared {
    fn watched(&self) -> Arc<Watched> {
        self.names.get()
    }

    fn mark_all(&self) {
        self.dirty.mark(self.watched().all());
    }

    /// A loop got its first answer; the last of the two starts the first full read.
    fn baseline(&self) {
        if self.baselines_missing.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.mark_all();
        }
    }

    /// After a loop's first answer, everything must be re-read after a reset or failure.
    fn everything(&self, first: &mut bool) {
        if std::mem::replace(first, false) {
            self.baseline();
        } else {
            self.mark_all();
        }
    }

    /// Takes a change of the followed set: new services are read from scratch (once both
    /// baselines exist; the first full read covers them before), gone ones forgotten.
    fn follow(&self, change: &Change) {
        let Some(list) = &change.services else { return };
        self.names.set(Watched::new(list.iter().cloned()));
        let mut checkless = self.checkless.lock().unwrap_or_else(|e| e.into_inner());
        for (gone, _) in &change.gone {
            checkless.remove(gone);
        }
        // Until its first read says otherwise, a new service may have an instance without a check.
        checkless.extend(change.added.iter().cloned());
        drop(checkless);
        if self.baselines_missing.load(Ordering::SeqCst) == 0 {
            self.dirty.mark(&change.added);
        }
    }
}

/// How long the first full read waits for both baselines before it goes ahead anyway.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(3);

/// Watches `services`, and with `follower` every service that opts in, with two blocking
/// queries and targeted re-reads, until dropped.
pub async fn watch_many(
    client: Client,
    services: Vec<String>,
    cfg: WatchConfig,
    resync: Duration,
    state: State,
    follower: Option<Follower>,
) {
    let shared = Arc::new(Shared {
        dirty: Dirty::default(),
        checkless: Mutex::new(services.iter().cloned().collect()),
        baselines_missing: AtomicUsize::new(2),
        reads: Arc::new(Semaphore::new(READ_CONCURRENCY)),
        names: Names::new(Watched::new(services.iter().cloned())),
    });
    info!(
        services = services.len(),
        following = follower.is_some(),
        "watching in multiplexed mode (2 blocking queries + targeted reads)"
    );
    let (events, feed) = mpsc::channel(1);
    tokio::join!(
        crate::follow::run(client.clone(), cfg.clone(), follower, state.clone(), events),
        checks_loop(&client, &cfg, &shared, &state),
        catalog_loop(&client, &cfg, &shared, &state, feed),
        reader(&client, &cfg, &shared, &state),
        resync_loop(resync, &shared),
    );
}

async fn resync_loop(every: Duration, shared: &Shared) {
    tokio::time::sleep(BASELINE_TIMEOUT).await;
    if shared.baselines_missing.load(Ordering::SeqCst) > 0 {
        warn!("Consul's cluster-wide endpoints did not answer in time; reading every service anyway");
        shared.mark_all();
    }
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        debug!("periodic full re-read");
        shared.mark_all();
    }
}

async fn checks_loop(client: &Client, cfg: &WatchConfig, shared: &Shared, state: &State) {
    let mut query = Query::new(query::CHECKS, cfg, 0);
    let mut first = true;
    let mut prints: Option<CheckPrints> = None;
    loop {
        match query.next(|index| client.health_state_any(index, cfg.wait)).await {
            Ok(Answer { value: r, everything, .. }) => {
                let now = CheckPrints::of(&r.value, &shared.watched());
                match prints.as_ref().map(|p| p.changed(&now)) {
                    Some(Some(changed)) if !everything => shared.dirty.mark(&changed),
                    _ => shared.everything(&mut first),
                }
                prints = Some(now);
            }
            Err(e) => fail_all(shared, state, &e),
        }
    }
}

/// Follows the answers of `/v1/catalog/services` ([`crate::follow`] owns the query).
async fn catalog_loop(
    client: &Client,
    cfg: &WatchConfig,
    shared: &Arc<Shared>,
    state: &State,
    mut feed: mpsc::Receiver<Event>,
) {
    let mut first = true;
    let mut tags: Option<Tags> = None;
    let mut scan = CatalogScan::default();
    let mark: Mark = {
        let shared = shared.clone();
        Arc::new(move |services| shared.dirty.mark(services))
    };
    let mut nodes = NodeWatches::new(client.clone(), cfg.clone(), shared.names.clone(), mark);
    while let Some(event) = feed.recv().await {
        match event {
            Event::Answer { moved, everything, services, change, .. } => {
                shared.follow(&change);
                let watched = shared.watched();
                let now = tags_by_configured_name(services, &watched);
                if everything || tags.is_none() {
                    // First answer, or after a reset or failure: everything may have changed.
                    // Take a fresh catalog baseline for the check-less services' next changes.
                    scan.reset();
                    match scan.changed(client, &watched, &shared.reads).await {
                        Ok(_) => watch_nodes(&mut nodes, &scan),
                        Err(e) => {
                            debug!(error = %e, "no catalog baseline yet");
                            nodes.stop();
                        }
                    }
                    shared.everything(&mut first);
                } else if let Some(old) = tags.as_ref().filter(|_| moved) {
                    let mut changed: BTreeSet<String> =
                        watched.all().iter().filter(|s| old.get(*s) != now.get(*s)).cloned().collect();
                    // With every node watched, the node watches name what changed.
                    if !follow_nodes(client, &mut nodes).await {
                        let checkless = shared.checkless.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let scans = scan.scans();
                        if !checkless.is_empty() {
                            changed
                                .extend(checkless_changes(client, &watched, &mut scan, &shared.reads, checkless).await);
                        }
                        // A scan just read the node list: few enough nodes to watch them now?
                        if scan.scans() > scans {
                            watch_nodes(&mut nodes, &scan);
                        }
                    }
                    shared.dirty.mark(&changed);
                }
                tags = Some(now);
            }
            // The follower backs off before its next query.
            Event::Failed(e) => fail_all(shared, state, &e),
        }
    }
}

/// Per configured name, every spelling of it in `/v1/catalog/services` with its tags.
type Tags = BTreeMap<String, Vec<(String, Vec<String>)>>;

fn tags_by_configured_name(services: BTreeMap<String, Vec<String>>, watched: &Watched) -> Tags {
    let mut out = Tags::new();
    // In name order, so two answers with the same services compare equal.
    for (name, tags) in services {
        for configured in watched.lookup(&name) {
            out.entry(configured.clone()).or_default().push((name.clone(), tags.clone()));
        }
    }
    out
}

/// Starts a watch per node from the last scan, if there are few enough nodes. Each watch's first
/// blocking query is at the index its node was scanned at: a change made since then on that node
/// makes it answer at once, and the answer is compared with the scanned view.
fn watch_nodes(nodes: &mut NodeWatches, scan: &CatalogScan) {
    if let Some(seen) = scan.nodes() {
        nodes.start(seen);
    }
}

/// Brings the node watches up to date with the node list; false if they do not cover every
/// node (none running, too many nodes, or the list could not be read).
async fn follow_nodes(client: &Client, nodes: &mut NodeWatches) -> bool {
    if !nodes.active() {
        return false;
    }
    match client.catalog_nodes().await {
        Ok(list) => nodes.follow(&list),
        Err(e) => {
            debug!(error = %e, "cannot list catalog nodes; scanning instead");
            nodes.stop();
            false
        }
    }
}

/// Which of the check-less services may have changed: a catalog scan when it costs fewer
/// requests than re-reading them all (see [`crate::scan`]), else all of them.
async fn checkless_changes(
    client: &Client,
    watched: &Arc<Watched>,
    scan: &mut CatalogScan,
    budget: &Arc<Semaphore>,
    checkless: BTreeSet<String>,
) -> BTreeSet<String> {
    // A baseline older than the last scan only makes the answer a superset: still correct.
    if scan.cost().is_some_and(|cost| cost >= checkless.len()) {
        return checkless;
    }
    match scan.changed(client, watched, budget).await {
        Ok(Some(changed)) => changed,
        Ok(None) => checkless,
        Err(e) => {
            debug!(error = %e, "catalog scan failed; re-reading every check-less service");
            scan.reset();
            checkless
        }
    }
}

/// Marks every followed service unreadable: a cluster-wide query failed.
fn fail_all(shared: &Shared, state: &State, e: &consul::Error) {
    for s in shared.watched().all() {
        state.set_status(s, false, Some(e.to_string()));
    }
}

/// Re-reads dirty services, publishing real changes.
async fn reader(client: &Client, cfg: &WatchConfig, shared: &Shared, state: &State) {
    let mut retry = Retry::new(cfg.backoff_min, cfg.backoff_max);
    loop {
        let watched = shared.watched();
        // A service that went since it was marked is not read.
        let dirty: Vec<String> = shared.dirty.take().into_iter().filter(|s| watched.has(s)).collect();
        if dirty.is_empty() {
            shared.dirty.wake.notified().await;
            continue;
        }
        debug!(services = dirty.len(), "re-reading changed services");
        let view = cfg.view;
        let reads = futures_util::stream::iter(dirty)
            .map(|s| {
                let client = client.clone();
                let budget = shared.reads.clone();
                let had = state.has_instances(&s);
                async move {
                    let r = budgeted(&budget, async {
                        let r = client.instances(view, &s, 0, Duration::ZERO).await?;
                        crate::outage::confirm_empty(&client, had, r).await
                    })
                    .await;
                    (s, r)
                }
            })
            .buffer_unordered(READ_CONCURRENCY);
        // Publish each set as soon as it is read: a change must not wait for the whole batch.
        let mut reads = std::pin::pin!(reads);
        let mut failed = Vec::new();
        let mut first_error = None;
        while let Some((service, r)) = reads.next().await {
            match r {
                Ok(r) => {
                    state.set_status(&service, true, None);
                    let mut checkless = shared.checkless.lock().unwrap_or_else(|e| e.into_inner());
                    if r.checkless && shared.watched().has(&service) {
                        checkless.insert(service.clone());
                    } else {
                        checkless.remove(&service);
                    }
                    drop(checkless);
                    // Compared with the published set: a service followed anew is published
                    // even if its set equals the one it had before it went.
                    state.set_snapshot_if_changed(&service, r.index, r.instances);
                }
                Err(e) => {
                    state.set_status(&service, false, Some(e.to_string()));
                    failed.push(service);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None if retry.succeeded() => info!("every service can be read again"),
            None => {}
            Some(e) => {
                let services = failed.len();
                match retry.failed(&e) {
                    (true, _) => {
                        warn!(services, error = %e, "some services could not be read; retrying with backoff (logged again when this changes)")
                    }
                    (false, delay) => {
                        debug!(services, retry_in_ms = delay.as_millis() as u64, "some services could not be read")
                    }
                }
                shared.dirty.mark(&failed);
                retry.pause().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_every_spelling_count_for_the_configured_name() {
        let watched = Watched::new(["web".to_string()]);
        let answer = |web_tags: &[&str]| {
            BTreeMap::from([
                ("Web".to_string(), web_tags.iter().map(|t| t.to_string()).collect()),
                ("web".to_string(), vec![]),
                ("other".to_string(), vec!["x".to_string()]),
            ])
        };
        let a = tags_by_configured_name(answer(&["a"]), &watched);
        assert_eq!(a.len(), 1);
        assert_eq!(a["web"].len(), 2);
        assert_eq!(a, tags_by_configured_name(answer(&["a"]), &watched));
        assert_ne!(a, tags_by_configured_name(answer(&["a", "b"]), &watched));
    }
}
