//! The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (the watcher can read
//! Consul's catalog, every static service is loaded and fresh, and the watcher has listed the
//! tagged services, else 503 with the reasons: a 403 from Consul shows here with the permissions
//! the token needs), `GET /services` (each followed service's instances, Consul index, last change, and
//! whether the data is stale), `GET /routes` (the route table in match order), `GET /metrics`
//! (Prometheus, see [`crate::observe::metrics`]), and the live status page `GET /` with its
//! server-sent events `GET /events` ([`crate::status`]). The register/discover API under `/v1/`
//! is [`crate::api`]'s, merged in by [`crate::run`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::discovery::services::Services;
use crate::discovery::tag::Host;
use crate::observe::metrics::Metrics;

/// What the admin handlers read.
#[derive(Clone)]
pub struct Admin {
    /// The routes, services and their instances, and the change feed.
    pub services: Arc<Services>,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
}

impl FromRef<Admin> for Arc<Services> {
    fn from_ref(admin: &Admin) -> Self {
        admin.services.clone()
    }
}

impl FromRef<Admin> for Arc<Metrics> {
    fn from_ref(admin: &Admin) -> Self {
        admin.metrics.clone()
    }
}

/// How long a connection to the admin listener may keep data unacknowledged, or its receive
/// window shut (a client that stopped reading), before the kernel drops it (`TCP_USER_TIMEOUT`).
/// A follower of `/events` that never reads would otherwise hold its connection, about 1 MB of
/// the gateway's buffers and a few MB of socket buffers for good; the page reconnects by itself.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// The admin listener, each of whose connections the kernel drops once what the gateway sent has
/// waited `after` for the client to take it (see [`WRITE_STALL`]). A failure to set that (not
/// Linux) is logged at debug and leaves the connection as it is.
pub fn stall_limited(
    listener: tokio::net::TcpListener,
    after: Duration,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    listener.tap_io(move |tcp| {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let set = socket2::SockRef::from(&*tcp).set_tcp_user_timeout(Some(after));
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let set: std::io::Result<()> = Err(std::io::ErrorKind::Unsupported.into());
        if let Err(e) = set {
            tracing::debug!(error = %e, ?after, "cannot set TCP_USER_TIMEOUT on an admin connection");
        }
    })
}

/// The admin routes.
pub fn router(services: Arc<Services>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/services", get(list_services))
        .route("/routes", get(routes))
        .route("/metrics", get(crate::observe::metrics::serve))
        .merge(crate::status::routes())
        .with_state(Admin { services, metrics })
}

async fn readyz(State(services): State<Arc<Services>>) -> Response {
    let mut reasons = Vec::new();
    if let Some(why) = services.freshness().consul_reason() {
        reasons.push(format!("{}: {why}", services.freshness().source()));
    }
    for slot in services.slots() {
        let service = slot.service.as_str();
        if slot.set().is_none() {
            if slot.is_static {
                match services.freshness().stale_reason(service) {
                    Some(why) => reasons.push(format!("{service}: not loaded yet ({why})")),
                    None => reasons.push(format!("{service}: not loaded yet")),
                }
            }
        } else if let Some(why) = services.freshness().stale_reason(service) {
            reasons.push(format!("{service}: stale ({why})"));
        }
    }
    reasons.extend(services.unlisted_reasons());
    reasons.extend(crate::discovery::state_file::ready_reason(&services));
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reasons": reasons}))).into_response()
    }
}

async fn list_services(State(services): State<Arc<Services>>) -> Json<Value> {
    let mut out = Vec::new();
    for slot in services.slots() {
        let service = slot.service.as_str();
        let set = slot.set();
        // A set from the state file is stale until the watcher replaces it, connected or not.
        let from_file = set.as_ref().is_some_and(|s| s.origin == crate::discovery::set::Origin::StateFile);
        let stale = services
            .freshness()
            .stale_reason(service)
            .or_else(|| from_file.then(|| "from the state file, not yet confirmed by the registry".to_string()));
        let entry = match set {
            Some(set) => json!({
                "service": service,
                "static": slot.is_static,
                "loaded": true,
                "source": set.origin,
                "index": set.index,
                "tags": set.tags,
                "last_change": humantime::format_rfc3339_millis(set.changed_at).to_string(),
                "stale": stale.is_some(),
                "stale_reason": stale,
                "instances": set.endpoints.iter().map(|e| &e.instance).collect::<Vec<_>>(),
            }),
            None => json!({
                "service": service, "static": slot.is_static, "loaded": false, "stale": true,
                "stale_reason": stale, "instances": [],
            }),
        };
        out.push(entry);
    }
    Json(json!({ "services": out }))
}

/// The route table in match order: each route's host, path, service, declaring tag, options,
/// balancing policy (its own `balance=` or `--balance`), and the instances it sends to with their
/// weights.
async fn routes(State(services): State<Arc<Services>>) -> Json<Value> {
    let table = services.table();
    let out: Vec<Value> = table
        .routes()
        .iter()
        .map(|r| {
            let set = r.slot.set();
            let choice = set.as_ref().and_then(|s| s.candidates(r.tag.as_deref()));
            let weights = |c: &crate::proxy::balancer::Candidates| -> Vec<Value> {
                c.endpoints()
                    .iter()
                    .map(|e| json!({"instance": e.instance.authority(), "id": e.instance.id, "weight": e.weight()}))
                    .collect()
            };
            let (host, host_kind) = match &r.host {
                Host::Any => (None, "any"),
                Host::Exact(h) => (Some(h.clone()), "exact"),
                Host::Wildcard(d) => (Some(format!("*.{d}")), "wildcard"),
            };
            json!({
                "route": r.shown(),
                "host": host,
                "host_match": host_kind,
                "path": r.path,
                "service": r.service,
                "kind": if r.tag.is_some() { "declared" } else { "name" },
                "tag": r.tag,
                "options": r.spec.as_ref().map(|s| s.to_string()),
                "strip": r.strip,
                "balance": r.spec.as_ref().and_then(|s| s.balance).unwrap_or_else(|| services.balance()).as_str(),
                "instances": choice.map_or(0, |c| c.count()),
                "weights": choice.map(|c| weights(&c.main)).unwrap_or_default(),
                "split": choice.and_then(|c| c.split.as_ref()).map(|s| json!({
                    "percent": s.percent,
                    "sticky": format!("{:?}", s.sticky).to_lowercase(),
                    "canary_instances": weights(&s.canary),
                })),
            })
        })
        .collect();
    Json(json!({ "routes": out }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::direct::StaticRead;
    use crate::discovery::tag::TagRules;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_json(app: Router, path: &str) -> (u16, Value) {
        let resp = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// A follower of `/events` that stops reading is dropped once its window stayed shut for the
    /// stall limit, instead of holding its connection and buffers for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_is_dropped() {
        use crate::observe::changes::Kind;
        use std::time::Instant;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(services.clone(), Arc::default());
        tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
            stall_limited(listener, Duration::from_secs(1)),
            app,
        )));

        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        client.write_all(b"GET /events HTTP/1.1\r\nhost: admin\r\n\r\n").await.unwrap();
        // Fill every buffer between the gateway and the client (MBs), which reads nothing.
        let big = "x".repeat(4096);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            for _ in 0..50 {
                services.feed().publish(Kind::Source, None, None, big.clone());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The window stays shut past the limit (the kernel probes, then gives up).
        tokio::time::sleep(Duration::from_secs(4)).await;

        // A connection still served gets a state every second; a dropped one goes quiet, or ends.
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "the gateway still writes to a client that stopped reading for 6 s");
            match tokio::time::timeout(Duration::from_secs(3), client.read(&mut buf)).await {
                Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test]
    async fn readiness_needs_loaded_fresh_services() {
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
        let app = router(services.clone(), Arc::default());
        assert_eq!(get_json(app.clone(), "/healthz").await.0, 200);
        let (status, body) = get_json(app.clone(), "/readyz").await;
        assert_eq!(status, 503);
        assert!(body["reasons"][0].as_str().unwrap().contains("not loaded"));

        services.freshness().set_watcher_connected(true);
        services.apply_snapshot("web", 9, vec![], vec![]);
        let (status, body) = get_json(app.clone(), "/readyz").await;
        assert_eq!(status, 503, "tagged services not listed yet");
        assert!(body["reasons"][0].as_str().unwrap().contains("listed"));
        services.apply_list(&["web".to_string()]);
        assert_eq!(get_json(app.clone(), "/readyz").await.0, 200);

        services.freshness().set_readable("web", Some("connection refused".into()));
        let (status, body) = get_json(app.clone(), "/readyz").await;
        assert_eq!(status, 503);
        assert!(body["reasons"][0].as_str().unwrap().contains("stale"));

        // Consul refusing the watcher comes first, with why.
        services.freshness().set_readable("web", None);
        services
            .freshness()
            .set_consul(Some("Consul answered 403 for /v1/catalog/services: ACL not found".into()), true);
        let (status, body) = get_json(app.clone(), "/readyz").await;
        assert_eq!(status, 503);
        assert!(body["reasons"][0].as_str().unwrap().starts_with("consul: Consul answered 403"), "{body}");
        services.freshness().set_consul(None, false);
        assert_eq!(get_json(app.clone(), "/readyz").await.0, 200);
        services.freshness().set_readable("web", Some("connection refused".into()));

        let (_, body) = get_json(app, "/services").await;
        assert_eq!(body["services"][0]["index"], 9);
        assert_eq!(body["services"][0]["stale"], true);
    }
}
