//! The request path: `/<service>/<rest>?<query>` → a random live instance of `<service>` →
//! `http://<instance>/<rest>?<query>`, streamed both ways.
//!
//! A connection that fails before anything was sent (refused, reset, connect timeout) is retried
//! on another instance, so a dead instance that Consul still lists costs the client nothing. So
//! is an idempotent request whose connection closed before any response (a pooled keep-alive
//! connection to an instance that just died), as nginx does. That
//! needs the request body again: bodies that are empty or small enough to buffer
//! ([`Proxy::max_replay_body`]) are replayable; a larger streamed body is sent once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tracing::{debug, warn};

use crate::balancer::{pick, Endpoint};
use crate::error::GatewayError;
use crate::registry::Registry;

/// The pooled upstream client.
pub type HttpClient = Client<HttpConnector, Body>;

/// At most this many instances are tried for one request.
const MAX_ATTEMPTS: usize = 5;

/// Builds the pooled upstream client: keep-alive, no Nagle, bounded connect time.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(true);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

/// Everything the request path needs.
pub struct Proxy {
    /// The services and their instances.
    pub registry: Arc<Registry>,
    /// The upstream client.
    pub client: HttpClient,
    /// How long an instance may take to answer (response headers), all attempts included.
    pub timeout: Duration,
    /// Request bodies up to this size are buffered so a failed connect can be retried.
    pub max_replay_body: u64,
}

/// The axum handler for every path on the public listener.
pub async fn handle(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    match proxy.route(req).await {
        Ok(resp) => resp,
        Err(e) => {
            match &e {
                GatewayError::Upstream { service, reason } => {
                    warn!(service, reason, "upstream failed")
                }
                GatewayError::DiscoveryUnavailable { service, reason } => {
                    warn!(service, reason, "no instances known")
                }
                GatewayError::Timeout { service } => warn!(service, "upstream timed out"),
                _ => debug!(error = %e, "request refused"),
            }
            e.into_response()
        }
    }
}

/// Splits `/<service>/<rest>?<query>` into the service and the upstream path-and-query.
pub fn split_service(path_and_query: &str) -> (&str, String) {
    let trimmed = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
    let end = trimmed.find(['/', '?']).unwrap_or(trimmed.len());
    let (service, rest) = trimmed.split_at(end);
    let rest = if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") };
    (service, rest)
}

/// A request body that may be sent more than once.
enum Replay {
    Bytes(Bytes),
    Stream(Option<Body>),
}

impl Replay {
    fn next(&mut self) -> Option<Body> {
        match self {
            Replay::Bytes(b) => Some(Body::from(b.clone())),
            Replay::Stream(s) => s.take().map(Body::new),
        }
    }
}

impl Proxy {
    async fn route(&self, req: Request) -> Result<Response, GatewayError> {
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let (service, rest) = split_service(pq);
        if !self.registry.is_routable(service) {
            return Err(GatewayError::UnknownService { service: service.to_string() });
        }
        let service = service.to_string();
        let set = self
            .registry
            .get_or_fetch(&service)
            .await
            .map_err(|reason| GatewayError::DiscoveryUnavailable { service: service.clone(), reason })?;
        if set.endpoints.is_empty() {
            return Err(GatewayError::NoInstance { service });
        }
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let idempotent = is_idempotent(req.method());
        let (parts, body) = req.into_parts();
        let mut body = self.replayable(&service, body).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut tried = Vec::new();
        loop {
            let Some((i, endpoint)) = pick(&set.endpoints, &tried) else {
                return Err(GatewayError::Upstream { service, reason: "every instance refused the connection".into() });
            };
            tried.push(i);
            let Some(req_body) = body.next() else {
                return Err(GatewayError::Upstream {
                    service,
                    reason: "connection failed and the streamed body cannot be resent".into(),
                });
            };
            // Built per attempt from the client's headers: one copy each, and none kept for a
            // retry that rarely comes.
            let upstream = build_request(&parts, forwarded_headers(&parts, peer), endpoint, &rest, req_body)
                .map_err(|reason| GatewayError::BadRequest { service: service.clone(), reason })?;
            match tokio::time::timeout_at(deadline, self.client.request(upstream)).await {
                Err(_) => return Err(GatewayError::Timeout { service }),
                Ok(Ok(resp)) => return Ok(into_downstream(resp)),
                Ok(Err(e)) if e.is_connect() || (idempotent && closed_before_response(&e)) => {
                    endpoint.eject();
                    let what = if e.is_connect() { "connect failed" } else { "connection closed before a response" };
                    warn!(service, instance = %endpoint.authority, error = %error_chain(&e), "{what}; trying another instance");
                    if tried.len() >= MAX_ATTEMPTS.min(set.endpoints.len()) {
                        return Err(GatewayError::Upstream {
                            service,
                            reason: format!("{what} ({}): {}", endpoint.authority, error_chain(&e)),
                        });
                    }
                }
                Ok(Err(e)) => {
                    return Err(GatewayError::Upstream {
                        service,
                        reason: format!("{}: {}", endpoint.authority, error_chain(&e)),
                    })
                }
            }
        }
    }

    async fn replayable(&self, service: &str, body: Body) -> Result<Replay, GatewayError> {
        if body.is_end_stream() {
            return Ok(Replay::Bytes(Bytes::new()));
        }
        match body.size_hint().exact() {
            Some(n) if n <= self.max_replay_body => {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| GatewayError::BadRequest { service: service.to_string(), reason: e.to_string() })?;
                Ok(Replay::Bytes(bytes.to_bytes()))
            }
            _ => Ok(Replay::Stream(Some(body))),
        }
    }
}

/// Whether a header is hop-by-hop (RFC 9110 §7.6.1 and the usual non-standard ones).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those the `Connection` header names. Most messages
/// have at most `Connection: keep-alive`, so this avoids allocating in the common case.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Headers named by `Connection` tokens other than the standard ones are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for h in &named {
        headers.remove(h);
    }
    while let Some(h) = headers.keys().find(|n| is_hop_by_hop(n)).cloned() {
        headers.remove(&h);
    }
}

/// The client's IP as a header value, formatted without `fmt` (this runs on every request).
fn ip_value(ip: std::net::IpAddr) -> Option<HeaderValue> {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + (octet / 10) % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
        std::net::IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string()).ok(),
    }
}

/// The headers sent upstream: the client's, minus hop-by-hop and `Host`, plus `X-Forwarded-*`.
fn forwarded_headers(parts: &Parts, peer: Option<SocketAddr>) -> HeaderMap {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    let host = headers
        .remove(header::HOST)
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    if let Some(ip) = peer.and_then(|p| ip_value(p.ip())) {
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", ip.to_str().unwrap_or_default())).ok(),
            None => Some(ip),
        };
        if let Some(v) = xff {
            headers.insert("x-forwarded-for", v);
        }
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    headers
}

fn build_request(
    parts: &Parts,
    headers: HeaderMap,
    endpoint: &Endpoint,
    rest: &str,
    body: Body,
) -> Result<Request, String> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(endpoint.authority.clone())
        .path_and_query(rest)
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    // Set here from a value built once per endpoint; otherwise the client formats one per request.
    req.headers_mut().insert(header::HOST, endpoint.host.clone());
    Ok(req)
}

fn into_downstream(resp: http::Response<hyper::body::Incoming>) -> Response {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Methods a proxy may repeat after a failure (RFC 9110 §9.2.2), as nginx does by default.
fn is_idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Whether the request failed in transport before any response arrived: the instance closed or
/// reset the connection (typically a pooled keep-alive connection to an instance that just died).
/// The request may have reached it, so only an idempotent request is sent again. A malformed
/// response is not a transport failure and is not retried.
fn closed_before_response(e: &hyper_util::client::legacy::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
            if h.is_parse() || h.is_user() {
                return false;
            }
        }
        if c.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// An error and its causes on one line (hyper's top-level messages alone are vague).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
