//! The request path: host and path → a route ([`crate::discovery::routes`]) → one of its
//! service's live instances (weighted, [`balancer`]; a split route's side, [`split`]) → the
//! request, rewritten for the route ([`rewrite`]), streamed there and back. A name route sends
//! `/<service>/<rest>?<query>` to `http://<instance>/<rest>?<query>`.
//!
//! Instances are spoken to in HTTP/1.1, or in HTTP/2 cleartext when the route says `proto=grpc`
//! (or `h2c`) or the instance's `gateway-protocol` metadata does ([`upstream::h2`]): a branch on
//! values fixed when the service set was built.
//!
//! A route whose service has no routable instance answers 503: it never falls through to another
//! route. No route at all answers 404.
//!
//! A request that could not be sent at all (connect refused, reset or timed out; a new connection
//! closed before the request was written) goes to another instance whatever its method, so a dead
//! instance that Consul still lists costs the client nothing. So does an idempotent request whose
//! connection closed after it was sent but before any response (a pooled keep-alive connection to
//! an instance that just died), as nginx does. Bodies that are empty or small enough to buffer
//! ([`Proxy::max_replay_body`]) can be sent again; a larger one is streamed, and comes back for
//! another instance only when none of it was sent.
//!
//! When such a failure happens on a connection reused from the pool, the instance may simply have
//! closed that idle connection as the request went out (its keep-alive timeout ran out): the
//! request first goes again on a new connection to the same instance, which is not ejected, as
//! Go's `net/http` does. So does an idempotent request answered with something that is not HTTP
//! on a reused connection: bytes a previous response left behind. Only a failure on a new
//! connection counts against the instance.
//!
//! An HTTP/1.1 upgrade request (`Connection: upgrade` and `Upgrade`: WebSocket, or any protocol
//! the client names) goes to the instance with those two headers, over a connection of its own
//! ([`upstream::upgrade`]), and is retried elsewhere like any request when the connect fails. A
//! `101` answer goes back to the client and the two connections are joined into a tunnel
//! ([`tunnel`]); any other answer is an ordinary response. Responses are streamed: each chunk the
//! instance writes is passed on as it arrives (server-sent events, long polls).
//!
//! Every request has an ID ([`crate::observe::request_id`]): the client's `X-Request-Id` when it
//! is sane, else a new one, passed to the instance and returned on every response, the
//! gateway's own included. A request the gateway fails itself (a 5xx of its own) is logged once,
//! at WARN, with its route, service, last instance tried and ID, which its JSON body carries too.
//! Each request is counted and timed, and logged to the access log if that is on, when its
//! response body ends ([`observed`]).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Body;
use hyper::upgrade::OnUpgrade;
use tracing::{debug, warn};

use crate::discovery::routes::Route;
use crate::discovery::services::Services;
use crate::discovery::tag::{Protocol, Redirect};
use crate::observe::access::AccessLog;
use crate::observe::metrics::{Metrics, Open, RetryReason};
use crate::observe::request_id::{self, X_REQUEST_ID};
use ahead::Ahead;
use balancer::Balance;
use observed::{Counted, Observed, Pending, Trail, Unanswered};
use upstream::{BoxError, Failed, PooledBody, RequestBody, Timeouts};

pub mod ahead;
pub mod balancer;
pub mod drain;
pub mod error;
pub mod framing;
pub mod guard;
mod headers;
pub mod idle;
pub mod limit;
pub mod listener;
pub mod observed;
pub mod rewrite;
pub mod sniff;
pub mod split;
pub mod tunnel;
pub mod upstream;
pub mod workers;

use error::GatewayError;
use headers::{strip_hop_by_hop, upstream_headers};

/// What the gateway answers with: an instance's response streamed through, or its own (errors).
pub type ResponseBody = Either<PooledBody, axum::body::Body>;

/// At most this many instances are tried for one request.
const MAX_ATTEMPTS: usize = 5;

/// Everything the request path needs.
///
/// A clone shares everything it points to (routes, metrics, access log): each worker thread
/// serves from its own clone ([`workers::Workers::spawn`]), so the reference count every request
/// touches (the listener's per-request `Arc<Proxy>` clone, kept until its response body ends)
/// is that worker's alone, not a cache line all workers write.
#[derive(Clone)]
pub struct Proxy {
    /// The routes, services and their instances.
    pub services: Arc<Services>,
    /// How long connecting to an instance may take before another one is tried, and how long
    /// an idle connection to an instance is reused.
    pub timeouts: Timeouts,
    /// How long an instance may take to answer (response headers), all attempts included; a
    /// gRPC client's longer deadline (`grpc-timeout`) extends it for its call.
    pub timeout: Duration,
    /// Request bodies up to this size are buffered so a failed connect can be retried.
    pub max_replay_body: u64,
    /// A tunnel (after a `101`) with no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Request targets longer than this are refused with 414 ([`guard`]).
    pub max_uri_bytes: usize,
    /// Request counts and durations, retries, ejections, open connections.
    pub metrics: Arc<Metrics>,
    /// Where finished requests are logged; `None`: the access log is off.
    pub access: Option<Arc<AccessLog>>,
}

/// A request body that may be sent more than once.
enum Replay {
    Bytes(Bytes),
    Stream(Option<UnsyncBoxBody<Bytes, BoxError>>),
}

impl Replay {
    fn next(&mut self) -> Option<RequestBody> {
        match self {
            Replay::Bytes(b) => Some(RequestBody::Full(Full::new(b.clone()))),
            Replay::Stream(s) => s.take().map(RequestBody::Stream),
        }
    }

    /// Whether there is a body to send again (a streamed one can go once).
    fn can_resend(&self) -> bool {
        !matches!(self, Replay::Stream(None))
    }

    /// Takes back a body that was not sent at all, so a streamed one can go to another instance.
    fn put_back(&mut self, body: RequestBody) {
        if let (Replay::Stream(slot), RequestBody::Stream(b)) = (self, body) {
            *slot = Some(b);
        }
    }
}

impl Proxy {
    /// Answers one client request that came over plain TCP: [`Proxy::serve_from`].
    pub async fn serve<B>(&self, req: Request<B>, peer: Option<SocketAddr>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_from(req, peer, false).await
    }

    /// Answers one client request, unmeasured ([`Proxy::handle`] is the listener's measured
    /// way): the instance's response, or a JSON error (a gRPC status for a gRPC request,
    /// [`GatewayError::respond`]), with the request's `X-Request-Id`. `peer` is the client's
    /// address, for `X-Forwarded-For` and address-sticky splits; `tls` says whether the client
    /// came over TLS (`X-Forwarded-Proto: https`).
    pub async fn serve_from<B>(&self, req: Request<B>, peer: Option<SocketAddr>, tls: bool) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let req = req.map(|b| Counted::new(b, None));
        self.answer(req, peer, tls, Instant::now(), &mut Trail::default()).await.0
    }

    /// Answers one client request as [`Proxy::serve_from`] does, and measures it: when the
    /// response body ends (or is dropped) the request is counted in the metrics and, if the
    /// access log is on, logged ([`observed`]). The clock starts here, as the head has arrived.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, peer: Option<SocketAddr>, tls: bool) -> Response<Observed>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let method = req.method().clone();
        let log = self.access.is_some().then(|| {
            Arc::new(Pending {
                client: peer,
                path: req.uri().path_and_query().cloned(),
                version: req.version(),
                bytes_in: AtomicU64::new(0),
            })
        });
        let req = req.map(|b| Counted::new(b, log.clone()));
        // Counted and logged (as 499) even if the client leaves before the answer.
        let mut waiting = Unanswered::new(self.clone(), start, method, log);
        let (resp, id) = self.answer(req, peer, tls, start, &mut waiting.trail).await;
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        Response::from_parts(parts, waiting.answered(body, status, id))
    }

    /// The answer and the request's ID (also in the answer's `X-Request-Id`). A failure is
    /// logged here, once: at WARN for the gateway's own 5xx, at debug for a refusal.
    ///
    /// The ID is settled while the instance's request headers are copied
    /// ([`headers::upstream_headers`]): the client's headers are read once, and never grown.
    /// A request that goes to no instance gets it here.
    ///
    /// `start` is when the request's head arrived: the response deadline counts from it
    /// ([`Proxy::route`]), so the request path reads the clock once.
    async fn answer<B>(
        &self,
        req: Request<Counted<B>>,
        peer: Option<SocketAddr>,
        tls: bool,
        start: Instant,
        trail: &mut Trail,
    ) -> (Response<ResponseBody>, http::HeaderValue)
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        // gRPC runs over HTTP/2 only: an HTTP/1.1 request pays a version compare.
        let grpc = parts.version == http::Version::HTTP_2 && headers::is_grpc(&parts.headers);
        let result = self.route(&mut parts, body, peer, tls, grpc, start, trail).await;
        let id = trail.request_id.take().unwrap_or_else(|| request_id::of_client(&parts.headers));
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                failed(&e, trail, &id);
                e.respond(grpc, &id).map(Either::Right)
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
        (resp, id)
    }

    /// The response deadline counts from `start` (the head's arrival), or from when a body that
    /// had to be read first (to be buffered for a resend) was read.
    #[allow(clippy::too_many_arguments)]
    async fn route<B>(
        &self,
        parts: &mut http::request::Parts,
        body: B,
        peer: Option<SocketAddr>,
        tls: bool,
        grpc: bool,
        start: Instant,
        trail: &mut Trail,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        // Hostile and malformed requests go no further ([`guard`]). An absolute-form request's
        // authority wins over its Host header (RFC 9112 §3.2.2), for matching and for what is
        // forwarded; it is rare, so its header value is made on demand.
        let named = guard::check(parts, &parts.headers, &body, self.max_uri_bytes)?;
        let client_host = named.as_ref().map(guard::HostValue::get);
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let host = client_host.map(|h| h.as_bytes());
        if rewrite::has_dot_segment(parts.uri.path()) {
            return Err(GatewayError::DotSegment { path: parts.uri.path().to_string() });
        }
        let route = self.services.table().lookup(host, parts.uri.path()).cloned();
        let Some(route) = route else {
            return Err(GatewayError::NoRoute { path: parts.uri.path().to_string() });
        };
        let route: &Route = trail.route.insert(route);
        let service = route.service.as_str();
        if let Some(redirect) = route.spec.as_ref().and_then(|s| s.redirect.as_ref()) {
            return Ok(redirect_response(redirect, path_and_query));
        }
        let set = self
            .services
            .set_or_fetch(&route.slot)
            .await
            .map_err(|reason| GatewayError::DiscoveryUnavailable { service: service.to_string(), reason })?;
        let no_instance = || GatewayError::NoInstance { service: service.to_string() };
        // The set is swapped before the table: a set without this route's tag means the route is
        // on its way out (its instances dropped the tag), so it answers as the new table will.
        let Some(choice) = set.candidates(route.tag.as_deref()) else {
            return Err(GatewayError::NoRoute { path: parts.uri.path().to_string() });
        };
        let route_h2 = choice.protocol == Protocol::H2c;
        let (candidates, cookie) = split::choose(route, choice, &parts.headers, peer);
        if candidates.is_empty() {
            return Err(no_instance());
        }
        let (rest, stripped) = rewrite::upstream_path(route, path_and_query);
        let prefix = if stripped { route.forwarded_prefix.as_ref() } else { None };
        let uri = Uri::try_from(rest)
            .map_err(|e| GatewayError::BadRequest { service: service.to_string(), reason: e.to_string() })?;
        let idempotent = is_idempotent(&parts.method);
        // hyper hands over the client's connection only for a request it saw as an upgrade (and
        // on a connection served with upgrades); without it, this is an ordinary request.
        let mut client_upgrade = if headers::is_upgrade_request(parts.version, &parts.headers) {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        let upgrade = client_upgrade.is_some();
        let (mut body, read) = self.replayable(service, body).await?;
        // The clock is read again only when the body was read first (what it was before the
        // head's arrival was reused): an upload's time is not the instance's.
        let from = if read { tokio::time::Instant::now() } else { tokio::time::Instant::from_std(start) };
        let deadline = from + self.response_wait(parts);
        let upstream_failed = |reason: String| GatewayError::Upstream { service: service.to_string(), reason };
        let mut tried = [0usize; MAX_ATTEMPTS];
        let mut attempts = 0;
        let policy = candidates.policy().unwrap_or_else(|| self.services.balance());
        loop {
            let Some((i, endpoint)) = candidates.pick(&tried[..attempts], policy) else {
                return Err(upstream_failed("every instance refused the connection".into()));
            };
            tried[attempts] = i;
            attempts += 1;
            // Counted until the response ends (the body holds it) or this attempt fails.
            let mut in_flight = (policy == Balance::LeastRequest).then(|| balancer::InFlight::start(endpoint));
            // Kept for the access log; a failure notes its instance itself (`at`): the clone
            // touches a reference count every worker shares.
            if self.access.is_some() {
                trail.instance = Some(endpoint.authority.clone());
            }
            let host = rewrite::upstream_host(route, &endpoint.host, client_host);
            // Fixed when the set was built: the route's `proto=`, or the instance's metadata.
            let h2 = route_h2 || endpoint.protocol == Protocol::H2c;
            // A pooled connection first; after a failure on one, a new connection.
            let mut reuse = true;
            let error = loop {
                let Some(req_body) = body.next() else {
                    return Err(at(
                        &mut trail.instance,
                        endpoint,
                        upstream_failed("connection failed and the streamed body cannot be resent".into()),
                    ));
                };
                // Built per attempt from the client's headers: one copy each, and none kept for
                // a retry that rarely comes.
                let mut upstream = Request::new(req_body);
                *upstream.method_mut() = parts.method.clone();
                *upstream.uri_mut() = uri.clone();
                *upstream.headers_mut() =
                    upstream_headers(&parts.headers, &parts.uri, peer, host, prefix, &mut trail.request_id);
                if tls {
                    headers::forwarded_https(upstream.headers_mut());
                }
                // The deadline bounds the response headers only: a long stream is not cut.
                // An upgrade goes over HTTP/1.1 whatever the route says (HTTP/2 has no Upgrade,
                // RFC 9113 §8.2.2); upgrades and HTTP/2 are boxed: rarer here, and they would
                // make every request's future larger.
                use futures_util::future::Either as Which;
                let sent = if upgrade {
                    headers::add_upgrade(&parts.headers, upstream.headers_mut());
                    let connect = self.timeouts.connect;
                    Which::Left(Which::Left(Box::pin(upstream::upgrade::send(
                        &endpoint.pool,
                        upstream,
                        connect,
                        &self.metrics,
                    ))))
                } else if h2 {
                    upstream::h2::into_h2(&mut upstream, &endpoint.authority, headers::te_trailers(&parts.headers));
                    Which::Left(Which::Right(Box::pin(upstream::h2::send(
                        &endpoint.pool,
                        upstream,
                        self.timeouts,
                        reuse,
                        &self.metrics,
                    ))))
                } else {
                    Which::Right(upstream::send(&endpoint.pool, upstream, self.timeouts, reuse, &self.metrics))
                };
                let Failed { error, unsent, reused } = match tokio::time::timeout_at(deadline, sent).await {
                    Err(_) => {
                        return Err(at(
                            &mut trail.instance,
                            endpoint,
                            GatewayError::Timeout { service: service.to_string() },
                        ))
                    }
                    Ok(Ok(mut resp)) => {
                        // Not moved through a tuple: the response is large, and `random` pays for
                        // every copy.
                        if let Some(counted) = in_flight.take() {
                            resp.body_mut().hold(counted);
                        }
                        match client_upgrade.take() {
                            Some(client) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                                let idle = self.tunnel_idle_timeout;
                                let open = self.metrics.open(Open::Tunnel);
                                let mut resp =
                                    tunnel::relay(client, resp, idle, service, endpoint.authority.as_str(), open);
                                if let Some(c) = cookie {
                                    split::set_cookie(resp.headers_mut(), c);
                                }
                                return Ok(resp);
                            }
                            // A protocol switch nobody asked for (RFC 9110 §15.2.2: a server switches
                            // only to what the request's Upgrade names): the client could do nothing
                            // with it, so it is the instance's failure. Not sent again: it answered.
                            _ if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                                let why = "answered 101 Switching Protocols to a request that asked for no upgrade";
                                return Err(at(
                                    &mut trail.instance,
                                    endpoint,
                                    upstream_failed(format!("{}: {why}", endpoint.authority)),
                                ));
                            }
                            _ => {
                                // An instance that dies mid-call: the gRPC client gets UNAVAILABLE.
                                if h2 && !upgrade && grpc {
                                    resp.body_mut().grpc_unavailable_on_error();
                                }
                                return Ok(into_downstream(resp, cookie));
                            }
                        }
                    }
                    Ok(Err(failed)) => failed,
                };
                if error.is_connect() {
                    self.metrics.connect_failure(service);
                }
                // Nothing sent, or an HTTP/2 instance says it did not process it: any request
                // may go again. Sent but unanswered, or answered with garbage on a reused
                // connection (bytes a previous response left): only an idempotent one.
                let leftovers = reused && error.is_malformed_response();
                let unanswered = error.closed_before_response() || leftovers;
                let may_resend = unsent.is_some() || (idempotent && unanswered) || error.unprocessed();
                if !may_resend {
                    return Err(at(
                        &mut trail.instance,
                        endpoint,
                        upstream_failed(format!("{}: {}", endpoint.authority, error.detail())),
                    ));
                }
                let reason = if error.unprocessed() {
                    RetryReason::Unprocessed
                } else if unsent.is_some() {
                    RetryReason::ConnectFailed
                } else {
                    RetryReason::NoResponse
                };
                if let Some(req) = unsent {
                    body.put_back(req.into_body());
                }
                if !reused {
                    break (error, reason);
                }
                if !body.can_resend() {
                    let detail = error.detail();
                    let why = "on a reused connection, and the streamed body cannot be sent again";
                    return Err(at(
                        &mut trail.instance,
                        endpoint,
                        upstream_failed(format!("{}: {detail} ({why})", endpoint.authority)),
                    ));
                }
                debug!(service, instance = %endpoint.authority, request_id = %trail.request_id.as_ref().map_or("-", id_text), error = error.detail(), "reused connection failed; again on a new one");
                self.metrics.retry(service, RetryReason::ReusedConnectionClosed);
                trail.retries += 1;
                reuse = false;
            };
            let (error, reason) = error;
            endpoint.eject();
            self.metrics.ejection(service);
            trail.instance = Some(endpoint.authority.clone());
            let (what, detail) = (error.summary(), error.detail());
            // The last failure is the request's, logged once with it (`failed`).
            if attempts >= MAX_ATTEMPTS.min(candidates.len()) {
                return Err(upstream_failed(format!("{what} ({}): {detail}", endpoint.authority)));
            }
            warn!(service, instance = %endpoint.authority, request_id = %trail.request_id.as_ref().map_or("-", id_text), error = detail, "{what}; trying another instance");
            self.metrics.retry(service, reason);
            trail.retries += 1;
        }
    }

    /// How long the instance may take to send its response headers: `--upstream-timeout`, or a
    /// gRPC client's own deadline (`grpc-timeout`, only over HTTP/2) when that is longer. A gRPC
    /// server sends its headers with its first message, so a call that streams its first
    /// message late (a watch) has not failed; the instance enforces the client's deadline.
    fn response_wait(&self, parts: &http::request::Parts) -> Duration {
        if parts.version != http::Version::HTTP_2 {
            return self.timeout;
        }
        let client = parts.headers.get(&headers::GRPC_TIMEOUT).and_then(headers::grpc_timeout);
        client.map_or(self.timeout, |d| d.max(self.timeout))
    }

    /// The body, ready to be sent (again), and whether it was read (awaited) to get it there.
    ///
    /// A body of unknown length (chunked) is read ahead as far as it has arrived ([`ahead`]): a
    /// malformed one is refused before any instance is chosen.
    async fn replayable<B>(&self, service: &str, body: B) -> Result<(Replay, bool), GatewayError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return Ok((Replay::Bytes(Bytes::new()), false));
        }
        match body.size_hint().exact() {
            Some(n) if n <= self.max_replay_body => {
                let bytes = body.collect().await.map_err(|e| GatewayError::BadRequest {
                    service: service.to_string(),
                    reason: e.into().to_string(),
                })?;
                Ok((Replay::Bytes(bytes.to_bytes()), true))
            }
            Some(_) => Ok((Replay::Stream(Some(UnsyncBoxBody::new(body.map_err(Into::into)))), false)),
            None => match ahead::read(body, self.timeout, self.max_replay_body).await? {
                Ahead::Whole(bytes) => Ok((Replay::Bytes(bytes), true)),
                Ahead::Started(body) => Ok((Replay::Stream(Some(UnsyncBoxBody::new(body.map_err(Into::into)))), true)),
            },
        }
    }
}

/// `e`, noting (in a [`Trail`]'s `instance`) that it happened at `endpoint`.
fn at(instance: &mut Option<http::uri::Authority>, endpoint: &balancer::Endpoint, e: GatewayError) -> GatewayError {
    *instance = Some(endpoint.authority.clone());
    e
}

/// Logs a request the gateway answered with an error of its own, once: a 5xx at WARN with the
/// route, service, last instance tried and request ID (the JSON body carries the ID too); a
/// refusal (no route, bad request) at debug.
fn failed(e: &GatewayError, trail: &Trail, id: &http::HeaderValue) {
    let request_id = id_text(id);
    let route = trail.route.as_ref().map(|r| &*r.labels.route);
    let instance = trail.instance.as_ref().map(|a| a.as_str());
    let service = e.service();
    match e {
        GatewayError::Upstream { reason, .. } | GatewayError::DiscoveryUnavailable { reason, .. } => {
            warn!(route, service, instance, %request_id, reason, "{e}")
        }
        GatewayError::NoInstance { .. } | GatewayError::Timeout { .. } => {
            warn!(route, service, instance, %request_id, "{e}")
        }
        _ => debug!(route, service, %request_id, error = %e, "request refused"),
    }
}

/// A request ID as log text: always visible ASCII ([`request_id::is_sane`]).
fn id_text(id: &http::HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

fn into_downstream(resp: Response<PooledBody>, cookie: Option<http::HeaderValue>) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(c) = cookie {
        split::set_cookie(&mut parts.headers, c);
    }
    Response::from_parts(parts, Either::Left(body))
}

/// A redirect route's answer: its status and `Location`, with an empty body.
fn redirect_response(redirect: &Redirect, path_and_query: &str) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::FOUND);
    let location = rewrite::location(redirect, path_and_query);
    let mut resp = Response::new(Either::Right(axum::body::Body::empty()));
    *resp.status_mut() = status;
    match http::HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

/// Methods a proxy may repeat after a failure (RFC 9110 §9.2.2), as nginx does by default.
fn is_idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// A proxy for unit tests: `services`, a 1 s connect timeout, 60 s idle connections, `timeout`
/// for the instance's answer, 1 KiB replayable bodies, no access log.
#[cfg(test)]
pub(crate) fn test_proxy(services: Arc<Services>, timeout: Duration) -> Proxy {
    Proxy {
        services,
        timeouts: Timeouts { connect: Duration::from_secs(1), idle: Duration::from_secs(60) },
        timeout,
        max_replay_body: 1024,
        tunnel_idle_timeout: Duration::from_secs(60),
        max_uri_bytes: 8192,
        metrics: Default::default(),
        access: None,
    }
}

#[cfg(test)]
mod balance_tests;
#[cfg(test)]
mod h2_tests;
#[cfg(test)]
mod tests;
