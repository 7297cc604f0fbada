//! The followed services and the route table built from them: the gateway's one write path.
//!
//! - Every service has a [`Slot`] whose current [`ServiceSet`] is swapped whole (an `ArcSwap`):
//!   an instance change touches only its slot. A change of the routes (a service appears or goes,
//!   its tags change) rebuilds the [`RouteTable`] and swaps it whole. The request path reads both
//!   without a lock.
//! - Which services are followed: the static ones (`--services`, always, with their name route
//!   even before anything is known) and those the watcher reports because they opted in with a
//!   tag. A `gone` message, or a `services` list that no longer names it, drops a service and its
//!   routes.
//! - Every change is logged: instance changes (`billing: 3 -> 2 instances, removed ...`), route
//!   changes (`route added: api.example.com/v1 -> api (3 instances)`), tags that cannot be parsed
//!   (once per service and tag) and declarations that collide.
//! - Before the first snapshot of a static service, a request reads it from Consul directly
//!   ([`DirectRead`]), one read per service at a time; a snapshot that lands meanwhile wins.
//! - It knows whether its data is stale: the watcher is not connected, or it reports that it
//!   cannot read a service.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use consul::Instance;
use tracing::{info, warn};
use watcher::protocol::GoneReason;

use super::direct::DirectRead;
use super::freshness::Freshness;
use super::routes::{Route, RouteTable};
use super::set::{change_line, Origin, Read, ServiceSet};
use super::tag::{Tag, TagRules};
use crate::observe::changes::{ChangeFeed, Kind};
use crate::proxy::balancer::Balance;

/// One followed service: its name and its current set (none before the first read).
#[derive(Debug)]
pub struct Slot {
    /// The service name.
    pub service: String,
    /// Whether it is named in `--services` (followed whatever its tags).
    pub is_static: bool,
    set: ArcSwapOption<ServiceSet>,
    direct: tokio::sync::Mutex<()>,
}

impl Slot {
    pub(crate) fn new(service: &str, is_static: bool) -> Self {
        Self { service: service.to_string(), is_static, set: ArcSwapOption::empty(), direct: Default::default() }
    }

    /// The current set, if one was read.
    pub fn set(&self) -> Option<Arc<ServiceSet>> {
        self.set.load_full()
    }
}

/// What the writers share: the slots, and what was already logged.
#[derive(Default)]
struct Writer {
    slots: BTreeMap<String, Arc<Slot>>,
    /// `(service, tag)` pairs already reported as unparsable.
    warned: HashSet<(String, String)>,
    /// Conflicts already reported, as `host/path`.
    conflicts: HashSet<String>,
    /// Why each service's routes changed since the last rebuild (for the log).
    changed: BTreeMap<String, &'static str>,
    /// Batches of watcher messages being applied: the table is rebuilt once, when the last ends.
    batches: usize,
    /// Services the watcher listed that have not had a snapshot since (not ready until then).
    awaiting: BTreeSet<String>,
}

/// The followed services and their routes.
pub struct Services {
    statics: BTreeSet<String>,
    rules: TagRules,
    writer: Mutex<Writer>,
    table: ArcSwap<RouteTable>,
    direct: Arc<dyn DirectRead>,
    freshness: Freshness,
    /// Every logged instance and route change, published.
    feed: Arc<ChangeFeed>,
    last_fetch_error: Mutex<HashMap<String, (Instant, String)>>,
    /// Worker threads: each endpoint keeps its idle connections apart per thread.
    workers: usize,
    /// The balancing policy of routes that name none (`--balance`).
    balance: Balance,
}

/// How long a failed direct read is remembered, so a burst of requests during an outage does
/// not become a burst of Consul calls.
const FETCH_ERROR_MEMORY: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Services {
    /// The static services, the tag rules, and `direct` for reads before the first snapshot.
    pub fn new(statics: impl IntoIterator<Item = String>, rules: TagRules, direct: Arc<dyn DirectRead>) -> Self {
        let statics: BTreeSet<String> = statics.into_iter().collect();
        let mut writer = Writer::default();
        for s in &statics {
            writer.slots.insert(s.clone(), Arc::new(Slot::new(s, true)));
        }
        let this = Self {
            statics,
            rules,
            writer: Mutex::new(Writer::default()),
            table: ArcSwap::from_pointee(RouteTable::default()),
            direct,
            freshness: Freshness::default(),
            feed: Arc::default(),
            last_fetch_error: Mutex::default(),
            workers: 1,
            balance: Balance::default(),
        };
        this.rebuild(&mut writer);
        *lock(&this.writer) = writer;
        this
    }

    /// The same, for `workers` worker threads (each keeps its own idle connections to every
    /// instance; see [`crate::proxy::upstream`]).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The same, balancing routes that name no policy of their own by `balance` (`--balance`).
    pub fn with_balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// The balancing policy of routes that name none.
    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// Whether what it knows is fresh: the watcher's connection and Consul's reachability.
    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    /// The change feed: every instance and route change this logs.
    pub fn feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    /// The current route table.
    pub fn table(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// The static services.
    pub fn statics(&self) -> impl Iterator<Item = &str> {
        self.statics.iter().map(String::as_str)
    }

    /// Whether routes may come from tags (the watcher then also lists what it follows).
    pub fn follows_tags(&self) -> bool {
        !self.rules.route_tag.is_empty() || !self.rules.prefix.is_empty()
    }

    /// Every followed service's slot, by name.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        lock(&self.writer).slots.values().cloned().collect()
    }

    /// Every endpoint of every loaded service.
    pub fn endpoints(&self) -> Vec<Arc<crate::proxy::balancer::Endpoint>> {
        self.slots().iter().filter_map(|s| s.set()).flat_map(|set| set.endpoints.clone()).collect()
    }

    /// The current set of a service, reading it from Consul directly if nothing is loaded yet.
    ///
    /// # Errors
    /// Why the direct read failed (Consul unreachable), remembered for a second.
    pub async fn set_or_fetch(&self, slot: &Slot) -> Result<Arc<ServiceSet>, String> {
        if let Some(set) = slot.set() {
            return Ok(set);
        }
        // Boxed: it runs once per service, and inline its future would make every request's
        // future larger (and copied around at that size).
        Box::pin(self.fetch(slot)).await
    }

    async fn fetch(&self, slot: &Slot) -> Result<Arc<ServiceSet>, String> {
        let service = slot.service.as_str();
        if let Some(err) = self.recent_fetch_error(service) {
            return Err(err);
        }
        // One direct read per service at a time; later callers find what the first stored.
        let _one = slot.direct.lock().await;
        if let Some(set) = slot.set() {
            return Ok(set);
        }
        match self.direct.fetch(service).await {
            Ok((index, instances)) => {
                let _writer = lock(&self.writer);
                if let Some(set) = slot.set() {
                    // A watcher snapshot landed during the read: it wins.
                    return Ok(set);
                }
                info!(service, instances = instances.len(), "loaded directly from Consul (no watcher snapshot yet)");
                let set = Arc::new(ServiceSet::new(
                    service,
                    Read { instances, tags: Vec::new(), index, origin: Origin::Direct },
                    None,
                    &self.rules,
                    self.workers,
                ));
                slot.set.store(Some(set.clone()));
                Ok(set)
            }
            Err(e) => {
                warn!(service, error = %e, "cannot read service from Consul");
                lock(&self.last_fetch_error).insert(service.to_string(), (Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    fn recent_fetch_error(&self, service: &str) -> Option<String> {
        let errors = lock(&self.last_fetch_error);
        let (at, e) = errors.get(service)?;
        (at.elapsed() < FETCH_ERROR_MEMORY).then(|| e.clone())
    }

    /// Whether a service with these catalog tags has opted in.
    fn opted_in(&self, tags: &[String]) -> bool {
        tags.iter().any(|t| !matches!(self.rules.classify(t), Tag::Other))
    }

    /// Applies a watcher snapshot: the service's instances and catalog tags.
    pub fn apply_snapshot(&self, service: &str, index: u64, instances: Vec<Instance>, tags: Vec<String>) {
        self.apply_read(service, index, instances, tags, Origin::Watcher);
    }

    /// Installs the services read from the state file at start ([`super::state_file`]), as one
    /// batch, each as a snapshot would (origin [`Origin::StateFile`]): served at once, and
    /// replaced by the watcher's snapshots.
    pub fn apply_stored(&self, stored: Vec<super::state_file::StoredService>) {
        self.begin_batch();
        for s in stored {
            self.apply_read(&s.service, s.index, s.instances, s.tags, Origin::StateFile);
        }
        self.end_batch();
    }

    fn apply_read(&self, service: &str, index: u64, instances: Vec<Instance>, mut tags: Vec<String>, origin: Origin) {
        tags.sort();
        tags.dedup();
        let mut w = lock(&self.writer);
        w.awaiting.remove(service);
        let slot = match w.slots.get(service) {
            Some(s) => s.clone(),
            None if self.opted_in(&tags) => {
                let s = Arc::new(Slot::new(service, false));
                w.slots.insert(service.to_string(), s.clone());
                s
            }
            // Not static and not opted in (the watcher follows more than this gateway routes).
            None => return,
        };
        let old = slot.set();
        // Logged and published once the new set is in place: whoever reads the line or the event
        // and then sends a request sees the change (a test, an operator, the status page).
        let mut changed = None;
        let new = match &old {
            Some(old) if origin == Origin::Watcher && old.same_instances(&instances) && old.tags == tags => {
                old.refreshed(index)
            }
            _ => {
                let moved = old.as_ref().is_none_or(|o| !o.same_instances(&instances));
                let new = ServiceSet::new(
                    service,
                    Read { instances, tags, index, origin },
                    old.as_deref(),
                    &self.rules,
                    self.workers,
                );
                if moved {
                    changed = change_line(service, old.as_deref(), &new);
                }
                new
            }
        };
        let routes_changed = old.as_ref().is_none_or(|o| o.tags != new.tags || o.declaring != new.declaring);
        // The set before the table: a request that sees the new set with the old table finds a
        // departing route's tag missing from it and answers 404, as the new table will (see
        // `Proxy::route`); the other order would briefly leave a new route without candidates.
        slot.set.store(Some(Arc::new(new)));
        if let Some(line) = changed {
            info!(service, index, "{line}");
            self.feed.publish(Kind::Instances, Some(service), None, line);
        }
        if routes_changed {
            self.routes_changed(&mut w, service, "tags changed");
        }
    }

    /// Drops a service the watcher no longer follows, for `reason`. Static services stay.
    pub fn apply_gone(&self, service: &str, reason: GoneReason) {
        let why = match reason {
            GoneReason::Deregistered => "service deregistered",
            GoneReason::Untagged => "service no longer tagged",
            GoneReason::Other => "service no longer followed",
        };
        let mut w = lock(&self.writer);
        if self.statics.contains(service) || w.slots.remove(service).is_none() {
            return;
        }
        info!(service, "{service}: no longer followed ({why})");
        self.feed.publish(Kind::ServiceGone, Some(service), None, format!("{service}: no longer followed ({why})"));
        self.freshness.forget(service);
        self.routes_changed(&mut w, service, why);
    }

    /// Applies the watcher's full list of followed services: services not in it are dropped.
    pub fn apply_list(&self, services: &[String]) {
        let listed: HashSet<&str> = services.iter().map(String::as_str).collect();
        let mut w = lock(&self.writer);
        // A listed service is loaded once its snapshot came (it may have come before the list).
        let loaded = |w: &Writer, s: &str| w.slots.get(s).is_some_and(|slot| slot.set().is_some());
        w.awaiting = services.iter().filter(|s| !loaded(&w, s)).cloned().collect();
        let gone: Vec<String> = w
            .slots
            .values()
            .filter(|s| !s.is_static && !listed.contains(s.service.as_str()))
            .map(|s| s.service.clone())
            .collect();
        for s in &gone {
            w.slots.remove(s);
            self.freshness.forget(s);
            info!(service = %s, "{s}: no longer followed (not in the watcher's list)");
            let line = format!("{s}: no longer followed (not in the watcher's list)");
            self.feed.publish(Kind::ServiceGone, Some(s), None, line);
            self.routes_changed(&mut w, s, "service no longer followed");
        }
        self.freshness.listed();
    }

    /// The routes a service declares in its tags ([`ServiceSet::declaring`]), logging (once) the
    /// tags that cannot be parsed. The name route: a static service, or the opt-in tag on the
    /// service (in the catalog, or on a routable instance).
    fn routes_of(&self, slot: &Arc<Slot>, w: &mut Writer) -> Vec<Route> {
        let set = slot.set();
        let mut out = Vec::new();
        for (t, spec) in set.iter().flat_map(|s| &s.declared) {
            match spec {
                Ok(spec) => out.push(Route::declared(t.clone(), spec.clone(), slot.clone())),
                Err(e) => {
                    if w.warned.insert((slot.service.clone(), t.clone())) {
                        warn!(service = %slot.service, tag = %common::untrusted(t), error = %e, "skipping a route tag that cannot be parsed");
                    }
                }
            }
        }
        if slot.is_static || set.as_ref().is_some_and(|s| s.named_by_tag) {
            out.push(Route::name(slot.clone()));
        }
        out
    }

    /// Starts applying a batch of messages: the route table is rebuilt once, by [`Self::end_batch`].
    /// The watcher sends its full state as one burst on every connect; rebuilding per message
    /// would cost O(services²) then.
    pub fn begin_batch(&self) {
        lock(&self.writer).batches += 1;
    }

    /// Ends a batch: rebuilds the route table if a route changed during it.
    pub fn end_batch(&self) {
        let mut w = lock(&self.writer);
        w.batches = w.batches.saturating_sub(1);
        if w.batches == 0 && !w.changed.is_empty() {
            self.rebuild(&mut w);
        }
    }

    /// Notes that `service`'s routes may have changed, and rebuilds now unless in a batch.
    fn routes_changed(&self, w: &mut Writer, service: &str, why: &'static str) {
        w.changed.insert(service.to_string(), why);
        if w.batches == 0 {
            self.rebuild(w);
        }
    }

    /// Rebuilds the route table from every slot, swaps it in, and logs what changed.
    fn rebuild(&self, w: &mut Writer) {
        let slots: Vec<Arc<Slot>> = w.slots.values().cloned().collect();
        let routes: Vec<Route> = slots.iter().flat_map(|s| self.routes_of(s, w)).collect();
        let (table, conflicts) = RouteTable::build(routes);
        // Remember only what still holds, so a tag or conflict that comes back is reported again
        // and the memory stays bounded by what Consul holds now.
        let Writer { slots: by_name, warned, .. } = &mut *w;
        warned.retain(|(service, tag)| {
            let set = by_name.get(service).and_then(|slot| slot.set());
            set.is_some_and(|set| set.tags.binary_search(tag).is_ok())
        });
        // A conflict is remembered as who beat whom where: a new loser or a new winner is news.
        let key = |c: &super::routes::Conflict| format!("{} {} {}", c.at, c.winner, c.loser);
        let now: HashSet<String> = conflicts.iter().map(key).collect();
        w.conflicts.retain(|k| now.contains(k));
        for c in &conflicts {
            if w.conflicts.insert(key(c)) {
                warn!(route = %c.at, winner = %c.winner, shadowed = %c.loser, "two routes for {}: {} wins, {} is ignored", c.at, c.winner, c.loser);
            }
        }
        let old = self.table.load_full();
        let before: HashSet<_> = old.routes().iter().map(|r| r.key()).collect();
        let after: HashSet<_> = table.routes().iter().map(|r| r.key()).collect();
        let changed = std::mem::take(&mut w.changed);
        // Logged and published once the new table is in place (see `apply_snapshot`).
        let mut events = Vec::new();
        for r in old.routes().iter().filter(|r| !after.contains(&r.key())) {
            let shown = r.shown();
            // Another service's route at the same place: it lost a tie, whatever changed.
            let now_at = table.routes().iter().find(|n| n.shown() == shown && n.service != r.service);
            let why = match (now_at, changed.get(&r.service)) {
                (Some(winner), _) => format!("{} declares it too and wins the tie", winner.service),
                (None, Some(why)) => (*why).to_string(),
                (None, None) => "tags changed".to_string(),
            };
            let line = format!("route removed: {shown} -> {} ({why})", r.service);
            events.push((Kind::RouteRemoved, r.service.clone(), shown, line));
        }
        for r in table.routes().iter().filter(|r| !before.contains(&r.key())) {
            let n = r.slot.set().map_or(0, |s| s.candidates(r.tag.as_deref()).map_or(0, |c| c.count()));
            let noun = if n == 1 { "instance" } else { "instances" };
            let shown = r.shown();
            let line = format!("route added: {shown} -> {} ({n} {noun})", r.service);
            events.push((Kind::RouteAdded, r.service.clone(), shown, line));
        }
        self.table.store(Arc::new(table));
        for (kind, service, route, line) in events {
            info!(route = %route, service = %service, "{line}");
            self.feed.publish(kind, Some(&service), Some(&route), line);
        }
    }

    /// Why routes from tags may be incomplete: the watcher has not listed what it follows yet,
    /// or listed services whose snapshots have not come yet (each named, up to 10).
    pub fn unlisted_reasons(&self) -> Vec<String> {
        if !self.follows_tags() {
            return Vec::new();
        }
        if !self.freshness.is_listed() {
            return vec!["the watcher has not listed the tagged services yet".to_string()];
        }
        let w = lock(&self.writer);
        let mut out: Vec<String> = w.awaiting.iter().take(10).map(|s| format!("{s}: not loaded yet")).collect();
        if w.awaiting.len() > 10 {
            out.push(format!("and {} more services not loaded yet", w.awaiting.len() - 10));
        }
        out
    }

    /// The tag rules.
    pub fn rules(&self) -> &TagRules {
        &self.rules
    }
}

#[cfg(test)]
mod tests;
