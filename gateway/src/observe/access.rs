//! The access log: one line per finished request, in text or JSON ([`format`]), to stdout or a
//! file. The request path only hands a [`Record`] to a bounded queue ([`AccessLog::log`], a
//! `try_send`): it never waits for the disk. One writer thread formats the records and writes
//! them through a buffer, flushed whenever the queue runs empty. A record that finds the queue
//! full is dropped and counted ([`AccessLog::dropped`]); drops are warned about at most once per
//! [`WARN_EVERY`], by the writer after a batch or by the request that finds the queue full (a
//! writer stuck on a stdout nobody reads would never say so).
//!
//! For logrotate's `create` mode, the file is reopened (by name) at the next record or within a
//! second after [`AccessLog::reopen`] (SIGHUP, wired in [`crate::run`]).
//!
//! At shutdown, [`AccessLog::close`] has the writer write what is queued, flush and end: the
//! lines of the last requests are not lost with the process.
//!
//! What a request's record holds, and when it is made, is the request path's business
//! ([`crate::proxy::observed`]); this module owns the queue, the writer and the line formats.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Version};

pub mod format;

pub use format::Format;

/// Records waiting for the writer; more are dropped and counted.
pub const QUEUE: usize = 8192;

/// Drops are warned about at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// One finished request, as the access log shows it.
#[derive(Clone, Debug)]
pub struct Record {
    /// When the response ended (or was abandoned).
    pub time: SystemTime,
    /// The client's address (`None` in tests without a socket).
    pub client: Option<SocketAddr>,
    /// The request method.
    pub method: Method,
    /// The path and query, as the client sent them.
    pub path: Option<PathAndQuery>,
    /// The client's HTTP version.
    pub version: Version,
    /// The status the client got.
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// From the request head's arrival to the end of the response body.
    pub duration: Duration,
    /// The route, as `/routes` shows it; `None`: no route matched.
    pub route: Option<Arc<str>>,
    /// The route's service.
    pub service: Option<Arc<str>>,
    /// The last instance tried (`address:port`), if any.
    pub instance: Option<Authority>,
    /// Attempts after the first (a new connection to the same instance, or another instance).
    pub retries: u32,
    /// The request's ID ([`crate::observe::request_id`]).
    pub request_id: HeaderValue,
}

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The process's standard output.
    Stdout,
    /// A file, appended to (created if missing), reopened on [`AccessLog::reopen`].
    File(PathBuf),
}

/// Why the access log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file cannot be opened for appending.
    #[error("cannot open the access log file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The writer thread cannot be started.
    #[error("cannot start the access log writer")]
    Thread(#[source] io::Error),
}

/// The request path's handle on the access log. Cheap to share (`Arc`).
pub struct AccessLog {
    /// Records; `None` only wakes the writer (to close).
    queue: SyncSender<Option<Record>>,
    shared: Arc<Shared>,
    /// The writer thread, until [`AccessLog::close`] waits for it.
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// What the handle and the writer both see.
struct Shared {
    dropped: AtomicU64,
    reopen: AtomicBool,
    /// Set by [`AccessLog::close`]: write what is queued, flush, end.
    closing: AtomicBool,
    /// The clock's origin for `warned_at`.
    started: Instant,
    /// Milliseconds after `started` of the last warning about drops ([`NEVER`]: none yet).
    warned_at: AtomicU64,
    /// The count of drops the last warning reported.
    warned_count: AtomicU64,
}

/// `warned_at` before the first warning.
const NEVER: u64 = u64::MAX;

impl Default for Shared {
    fn default() -> Self {
        Self {
            dropped: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            started: Instant::now(),
            warned_at: AtomicU64::new(NEVER),
            warned_count: AtomicU64::new(0),
        }
    }
}

impl Shared {
    /// Warns about the drops not warned about yet, unless a warning went out less than
    /// [`WARN_EVERY`] ago. Only one thread wins a given slot: no two warnings within the period.
    fn warn_drops(&self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped == self.warned_count.load(Ordering::Relaxed) {
            return;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.warned_at.load(Ordering::Relaxed);
        if last != NEVER && now.saturating_sub(last) < WARN_EVERY.as_millis() as u64 {
            return;
        }
        if self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let before = self.warned_count.swap(dropped, Ordering::Relaxed);
        let new = dropped.saturating_sub(before);
        tracing::warn!(dropped = new, total = dropped, "access log queue full; lines dropped");
    }
}

impl AccessLog {
    /// Opens `to` and starts the writer thread, which ends once every handle is dropped (after
    /// writing what is queued). `queue` records may wait ([`QUEUE`] in the gateway).
    ///
    /// # Errors
    /// [`AccessLogError::Open`] when the file cannot be opened for appending (a clear startup
    /// error), [`AccessLogError::Thread`] when no thread can be started.
    pub fn start(format: Format, to: Destination, queue: usize) -> Result<Self, AccessLogError> {
        let out = Output::open(to)?;
        let (tx, rx) = sync_channel(queue);
        let shared = Arc::new(Shared::default());
        let writer = Writer { format, out, shared: shared.clone(), failing: None };
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(rx))
            .map_err(AccessLogError::Thread)?;
        Ok(Self { queue: tx, shared, writer: Mutex::new(Some(thread)) })
    }

    /// Queues `record` for the writer, or counts it as dropped when the queue is full. Never
    /// blocks.
    pub fn log(&self, record: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(Some(record)) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            // Only on a drop: a clock read, and a warning at most every WARN_EVERY.
            self.shared.warn_drops();
        }
    }

    /// Records dropped since start because the queue was full (for
    /// `gateway_access_log_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen its file by name (after logrotate moved it). No effect on
    /// stdout.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
    }

    /// At shutdown: has the writer write every queued record, flush and end, and waits up to
    /// `within` for it (blocking the calling thread; the writer may be stuck on a stdout nobody
    /// reads). Records logged after the writer ended are counted as dropped. `true` when the
    /// writer finished in time (or had already been closed).
    pub fn close(&self, within: Duration) -> bool {
        self.shared.closing.store(true, Ordering::Release);
        // Wakes a writer waiting for records; a full queue means it is busy and sees the flag
        // once it has written them.
        let _ = self.queue.try_send(None);
        let Some(thread) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else { return true };
        let deadline = Instant::now() + within;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        true
    }
}

/// The writer's end: a buffered stdout or file.
enum Output {
    Stdout(BufWriter<io::Stdout>),
    File { path: PathBuf, file: BufWriter<File> },
}

impl Output {
    fn open(to: Destination) -> Result<Self, AccessLogError> {
        Ok(match to {
            Destination::Stdout => Output::Stdout(BufWriter::with_capacity(64 * 1024, io::stdout())),
            Destination::File(path) => {
                let file = open_append(&path).map_err(|source| AccessLogError::Open { path: path.clone(), source })?;
                Output::File { path, file: BufWriter::with_capacity(64 * 1024, file) }
            }
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(w) => w,
            Output::File { file, .. } => file,
        }
    }

    /// Flushes and reopens the file by name; on failure keeps writing to the old one.
    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            let _ = file.flush();
            match open_append(path) {
                Ok(f) => *file = BufWriter::with_capacity(64 * 1024, f),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot reopen the access log file; still writing to the old one")
                }
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    format: Format,
    out: Output,
    shared: Arc<Shared>,
    /// Since when writing fails (a full disk), as last said at ERROR; `None` while it works.
    failing: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Option<Record>>) {
        let mut line = Vec::with_capacity(512);
        loop {
            let first = rx.recv_timeout(Duration::from_secs(1));
            if self.shared.reopen.swap(false, Ordering::Relaxed) {
                self.out.reopen();
            }
            match first {
                Ok(Some(r)) => self.write(&r, &mut line),
                Ok(None) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Whatever else is queued, then one flush. The flag is read first: when it is set,
            // every record queued before the close is in the queue by now, and written below.
            let closing = self.shared.closing.load(Ordering::Acquire);
            while let Ok(r) = rx.try_recv() {
                if let Some(r) = r {
                    self.write(&r, &mut line);
                }
            }
            self.flush();
            self.shared.warn_drops();
            if closing {
                break;
            }
        }
        let _ = self.out.writer().flush();
    }

    /// Flushes; a failure is said at ERROR once, then at most once per [`WARN_EVERY`] while it
    /// lasts (the writer flushes at every batch and every second: a full disk must not flood the
    /// gateway's own log), and the recovery once at INFO.
    fn flush(&mut self) {
        match self.out.writer().flush() {
            Ok(()) => {
                if self.failing.take().is_some() {
                    tracing::info!("writing the access log again");
                }
            }
            Err(e) => {
                if self.failing.is_none_or(|since| since.elapsed() >= WARN_EVERY) {
                    tracing::error!(error = %e, "cannot write the access log; its lines are lost until it can (said again every 10 s while it lasts)");
                    self.failing = Some(Instant::now());
                }
            }
        }
    }

    fn write(&mut self, r: &Record, line: &mut Vec<u8>) {
        line.clear();
        self.format.line(r, line);
        // Errors show at the flush.
        let _ = self.out.writer().write_all(line);
    }
}

#[cfg(test)]
mod tests;
