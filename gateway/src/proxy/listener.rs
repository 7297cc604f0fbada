//! The public listener: accepts client connections and serves each with hyper's HTTP/1.1 or
//! HTTP/2 server, every request going to [`Proxy::serve`]. A cleartext client's version is told
//! from its first bytes ([`sniff`]: HTTP/2 with prior knowledge, h2c, or HTTP/1.x), on the same
//! port. HTTP/1.1 connections keep hyper's upgrades possible (`Upgrade`, RFC 9110 §7.8).
//!
//! With TLS ([`crate::tls`]) every connection starts with a handshake, and the protocol the
//! client chose by ALPN (`h2` or `http/1.1`) says which server serves it; the instance learns
//! it through `X-Forwarded-Proto: https`.
//!
//! A client that sends no complete request head within the client timeout (slow, stalled, or idle
//! on keep-alive) is disconnected; so is one that sends nothing at all before its version is
//! known; an HTTP/2 connection that moves no byte for that long is shut down ([`crate::proxy::idle`]). On
//! shutdown it stops accepting, lets keep-alive connections finish their current
//! request (HTTP/2 ones get a GOAWAY), and returns once all have closed.
//!
//! No router and no tower stack sit in front of the proxy: every path is the proxy's, and the
//! layers cost instructions on each request (a boxed future, a connect-info extension map).
//!
//! Each connection counts as open in the metrics while it lasts, and each request is measured
//! ([`Proxy::handle`]).
//!
//! HTTP/2 streams run as tasks spawned with `tokio::spawn`: every runtime serving this listener is
//! single-threaded (the main one, or a worker's, [`crate::proxy::workers`]), so a stream stays
//! on the thread of its connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error};

use crate::observe::metrics::{Open, OpenGuard};
use crate::proxy::drain::{Drain, Watcher};
use crate::proxy::framing::{Scan, Tap};
use crate::proxy::idle::Activity;
use crate::proxy::limit::{ConnectionLimit, Permit};
use crate::proxy::sniff::{self, Version};
use crate::proxy::Proxy;

/// How the public listener talks to clients, besides the proxy behind it.
#[derive(Clone)]
pub struct Front {
    /// How long a client may take to send a request's headers, which also bounds how long a
    /// keep-alive connection may sit idle between requests (hyper times both as one header read),
    /// and how long a new connection may take to show which protocol it speaks.
    pub client_timeout: Duration,
    /// TLS termination: every connection starts with a handshake (bounded by the client
    /// timeout) and its ALPN protocol says HTTP/2 or HTTP/1.1. `None`: cleartext, where the
    /// first bytes say it.
    pub tls: Option<TlsAcceptor>,
    /// The largest request head (request line and header fields; HTTP/2: the header list), in
    /// bytes; hyper answers a larger one with 431.
    pub max_header_bytes: usize,
    /// The open client connections and their cap, shared by every worker.
    pub connections: ConnectionLimit,
}

/// hyper's servers, configured once per listener and shared by its connections.
struct Servers {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// How long an HTTP/2 connection may move no byte before it is shut down.
    idle_limit: Duration,
}

impl Servers {
    fn new(front: &Front) -> Self {
        let mut h1 = http1::Builder::new();
        // One contiguous write per response: cheaper than a writev of head and body for small ones.
        h1.writev(false);
        h1.timer(TokioTimer::new());
        h1.header_read_timeout(front.client_timeout);
        h1.max_header_size(front.max_header_bytes);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new());
        h2.max_header_list_size(u32::try_from(front.max_header_bytes).unwrap_or(u32::MAX));
        Self { h1, h2, idle_limit: front.client_timeout }
    }
}

/// Serves `listener` until `stop` turns true, then waits for open connections to finish.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, front: Front, stop: watch::Receiver<bool>) {
    let connections = Drain::new();
    let servers = Arc::new(Servers::new(&front));
    let stopped = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        // Above the cap, closed unread at once (RST if it sent something): refused in one round
        // trip, where not accepting would leave it waiting in the backlog.
        let Some(permit) = front.connections.try_acquire() else {
            debug!(%peer, max = front.connections.max(), "connection refused: --max-connections reached");
            proxy.metrics.connection_refused();
            drop(stream);
            continue;
        };
        // Responses are written whole; Nagle would only hold them back.
        let _ = stream.set_nodelay(true);
        let watcher = connections.watcher();
        let open = proxy.metrics.open(Open::Client);
        let conn = Conn {
            proxy: proxy.clone(),
            servers: servers.clone(),
            watcher,
            peer,
            tls: front.tls.is_some(),
            _open: open,
            _permit: permit,
        };
        match &front.tls {
            None => tokio::spawn(conn.plain(stream, front.client_timeout, stop.clone())),
            Some(tls) => tokio::spawn(conn.handshake(stream, tls.clone(), front.client_timeout, stop.clone())),
        };
    }
    drop(listener);
    connections.finished().await;
}

/// One accepted client connection.
struct Conn {
    proxy: Arc<Proxy>,
    servers: Arc<Servers>,
    watcher: Watcher,
    peer: SocketAddr,
    /// Whether it came over TLS.
    tls: bool,
    /// Counts it as open until it closes.
    _open: OpenGuard,
    /// Its place under `--max-connections`.
    _permit: Permit,
}

impl Conn {
    /// A cleartext connection: its version from its first bytes, then served. A client still
    /// silent when shutdown starts is dropped.
    async fn plain(self, stream: TcpStream, timeout: Duration, mut stop: watch::Receiver<bool>) {
        let version = tokio::select! {
            v = sniff::sniff(&stream, timeout) => match v {
                Ok(v) => v,
                Err(e) => return debug!(peer = %self.peer, error = %e, "client sent no request"),
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        self.serve(stream, version).await;
    }

    /// A TLS connection: the handshake within `timeout`, then HTTP/2 if the client chose `h2`
    /// by ALPN, HTTP/1.1 otherwise. A client still in its handshake when shutdown starts is
    /// dropped, as a silent cleartext one is: it has sent no request to finish.
    async fn handshake(
        self,
        stream: TcpStream,
        acceptor: TlsAcceptor,
        timeout: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let accepted = tokio::select! {
            a = tokio::time::timeout(timeout, acceptor.accept(stream)) => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            Err(_) => return debug!(peer = %self.peer, "TLS handshake timed out"),
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve(stream, if h2 { Version::H2 } else { Version::Http1 }).await;
    }

    /// Serves HTTP `version` on `stream` until either side closes it, or shutdown drains it.
    /// HTTP/2 connections idle for the client timeout are shut down too ([`crate::proxy::idle`]).
    async fn serve<S>(self, stream: S, version: Version)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn { proxy, servers, watcher, peer, tls, _open, _permit } = self;
        let result = match version {
            Version::Http1 => {
                // Smuggling signs hyper hides are read off the bytes ([`framing`]), and each
                // request learns its head's verdict.
                let scan = Arc::new(Scan::default());
                let stream = Tap::new(stream, scan.clone());
                let service = service_fn(move |mut req| {
                    crate::proxy::guard::mark(&mut req, &scan);
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, Some(peer), tls).await) }
                });
                let conn = servers.h1.serve_connection(TokioIo::new(stream), service).with_upgrades();
                watcher.watch(conn, |c| c.graceful_shutdown()).await
            }
            Version::H2 => {
                let service = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, Some(peer), tls).await) }
                });
                let (stream, idle) = Activity::new(stream);
                let conn = servers.h2.serve_connection(TokioIo::new(stream), service);
                watcher.watch_idle(conn, |c| c.graceful_shutdown(), idle, servers.idle_limit).await
            }
        };
        if let Err(e) = result {
            debug!(%peer, error = %e, "client connection ended with an error");
        }
    }
}

/// Accept errors: a connection that died in the backlog is nobody's concern; anything else
/// (out of file descriptors, typically) is logged and retried after a pause, as hyper 0.14 did.
pub(crate) async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::direct::StaticRead;
    use crate::discovery::services::Services;
    use crate::discovery::tag::TagRules;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(
        client_timeout: Duration,
    ) -> (std::net::SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        start_with(client_timeout, None).await
    }

    async fn start_with(
        client_timeout: Duration,
        tls: Option<TlsAcceptor>,
    ) -> (std::net::SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
        let proxy = Arc::new(crate::proxy::test_proxy(services, Duration::from_secs(1)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let front = Front { client_timeout, tls, max_header_bytes: 32 * 1024, connections: ConnectionLimit::new(64) };
        let task = tokio::spawn(serve(listener, proxy, front, stop_rx));
        (addr, stop_tx, task)
    }

    /// Reads until the server closes the connection; the bytes read.
    async fn read_to_close(conn: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await.expect("closed in time");
        out
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_disconnected_after_the_client_timeout() {
        let (addr, _stop, _task) = start(Duration::from_millis(200)).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        read_to_close(&mut silent).await;
        assert!(started.elapsed() >= Duration::from_millis(150), "not before the timeout");

        // A half-sent head (slowloris) too.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /web/x HTTP/1.1\r\nhost: a\r\n").await.unwrap();
        read_to_close(&mut slow).await;
    }

    #[tokio::test]
    async fn requests_are_answered_and_shutdown_waits_for_nothing_idle() {
        let (addr, stop, task) = start(Duration::from_secs(30)).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /nope/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await.unwrap();
        let answer = String::from_utf8(read_to_close(&mut conn).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains("no route"), "{answer}");

        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("an idle connection does not hold up shutdown")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
    }

    #[tokio::test]
    async fn http2_with_prior_knowledge_and_http1_share_the_port() {
        use http_body_util::Empty;
        let (addr, _stop, _task) = start(Duration::from_secs(30)).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        for _ in 0..2 {
            let req = http::Request::get("http://a.example/nope/x").body(Empty::<bytes::Bytes>::new()).unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!((resp.status().as_u16(), resp.version()), (404, http::Version::HTTP_2));
            assert!(resp.headers().get("connection").is_none(), "no connection-specific header over h2");
        }

        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"PUT /nope/x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_to_close(&mut conn).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }

    #[tokio::test]
    async fn a_tls_handshake_is_bounded_by_the_client_timeout() {
        let (addr, _stop, _task) = start_with(Duration::from_millis(200), Some(test_acceptor())).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        read_to_close(&mut silent).await;
        assert!(started.elapsed() >= Duration::from_millis(150), "not before the timeout");
        // Half a ClientHello, then nothing.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
        read_to_close(&mut slow).await;
    }

    #[tokio::test]
    async fn a_tls_client_still_in_its_handshake_does_not_hold_up_shutdown() {
        // A TCP health check, or a client that connected and sent nothing (or half a hello).
        let (addr, stop, task) = start_with(Duration::from_secs(30), Some(test_acceptor())).await;
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("a connection without a request does not hold up shutdown, as in cleartext")
            .unwrap();
    }

    /// An acceptor with a self-signed certificate for `localhost`.
    fn test_acceptor() -> TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let provider = crate::tls::provider();
        let chain = vec![made.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(made.key_pair.serialize_pem().as_bytes()).unwrap();
        let ck = rustls::sign::CertifiedKey::from_der(chain, key, &provider).unwrap();
        let certs = Arc::new(crate::tls::Certificates::new(crate::tls::certs::Names::new(Arc::new(ck))));
        crate::tls::acceptor(provider, certs).unwrap()
    }

    #[tokio::test]
    async fn an_idle_http2_connection_is_closed_after_the_client_timeout() {
        use http_body_util::Empty;
        let (addr, _stop, _task) = start(Duration::from_millis(300)).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get("http://a.example/nope/x").body(Empty::<bytes::Bytes>::new()).unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), 404);
        let started = std::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), conn).await.expect("closed by the gateway");
        assert!(ended.unwrap().is_ok(), "a graceful close (GOAWAY)");
        assert!(started.elapsed() >= Duration::from_millis(200), "not before the timeout");
    }
}
