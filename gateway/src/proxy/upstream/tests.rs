//! The pool against real backends on loopback.

use super::*;
use axum::extract::ConnectInfo;
use axum::routing::any;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::test_backends::{listen, second_request_hangs_up, stray_backend, Stray};

/// The metrics every test counts its connections in.
static M: std::sync::LazyLock<crate::observe::metrics::Metrics> = std::sync::LazyLock::new(Default::default);

/// Reuse for up to a minute: the tests that are not about idle limits.
const T: Timeouts = Timeouts { connect: Duration::from_secs(1), idle: Duration::from_secs(60) };

/// A backend answering each request with the client's source port, so a test can tell which
/// connection carried it.
async fn port_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(any(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.port().to_string() }));
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
    });
    addr.to_string()
}

fn request(method: &str, authority: &str, body: &'static str) -> Request<RequestBody> {
    Request::builder()
        .method(method)
        .uri("/x")
        .header("host", authority)
        .header("content-length", body.len())
        .body(RequestBody::Full(Full::new(Bytes::from_static(body.as_bytes()))))
        .unwrap()
}

async fn text(resp: Response<PooledBody>) -> String {
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_response_was_read_to_the_end() {
    let authority = port_backend().await;
    let pool = Arc::new(Pool::new(&authority));
    let mut ports = std::collections::HashSet::new();
    for _ in 0..10 {
        let resp = send(&pool, request("GET", &authority, ""), T, true, &M).await.unwrap();
        ports.insert(text(resp).await);
        assert_eq!(pool.idle_count(), 1);
    }
    assert_eq!(ports.len(), 1, "one keep-alive connection for sequential requests");

    // A body dropped before its end leaves the rest of the response on the connection: not reused.
    let resp = send(&pool, request("GET", &authority, ""), T, true, &M).await.unwrap();
    assert_eq!(pool.idle_count(), 0, "in use");
    drop(resp);
    assert_eq!(pool.idle_count(), 0, "dropped early: closed, not returned");

    // HEAD: its answer declares a body it does not carry, and a server that sends it anyway
    // cannot be told apart: the connection is not reused.
    let resp = send(&pool, request("GET", &authority, ""), T, true, &M).await.unwrap();
    text(resp).await;
    assert_eq!(pool.idle_count(), 1);
    let resp = send(&pool, request("HEAD", &authority, ""), T, true, &M).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_all_return() {
    let authority = port_backend().await;
    let pool = Arc::new(Pool::new(&authority));
    let responses: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| send(&pool, request("GET", &authority, ""), T, true, &M))).await;
    let mut ports = std::collections::HashSet::new();
    for r in responses {
        ports.insert(text(r.unwrap()).await);
    }
    assert_eq!((ports.len(), pool.idle_count()), (4, 4));
}

/// A backend that answers one request per connection with keep-alive, then closes the
/// connection after `idle`, as a server with a short keep-alive timeout does. Returns its address
/// and a counter of accepted connections.
async fn closing_backend(idle: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    listen(move |mut conn| async move {
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await;
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        tokio::time::sleep(idle).await;
    })
    .await
}

#[tokio::test]
async fn a_connection_the_instance_closed_while_idle_is_not_used_even_for_a_post() {
    let (authority, accepted) = closing_backend(Duration::from_millis(20)).await;
    let pool = Arc::new(Pool::new(&authority));
    for _ in 0..3 {
        let resp = send(&pool, request("POST", &authority, "hi"), T, true, &M).await.unwrap();
        assert_eq!(text(resp).await, "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "a new connection each time");
}

#[tokio::test]
async fn refused_and_unreachable_are_connect_errors() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let authority = format!("127.0.0.1:{port}");
    let pool = Arc::new(Pool::new(&authority));
    let failed = send(&pool, request("POST", &authority, "x"), T, true, &M).await.unwrap_err();
    assert!(failed.error.is_connect(), "{}", failed.error);
    assert!(!failed.error.closed_before_response());
    let back = failed.unsent.expect("nothing was sent: the request comes back");
    assert_eq!(back.method(), "POST");
    let pool = Arc::new(Pool::new("no-such-host.invalid:80"));
    let failed = send(&pool, request("GET", "x", ""), T, true, &M).await.unwrap_err();
    assert!(failed.error.is_connect() && failed.unsent.is_some(), "{}", failed.error);
}

#[tokio::test]
async fn idle_connections_expire() {
    let authority = port_backend().await;
    let pool = Arc::new(Pool::new(&authority));
    let resp = send(&pool, request("GET", &authority, ""), T, true, &M).await.unwrap();
    text(resp).await;
    pool.expire(Duration::from_secs(90));
    assert_eq!(pool.idle_count(), 1, "young enough");
    pool.expire(Duration::ZERO);
    assert_eq!(pool.idle_count(), 0, "expired");
}

/// An instance that answers before reading the request body (a 413 to an upload) and keeps the
/// connection open while the upload goes on.
#[tokio::test]
async fn a_connection_still_sending_an_upload_is_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let answer: &[u8] = if buf[..n].starts_with(b"POST") {
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\n\r\nno"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                let _ = conn.write_all(answer).await;
                while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    let pool = Arc::new(Pool::new(&authority));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let upload = RequestBody::Stream(UnsyncBoxBody::new(http_body_util::StreamBody::new(chunks)));
    let req = Request::post("/up").header("host", &authority).body(upload).unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
    let resp = send(&pool, req, T, true, &M).await.unwrap();
    assert_eq!((resp.status().as_u16(), text(resp).await.as_str()), (413, "no"));
    assert_eq!(pool.idle_count(), 0, "the upload still occupies the connection");

    let next = tokio::time::timeout(Duration::from_secs(2), send(&pool, request("GET", &authority, ""), T, true, &M));
    let resp = next.await.expect("the next request does not wait for the upload").unwrap();
    assert_eq!(text(resp).await, "ok");
    drop(tx);
}

fn get(authority: &str, path: &str) -> Request<RequestBody> {
    Request::get(path).header("host", authority).body(RequestBody::Full(Full::default())).unwrap()
}

#[tokio::test]
async fn bytes_after_a_bodiless_response_never_reach_the_next_request() {
    for when in [Stray::WithResponse, Stray::Soon, Stray::WithNextAnswer] {
        for status in ["204", "304"] {
            let (authority, accepted) = stray_backend(b"hello", when).await;
            let pool = Arc::new(Pool::new(&authority));
            for i in 0..3 {
                let resp = send(&pool, get(&authority, &format!("/odd/{status}")), T, true, &M).await.unwrap();
                assert_eq!(resp.status().as_str(), status);
                assert_eq!(text(resp).await, "", "{when:?} {status}: no body after {status}");
                assert_eq!(pool.idle_count(), 0, "{when:?} {status}: declared a body: not pooled");
                tokio::time::sleep(Duration::from_millis(20)).await;
                let path = format!("/next/{i}");
                let resp = send(&pool, get(&authority, &path), T, true, &M).await.unwrap();
                assert_eq!(text(resp).await, path, "{when:?} {status}: the next request gets its own answer");
            }
            // Each bodiless response's connection is closed: the first and each next request's
            // are new ones.
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4, "{when:?} {status}");
        }
    }
}

/// A 200 followed by more bytes than its `Content-Length`: hyper sees the ones it read with the
/// response, the probe those that arrived before the connection is reused; those that come only
/// with the next answer make it malformed, on a connection flagged as reused (the proxy sends
/// an idempotent request again; see `proxy::tests`).
#[tokio::test]
async fn bytes_past_the_end_of_a_response_never_reach_the_next_request() {
    for when in [Stray::WithResponse, Stray::Soon] {
        let (authority, _) = stray_backend(b"hello", when).await;
        let pool = Arc::new(Pool::new(&authority));
        for i in 0..3 {
            let resp = send(&pool, get(&authority, "/odd/200"), T, true, &M).await.unwrap();
            assert_eq!(text(resp).await, "12345");
            tokio::time::sleep(Duration::from_millis(20)).await;
            let path = format!("/next/{i}");
            let resp = send(&pool, get(&authority, &path), T, true, &M).await;
            let resp = resp.unwrap_or_else(|e| panic!("{when:?} {i}: {e:?}"));
            assert_eq!(text(resp).await, path, "{when:?}");
        }
    }
    let (authority, _) = stray_backend(b"junk!", Stray::WithNextAnswer).await;
    let pool = Arc::new(Pool::new(&authority));
    text(send(&pool, get(&authority, "/odd/200"), T, true, &M).await.unwrap()).await;
    let failed = send(&pool, get(&authority, "/next"), T, true, &M).await.unwrap_err();
    assert!(failed.reused && failed.error.is_malformed_response(), "{failed:?}");
    let resp = send(&pool, get(&authority, "/next"), T, true, &M).await.unwrap();
    assert_eq!(text(resp).await, "/next", "a new connection");
}

/// A backend whose responses carry `keep_alive` as `Keep-Alive`; counts its connections.
async fn keep_alive_backend(keep_alive: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    listen(move |mut conn| async move {
        let mut buf = [0u8; 4096];
        while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {
            let answer = format!("HTTP/1.1 200 OK\r\nkeep-alive: {keep_alive}\r\ncontent-length: 2\r\n\r\nok");
            if conn.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_connection_is_not_reused_past_the_instance_keep_alive_timeout_nor_ours() {
    let (authority, accepted) = keep_alive_backend("timeout=1").await;
    let pool = Arc::new(Pool::new(&authority));
    let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    for pause_ms in [100, 300] {
        text(send(&pool, get(&authority, "/"), T, true, &M).await.unwrap()).await;
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
    text(send(&pool, get(&authority, "/"), T, true, &M).await.unwrap()).await;
    assert_eq!(count(), 1, "reused well within timeout=1");
    tokio::time::sleep(Duration::from_millis(600)).await;
    text(send(&pool, get(&authority, "/"), T, true, &M).await.unwrap()).await;
    assert_eq!(count(), 2, "idle 600 ms: past what timeout=1 leaves (500 ms), a new connection");

    let (authority, accepted) = keep_alive_backend("timeout=60").await;
    let pool = Arc::new(Pool::new(&authority));
    let short = Timeouts { idle: Duration::from_millis(100), ..T };
    text(send(&pool, get(&authority, "/"), short, true, &M).await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    text(send(&pool, get(&authority, "/"), short, true, &M).await.unwrap()).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "our own limit is shorter");
    pool.expire(short.idle);
    assert_eq!(pool.idle_count(), 1, "young");
    tokio::time::sleep(Duration::from_millis(150)).await;
    pool.expire(short.idle);
    assert_eq!(pool.idle_count(), 0, "expired by our limit");

    let (authority, accepted) = keep_alive_backend("timeout=0").await;
    let pool = Arc::new(Pool::new(&authority));
    for _ in 0..2 {
        text(send(&pool, get(&authority, "/"), T, true, &M).await.unwrap()).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "timeout=0: no reuse");
}

#[tokio::test]
async fn a_failure_on_a_reused_connection_says_so() {
    let (authority, _) = second_request_hangs_up().await;
    let pool = Arc::new(Pool::new(&authority));
    let first = send(&pool, request("POST", &authority, "a"), T, true, &M).await.unwrap();
    assert_eq!(text(first).await, "POST /x");
    let failed = send(&pool, request("POST", &authority, "b"), T, true, &M).await.unwrap_err();
    assert!(failed.reused && failed.error.closed_before_response() && failed.unsent.is_none(), "{failed:?}");
    let fresh = send(&pool, request("POST", &authority, "c"), T, false, &M).await.unwrap();
    assert_eq!(text(fresh).await, "POST /x");
}

/// The reviewer's case: on a reused connection, a `200` followed, in a write of its own, by what
/// looks like a whole response. The server's Nagle holds that write back until the gateway
/// acknowledges the `200`; acknowledged at once when the body ends, the fake arrives in time for
/// the probe, and the instance's connections are no longer reused: every request, GET or POST,
/// gets its own answer, even one sent right after (no sleep before it).
#[tokio::test]
async fn a_fake_response_written_after_a_response_never_answers_a_request() {
    let fake: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nWRONG";
    let (authority, accepted) = stray_backend(fake, Stray::Separately).await;
    let pool = Arc::new(Pool::new(&authority));
    let mut wrong = Vec::new();
    for i in 0..20 {
        // A first exchange, so that the odd one is on a reused connection (while reuse lasts).
        text(send(&pool, get(&authority, &format!("/warm/{i}")), T, true, &M).await.unwrap()).await;
        let resp = send(&pool, get(&authority, "/odd/200"), T, true, &M).await.unwrap();
        assert_eq!(text(resp).await, "12345");
        let path = format!("/next/{i}");
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let req = Request::builder().method(method).uri(&path).header("host", &authority);
        let resp = send(&pool, req.body(RequestBody::Full(Full::default())).unwrap(), T, true, &M).await;
        let resp = resp.unwrap_or_else(|e| panic!("#{i} {method}: {e:?}"));
        let got = text(resp).await;
        if got != path {
            wrong.push((i, got));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(wrong.is_empty(), "{wrong:?}");
    assert!(pool.suspect.is_suspect(), "caught");
    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..3 {
        text(send(&pool, get(&authority, &format!("/after/{i}")), T, true, &M).await.unwrap()).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), before + 3, "no reuse while suspect");
    pool.suspect.forgive();
    text(send(&pool, get(&authority, "/forgiven/0"), T, true, &M).await.unwrap()).await;
    text(send(&pool, get(&authority, "/forgiven/1"), T, true, &M).await.unwrap()).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), before + 4, "reuse again once forgiven");
}
