//! Upgrade requests to instances (RFC 9110 §7.8: WebSocket, or any protocol a client names): each
//! goes over a connection opened for it alone, whose task hyper runs `with_upgrades()`, so that
//! after a `101 Switching Protocols` the socket can be taken over for a tunnel
//! ([`hyper::upgrade::on`] on the response). Such a connection is never taken from the pool and
//! never goes back to it: after a `101` it carries another protocol, and after any other answer
//! it closes once that response has been read (the request handle is dropped here, so hyper ends
//! the connection when the response is done).
//!
//! Failures are reported as [`send`](super::send) reports them for a new connection: a refused
//! connect, or a connection closed before the request was written, hands the request back, so
//! the caller can try another instance before any `101`.

use std::time::Duration;

use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{Failed, Pool, PooledBody, RequestBody, UpstreamError};
use crate::observe::metrics::{Metrics, Open};

/// Sends the upgrade request `req` (origin-form URI, `Host`, `Connection: upgrade` and `Upgrade`
/// set) to `pool`'s instance over a new connection, opened within `connect_timeout`. The response
/// is the instance's answer: on a `101`, `hyper::upgrade::on` gives its socket; any other status
/// is an ordinary response, whose body closes the connection when read or dropped.
///
/// # Errors
/// [`Failed`] with `reused: false`: no connection (the request handed back), a connection closed
/// before the request was written (handed back too), or no response.
pub async fn send(
    pool: &Pool,
    req: Request<RequestBody>,
    connect_timeout: Duration,
    metrics: &Metrics,
) -> Result<Response<PooledBody>, Failed> {
    let not_sent = |error, req| Failed { error, unsent: Some(req), reused: false };
    let stream = match pool.tcp(connect_timeout).await {
        Ok(s) => s,
        Err(error) => return Err(not_sent(error, req)),
    };
    let (mut sender, conn) = match http1::Builder::new().handshake(TokioIo::new(stream)).await {
        Ok(h) => h,
        Err(e) => return Err(not_sent(UpstreamError::Connect(e.to_string()), req)),
    };
    let authority = pool.authority().to_string();
    let open = metrics.open(Open::Upstream);
    tokio::spawn(async move {
        let _open = open;
        // Ends when the response is done (any status but 101) or when the socket is handed over.
        if let Err(e) = conn.with_upgrades().await {
            debug!(instance = %authority, error = %e, "upstream upgrade connection ended with an error");
        }
    });
    match sender.try_send_request(req).await {
        Ok(resp) => Ok(resp.map(PooledBody::unpooled)),
        Err(mut e) => match e.take_message() {
            Some(back) => Err(not_sent(UpstreamError::Closed(e.into_error()), back)),
            None => Err(Failed { error: UpstreamError::Send(e.into_error()), unsent: None, reused: false }),
        },
    }
}
