//! One pool of idle HTTP/1.1 keep-alive connections per endpoint, one list per worker thread:
//! how connections are opened, handed out for reuse (only at a clean message boundary, see
//! [`super`]) and taken back.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::h2::H2Slots;
use super::io::{Io, Look, Probe};
use super::suspect::Suspect;
use super::{RequestBody, UpstreamError};
use crate::observe::metrics::OpenGuard;

/// At most this many idle connections to one instance are kept per worker thread (as nginx's
/// `keepalive` is per worker process); more are closed when they free up.
pub const MAX_IDLE_PER_WORKER: usize = 128;

/// A connection that carried a request: its request handle, its socket probe, and how long it
/// may sit idle by the instance's `Keep-Alive` header.
pub(super) struct Conn {
    pub(super) sender: SendRequest<RequestBody>,
    pub(super) probe: Arc<Probe>,
    pub(super) max_idle: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Whether hyper is ready for a request on it and it has not been idle too long, by our
    /// limit or the instance's.
    fn is_fresh(&self, idle_timeout: Duration) -> bool {
        self.conn.sender.is_ready() && self.since.elapsed() < idle_timeout.min(self.conn.max_idle)
    }

    /// Whether this connection can take a request now: fresh, and its socket clean (looked at
    /// last: it costs a system call).
    fn look(&self, idle_timeout: Duration) -> Look {
        if self.is_fresh(idle_timeout) {
            self.conn.probe.look()
        } else {
            Look::Closed
        }
    }
}

thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as worker `i`: its requests use and refill the `i`-th idle lists.
pub fn set_thread_slot(i: usize) {
    THREAD_SLOT.with(|s| s.set(i));
}

/// The calling thread's worker index (0 outside the workers).
pub fn thread_slot() -> usize {
    THREAD_SLOT.with(Cell::get)
}

/// One endpoint's address and its idle connections.
pub struct Pool {
    /// `address:port`, resolved by the system when the address is a name.
    authority: String,
    /// The same, parsed once when the address is an IP.
    addr: Option<SocketAddr>,
    /// Idle connections, one list per worker thread.
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// Whether the instance was caught sending bytes past a response: then nothing is reused.
    pub(super) suspect: Suspect,
    /// The HTTP/2 connections, one per worker thread, for routes and instances that ask for it.
    pub(super) h2: H2Slots,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("authority", &self.authority).field("idle", &self.idle_count()).finish()
    }
}

impl Pool {
    /// An empty pool of connections to `authority` (`address:port`), for one worker thread.
    pub fn new(authority: &str) -> Self {
        Self::for_workers(authority, 1)
    }

    /// An empty pool of connections to `authority`, with idle lists for `workers` threads.
    pub fn for_workers(authority: &str, workers: usize) -> Self {
        let idle = (0..workers.max(1)).map(|_| Mutex::default()).collect();
        let h2 = H2Slots::new(workers);
        Self { authority: authority.to_string(), addr: authority.parse().ok(), idle, suspect: Suspect::default(), h2 }
    }

    /// How many idle connections are kept, over all threads.
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// The calling thread's idle list.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let slot = thread_slot() % self.idle.len();
        self.idle[slot].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that can take a request now, if any (none while
    /// the instance is suspect); the unusable ones met on the way are closed.
    pub(super) fn take(&self, idle_timeout: Duration) -> Option<Conn> {
        if self.suspect.is_suspect() {
            return None;
        }
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            match entry.look(idle_timeout) {
                Look::Clean => return Some(entry.conn),
                Look::Closed => {}
                Look::Unread => {
                    self.caught("unread bytes on an idle connection");
                    idle.clear();
                }
            }
        }
        None
    }

    /// Records that the instance sent bytes past the end of a response (see [`super::suspect`]).
    pub(super) fn caught(&self, what: &str) {
        self.suspect.caught(&self.authority, what);
    }

    /// Takes back a connection whose response was read to the end, if it can take the next
    /// request. It cannot while hyper is still writing the request body, when the instance
    /// answered before reading it all (a 413 to an upload): such a connection is closed once
    /// hyper is done with it, rather than making the next request wait behind the upload.
    pub(super) fn put(&self, conn: Conn) {
        if !conn.sender.is_ready() || conn.max_idle.is_zero() || self.suspect.is_suspect() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE_PER_WORKER {
            idle.push(Idle { conn, since: Instant::now() });
        }
    }

    /// Closes the idle connections unused for `idle_timeout` or more (or for less than the
    /// instance's `Keep-Alive` said), and those the instance closed.
    /// Also forgets the HTTP/2 connections that closed.
    pub fn expire(&self, idle_timeout: Duration) {
        for list in self.idle.iter() {
            let mut idle = list.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| c.is_fresh(idle_timeout));
        }
        self.h2.forget_closed();
    }

    /// `address:port` of the instance.
    pub(super) fn authority(&self) -> &str {
        &self.authority
    }

    /// A new TCP connection to the instance, within `timeout`, with Nagle off.
    pub(super) async fn tcp(&self, timeout: Duration) -> Result<TcpStream, UpstreamError> {
        let connecting = async {
            match self.addr {
                Some(addr) => TcpStream::connect(addr).await,
                None => TcpStream::connect(self.authority.as_str()).await,
            }
        };
        let stream = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
            Err(_) => return Err(UpstreamError::Connect(format!("no connection within {timeout:?}"))),
        };
        // Requests and responses are written whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A new connection; it may be reused for as long as the gateway's limit allows until a
    /// response says otherwise.
    /// `open` counts the connection as open while its task runs.
    pub(super) async fn connect(&self, timeout: Duration, open: OpenGuard) -> Result<Conn, UpstreamError> {
        let stream = self.tcp(timeout).await?;
        let (io, probe) = Io::new(stream).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = conn.await {
                debug!(instance = %authority, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn { sender, probe, max_idle: Duration::MAX })
    }
}
