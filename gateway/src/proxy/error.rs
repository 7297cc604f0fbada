//! The gateway's errors, each with its HTTP status and a JSON body that says what failed without
//! leaking internals: `{"error": "...", "service": "..."}`, or `{"error": "no route", "path": "..."}`
//! when no route matches. A 5xx (the gateway's own failure) also carries `"request_id"`: the ID
//! ([`crate::observe::request_id`]) its WARN line carries.
//!
//! A gRPC client gets them as gRPC statuses instead ([`GatewayError::into_grpc_response`]): a
//! "Trailers-Only" answer (HTTP 200, `content-type: application/grpc`, `grpc-status` and
//! `grpc-message`, no body; gRPC's PROTOCOL-HTTP2 document), the code its client library would
//! have derived from the HTTP status (gRPC's "HTTP to gRPC Status Code Mapping"), and the message
//! it would otherwise lose.

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
    /// The request is refused before any instance sees it: a hostile or malformed request that
    /// hyper's parser let through ([`crate::proxy::guard`]). Its answer says why and closes the
    /// connection (`Connection: close`), as nginx does after such an error.
    #[error("{}", refusal_text(*.status))]
    Refused {
        /// 400, 405 (`CONNECT`, with `Allow`), 408 or 414.
        status: StatusCode,
        /// Why, for the client (never anything secret: the rule that was broken).
        reason: String,
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
            Self::Refused { status, .. } => *status,
        }
    }

    /// The service it concerns (empty when no route matched).
    pub fn service(&self) -> &str {
        match self {
            Self::NoRoute { .. } | Self::DotSegment { .. } | Self::Refused { .. } => "",
            Self::NoInstance { service }
            | Self::DiscoveryUnavailable { service, .. }
            | Self::Upstream { service, .. }
            | Self::Timeout { service }
            | Self::BadRequest { service, .. } => service,
        }
    }
}

impl GatewayError {
    /// The gRPC status code: what gRPC clients derive from [`GatewayError::status`] (404:
    /// `UNIMPLEMENTED` 12; 502, 503, 504: `UNAVAILABLE` 14; 400: `INTERNAL` 13; any other:
    /// `UNKNOWN` 2).
    pub fn grpc_code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "12",
            Self::Refused { status, .. } if *status != StatusCode::BAD_REQUEST => "2",
            Self::Refused { .. } => "13",
            Self::DotSegment { .. } | Self::BadRequest { .. } => "13",
            Self::NoInstance { .. }
            | Self::DiscoveryUnavailable { .. }
            | Self::Upstream { .. }
            | Self::Timeout { .. } => "14",
        }
    }

    /// The answer to a gRPC client: HTTP 200 with `grpc-status` ([`GatewayError::grpc_code`]) and
    /// `grpc-message` (what failed and the service, or the path for a missing route;
    /// percent-encoded) and no body.
    pub fn into_grpc_response(self) -> Response {
        let what = match &self {
            Self::NoRoute { path } | Self::DotSegment { path } => path.as_str(),
            Self::Refused { reason, .. } => reason.as_str(),
            _ => self.service(),
        };
        let message = percent_encode(&format!("{self}: {what}"));
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static(self.grpc_code()));
        if let Ok(m) = HeaderValue::from_str(&message) {
            h.insert("grpc-message", m);
        }
        resp
    }
}

/// The methods a 405 lists: RFC 9110's, but `CONNECT`.
pub const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

/// A refusal's `error`: its status's reason phrase, in lowercase (`bad request`).
fn refusal_text(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("refused").to_ascii_lowercase()
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl GatewayError {
    /// The answer to a client: JSON (with `request_id` for a 5xx), or for a gRPC client
    /// ([`GatewayError::into_grpc_response`]) a gRPC status (the ID goes in `X-Request-Id`, which
    /// the proxy sets on every response).
    pub fn respond(self, grpc: bool, request_id: &HeaderValue) -> Response {
        if grpc {
            self.into_grpc_response()
        } else {
            self.json(Some(request_id))
        }
    }

    fn json(self, request_id: Option<&HeaderValue>) -> Response {
        let mut body = match &self {
            Self::NoRoute { path } | Self::DotSegment { path } => {
                serde_json::json!({ "error": self.to_string(), "path": path })
            }
            Self::Refused { reason, .. } => serde_json::json!({ "error": self.to_string(), "reason": reason }),
            _ => serde_json::json!({ "error": self.to_string(), "service": self.service() }),
        };
        // The gateway's own failures (5xx) are the ones to correlate with its log; a refusal
        // (404, 400) keeps its body as it was, the ID being in `X-Request-Id` anyway.
        if let Some(id) = request_id.filter(|_| self.status().is_server_error()) {
            body["request_id"] = String::from_utf8_lossy(id.as_bytes()).into();
        }
        let refused = matches!(self, Self::Refused { .. });
        let status = self.status();
        let mut resp = (status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if refused {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 §15.5.6: a 405 names the methods that are allowed; every method but
            // CONNECT is forwarded, so these are the standard ones.
            h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED));
        }
        resp
    }
}

impl IntoResponse for GatewayError {
    /// The JSON answer without a request ID.
    fn into_response(self) -> Response {
        self.json(None)
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
    async fn a_grpc_client_gets_a_trailers_only_answer_with_a_grpc_status() {
        let cases = [
            (GatewayError::NoRoute { path: "/pkg.Svc/M".into() }, "12", "no route: /pkg.Svc/M"),
            (GatewayError::NoInstance { service: "greeter".into() }, "14", "no live instance: greeter"),
            (
                GatewayError::Upstream { service: "g".into(), reason: "secret detail".into() },
                "14",
                "upstream failed: g",
            ),
            (GatewayError::Timeout { service: "g".into() }, "14", "upstream timed out: g"),
            (GatewayError::BadRequest { service: "g".into(), reason: "x".into() }, "13", "bad request: g"),
        ];
        for (err, code, message) in cases {
            let resp = err.into_grpc_response();
            assert_eq!(resp.status(), 200, "gRPC's Trailers-Only answer");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
            assert_eq!((h["grpc-status"].to_str().unwrap(), h["grpc-message"].to_str().unwrap()), (code, message));
            assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
        }
        // grpc-message is percent-encoded (gRPC's PROTOCOL-HTTP2): '%' and anything but printable ASCII.
        let resp = GatewayError::NoRoute { path: "/a%b/é".into() }.into_grpc_response();
        assert_eq!(resp.headers()["grpc-message"], "no route: /a%25b/%C3%A9");
    }

    #[tokio::test]
    async fn the_json_body_carries_the_request_id() {
        let id = HeaderValue::from_static("req-7");
        let resp = GatewayError::Upstream { service: "x".into(), reason: "r".into() }.respond(false, &id);
        assert_eq!(resp.status().as_u16(), 502);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["request_id"].as_str(), v["service"].as_str()), (Some("req-7"), Some("x")));
        let grpc = GatewayError::Timeout { service: "g".into() }.respond(true, &id);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        let body = GatewayError::NoRoute { path: "/x".into() }.respond(false, &id).into_body();
        let v: serde_json::Value = serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
        assert!(v.get("request_id").is_none(), "a refusal's body is unchanged: {v}");
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
