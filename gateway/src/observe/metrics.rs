//! The gateway's Prometheus metrics: what the request path counts, and `GET /metrics` on the admin
//! listener ([`serve`]), in the OpenMetrics text format (`prometheus-client`'s encoder), which
//! Prometheus 2.x negotiates and scrapes.
//!
//! Series (label values are bounded: routes and services come from the route table, `method` is
//! one of 8 classes, `code` a status; never a raw path or a client address):
//!
//! | series | type | labels | what |
//! | --- | --- | --- | --- |
//! | `gateway_requests_total` | counter | `route`, `service`, `method`, `code` | requests answered, by the status sent to the client |
//! | `gateway_request_duration_seconds` | histogram | `route`, `service` | from the request head's arrival to the end of the response body; buckets 1 ms to 30 s |
//! | `gateway_upstream_connect_failures_total` | counter | `service` | connects to an instance that failed |
//! | `gateway_retries_total` | counter | `service`, `reason` | requests sent again: `connect_failed`, `reused_connection_closed`, `no_response`, `unprocessed` |
//! | `gateway_ejections_total` | counter | `service` | instances taken out of the rotation after a failure |
//! | `gateway_instances` | gauge | `service` | routable instances of each followed service |
//! | `gateway_route_changes_total` | counter | | routes added or removed |
//! | `gateway_instance_changes_total` | counter | | changes of a service's instances |
//! | `gateway_watcher_restarts_total` | counter | | times the watcher process exited and was started again |
//! | `gateway_consul_last_success_age_seconds` | gauge | | 0 while the watcher is connected and reads Consul; else seconds since it last did (since the start if it never did) |
//! | `gateway_stale` | gauge | | 1 while what the gateway serves may be out of date: watcher disconnected, Consul's catalog or a service unreadable |
//! | `gateway_service_stale` | gauge | `service` | the same, per followed service |
//! | `gateway_open_connections` | gauge | `side` = `client`, `upstream` | connections open now (an open tunnel's two included) |
//! | `gateway_websocket_tunnels` | gauge | | upgraded tunnels (WebSocket and others) open now |
//! | `gateway_connections_refused_total` | counter | | client connections closed unread because `--max-connections` were open |
//! | `process_*` | | | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, `process_threads` (from `/proc`) |
//!
//! Requests no route matched are counted with `route=""` and `service=""` (an empty label is no
//! label to Prometheus: select them with `{route=""}`).
//!
//! Cost: the request path ([`Metrics::request_done`]) locks its own worker's [`shard::Shard`]
//! (a mutex only that worker and the scraper take), finds its route by label value with the Fx
//! hash, and bumps two integers and a bucket: no allocation after a route's first request, no
//! formatting, no lock another worker takes: about 250 instructions a call (callgrind, release
//! build, one route, four method/status pairs). Shards are summed when scraped. Entries of routes
//! that no longer exist are dropped at scrape time (their totals kept per service for
//! [`Metrics::service_totals`]), so the keys stay bounded by the routes that exist.

mod expose;
pub mod shard;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use crate::observe::access::AccessLog;

pub use expose::{prune_every, serve};
use shard::{Entry, Key, Shard};

/// The labels a request is counted under, built once per route when the route table is built:
/// the route as `/routes` shows it, and its service. Bounded by the route table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    /// The route, as `/routes` shows it (`api.example.com/v1`, `/web`).
    pub route: Arc<str>,
    /// The service the route sends to.
    pub service: Arc<str>,
}

/// Why a request went again to an instance (the same one on a new connection, or another one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// The connect failed (refused, reset, timed out): another instance.
    ConnectFailed,
    /// A reused (pooled) connection closed before the response: the same instance, new connection.
    ReusedConnectionClosed,
    /// Sent but unanswered, idempotent: another instance.
    NoResponse,
    /// An HTTP/2 instance refused the stream unprocessed (REFUSED_STREAM, GOAWAY).
    Unprocessed,
}

impl RetryReason {
    /// Every reason, in the order of [`RetryReason::label`]'s index.
    pub const ALL: [RetryReason; 4] =
        [Self::ConnectFailed, Self::ReusedConnectionClosed, Self::NoResponse, Self::Unprocessed];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::ConnectFailed => "connect_failed",
            Self::ReusedConnectionClosed => "reused_connection_closed",
            Self::NoResponse => "no_response",
            Self::Unprocessed => "unprocessed",
        }
    }
}

/// Connections and tunnels open now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// Client connections to the public listener.
    Client,
    /// Connections to instances.
    Upstream,
    /// Upgraded tunnels (WebSocket and others).
    Tunnel,
}

/// One service's request totals since the gateway started, for the status page's rates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTotals {
    /// The service.
    pub service: String,
    /// Requests answered, whatever the status.
    pub requests: u64,
    /// Of those, answered with a 5xx status (the instance's or the gateway's own).
    pub errors: u64,
}

/// The rare events of one service: connect failures, ejections, retries by reason.
#[derive(Clone, Copy, Debug, Default)]
struct Rare {
    connect_failures: u64,
    ejections: u64,
    retries: [u64; 4],
}

/// A value on a cache line of its own, so two workers' shards never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Every metric the gateway keeps.
pub struct Metrics {
    /// One per worker thread, indexed by the worker's slot.
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// The key of requests no route matched.
    unrouted: Arc<str>,
    /// Per service; locked on failures and retries only.
    rare: Mutex<HashMap<String, Rare, FxBuildHasher>>,
    /// Requests and errors of routes whose entries were dropped, per service.
    retired: Mutex<HashMap<String, (u64, u64), FxBuildHasher>>,
    open: [Arc<AtomicI64>; 3],
    /// Client connections refused at the cap (`--max-connections`).
    refused: AtomicU64,
    /// The access log, when it is on (for its count of dropped lines).
    access_log: OnceLock<Arc<AccessLog>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(1)
    }
}

/// Counts one open connection or tunnel until dropped. A tunnel's guard also counts the client
/// and upstream connection it joins: hyper lets go of both (and their own guards end) once it
/// hands them over for the upgrade, yet they stay open as long as the tunnel.
pub struct OpenGuard(Arc<AtomicI64>, Option<[Arc<AtomicI64>; 2]>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        for gauge in self.1.iter().flatten() {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Metrics for `workers` worker threads (request counts are kept apart per worker).
    pub fn new(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1)).map(|_| Padded::default()).collect(),
            unrouted: Arc::from(""),
            rare: Mutex::default(),
            retired: Mutex::default(),
            open: Default::default(),
            refused: AtomicU64::new(0),
            access_log: OnceLock::new(),
        }
    }

    /// One finished request: its route (`None`: no route matched), method, status and how long
    /// it took from its head's arrival to the end of its response body.
    #[inline]
    pub fn request_done(&self, labels: Option<&Labels>, method: &http::Method, status: u16, duration: Duration) {
        let slot = crate::proxy::upstream::thread_slot();
        let shard = if slot < self.shards.len() { slot } else { slot % self.shards.len() };
        let (route, service) = match labels {
            Some(l) => (&l.route, &l.service),
            None => (&self.unrouted, &self.unrouted),
        };
        let class = shard::method_class(method);
        lock(&self.shards[shard].0).record(route, service, class, status, duration);
    }

    fn rare(&self, service: &str, f: impl FnOnce(&mut Rare)) {
        let mut rare = lock(&self.rare);
        match rare.get_mut(service) {
            Some(r) => f(r),
            None => f(rare.entry(service.to_string()).or_default()),
        }
    }

    /// A request goes again, for `reason`.
    pub fn retry(&self, service: &str, reason: RetryReason) {
        self.rare(service, |r| r.retries[reason as usize] += 1);
    }

    /// A connect to an instance failed.
    pub fn connect_failure(&self, service: &str) {
        self.rare(service, |r| r.connect_failures += 1);
    }

    /// An instance was ejected (taken out of the rotation for a while) after a failure.
    pub fn ejection(&self, service: &str) {
        self.rare(service, |r| r.ejections += 1);
    }

    /// A client connection closed unread at the cap.
    pub fn connection_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Client connections refused at the cap so far.
    pub fn connections_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts one open connection or tunnel until the guard is dropped; a tunnel also counts as
    /// one open client and one open upstream connection ([`OpenGuard`]).
    pub fn open(&self, what: Open) -> OpenGuard {
        let gauge = self.open[what as usize].clone();
        gauge.fetch_add(1, Ordering::Relaxed);
        let joined = matches!(what, Open::Tunnel).then(|| {
            let [client, upstream, _] = &self.open;
            client.fetch_add(1, Ordering::Relaxed);
            upstream.fetch_add(1, Ordering::Relaxed);
            [client.clone(), upstream.clone()]
        });
        OpenGuard(gauge, joined)
    }

    /// Each service's request totals (summed over the workers), by service name. Requests no
    /// route matched are not in it.
    pub fn service_totals(&self) -> Vec<ServiceTotals> {
        let mut totals: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
        for (service, (requests, errors)) in lock(&self.retired).iter() {
            let t = totals.entry(service.clone()).or_default();
            t.0 += requests;
            t.1 += errors;
        }
        for (key, entry) in self.summed() {
            if key.service.is_empty() {
                continue;
            }
            let t = totals.entry(key.service.to_string()).or_default();
            t.0 += entry.requests();
            t.1 += entry.errors();
        }
        totals.into_iter().map(|(service, (requests, errors))| ServiceTotals { service, requests, errors }).collect()
    }

    /// Follows the access log's count of dropped lines (`gateway_access_log_dropped_total`).
    pub fn follow_access_log(&self, log: Arc<AccessLog>) {
        let _ = self.access_log.set(log);
    }

    /// Access log lines dropped because its queue was full; 0 with the access log off.
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.get().map_or(0, |log| log.dropped())
    }

    /// How many of `what` are open now.
    pub fn open_now(&self, what: Open) -> i64 {
        self.open[what as usize].load(Ordering::Relaxed)
    }

    /// Every route's counts summed over the workers, sorted by route and service.
    pub fn summed(&self) -> Vec<(Key, Entry)> {
        let mut sum: HashMap<Key, Entry, FxBuildHasher> = HashMap::default();
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            for (k, e) in shard.entries() {
                match sum.get_mut(k) {
                    Some(total) => total.add(e),
                    None => {
                        sum.insert(k.clone(), e.clone());
                    }
                }
            }
        }
        let mut out: Vec<(Key, Entry)> = sum.into_iter().collect();
        out.sort_by(|a, b| (&a.0.route, &a.0.service).cmp(&(&b.0.route, &b.0.service)));
        out
    }

    /// Drops the entries of routes `live` says no longer exist (requests no route matched are
    /// always kept), keeping their totals for [`Metrics::service_totals`].
    pub fn forget_routes(&self, live: impl Fn(&str, &str) -> bool) {
        for shard in self.shards.iter() {
            let mut dropped: Vec<(Arc<str>, u64, u64)> = Vec::new();
            lock(&shard.0).retain(|k, e| {
                let keep = k.route.is_empty() || live(&k.route, &k.service);
                if !keep {
                    dropped.push((k.service.clone(), e.requests(), e.errors()));
                }
                keep
            });
            if dropped.is_empty() {
                continue;
            }
            let mut retired = lock(&self.retired);
            for (service, requests, errors) in dropped {
                let t = retired.entry(service.to_string()).or_default();
                t.0 += requests;
                t.1 += errors;
            }
        }
    }

    /// Drops what is kept per service (connect failures, ejections, retries, and the totals of
    /// routes dropped) for the services `followed` says are no longer followed, so the `service`
    /// label stays bounded by the services followed now, not by every name ever seen.
    pub fn forget_services(&self, followed: impl Fn(&str) -> bool) {
        lock(&self.rare).retain(|service, _| followed(service));
        lock(&self.retired).retain(|service, _| followed(service));
    }

    /// Each service's connect failures, ejections and retries by reason (in
    /// [`RetryReason::ALL`]'s order), sorted by service.
    fn rare_counts(&self) -> Vec<(String, Rare)> {
        let mut out: Vec<(String, Rare)> = lock(&self.rare).iter().map(|(s, r)| (s.clone(), *r)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
