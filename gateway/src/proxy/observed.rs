//! What the request path tells the metrics and the access log about each request: the route it
//! matched, the instances it tried ([`Trail`]), and, once its response body has ended or been
//! dropped, how long it took and how many bytes went each way ([`Observed`], the response body
//! every client gets through the listener).
//!
//! With the access log off this costs a clock read at each end, one small allocation (the
//! record, boxed so that hyper's moves of the body stay cheap), and one call into the metrics;
//! nothing is formatted. With it on, the access log's part of the record and a counter for the
//! request body's bytes ([`Counted`]) are allocated too.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Version};
use hyper::body::{Body, Frame, SizeHint};

use super::{Proxy, ResponseBody};
use crate::discovery::routes::Route;
use crate::observe::access::Record;

/// What the request path learned about a request while answering it.
#[derive(Default)]
pub struct Trail {
    /// The route it matched (`None`: none did).
    pub route: Option<Arc<Route>>,
    /// The last instance tried.
    pub instance: Option<Authority>,
    /// Attempts after the first.
    pub retries: u32,
    /// The request's ID, once settled (when the first upstream request was made).
    pub request_id: Option<HeaderValue>,
}

/// A request body that counts the bytes read from the client (into the access log's share of
/// the record, shared with the response's [`Observed`]), when the access log wants them.
pub struct Counted<B> {
    inner: B,
    count: Option<Arc<Pending>>,
}

impl<B> Counted<B> {
    /// `inner`, counted into `count` if any.
    pub fn new(inner: B, count: Option<Arc<Pending>>) -> Self {
        Self { inner, count }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(count), Poll::Ready(Some(Ok(frame)))) = (&self.count, &polled) {
            if let Some(data) = frame.data_ref() {
                count.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The access log's share of a request, taken when its head arrives.
pub struct Pending {
    /// The client's address.
    pub client: Option<std::net::SocketAddr>,
    /// The path and query as sent.
    pub path: Option<PathAndQuery>,
    /// The client's HTTP version.
    pub version: Version,
    /// Request body bytes read so far.
    pub bytes_in: AtomicU64,
}

/// A response body on its way to the client; when it ends or is dropped, the request is counted
/// ([`crate::observe::metrics::Metrics::request_done`]) and logged (if the access log is on).
pub struct Observed {
    inner: ResponseBody,
    /// Boxed: hyper moves the body several times per response, and a pointer is cheaper to
    /// move than the record (one small allocation costs less than those copies).
    done: Option<Box<Done>>,
}

/// Everything needed to report the request, once.
struct Done {
    proxy: Arc<Proxy>,
    start: Instant,
    method: Method,
    status: u16,
    trail: Trail,
    request_id: HeaderValue,
    bytes_out: u64,
    log: Option<Arc<Pending>>,
}

impl Observed {
    /// Wraps `inner`, to be reported through `proxy` when it ends.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        inner: ResponseBody,
        proxy: Arc<Proxy>,
        start: Instant,
        method: Method,
        status: u16,
        trail: Trail,
        request_id: HeaderValue,
        log: Option<Arc<Pending>>,
    ) -> Self {
        let done = Done { proxy, start, method, status, trail, request_id, bytes_out: 0, log };
        Self { inner, done: Some(Box::new(done)) }
    }

    fn finish(&mut self) {
        let Some(mut d) = self.done.take() else { return };
        let duration = d.start.elapsed();
        let labels = d.trail.route.as_ref().map(|r| &r.labels);
        d.proxy.metrics.request_done(labels, &d.method, d.status, duration);
        let (Some(log), Some(access)) = (d.log.take(), d.proxy.access.as_ref()) else { return };
        access.log(Record {
            time: SystemTime::now(),
            client: log.client,
            method: d.method.clone(),
            path: log.path.clone(),
            version: log.version,
            status: d.status,
            bytes_in: log.bytes_in.load(Ordering::Relaxed),
            bytes_out: d.bytes_out,
            duration,
            route: labels.map(|l| l.route.clone()),
            service: labels.map(|l| l.service.clone()),
            instance: d.trail.instance.take(),
            retries: d.trail.retries,
            request_id: d.request_id.clone(),
        });
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(data)) = (self.done.as_mut(), frame.data_ref()) {
                    d.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A request whose answer is not ready yet. If the client goes away first (hyper drops the
/// request's future: a closed HTTP/1.1 connection, an HTTP/2 `RST_STREAM`), the request is still
/// counted and logged when this is dropped, with status 499 (nginx's "client closed request"),
/// and with what was learned so far (route, last instance, retries, request ID).
pub struct Unanswered {
    /// `None` once answered: the response body reports the request then.
    proxy: Option<Arc<Proxy>>,
    start: Instant,
    method: Method,
    /// What the request path learned so far.
    pub trail: Trail,
    log: Option<Arc<Pending>>,
}

/// The status a request the client gave up on is counted and logged with (nginx's).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Unanswered {
    /// A request whose head arrived at `start`.
    pub(super) fn new(proxy: Arc<Proxy>, start: Instant, method: Method, log: Option<Arc<Pending>>) -> Self {
        Self { proxy: Some(proxy), start, method, trail: Trail::default(), log }
    }

    /// The answer came: from now on its body reports the request, when it ends.
    pub(super) fn answered(mut self, body: ResponseBody, status: u16, request_id: HeaderValue) -> Observed {
        let method = std::mem::replace(&mut self.method, Method::GET);
        let trail = std::mem::take(&mut self.trail);
        // Set by `new`, taken only here (which consumes it) or when it is dropped unanswered.
        let proxy = self.proxy.take().unwrap_or_else(|| unreachable!("an Unanswered is answered once"));
        Observed::new(body, proxy, self.start, method, status, trail, request_id, self.log.take())
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(proxy) = self.proxy.take() else { return };
        let id = self.trail.request_id.take().unwrap_or_else(crate::observe::request_id::generate);
        let trail = std::mem::take(&mut self.trail);
        let method = std::mem::replace(&mut self.method, Method::GET);
        let body = http_body_util::Either::Right(axum::body::Body::empty());
        let status = CLIENT_CLOSED_REQUEST;
        // Dropped at once: counted and logged like any response that ended.
        drop(Observed::new(body, proxy, self.start, method, status, trail, id, self.log.take()));
    }
}

#[cfg(test)]
mod tests;
