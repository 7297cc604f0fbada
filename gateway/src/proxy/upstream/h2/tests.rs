//! The HTTP/2 connections against a hyper h2c server on loopback.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;

use super::*;
use crate::test_backends::h2_backend;

/// The metrics every test counts its connections in.
static M: std::sync::LazyLock<crate::observe::metrics::Metrics> = std::sync::LazyLock::new(Default::default);

const T: Timeouts = Timeouts { connect: Duration::from_secs(1), idle: Duration::from_secs(60) };

fn request(path: &str, host: &str, te: bool) -> Request<RequestBody> {
    let mut req = Request::post(path)
        .header("host", host)
        .body(RequestBody::Full(Full::new(Bytes::from_static(b"hello"))))
        .unwrap();
    into_h2(&mut req, &Authority::from_static("127.0.0.1:1"), te);
    req
}

/// The body's data and its trailers.
async fn read(resp: Response<PooledBody>) -> (String, http::HeaderMap) {
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (String::from_utf8(collected.to_bytes().to_vec()).unwrap(), trailers)
}

#[tokio::test]
async fn a_request_goes_as_http2_with_its_authority_and_te_trailers_and_trailers_come_back() {
    let (addr, _) = h2_backend().await;
    let pool = Arc::new(Pool::new(&addr));
    let resp = send(&pool, request("/unary?x=1", "gw.example:3000", true), T, true, &M).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (body, trailers) = read(resp).await;
    assert_eq!(body, "POST http://gw.example:3000/unary?x=1 te=trailers host=-\nhello");
    assert_eq!(trailers["grpc-status"], "0");
    // Without the client's `te: trailers` none is sent.
    let (body, _) = read(send(&pool, request("/u", "gw.example", false), T, true, &M).await.unwrap()).await;
    assert!(body.starts_with("POST http://gw.example/u te=- "), "{body}");
}

#[tokio::test]
async fn a_host_that_is_no_authority_falls_back_to_the_instance() {
    let mut req = Request::get("/x").header("host", "a b").body(RequestBody::Full(Full::default())).unwrap();
    into_h2(&mut req, &Authority::from_static("10.0.0.1:80"), false);
    assert_eq!(req.uri(), "http://10.0.0.1:80/x");
    assert!(req.headers().get("host").is_none());
}

#[tokio::test]
async fn concurrent_requests_of_a_thread_share_one_connection_and_stream_as_sent() {
    let (addr, accepted) = h2_backend().await;
    let pool = Arc::new(Pool::new(&addr));
    let started = tokio::time::Instant::now();
    let one = send(&pool, request("/stream/3", "h", true), T, true, &M);
    let two = send(&pool, request("/stream/3", "h", true), T, true, &M);
    let (one, two) = tokio::join!(one, two);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one multiplexed connection");
    // The first chunk arrives on its own, ~100 ms in, long before the stream ends (~300 ms).
    let mut body = one.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "chunk 0\n");
    assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
    let rest = body.collect().await.unwrap();
    assert_eq!(rest.trailers().unwrap()["grpc-status"], "7");
    assert_eq!(rest.trailers().unwrap()["grpc-message"], "denied");
    let (all, _) = read(two.unwrap()).await;
    assert_eq!(all, "chunk 0\nchunk 1\nchunk 2\n");
    assert_eq!(pool.h2.open_count(), 1);
}

#[tokio::test]
async fn a_connection_shut_with_goaway_is_replaced() {
    let (addr, accepted) = h2_backend().await;
    let pool = Arc::new(Pool::new(&addr));
    let (body, _) = read(send(&pool, request("/bye", "h", true), T, true, &M).await.unwrap()).await;
    assert!(body.starts_with("POST http://h/bye"), "{body}");
    for _ in 0..100 {
        if pool.h2.open_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.h2.open_count(), 0, "the GOAWAY closed the connection");
    let (body, _) = read(send(&pool, request("/again", "h", true), T, true, &M).await.unwrap()).await;
    assert!(body.starts_with("POST http://h/again"), "{body}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn requests_right_after_a_goaway_still_get_answers() {
    let (addr, _) = h2_backend().await;
    let pool = Arc::new(Pool::new(&addr));
    for i in 0..20 {
        let path = if i % 2 == 0 { "/bye" } else { "/x" };
        let resp = send(&pool, request(path, "h", true), T, true, &M).await;
        // Sent and refused by a closing connection comes back as a failure on a reused
        // connection, which the proxy sends again on a new one; anything else is a bug.
        match resp {
            Ok(r) => assert!(read(r).await.0.starts_with("POST"), "request {i}"),
            Err(f) => assert!(f.reused, "request {i}: {:?}", f.error),
        }
    }
}

#[tokio::test]
async fn a_refused_connect_hands_the_request_back() {
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let pool = Arc::new(Pool::new(&format!("127.0.0.1:{port}")));
    let failed = send(&pool, request("/x", "h", true), T, true, &M).await.unwrap_err();
    assert!(failed.error.is_connect(), "{:?}", failed.error);
    let back = failed.unsent.expect("nothing was sent");
    assert!(!back.body().is_end_stream(), "with its body");
    assert!(!failed.reused);
}
