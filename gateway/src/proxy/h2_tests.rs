//! The request path to HTTP/2 cleartext instances: chosen by a route's `proto=grpc` or by an
//! instance's `gateway-protocol` metadata, with streaming, trailers and the response deadline.

use super::*;
use crate::discovery::direct::StaticRead;
use crate::discovery::tag::{TagRules, PROTOCOL_META};
use crate::test_backends::h2_backend;
use consul::Instance;

/// A proxy over service `grpc` with one instance at `addr` (tags, metadata), and `timeout`.
fn proxy(addr: &str, tags: &[&str], meta: Option<&str>, timeout: Duration) -> Proxy {
    let services = Arc::new(Services::new(Vec::<String>::new(), TagRules::default(), Arc::new(StaticRead::default())));
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut i = Instance::new("g1", "n", host, port.parse().unwrap());
    i.tags = tags.iter().map(|t| t.to_string()).collect();
    if let Some(m) = meta {
        i.meta.insert(PROTOCOL_META.into(), m.into());
    }
    services.apply_snapshot("grpc", 1, vec![i], i_tags(tags));
    crate::proxy::test_proxy(services, timeout)
}

fn i_tags(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

fn grpc_req(path: &str) -> http::Request<axum::body::Body> {
    http::Request::post(path)
        .header("host", "gw.example")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(axum::body::Body::from("msg"))
        .unwrap()
}

#[tokio::test]
async fn a_proto_grpc_route_speaks_http2_and_passes_trailers() {
    let (addr, _) = h2_backend().await;
    let app = proxy(&addr, &["urlprefix-/pkg.Svc proto=grpc"], None, Duration::from_secs(5));
    let resp = app.serve(grpc_req("/pkg.Svc/Call"), None).await;
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    assert_eq!(body, "POST http://gw.example/pkg.Svc/Call te=trailers host=-\nmsg");
}

#[tokio::test]
async fn the_meta_key_makes_the_name_route_speak_http2() {
    let (addr, _) = h2_backend().await;
    let app = proxy(&addr, &["gateway"], Some("h2c"), Duration::from_secs(5));
    let resp = app.serve(grpc_req("/grpc/x"), None).await;
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    // A name route sends the instance's address as the host (as `host=dst`): the `:authority`.
    assert_eq!(body, format!("POST http://{addr}/x te=trailers host=-\nmsg"));
}

#[tokio::test]
async fn an_unknown_meta_value_leaves_the_instance_out() {
    let (addr, accepted) = h2_backend().await;
    let app = proxy(&addr, &["gateway"], Some("grpcs"), Duration::from_secs(5));
    let resp = app.serve(grpc_req("/grpc/x"), None).await;
    assert_eq!(resp.status(), 503, "no instance to send to");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_upstream_timeout_bounds_the_response_headers_not_a_long_stream() {
    let (addr, _) = h2_backend().await;
    // 6 chunks 100 ms apart: the stream outlives the 300 ms timeout, and is not cut.
    let app = proxy(&addr, &["urlprefix-/stream proto=h2c"], None, Duration::from_millis(300));
    let resp = app.serve(grpc_req("/stream/6"), None).await;
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-message"], "denied");
    assert_eq!(collected.to_bytes().iter().filter(|b| **b == b'\n').count(), 6);
}

#[tokio::test]
async fn a_grpc_clients_deadline_extends_the_wait_for_late_response_headers() {
    let (addr, _) = h2_backend().await;
    // gRPC servers send their headers with the first message: a stream whose first message
    // comes after the upstream timeout is not an instance that failed to answer.
    let app = proxy(&addr, &["urlprefix-/pkg.Svc proto=grpc"], None, Duration::from_millis(200));
    let late = |deadline: Option<&str>| {
        let mut req = grpc_req("/pkg.Svc/late/600");
        *req.version_mut() = http::Version::HTTP_2;
        if let Some(d) = deadline {
            req.headers_mut().insert("grpc-timeout", http::HeaderValue::from_str(d).unwrap());
        }
        req
    };
    // The gateway's 504 reaches a gRPC client as UNAVAILABLE in the headers; the instance's
    // answer has its grpc-status in the trailers.
    let answered = |resp: &http::Response<ResponseBody>| resp.headers().get("grpc-status").is_none();
    let resp = app.serve(late(Some("2S")), None).await;
    assert!(answered(&resp), "within the client's deadline");
    let resp = app.serve(late(Some("1500m")), None).await;
    assert!(answered(&resp), "within the client's deadline, in milliseconds");
    for (deadline, why) in [
        (None, "no deadline: the upstream timeout"),
        (Some("50m"), "a shorter deadline does not shorten the upstream timeout"),
        (Some("2 S"), "a malformed deadline is ignored"),
    ] {
        let resp = app.serve(late(deadline), None).await;
        assert_eq!(resp.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"14"[..]), "{why}");
    }
}

#[tokio::test]
async fn the_gateways_own_errors_reach_grpc_clients_as_grpc_statuses() {
    let (addr, _) = h2_backend().await;
    let app = proxy(&addr, &["urlprefix-/pkg.Svc proto=grpc"], None, Duration::from_secs(5));
    let mut req = grpc_req("/other.Svc/Call");
    *req.version_mut() = http::Version::HTTP_2;
    let resp = app.serve(req, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "12", "UNIMPLEMENTED, as gRPC maps a 404");
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    // Not gRPC (no gRPC content type): the JSON error, as before.
    let req = http::Request::get("/other.Svc/Call").version(http::Version::HTTP_2).body(axum::body::Body::empty());
    let resp = app.serve(req.unwrap(), None).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn a_dead_h2_instance_sends_the_request_to_another() {
    let (addr, _) = h2_backend().await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let services = Arc::new(Services::new(Vec::<String>::new(), TagRules::default(), Arc::new(StaticRead::default())));
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let tag = "urlprefix-/pkg.Svc proto=grpc";
    let instances = [port, dead]
        .iter()
        .map(|p| {
            let mut i = Instance::new(format!("g{p}"), "n", "127.0.0.1", *p);
            i.tags = vec![tag.into()];
            i
        })
        .collect();
    services.apply_snapshot("grpc", 1, instances, vec![tag.into()]);
    let app = crate::proxy::test_proxy(services, Duration::from_secs(5));
    for _ in 0..10 {
        let resp = app.serve(grpc_req("/pkg.Svc/Call"), None).await;
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn a_refused_stream_goes_again_even_for_a_post() {
    let (addr, streams) = crate::test_backends::h2_refuses_second_stream().await;
    let app = proxy(&addr, &["urlprefix-/pkg.Svc proto=grpc"], None, Duration::from_secs(5));
    for i in 0..2 {
        // The second is refused on the open connection: not processed, so sent again.
        let resp = app.serve(grpc_req("/pkg.Svc/Call"), None).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(streams.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_instance_failing_mid_call_ends_a_grpc_call_with_unavailable() {
    let (addr, _) = h2_backend().await;
    let app = proxy(&addr, &["urlprefix-/pkg.Svc proto=grpc"], None, Duration::from_secs(5));
    let mut req = grpc_req("/pkg.Svc/dies");
    *req.version_mut() = http::Version::HTTP_2;
    let resp = app.serve(req, None).await;
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("trailers, not an error");
    let trailers = collected.trailers().expect("trailers").clone();
    assert_eq!(trailers["grpc-status"], "14", "{trailers:?}");
    assert!(trailers["grpc-message"].to_str().unwrap().starts_with("upstream failed mid-response"), "{trailers:?}");
    assert_eq!(collected.to_bytes(), "partial");

    // Not a gRPC call: the error goes through (the client's stream is reset).
    let plain =
        http::Request::post("/pkg.Svc/dies").header("host", "gw.example").body(axum::body::Body::empty()).unwrap();
    let resp = app.serve(plain, None).await;
    assert!(resp.into_body().collect().await.is_err());
}
