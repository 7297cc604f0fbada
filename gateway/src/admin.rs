//! The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (every routable
//! service is loaded and fresh, else 503 with the reasons) and `GET /services` (what the gateway
//! knows: each service's instances, Consul index, last change, and whether the data is stale).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::registry::Registry;

/// The admin routes.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/services", get(services))
        .with_state(registry)
}

async fn readyz(State(registry): State<Arc<Registry>>) -> Response {
    let mut reasons = Vec::new();
    for service in registry.routable() {
        if registry.get(service).await.is_none() {
            reasons.push(format!("{service}: not loaded yet"));
        } else if let Some(why) = registry.stale_reason(service) {
            reasons.push(format!("{service}: stale ({why})"));
        }
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reasons": reasons}))).into_response()
    }
}

async fn services(State(registry): State<Arc<Registry>>) -> Json<Value> {
    let mut out = Vec::new();
    for service in registry.routable() {
        let stale = registry.stale_reason(service);
        let entry = match registry.get(service).await {
            Some(set) => json!({
                "service": service,
                "loaded": true,
                "source": set.source,
                "index": set.index,
                "last_change": humantime::format_rfc3339_millis(set.changed_at).to_string(),
                "stale": stale.is_some(),
                "stale_reason": stale,
                "instances": set.endpoints.iter().map(|e| &e.instance).collect::<Vec<_>>(),
            }),
            None => {
                json!({ "service": service, "loaded": false, "stale": true, "stale_reason": stale, "instances": [] })
            }
        };
        out.push(entry);
    }
    Json(json!({ "services": out }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::StaticDiscovery;
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

    #[tokio::test]
    async fn readiness_needs_loaded_fresh_services() {
        let registry = Arc::new(Registry::new(["web".to_string()], Arc::new(StaticDiscovery::default())));
        let app = router(registry.clone());
        assert_eq!(get_json(app.clone(), "/healthz").await.0, 200);
        let (status, body) = get_json(app.clone(), "/readyz").await;
        assert_eq!(status, 503);
        assert!(body["reasons"][0].as_str().unwrap().contains("not loaded"));

        registry.set_watcher_connected(true);
        registry.apply_snapshot("web", 9, vec![]).await;
        assert_eq!(get_json(app.clone(), "/readyz").await.0, 200);

        registry.set_readable("web", Some("connection refused".into()));
        let (status, body) = get_json(app.clone(), "/readyz").await;
        assert_eq!(status, 503);
        assert!(body["reasons"][0].as_str().unwrap().contains("stale"));

        let (_, body) = get_json(app, "/services").await;
        assert_eq!(body["services"][0]["index"], 9);
        assert_eq!(body["services"][0]["stale"], true);
    }
}
