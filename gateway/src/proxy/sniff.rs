//! Which HTTP version a cleartext client speaks, told from its first bytes: HTTP/2 with prior
//! knowledge (h2c) opens with the connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`
//! (RFC 9113 §3.4); anything else is HTTP/1.x.
//!
//! hyper-util's `server::conn::auto` makes the same choice, but it *reads* up to 24 bytes into a
//! buffer and wraps the connection in a `Rewind` that every later read goes through, and it waits
//! for those bytes without any deadline (a client that connects and sends nothing, or `PRI`
//! and nothing more, holds the connection forever: hyper's header-read timeout only starts once
//! the HTTP/1 connection does). Here the bytes are only *peeked* (`MSG_PEEK`), once per
//! connection, under the client timeout; the socket then goes to hyper's HTTP/1 or HTTP/2
//! server untouched, so the HTTP/1.1 path is exactly what it was.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of the preface that settle the question: `PRI ` starts no HTTP/1.1 request (RFC 9113
/// §3.4 reserves the method), so hyper's HTTP/2 server is left to check the rest.
const DECISIVE: usize = 4;

/// How long to wait before peeking again when a client sent a prefix of the preface too short
/// to decide (`P`, `PR`, `PRI`): rare, so a sleep is simpler than tracking reads. The first wait
/// is short (the rest of a split preface comes within a round trip), and each one doubles up to
/// [`REPEEK_MAX`]: a client that stalls there (nothing more will make the socket readable again:
/// its bytes are still unread) costs a few wake-ups per second, not one every 5 ms for the
/// whole client timeout (a thousand such clients kept a quarter of a core busy).
const REPEEK: Duration = Duration::from_millis(5);

/// The longest wait between two peeks at a stalled partial preface.
const REPEEK_MAX: Duration = Duration::from_millis(500);

/// The wait before the peek after `waits` earlier ones: [`REPEEK`] doubled each time, at most
/// [`REPEEK_MAX`].
fn repeek_after(waits: u32) -> Duration {
    REPEEK.saturating_mul(1 << waits.min(16)).min(REPEEK_MAX)
}

/// The protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    H2,
}

/// What the first bytes say: a version, or `None` when they are a prefix of the preface too
/// short to decide.
pub fn classify(first: &[u8]) -> Option<Version> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        return Some(Version::Http1);
    }
    (n >= DECISIVE).then_some(Version::H2)
}

/// Peeks at the first bytes `stream` received, within `timeout`, and tells the version. Nothing
/// is consumed.
///
/// # Errors
/// `TimedOut` when the client sent too little in time, `UnexpectedEof` when it closed first, or
/// the socket's error.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> io::Result<Version> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; DECISIVE];
    let mut waits = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(v) = classify(&buf[..n]) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let wait = repeek_after(waits);
        waits += 1;
        tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_preface_is_told_from_http1_methods() {
        assert_eq!(classify(H2_PREFACE), Some(Version::H2));
        assert_eq!(classify(b"PRI "), Some(Version::H2));
        for h1 in [&b"GET / HTTP/1.1\r\n"[..], b"POST", b"PUT ", b"PATCH", b"PRIX", b"X", b"\r\n"] {
            assert_eq!(classify(h1), Some(Version::Http1), "{h1:?}");
        }
        for short in [&b"P"[..], b"PR", b"PRI"] {
            assert_eq!(classify(short), None, "{short:?}");
        }
    }

    #[test]
    fn a_stalled_partial_preface_is_looked_at_a_few_times_a_second_at_most() {
        // A client that sent `P` and nothing more, for a minute (the default client timeout).
        let (mut waited, mut peeks) = (Duration::ZERO, 0u32);
        while waited < Duration::from_secs(60) {
            waited += repeek_after(peeks);
            peeks += 1;
        }
        assert!(peeks <= 130, "{peeks} peeks in a minute");
        assert_eq!(repeek_after(0), REPEEK, "the first look comes soon");
    }

    #[tokio::test]
    async fn sniffing_consumes_nothing_and_waits_for_a_split_preface() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"PR").await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(b"I * HTTP/2.0").await.unwrap();
            client
        });
        assert_eq!(sniff(&server, Duration::from_secs(2)).await.unwrap(), Version::H2);
        let _client = late.await.unwrap();
        let mut all = [0u8; 14];
        assert_eq!(server.peek(&mut all).await.unwrap(), 14, "still unread");
    }

    #[tokio::test]
    async fn a_silent_or_stalled_client_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let e = sniff(&server, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        client.write_all(b"PRI").await.unwrap();
        let e = sniff(&server, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(client);
        let (server2, client2) = {
            let c = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            (listener.accept().await.unwrap().0, c)
        };
        drop(client2);
        let e = sniff(&server2, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
