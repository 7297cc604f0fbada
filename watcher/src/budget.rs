//! The budget of non-blocking reads in flight at once, shared by the multiplexed watch's
//! re-reads ([`crate::mux`]) and the catalog scans ([`crate::scan`]): one semaphore, one permit
//! per read. Its size is [`crate::mux::READ_CONCURRENCY`].

use tokio::sync::Semaphore;

/// Runs one read under the shared budget. Before giving the permit back it lets the runtime run
/// once more: the HTTP client returns a finished connection to its pool from a task of its own,
/// and a read started before that task ran would open a new connection instead of reusing it.
pub(crate) async fn budgeted<T>(budget: &Semaphore, read: impl std::future::Future<Output = T>) -> T {
    let _permit = budget.acquire().await;
    let out = read.await;
    tokio::task::yield_now().await;
    out
}
