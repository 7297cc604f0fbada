//! The public listener: accepts client connections and serves each with hyper's HTTP/1.1 server,
//! every request going to [`Proxy::serve`]. On shutdown it stops accepting, lets keep-alive
//! connections finish their current request, and returns once all have closed.
//!
//! No router and no tower stack sit in front of the proxy: every path is the proxy's, and the
//! layers cost instructions on each request (a boxed future, a connect-info extension map).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error};

use crate::proxy::Proxy;

/// Serves `listener` until `stop` turns true, then waits for open connections to finish.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, mut stop: watch::Receiver<bool>) {
    let connections = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.writev(false);
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
        let conn = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
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
