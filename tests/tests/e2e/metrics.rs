//! `GET /metrics`: the counters and the histogram against what the client counted, the
//! instances gauge following Consul, and Debian's real Prometheus server scraping the gateway.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use e2e::{free_port, http, wait_for, Consul, Gateway, Proc, ServiceWeb};

/// One sample: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of an exposition (label values here hold no quote, comma or escape).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample { name: name.to_string(), labels, value: value.parse().unwrap() }
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include every one of `want`.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

fn scrape(gw: &Gateway) -> Vec<Sample> {
    let resp = http().get(gw.admin("/metrics")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = resp.text().unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    parse(&text)
}

/// Sends `n` GETs to `path`; counts the statuses the client saw.
fn send(gw: &Gateway, path: &str, n: usize, seen: &mut HashMap<(String, u16), usize>) {
    let client = http();
    for _ in 0..n {
        let status = client.get(gw.url(path)).send().unwrap().status().as_u16();
        *seen.entry((path.to_string(), status)).or_default() += 1;
    }
}

#[test]
fn counters_and_the_histogram_match_what_the_client_counted() {
    let consul = Consul::start();
    let live: Vec<ServiceWeb> = (0..2).map(|_| ServiceWeb::start(None)).collect();
    for b in &live {
        consul.register("service-web", &format!("web-{}", b.port), b.port);
    }
    // A service whose only instance has nothing listening: the gateway answers 502.
    consul.register("dead", "dead-1", free_port());
    let gw = Gateway::start(&consul, "service-web,dead", &[]);
    gw.proc.wait_for_log("-> 2 instances", 0, Duration::from_secs(5));

    let mut seen = HashMap::new();
    send(&gw, "/service-web/getRemoteIp", 25, &mut seen);
    send(&gw, "/no-such-route", 4, &mut seen);
    send(&gw, "/dead/x", 3, &mut seen);
    assert_eq!(seen.get(&("/service-web/getRemoteIp".into(), 200)), Some(&25), "{seen:?}");
    assert_eq!(seen.get(&("/no-such-route".into(), 404)), Some(&4), "{seen:?}");
    let dead_5xx: usize = seen.iter().filter(|((p, s), _)| p == "/dead/x" && *s >= 500).map(|(_, n)| n).sum();
    assert_eq!(dead_5xx, 3, "{seen:?}");

    // A request is counted when its response body ends, a moment after the client has it.
    let samples = wait_for(Duration::from_secs(5), "the last request to be counted", || {
        let s = scrape(&gw);
        (sum(&s, "gateway_requests_total", &[]) >= 32.0).then_some(s)
    });
    let web = [("route", "/service-web"), ("service", "service-web")];
    assert_eq!(sum(&samples, "gateway_requests_total", &[web[0], web[1], ("method", "GET"), ("code", "200")]), 25.0);
    assert_eq!(sum(&samples, "gateway_requests_total", &[("route", ""), ("code", "404")]), 4.0);
    for ((path, status), n) in &seen {
        if path == "/dead/x" {
            let code = status.to_string();
            let counted = sum(&samples, "gateway_requests_total", &[("service", "dead"), ("code", &code)]);
            assert_eq!(counted, *n as f64, "dead/{code}");
        }
    }
    assert_eq!(sum(&samples, "gateway_requests_total", &[]), 32.0, "nothing counted twice or invented");
    assert_eq!(sum(&samples, "gateway_request_duration_seconds_count", &web), 25.0);
    assert_eq!(sum(&samples, "gateway_request_duration_seconds_bucket", &[web[0], web[1], ("le", "+Inf")]), 25.0);
    assert!(sum(&samples, "gateway_request_duration_seconds_sum", &web) > 0.0);
    assert!(sum(&samples, "gateway_upstream_connect_failures_total", &[("service", "dead")]) >= 1.0);
    assert_eq!(sum(&samples, "gateway_instances", &[("service", "service-web")]), 2.0);
    assert_eq!(sum(&samples, "gateway_stale", &[]), 0.0);
    assert_eq!(sum(&samples, "gateway_consul_last_success_age_seconds", &[]), 0.0);
    assert!(sum(&samples, "gateway_route_changes_total", &[]) >= 2.0, "two name routes added");
    assert!(sum(&samples, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(sum(&samples, "process_start_time_seconds", &[]) > 1.5e9);

    let changes = sum(&samples, "gateway_instance_changes_total", &[]);
    consul.deregister(&format!("web-{}", live[0].port));
    wait_for(Duration::from_secs(5), "gateway_instances to follow the deregistration", || {
        let s = scrape(&gw);
        (sum(&s, "gateway_instances", &[("service", "service-web")]) == 1.0
            && sum(&s, "gateway_instance_changes_total", &[]) > changes)
            .then_some(())
    });
}

/// Debian's Prometheus server: `PROMETHEUS_BIN`, or `<repo>/.tools/prometheus`.
fn prometheus_bin() -> PathBuf {
    let path = std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/prometheus"));
    assert!(
        path.exists(),
        "no Prometheus server at {}: run `bash scripts/install-prometheus.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Asks Prometheus for the value of an instant query that returns one sample.
fn query(port: u16, q: &str) -> Option<f64> {
    let resp = http().get(format!("http://127.0.0.1:{port}/api/v1/query")).query(&[("query", q)]).send().ok()?;
    let v: serde_json::Value = resp.json().ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_request_count() {
    let bin = prometheus_bin();
    let consul = Consul::start();
    let b = ServiceWeb::start(None);
    consul.register("service-web", "web-1", b.port);
    let gw = Gateway::start(&consul, "service-web", &[]);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            gw.admin_port
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Proc::spawn_path(
        &bin,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        &[],
    );
    wait_for(Duration::from_secs(20), "Prometheus to scrape the gateway", || {
        query(port, "up{job=\"gateway\"}").filter(|up| *up == 1.0)
    });

    const N: usize = 37;
    let client = http();
    for i in 0..N {
        let status = client.get(gw.url("/service-web/getRemoteIp")).send().unwrap().status();
        assert_eq!(status, 200, "request {i}");
    }
    let q = "sum(gateway_requests_total{service=\"service-web\"})";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = query(port, q);
        if got == Some(N as f64) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Prometheus answers {got:?} to {q}, not {N}, after 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let count = query(port, "sum(gateway_request_duration_seconds_count{service=\"service-web\"})");
    assert_eq!(count, Some(N as f64));
}

#[test]
fn watcher_restarts_and_staleness_show_in_the_metrics() {
    let consul = Consul::start();
    let b = ServiceWeb::start(None);
    consul.register("service-web", "web-1", b.port);
    let gw = Gateway::start(&consul, "service-web", &[]);
    let s = scrape(&gw);
    assert_eq!(sum(&s, "gateway_watcher_restarts_total", &[]), 0.0);
    assert_eq!(sum(&s, "gateway_stale", &[]), 0.0);
    assert_eq!(sum(&s, "gateway_service_stale", &[("service", "service-web")]), 0.0);

    e2e::signal(gw.watcher_pid(), "KILL");
    wait_for(Duration::from_secs(10), "the restart to be counted", || {
        (sum(&scrape(&gw), "gateway_watcher_restarts_total", &[]) == 1.0).then_some(())
    });
    gw.wait_ready();
    wait_for(Duration::from_secs(10), "fresh again after the new watcher connected", || {
        let s = scrape(&gw);
        (sum(&s, "gateway_stale", &[]) == 0.0 && sum(&s, "gateway_consul_last_success_age_seconds", &[]) == 0.0)
            .then_some(())
    });
}
