//! Graceful shutdown of client connections, for any kind of hyper connection: when the drain
//! starts, each connection is told to finish (HTTP/1.1: after its current request; HTTP/2: a
//! GOAWAY, then its open streams), and [`Drain::finished`] resolves once all have closed.
//!
//! hyper-util's `GracefulShutdown` does the same, but (0.1.21) not for an HTTP/1.1 connection
//! that keeps upgrades possible (`http1::UpgradeableConnection`), which the listener needs.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

use crate::proxy::idle::Idle;

/// The listener's side: starts the drain and waits for it.
pub struct Drain {
    tx: watch::Sender<()>,
}

/// A connection's side: one per connection, held until it closes.
pub struct Watcher {
    rx: watch::Receiver<()>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// No connection yet.
    pub fn new() -> Self {
        Self { tx: watch::channel(()).0 }
    }

    /// A watcher for one more connection (made on the accepting side, so a connection accepted
    /// before the drain starts is always counted).
    pub fn watcher(&self) -> Watcher {
        Watcher { rx: self.tx.subscribe() }
    }

    /// Tells every connection to finish, and waits until all have closed.
    pub async fn finished(self) {
        let _ = self.tx.send(());
        self.tx.closed().await;
    }
}

impl Watcher {
    /// Drives `conn` to its end; when the drain starts, calls `shutdown` on it first (hyper's
    /// `graceful_shutdown`) and keeps driving it.
    pub async fn watch<C, F>(mut self, conn: C, shutdown: F) -> C::Output
    where
        C: Future,
        F: FnOnce(Pin<&mut C>),
    {
        tokio::pin!(conn);
        tokio::select! {
            biased;
            out = conn.as_mut() => return out,
            _ = self.rx.changed() => shutdown(conn.as_mut()),
        }
        conn.await
    }

    /// As [`Watcher::watch`], and also calls `shutdown` once `idle` shows no byte moved on the
    /// connection for `limit`.
    pub async fn watch_idle<C, F>(mut self, conn: C, shutdown: F, idle: Idle, limit: Duration) -> C::Output
    where
        C: Future,
        F: FnOnce(Pin<&mut C>),
    {
        tokio::pin!(conn);
        loop {
            let wait = limit.saturating_sub(idle.idle_for());
            tokio::select! {
                biased;
                out = conn.as_mut() => return out,
                _ = self.rx.changed() => break,
                () = tokio::time::sleep(wait) => {
                    if idle.idle_for() >= limit {
                        tracing::debug!(idle = ?limit, "closing an idle client connection");
                        break;
                    }
                }
            }
        }
        shutdown(conn.as_mut());
        conn.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_drain_waits_for_connections_told_to_finish() {
        let drain = Drain::new();
        let (told_tx, told_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = drain.watcher();
        let conn = tokio::spawn(async move {
            // A "connection" that ends a little after it is told to.
            let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
            let shutdown = move |_: Pin<&mut _>| {
                let _ = told_tx.send(());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = end_tx.send(());
                });
            };
            watcher.watch(async move { end_rx.await.ok() }, shutdown).await
        });
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(2), drain.finished()).await.expect("drained");
        assert!(told_rx.await.is_ok(), "the connection was told");
        assert!(started.elapsed() >= Duration::from_millis(40), "and waited for");
        assert_eq!(conn.await.unwrap(), Some(()));
    }
}
