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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use consul::Instance;
use tracing::{info, warn};
use watcher::protocol::GoneReason;

use super::direct::DirectRead;
use super::routes::{Route, RouteTable};
use super::set::{Origin, ServiceSet};
use super::tag::{self, Tag, TagRules};

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
}

/// The followed services and their routes.
pub struct Services {
    statics: BTreeSet<String>,
    rules: TagRules,
    writer: Mutex<Writer>,
    table: ArcSwap<RouteTable>,
    direct: Arc<dyn DirectRead>,
    watcher_connected: AtomicBool,
    /// Whether the watcher's list of followed services arrived since it connected (only
    /// expected when services may opt in by tag).
    listed: AtomicBool,
    unreadable: Mutex<HashMap<String, String>>,
    last_fetch_error: Mutex<HashMap<String, (Instant, String)>>,
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
            watcher_connected: AtomicBool::new(false),
            listed: AtomicBool::new(false),
            unreadable: Mutex::default(),
            last_fetch_error: Mutex::default(),
        };
        this.rebuild(&mut writer, "");
        *lock(&this.writer) = writer;
        this
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
                let set =
                    Arc::new(ServiceSet::new(service, instances, Vec::new(), index, Origin::Direct, None, &self.rules));
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
    pub fn apply_snapshot(&self, service: &str, index: u64, instances: Vec<Instance>, mut tags: Vec<String>) {
        tags.sort();
        tags.dedup();
        let mut w = lock(&self.writer);
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
        let routes_changed = old.as_ref().is_none_or(|o| o.tags != tags);
        let new = match &old {
            Some(old) if old.same_instances(&instances) && !routes_changed => old.refreshed(index),
            _ => {
                let moved = old.as_ref().is_none_or(|o| !o.same_instances(&instances));
                let new =
                    ServiceSet::new(service, instances, tags, index, Origin::Watcher, old.as_deref(), &self.rules);
                if moved {
                    log_change(service, old.as_deref(), &new);
                }
                new
            }
        };
        slot.set.store(Some(Arc::new(new)));
        if routes_changed {
            self.rebuild(&mut w, "tags changed");
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
        lock(&self.unreadable).remove(service);
        self.rebuild(&mut w, why);
    }

    /// Applies the watcher's full list of followed services: services not in it are dropped.
    pub fn apply_list(&self, services: &[String]) {
        let listed: HashSet<&str> = services.iter().map(String::as_str).collect();
        let mut w = lock(&self.writer);
        let gone: Vec<String> = w
            .slots
            .values()
            .filter(|s| !s.is_static && !listed.contains(s.service.as_str()))
            .map(|s| s.service.clone())
            .collect();
        for s in &gone {
            w.slots.remove(s);
            lock(&self.unreadable).remove(s);
            info!(service = %s, "{s}: no longer followed (not in the watcher's list)");
        }
        if !gone.is_empty() {
            self.rebuild(&mut w, "service no longer followed");
        }
        self.listed.store(true, Ordering::Relaxed);
    }

    /// The routes a service declares in its tags, logging (once) the tags that cannot be parsed.
    fn routes_of(&self, slot: &Arc<Slot>, w: &mut Writer) -> Vec<Route> {
        let set = slot.set();
        let tags = set.as_ref().map_or(&[][..], |s| s.tags.as_slice());
        let mut out = Vec::new();
        let mut named = slot.is_static;
        for t in tags {
            match self.rules.classify(t) {
                Tag::NameRoute => named = true,
                Tag::Declared(body) => match tag::parse(body) {
                    Ok(spec) => out.push(Route::declared(t.clone(), spec, slot.clone())),
                    Err(e) => {
                        if w.warned.insert((slot.service.clone(), t.clone())) {
                            warn!(service = %slot.service, tag = %t, error = %e, "skipping a route tag that cannot be parsed");
                        }
                    }
                },
                Tag::Other => {}
            }
        }
        if named {
            out.push(Route::name(slot.clone()));
        }
        out
    }

    /// Rebuilds the route table from every slot, swaps it in, and logs what changed.
    fn rebuild(&self, w: &mut Writer, why: &str) {
        let slots: Vec<Arc<Slot>> = w.slots.values().cloned().collect();
        let routes: Vec<Route> = slots.iter().flat_map(|s| self.routes_of(s, w)).collect();
        let (table, conflicts) = RouteTable::build(routes);
        for c in conflicts {
            if w.conflicts.insert(c.at.clone()) {
                warn!(route = %c.at, winner = %c.winner, shadowed = %c.loser, "two routes for {}: {} wins, {} is ignored", c.at, c.winner, c.loser);
            }
        }
        let old = self.table.load_full();
        let before: HashSet<_> = old.routes().iter().map(|r| r.key()).collect();
        let after: HashSet<_> = table.routes().iter().map(|r| r.key()).collect();
        for r in old.routes().iter().filter(|r| !after.contains(&r.key())) {
            info!(route = %r.shown(), service = %r.service, "route removed: {} -> {} ({why})", r.shown(), r.service);
        }
        for r in table.routes().iter().filter(|r| !before.contains(&r.key())) {
            let n = r.slot.set().map_or(0, |s| s.candidates(r.tag.as_deref()).map_or(0, |c| c.count()));
            info!(route = %r.shown(), service = %r.service, "route added: {} -> {} ({n} instances)", r.shown(), r.service);
        }
        self.table.store(Arc::new(table));
    }

    /// Records whether the watcher can read `service` from Consul.
    pub fn set_readable(&self, service: &str, error: Option<String>) {
        let mut unreadable = lock(&self.unreadable);
        match error {
            Some(e) => {
                if unreadable.insert(service.to_string(), e.clone()).is_none() {
                    warn!(service, error = %e, "watcher cannot read the service from Consul; serving the last known instances");
                }
            }
            None => {
                if unreadable.remove(service).is_some() {
                    info!(service, "watcher reads the service from Consul again");
                }
            }
        }
    }

    /// Records whether the watcher is connected.
    pub fn set_watcher_connected(&self, connected: bool) {
        self.watcher_connected.store(connected, Ordering::Relaxed);
        if connected {
            self.listed.store(false, Ordering::Relaxed);
        }
    }

    /// Why the data of `service` may be out of date, if it may be.
    pub fn stale_reason(&self, service: &str) -> Option<String> {
        if !self.watcher_connected.load(Ordering::Relaxed) {
            return Some("watcher not connected".to_string());
        }
        lock(&self.unreadable).get(service).map(|e| format!("Consul unreachable: {e}"))
    }

    /// Why routes from tags may be incomplete: the watcher has not listed what it follows yet.
    pub fn unlisted_reason(&self) -> Option<&'static str> {
        (self.follows_tags() && !self.listed.load(Ordering::Relaxed))
            .then_some("the watcher has not listed the tagged services yet")
    }

    /// The tag rules.
    pub fn rules(&self) -> &TagRules {
        &self.rules
    }
}

/// The change line users watch: `service-web: 3 -> 2 instances, removed 127.0.0.1:3001`.
fn log_change(service: &str, old: Option<&ServiceSet>, new: &ServiceSet) {
    let before = old.map(ServiceSet::authorities).unwrap_or_default();
    let after = new.authorities();
    let added: Vec<&String> = after.difference(&before).collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    let mut line = format!("{service}: {} -> {} instances", old.map_or(0, |o| o.endpoints.len()), new.endpoints.len());
    for (label, list) in [("added", &added), ("removed", &removed)] {
        if !list.is_empty() {
            line.push_str(&format!(", {label} {}", list.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")));
        }
    }
    info!(service, index = new.index, "{line}");
}

#[cfg(test)]
mod tests;
