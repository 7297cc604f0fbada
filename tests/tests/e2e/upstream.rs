//! The gateway's connections to instances, through the real gateway and a real Consul: an
//! instance that closes idle keep-alive connections after 1 s (as many servers do) costs no
//! request, and a stray body after a `204` or `304` never answers the next request.

use std::time::Duration;

use e2e::{Backend, Consul, Gateway};

/// `clients` threads for each method, each sending `requests` requests about a second apart
/// (0.8 to 1.2 s, spread so that connections sit idle on both sides of 1 s) to `service`. Each
/// answer must be the instance's own answer to that request. Returns the failures.
fn spaced_traffic(
    gw: &Gateway,
    service: &str,
    methods: &[&'static str],
    clients: usize,
    requests: usize,
) -> Vec<String> {
    let mut threads = Vec::new();
    for (m, &method) in methods.iter().enumerate() {
        for c in 0..clients {
            let base = gw.url(&format!("/{service}"));
            let client_id = m * clients + c;
            threads.push(std::thread::spawn(move || {
                let client = e2e::http();
                let mut failures = Vec::new();
                for i in 0..requests {
                    // A spread that differs per client and per request, and covers 0.8 to 1.2 s.
                    let jitter = (i * 7919 + client_id * 104_729) % 401;
                    std::thread::sleep(Duration::from_millis(800 + jitter as u64));
                    let path = format!("/c{client_id}/r{i}");
                    let method_ = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                    let mut req = client.request(method_, format!("{base}{path}"));
                    if method != "GET" {
                        req = req.body("payload");
                    }
                    let outcome = req.send().and_then(|r| Ok((r.status().as_u16(), r.text()?)));
                    let want = format!("{method} {path}");
                    match outcome {
                        Ok((200, body)) if body == want => {}
                        Ok((status, body)) => failures.push(format!("{want}: {status} {body}")),
                        Err(e) => failures.push(format!("{want}: {e}")),
                    }
                }
                failures
            }));
        }
    }
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

fn setup(keep_alive: Option<&'static str>, gateway_args: &[&str]) -> (Consul, Backend, Gateway) {
    let consul = Consul::start();
    let backend = Backend::start(Duration::from_secs(1), keep_alive);
    consul.register("idle-closer", "idle-closer-1", backend.port);
    let gw = Gateway::start(&consul, "idle-closer", gateway_args);
    gw.proc.wait_for_log(&format!("added 127.0.0.1:{}", backend.port), 0, Duration::from_secs(10));
    (consul, backend, gw)
}

/// The input: one instance, closing connections idle for 1 s and saying nothing about
/// it; requests about a second apart; the gateway's defaults. 200 of each method, no error.
#[test]
fn an_instance_closing_idle_connections_after_a_second_costs_no_request() {
    let (_consul, backend, gw) = setup(None, &[]);
    let failures = spaced_traffic(&gw, "idle-closer", &["GET", "PUT", "POST"], 4, 50);
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    for method in ["GET", "PUT", "POST"] {
        assert_eq!(backend.count(method), 200, "{method}: each request reached the instance once");
    }
}

/// With an idle limit far above the instance's, its `Keep-Alive: timeout=1` is what keeps the
/// gateway off connections the instance is closing: no error, not even for a POST.
#[test]
fn the_instance_keep_alive_timeout_is_honoured() {
    let (_consul, backend, gw) = setup(Some("timeout=1"), &["--upstream-idle-timeout", "60s"]);
    let failures = spaced_traffic(&gw, "idle-closer", &["GET", "PUT", "POST"], 4, 25);
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(backend.count("POST"), 100, "each POST reached the instance once");
}

/// With an idle limit far above the instance's and no header, the gateway does reuse
/// connections the instance has closed or is closing: the probe and a new connection to the
/// same (only) instance make that cost idempotent requests nothing.
#[test]
fn a_reused_connection_the_instance_closed_costs_an_idempotent_request_nothing() {
    let (_consul, backend, gw) = setup(None, &["--upstream-idle-timeout", "60s"]);
    let failures = spaced_traffic(&gw, "idle-closer", &["GET", "PUT", "DELETE"], 4, 25);
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
    assert!(backend.count("GET") >= 100);
}

/// A stray body after a `204` or `304` (sent in a write of its own, as a Python
/// `BaseHTTPRequestHandler` does): every following request, of any method, gets its own answer.
#[test]
fn a_stray_body_after_a_bodiless_response_never_answers_the_next_request() {
    let (_consul, _backend, gw) = setup(None, &[]);
    let client = e2e::http();
    for round in 0..10 {
        for status in [204, 304] {
            let r = client.get(gw.url(&format!("/idle-closer/odd/{status}"))).send().unwrap();
            assert_eq!(r.status().as_u16(), status);
            for method in ["GET", "POST", "PUT", "DELETE"] {
                let path = format!("/after/{status}/{round}");
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let r = client.request(m, gw.url(&format!("/idle-closer{path}"))).body("b").send().unwrap();
                let (code, body) = (r.status().as_u16(), r.text().unwrap());
                assert_eq!((code, body.as_str()), (200, format!("{method} {path}").as_str()), "after a {status}");
            }
        }
    }
}
