//! The balancing policies on the request path, against real backends on loopback: the route
//! option over `--balance`, round-robin's turn through the proxy, and `least-request`'s
//! in-flight counts, which must return to zero however a request ends (success, error, retry,
//! a response body dropped half-read, a client gone before the answer).

use super::*;
use crate::discovery::direct::StaticRead;
use crate::discovery::services::Services;
use crate::discovery::tag::TagRules;
use axum::body::Body;
use axum::routing::get;
use axum::Router;
use consul::Instance;

/// A backend: `/x` answers its port, `/slow` after 300 ms, `/stream` sends one chunk and then
/// nothing more (the body never ends).
async fn backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/x", get(move || async move { port.to_string() }))
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                port.to_string()
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let first = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"first")) });
                Body::from_stream(futures_util::StreamExt::chain(first, futures_util::stream::pending()))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A backend that reads a request and hangs up without answering.
async fn rude() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
        }
    });
    port
}

async fn dead() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

/// A proxy balancing by `balance` over service `web` at `ports`, its instances tagged `tags`
/// (`gateway`, the name route, is always there).
fn proxy(balance: Balance, ports: &[u16], tags: &[&str]) -> Proxy {
    let rules = TagRules::default();
    let services = Services::new(Vec::<String>::new(), rules, Arc::new(StaticRead::default())).with_balance(balance);
    let tags: Vec<String> = ["gateway"].iter().chain(tags).map(|t| t.to_string()).collect();
    let instances = ports
        .iter()
        .map(|&p| {
            let mut i = Instance::new(format!("web-{p}"), "n", "127.0.0.1", p);
            i.tags = tags.clone();
            i
        })
        .collect();
    services.apply_snapshot("web", 1, instances, tags.clone());
    test_proxy(Arc::new(services), Duration::from_secs(5))
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn port_of(app: &Proxy, uri: &str) -> u16 {
    let resp = app.serve(get_req(uri), None).await;
    assert_eq!(resp.status(), 200, "{uri}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    std::str::from_utf8(&body).unwrap().parse().unwrap()
}

/// The in-flight count of each endpoint of `web`, by port.
fn counts(app: &Proxy) -> Vec<(u16, usize)> {
    let table = app.services.table();
    let route = table.lookup(None, "/web/x").unwrap();
    let set = route.slot.set().unwrap();
    set.endpoints.iter().map(|e| (e.instance.port, e.in_flight())).collect()
}

fn all_zero(app: &Proxy) -> bool {
    counts(app).iter().all(|(_, n)| *n == 0)
}

#[tokio::test]
async fn round_robin_takes_turns_through_the_proxy() {
    let ports = [backend().await, backend().await, backend().await];
    let app = proxy(Balance::RoundRobin, &ports, &[]);
    let mut seen = vec![];
    for _ in 0..9 {
        seen.push(port_of(&app, "/web/x").await);
    }
    assert_eq!(&seen[3..6], &seen[..3]);
    assert_eq!(&seen[6..], &seen[..3]);
    let mut first: Vec<u16> = seen[..3].to_vec();
    first.sort();
    let mut sorted = ports.to_vec();
    sorted.sort();
    assert_eq!(first, sorted, "each once per turn");
}

#[tokio::test]
async fn the_route_option_overrides_the_flag() {
    let ports = [backend().await, backend().await, backend().await];
    // --balance random, the declared route round-robin: exact turns.
    let app = proxy(Balance::Random, &ports, &["urlprefix-/rr strip=/rr balance=round-robin"]);
    let mut seen = vec![];
    for _ in 0..6 {
        seen.push(port_of(&app, "/rr/x").await);
    }
    assert_eq!(&seen[3..], &seen[..3], "{seen:?}");
    assert_eq!(seen[..3].iter().collect::<std::collections::HashSet<_>>().len(), 3);
    // --balance round-robin, the route random: no exact turn over 30 requests (the chance that
    // random draws repeat one turn ten times is (1/6)^9).
    let app = proxy(Balance::RoundRobin, &ports, &["urlprefix-/rnd strip=/rnd balance=random"]);
    let mut seen = vec![];
    for _ in 0..30 {
        seen.push(port_of(&app, "/rnd/x").await);
    }
    assert!(seen.chunks(3).any(|c| c != &seen[..3]), "{seen:?}");
}

#[tokio::test]
async fn in_flight_counts_return_to_zero_after_success_and_dropped_bodies() {
    let ports = [backend().await, backend().await];
    let app = proxy(Balance::LeastRequest, &ports, &[]);
    for _ in 0..10 {
        port_of(&app, "/web/x").await;
    }
    assert!(all_zero(&app), "{:?}", counts(&app));
    // A response whose body is still coming counts; dropped half-read, it no longer does.
    let resp = app.serve(get_req("/web/stream"), None).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first");
    assert_eq!(counts(&app).iter().map(|(_, n)| n).sum::<usize>(), 1, "{:?}", counts(&app));
    drop(body);
    assert!(all_zero(&app), "{:?}", counts(&app));
}

#[tokio::test]
async fn in_flight_counts_return_to_zero_after_errors_and_retries() {
    // A dead instance: every request that draws it first is retried on the live one.
    let (live, down) = (backend().await, dead().await);
    let app = proxy(Balance::LeastRequest, &[down, live], &[]);
    for _ in 0..10 {
        assert_eq!(port_of(&app, "/web/x").await, live);
        assert!(all_zero(&app), "{:?}", counts(&app));
    }
    // An instance that hangs up: a POST fails (502), a GET is retried until none is left.
    let app = proxy(Balance::LeastRequest, &[rude().await], &[]);
    let req = Request::post("/web/x").header("content-length", "2").body(Body::from("hi")).unwrap();
    assert_eq!(app.serve(req, None).await.status(), 502);
    assert_eq!(app.serve(get_req("/web/x"), None).await.status(), 502);
    assert!(all_zero(&app), "{:?}", counts(&app));
}

#[tokio::test]
async fn in_flight_counts_return_to_zero_when_the_client_leaves_first() {
    let port = backend().await;
    let app = Arc::new(proxy(Balance::LeastRequest, &[port], &[]));
    let a = app.clone();
    let waiting = tokio::spawn(async move { a.handle(get_req("/web/slow"), None, false).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counts(&app), [(port, 1)], "counted while the instance thinks");
    waiting.abort();
    let _ = waiting.await;
    assert!(all_zero(&app), "{:?}", counts(&app));
}

#[tokio::test]
async fn least_request_sends_to_the_instance_with_fewer_requests_open() {
    // Three responses kept open (bodies never end): one instance holds more of them than the
    // other (3-0 or 2-1), and every new request goes to the other one.
    let (a, b) = (backend().await, backend().await);
    let app = Arc::new(proxy(Balance::LeastRequest, &[a, b], &[]));
    let mut held = vec![];
    while held.len() < 3 {
        let resp = app.serve(get_req("/web/stream"), None).await;
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        held.push(body);
    }
    let loaded: Vec<(u16, usize)> = counts(&app);
    assert_eq!(loaded.iter().map(|(_, n)| n).sum::<usize>(), 3);
    // Whichever holds more loses every draw (two instances: both are always drawn).
    let idle = if loaded[0].1 < loaded[1].1 { loaded[0].0 } else { loaded[1].0 };
    for _ in 0..20 {
        assert_eq!(port_of(&app, "/web/x").await, idle);
    }
    drop(held);
    assert!(all_zero(&app), "{:?}", counts(&app));
}
