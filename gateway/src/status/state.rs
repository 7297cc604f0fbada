//! The status page's state: one JSON document with what the gateway routes now (its routes, each
//! service with its instances, each service's request and error rates), whether Consul's data is
//! fresh, and optionally the recent changes. Built from the gateway's own memory ([`Services`],
//! its change feed, [`Metrics`]): building it never reads Consul.
//!
//! Rates are per second, from the differences of [`Metrics::service_totals`] between two
//! samples about [`RATE_WINDOW`] apart, kept in a [`Rates`] shared by every follower of the page.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};

use crate::discovery::services::Services;
use crate::observe::changes::Event;
use crate::observe::metrics::{Metrics, ServiceTotals};

/// How far apart the two samples a rate is computed from are (at least; the samples are taken
/// when states are built, about every second while a page follows).
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Samples closer together than this give no rate yet (too noisy).
const RATE_MIN_SPAN: Duration = Duration::from_millis(200);
/// Samples are kept at most this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The whole state the page shows (the `state` event's JSON).
#[derive(Debug, Serialize)]
pub struct State {
    /// When it was built: RFC 3339 UTC with milliseconds.
    pub at: String,
    /// The watcher's and Consul's state.
    pub consul: ConsulState,
    /// The route table, in match order.
    pub routes: Vec<RouteRow>,
    /// The followed services, by name.
    pub services: Vec<ServiceRow>,
    /// The recent changes, oldest first (up to [`crate::observe::changes::RECENT`]); only in a
    /// full state (on connect, and after the follower lagged), else absent.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "events")]
    pub changes: Option<Vec<Arc<Event>>>,
}

/// Whether the gateway's view of Consul is current.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ConsulState {
    /// Whether the watcher child is connected to the gateway.
    pub watcher_connected: bool,
    /// Whether the watcher can read Consul's catalog (`false` with a `reason`).
    pub catalog_readable: bool,
    /// Why it cannot, if it cannot (Consul's error, never a token).
    pub reason: Option<String>,
    /// How many followed services' data may be out of date.
    pub stale_services: usize,
}

/// One route, as `GET /routes` shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RouteRow {
    /// The route (`host/path` or `/path`).
    pub route: String,
    /// The service it sends to.
    pub service: String,
    /// How many instances it may send to now.
    pub instances: usize,
    /// The declaring tag's options (`strip=/v1 split=canary:10`), if it has any.
    pub options: Option<String>,
}

/// One followed service.
#[derive(Debug, Serialize)]
pub struct ServiceRow {
    /// The service name.
    pub service: String,
    /// Whether it is named in `--services` (else followed because of its tags).
    #[serde(rename = "static")]
    pub is_static: bool,
    /// Whether its instances were read yet.
    pub loaded: bool,
    /// Why its data may be out of date, if it may be.
    pub stale_reason: Option<String>,
    /// Consul's index of its current set.
    pub index: Option<u64>,
    /// When its set last changed (RFC 3339 UTC, milliseconds).
    pub last_change: Option<String>,
    /// Requests per second, `None` before two samples of the request totals exist.
    pub requests_per_second: Option<f64>,
    /// Responses with a 5xx status per second, `None` likewise.
    pub errors_per_second: Option<f64>,
    /// Its routable instances.
    pub instances: Vec<InstanceRow>,
}

/// One routable instance.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct InstanceRow {
    /// Consul's service ID.
    pub id: String,
    /// Consul's node.
    pub node: String,
    /// `host:port`.
    pub address: String,
    /// Its health status. The gateway routes only instances whose checks allow it, and Consul's
    /// health view does not say which allowed status each has: `passing`.
    pub status: &'static str,
    /// Its weight (Consul's `Weights` for its status).
    pub weight: u32,
    /// Since when it has been in the service's set (RFC 3339 UTC, milliseconds).
    pub since: String,
}

fn events<S: Serializer>(changes: &Option<Vec<Arc<Event>>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(changes.iter().flatten().map(|e| &**e))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Builds the state now; with `full`, the recent changes too. Records a sample of the request
/// totals in `rates`.
pub fn build(services: &Services, metrics: &Metrics, rates: &Rates, full: bool) -> State {
    let rate = rates.observe(Instant::now(), metrics.service_totals());
    let freshness = services.freshness();
    let reason = freshness.consul_reason();
    let watcher_connected = freshness.watcher_connected();

    let table = services.table();
    let routes = table
        .routes()
        .iter()
        .map(|r| {
            let set = r.slot.set();
            RouteRow {
                route: r.shown(),
                service: r.service.clone(),
                instances: set.as_ref().and_then(|s| s.candidates(r.tag.as_deref())).map_or(0, |c| c.count()),
                // The spec shows the route first, then its options.
                options: r
                    .spec
                    .as_ref()
                    .and_then(|s| s.to_string().split_once(' ').map(|(_, options)| options.to_string())),
            }
        })
        .collect();

    let mut rows: Vec<ServiceRow> = services
        .slots()
        .iter()
        .map(|slot| {
            let set = slot.set();
            let (requests_per_second, errors_per_second) = match rate.get(&slot.service) {
                Some(r) => (Some(r.requests), Some(r.errors)),
                // Totals exist, none for this service: no request reached it.
                None if !rate.is_empty() => (Some(0.0), Some(0.0)),
                None => (None, None),
            };
            ServiceRow {
                service: slot.service.clone(),
                is_static: slot.is_static,
                loaded: set.is_some(),
                stale_reason: freshness.stale_reason(&slot.service),
                index: set.as_ref().map(|s| s.index),
                last_change: set.as_ref().map(|s| rfc3339(s.changed_at)),
                requests_per_second,
                errors_per_second,
                instances: set
                    .as_ref()
                    .map(|s| {
                        s.endpoints
                            .iter()
                            .zip(&s.since)
                            .map(|(e, since)| InstanceRow {
                                id: e.instance.id.clone(),
                                node: e.instance.node.clone(),
                                address: e.instance.authority(),
                                status: "passing",
                                weight: e.weight(),
                                since: rfc3339(*since),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.service.cmp(&b.service));
    let stale_services = rows.iter().filter(|r| r.stale_reason.is_some()).count();

    State {
        at: rfc3339(SystemTime::now()),
        consul: ConsulState { watcher_connected, catalog_readable: reason.is_none(), reason, stale_services },
        routes,
        services: rows,
        changes: full.then(|| services.feed().recent()),
    }
}

/// One service's rates, per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second.
    pub requests: f64,
    /// 5xx responses per second.
    pub errors: f64,
}

/// Each service's (requests, errors) totals at one moment.
type Sample = (Instant, HashMap<String, (u64, u64)>);

/// Samples of the per-service request totals, to compute rates from; shared by every follower.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    /// Records `totals` as of `now` and returns each service's rates: against the newest sample
    /// at least [`RATE_WINDOW`] old, or else the oldest one if it is at least 200 ms old. Empty
    /// when there is no such sample, or no totals (metrics not kept). A total lower than before
    /// (a counter reset) counts as 0.
    pub fn observe(&self, now: Instant, totals: Vec<ServiceTotals>) -> HashMap<String, Rate> {
        let current: HashMap<String, (u64, u64)> =
            totals.into_iter().map(|t| (t.service, (t.requests, t.errors))).collect();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let old_enough = |at: &Instant| now.saturating_duration_since(*at) >= RATE_WINDOW;
        let base = samples
            .iter()
            .rev()
            .find(|(at, _)| old_enough(at))
            .or_else(|| samples.front().filter(|(at, _)| now.saturating_duration_since(*at) >= RATE_MIN_SPAN));
        let mut out = HashMap::new();
        if let Some((at, before)) = base {
            let secs = now.saturating_duration_since(*at).as_secs_f64();
            for (service, (requests, errors)) in &current {
                let (r0, e0) = before.get(service).copied().unwrap_or((0, 0));
                let rate = Rate {
                    requests: requests.saturating_sub(r0) as f64 / secs,
                    errors: errors.saturating_sub(e0) as f64 / secs,
                };
                out.insert(service.clone(), rate);
            }
        }
        if samples.back().is_none_or(|(at, _)| now.saturating_duration_since(*at) >= SAMPLE_EVERY) {
            samples.push_back((now, current));
        }
        // Keep one sample old enough to be a base, and the newer ones.
        while samples.len() > 1 && samples.get(1).is_some_and(|(at, _)| old_enough(at)) {
            samples.pop_front();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::direct::StaticRead;
    use crate::discovery::tag::TagRules;
    use consul::Instance;

    fn totals(v: &[(&str, u64, u64)]) -> Vec<ServiceTotals> {
        v.iter().map(|(s, r, e)| ServiceTotals { service: s.to_string(), requests: *r, errors: *e }).collect()
    }

    #[test]
    fn rates_are_deltas_per_second() {
        let rates = Rates::default();
        let t0 = Instant::now();
        assert!(rates.observe(t0, totals(&[("web", 100, 1)])).is_empty(), "one sample: no rate");
        // 100 ms later: too close to say.
        assert!(rates.observe(t0 + Duration::from_millis(100), totals(&[("web", 110, 1)])).is_empty());
        // 500 ms after the first: against it.
        let r = rates.observe(t0 + Duration::from_millis(500), totals(&[("web", 150, 6)]));
        assert_eq!(r["web"], Rate { requests: 100.0, errors: 10.0 });
        // 2 s after: against the newest sample at least 1 s old (the one at 500 ms), a new service
        // counts from 0, a reset counts as 0.
        let r = rates.observe(t0 + Duration::from_millis(2000), totals(&[("web", 450, 0), ("api", 30, 3)]));
        assert_eq!(r["web"], Rate { requests: 200.0, errors: 0.0 });
        assert_eq!(r["api"], Rate { requests: 20.0, errors: 2.0 });
        assert!(rates.samples.lock().unwrap().len() <= 3, "old samples are dropped");
    }

    #[test]
    fn no_totals_no_rates() {
        let rates = Rates::default();
        let t0 = Instant::now();
        rates.observe(t0, vec![]);
        assert!(rates.observe(t0 + Duration::from_secs(2), vec![]).is_empty());
    }

    fn services() -> Services {
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        Services::new(["web".to_string(), "idle".to_string()], rules, Arc::new(StaticRead::default()))
    }

    #[test]
    fn state_lists_routes_services_instances_and_consul() {
        let services = services();
        let metrics = Metrics::default();
        let rates = Rates::default();
        services.freshness().set_watcher_connected(true);
        let mut i = Instance::new("web-1", "n1", "127.0.0.1", 3001);
        i.weight = 3;
        let declared = "urlprefix-/w strip=/w";
        i.tags = vec![declared.to_string()];
        let two = vec![i, Instance::new("web-2", "n1", "127.0.0.1", 3002)];
        services.apply_snapshot("web", 12, two, vec![declared.to_string()]);

        let state = build(&services, &metrics, &rates, true);
        assert_eq!(
            state.consul,
            ConsulState { watcher_connected: true, catalog_readable: true, reason: None, stale_services: 0 }
        );
        let web = state.routes.iter().find(|r| r.service == "web").expect("the name route of web");
        assert_eq!(web, &RouteRow { route: "/web".into(), service: "web".into(), instances: 2, options: None });
        let w = state.routes.iter().find(|r| r.route == "/w").expect("the declared route");
        assert_eq!((w.instances, w.options.as_deref()), (1, Some("strip=/w")), "options without the route");
        let names: Vec<&str> = state.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["idle", "web"]);
        let (idle, web) = (&state.services[0], &state.services[1]);
        assert!(!idle.loaded && idle.instances.is_empty());
        assert_eq!(web.index, Some(12));
        assert_eq!(web.instances.len(), 2);
        assert_eq!((web.instances[0].address.as_str(), web.instances[0].weight), ("127.0.0.1:3001", 3));
        assert_eq!(web.instances[0].status, "passing");
        assert_eq!(web.requests_per_second, None, "the metrics stub has no totals");
        // The change that loaded web was published, and a full state carries it.
        let changes = state.changes.as_ref().expect("full state");
        assert!(changes.iter().any(|e| e.message.contains("web: 0 -> 2 instances")), "{changes:?}");

        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["services"][1]["static"], true);
        assert_eq!(json["services"][1]["instances"][1]["address"], "127.0.0.1:3002");
        assert!(json["services"][1]["instances"][0]["since"].as_str().unwrap().ends_with('Z'));
        assert!(json["changes"].is_array());
        // A periodic state has no changes.
        let json = serde_json::to_value(build(&services, &metrics, &rates, false)).unwrap();
        assert!(json.get("changes").is_none(), "{json}");
    }

    #[test]
    fn state_shows_why_data_is_stale() {
        let services = services();
        let metrics = Metrics::default();
        let state = build(&services, &metrics, &Rates::default(), false);
        assert!(!state.consul.watcher_connected);
        assert_eq!(state.consul.stale_services, 2);
        assert_eq!(state.services[1].stale_reason.as_deref(), Some("watcher not connected"));

        services.freshness().set_watcher_connected(true);
        services.freshness().set_consul(Some("Consul answered 403".into()), true);
        services.freshness().set_readable("web", Some("connection refused".into()));
        let state = build(&services, &metrics, &Rates::default(), false);
        assert!(state.consul.watcher_connected);
        assert!(!state.consul.catalog_readable);
        assert_eq!(state.consul.reason.as_deref(), Some("Consul answered 403"));
        assert_eq!(state.consul.stale_services, 1);
        assert!(state.services[1].stale_reason.as_deref().unwrap().contains("connection refused"));
    }
}
