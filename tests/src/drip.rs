//! A streaming instance for the tests of unbuffered responses: every request is answered `200`
//! (`Transfer-Encoding: chunked`, `Content-Type: text/event-stream`), then one byte per chunk,
//! `count` of them, `interval` apart, each written (and sent: Nagle is off) on its own. It keeps
//! the time each byte was written, for comparison with when a client got it.
//!
//! Plain threads on `std::net`, one request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running drip instance; it stops accepting when dropped (after its next connection).
pub struct Drip {
    /// Its port on 127.0.0.1.
    pub port: u16,
    written: Arc<Mutex<Vec<Instant>>>,
}

impl Drip {
    /// Starts an instance that writes `count` bytes (`0`, `1`, ... as digits), `interval` apart.
    pub fn start(count: usize, interval: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let written = Arc::new(Mutex::new(Vec::new()));
        let times = written.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let times = times.clone();
                std::thread::spawn(move || serve(conn, count, interval, &times));
            }
        });
        Self { port, written }
    }

    /// When each byte of the last answer was written (in order).
    pub fn written(&self) -> Vec<Instant> {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn serve(conn: TcpStream, count: usize, interval: Duration, times: &Mutex<Vec<Instant>>) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        return;
    }
    if crate::http1::read_after(&line, &mut reader).is_none() {
        return;
    }
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    times.lock().unwrap_or_else(|e| e.into_inner()).clear();
    for i in 0..count {
        std::thread::sleep(interval);
        let byte = b'0' + (i % 10) as u8;
        if out.write_all(&[b'1', b'\r', b'\n', byte, b'\r', b'\n']).is_err() {
            return;
        }
        times.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
    }
    let _ = out.write_all(b"0\r\n\r\n");
}

/// Sends `GET <path>` to `port` on 127.0.0.1 and reads the response body (chunked, or with a
/// `Content-Length`), noting when each body byte arrived. Returns the status line, the body and the arrival times; gives up
/// (returning what it has) after `timeout`.
pub fn get_timed(port: u16, path: &str, timeout: Duration) -> (String, Vec<u8>, Vec<Instant>) {
    let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = conn.set_read_timeout(Some(timeout));
    let mut out = conn.try_clone().expect("clone");
    let request = format!("GET {path} HTTP/1.1\r\nhost: drip\r\nconnection: close\r\n\r\n");
    out.write_all(request.as_bytes()).expect("send");
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    let _ = reader.read_line(&mut status);
    let (mut body, mut arrived) = (Vec::new(), Vec::new());
    // Headers, then (chunked) chunks: a size line, that many bytes, CRLF; size 0 ends the body.
    let mut line = String::new();
    let mut length: Option<usize> = None;
    while matches!(reader.read_line(&mut line), Ok(n) if n > 2) {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
        line.clear();
    }
    // A body with a length (what a buffering proxy sends): the bytes as they come.
    if let Some(mut left) = length {
        let mut buf = [0u8; 64];
        while left > 0 {
            let Ok(n) = reader.read(&mut buf[..left.min(64)]) else { break };
            if n == 0 {
                break;
            }
            arrived.extend(std::iter::repeat_n(Instant::now(), n));
            body.extend_from_slice(&buf[..n]);
            left -= n;
        }
        return (status.trim().to_string(), body, arrived);
    }
    loop {
        line.clear();
        if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            break;
        }
        let Ok(size) = usize::from_str_radix(line.trim(), 16) else { break };
        if size == 0 {
            break;
        }
        let mut chunk = vec![0u8; size];
        if reader.read_exact(&mut chunk).is_err() {
            break;
        }
        let now = Instant::now();
        arrived.extend(std::iter::repeat_n(now, size));
        body.extend_from_slice(&chunk);
        let mut crlf = [0u8; 2];
        if reader.read_exact(&mut crlf).is_err() {
            break;
        }
    }
    (status.trim().to_string(), body, arrived)
}
