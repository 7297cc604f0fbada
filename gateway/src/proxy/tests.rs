//! The request path against real HTTP backends on loopback, with a static registry.

use super::*;
use crate::registry::StaticDiscovery;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::{any, get};
use axum::Router;
use consul::Instance;
use std::collections::{BTreeMap, HashSet};

/// A backend that echoes what it received, tagged with its port.
async fn echo_backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .fallback(any(move |req: Request| async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let headers: BTreeMap<String, String> =
                parts.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
            axum::Json(serde_json::json!({
                "port": port,
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            }))
        }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A backend that reads each request and hangs up without answering: what a pooled connection
/// to an instance that just died looks like.
async fn rude_backend(reset: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
                if reset {
                    // SO_LINGER 0: the close sends a RST, as a killed process's socket may.
                    let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
                }
                drop(conn);
            });
        }
    });
    port
}

/// A port with nothing listening.
async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

fn inst(port: u16) -> Instance {
    Instance::new(format!("web-{port}"), "n", "127.0.0.1", port)
}

async fn app(ports: &[u16], timeout: Duration) -> Proxy {
    let registry =
        Arc::new(Registry::new(["web".to_string(), "empty".to_string()], Arc::new(StaticDiscovery::default())));
    registry.apply_snapshot("web", 1, ports.iter().map(|p| inst(*p)).collect()).await;
    registry.apply_snapshot("empty", 1, vec![]).await;
    let timeouts = Timeouts { connect: Duration::from_secs(1), idle: Duration::from_secs(60) };
    Proxy { registry, timeouts, timeout, max_replay_body: 1024 }
}

async fn send(app: &Proxy, req: http::Request<Body>) -> (u16, serde_json::Value) {
    send_from(app, req, None).await
}

async fn send_from(app: &Proxy, req: http::Request<Body>, peer: Option<SocketAddr>) -> (u16, serde_json::Value) {
    let resp = app.serve(req, peer).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

fn get_req(uri: &str) -> http::Request<Body> {
    http::Request::get(uri).body(Body::empty()).unwrap()
}

#[test]
fn the_service_prefix_is_stripped() {
    assert_eq!(split_service("/web/getRemoteIp?a=1"), ("web", "/getRemoteIp?a=1".to_string()));
    assert_eq!(split_service("/web"), ("web", "/".to_string()));
    assert_eq!(split_service("/web/"), ("web", "/".to_string()));
    assert_eq!(split_service("/web?x=1"), ("web", "/?x=1".to_string()));
    assert_eq!(split_service("/"), ("", "/".to_string()));
    assert_eq!(split_service("/web/a/b/"), ("web", "/a/b/".to_string()));
}

#[tokio::test]
async fn forwards_path_query_method_body_and_forwarding_headers() {
    let port = echo_backend().await;
    let app = app(&[port], Duration::from_secs(5)).await;
    let req = http::Request::post("/web/a/b?x=1&y=2")
        .header("host", "gw.example")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "hop")
        .header("content-length", "5")
        .body(Body::from("hello"))
        .unwrap();
    let (status, v) = send_from(&app, req, Some("10.9.8.7:5555".parse().unwrap())).await;
    assert_eq!(status, 200);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["uri"], "/a/b?x=1&y=2");
    assert_eq!(v["body"], "hello");
    let h = &v["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-for"], "10.9.8.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "gw.example");
    assert_eq!(h["host"], format!("127.0.0.1:{port}"));
    assert!(h.get("x-drop-me").is_none(), "headers named in Connection are hop-by-hop");
}

#[tokio::test]
async fn spreads_requests_over_all_instances() {
    let ports = [echo_backend().await, echo_backend().await, echo_backend().await];
    let app = app(&ports, Duration::from_secs(5)).await;
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let (status, v) = send(&app, get_req("/web/x")).await;
        assert_eq!(status, 200);
        seen.insert(v["port"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn a_dead_instance_costs_the_client_nothing_even_with_a_body() {
    let live = echo_backend().await;
    let dead = dead_port().await;
    let app = app(&[dead, live], Duration::from_secs(5)).await;
    for _ in 0..20 {
        let req = http::Request::put("/web/p").header("content-length", "4").body(Body::from("data")).unwrap();
        let (status, v) = send(&app, req).await;
        assert_eq!(status, 200);
        assert_eq!(v["port"], live);
        assert_eq!(v["body"], "data", "the body is replayed on the retry");
    }
}

#[tokio::test]
async fn a_streamed_body_goes_to_another_instance_when_the_first_refuses_the_connection() {
    let live = echo_backend().await;
    let dead = dead_port().await;
    let app = app(&[dead, live], Duration::from_secs(5)).await;
    let big = "x".repeat(4096); // over max_replay_body (1024): streamed, not buffered
    for _ in 0..10 {
        let req =
            http::Request::post("/web/up").header("content-length", big.len()).body(Body::from(big.clone())).unwrap();
        let (status, v) = send(&app, req).await;
        assert_eq!((status, v["port"].as_u64()), (200, Some(u64::from(live))), "{v}");
        assert_eq!(v["body"].as_str().map(str::len), Some(4096));
    }
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let dead = dead_port().await;
    let live = echo_backend().await;
    let app_dead = app(&[dead], Duration::from_secs(5)).await;
    let (status, v) = send(&app_dead, get_req("/web/x")).await;
    assert_eq!((status, v["service"].as_str()), (502, Some("web")));
    let (status, v) = send(&app_dead, get_req("/nope/x")).await;
    assert_eq!((status, v["error"].as_str()), (404, Some("unknown service")));
    let (status, _) = send(&app_dead, get_req("/")).await;
    assert_eq!(status, 404);
    let (status, v) = send(&app_dead, get_req("/empty/x")).await;
    assert_eq!((status, v["error"].as_str()), (503, Some("no live instance")));

    let app_slow = app(&[live], Duration::from_millis(200)).await;
    let (status, v) = send(&app_slow, get_req("/web/slow")).await;
    assert_eq!((status, v["error"].as_str()), (504, Some("upstream timed out")));
}

#[tokio::test]
async fn an_instance_that_hangs_up_is_retried_for_idempotent_requests_only() {
    for reset in [false, true] {
        hangs_up(reset).await;
    }
}

async fn hangs_up(reset: bool) {
    let rude = rude_backend(reset).await;
    let live = echo_backend().await;
    let app = app(&[rude, live], Duration::from_secs(5)).await;
    for _ in 0..10 {
        let (status, v) = send(&app, get_req("/web/x")).await;
        assert_eq!((status, v["port"].as_u64()), (200, Some(u64::from(live))), "reset={reset}: GET is retried: {v}");
    }
    // Only the rude instance: a POST is never sent twice, so the client sees the failure.
    let app = app_one(rude).await;
    let req = http::Request::post("/web/x").header("content-length", "2").body(Body::from("hi")).unwrap();
    let (status, v) = send(&app, req).await;
    assert_eq!((status, v["error"].as_str()), (502, Some("upstream failed")));
}

async fn app_one(port: u16) -> Proxy {
    app(&[port], Duration::from_secs(5)).await
}

async fn send_text(app: &Proxy, req: http::Request<Body>) -> (u16, String) {
    let resp = app.serve(req, None).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

fn port_of(authority: &str) -> u16 {
    authority.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// One instance that closes each pooled connection as the next request arrives: an idempotent
/// request goes again on a new connection to the same instance, and the client sees no error; a
/// POST that reached the instance is never sent twice.
#[tokio::test]
async fn a_reused_connection_closed_by_the_only_instance_costs_an_idempotent_request_nothing() {
    use std::sync::atomic::Ordering;
    let (authority, seen) = crate::test_backends::second_request_hangs_up().await;
    let app = app_one(port_of(&authority)).await;
    for method in ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"] {
        for i in 0..6 {
            let req = http::Request::builder().method(method).uri(format!("/web/r{i}")).body(Body::empty()).unwrap();
            let (status, body) = send_text(&app, req).await;
            assert_eq!(status, 200, "{method} #{i}: {body}");
            if method != "HEAD" {
                assert_eq!(body, format!("{method} /r{i}"), "{method} #{i}");
            }
        }
    }
    let mut failed = 0;
    for i in 0..6 {
        let before = seen.load(Ordering::SeqCst);
        let req = http::Request::post(format!("/web/p{i}")).body(Body::from("x")).unwrap();
        let (status, body) = send_text(&app, req).await;
        assert_eq!(seen.load(Ordering::SeqCst) - before, 1, "POST #{i} reached the instance once: {body}");
        match status {
            200 => assert_eq!(body, format!("POST /p{i}")),
            502 => failed += 1,
            other => panic!("POST #{i}: {other} {body}"),
        }
    }
    assert_eq!(failed, 3, "every POST on a reused connection fails (it may have been processed), no other");
}

/// Bytes an instance sends past the end of a response, whenever they arrive, never become the
/// answer to the next request, for any method after a bodiless status, and for an idempotent
/// one after any response.
#[tokio::test]
async fn bytes_past_the_end_of_a_response_never_answer_the_next_request() {
    use crate::test_backends::{stray_backend, Stray};
    for when in [Stray::WithResponse, Stray::Soon, Stray::WithNextAnswer] {
        for status in ["204", "304", "200"] {
            let (authority, _) = stray_backend(b"hello", when).await;
            let app = app_one(port_of(&authority)).await;
            let methods: &[&str] = if status == "200" { &["GET", "PUT", "DELETE"] } else { &["GET", "POST", "PUT"] };
            for (i, method) in methods.iter().enumerate() {
                let (got, _) = send_text(&app, get_req(&format!("/web/odd/{status}"))).await;
                assert_eq!(got.to_string(), status, "{when:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                let req =
                    http::Request::builder().method(*method).uri(format!("/web/n{i}")).body(Body::empty()).unwrap();
                let answer = send_text(&app, req).await;
                assert_eq!(answer, (200, format!("/n{i}")), "{when:?}, {method} after a {status}");
            }
        }
    }
}
