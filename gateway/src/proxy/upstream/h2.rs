//! HTTP/2 cleartext to instances (h2c with prior knowledge, RFC 9113 §3.3), for the routes whose
//! tag says `proto=grpc` or `proto=h2c` and the instances whose `gateway-protocol` metadata says
//! `h2c` or `grpc` ([`crate::discovery::tag::Protocol`]).
//!
//! Each endpoint keeps one multiplexed connection per worker thread (hyper's
//! `client::conn::http2`), as the HTTP/1.1 pool keeps one idle list per thread: the connection's
//! tasks run on the thread that opened it (the workers are single-threaded runtimes, so
//! `tokio::spawn` stays on it). Every request of that thread to that instance is a stream on it.
//! A connection that closed, or that the instance shut with `GOAWAY` (hyper then closes its
//! request channel once the open streams are done), is replaced by a new one on the next
//! request; only one request of a thread opens it, the others wait for it. A refused connect
//! hands the request back, for another instance ([`Failed::unsent`]).
//!
//! No HTTP/2 `PING` keep-alive is sent: gRPC servers count pings on a connection without data
//! as abuse (gRPC's `GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS`, 5 minutes by
//! default) and shut it with `GOAWAY ENHANCE_YOUR_CALM`, which would cut long streams.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::debug;

use super::pool::thread_slot;
use super::{Failed, Pool, PooledBody, RequestBody, Timeouts, UpstreamError};
use crate::observe::metrics::{Metrics, Open};

/// One endpoint's HTTP/2 connections, one per worker thread.
pub(crate) struct H2Slots {
    slots: Box<[Slot]>,
}

/// One worker thread's connection to the instance, and the lock that lets only one request of
/// that thread open it.
#[derive(Default)]
struct Slot {
    conn: Mutex<Option<SendRequest<RequestBody>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<SendRequest<RequestBody>>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection, if any (a handle to it: they are cheap clones of a channel).
    fn current(&self) -> Option<SendRequest<RequestBody>> {
        self.lock().as_ref().filter(|s| !s.is_closed()).cloned()
    }
}

impl H2Slots {
    /// No connection yet, for `workers` threads.
    pub(crate) fn new(workers: usize) -> Self {
        Self { slots: (0..workers.max(1)).map(|_| Slot::default()).collect() }
    }

    /// The calling thread's slot.
    fn mine(&self) -> &Slot {
        &self.slots[thread_slot() % self.slots.len()]
    }

    /// How many connections are open, over all threads.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        self.slots.iter().filter(|s| s.current().is_some()).count()
    }

    /// Drops the handles of connections that closed.
    pub(crate) fn forget_closed(&self) {
        for s in self.slots.iter() {
            let mut conn = s.lock();
            if conn.as_ref().is_some_and(SendRequest::is_closed) {
                *conn = None;
            }
        }
    }
}

/// Makes `req` (origin-form URI, headers from [`crate::proxy::headers::upstream_headers`]) an
/// HTTP/2 request: the `Host` header becomes the `:authority` (RFC 9113 §8.3.1), with
/// `fallback` (the instance's `address:port`) when it is not a valid authority; the scheme is
/// `http`. `te: trailers` is set when the client sent it (gRPC servers require it; RFC 9113
/// §8.2.2 allows no other `TE` value).
pub fn into_h2(req: &mut Request<RequestBody>, fallback: &Authority, client_te_trailers: bool) {
    let host = req.headers_mut().remove(header::HOST);
    let authority = host.and_then(|h| Authority::try_from(h.as_bytes()).ok()).unwrap_or_else(|| fallback.clone());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Scheme, authority and path are all set: this cannot fail.
    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    if client_te_trailers {
        req.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Sends `req` (see [`into_h2`]) on the calling thread's HTTP/2 connection to `pool`'s instance,
/// or on a new one (always when `reuse` is false, replacing the old). The response body streams
/// as the instance sends it, trailers included; it holds no connection.
///
/// # Errors
/// [`Failed`], as [`super::send`]: no connection (with the request), or no response. A request
/// the open connection could not take (it was closing) goes on a new connection first.
pub async fn send(
    pool: &Arc<Pool>,
    mut req: Request<RequestBody>,
    timeouts: Timeouts,
    mut reuse: bool,
    metrics: &Metrics,
) -> Result<Response<PooledBody>, Failed> {
    let slot = pool.h2.mine();
    loop {
        let (mut sender, reused) = match reuse.then(|| slot.current()).flatten() {
            Some(s) => (s, true),
            None => match Box::pin(connect(pool, slot, timeouts.connect, reuse, metrics)).await {
                Ok(s) => s,
                Err(error) => return Err(Failed { error, unsent: Some(req), reused: false }),
            },
        };
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp.map(PooledBody::unpooled)),
            Err(mut e) => match e.take_message() {
                // Not sent: the connection was going away. Once more, on a new one.
                Some(back) if reused => {
                    req = back;
                    reuse = false;
                }
                Some(back) => {
                    return Err(Failed { error: UpstreamError::Closed(e.into_error()), unsent: Some(back), reused })
                }
                None => return Err(Failed { error: UpstreamError::Send(e.into_error()), unsent: None, reused }),
            },
        }
    }
}

/// Opens the thread's connection, unless another request did while this one waited (and
/// `reuse` allows taking it). Returns the handle and whether it was opened by someone else.
async fn connect(
    pool: &Pool,
    slot: &Slot,
    timeout: Duration,
    reuse: bool,
    metrics: &Metrics,
) -> Result<(SendRequest<RequestBody>, bool), UpstreamError> {
    let _connecting = slot.connecting.lock().await;
    if let Some(s) = reuse.then(|| slot.current()).flatten() {
        return Ok((s, true));
    }
    let handshake = async {
        let stream = pool.tcp(timeout).await?;
        http2::Builder::new(TokioExecutor::new())
            .handshake::<_, RequestBody>(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))
    };
    let (sender, conn) = match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r?,
        Err(_) => return Err(UpstreamError::Connect(format!("no HTTP/2 connection within {timeout:?}"))),
    };
    let authority = pool.authority().to_string();
    let open = metrics.open(Open::Upstream);
    tokio::spawn(async move {
        let _open = open;
        match conn.await {
            Ok(()) => debug!(instance = %authority, "HTTP/2 upstream connection closed"),
            Err(e) => debug!(instance = %authority, error = %e, "HTTP/2 upstream connection ended with an error"),
        }
    });
    *slot.lock() = Some(sender.clone());
    Ok((sender, false))
}

#[cfg(test)]
mod tests;
