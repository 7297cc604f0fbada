//! Endpoint selection: weighted random over the live endpoints of a route.
//!
//! - Each endpoint weighs what Consul's `Weights` field on its registration says for its current
//!   health (`Passing`, or `Warning` when a check warns; Consul's default is 1 each). With equal
//!   weights the pick is uniform and costs one random number.
//! - An endpoint that refused a connection is skipped for a short while (passive ejection), so a
//!   dead instance Consul has not noticed yet costs at most one failed connect per ejection
//!   period, and that one is retried on another instance by the proxy. If every endpoint is
//!   ejected (or weighs 0), all are tried anyway: a guess beats a certain error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use consul::Instance;
use http::uri::Authority;
use http::HeaderValue;
use rand::Rng;

use crate::discovery::tag::{protocol_meta, Protocol};
use crate::proxy::upstream::Pool;

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
    /// The `Host` header for requests to it (its `address:port`).
    pub host: HeaderValue,
    /// Its idle keep-alive connections (and its HTTP/2 ones).
    pub pool: Arc<Pool>,
    /// The protocol its `gateway-protocol` metadata names (HTTP/1.1 when absent or not valid:
    /// the service set skips instances with a bad value before they get here).
    pub protocol: Protocol,
    ejected_until_ms: AtomicU64,
}

impl Endpoint {
    /// An endpoint for an instance, with idle connections kept per worker thread (`workers`), or
    /// `None` if its address cannot be used in a URL.
    pub fn new(instance: Instance, workers: usize) -> Option<Self> {
        let authority: Authority = instance.authority().parse().ok()?;
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        let pool = Arc::new(Pool::for_workers(authority.as_str(), workers));
        let protocol = protocol_meta(&instance.meta).unwrap_or_default();
        Some(Self { instance, authority, host, pool, protocol, ejected_until_ms: AtomicU64::new(0) })
    }

    /// The endpoint's weight: Consul's effective weight for its health.
    pub fn weight(&self) -> u32 {
        self.instance.weight
    }

    /// Skips this endpoint for [`EJECTION`].
    pub fn eject(&self) {
        self.ejected_until_ms.store(now_ms() + EJECTION.as_millis() as u64, Ordering::Relaxed);
    }

    fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }
}

/// The endpoints one route may send to, with their weights, fixed when the set is built.
#[derive(Debug, Default, Clone)]
pub struct Candidates {
    endpoints: Vec<Arc<Endpoint>>,
    /// Running totals of the weights, when they differ (`None`: uniform).
    cumulative: Option<Vec<u64>>,
}

impl Candidates {
    /// The candidates among `endpoints`.
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        let uniform = endpoints.windows(2).all(|w| w[0].weight() == w[1].weight())
            && endpoints.first().is_none_or(|e| e.weight() > 0);
        let cumulative = (!uniform).then(|| {
            let mut total = 0u64;
            endpoints
                .iter()
                .map(|e| {
                    total += u64::from(e.weight());
                    total
                })
                .collect()
        });
        Self { endpoints, cumulative }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Whether there is no endpoint.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// How many endpoints there are.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Picks an endpoint not in `tried` (indices of earlier picks), by weight, preferring ones
    /// not ejected. `None` once every endpoint was tried.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, &Arc<Endpoint>)> {
        let endpoints = &self.endpoints;
        let mut rng = rand::rng();
        // The common case, a first attempt with nothing ejected, reads no clock.
        if tried.is_empty() && endpoints.iter().all(|e| e.ejected_until_ms.load(Ordering::Relaxed) == 0) {
            let i = match &self.cumulative {
                None => rng.random_range(0..endpoints.len().max(1)),
                Some(c) => {
                    let total = c.last().copied().unwrap_or(0);
                    if total == 0 {
                        rng.random_range(0..endpoints.len().max(1))
                    } else {
                        let r = rng.random_range(0..total);
                        c.partition_point(|&sum| sum <= r)
                    }
                }
            };
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
        let weight = |i: usize, e: &Arc<Endpoint>| -> u64 {
            if tried.contains(&i) || e.is_ejected(now) {
                0
            } else if self.cumulative.is_none() {
                1
            } else {
                u64::from(e.weight())
            }
        };
        let total: u64 = endpoints.iter().enumerate().map(|(i, e)| weight(i, e)).sum();
        if total > 0 {
            let mut r = rng.random_range(0..total);
            for (i, e) in endpoints.iter().enumerate() {
                let w = weight(i, e);
                if r < w {
                    return Some((i, e));
                }
                r -= w;
            }
        }
        let left = endpoints.len().saturating_sub(tried.len());
        if left == 0 {
            return None;
        }
        let n = rng.random_range(0..left);
        endpoints.iter().enumerate().filter(|(i, _)| !tried.contains(i)).nth(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn eps(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(p, &w)| {
                let mut i = Instance::new(format!("i{p}"), "n", "127.0.0.1", 1000 + p as u16);
                i.weight = w;
                Arc::new(Endpoint::new(i, 1).unwrap())
            })
            .collect()
    }

    #[test]
    fn spreads_over_all_endpoints() {
        let c = Candidates::new(eps(&[1, 1, 1]));
        let seen: HashSet<usize> = (0..200).map(|_| c.pick(&[]).unwrap().0).collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn follows_the_weights() {
        let c = Candidates::new(eps(&[1, 3, 0]));
        let mut counts = [0u32; 3];
        for _ in 0..8000 {
            counts[c.pick(&[]).unwrap().0] += 1;
        }
        assert_eq!(counts[2], 0, "weight 0 is never picked while others are there");
        let share = f64::from(counts[1]) / 8000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
        // Also after an ejection (the slow path).
        c.endpoints[2].eject();
        let mut counts = [0u32; 3];
        for _ in 0..8000 {
            counts[c.pick(&[]).unwrap().0] += 1;
        }
        assert!((0.72..0.78).contains(&(f64::from(counts[1]) / 8000.0)), "{counts:?}");
        let zero = Candidates::new(eps(&[0, 0]));
        assert!(zero.pick(&[]).is_some(), "all weigh 0: still try one");
    }

    #[test]
    fn never_repeats_a_tried_endpoint_and_ends() {
        for weights in [&[1, 1, 1][..], &[5, 1, 0][..]] {
            let c = Candidates::new(eps(weights));
            let mut tried = vec![];
            while let Some((i, _)) = c.pick(&tried) {
                assert!(!tried.contains(&i));
                tried.push(i);
            }
            assert_eq!(tried.len(), 3);
        }
        assert!(Candidates::default().pick(&[]).is_none());
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_nothing_else_is_left() {
        let c = Candidates::new(eps(&[1, 1]));
        c.endpoints[0].eject();
        assert!((0..50).all(|_| c.pick(&[]).unwrap().0 == 1));
        c.endpoints[1].eject();
        assert!(c.pick(&[]).is_some(), "all ejected: still try one");
    }

    #[test]
    fn an_ejection_ends() {
        let c = Candidates::new(eps(&[1, 1]));
        let _ = now_ms();
        std::thread::sleep(Duration::from_millis(2));
        c.endpoints[0].ejected_until_ms.store(1, Ordering::Relaxed); // ran out a millisecond after the epoch
        let seen: HashSet<usize> = (0..200).map(|_| c.pick(&[]).unwrap().0).collect();
        assert_eq!(seen.len(), 2);
        assert_eq!(c.endpoints[0].ejected_until_ms.load(Ordering::Relaxed), 0, "cleared");
    }
}
