//! Storage and exposition tests: shards summed, bounded labels, the text Prometheus reads.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::discovery::direct::StaticRead;
use crate::discovery::services::Services;
use crate::discovery::tag::TagRules;
use crate::proxy::upstream::set_thread_slot;

fn services() -> Arc<Services> {
    let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
    Arc::new(Services::new(["web".to_string(), "api".to_string()], rules, Arc::new(StaticRead::default())))
}

fn labels(route: &str, service: &str) -> Labels {
    Labels { route: route.into(), service: service.into() }
}

/// The value of the sample line that starts with `prefix` (name and labels), if any.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn shards_are_summed_over_workers() {
    let m = Arc::new(Metrics::new(3));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let m = m.clone();
            std::thread::spawn(move || {
                set_thread_slot(i);
                // Each worker builds its own Arcs: the same text must add up (a rebuilt table).
                let web = labels("/web", "web");
                for _ in 0..100 {
                    m.request_done(Some(&web), &http::Method::GET, 200, Duration::from_millis(2));
                }
                m.request_done(Some(&web), &http::Method::POST, 502, Duration::from_millis(2));
                m.request_done(None, &http::Method::GET, 404, Duration::from_micros(10));
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    for shard in m.shards.iter() {
        assert_eq!(shard.0.lock().unwrap().entries().count(), 2, "every worker wrote its own shard");
    }
    let summed = m.summed();
    assert_eq!(summed.len(), 2);
    let (key, web) = &summed[1];
    assert_eq!((&*key.route, &*key.service), ("/web", "web"));
    assert_eq!((web.requests(), web.errors()), (303, 3));
    assert_eq!(m.service_totals(), [ServiceTotals { service: "web".into(), requests: 303, errors: 3 }]);
}

#[test]
fn slots_beyond_the_shards_wrap() {
    let m = Metrics::new(2);
    std::thread::spawn(move || {
        set_thread_slot(5);
        m.request_done(None, &http::Method::GET, 404, Duration::ZERO);
        assert_eq!(m.summed()[0].1.requests(), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn exposition_has_every_series_and_counts() {
    let services = services();
    let m = Arc::new(Metrics::new(1));
    let web = labels("/web", "web");
    for _ in 0..3 {
        m.request_done(Some(&web), &http::Method::GET, 200, Duration::from_millis(3));
    }
    m.request_done(Some(&web), &http::Method::from_bytes(b"PROPFIND").unwrap(), 503, Duration::from_secs(40));
    m.request_done(None, &http::Method::GET, 404, Duration::from_micros(100));
    m.retry("web", RetryReason::NoResponse);
    m.connect_failure("web");
    m.connect_failure("web");
    m.ejection("web");
    let _client = m.open(Open::Client);
    let _tunnel = m.open(Open::Tunnel);
    services.feed().publish(crate::observe::changes::Kind::RouteAdded, None, None, "x");
    services.freshness().watcher_restarted();

    let text = expose::render(m.clone(), services.clone()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE gateway_requests counter\n"), "{text}");
    let get = |p: &str| sample(&text, p).unwrap_or_else(|| panic!("no {p} in\n{text}"));
    assert_eq!(get(r#"gateway_requests_total{route="/web",service="web",method="GET",code="200"}"#), 3.0);
    assert_eq!(get(r#"gateway_requests_total{route="/web",service="web",method="other",code="503"}"#), 1.0);
    assert_eq!(get(r#"gateway_requests_total{route="",service="",method="GET",code="404"}"#), 1.0);
    assert_eq!(get(r#"gateway_request_duration_seconds_count{route="/web",service="web"}"#), 4.0);
    assert_eq!(get(r#"gateway_request_duration_seconds_bucket{le="0.005",route="/web",service="web"}"#), 3.0);
    assert_eq!(get(r#"gateway_request_duration_seconds_bucket{le="30.0",route="/web",service="web"}"#), 3.0);
    assert_eq!(get(r#"gateway_request_duration_seconds_bucket{le="+Inf",route="/web",service="web"}"#), 4.0);
    assert!((get(r#"gateway_request_duration_seconds_sum{route="/web",service="web"}"#) - 40.009).abs() < 1e-9);
    assert_eq!(get(r#"gateway_retries_total{service="web",reason="no_response"}"#), 1.0);
    assert_eq!(get(r#"gateway_retries_total{service="web",reason="connect_failed"}"#), 0.0);
    assert_eq!(get(r#"gateway_upstream_connect_failures_total{service="web"}"#), 2.0);
    assert_eq!(get(r#"gateway_ejections_total{service="web"}"#), 1.0);
    assert_eq!(get(r#"gateway_instances{service="web"}"#), 0.0);
    assert_eq!(get("gateway_route_changes_total"), services.feed().route_changes() as f64);
    assert!(services.feed().route_changes() >= 1);
    assert_eq!(get("gateway_instance_changes_total"), 0.0);
    assert_eq!(get("gateway_watcher_restarts_total"), 1.0);
    assert_eq!(get("gateway_stale"), 1.0, "no watcher connected");
    assert_eq!(get(r#"gateway_service_stale{service="api"}"#), 1.0);
    assert!(get("gateway_consul_last_success_age_seconds") >= 0.0);
    assert_eq!(get(r#"gateway_open_connections{side="client"}"#), 2.0, "one, and the tunnel's");
    assert_eq!(get(r#"gateway_open_connections{side="upstream"}"#), 1.0, "the tunnel's");
    assert_eq!(get("gateway_websocket_tunnels"), 1.0);
    assert!(get("process_resident_memory_bytes") > 0.0);
    assert!(get("process_open_fds") > 0.0);
    assert!(get("process_threads") >= 1.0);
    assert!(get("process_start_time_seconds") > 1.5e9);
    assert!(sample(&text, "process_cpu_seconds_total").is_some());
    assert!(sample(&text, "process_max_fds").is_some());
    assert!(sample(&text, "process_virtual_memory_bytes").is_some());
    // No label value outside the route table, the method classes and status codes.
    for line in text.lines().filter(|l| l.starts_with("gateway_requests_total")) {
        assert!(line.contains("route=\"/web\"") || line.contains("route=\"\""), "{line}");
    }
}

#[test]
fn routes_that_are_gone_are_dropped_and_their_totals_kept() {
    let services = services();
    let m = Arc::new(Metrics::new(1));
    m.request_done(Some(&labels("/web", "web")), &http::Method::GET, 200, Duration::ZERO);
    // A route no table has (removed since): dropped at the next scrape.
    m.request_done(Some(&labels("/old", "web")), &http::Method::GET, 500, Duration::ZERO);
    let text = expose::render(m.clone(), services).unwrap();
    assert!(!text.contains("route=\"/old\""), "{text}");
    assert_eq!(m.summed().len(), 1);
    assert_eq!(m.service_totals(), [ServiceTotals { service: "web".into(), requests: 2, errors: 1 }]);
}

#[test]
fn services_no_longer_followed_are_dropped() {
    let services = services();
    let m = Arc::new(Metrics::new(1));
    m.ejection("web");
    // Services followed once and gone since (renamed, deregistered, a name per deploy): their
    // series would otherwise stay, and grow with every name ever seen.
    for i in 0..50 {
        m.connect_failure(&format!("gone-{i}"));
        m.retry(&format!("gone-{i}"), RetryReason::ConnectFailed);
    }
    m.request_done(Some(&labels("/old", "gone-0")), &http::Method::GET, 500, Duration::ZERO);
    let text = expose::render(m.clone(), services).unwrap();
    assert!(!text.contains("gone-"), "{text}");
    assert_eq!(sample(&text, r#"gateway_ejections_total{service="web"}"#), Some(1.0));
    assert_eq!(m.rare_counts().len(), 1);
    assert_eq!(m.service_totals(), [], "the totals of a service gone are dropped too");
}

#[test]
fn freshness_age_and_staleness_follow_the_watcher() {
    let services = services();
    let f = services.freshness();
    assert!(f.is_stale());
    std::thread::sleep(Duration::from_millis(20));
    assert!(f.last_success_age() >= Duration::from_millis(20), "never fresh: since the start");
    f.set_watcher_connected(true);
    assert!(!f.is_stale());
    assert_eq!(f.last_success_age(), Duration::ZERO);
    assert!(f.set_consul(Some("connection refused".into()), false).is_some());
    assert!(f.set_consul(Some("connection refused".into()), false).is_none(), "logged once per change");
    assert!(f.is_stale());
    std::thread::sleep(Duration::from_millis(20));
    let age = f.last_success_age();
    assert!(age >= Duration::from_millis(20) && age < Duration::from_secs(5), "{age:?}");
    assert!(f.set_consul(None, false).is_some());
    assert_eq!(f.last_success_age(), Duration::ZERO);
    assert!(f.set_readable("web", Some("500".into())).unwrap().contains("web"));
    assert!(f.is_stale());
    f.set_readable("web", None);
    assert!(!f.is_stale());
}

#[test]
fn access_log_drops_are_exposed() {
    use crate::observe::access::{Destination, Format, Record};
    let m = Arc::new(Metrics::new(1));
    let text = expose::render(m.clone(), services()).unwrap();
    assert_eq!(sample(&text, "gateway_access_log_dropped_total"), Some(0.0), "0 with the access log off");

    let dir = tempfile::tempdir().unwrap();
    // A queue of one, and records sent faster than the writer thread takes them.
    let log = Arc::new(AccessLog::start(Format::Json, Destination::File(dir.path().join("a.log")), 1).unwrap());
    m.follow_access_log(log.clone());
    for _ in 0..10_000 {
        log.log(Record {
            time: std::time::SystemTime::now(),
            client: None,
            method: http::Method::GET,
            path: None,
            version: http::Version::HTTP_11,
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            route: None,
            service: None,
            instance: None,
            retries: 0,
            request_id: http::HeaderValue::from_static("x"),
        });
    }
    let dropped = log.dropped();
    assert!(dropped > 0, "some were dropped");
    let text = expose::render(m, services()).unwrap();
    assert_eq!(sample(&text, "gateway_access_log_dropped_total"), Some(dropped as f64), "{text}");
}

#[tokio::test(start_paused = true)]
async fn routes_that_are_gone_are_dropped_without_a_scrape() {
    let m = Arc::new(Metrics::new(1));
    // "/old" is in no route table: its entry goes at the first prune, its totals stay.
    m.request_done(Some(&labels("/old", "web")), &http::Method::GET, 200, Duration::from_millis(1));
    assert_eq!(m.summed().len(), 1);
    tokio::spawn(prune_every(m.clone(), services(), Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(m.summed().is_empty(), "dropped with nobody scraping");
    let web = m.service_totals().into_iter().find(|t| t.service == "web").expect("web's totals kept");
    assert_eq!(web.requests, 1);
}

#[test]
fn a_tunnel_counts_its_client_and_upstream_connections_while_it_lasts() {
    let m = Metrics::new(1);
    let now = |m: &Metrics| [Open::Client, Open::Upstream, Open::Tunnel].map(|w| m.open_now(w));
    let (client, upstream) = (m.open(Open::Client), m.open(Open::Upstream));
    assert_eq!(now(&m), [1, 1, 0]);
    let tunnel = m.open(Open::Tunnel);
    // hyper hands both connections over to the tunnel: their own guards end.
    drop((client, upstream));
    assert_eq!(now(&m), [1, 1, 1], "still open, in the tunnel");
    drop(tunnel);
    assert_eq!(now(&m), [0, 0, 0]);
}
