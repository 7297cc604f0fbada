//! The socket under one upstream connection, and a probe that can look at it while hyper owns
//! the connection.
//!
//! Why a probe: hyper notices bytes or a close on an idle client connection only when its
//! connection task happens to poll the socket again, and after a response whose last segment it
//! read without hitting `EAGAIN` it does not. Then a stray body the instance sent after a
//! `204`/`304` (or any bytes past the end of a response), or the FIN of an instance that closed
//! the idle connection, sits unread in the kernel, and the next request sent on that connection
//! gets garbage (`invalid HTTP version parsed`) or a close (`connection closed before message
//! completed`). So before a pooled connection is reused, [`Probe::look`] peeks at the socket
//! (one non-blocking `recv(MSG_PEEK)`, as nginx's keepalive module does on read events of a
//! cached connection): anything to read, an end of stream or an error means the connection is
//! not at a clean message boundary, and it is closed instead of reused.
//!
//! That check cannot see bytes that have not arrived yet. A server that writes bytes past the
//! end of its response in a write of its own has them held back by Nagle's algorithm until the
//! gateway acknowledges the response, which Linux delays by up to 40 ms, or does with the next
//! request: they would then come just ahead of the next answer and take its place, and the real
//! answer, held back the same way, would take the place of the one after (a desync that goes
//! on while requests keep coming). So when a response ends, [`Probe::ack_now`] acknowledges it
//! at once (`TCP_QUICKACK`): the stray bytes arrive a round trip later, in time for the probe,
//! and the pool stops reusing that instance's connections ([`super::suspect`]). The price is one
//! more TCP segment per request (see bench/RESULTS.md).
//!
//! The probe holds a duplicate of the socket's descriptor. [`Io`] gives it up when hyper drops
//! the connection, so the socket closes when hyper closes it, not when the pool lets go.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a look at an idle connection's socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Open, nothing unread: the connection can take a request.
    Clean,
    /// Closed or reset by the instance (or by hyper): it just goes.
    Closed,
    /// Bytes the instance sent after its last response: a fault of the instance.
    Unread,
}

/// A second handle on an upstream connection's socket, for [`Probe::look`].
#[derive(Debug)]
pub struct Probe(Mutex<Option<socket2::Socket>>);

impl Probe {
    /// Looks at the socket without reading from it: whether it is open with nothing unread on
    /// it, closed, or holding bytes the instance sent after its last response.
    pub fn look(&self) -> Look {
        let peeked = self.with_socket(|socket| {
            let mut byte = [MaybeUninit::<u8>::uninit(); 1];
            socket.peek(&mut byte)
        });
        // The socket is non-blocking (tokio set it so): nothing to read is `WouldBlock`.
        match peeked {
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => Look::Clean,
            Some(Ok(n)) if n > 0 => Look::Unread,
            _ => Look::Closed,
        }
    }

    /// Acknowledges what the instance sent at once, instead of after the delayed-ACK timer or
    /// with the next request (see the module docs). Best effort: an error is ignored, the probe
    /// still decides.
    pub fn ack_now(&self) {
        let _ = self.with_socket(|socket| socket.set_tcp_quickack(true));
    }

    /// Runs `f` on the socket, unless hyper has dropped the connection.
    fn with_socket<T>(&self, f: impl FnOnce(&socket2::Socket) -> T) -> Option<T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(f)
    }

    fn close(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The connection's socket as hyper reads and writes it; closes the [`Probe`]'s handle when
/// dropped.
pub struct Io {
    stream: TcpStream,
    probe: Arc<Probe>,
}

impl Io {
    /// Wraps a connected stream, with a probe on the same socket.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated (the process is out of descriptors).
    pub fn new(stream: TcpStream) -> io::Result<(Self, Arc<Probe>)> {
        let dup = socket2::SockRef::from(&stream).try_clone()?;
        let probe = Arc::new(Probe(Mutex::new(Some(dup))));
        Ok((Self { stream, probe: probe.clone() }, probe))
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.probe.close();
    }
}

impl AsyncRead for Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (Io, Arc<Probe>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (io, probe) = Io::new(client).unwrap();
        (io, probe, server)
    }

    async fn settle() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_quiet_open_connection_is_clean() {
        let (_io, probe, _server) = pair().await;
        assert_eq!(probe.look(), Look::Clean);
    }

    #[tokio::test]
    async fn unread_bytes_a_close_or_a_reset_are_not() {
        let (_io, probe, mut server) = pair().await;
        server.write_all(b"hello").await.unwrap();
        settle().await;
        assert_eq!(probe.look(), Look::Unread, "stray bytes");

        let (_io, probe, server) = pair().await;
        drop(server);
        settle().await;
        assert_eq!(probe.look(), Look::Closed, "closed by the peer");

        let (_io, probe, server) = pair().await;
        socket2::SockRef::from(&server).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(server);
        settle().await;
        assert_eq!(probe.look(), Look::Closed, "reset by the peer");
    }

    #[tokio::test]
    async fn dropping_the_connection_closes_the_socket_and_the_probe() {
        let (io, probe, mut server) = pair().await;
        drop(io);
        assert_eq!(probe.look(), Look::Closed);
        let mut buf = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut server, &mut buf);
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), read)
            .await
            .expect("the peer sees the close at once, although the probe held a duplicate");
        assert_eq!(n.unwrap(), 0);
    }
}
