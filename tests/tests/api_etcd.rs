//! The register/discover API with `--source etcd`: a real etcd server, the real gateway (its API
//! writing to etcd, its watcher reading the prefix) and a real echo backend on loopback.
//!
//! - an instance registered through the API is routed; heartbeats keep it past its TTL; without
//!   them it leaves routing once its lease runs out; re-registered and deleted, it is gone at
//!   once; an unknown ID is 404 and a bad token 401;
//! - a second gateway on the same etcd (as after a restart) heartbeats and deletes instances the
//!   first registered (the key and lease are read from etcd, not from memory);
//! - with etcd down, writes answer 503 in bounded time while `GET /v1/services` answers from the
//!   cache, stale; with etcd back, heartbeats work again.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::{get_json, http, wait_for, Echo, Etcd, Gateway};
use serde_json::{json, Value};

const TOKEN: &str = "e2e-api-etcd-token-91c4";

fn gateway(etcd: &Etcd) -> Gateway {
    let gw = Gateway::start_env(&[], &["--source", "etcd", "--etcd-endpoints", &etcd.endpoint(), "--api-token", TOKEN]);
    gw.wait_ready();
    gw
}

/// One API call: the status and the body as JSON.
fn call(gw: &Gateway, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = http().request(method.parse().unwrap(), gw.admin(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path} answered {status} not JSON: {text}"));
    (status, body)
}

fn registration(id: &str, port: u16, ttl: &str) -> Value {
    json!({"service": "etcdapi", "id": id, "address": "127.0.0.1", "port": port, "ttl": ttl,
           "tags": ["gateway"], "meta": {"owner": "e2e"}})
}

/// The port of the instance that answered `/etcdapi/` through the public listener, or the status
/// when none did.
fn routed(gw: &Gateway) -> Result<u16, u16> {
    match get_json(&http(), &gw.url("/etcdapi/x")) {
        Ok((200, v)) => Ok(v["port"].as_u64().unwrap() as u16),
        Ok((status, _)) => Err(status),
        Err(_) => Err(0),
    }
}

fn wait_routed(gw: &Gateway, want: Result<u16, ()>, what: &str) {
    wait_for(Duration::from_secs(15), what, || match (routed(gw), want) {
        (Ok(p), Ok(w)) if p == w => Some(()),
        (Err(_), Err(())) => Some(()),
        _ => None,
    });
}

#[test]
fn an_instance_registered_in_etcd_through_the_api_is_routed_kept_and_removed() {
    let etcd = Etcd::start();
    let gw = gateway(&etcd);
    let echo = Echo::start();

    let (status, body) = call(&gw, "PUT", "/v1/instances", "wrong-token", Some(&registration("e-1", echo.port, "3s")));
    assert_eq!(status, 401, "{body}");
    assert_eq!(routed(&gw).ok(), None, "a refused registration registers nothing");

    let (status, body) = call(&gw, "PUT", "/v1/instances", TOKEN, Some(&registration("e-1", echo.port, "3s")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registry"], "etcd");
    wait_routed(&gw, Ok(echo.port), "the registered instance to be routed");

    // Heartbeats keep it for twice its TTL.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let (status, body) = call(&gw, "PUT", "/v1/instances/e-1/heartbeat", TOKEN, None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(routed(&gw), Ok(echo.port));
        std::thread::sleep(Duration::from_millis(700));
    }
    // Without them, it goes once the lease runs out; then it is unknown.
    let t = Instant::now();
    wait_routed(&gw, Err(()), "the instance to leave routing without heartbeats");
    assert!(t.elapsed() >= Duration::from_secs(1), "gone too early: {:?}", t.elapsed());
    let (status, body) = call(&gw, "PUT", "/v1/instances/e-1/heartbeat", TOKEN, None);
    assert_eq!(status, 404, "{body}");

    // Registered again (twice: the second replaces the first), then deleted through another
    // gateway on the same etcd: gone at once, and its lease with it.
    for _ in 0..2 {
        let (status, body) = call(&gw, "PUT", "/v1/instances", TOKEN, Some(&registration("e-1", echo.port, "1h")));
        assert_eq!(status, 200, "{body}");
    }
    wait_routed(&gw, Ok(echo.port), "the re-registered instance to be routed");
    let leases = etcd.with(|c| async move { c.leases().await });
    assert_eq!(leases.len(), 1, "re-registering replaced the old lease: {leases:?}");
    let gw2 = gateway(&etcd);
    let (status, body) = call(&gw2, "PUT", "/v1/instances/e-1/heartbeat", TOKEN, None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&gw2, "DELETE", "/v1/instances/e-1", TOKEN, None);
    assert_eq!(status, 200, "{body}");
    wait_routed(&gw, Err(()), "the deleted instance to leave routing");
    assert!(etcd.with(|c| async move { c.leases().await }).is_empty(), "the lease is revoked");
    for (method, path) in [("DELETE", "/v1/instances/e-1"), ("PUT", "/v1/instances/nobody/heartbeat")] {
        let (status, body) = call(&gw, method, path, TOKEN, None);
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
}

#[test]
fn with_etcd_down_writes_are_503_and_discovery_answers_stale() {
    let mut etcd = Etcd::start();
    let gw = gateway(&etcd);
    let echo = Echo::start();
    let (status, body) = call(&gw, "PUT", "/v1/instances", TOKEN, Some(&registration("e-d", echo.port, "1h")));
    assert_eq!(status, 200, "{body}");
    wait_routed(&gw, Ok(echo.port), "the registered instance to be routed");

    etcd.kill();
    let writes: [(&str, &str, Option<Value>); 3] = [
        ("PUT", "/v1/instances", Some(registration("e-new", echo.port, "1h"))),
        ("PUT", "/v1/instances/e-d/heartbeat", None),
        ("DELETE", "/v1/instances/e-d", None),
    ];
    for (method, path, body) in &writes {
        let t = Instant::now();
        let (status, answer) = call(&gw, method, path, TOKEN, body.as_ref());
        assert_eq!(status, 503, "{method} {path} with etcd down: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        assert!(t.elapsed() < Duration::from_secs(15), "{method} {path} took {:?}", t.elapsed());
    }
    let body = wait_for(Duration::from_secs(30), "GET /v1/services to say stale", || {
        let (status, body) = call(&gw, "GET", "/v1/services", TOKEN, None);
        assert_eq!(status, 200, "{body}");
        (body["stale"] == true).then_some(body)
    });
    let svc = body["services"].as_array().unwrap().iter().find(|v| v["service"] == "etcdapi").unwrap().clone();
    assert_eq!(svc["instances"][0]["id"].as_str(), Some("e-d"), "{svc}");
    assert_eq!(routed(&gw), Ok(echo.port), "the last known instance is still routed");

    etcd.restart();
    let body = wait_for(Duration::from_secs(30), "a heartbeat to work with etcd back", || {
        let (status, body) = call(&gw, "PUT", "/v1/instances/e-d/heartbeat", TOKEN, None);
        (status == 200).then_some(body)
    });
    assert_eq!(body["id"], "e-d");
    let (status, body) = call(&gw, "DELETE", "/v1/instances/e-d", TOKEN, None);
    assert_eq!(status, 200, "{body}");
}
