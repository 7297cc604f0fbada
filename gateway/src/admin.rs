//! The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (the watcher can read
//! Consul's catalog, every static service is loaded and fresh, and the watcher has listed the
//! tagged services, else 503 with the reasons: a 403 from Consul shows here with the permissions
//! the token needs), `GET /services` (each followed service's instances, Consul index, last change, and
//! whether the data is stale), `GET /routes` (the route table in match order), `GET /metrics`
//! (Prometheus, see [`crate::observe::metrics`]), and the live status page `GET /` with its
//! server-sent events `GET /events` ([`crate::status`]). The register/discover API under `/v1/`
//! is [`crate::api`]'s, merged in by [`crate::run`].
//!
//! It is served by [`serve`]: HTTP/1.1 with a header-read timeout and a cap on open connections,
//! so a slow or flooding client cannot hold it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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

/// Connections the admin listener serves at once; more are closed unread, as on the public
/// listener above `--max-connections`. Room for many status pages (each holds one `/events`
/// connection) and scrapers, and a bound on what a flood can take.
pub const MAX_CONNECTIONS: usize = 256;

/// Has the kernel drop `tcp` once what the gateway sent has waited `after` for the client to take
/// it (see [`WRITE_STALL`]). A failure to set that (not Linux) is logged at debug and leaves the
/// connection as it is.
fn stall_limit(tcp: &tokio::net::TcpStream, after: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let set = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(after));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let set: std::io::Result<()> = Err(std::io::ErrorKind::Unsupported.into());
    if let Err(e) = set {
        tracing::debug!(error = %e, ?after, "cannot set TCP_USER_TIMEOUT on an admin connection");
    }
}

/// Serves `app` (HTTP/1.1) on the admin listener until `stop` turns true: at most
/// [`MAX_CONNECTIONS`] at once; a client gets `header_timeout` (`--client-timeout`) to send each
/// request's head, and an idle keep-alive connection is closed after it (hyper's header-read
/// timeout, as on the public listener; a long `/events` response is not cut); and a client that
/// stops reading is dropped after `stall` ([`WRITE_STALL`]). Connections still open at `stop`
/// end with the process.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    stall: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let limit = crate::proxy::limit::ConnectionLimit::new(MAX_CONNECTIONS);
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new());
    h1.header_read_timeout(header_timeout);
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    crate::proxy::listener::accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stopped => return,
        };
        let Some(permit) = limit.try_acquire() else {
            tracing::debug!(%peer, max = MAX_CONNECTIONS, "admin connection refused: too many open");
            continue;
        };
        stall_limit(&tcp, stall);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| app.clone().oneshot(req));
        let conn = h1.serve_connection(TokioIo::new(tcp), service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
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
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(listener, app, Duration::from_secs(60), Duration::from_secs(1), stop));

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

    /// A client that trickles its head is cut off by the header timeout, and connections over
    /// the cap are closed unread while the open ones keep being served.
    #[tokio::test]
    async fn slow_heads_are_cut_off_and_connections_are_capped() {
        use std::time::Instant;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let app = router(services, Arc::default());
        tokio::spawn(serve(listener, app, Duration::from_millis(300), WRITE_STALL, stop));

        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let closed = loop {
            if slow.write_all(b"X").await.is_err() {
                break true;
            }
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
                Ok(_) => break true,
                Err(_) if started.elapsed() > Duration::from_secs(5) => break false,
                Err(_) => {}
            }
        };
        assert!(closed, "a trickled head is cut off");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");

        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
            let n = c.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            held.push(c);
        }
        let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n").await;
        let refused = tokio::time::timeout(Duration::from_secs(1), over.read(&mut buf)).await.expect("closed at once");
        assert!(matches!(refused, Ok(0) | Err(_)), "closed unread");
        let first = &mut held[0];
        first.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        let n = first.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "an open connection is still served");
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
