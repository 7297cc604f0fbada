//! A plain-threads HTTP/1.1 instance for the tests of the gateway's upstream connections: it
//! closes keep-alive connections left idle for a set time, as Node, gunicorn or a Go server with
//! `IdleTimeout` do, and it can misbehave after bodiless responses as some servers do.
//!
//! The idle close is modelled at its worst: a request that arrives on a connection idle for the
//! timeout or longer is taken as having crossed the server's close on the wire. It is not
//! answered and the connection is closed, as a server whose timer fired just before the request
//! came. (A real server is in that race for only a moment around the timeout, so a few percent of
//! requests spaced about one timeout apart fail on a gateway that reuses such connections.) A
//! connection idle a little longer is closed outright.
//!
//! Every request is answered `200` with `<METHOD> <path>` as the body, except:
//! - `/odd/<status>`: `<status>` with `Content-Length: 5`, then, in a write of its own, `hello`
//!   (a stray body after a `204` or `304`; Nagle's algorithm is left on, as servers do).
//!
//! Written on `std::net` so that what goes on the wire is exactly what the test says.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running instance; stops accepting when dropped.
pub struct Backend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// How many requests of each method it answered.
    pub seen: Arc<Mutex<BTreeMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// Starts an instance that closes a connection idle for `idle`, and sends `keep_alive` as
    /// its `Keep-Alive` header when given (e.g. `timeout=1`).
    pub fn start(idle: Duration, keep_alive: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (counts, stopped) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let counts = counts.clone();
                std::thread::spawn(move || serve(conn, idle, keep_alive, &counts));
            }
        });
        Self { port, seen, stop }
    }

    /// How many requests with `method` the instance answered.
    pub fn count(&self, method: &str) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(method).copied().unwrap_or(0)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one connection until the client closes it or it sits idle for `idle`.
fn serve(conn: TcpStream, idle: Duration, keep_alive: Option<&str>, seen: &Mutex<BTreeMap<String, usize>>) {
    let _ = conn.set_read_timeout(Some(idle + Duration::from_millis(200)));
    let Ok(mut out) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let mut last_answer: Option<Instant> = None;
    loop {
        let mut line = String::new();
        // A read timeout here is the idle timeout: the connection is dropped, so closed.
        if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            return;
        }
        if last_answer.is_some_and(|t| t.elapsed() >= idle) {
            return; // crossed the idle close: dropped unanswered
        }
        let Some(crate::http1::Request { method, path, .. }) = crate::http1::read_after(&line, &mut reader) else {
            return;
        };
        *seen.lock().unwrap_or_else(|e| e.into_inner()).entry(method.clone()).or_default() += 1;
        let ka = keep_alive.map(|v| format!("keep-alive: {v}\r\n")).unwrap_or_default();
        let written = match path.strip_prefix("/odd/") {
            Some(status) => out
                .write_all(format!("HTTP/1.1 {status} Odd\r\n{ka}content-length: 5\r\n\r\n").as_bytes())
                .and_then(|()| out.write_all(b"hello")),
            None => {
                let text = format!("{method} {path}");
                let head = format!("HTTP/1.1 200 OK\r\n{ka}content-length: {}\r\n\r\n", text.len());
                out.write_all(format!("{head}{text}").as_bytes())
            }
        };
        if written.is_err() {
            return;
        }
        last_answer = Some(Instant::now());
    }
}
