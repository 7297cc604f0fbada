//! The registry: a moka cache holding each routable service's current endpoints.
//!
//! - The watcher's snapshots replace a service's set whole, and every real change is logged
//!   (`service-web: 3 -> 2 instances, removed 127.0.0.1:3001`).
//! - Before the first snapshot (or while the watcher is down at start), a request reads the
//!   service from Consul directly through [`Discovery`]. Concurrent misses make one call: every
//!   write to a key goes through moka's per-key `and_compute_with`, which runs them one at a
//!   time, so later callers find the value the first one stored; a watcher snapshot that lands
//!   during a direct read is applied after it, so the watcher's data always wins.
//! - The request path only reads (`Cache::get`, an `Arc` clone); writes swap a whole set.
//! - It knows whether its data is stale: the watcher is not connected, or it reports that it
//!   cannot read the service from Consul.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use consul::Instance;
use moka::future::Cache;
use moka::ops::compute::Op;
use tracing::{info, warn};

use crate::balancer::Endpoint;

/// What [`Discovery::fetch`] returns: Consul's index and the instances, or why it failed.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<(u64, Vec<Instance>), String>> + Send + 'a>>;

/// Where instances come from when the watcher has not delivered them: the seam that lets the
/// router be tested with a static list and run with a real Consul.
pub trait Discovery: Send + Sync + 'static {
    /// Reads a service's current instances once.
    fn fetch<'a>(&'a self, service: &'a str) -> FetchFuture<'a>;
}

/// [`Discovery`] through a Consul client.
pub struct ConsulDiscovery {
    /// The client.
    pub client: consul::Client,
    /// The view the watcher also uses (with the same health statuses), so a direct read and a
    /// watcher snapshot agree.
    pub view: consul::View,
}

impl Discovery for ConsulDiscovery {
    fn fetch<'a>(&'a self, service: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let r = self.client.instances(self.view, service, 0, Duration::ZERO).await.map_err(|e| e.to_string())?;
            Ok((r.index, r.instances))
        })
    }
}

/// Where a service's current set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A watcher snapshot.
    Watcher,
    /// A direct Consul read before the watcher delivered.
    Direct,
}

/// One service's current endpoints.
#[derive(Debug)]
pub struct ServiceSet {
    /// The endpoints, in canonical order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Consul's index the set was read at.
    pub index: u64,
    /// When the set last changed.
    pub changed_at: SystemTime,
    /// Where it came from.
    pub source: Source,
}

impl ServiceSet {
    /// A set of `instances`. Endpoints of `previous` for instances that did not change are kept,
    /// and with them their idle connections and ejection state.
    fn new(instances: Vec<Instance>, index: u64, source: Source, previous: Option<&ServiceSet>) -> Self {
        let previous: HashMap<(&str, &str), &Arc<Endpoint>> = previous
            .map(|p| p.endpoints.iter().map(|e| ((e.instance.node.as_str(), e.instance.id.as_str()), e)).collect())
            .unwrap_or_default();
        let kept = |i: &Instance| {
            previous.get(&(i.node.as_str(), i.id.as_str())).filter(|e| &e.instance == i).map(|e| Arc::clone(e))
        };
        let endpoints = instances
            .into_iter()
            .filter_map(|i| {
                if let Some(e) = kept(&i) {
                    return Some(e);
                }
                let shown = i.authority();
                let e = Endpoint::new(i);
                if e.is_none() {
                    warn!(instance = %shown, "ignoring an instance whose address is not usable in a URL");
                }
                e.map(Arc::new)
            })
            .collect();
        Self { endpoints, index, changed_at: SystemTime::now(), source }
    }

    fn authorities(&self) -> BTreeSet<String> {
        self.endpoints.iter().map(|e| e.instance.authority()).collect()
    }

    fn same_instances(&self, other: &[Instance]) -> bool {
        self.endpoints.len() == other.len() && self.endpoints.iter().zip(other).all(|(e, i)| &e.instance == i)
    }
}

/// The registry of routable services.
pub struct Registry {
    routable: BTreeSet<String>,
    cache: Cache<String, Arc<ServiceSet>>,
    discovery: Arc<dyn Discovery>,
    watcher_connected: AtomicBool,
    unreadable: Mutex<HashMap<String, String>>,
    last_fetch_error: Mutex<HashMap<String, (Instant, String)>>,
}

/// How long a failed direct read is remembered, so a burst of requests during an outage does
/// not become a burst of Consul calls.
const FETCH_ERROR_MEMORY: Duration = Duration::from_secs(1);

impl Registry {
    /// A registry of `routable` services, with `discovery` as the fallback source.
    pub fn new(routable: impl IntoIterator<Item = String>, discovery: Arc<dyn Discovery>) -> Self {
        let routable: BTreeSet<String> = routable.into_iter().collect();
        // Only routable services are ever inserted, so the cache needs no eviction policy.
        let cache = Cache::builder().max_capacity(routable.len() as u64 + 1).build();
        Self {
            routable,
            cache,
            discovery,
            watcher_connected: AtomicBool::new(false),
            unreadable: Mutex::default(),
            last_fetch_error: Mutex::default(),
        }
    }

    /// Whether `service` may be reached through the gateway.
    pub fn is_routable(&self, service: &str) -> bool {
        self.routable.contains(service)
    }

    /// The routable services.
    pub fn routable(&self) -> impl Iterator<Item = &str> {
        self.routable.iter().map(String::as_str)
    }

    /// Every endpoint of every loaded service.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.cache.iter().flat_map(|(_, set)| set.endpoints.clone()).collect()
    }

    /// The current set of a service, if loaded.
    pub async fn get(&self, service: &str) -> Option<Arc<ServiceSet>> {
        self.cache.get(service).await
    }

    /// The current set of a routable service, reading it from Consul directly if nothing is
    /// loaded yet.
    pub async fn get_or_fetch(&self, service: &str) -> Result<Arc<ServiceSet>, String> {
        if let Some(set) = self.cache.get(service).await {
            return Ok(set);
        }
        // Boxed: it runs once per service, and inline its future would make every request's
        // future larger (and copied around at that size).
        Box::pin(self.fetch(service)).await
    }

    async fn fetch(&self, service: &str) -> Result<Arc<ServiceSet>, String> {
        if let Some(err) = self.recent_fetch_error(service) {
            return Err(err);
        }
        let mut error = None;
        let error_slot = &mut error;
        let result = self
            .cache
            .entry_by_ref(service)
            .and_compute_with(move |existing| async move {
                if existing.is_some() {
                    return Op::Nop;
                }
                match self.discovery.fetch(service).await {
                    Ok((index, instances)) => {
                        info!(
                            service,
                            instances = instances.len(),
                            "loaded directly from Consul (no watcher snapshot yet)"
                        );
                        Op::Put(Arc::new(ServiceSet::new(instances, index, Source::Direct, None)))
                    }
                    Err(e) => {
                        *error_slot = Some(e);
                        Op::Nop
                    }
                }
            })
            .await;
        if let Some(e) = error {
            warn!(service, error = %e, "cannot read service from Consul");
            lock(&self.last_fetch_error).insert(service.to_string(), (Instant::now(), e.clone()));
            return Err(e);
        }
        result.into_entry().map(|e| e.into_value()).ok_or_else(|| "no data".to_string())
    }

    fn recent_fetch_error(&self, service: &str) -> Option<String> {
        let errors = lock(&self.last_fetch_error);
        let (at, e) = errors.get(service)?;
        (at.elapsed() < FETCH_ERROR_MEMORY).then(|| e.clone())
    }

    /// Applies a watcher snapshot, logging the change if the set differs.
    pub async fn apply_snapshot(&self, service: &str, index: u64, instances: Vec<Instance>) {
        if !self.is_routable(service) {
            return;
        }
        self.cache
            .entry_by_ref(service)
            .and_compute_with(|existing| {
                let old = existing.map(|e| e.into_value());
                let op = match &old {
                    Some(old) if old.same_instances(&instances) => {
                        // Same set; keep the endpoints (and their ejection state), refresh the rest.
                        let endpoints = old.endpoints.clone();
                        Op::Put(Arc::new(ServiceSet {
                            endpoints,
                            index,
                            changed_at: old.changed_at,
                            source: Source::Watcher,
                        }))
                    }
                    _ => {
                        let new = ServiceSet::new(instances, index, Source::Watcher, old.as_deref());
                        log_change(service, old.as_deref(), &new);
                        Op::Put(Arc::new(new))
                    }
                };
                std::future::ready(op)
            })
            .await;
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
    }

    /// Why the data of `service` may be out of date, if it may be.
    pub fn stale_reason(&self, service: &str) -> Option<String> {
        if !self.watcher_connected.load(Ordering::Relaxed) {
            return Some("watcher not connected".to_string());
        }
        lock(&self.unreadable).get(service).map(|e| format!("Consul unreachable: {e}"))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// A static [`Discovery`] for tests and for running without Consul.
#[derive(Default)]
pub struct StaticDiscovery(pub BTreeMap<String, Vec<Instance>>);

impl Discovery for StaticDiscovery {
    fn fetch<'a>(&'a self, service: &'a str) -> FetchFuture<'a> {
        let r = self.0.get(service).cloned().map(|v| (1, v)).ok_or_else(|| format!("{service} is not known"));
        Box::pin(std::future::ready(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn inst(port: u16) -> Instance {
        Instance::new(format!("i{port}"), "n", "127.0.0.1", port)
    }

    struct Counting(AtomicUsize, Result<Vec<Instance>, String>);
    impl Discovery for Counting {
        fn fetch<'a>(&'a self, _: &'a str) -> FetchFuture<'a> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let r = self.1.clone().map(|v| (5, v));
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                r
            })
        }
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_consul_call() {
        let d = Arc::new(Counting(AtomicUsize::new(0), Ok(vec![inst(1)])));
        let reg = Arc::new(Registry::new(["web".to_string()], d.clone()));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                tokio::spawn({
                    let reg = reg.clone();
                    async move { reg.get_or_fetch("web").await }
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().endpoints.len(), 1);
        }
        assert_eq!(d.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_reads_are_not_repeated_in_a_burst() {
        let d = Arc::new(Counting(AtomicUsize::new(0), Err("down".into())));
        let reg = Registry::new(["web".to_string()], d.clone());
        for _ in 0..5 {
            assert_eq!(reg.get_or_fetch("web").await.unwrap_err(), "down");
        }
        assert_eq!(d.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn snapshots_replace_sets_and_ignore_non_routable_services() {
        let reg = Registry::new(["web".to_string()], Arc::new(StaticDiscovery::default()));
        reg.apply_snapshot("web", 3, vec![inst(1), inst(2)]).await;
        reg.apply_snapshot("other", 3, vec![inst(9)]).await;
        assert_eq!(reg.get("web").await.unwrap().endpoints.len(), 2);
        assert!(reg.get("other").await.is_none());
        let before = reg.get("web").await.unwrap();
        reg.apply_snapshot("web", 4, vec![inst(2)]).await;
        let set = reg.get("web").await.unwrap();
        assert_eq!((set.endpoints.len(), set.index, set.source), (1, 4, Source::Watcher));
        assert!(Arc::ptr_eq(&set.endpoints[0], &before.endpoints[1]), "an unchanged instance keeps its endpoint");
        assert_eq!(reg.endpoints().len(), 1);
        reg.apply_snapshot("web", 5, vec![]).await;
        assert!(reg.get_or_fetch("web").await.unwrap().endpoints.is_empty(), "an empty truth is kept, not re-fetched");
    }

    #[tokio::test]
    async fn staleness_follows_watcher_and_consul() {
        let reg = Registry::new(["web".to_string()], Arc::new(StaticDiscovery::default()));
        assert!(reg.stale_reason("web").is_some());
        reg.set_watcher_connected(true);
        assert!(reg.stale_reason("web").is_none());
        reg.set_readable("web", Some("connection refused".into()));
        assert!(reg.stale_reason("web").unwrap().contains("Consul unreachable"));
        reg.set_readable("web", None);
        assert!(reg.stale_reason("web").is_none());
    }
}
