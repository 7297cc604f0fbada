//! Each request measured once through [`Proxy::handle`], read to its end or dropped unread.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;

use crate::discovery::direct::StaticRead;
use crate::discovery::services::Services;
use crate::discovery::tag::TagRules;
use crate::observe::access::{AccessLog, Destination, Format};
use crate::proxy::upstream::Timeouts;
use crate::proxy::Proxy;
use crate::test_backends::{stray_backend, Stray};

async fn proxy(authority: &str, log: &Path) -> Arc<Proxy> {
    let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
    let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
    let (host, port) = authority.rsplit_once(':').unwrap();
    let instance = consul::Instance::new("web-1", "n", host, port.parse().unwrap());
    services.apply_snapshot("web", 1, vec![instance], vec![]);
    let access = AccessLog::start(Format::Json, Destination::File(log.to_path_buf()), 64).unwrap();
    Arc::new(Proxy {
        services,
        timeouts: Timeouts { connect: Duration::from_secs(1), idle: Duration::from_secs(60) },
        timeout: Duration::from_secs(5),
        max_replay_body: 1024,
        tunnel_idle_timeout: Duration::from_secs(60),
        max_uri_bytes: 8192,
        metrics: Default::default(),
        access: Some(Arc::new(access)),
    })
}

/// The access log's lines once there are `n`, parsed.
async fn lines(log: &Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= n {
            return text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} lines in the access log");
}

#[tokio::test]
async fn a_request_is_logged_once_with_its_bytes_when_its_body_ends() {
    let (authority, _) = stray_backend(b"", Stray::WithResponse).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = proxy(&authority, &log).await;
    let peer: SocketAddr = "10.1.2.3:4567".parse().unwrap();
    let req = http::Request::post("/web/abc?q=1").header("content-length", "3").body(Body::from("xyz")).unwrap();
    let resp = proxy.clone().handle(req, Some(peer), false).await;
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "/abc?q=1");

    // Dropped unread (the client went away): logged too, with what was sent (nothing).
    let resp = proxy.clone().handle(http::Request::get("/web/gone").body(Body::empty()).unwrap(), None, false).await;
    drop(resp);
    let resp = proxy.clone().handle(http::Request::get("/nowhere").body(Body::empty()).unwrap(), None, false).await;
    assert_eq!(resp.status(), 404);
    drop(resp);

    let l = lines(&log, 3).await;
    assert_eq!(l.len(), 3, "{l:#?}");
    let first = &l[0];
    assert_eq!((first["request_id"].as_str(), first["client"].as_str()), (Some(id.as_str()), Some("10.1.2.3:4567")));
    assert_eq!((first["method"].as_str(), first["path"].as_str()), (Some("POST"), Some("/web/abc?q=1")));
    assert_eq!((first["bytes_in"].as_u64(), first["bytes_out"].as_u64()), (Some(3), Some(8)));
    assert_eq!((first["route"].as_str(), first["service"].as_str()), (Some("/web"), Some("web")));
    assert_eq!((first["instance"].as_str(), first["retries"].as_u64()), (Some(authority.as_str()), Some(0)));
    assert_eq!(
        (l[1]["path"].as_str(), l[1]["status"].as_u64(), l[1]["bytes_out"].as_u64()),
        (Some("/web/gone"), Some(200), Some(0))
    );
    assert_eq!((l[2]["status"].as_u64(), l[2]["route"].is_null()), (Some(404), true));
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_counted_and_logged_as_499() {
    // An instance that takes the connection and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            kept.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = proxy(&authority, &log).await;
    let req = http::Request::get("/web/slow").header("x-request-id", "left-early").body(Body::empty()).unwrap();
    // The client gives up: hyper drops the request's future.
    let waited = tokio::time::timeout(Duration::from_millis(300), proxy.clone().handle(req, None, false)).await;
    assert!(waited.is_err(), "the instance never answers");

    let l = lines(&log, 1).await;
    assert_eq!((l[0]["status"].as_u64(), l[0]["request_id"].as_str()), (Some(499), Some("left-early")));
    assert_eq!((l[0]["route"].as_str(), l[0]["instance"].as_str()), (Some("/web"), Some(authority.as_str())));
    let web = proxy.metrics.service_totals().into_iter().find(|t| t.service == "web").expect("counted");
    assert_eq!((web.requests, web.errors), (1, 0), "a 499 is the client's doing, not a 5xx");
    held.abort();
}
