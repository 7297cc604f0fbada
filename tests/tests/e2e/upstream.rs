//! The gateway's connections to instances, through the real gateway and a real Consul: an
//! instance that closes idle keep-alive connections after 1 s (as many servers do) costs no
//! request, and a stray body after a `204` or `304` never answers the next request.

use std::time::Duration;

use e2e::{Backend, Consul, Gateway};

/// For each method, one instance of its own (registered as `idle-<method>`) and one client that
/// sends it `requests` requests about a second apart (0.7 to 1.3 s, so that the connection sits
/// idle on both sides of the gateway's and the instance's limits), as the report had it. Each
/// answer must be the instance's own answer to that request. Returns the instances and the
/// failures.
fn spaced_traffic(
    keep_alive: Option<&'static str>,
    gateway_args: &[&str],
    methods: &[&'static str],
    requests: usize,
) -> (Vec<Backend>, Vec<String>) {
    let consul = Consul::start();
    let backends: Vec<Backend> = methods.iter().map(|_| Backend::start(Duration::from_secs(1), keep_alive)).collect();
    let services: Vec<String> = methods.iter().map(|m| format!("idle-{}", m.to_lowercase())).collect();
    for (service, backend) in services.iter().zip(&backends) {
        consul.register(service, service, backend.port);
    }
    let gw = Gateway::start(&consul, &services.join(","), gateway_args);
    for b in &backends {
        gw.proc.wait_for_log(&format!("added 127.0.0.1:{}", b.port), 0, Duration::from_secs(10));
    }
    let threads: Vec<_> = methods
        .iter()
        .zip(&services)
        .enumerate()
        .map(|(n, (&method, service))| {
            let base = gw.url(&format!("/{service}"));
            std::thread::spawn(move || {
                let client = e2e::http();
                let mut failures = Vec::new();
                for i in 0..requests {
                    // A spread that differs per request and per client: 0.7 to 1.3 s.
                    let jitter = (i * 7919 + n * 104_729) % 601;
                    std::thread::sleep(Duration::from_millis(700 + jitter as u64));
                    let path = format!("/r{i}");
                    let mut req = client
                        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{path}"));
                    if method != "GET" {
                        req = req.body("payload");
                    }
                    let want = format!("{method} {path}");
                    match req.send().and_then(|r| Ok((r.status().as_u16(), r.text()?))) {
                        Ok((200, body)) if body == want => {}
                        Ok((status, body)) => failures.push(format!("{want}: {status} {body}")),
                        Err(e) => failures.push(format!("{want}: {e}")),
                    }
                }
                failures
            })
        })
        .collect();
    let failures = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    (backends, failures)
}

/// The input: an instance that closes connections idle for 1 s and says nothing about it;
/// one request about every second; the gateway's defaults. 200 of each of GET, PUT and POST, no
/// error, each answered once. (Before the fix, about half of them failed against this backend,
/// which always loses the race that a real server loses now and then.)
#[test]
fn an_instance_closing_idle_connections_after_a_second_costs_no_request() {
    let (backends, failures) = spaced_traffic(None, &[], &["GET", "PUT", "POST"], 200);
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    for (b, method) in backends.iter().zip(["GET", "PUT", "POST"]) {
        assert_eq!(b.count(method), 200, "{method}: each request answered once");
    }
}

/// With an idle limit far above the instance's, its `Keep-Alive: timeout=1` is what keeps the
/// gateway off connections the instance is closing: no error, not even for a POST.
#[test]
fn the_instance_keep_alive_timeout_is_honoured() {
    let (backends, failures) =
        spaced_traffic(Some("timeout=1"), &["--upstream-idle-timeout", "60s"], &["GET", "POST"], 60);
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(backends[1].count("POST"), 60, "each POST answered once");
}

/// With an idle limit far above the instance's and no header, the gateway does reuse connections
/// the instance is closing: sending the request again on a new connection to the same (only)
/// instance makes that cost idempotent requests nothing.
#[test]
fn a_reused_connection_the_instance_closed_costs_an_idempotent_request_nothing() {
    let (_, failures) = spaced_traffic(None, &["--upstream-idle-timeout", "60s"], &["GET", "PUT", "DELETE"], 60);
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
}

fn setup(keep_alive: Option<&'static str>, gateway_args: &[&str]) -> (Consul, Backend, Gateway) {
    let consul = Consul::start();
    let backend = Backend::start(Duration::from_secs(1), keep_alive);
    consul.register("stray", "stray-1", backend.port);
    let gw = Gateway::start(&consul, "stray", gateway_args);
    gw.proc.wait_for_log(&format!("added 127.0.0.1:{}", backend.port), 0, Duration::from_secs(10));
    (consul, backend, gw)
}

/// A stray body after a `204` or `304` (sent in a write of its own, as a Python
/// `BaseHTTPRequestHandler` does): every following request, of any method, gets its own answer.
#[test]
fn a_stray_body_after_a_bodiless_response_never_answers_the_next_request() {
    let (_consul, _backend, gw) = setup(None, &[]);
    let client = e2e::http();
    for round in 0..10 {
        for status in [204, 304] {
            let r = client.get(gw.url(&format!("/stray/odd/{status}"))).send().unwrap();
            assert_eq!(r.status().as_u16(), status);
            for method in ["GET", "POST", "PUT", "DELETE"] {
                let path = format!("/after/{status}/{round}");
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let r = client.request(m, gw.url(&format!("/stray{path}"))).body("b").send().unwrap();
                let (code, body) = (r.status().as_u16(), r.text().unwrap());
                assert_eq!((code, body.as_str()), (200, format!("{method} {path}").as_str()), "after a {status}");
            }
        }
    }
}
