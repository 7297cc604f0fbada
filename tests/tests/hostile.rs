//! Hostile HTTP clients against the real gateway (issue 14, part 4), over raw sockets: request
//! smuggling (`Content-Length` with `Transfer-Encoding`, two lengths, obs-fold, bad chunk sizes,
//! bare LF, codings other than `chunked`, `Transfer-Encoding` on HTTP/1.0), oversized heads and
//! targets, `CONNECT`, absolute-form targets for other hosts, dot segments however encoded, and
//! duplicate or missing `Host`. Each gets its exact 4xx, and the instance behind the route
//! (a raw TCP listener that counts every connection and byte it receives) sees **nothing**.
//! Positive controls show the same instance does get ordinary requests, so the count can fail.
//!
//! Then slowloris (a head trickled forever, cut off by `--client-timeout`, on the public and the
//! admin listener) and a connection flood (`--max-connections`: the connection over the cap is
//! closed within a second, the open ones are still served).

// Tests: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Consul, Gateway};

/// An instance that counts what reaches it: connections accepted and bytes read. It answers each
/// connection's first request head with `200 ok` and closes.
struct Counting {
    port: u16,
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Counting {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, b) = (connections.clone(), bytes.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        b.fetch_add(n, Ordering::SeqCst);
                        seen.extend_from_slice(&buf[..n]);
                        if !seen.is_empty() && seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            // Answered once; what else comes (a body) is still read and counted.
                            let _ =
                                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                            let _ = conn.shutdown(std::net::Shutdown::Write);
                            seen.clear();
                        }
                    }
                });
            }
        });
        Self { port, connections, bytes }
    }

    /// Connections and bytes so far.
    fn seen(&self) -> (usize, usize) {
        (self.connections.load(Ordering::SeqCst), self.bytes.load(Ordering::SeqCst))
    }
}

/// Whether `answer` holds a whole response (its head, and the body its `content-length` gives).
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|v| v.trim().parse().ok());
    length.is_some_and(|n: usize| answer.len() - end - 4 >= n)
}

/// Sends `request` on a new connection and reads until the gateway closes it or one whole
/// response came (at most 5 s): the status (0 if none) and the answer as text.
fn exchange(port: u16, request: &[u8]) -> (u16, String) {
    exchange_all(port, request, false)
}

/// [`exchange`]; with `pipelined`, reads until the gateway closes the connection.
fn exchange_all(port: u16, request: &[u8], pipelined: bool) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The gateway may answer and close before the whole request is written (a 431).
    let _ = conn.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if complete(&out) && !pipelined {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => break,
            Err(e) => {
                panic!("reading the answer to {:?}: {e}", String::from_utf8_lossy(&request[..request.len().min(120)]))
            }
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    (status_of(&text), text)
}

fn status_of(answer: &str) -> u16 {
    answer.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The gateway under attack and the instance behind its routes: `/web/*` (a name route) and
/// `ours.example/own` (a declared, host-specific route).
fn setup(extra: &[&str]) -> (Consul, Counting, Gateway) {
    let consul = Consul::start();
    let instance = Counting::start();
    consul.register_tagged("web", "web-1", instance.port, "passing", &["urlprefix-ours.example/own"]);
    let gw = Gateway::start(&consul, "web", extra);
    (consul, instance, gw)
}

/// Sends `request` and asserts the gateway answers `status` and the instance sees nothing.
fn refused(gw: &Gateway, instance: &Counting, what: &str, request: &[u8], status: u16) -> String {
    let before = instance.seen();
    let (got, answer) = exchange(gw.port, request);
    // Anything proxied would reach the instance before the answer; the pause covers a body
    // forwarded while the gateway answered.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(got, status, "{what}: {answer}");
    assert_eq!(instance.seen(), before, "{what}: the instance saw something");
    answer
}

/// Sends `request` and asserts it reached the instance (200 from it).
fn reaches(gw: &Gateway, instance: &Counting, what: &str, request: &[u8]) {
    let before = instance.seen();
    let (got, answer) = exchange(gw.port, request);
    assert_eq!(got, 200, "{what}: {answer}");
    assert!(answer.ends_with("ok"), "{what}: the instance's answer: {answer}");
    let after = instance.seen();
    assert!(after.0 > before.0 && after.1 > before.1, "{what}: the instance saw it");
}

#[test]
fn hostile_requests_get_a_clear_4xx_and_never_reach_an_instance() {
    let (_consul, instance, gw) =
        setup(&["--max-header-bytes", "4096", "--max-uri-bytes", "1024", "--client-timeout", "10s"]);
    let host = "Host: ours.example\r\n";

    // Positive controls: the counter moves for ordinary requests.
    reaches(&gw, &instance, "GET", format!("GET /web/x HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes());
    let post = format!("POST /web/x HTTP/1.1\r\n{host}Content-Length: 5\r\nConnection: close\r\n\r\nhello");
    reaches(&gw, &instance, "POST with a length", post.as_bytes());
    let chunked = format!(
        "POST /web/x HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    reaches(&gw, &instance, "chunked POST", chunked.as_bytes());
    reaches(
        &gw,
        &instance,
        "declared host route",
        b"GET /own HTTP/1.1\r\nHost: ours.example\r\nConnection: close\r\n\r\n",
    );
    // Absolute form: its authority wins over Host (RFC 9112 §3.2.2), both ways.
    reaches(
        &gw,
        &instance,
        "absolute form naming our host",
        b"GET http://ours.example/own HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    );

    let post = |headers: &str, body: &str| format!("POST /web/x HTTP/1.1\r\n{host}{headers}\r\n{body}").into_bytes();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // Request smuggling.
        ("CL then TE", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nX"), 400),
        ("TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", "0\r\n\r\nX"), 400),
        ("two differing CLs", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), 400),
        ("two identical CLs", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), 400),
        ("a CL list", post("Content-Length: 5, 5\r\n", "hello"), 400),
        ("a signed CL", post("Content-Length: +5\r\n", "hello"), 400),
        ("obs-fold", format!("GET /web/x HTTP/1.1\r\n{host}X-A: b\r\n c\r\n\r\n").into_bytes(), 400),
        ("obs-fold of TE", post("X-A: b\r\n Transfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        ("bare LF everywhere", b"GET /web/x HTTP/1.1\nHost: ours.example\n\n".to_vec(), 400),
        ("one bare LF", format!("GET /web/x HTTP/1.1\r\nX: y\n{host}\r\n").into_bytes(), 400),
        ("bare LF ending the head", format!("GET /web/x HTTP/1.1\r\n{host}\n").into_bytes(), 400),
        ("chunk size not hex", post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size overflowing", post("Transfer-Encoding: chunked\r\n", "1ffffffffffffffff\r\nx\r\n0\r\n\r\n"), 400),
        ("chunk size negative", post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk size 0x", post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-ext with LF", post("Transfer-Encoding: chunked\r\n", "5;a\nhello\r\n0\r\n\r\n"), 400),
        ("chunk-ext garbage", post("Transfer-Encoding: chunked\r\n", "5 x\r\nhello\r\n0\r\n\r\n"), 400),
        ("chunk with bare LF", post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"), 400),
        ("chunk data longer than its size", post("Transfer-Encoding: chunked\r\n", "2\r\nhello\r\n0\r\n\r\n"), 400),
        ("TE gzip", post("Transfer-Encoding: gzip\r\n", "x"), 400),
        ("TE chunked, gzip", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"), 400),
        ("TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), 400),
        ("TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400),
        ("TE chunked twice", post("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400),
        (
            "two TE fields",
            post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        ("TE with a space before the colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), 400),
        (
            "TE on HTTP/1.0",
            format!("POST /web/x HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(),
            400,
        ),
        // Sizes.
        (
            "a head over --max-header-bytes",
            format!("GET /web/x HTTP/1.1\r\n{host}X-Big: {}\r\n\r\n", "a".repeat(5000)).into_bytes(),
            431,
        ),
        (
            "many headers over --max-header-bytes",
            format!(
                "GET /web/x HTTP/1.1\r\n{host}{}\r\n",
                "X-A: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n".repeat(90)
            )
            .into_bytes(),
            431,
        ),
        (
            "a target over --max-uri-bytes",
            format!("GET /web/{} HTTP/1.1\r\n{host}\r\n", "a".repeat(1100)).into_bytes(),
            414,
        ),
        (
            "an absolute target over --max-uri-bytes",
            format!("GET http://ours.example/own/{} HTTP/1.1\r\n{host}\r\n", "a".repeat(1010)).into_bytes(),
            414,
        ),
        // A target so long that the head passes --max-header-bytes: the head is refused first.
        (
            "a target over the head limit",
            format!("GET /web/{} HTTP/1.1\r\n{host}\r\n", "a".repeat(5000)).into_bytes(),
            431,
        ),
        // Not a forward proxy.
        ("CONNECT", b"CONNECT ours.example:443 HTTP/1.1\r\nHost: ours.example:443\r\n\r\n".to_vec(), 405),
        ("CONNECT to a route's path", format!("CONNECT /web/x HTTP/1.1\r\n{host}\r\n").into_bytes(), 405),
        // Absolute form: the authority decides, and other hosts are not ours.
        (
            "absolute form for another host",
            format!("GET http://other.example/own HTTP/1.1\r\n{host}\r\n").into_bytes(),
            404,
        ),
        ("absolute form, ftp", format!("GET ftp://ours.example/own HTTP/1.1\r\n{host}\r\n").into_bytes(), 400),
        // Host.
        ("two Hosts", format!("GET /own HTTP/1.1\r\n{host}Host: other.example\r\n\r\n").into_bytes(), 400),
        ("no Host", b"GET /web/x HTTP/1.1\r\n\r\n".to_vec(), 400),
    ];
    for (what, request, status) in &cases {
        refused(&gw, &instance, what, request, *status);
    }

    // Dot segments never leave a route's prefix, however written: refused (see README).
    for path in [
        "/web/../admin",
        "/web/./x",
        "/web/x/..",
        "/web/%2e%2e/admin",
        "/web/%2E%2E/admin",
        "/web/%2e%2E/admin",
        "/web/.%2e/admin",
        "/web/%2e./admin",
        "/web/..%2fadmin",
        "/web/%2e%2e%2fadmin",
        "/web/x%2f..%2f..%2fadmin",
        "/web/x%5c..%5cadmin",
        "/web/x\\..\\admin",
        "/own/../web/x",
    ] {
        let answer = refused(&gw, &instance, path, format!("GET {path} HTTP/1.1\r\n{host}\r\n").as_bytes(), 400);
        assert!(answer.contains("dot segment"), "{path}: {answer}");
    }

    // The refusals say why, in JSON like the gateway's other errors.
    let answer = refused(&gw, &instance, "CONNECT", &cases.iter().find(|c| c.0 == "CONNECT").unwrap().1, 405);
    assert!(answer.contains("\r\nallow: GET, HEAD, POST"), "{answer}");
    assert!(answer.contains(r#""error":"method not allowed""#) && answer.contains("forward proxy"), "{answer}");
    let answer = refused(&gw, &instance, "CL+TE", &cases[0].1, 400);
    assert!(answer.contains("Content-Length and Transfer-Encoding together"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close"), "{answer}");

    // A smuggled request behind a good one on one connection: the first is served, the bad one
    // refused, and nothing after it is read.
    let before = instance.seen();
    let (_, answer) = exchange_all(
        gw.port,
        format!(
            "GET /web/a HTTP/1.1\r\n{host}\r\nPOST /web/b HTTP/1.1\r\n{host}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /web/smuggled HTTP/1.1\r\n{host}\r\n"
        )
        .as_bytes(),
        true,
    );
    std::thread::sleep(Duration::from_millis(100));
    let statuses: Vec<&str> = answer.match_indices("HTTP/1.1 ").map(|(i, _)| &answer[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "400"], "{answer}");
    assert_eq!(instance.seen().0, before.0 + 1, "only the first request reached the instance");
}

#[test]
fn slowloris_is_cut_off_by_the_client_timeout_on_both_listeners() {
    let (_consul, instance, gw) = setup(&["--client-timeout", "1s"]);
    for (listener, port) in [("public", gw.port), ("admin", gw.admin_port)] {
        let before = instance.seen();
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let started = Instant::now();
        conn.write_all(b"GET /web/x HTTP/1.1\r\nHost: ours.example\r\n").unwrap();
        let mut buf = [0u8; 1024];
        // A header line every 200 ms, forever: only the timeout can end it.
        let cut = loop {
            assert!(started.elapsed() < Duration::from_secs(10), "{listener}: still open after 10 s");
            if conn.write_all(b"X-Slow: a\r\n").is_err() {
                break started.elapsed();
            }
            match conn.read(&mut buf) {
                Ok(_) => break started.elapsed(),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break started.elapsed(),
            }
        };
        assert!(cut >= Duration::from_millis(900) && cut < Duration::from_secs(4), "{listener}: cut after {cut:?}");
        assert_eq!(instance.seen(), before, "{listener}: the instance saw nothing");
    }
}

#[test]
fn connections_over_the_cap_are_refused_fast_and_open_ones_keep_working() {
    let (_consul, instance, gw) = setup(&["--max-connections", "8", "--client-timeout", "30s"]);
    let request = b"GET /web/x HTTP/1.1\r\nHost: ours.example\r\n\r\n";
    let mut open: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(request).unwrap();
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap();
            assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
            c
        })
        .collect();
    let before = instance.seen();
    let started = Instant::now();
    let mut over = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = over.write_all(request);
    let mut buf = [0u8; 1024];
    let read = over.read(&mut buf);
    let took = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    if let Err(e) = &read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "closed, not timed out: {e}");
    }
    assert!(took < Duration::from_secs(1), "refused in {took:?}");
    assert_eq!(instance.seen(), before, "the refused connection's request went nowhere");
    let metrics = reqwest::blocking::get(gw.admin("/metrics")).unwrap().text().unwrap();
    assert!(metrics.contains("gateway_connections_refused_total 1"), "{metrics}");

    // An established connection still gets answers.
    let first = &mut open[0];
    first.write_all(request).unwrap();
    let n = first.read(&mut buf).unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);

    // A place freed is taken again.
    drop(open.pop());
    std::thread::sleep(Duration::from_millis(200));
    let (status, answer) = exchange(gw.port, b"GET /web/x HTTP/1.1\r\nHost: ours.example\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{answer}");
}
