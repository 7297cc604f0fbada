//! The gateway's errors, each with its HTTP status and a JSON body that says what failed without
//! leaking internals: `{"error": "...", "service": "..."}`, or `{"error": "no route", "path": "..."}`
//! when no route matches.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the request's host and path.
    #[error("no route")]
    NoRoute {
        /// The request's path (without the query).
        path: String,
    },
    /// The path has a `.` or `..` segment (also percent-encoded): a backend that resolves it
    /// would serve a path outside the route that matched.
    #[error("dot segment in path")]
    DotSegment {
        /// The request's path (without the query).
        path: String,
    },
    /// The service is known but has no live instance.
    #[error("no live instance")]
    NoInstance {
        /// The service.
        service: String,
    },
    /// The service's instances could not be loaded (Consul unreachable before the first
    /// snapshot).
    #[error("service discovery unavailable")]
    DiscoveryUnavailable {
        /// The service.
        service: String,
        /// Why, for the log.
        reason: String,
    },
    /// Every attempt to reach an instance failed, or it broke off.
    #[error("upstream failed")]
    Upstream {
        /// The service.
        service: String,
        /// What failed, for the log.
        reason: String,
    },
    /// The instance did not answer in time.
    #[error("upstream timed out")]
    Timeout {
        /// The service.
        service: String,
    },
    /// The request could not be turned into an upstream request.
    #[error("bad request")]
    BadRequest {
        /// The service.
        service: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl GatewayError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::DotSegment { .. } => StatusCode::BAD_REQUEST,
            Self::NoInstance { .. } | Self::DiscoveryUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn service(&self) -> &str {
        match self {
            Self::NoRoute { .. } | Self::DotSegment { .. } => "",
            Self::NoInstance { service }
            | Self::DiscoveryUnavailable { service, .. }
            | Self::Upstream { service, .. }
            | Self::Timeout { service }
            | Self::BadRequest { service, .. } => service,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = match &self {
            Self::NoRoute { path } | Self::DotSegment { path } => {
                serde_json::json!({ "error": self.to_string(), "path": path })
            }
            _ => serde_json::json!({ "error": self.to_string(), "service": self.service() }),
        };
        let mut resp = (self.status(), body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_map_to_status_and_json() {
        let cases = [
            (GatewayError::NoInstance { service: "x".into() }, 503),
            (GatewayError::DiscoveryUnavailable { service: "x".into(), reason: "secret detail".into() }, 503),
            (GatewayError::Upstream { service: "x".into(), reason: "secret detail".into() }, 502),
            (GatewayError::Timeout { service: "x".into() }, 504),
        ];
        for (err, status) in cases {
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["service"], "x");
            assert!(v["error"].is_string());
            assert!(!String::from_utf8_lossy(&body).contains("secret detail"));
        }
    }

    #[tokio::test]
    async fn no_route_names_the_path() {
        let resp = GatewayError::NoRoute { path: "/nowhere/x".into() }.into_response();
        assert_eq!(resp.status().as_u16(), 404);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["error"].as_str(), v["path"].as_str()), (Some("no route"), Some("/nowhere/x")));
    }
}
