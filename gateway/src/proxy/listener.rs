//! The public listener: accepts client connections and serves each with hyper's HTTP/1.1 server,
//! every request going to [`Proxy::serve`]. A client that sends no complete request head within
//! the client timeout (slow, stalled, or idle on keep-alive) is disconnected. On shutdown it stops
//! accepting, lets keep-alive connections finish their current request, and returns once all
//! have closed. Connections are served with upgrades, so that a `101` hands the client's
//! connection over to a tunnel ([`crate::proxy::tunnel`]).
//!
//! No router and no tower stack sit in front of the proxy: every path is the proxy's, and the
//! layers cost instructions on each request (a boxed future, a connect-info extension map).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error};

use crate::proxy::Proxy;

/// Serves `listener` until `stop` turns true, then waits for open connections to finish.
/// A client gets `client_timeout` to send a request's headers, which also bounds how long a
/// keep-alive connection may sit idle between requests (hyper times both as one header read).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    client_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // hyper-util's GracefulShutdown cannot watch an upgradeable HTTP/1.1 connection: each
    // connection task watches `stop` itself, and holds a receiver of `open` until it ends.
    let (open, _) = watch::channel(());
    let mut http = http1::Builder::new();
    // One contiguous write per response: cheaper than a writev of head and body for small ones.
    http.writev(false);
    http.timer(TokioTimer::new());
    http.header_read_timeout(client_timeout);
    let connection_stop = stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
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
        // Responses are written whole; Nagle would only hold them back.
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.serve(req, Some(peer)).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let (mut stop, held) = (connection_stop.clone(), open.subscribe());
        tokio::spawn(async move {
            tokio::pin!(conn);
            // Biased: no random branch order to draw on every wake-up of a busy connection.
            let ended = tokio::select! {
                biased;
                ended = conn.as_mut() => ended,
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "client connection ended with an error");
            }
            drop(held);
        });
    }
    drop(listener);
    open.closed().await;
}

/// Accept errors: a connection that died in the backlog is nobody's concern; anything else
/// (out of file descriptors, typically) is logged and retried after a pause, as hyper 0.14 did.
async fn accept_failed(e: io::Error) {
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
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
        let proxy = Arc::new(Proxy {
            services,
            timeouts: crate::proxy::upstream::Timeouts {
                connect: Duration::from_secs(1),
                idle: Duration::from_secs(60),
            },
            timeout: Duration::from_secs(1),
            max_replay_body: 1024,
            tunnel_idle_timeout: Duration::from_secs(60),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, proxy, client_timeout, stop_rx));
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
}
