//! The cap on open client connections (`--max-connections`), shared by every worker's listener
//! (and one of its own for the admin listener): above it, a new connection is accepted and closed
//! at once, without reading from it, so a flood of connections (or of slowloris clients, which
//! the client timeout cuts off in the end) cannot take the file descriptors the gateway needs for
//! its instances, and the clients it refuses learn it in one round trip instead of waiting in the
//! kernel's backlog. Connections already open are untouched.
//!
//! The default comes from the process's file-descriptor limit ([`default_max_connections`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Descriptors kept back from client connections by [`default_max_connections`]: the listening
/// sockets, the watcher's socket and pipes, the admin listener's connections, the access log,
/// epoll and timer descriptors, Consul reads, with room to spare.
pub const RESERVED_FDS: u64 = 256;

/// The default `--max-connections`: `(RLIMIT_NOFILE soft limit − RESERVED_FDS) / 2`, at least 16.
/// Each client connection may hold one connection to an instance while its request is in flight,
/// hence two descriptors per client. (Idle pooled connections to instances are closed once the
/// pool is full or they expire, and a new connection refused for want of a descriptor is retried
/// elsewhere.) With the common soft limit of 1024 that is 384; with 65536, 32640. The limit is
/// read from `/proc/self/limits`; where it cannot be read (or is unlimited), 1024 is assumed.
pub fn default_max_connections() -> usize {
    let soft = procfs::process::Process::myself()
        .and_then(|p| p.limits())
        .ok()
        .and_then(|l| match l.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => Some(v),
            procfs::process::LimitValue::Unlimited => None,
        })
        .unwrap_or(1024);
    from_fd_limit(soft)
}

/// The formula of [`default_max_connections`] for a soft limit of `soft` descriptors.
pub fn from_fd_limit(soft: u64) -> usize {
    usize::try_from(soft.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX).max(16)
}

/// Open connections against their cap; clones share the count.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl ConnectionLimit {
    /// At most `max` connections open at once.
    pub fn new(max: usize) -> Self {
        Self { open: Arc::new(AtomicUsize::new(0)), max }
    }

    /// A place for one more connection, held until the [`Permit`] is dropped; `None` when `max`
    /// are open.
    pub fn try_acquire(&self) -> Option<Permit> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(self.open.clone());
        (before < self.max).then_some(permit)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_connections_only() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let _b = limit.clone().try_acquire().unwrap();
        assert!(limit.try_acquire().is_none(), "a third is refused");
        drop(a);
        assert!(limit.try_acquire().is_some(), "a place freed is taken again");
    }

    #[test]
    fn the_default_leaves_room_for_instances() {
        assert_eq!(from_fd_limit(1024), 384);
        assert_eq!(from_fd_limit(65536), 32640);
        assert_eq!(from_fd_limit(100), 16);
        assert!(default_max_connections() >= 16);
    }
}
