//! The HTTP routes of the demo backend.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::identity::Identity;

#[derive(Serialize)]
struct RemoteIp {
    ip: String,
    port: u16,
    hostname: String,
}

/// `GET /getRemoteIp` and `GET /health`.
pub fn router(me: Identity) -> Router {
    Router::new().route("/getRemoteIp", get(remote_ip)).route("/health", get(|| async { "ok" })).with_state(me)
}

async fn remote_ip(State(me): State<Identity>) -> Json<RemoteIp> {
    Json(RemoteIp { ip: me.ip.to_string(), port: me.port, hostname: me.hostname.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn reports_the_instance_identity() {
        let me = Identity { ip: "10.1.2.3".parse().unwrap(), port: 3000, hostname: "h1".into() };
        let resp = router(me).oneshot(Request::get("/getRemoteIp").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"ip": "10.1.2.3", "port": 3000, "hostname": "h1"}));
    }
}
