//! The tunnel after a `101 Switching Protocols`: the client's connection and the instance's,
//! both handed over by hyper ([`hyper::upgrade::on`]), joined byte for byte in both directions
//! until either side closes. An end of stream from one side is passed on as a shutdown of the
//! other's write half (half-close), and the tunnel ends when both directions have ended, on an
//! error, or after [`Proxy::tunnel_idle_timeout`](crate::proxy::Proxy) with no byte either way.
//!
//! The gateway does not look inside: WebSocket frames, pings and close handshakes are the
//! client's and the instance's business. A graceful shutdown of the gateway does not wait for
//! tunnels (they end with the process).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use http_body_util::Either;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

use super::headers::switching_protocols;
use super::upstream::PooledBody;
use super::ResponseBody;
use crate::observe::metrics::OpenGuard;

/// Answers the client with the instance's `101` (its `Upgrade`, `Connection: upgrade` and other
/// end-to-end headers) and starts the tunnel, which begins once hyper has written that answer
/// (`client`) and handed over the instance's connection (from `resp`). `service` and `instance`
/// name the tunnel in the log; `open` counts it as open until it ends.
pub fn relay(
    client: OnUpgrade,
    mut resp: Response<PooledBody>,
    idle_timeout: Duration,
    service: &str,
    instance: &str,
    open: OpenGuard,
) -> Response<ResponseBody> {
    let upstream = hyper::upgrade::on(&mut resp);
    let (service, instance) = (service.to_string(), instance.to_string());
    tokio::spawn(async move {
        let _open = open;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                debug!(service, instance, error = %e, "tunnel not opened");
                return;
            }
        };
        debug!(service, instance, "tunnel open");
        let ended = join(TokioIo::new(client), TokioIo::new(upstream), idle_timeout).await;
        match ended {
            Ended::Closed { to_upstream, to_client } => {
                debug!(service, instance, to_upstream, to_client, "tunnel closed")
            }
            Ended::Idle => debug!(service, instance, ?idle_timeout, "tunnel closed: idle"),
            Ended::Failed(e) => debug!(service, instance, error = %e, "tunnel closed on an error"),
        }
    });
    let (mut parts, body) = resp.into_parts();
    switching_protocols(&mut parts.headers);
    Response::from_parts(parts, Either::Left(body))
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum Ended {
    /// Both sides closed: the bytes carried each way.
    Closed {
        /// Client to instance.
        to_upstream: u64,
        /// Instance to client.
        to_client: u64,
    },
    /// Nothing went either way for the idle timeout.
    Idle,
    /// A read or write failed (a reset, typically).
    Failed(std::io::Error),
}

/// Copies between `client` and `upstream` both ways until both directions end (an end of stream
/// on one side shuts down the other's write half), one fails, or no byte was read from either
/// side for `idle_timeout`. Both are closed when this returns (dropped).
pub async fn join<C, U>(client: C, upstream: U, idle_timeout: Duration) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock { start: Instant::now(), last_ms: AtomicU64::new(0) };
    let mut client = Watched { io: client, clock: &clock };
    let mut upstream = Watched { io: upstream, clock: &clock };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let deadline = clock.last() + idle_timeout;
        tokio::select! {
            copied = &mut copy => return match copied {
                Ok((to_upstream, to_client)) => Ended::Closed { to_upstream, to_client },
                Err(e) => Ended::Failed(e),
            },
            () = tokio::time::sleep_until(deadline) => {
                // Bytes may have moved since the deadline was set: then wait for the new one.
                if clock.last() + idle_timeout <= Instant::now() {
                    return Ended::Idle;
                }
            }
        }
    }
}

/// When a tunnel last read a byte, in milliseconds since it opened.
struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// One side of a tunnel; every read that brings bytes counts as activity (each write follows a
/// read, so reads alone tell).
struct Watched<'a, T> {
    io: T,
    clock: &'a Clock,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_go_both_ways_and_a_half_close_is_passed_on() {
        let (client, mut client_end) = duplex(64);
        let (upstream, mut upstream_end) = duplex(64);
        let tunnel = tokio::spawn(join(client, upstream, Duration::from_secs(60)));
        client_end.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        upstream_end.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        upstream_end.write_all(b"pong").await.unwrap();
        client_end.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        // The client is done sending: the instance sees the end, and can still answer.
        client_end.shutdown().await.unwrap();
        assert_eq!(upstream_end.read(&mut buf).await.unwrap(), 0, "end of stream passed on");
        upstream_end.write_all(b"last").await.unwrap();
        client_end.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"last");
        drop(upstream_end);
        let ended = tokio::time::timeout(Duration::from_secs(5), tunnel).await.unwrap().unwrap();
        assert!(matches!(ended, Ended::Closed { to_upstream: 4, to_client: 8 }), "{ended:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_idle_for_the_timeout_closes_and_traffic_keeps_it_open() {
        let (client, mut client_end) = duplex(64);
        let (upstream, mut upstream_end) = duplex(64);
        let opened = Instant::now();
        let tunnel = tokio::spawn(join(client, upstream, Duration::from_secs(10)));
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_end.write_all(b"x").await.unwrap();
            upstream_end.read_exact(&mut buf).await.unwrap();
        }
        assert!(!tunnel.is_finished(), "18 s old, never 10 s idle");
        let ended = tunnel.await.unwrap();
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
        let lived = opened.elapsed();
        assert!(lived >= Duration::from_secs(28) && lived < Duration::from_secs(29), "{lived:?}");
        assert_eq!(client_end.read(&mut buf).await.unwrap(), 0, "closed");
    }
}
