//! Serving on several threads the way nginx runs worker processes: each worker thread runs a
//! single-threaded runtime with a listening socket of its own, all bound to the same address with
//! `SO_REUSEPORT`, so the kernel spreads client connections over the workers and a request, its
//! upstream connection and the task that drives it stay on one thread.
//!
//! A work-stealing multi-thread runtime measured ~20% more CPU per proxied request than one
//! single-threaded runtime (tasks and wake-ups cross threads); this keeps the single-threaded cost
//! on every worker. The watcher socket, the supervisor and the admin listener stay on the main
//! thread's runtime.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::error;

use crate::proxy::listener::{self, Front};
use crate::proxy::upstream;
use crate::proxy::Proxy;

/// Binds `n` listening sockets to `addr`; with more than one, `SO_REUSEPORT` lets them share it.
/// Port 0 is resolved by the first socket and reused by the others.
///
/// `SO_REUSEPORT` would also let these sockets join ones another process (of the same user) holds
/// on the port, splitting traffic silently; so the address is first bound without it, which fails
/// with "address in use" as a single socket would.
pub fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    if n > 1 {
        addr = plain(addr)?.local_addr()?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if n > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// A listening socket without `SO_REUSEPORT`: it fails if anything listens on `addr`.
fn plain(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1)?;
    Ok(socket.into())
}

/// The worker threads; [`Workers::finished`] resolves when every one has drained.
pub struct Workers {
    done: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one worker thread per listener, each serving it until `stop` turns true.
    pub fn spawn(
        listeners: Vec<std::net::TcpListener>,
        proxy: Arc<Proxy>,
        front: Front,
        stop: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let mut done = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            // A clone of its own (sharing routes, metrics and log): see [`Proxy`].
            let proxy = Arc::new(Proxy::clone(&proxy));
            let (front, stop) = (front.clone(), stop.clone());
            std::thread::Builder::new().name(format!("gateway-worker-{i}")).spawn(move || {
                upstream::set_thread_slot(i);
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return error!(worker = i, error = %e, "cannot start a worker's runtime"),
                };
                rt.block_on(async move {
                    match TcpListener::from_std(l) {
                        Ok(l) => listener::serve(l, proxy, front, stop).await,
                        Err(e) => error!(worker = i, error = %e, "cannot register a worker's listener"),
                    }
                });
                let _ = tx.send(());
            })?;
            done.push(rx);
        }
        Ok(Self { done })
    }

    /// Waits until every worker has stopped accepting and its connections have closed. A worker
    /// that failed to start counts as finished.
    pub async fn finished(self) {
        for rx in self.done {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_share_one_port_even_when_it_is_chosen_by_the_kernel() {
        let ls = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != 0 && ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    }

    #[test]
    fn a_single_listener_does_not_share_its_port() {
        let one = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = one[0].local_addr().unwrap();
        assert!(bind(addr, 1).is_err(), "a second plain bind to a taken port fails");
        assert!(bind(addr, 2).is_err(), "and so does a shared one: the first socket did not opt in");
    }

    #[test]
    fn a_port_another_group_shares_is_refused_too() {
        let group = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = group[0].local_addr().unwrap();
        let err = bind(addr, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "not joined silently");
    }
}
