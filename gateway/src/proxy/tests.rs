//! The request path against real HTTP backends on loopback, with a static registry.

use super::*;
use crate::discovery::direct::StaticRead;
use crate::discovery::services::Services;
use crate::discovery::tag::TagRules;
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
    let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
    let services =
        Arc::new(Services::new(["web".to_string(), "empty".to_string()], rules, Arc::new(StaticRead::default())));
    services.apply_snapshot("web", 1, ports.iter().map(|p| inst(*p)).collect(), vec![]);
    services.apply_snapshot("empty", 1, vec![], vec![]);
    crate::proxy::test_proxy(services, timeout)
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
    assert_eq!((status, v["error"].as_str(), v["path"].as_str()), (404, Some("no route"), Some("/nope/x")));
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

/// One service for [`routed`]: its name, its instances' ports with their tags, its catalog tags.
type Declared<'a> = (&'a str, Vec<(u16, Vec<&'a str>)>, Vec<&'a str>);

/// A proxy over these services, none static.
async fn routed(services: &[Declared<'_>]) -> Proxy {
    let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
    let s = Arc::new(Services::new(Vec::<String>::new(), rules, Arc::new(StaticRead::default())));
    for (name, instances, tags) in services {
        let instances = instances
            .iter()
            .map(|(port, t)| {
                let mut i = inst(*port);
                i.tags = t.iter().map(|x| x.to_string()).collect();
                i
            })
            .collect();
        s.apply_snapshot(name, 1, instances, tags.iter().map(|x| x.to_string()).collect());
    }
    crate::proxy::test_proxy(s, Duration::from_secs(5))
}

fn host_req(host: &str, uri: &str) -> http::Request<Body> {
    http::Request::get(uri).header("host", host).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn declared_routes_rewrite_path_and_host_and_name_the_prefix() {
    let (a, b, c) = (echo_backend().await, echo_backend().await, echo_backend().await);
    let api = "urlprefix-api.example.com/v1 strip=/v1";
    let pre = "urlprefix-/old strip=/old prepend=/new host=dst";
    let named = "urlprefix-*.example.com/ host=internal.example";
    let app = routed(&[
        ("api", vec![(a, vec![api])], vec![api]),
        ("pre", vec![(b, vec![pre])], vec![pre]),
        ("wild", vec![(c, vec![named])], vec![named]),
    ])
    .await;
    let (status, v) = send(&app, host_req("api.example.com", "/v1/users?x=1")).await;
    assert_eq!((status, v["port"].as_u64()), (200, Some(u64::from(a))));
    assert_eq!(v["uri"], "/users?x=1");
    assert_eq!(v["headers"]["x-forwarded-prefix"], "/v1");
    assert_eq!(v["headers"]["host"], "api.example.com", "the client's Host by default, as Fabio");
    let (_, v) = send(&app, host_req("anything", "/old/a")).await;
    assert_eq!((v["port"].as_u64(), v["uri"].as_str()), (Some(u64::from(b)), Some("/new/a")));
    assert_eq!(v["headers"]["host"], format!("127.0.0.1:{b}"), "host=dst");
    let (_, v) = send(&app, host_req("www.example.com", "/page")).await;
    assert_eq!((v["port"].as_u64(), v["uri"].as_str()), (Some(u64::from(c)), Some("/page")));
    assert_eq!(v["headers"]["host"], "internal.example");
    assert!(v["headers"].get("x-forwarded-prefix").is_none(), "nothing stripped");
    let (_, v) = send(&app, host_req("api.example.com", "/v2")).await;
    assert_eq!(v["port"].as_u64(), Some(u64::from(c)), "no /v2 on the exact host: the wildcard tier answers");
    let (status, v) = send(&app, host_req("api.other.org", "/v1")).await;
    assert_eq!((status, v["error"].as_str()), (404, Some("no route")));
}

#[tokio::test]
async fn name_routes_strip_the_service_and_say_so() {
    let port = echo_backend().await;
    let app = routed(&[("billing", vec![(port, vec!["gateway"])], vec!["gateway"])]).await;
    let (status, v) = send(&app, get_req("/billing/invoices/3")).await;
    assert_eq!((status, v["uri"].as_str()), (200, Some("/invoices/3")));
    assert_eq!(v["headers"]["x-forwarded-prefix"], "/billing");
    let (status, _) = send(&app, get_req("/billingx/a")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_route_without_instances_answers_503_and_never_falls_through() {
    let port = echo_backend().await;
    let v1 = "urlprefix-/api/v1";
    let app = routed(&[
        ("root", vec![(port, vec!["urlprefix-/"])], vec!["urlprefix-/"]),
        // Registered with the tag, but no instance passes its checks.
        ("v1", vec![], vec![v1]),
    ])
    .await;
    let (status, v) = send(&app, get_req("/api/v1/x")).await;
    assert_eq!((status, v["error"].as_str(), v["service"].as_str()), (503, Some("no live instance"), Some("v1")));
    assert_eq!(send(&app, get_req("/api/v2")).await.0, 200, "other paths still reach the catch-all");
}

#[tokio::test]
async fn redirect_routes_answer_without_an_instance() {
    let r = "urlprefix-old.example.com/ redirect=301,https://new.example.com$path";
    let app = routed(&[("old", vec![], vec![r])]).await;
    let resp = app.serve(host_req("old.example.com", "/a/b?c=1"), None).await;
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://new.example.com/a/b?c=1");
}

#[tokio::test]
async fn a_split_route_keeps_each_client_on_its_side() {
    let (main, canary) = (echo_backend().await, echo_backend().await);
    let t = "urlprefix-/shop split=canary:30";
    let app = routed(&[("shop", vec![(main, vec![t]), (canary, vec![t, "canary"])], vec![t, "canary"])]).await;
    let mut canaries = 0;
    for _ in 0..300 {
        let resp = app.serve(get_req("/shop/x"), None).await;
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.contains("Path=/shop") && cookie.contains("HttpOnly"), "{cookie}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let port = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["port"].as_u64().unwrap();
        canaries += usize::from(port == u64::from(canary));
        // The same client, with its cookie, stays where it was sent, and gets no new cookie.
        let pair = cookie.split(';').next().unwrap().to_string();
        for _ in 0..3 {
            let req =
                http::Request::get("/shop/y").header("cookie", format!("a=b; {pair}")).body(Body::empty()).unwrap();
            let resp = app.serve(req, None).await;
            assert!(resp.headers().get("set-cookie").is_none());
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let again = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["port"].as_u64().unwrap();
            assert_eq!(again, port, "sticky");
        }
    }
    assert!((60..=120).contains(&canaries), "30 % of 300 clients, got {canaries}");
}

#[tokio::test]
async fn an_address_sticky_split_hashes_the_client_address() {
    let (main, canary) = (echo_backend().await, echo_backend().await);
    let t = "urlprefix-/shop split=canary:50 sticky=addr";
    let app = routed(&[("shop", vec![(main, vec![t]), (canary, vec![t, "canary"])], vec![t, "canary"])]).await;
    let mut sides = HashSet::new();
    for i in 0..40u8 {
        let peer: SocketAddr = format!("10.0.{i}.1:4000").parse().unwrap();
        let (_, first) = send_from(&app, get_req("/shop/x"), Some(peer)).await;
        for port in [4001, 4002] {
            let again = SocketAddr::new(peer.ip(), port);
            let (_, v) = send_from(&app, get_req("/shop/x"), Some(again)).await;
            assert_eq!(v["port"], first["port"], "same address, same side");
        }
        sides.insert(first["port"].as_u64().unwrap());
    }
    assert_eq!(sides.len(), 2, "both sides get addresses");
}

#[tokio::test]
async fn weights_shape_the_spread() {
    let (light, heavy) = (echo_backend().await, echo_backend().await);
    let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
    let s = Arc::new(Services::new(vec!["web".to_string()], rules, Arc::new(StaticRead::default())));
    let mut l = inst(light);
    l.weight = 1;
    let mut h = inst(heavy);
    h.weight = 4;
    s.apply_snapshot("web", 1, vec![l, h], vec![]);
    let app = crate::proxy::test_proxy(s, Duration::from_secs(5));
    let mut heavy_hits = 0;
    for _ in 0..500 {
        let (_, v) = send(&app, get_req("/web/x")).await;
        heavy_hits += usize::from(v["port"] == heavy);
    }
    assert!((360..=440).contains(&heavy_hits), "4:1 over 500 requests, got {heavy_hits}");
}

#[tokio::test]
async fn an_absolute_form_request_is_routed_and_forwarded_by_its_authority() {
    let port = echo_backend().await;
    let t = "urlprefix-api.example.com/v1";
    let app = routed(&[("api", vec![(port, vec![t])], vec![t])]).await;
    let req =
        http::Request::get("http://api.example.com/v1/abs").header("host", "other.com").body(Body::empty()).unwrap();
    let (status, v) = send(&app, req).await;
    assert_eq!((status, v["headers"]["host"].as_str()), (200, Some("api.example.com")), "{v}");
    assert_eq!(v["headers"]["x-forwarded-host"], "api.example.com");
}

#[tokio::test]
async fn a_zero_percent_split_sends_nobody_to_the_canaries_whatever_the_cookie() {
    let (main, canary) = (echo_backend().await, echo_backend().await);
    let t = "urlprefix-/shop split=canary:0";
    let app = routed(&[("shop", vec![(main, vec![t]), (canary, vec![t, "canary"])], vec![t, "canary"])]).await;
    let forged: String = (0u32..=0xffff).map(|i| format!("gw_split_{i:08x}=c0; ")).take(50).collect();
    for cookie in ["", "gw_split_00000000=c0", forged.as_str()] {
        for _ in 0..20 {
            let req = http::Request::get("/shop/x").header("cookie", cookie).body(Body::empty()).unwrap();
            let resp = app.serve(req, None).await;
            assert!(resp.headers().get("set-cookie").is_none(), "nothing to remember at 0 %");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let port = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["port"].as_u64().unwrap();
            assert_eq!(port, u64::from(main));
        }
    }
}

#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_a_502() {
    let (addr, _) = crate::test_backends::listen(|mut conn: tokio::net::TcpStream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await;
        let _ = conn
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
            .await;
        let _ = conn.read(&mut buf).await;
    })
    .await;
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let app = app(&[port], Duration::from_secs(5)).await;
    let (status, body) = send(&app, get_req("/web/x")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "upstream failed", "{body}");
}
