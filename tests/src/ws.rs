//! A WebSocket echo instance (tokio-tungstenite): every text or binary message comes back as
//! sent, pings are answered, and a close from the client is answered with a close (the close
//! handshake, RFC 6455 §5.5.1). It runs its own single-threaded runtime on a thread of its own,
//! so that the blocking tests can use it; dropping it stops accepting and closes its connections.
//!
//! Also a blocking WebSocket client ([`connect`]) for those tests, on its own runtime too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A running WebSocket echo instance.
pub struct WsEcho {
    /// Its port on 127.0.0.1.
    pub port: u16,
    handshakes: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WsEcho {
    /// Starts an instance on a free loopback port.
    pub fn start() -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let port = std_listener.local_addr().expect("local addr").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel();
        let counted = handshakes.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((conn, _)) = accepted else { continue };
                            tokio::spawn(echo(conn, counted.clone()));
                        }
                        _ = &mut stopped => return,
                    }
                }
            });
            // Dropping the runtime drops its tasks: every connection closes.
        });
        Self { port, handshakes, stop: Some(stop), thread: Some(thread) }
    }

    /// How many WebSocket handshakes it completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection: the handshake (any path), then echoes until the client closes.
async fn echo(conn: TcpStream, handshakes: Arc<AtomicUsize>) {
    let _ = conn.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(conn).await else { return };
    handshakes.fetch_add(1, Ordering::SeqCst);
    // After a close from the client, the next poll sends tungstenite's close reply and ends.
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// A blocking WebSocket client connection, with its own runtime.
pub struct WsClient {
    rt: tokio::runtime::Runtime,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The handshake's answer (status and headers).
    pub response: tungstenite::http::Response<Option<Vec<u8>>>,
}

/// Opens a WebSocket to `url` (`ws://127.0.0.1:port/path`), within 10 s.
///
/// # Errors
/// The handshake's error (a non-101 answer is `tungstenite::Error::Http`).
pub fn connect(url: &str) -> Result<WsClient, tungstenite::Error> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let connecting =
        async { tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url)).await };
    let (ws, response) = rt.block_on(connecting).map_err(|_| tungstenite::Error::ConnectionClosed)??;
    Ok(WsClient { rt, ws, response })
}

impl WsClient {
    /// Sends `msg`.
    ///
    /// # Errors
    /// The connection's error.
    pub fn send(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.rt.block_on(self.ws.send(msg))
    }

    /// The next message within `timeout`: `Ok(None)` when the connection ended (closed or reset)
    /// or nothing came in time, with which one in the error text.
    ///
    /// # Errors
    /// `"timed out"` when nothing came within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Message>, String> {
        let ws = &mut self.ws;
        match self.rt.block_on(async { tokio::time::timeout(timeout, ws.next()).await }) {
            Err(_) => Err("timed out".into()),
            Ok(None) | Ok(Some(Err(_))) => Ok(None),
            Ok(Some(Ok(m))) => Ok(Some(m)),
        }
    }

    /// Starts the close handshake (sends a close frame), then reads until the instance's close
    /// reply; returns whether it came within `timeout`.
    pub fn close(&mut self, timeout: Duration) -> bool {
        if self.rt.block_on(self.ws.close(None)).is_err() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ws = &mut self.ws;
            match self.rt.block_on(async { tokio::time::timeout_at(deadline, ws.next()).await }) {
                Err(_) => return false,
                Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
                Ok(None) | Ok(Some(Err(_))) => return false,
            }
        }
    }
}
