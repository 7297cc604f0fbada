//! When an HTTP/2 client connection last moved a byte, so that one idle for the client timeout
//! can be closed. hyper's HTTP/1 server times the wait for each request head
//! (`header_read_timeout`); its HTTP/2 server has no idle timeout, so without this an h2 client
//! could hold a connection (a socket, its buffers) forever. nginx closes idle HTTP/2 connections
//! after `keepalive_timeout` in the same way.
//!
//! "Idle" is measured on the socket: no byte read or written for the limit. The connection is then
//! shut down gracefully (GOAWAY, RFC 9113 §6.8): a stream still open (a long poll that has sent
//! nothing yet) is let finish, new ones are refused, and the client opens a new connection.
//! Only HTTP/2 connections pay for this (a clock read per socket read or write).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that records when it last moved a byte.
pub struct Activity<S> {
    inner: S,
    clock: Idle,
}

/// The reading side: how long the stream has been idle.
#[derive(Clone)]
pub struct Idle {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte moved.
    last: Arc<AtomicU64>,
}

impl Idle {
    /// How long since the last byte moved (or since the stream was wrapped).
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }
}

impl<S> Activity<S> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: S) -> (Self, Idle) {
        let clock = Idle { epoch: Instant::now(), last: Arc::new(AtomicU64::new(0)) };
        (Self { inner, clock: clock.clone() }, clock)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_either_way_reset_the_idle_clock() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut a, idle) = Activity::new(a);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(idle.idle_for() >= Duration::from_millis(25));
        a.write_all(b"x").await.unwrap();
        assert!(idle.idle_for() < Duration::from_millis(25), "a write counts");
        tokio::time::sleep(Duration::from_millis(30)).await;
        b.write_all(b"y").await.unwrap();
        let mut one = [0u8; 1];
        a.read_exact(&mut one).await.unwrap();
        assert!(idle.idle_for() < Duration::from_millis(25), "a read counts");
    }
}
