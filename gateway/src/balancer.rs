//! Endpoint selection: uniformly random over the live endpoints of a service.
//!
//! An endpoint that refused a connection is skipped for a short while (passive ejection), so a
//! dead instance Consul has not noticed yet costs at most one failed connect per ejection period,
//! and that one is retried on another instance by the proxy. If every endpoint is ejected, all are
//! tried anyway: a guess beats a certain error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use consul::Instance;
use http::uri::Authority;
use http::HeaderValue;
use rand::Rng;

use crate::upstream::Pool;

/// How long an endpoint that refused a connection is skipped.
pub const EJECTION: Duration = Duration::from_secs(5);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// One instance, ready to be connected to.
#[derive(Debug)]
pub struct Endpoint {
    /// What Consul said about it.
    pub instance: Instance,
    /// `address:port`, parsed once.
    pub authority: Authority,
    /// The `Host` header for requests to it.
    pub host: HeaderValue,
    /// Its idle keep-alive connections.
    pub pool: Arc<Pool>,
    ejected_until_ms: AtomicU64,
}

impl Endpoint {
    /// An endpoint for an instance, or `None` if its address cannot be used in a URL.
    pub fn new(instance: Instance) -> Option<Self> {
        let authority: Authority = instance.authority().parse().ok()?;
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        let pool = Arc::new(Pool::new(authority.as_str()));
        Some(Self { instance, authority, host, pool, ejected_until_ms: AtomicU64::new(0) })
    }

    /// Skips this endpoint for [`EJECTION`].
    pub fn eject(&self) {
        self.ejected_until_ms.store(now_ms() + EJECTION.as_millis() as u64, Ordering::Relaxed);
    }

    fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }
}

/// Picks a random endpoint not in `tried`, preferring ones not ejected.
pub fn pick<'a>(endpoints: &'a [Arc<Endpoint>], tried: &[usize]) -> Option<(usize, &'a Arc<Endpoint>)> {
    let mut rng = rand::rng();
    // The common case, a first attempt with nothing ejected, reads no clock.
    if tried.is_empty() && endpoints.iter().all(|e| e.ejected_until_ms.load(Ordering::Relaxed) == 0) {
        let i = rng.random_range(0..endpoints.len().max(1));
        return endpoints.get(i).map(|e| (i, e));
    }
    let now = now_ms();
    for e in endpoints {
        // An ejection that ran out is cleared, so the fast path above applies again.
        let until = e.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 && until <= now {
            let _ = e.ejected_until_ms.compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
    let usable = |i: &usize, e: &Arc<Endpoint>| !tried.contains(i) && !e.is_ejected(now);
    let live = endpoints.iter().enumerate().filter(|(i, e)| usable(i, e)).count();
    if live > 0 {
        let n = rng.random_range(0..live);
        return endpoints.iter().enumerate().filter(|(i, e)| usable(i, e)).nth(n);
    }
    let left = endpoints.len().saturating_sub(tried.len());
    if left == 0 {
        return None;
    }
    let n = rng.random_range(0..left);
    endpoints.iter().enumerate().filter(|(i, _)| !tried.contains(i)).nth(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|p| Arc::new(Endpoint::new(Instance::new(format!("i{p}"), "n", "127.0.0.1", 1000 + p)).unwrap()))
            .collect()
    }

    #[test]
    fn spreads_over_all_endpoints() {
        let e = eps(3);
        let seen: HashSet<usize> = (0..200).map(|_| pick(&e, &[]).unwrap().0).collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn never_repeats_a_tried_endpoint_and_ends() {
        let e = eps(3);
        let mut tried = vec![];
        while let Some((i, _)) = pick(&e, &tried) {
            assert!(!tried.contains(&i));
            tried.push(i);
        }
        assert_eq!(tried.len(), 3);
        assert!(pick(&[], &[]).is_none());
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_nothing_else_is_left() {
        let e = eps(2);
        e[0].eject();
        assert!((0..50).all(|_| pick(&e, &[]).unwrap().0 == 1));
        e[1].eject();
        assert!(pick(&e, &[]).is_some(), "all ejected: still try one");
    }

    #[test]
    fn an_ejection_ends() {
        let e = eps(2);
        let _ = now_ms();
        std::thread::sleep(Duration::from_millis(2));
        e[0].ejected_until_ms.store(1, Ordering::Relaxed); // ran out a millisecond after the epoch
        let seen: HashSet<usize> = (0..200).map(|_| pick(&e, &[]).unwrap().0).collect();
        assert_eq!(seen.len(), 2);
        assert_eq!(e[0].ejected_until_ms.load(Ordering::Relaxed), 0, "cleared");
    }
}
