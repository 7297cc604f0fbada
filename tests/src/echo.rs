//! An instance that tells what it received: every request is answered `200` with a JSON body
//! `{"port": P, "method": "GET", "path": "/x?q=1", "headers": {"host": "...", ...}}` (the path and
//! query exactly as received, header names lowercased, repeated headers joined with `, `).
//!
//! Plain threads on `std::net`, HTTP/1.1 keep-alive (`Content-Length` on every answer; a
//! connection is closed when the client asks for it). Dropping it stops accepting and closes the
//! connections it holds, as a stopped process would.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A running echo instance.
pub struct Echo {
    /// Its port on 127.0.0.1.
    pub port: u16,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    conns: Conns,
}

/// The open connections, by a serial number, so that a drop can close them.
type Conns = Arc<Mutex<HashMap<u64, TcpStream>>>;

fn lock(conns: &Conns) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
    conns.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an echo instance says it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echoed {
    /// The instance's port.
    pub port: u16,
    /// The request method.
    pub method: String,
    /// The request target as received (path and query).
    pub path: String,
    /// The request headers, names lowercased.
    pub headers: BTreeMap<String, String>,
}

impl Echoed {
    /// Reads an echo answer's JSON body; `None` if it is not one.
    pub fn parse(v: &serde_json::Value) -> Option<Self> {
        let headers = v["headers"]
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Self {
            port: u16::try_from(v["port"].as_u64()?).ok()?,
            method: v["method"].as_str()?.to_string(),
            path: v["path"].as_str()?.to_string(),
            headers,
        })
    }

    /// A header's value, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

impl Echo {
    /// Starts an instance on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let (count, stopped, held) = (served.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            for (serial, conn) in (0u64..).zip(listener.incoming()) {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let Ok(copy) = conn.try_clone() else { continue };
                lock(&held).insert(serial, copy);
                if stopped.load(Ordering::SeqCst) {
                    // Dropped meanwhile, maybe after it closed what it held.
                    let _ = conn.shutdown(Shutdown::Both);
                    return;
                }
                let (count, held) = (count.clone(), held.clone());
                std::thread::spawn(move || {
                    serve(conn, port, &count);
                    lock(&held).remove(&serial);
                });
            }
        });
        Self { port, served, stop, conns }
    }

    /// How many requests it answered.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag, then close every connection.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for (_, c) in lock(&self.conns).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one connection until the client closes it, asks to, or sends something unreadable.
fn serve(conn: TcpStream, port: u16, served: &AtomicUsize) {
    // Bounded: a connection idle for a minute is dropped (the gateway closes idle ones sooner).
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            return;
        }
        let Some(crate::http1::Request { method, path, headers, .. }) = crate::http1::read_after(&line, &mut reader)
        else {
            return;
        };
        let close = headers.get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let text = serde_json::json!({"port": port, "method": method, "path": path, "headers": headers}).to_string();
        let connection = if close { "connection: close\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{connection}content-length: {}\r\n\r\n",
            text.len()
        );
        served.fetch_add(1, Ordering::SeqCst);
        if out.write_all(format!("{head}{text}").as_bytes()).is_err() || close {
            return;
        }
    }
}
