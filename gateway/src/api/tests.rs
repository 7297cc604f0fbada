//! The API's routes without a socket: auth, validation, status mapping, the discover calls, with
//! an in-memory registry.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::Request;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::discovery::direct::StaticRead;
use crate::discovery::tag::TagRules;
use validate::Registration;

const TOKEN: &str = "test-token-0123456789";

/// Registrations in a map; `down` makes every call fail as an unreachable registry would.
#[derive(Default)]
struct Memory {
    instances: Mutex<HashMap<String, Registration>>,
    down: std::sync::atomic::AtomicBool,
}

impl Memory {
    fn check(&self) -> Result<(), RegistryError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            Err(RegistryError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

impl Registry for Memory {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn register<'a>(&'a self, r: &'a Registration) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.check()?;
            self.instances.lock().unwrap().insert(r.id.clone(), r.clone());
            Ok(())
        })
    }
    fn heartbeat<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.check()?;
            match self.instances.lock().unwrap().contains_key(id) {
                true => Ok(()),
                false => Err(RegistryError::NotFound(id.into())),
            }
        })
    }
    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.check()?;
            match self.instances.lock().unwrap().remove(id) {
                Some(_) => Ok(()),
                None => Err(RegistryError::NotFound(id.into())),
            }
        })
    }
}

fn services() -> Arc<Services> {
    let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
    Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())))
}

fn app(registry: Arc<dyn Registry>, services: Arc<Services>) -> Router {
    router(Some(Api { token: ApiToken::new(TOKEN).unwrap(), registry, services }))
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn call(app: &Router, method: &str, path: &str, auth: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = match body {
        Some((ct, bytes)) => req.header("content-type", ct).body(Body::from(bytes)).unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{path}: not JSON: {bytes:?}"));
    Answer { status, headers, body }
}

fn bearer() -> Option<&'static str> {
    Some("Bearer test-token-0123456789")
}

fn good_body() -> Vec<u8> {
    json!({"service": "web", "id": "web-1", "address": "127.0.0.1", "port": 8080, "ttl": "10s", "tags": ["gateway"]})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn off_every_v1_path_says_how_to_turn_it_on() {
    let app = router(None);
    for path in ["/v1", "/v1/", "/v1/services", "/v1/instances/x/heartbeat"] {
        let a = call(&app, "GET", path, bearer(), None).await;
        assert_eq!(a.status, 404, "{path}");
        assert!(a.body["error"].as_str().unwrap().contains("--api-token"), "{}", a.body);
    }
}

#[tokio::test]
async fn every_request_needs_the_bearer_token() {
    let app = app(Arc::new(Memory::default()), services());
    let wrong = [None, Some("Bearer wrong"), Some("Basic dGVzdA=="), Some("test-token-0123456789"), Some("Bearer ")];
    for auth in wrong {
        for (method, path) in [("GET", "/v1/services"), ("PUT", "/v1/instances"), ("GET", "/v1/nope")] {
            let a = call(&app, method, path, auth, Some(("application/json", good_body()))).await;
            assert_eq!(a.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(a.headers["www-authenticate"], "Bearer");
            assert!(a.body["error"].is_string());
        }
    }
    assert_eq!(call(&app, "GET", "/v1/services", bearer(), None).await.status, 200);
    let a = call(&app, "GET", "/v1/", None, None).await;
    assert_eq!(a.status, 401, "/v1/ too needs the token");
    let a = call(&app, "GET", "/v1/", bearer(), None).await;
    assert_eq!(a.status, 404, "/v1/ is no endpoint: {}", a.body);
}

#[tokio::test]
async fn two_authorization_headers_are_refused_whatever_they_say() {
    let app = app(Arc::new(Memory::default()), services());
    for (first, second) in [(bearer().unwrap(), "Bearer wrong"), ("Bearer wrong", bearer().unwrap())] {
        let req = Request::builder()
            .uri("/v1/services")
            .header("authorization", first)
            .header("authorization", second)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 401, "{first:?} then {second:?}");
    }
}

#[tokio::test]
async fn register_heartbeat_deregister() {
    let memory = Arc::new(Memory::default());
    let app = app(memory.clone(), services());
    let a = call(&app, "PUT", "/v1/instances", bearer(), Some(("application/json; charset=utf-8", good_body()))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.body["id"].as_str(), a.body["ttl"].as_str()), (Some("web-1"), Some("10s")));
    assert_eq!(memory.instances.lock().unwrap()["web-1"].port, 8080);

    let a = call(&app, "PUT", "/v1/instances/web-1/heartbeat", bearer(), None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("passing")));
    assert_eq!(call(&app, "PUT", "/v1/instances/web-2/heartbeat", bearer(), None).await.status, 404);
    assert_eq!(call(&app, "DELETE", "/v1/instances/web-1", bearer(), None).await.status, 200);
    assert!(memory.instances.lock().unwrap().is_empty());
    let a = call(&app, "DELETE", "/v1/instances/web-1", bearer(), None).await;
    assert_eq!(a.status, 404);
    assert!(a.body["error"].as_str().unwrap().contains("web-1"));
    let a = call(&app, "DELETE", "/v1/instances/a%2Fb", bearer(), None).await;
    assert_eq!((a.status, a.body["field"].as_str()), (400, Some("id")));
}

#[tokio::test]
async fn bad_bodies_are_refused_before_the_registry_is_called() {
    let memory = Arc::new(Memory::default());
    let app = app(memory.clone(), services());
    let put = |ct: &'static str, body: Vec<u8>| {
        let app = app.clone();
        async move { call(&app, "PUT", "/v1/instances", bearer(), Some((ct, body))).await }
    };
    let a =
        put("application/json", br#"{"service":"web","id":"x","address":"10.0.0.1","port":0,"ttl":"10s"}"#.to_vec())
            .await;
    assert_eq!((a.status, a.body["field"].as_str()), (400, Some("port")));
    assert_eq!(put("text/plain", good_body()).await.status, 415);
    assert_eq!(put("application/jsonx", good_body()).await.status, 415);
    let a = call(&app, "PUT", "/v1/instances", bearer(), None).await;
    assert_eq!(a.status, 415, "no Content-Type");
    let mut big = good_body();
    big.extend(std::iter::repeat_n(b' ', MAX_BODY));
    assert_eq!(put("application/json", big).await.status, 413);
    assert!(memory.instances.lock().unwrap().is_empty());
}

#[tokio::test]
async fn registry_failures_map_to_503_and_read_only_sources_to_501() {
    let memory = Arc::new(Memory::default());
    memory.down.store(true, std::sync::atomic::Ordering::Relaxed);
    let app = app(memory, services());
    let a = call(&app, "PUT", "/v1/instances", bearer(), Some(("application/json", good_body()))).await;
    assert_eq!(a.status, 503, "{}", a.body);

    let client = consul::Client::new("http://127.0.0.1:1".parse().unwrap(), consul::Token::default());
    let etcd = watcher::source::etcd::EtcdArgs {
        etcd_endpoints: vec!["http://127.0.0.1:1".into()],
        etcd_prefix: "/services/".into(),
    };
    let dns = app_with(registry::for_source(watcher::source::SourceKind::Dns, client, &etcd));
    let a = call(&dns, "PUT", "/v1/instances", bearer(), Some(("application/json", good_body()))).await;
    assert_eq!(a.status, 501);
    assert!(a.body["error"].as_str().unwrap().contains("read-only"), "{}", a.body);
}

fn app_with(registry: Arc<dyn Registry>) -> Router {
    app(registry, services())
}

#[tokio::test]
async fn the_discover_calls_answer_from_the_cache_and_say_when_it_is_stale() {
    let services = services();
    let app = app(Arc::new(Memory::default()), services.clone());
    let a = call(&app, "GET", "/v1/services", bearer(), None).await;
    assert_eq!(a.body["stale"], true, "no watcher yet: {}", a.body);
    assert_eq!(a.body["services"][0]["loaded"], false);

    services.freshness().set_watcher_connected(true);
    services.apply_snapshot("web", 7, vec![consul::Instance::new("web-1", "n1", "10.0.0.1", 8080)], vec![]);
    let a = call(&app, "GET", "/v1/services", bearer(), None).await;
    assert_eq!((a.body["stale"].clone(), a.body["services"][0]["stale"].clone()), (json!(false), json!(false)));
    assert_eq!(a.body["services"][0]["instances"][0]["port"], 8080);
    let a = call(&app, "GET", "/v1/services/WEB", bearer(), None).await;
    assert_eq!((a.status, a.body["index"].as_u64()), (200, Some(7)));

    services.freshness().set_consul(Some("connection refused".into()), false);
    let a = call(&app, "GET", "/v1/services/web", bearer(), None).await;
    assert_eq!((a.status, a.body["stale"].as_bool()), (200, Some(true)));
    assert!(a.body["stale_reason"].as_str().unwrap().contains("connection refused"), "{}", a.body);
    assert_eq!(a.body["instances"][0]["id"], "web-1", "the last known instances still show");

    assert_eq!(call(&app, "GET", "/v1/services/nope", bearer(), None).await.status, 404);
    let a = call(&app, "GET", "/v1/services/a%20b", bearer(), None).await;
    assert_eq!((a.status, a.body["field"].as_str()), (400, Some("name")));
}

#[tokio::test]
async fn other_methods_get_405_json_with_allow() {
    let app = app(Arc::new(Memory::default()), services());
    let a = call(&app, "POST", "/v1/instances", bearer(), None).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "PUT");
    let a = call(&app, "GET", "/v1/nope", bearer(), None).await;
    assert_eq!(a.status, 404);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_ends_gets_408() {
    let memory = Arc::new(Memory::default());
    let app = app(memory.clone(), services());
    // The head says 100 bytes; one arrives and then nothing.
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{"))]);
    let stream = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    let req = Request::builder()
        .method("PUT")
        .uri("/v1/instances")
        .header("authorization", bearer().unwrap())
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(Body::from_stream(stream))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 408);
    assert!(memory.instances.lock().unwrap().is_empty());
}
