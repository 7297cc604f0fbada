//! Connections to instances: one pool of idle HTTP/1.1 keep-alive connections per endpoint,
//! built on hyper's connection-level client (`hyper::client::conn::http1`); and for the routes and
//! instances that ask for HTTP/2 cleartext, one multiplexed connection per endpoint and worker
//! thread ([`h2`]).
//!
//! Why not hyper-util's pooled `Client`: per request it hashes the scheme and authority into a
//! shared pool map twice (check-out and check-in), spawns a task that waits for the connection to
//! be reusable, and wraps the response body; under callgrind that was ~6k of the ~41k
//! instructions the gateway spent per proxied request. Here the pool belongs to the
//! [`Endpoint`](crate::balancer::Endpoint) the balancer already picked, so a check-out is a
//! `Vec::pop` under an uncontended lock, and the connection goes back when the response body
//! has been read to its end ([`PooledBody`]). When an endpoint leaves the registry its idle
//! connections are dropped with it, which closes them.
//!
//! With several worker threads ([`crate::workers`]) each endpoint keeps one list of idle
//! connections per thread: a connection is driven by a task on the thread that opened it, and
//! using it from another thread would cost two cross-thread wake-ups per request.
//!
//! A pooled connection is reused only when it is still at a clean message boundary: hyper holds
//! no half-read response on it, and the socket has nothing unread and no end of stream
//! ([`io::Probe`]). Bytes past the end of a response (a stray body after a `204` or `304`, or
//! more than `Content-Length` said) or a close by the instance make the connection unusable, and
//! it is closed instead. A connection is also never reused once it sat idle for the
//! [`Timeouts::idle`] limit, or for less than the instance's own `Keep-Alive: timeout=N`, so that
//! it is closed before the instance closes it; and never after a response whose framing is
//! suspect, such as a `204` that declares a body, nor after a `HEAD` ([`reuse`]).
//!
//! A request that a pooled connection could not even start (the instance closed it while it sat
//! idle) is handed back by hyper and sent again on another connection, whatever its method:
//! nothing reached the instance. A failure on a reused connection is reported as such
//! ([`Failed::reused`]): it says nothing about the instance, and the caller may send the request
//! again on a new connection to the same instance.
//!
//! Upgrade requests (WebSocket...) never use the pool: each goes over a connection of its own
//! ([`upgrade`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::observe::metrics::{Metrics, Open};
use crate::proxy::balancer::InFlight;

pub mod h2;
mod io;
mod pool;
pub mod reuse;
pub mod suspect;
pub mod upgrade;
use pool::Conn;
pub use pool::{set_thread_slot, thread_slot, Pool, MAX_IDLE_PER_WORKER};

/// Boxed errors of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as sent upstream: bytes in hand (empty, or buffered so that the request can be
/// sent again), or a stream that can be sent once.
pub enum RequestBody {
    /// The whole body (possibly empty).
    Full(Full<Bytes>),
    /// A body streamed from the client.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            RequestBody::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full(b) => b.is_end_stream(),
            RequestBody::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(b) => b.size_hint(),
            RequestBody::Stream(b) => b.size_hint(),
        }
    }
}

/// How connections to instances are opened and how long they may be reused.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long opening a connection may take.
    pub connect: Duration,
    /// A connection idle this long is closed rather than reused (zero: never reused).
    pub idle: Duration,
}

/// Why a request did not get a response from an instance.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened: refused, unreachable, or not within the connect timeout.
    /// Nothing was sent.
    #[error("connect failed: {0}")]
    Connect(String),
    /// A new connection closed before the request was written. Nothing was sent.
    #[error("connection closed before the request was sent: {0}")]
    Closed(#[source] hyper::Error),
    /// The connection failed after the request was (possibly partly) sent and before a response
    /// arrived, or the response was malformed.
    #[error("{0}")]
    Send(#[source] hyper::Error),
}

/// A request that got no response: why, and the request itself when none of it was sent, so
/// that it can go to another instance, a streamed body included.
pub struct Failed {
    /// What went wrong.
    pub error: UpstreamError,
    /// The request, if nothing of it reached the instance.
    pub unsent: Option<Request<RequestBody>>,
    /// Whether it failed on a connection reused from the pool, which the instance may have been
    /// closing as the request went out: no sign that the instance is down.
    pub reused: bool,
}

impl std::fmt::Debug for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failed")
            .field("error", &self.error)
            .field("unsent", &self.unsent.is_some())
            .field("reused", &self.reused)
            .finish()
    }
}

impl UpstreamError {
    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// What failed, in a few words.
    pub fn summary(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect failed",
            UpstreamError::Closed(_) => "connection closed before the request was sent",
            UpstreamError::Send(_) => "connection closed before a response",
        }
    }

    /// The cause on one line, with hyper's sources (its top-level messages alone are vague).
    pub fn detail(&self) -> String {
        let e = match self {
            UpstreamError::Connect(e) => return e.clone(),
            UpstreamError::Closed(e) | UpstreamError::Send(e) => e,
        };
        let mut s = e.to_string();
        let mut cur = std::error::Error::source(e);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }

    /// Whether an HTTP/2 instance said it did not process the request (RFC 9113 §8.7): it
    /// refused the stream (`REFUSED_STREAM`), or a graceful `GOAWAY` left the stream out
    /// (§6.8: streams above its last stream ID were not processed). Any request may go again.
    pub fn unprocessed(&self) -> bool {
        let UpstreamError::Send(e) = self else { return false };
        let h2 = std::error::Error::source(e).and_then(|s| s.downcast_ref::<::h2::Error>());
        h2.is_some_and(|h| {
            h.is_remote()
                && (h.reason() == Some(::h2::Reason::REFUSED_STREAM)
                    || (h.is_go_away() && h.reason() == Some(::h2::Reason::NO_ERROR)))
        })
    }

    /// Whether what came back was not an HTTP response. On a reused connection that is most
    /// likely bytes the instance left after its previous response, not its answer to this request.
    pub fn is_malformed_response(&self) -> bool {
        matches!(self, UpstreamError::Send(e) if e.is_parse() || e.is_parse_status())
    }

    /// Whether the instance may have seen the request but certainly did not answer it: the
    /// connection closed or reset before a response. An idempotent request can be sent again.
    /// A malformed response is not such a case.
    pub fn closed_before_response(&self) -> bool {
        let UpstreamError::Send(e) = self else { return false };
        if e.is_parse() || e.is_user() || e.is_parse_status() {
            return false;
        }
        e.is_incomplete_message()
            || e.is_canceled()
            || e.is_closed()
            || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
    }
}

/// Sends `req` (origin-form URI, `Host` set) over one of `pool`'s idle connections (unless
/// `reuse` is false) or a new one. The response body gives the connection back to the pool once
/// it has been read to the end. Pooled connections are ready (see [`Pool::put`]); a new one
/// takes its first request before its task has run (hyper buffers it).
///
/// # Errors
/// [`Failed`]: no connection, or no response; with the request when none of it was sent, and
/// whether the connection was a reused one. A new connection counts in `metrics` as open
/// ([`Open::Upstream`]) until it closes.
pub async fn send(
    pool: &Arc<Pool>,
    mut req: Request<RequestBody>,
    timeouts: Timeouts,
    reuse: bool,
    metrics: &Metrics,
) -> Result<Response<PooledBody>, Failed> {
    loop {
        let (Conn { mut sender, probe, .. }, reused) = match reuse.then(|| pool.take(timeouts.idle)).flatten() {
            Some(c) => (c, true),
            // Boxed: connecting is rare, and its future would make every request's larger (moved
            // around by value, it costs copies on the hot path).
            None => match Box::pin(pool.connect(timeouts.connect, metrics.open(Open::Upstream))).await {
                Ok(c) => (c, false),
                Err(error) => return Err(Failed { error, unsent: Some(req), reused: false }),
            },
        };
        let head = req.method() == http::Method::HEAD;
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let max_idle = reuse::max_idle(head, resp.status(), resp.headers());
                let conn = Conn { sender, probe, max_idle };
                return Ok(resp.map(|inner| PooledBody::pooled(inner, Some((conn, pool.clone())))));
            }
            Err(mut e) => match e.take_message() {
                // Not sent: the instance had closed this pooled connection. Try the next one.
                Some(back) if reused => req = back,
                Some(back) => {
                    let error = UpstreamError::Closed(e.into_error());
                    return Err(Failed { error, unsent: Some(back), reused });
                }
                None => {
                    let error = UpstreamError::Send(e.into_error());
                    // On a reused connection, most likely bytes the previous response left.
                    if reused && error.is_malformed_response() {
                        pool.caught("an answer that is not HTTP");
                    }
                    return Err(Failed { error, unsent: None, reused });
                }
            },
        }
    }
}

/// A response body from an instance. Read to its end, it gives its connection back to the pool;
/// dropped earlier, it closes the connection, which still carries the rest of the response.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(Conn, Arc<Pool>)>,
    /// What a read error becomes: the error itself (the client's stream or connection is reset),
    /// or, for a gRPC call, trailers saying `UNAVAILABLE` ([`PooledBody::grpc_unavailable_on_error`]).
    on_error: OnError,
    /// A `least-request` route's count of requests in flight to the instance, released when the
    /// body ends or is dropped.
    in_flight: Option<InFlight>,
}

/// See [`PooledBody::grpc_unavailable_on_error`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnError {
    Fail,
    GrpcUnavailable,
    /// The gRPC trailers were sent: the body has ended.
    Ended,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pooled", &self.conn.is_some()).finish()
    }
}

impl PooledBody {
    /// A body that holds no pooled connection (an HTTP/2 stream's: its connection is shared).
    pub(crate) fn unpooled(inner: Incoming) -> Self {
        Self { inner, conn: None, on_error: OnError::Fail, in_flight: None }
    }

    /// A body on a pooled connection (given back once read to its end).
    fn pooled(inner: Incoming, conn: Option<(Conn, Arc<Pool>)>) -> Self {
        Self { inner, conn, on_error: OnError::Fail, in_flight: None }
    }

    /// Makes a read error (the instance died or reset the stream mid-response) end the body with
    /// gRPC trailers `grpc-status: 14` (`UNAVAILABLE`) and a `grpc-message`, instead of resetting
    /// the client's stream, which gRPC clients report as `INTERNAL`. `UNAVAILABLE` is what a gRPC
    /// client reports itself when its own connection drops mid-call, and what its retry policies
    /// expect (gRPC's "Status codes and their use in gRPC").
    pub(crate) fn grpc_unavailable_on_error(&mut self) {
        self.on_error = OnError::GrpcUnavailable;
    }

    /// Keeps `in_flight` until the body ends or is dropped.
    pub(crate) fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    fn release(&mut self) {
        self.in_flight = None;
        if let Some((conn, pool)) = self.conn.take() {
            if !conn.max_idle.is_zero() {
                conn.probe.ack_now();
            }
            pool.put(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.on_error == OnError::Ended {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Err(e)) if self.on_error == OnError::GrpcUnavailable => {
                self.conn = None;
                self.on_error = OnError::Ended;
                return Poll::Ready(Some(Ok(Frame::trailers(grpc_unavailable(e)))));
            }
            Some(Err(_)) => self.conn = None,
            Some(Ok(_)) if !self.inner.is_end_stream() => {}
            _ => self.release(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.on_error == OnError::Ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Trailers for a gRPC call whose instance failed mid-response: `grpc-status: 14` and a
/// `grpc-message` (percent-encoded as gRPC's HTTP/2 protocol says; the text here is ASCII with no
/// `%`, so it needs no encoding).
fn grpc_unavailable(e: &hyper::Error) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", http::HeaderValue::from_static("14"));
    let message = format!("upstream failed mid-response: {e}")
        .replace(|c: char| !c.is_ascii_graphic() && c != ' ' || c == '%', " ");
    if let Ok(v) = http::HeaderValue::from_str(&message) {
        t.insert("grpc-message", v);
    }
    t
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A server stops polling a body once it reports its end, so the last frame may not be
        // followed by another poll: dropping a complete body is where the connection goes back.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests;
