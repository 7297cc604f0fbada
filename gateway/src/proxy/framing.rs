//! Request-smuggling signs that hyper's HTTP/1 parser accepts and then hides from the request it
//! hands over, seen by a tap on the client connection's reads ([`Tap`]) and refused by the request
//! path with 400 ([`crate::proxy::guard`]):
//!
//! - `Content-Length` together with `Transfer-Encoding`: hyper drops the length, reads the body
//!   as chunked and closes the connection afterwards (RFC 9112 §6.1 allows that), but RFC 9112
//!   §6.3 calls the message a likely smuggling attempt that "ought to be handled as an error", and
//!   nginx (since 1.21.1) answers 400. So does the gateway.
//! - two or more `Content-Length` lines, even with the same value: hyper keeps one when they
//!   agree (RFC 9110 §8.6 allows either), nginx refuses a duplicate; the gateway refuses it too
//!   (differing ones hyper refuses itself).
//! - a line that ends in a bare LF: hyper (httparse) takes it as a line end (RFC 9112 §2.2
//!   "MAY"); a front server that does not would read the head differently, so it is refused.
//!
//! The tap does not parse requests: it finds line ends (`memchr`) in the head of each request and
//! looks at the first bytes of each line. It follows the byte stream from the connection's start,
//! head after head, skipping each body by its `Content-Length`; a head it cannot follow past (a
//! chunked body, an `Upgrade` or `CONNECT`, a malformed length) makes it stop for the rest of the
//! connection. Then hyper's own handling stands, which is safe as it is (it re-frames every
//! request it forwards); the tap only turns these cases into a clear 400. A head it found bad is
//! the last one it reads: the 400 closes the connection.
//!
//! Heads are counted: the n-th head the tap finished is the n-th request hyper hands over (both
//! read the same bytes in order, and hyper hands over every head it parses, or closes the
//! connection), so the request path asks [`Scan::verdict`] with its own count.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smuggling {
    /// `Content-Length` and `Transfer-Encoding` in one head.
    LengthAndChunked,
    /// More than one `Content-Length` line.
    DuplicateLength,
    /// A line that ends in LF without CR.
    BareLf,
}

impl Smuggling {
    /// What the client is told (JSON `reason`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::LengthAndChunked => "Content-Length and Transfer-Encoding together",
            Self::DuplicateLength => "more than one Content-Length",
            Self::BareLf => "a line ending in LF without CR",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::LengthAndChunked => 1,
            Self::DuplicateLength => 2,
            Self::BareLf => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::LengthAndChunked),
            2 => Some(Self::DuplicateLength),
            3 => Some(Self::BareLf),
            _ => None,
        }
    }
}

/// What the tap found, shared with the connection's request path.
#[derive(Debug, Default)]
pub struct Scan {
    /// 1 + the index of the head found bad (0: none).
    bad_head: AtomicU32,
    /// Why, as [`Smuggling::code`].
    why: AtomicU8,
    /// Requests the request path has asked about.
    asked: AtomicU32,
}

impl Scan {
    /// The verdict on the connection's next request (call once per request, in order): `Some`
    /// when the tap found its head bad.
    pub fn verdict(&self) -> Option<Smuggling> {
        let n = self.asked.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if self.bad_head.load(Ordering::Acquire) != n {
            return None;
        }
        Smuggling::from_code(self.why.load(Ordering::Relaxed))
    }
}

/// Where the tap is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a head (or before one).
    Head,
    /// In a body of this many more bytes.
    Body(u64),
    /// Not following any more.
    Stopped,
}

/// Bytes kept of each line's start: `transfer-encoding:` and a length of 20 digits with room for
/// white space.
const KEEP: usize = 48;

/// The tap's view of the head being read.
#[derive(Debug)]
struct Head {
    /// The current line's first bytes.
    line: [u8; KEEP],
    /// Bytes of the current line so far (may exceed [`KEEP`]).
    len: usize,
    /// The byte before the current read's first byte (for a CR split from its LF).
    last: u8,
    /// Whether the request line was seen.
    started: bool,
    lengths: u32,
    length: Option<u64>,
    chunked: bool,
    bare_lf: bool,
    /// Anything that ends the tap's following (upgrade, CONNECT, an odd length).
    stop: bool,
}

impl Head {
    fn new() -> Self {
        Self {
            line: [0; KEEP],
            len: 0,
            last: 0,
            started: false,
            lengths: 0,
            length: None,
            chunked: false,
            bare_lf: false,
            stop: false,
        }
    }
}

/// A client connection's reads, watched for [`Smuggling`] (HTTP/1 only).
pub struct Tap<S> {
    inner: S,
    scan: Arc<Scan>,
    phase: Phase,
    head: Head,
    /// Heads finished.
    heads: u32,
}

impl<S> Tap<S> {
    /// Watches `inner`'s reads, reporting to `scan`.
    pub fn new(inner: S, scan: Arc<Scan>) -> Self {
        Self { inner, scan, phase: Phase::Head, head: Head::new(), heads: 0 }
    }

    /// Follows `bytes`, the next ones the client sent.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Stopped => return,
                Phase::Body(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[k..];
                    let left = n - k as u64;
                    self.phase = if left == 0 { Phase::Head } else { Phase::Body(left) };
                }
                Phase::Head => match memchr::memchr(b'\n', bytes) {
                    None => {
                        self.take(bytes);
                        return;
                    }
                    Some(i) => {
                        if self.head.len == 0 {
                            // The whole line is here (nearly always): looked at in place.
                            let line = &bytes[..i];
                            let cr = line.last() == Some(&b'\r');
                            self.judge(&line[..i - usize::from(cr)], true, cr);
                        } else {
                            self.take(&bytes[..i]);
                            let cr = if i > 0 { bytes[i - 1] == b'\r' } else { self.head.last == b'\r' };
                            let len = std::mem::take(&mut self.head.len) - usize::from(cr);
                            let kept = self.head.line;
                            self.judge(&kept[..len.min(KEEP)], len <= KEEP, cr);
                        }
                        bytes = &bytes[i + 1..];
                        self.head.last = b'\n';
                    }
                },
            }
        }
    }

    /// Adds `part` (no LF in it) to the current line.
    fn take(&mut self, part: &[u8]) {
        let h = &mut self.head;
        if let Some(&b) = part.last() {
            h.last = b;
        }
        if h.len < KEEP {
            let n = part.len().min(KEEP - h.len);
            h.line[h.len..h.len + n].copy_from_slice(&part[..n]);
        }
        h.len = h.len.saturating_add(part.len());
    }

    /// A line ended, with CR LF (`cr`) or a bare LF: `line` is its text without the CR, all of it
    /// when `whole`, else its first [`KEEP`] bytes.
    fn judge(&mut self, line: &[u8], whole: bool, cr: bool) {
        let h = &mut self.head;
        if !cr {
            h.bare_lf = true;
        }
        if line.is_empty() && whole {
            // Empty lines before a request line are skipped (RFC 9112 §2.2), as httparse does.
            if h.started {
                self.head_end();
            }
            return;
        }
        if !h.started {
            h.started = true;
            h.stop |= line.starts_with(b"CONNECT ");
            return;
        }
        // Only three names matter: most lines are told apart by their first byte.
        let first = line.first().map_or(0, |b| b | 0x20);
        if !matches!(first, b'c' | b't' | b'u') {
            return;
        }
        if let Some(value) = field(line, b"content-length:") {
            h.lengths += 1;
            // Cut short, or not digits: hyper refuses it, or it is too odd to follow.
            let digits = value.trim_ascii();
            let parsed = (whole && !digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit))
                .then(|| digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
            match parsed {
                Some(n) => h.length = Some(n),
                None => h.stop = true,
            }
        } else if field(line, b"transfer-encoding:").is_some() {
            h.chunked = true;
        } else if field(line, b"upgrade:").is_some() {
            h.stop = true;
        }
    }

    /// A head ended: its verdict, and where the next one starts.
    fn head_end(&mut self) {
        let h = &mut self.head;
        let (lengths, length, chunked, bare_lf, stop) = (h.lengths, h.length, h.chunked, h.bare_lf, h.stop);
        // Reset in place: the kept line bytes need no clearing.
        (h.started, h.lengths, h.length, h.chunked, h.bare_lf, h.stop) = (false, 0, None, false, false, false);
        h.len = 0;
        self.heads = self.heads.wrapping_add(1);
        let bad = if lengths > 0 && chunked {
            Some(Smuggling::LengthAndChunked)
        } else if lengths > 1 {
            Some(Smuggling::DuplicateLength)
        } else if bare_lf {
            Some(Smuggling::BareLf)
        } else {
            None
        };
        if let Some(why) = bad {
            self.scan.why.store(why.code(), Ordering::Relaxed);
            self.scan.bad_head.store(self.heads, Ordering::Release);
            self.phase = Phase::Stopped;
            return;
        }
        self.phase = match length {
            _ if stop || chunked => Phase::Stopped,
            Some(n) if n > 0 => Phase::Body(n),
            _ => Phase::Head,
        };
    }
}

/// The value of `line` when it is the field `name` (lowercase, with its colon), in any case.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (start, rest) = line.split_at_checked(name.len())?;
    start.eq_ignore_ascii_case(name).then_some(rest)
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && self.phase != Phase::Stopped {
            let this = &mut *self;
            this.follow(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts on each request of `stream`, fed in pieces of `step` bytes.
    fn verdicts(stream: &[u8], step: usize, requests: usize) -> Vec<Option<Smuggling>> {
        let scan = Arc::new(Scan::default());
        let mut tap = Tap::new((), scan.clone());
        for piece in stream.chunks(step) {
            tap.follow(piece);
        }
        (0..requests).map(|_| scan.verdict()).collect()
    }

    fn each_split(stream: &[u8], requests: usize) -> Vec<Option<Smuggling>> {
        let whole = verdicts(stream, stream.len(), requests);
        for step in 1..8 {
            assert_eq!(verdicts(stream, step, requests), whole, "fed {step} bytes at a time");
        }
        whole
    }

    #[test]
    fn ordinary_requests_pass_however_the_bytes_arrive() {
        let s = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel\nlGET /c HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(each_split(s, 3), vec![None, None, None]);
    }

    #[test]
    fn length_and_chunked_duplicate_lengths_and_bare_lf_are_found() {
        let s = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(each_split(s, 1), vec![Some(Smuggling::LengthAndChunked)]);
        let s = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(each_split(s, 1), vec![Some(Smuggling::LengthAndChunked)]);
        let s = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(each_split(s, 1), vec![Some(Smuggling::DuplicateLength)]);
        let s = b"GET / HTTP/1.1\nHost: a\r\n\r\n";
        assert_eq!(each_split(s, 1), vec![Some(Smuggling::BareLf)]);
        let s = b"GET / HTTP/1.1\r\nHost: a\r\n\n";
        assert_eq!(each_split(s, 1), vec![Some(Smuggling::BareLf)]);
    }

    #[test]
    fn the_bad_head_is_found_after_good_ones_and_bodies() {
        let s = b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nContent-Length: 1\r\nX: y\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(each_split(s, 3), vec![None, None, Some(Smuggling::LengthAndChunked)]);
    }

    #[test]
    fn what_it_cannot_follow_it_leaves_to_hyper() {
        // A chunked body: nothing after it is judged, not even a bad head.
        let s = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\nHost: a\r\n\r\n";
        assert_eq!(each_split(s, 2), vec![None, None]);
        let s = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05a\nb\n\n";
        assert_eq!(each_split(s, 2), vec![None, None]);
        let s = b"POST / HTTP/1.1\r\nContent-Length: 12345678901234567890123\r\n\r\nGET / HTTP/1.1\nHost: a\r\n\r\n";
        assert_eq!(each_split(s, 2), vec![None, None]);
    }

    #[test]
    fn empty_lines_before_a_request_line_are_skipped() {
        let s = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx";
        assert_eq!(each_split(s, 2), vec![None, Some(Smuggling::DuplicateLength)]);
    }
}
