//! Endpoint selection: which of a route's live endpoints gets a request, by the route's
//! balancing policy ([`Balance`]: `--balance`, or the route's `balance=` option).
//!
//! - `random` (the default): weighted random. With equal weights the pick is uniform and costs
//!   one random number.
//! - `round-robin` ([`round_robin`]): in turn, shared by every worker thread; with weights,
//!   nginx's smooth weighted round-robin.
//! - `least-request` ([`least_request`]): the power of two choices over in-flight requests, as
//!   Envoy's and Linkerd's balancers do: two distinct endpoints drawn by weight, the one with
//!   fewer requests in flight (per unit of weight) wins.
//!
//! Weights: each endpoint weighs what Consul's `Weights` field on its registration says for its
//! current health (`Passing`, or `Warning` when a check warns; Consul's default is 1 each).
//!
//! An endpoint that refused a connection is skipped for a short while (passive ejection), so a
//! dead instance Consul has not noticed yet costs at most one failed connect per ejection
//! period, and that one is retried on another instance by the proxy. Retries never pick an
//! endpoint the request already tried. If every endpoint is ejected (or weighs 0), all are tried
//! anyway: a guess beats a certain error.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use consul::Instance;
use http::uri::Authority;
use http::HeaderValue;
use rand::Rng;

use crate::discovery::tag::{protocol_meta, Protocol};
use crate::proxy::upstream::Pool;

pub mod least_request;
pub mod round_robin;

pub use least_request::InFlight;

/// A balancing policy: `--balance` (env `GATEWAY_BALANCE`) for every route, or a route's
/// `balance=` option for its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Balance {
    /// Weighted random (the default).
    #[default]
    Random,
    /// In turn; with weights, smooth weighted round-robin.
    RoundRobin,
    /// The power of two choices over in-flight requests.
    LeastRequest,
}

impl Balance {
    /// Every policy, by name.
    pub const ALL: [Balance; 3] = [Balance::Random, Balance::RoundRobin, Balance::LeastRequest];

    /// Its name, as flags and tags spell it: `random`, `round-robin`, `least-request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Random => "random",
            Balance::RoundRobin => "round-robin",
            Balance::LeastRequest => "least-request",
        }
    }

    /// The policy of that name (exactly as [`Balance::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == name)
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Requests sent to it whose response has not ended, counted for `least-request` routes
    /// only ([`InFlight`]).
    in_flight: AtomicUsize,
}

impl Endpoint {
    /// An endpoint for an instance, with idle connections kept per worker thread (`workers`), or
    /// `None` if its address cannot be used in a URL.
    pub fn new(instance: Instance, workers: usize) -> Option<Self> {
        let authority: Authority = instance.authority().parse().ok()?;
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        let pool = Arc::new(Pool::for_workers(authority.as_str(), workers));
        let protocol = protocol_meta(&instance.meta).unwrap_or_default();
        let (ejected_until_ms, in_flight) = (AtomicU64::new(0), AtomicUsize::new(0));
        Some(Self { instance, authority, host, pool, protocol, ejected_until_ms, in_flight })
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

    /// Requests to it in flight, as counted for `least-request` routes (0 on others).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The endpoints one route may send to, with their weights and the route's own policy, fixed
/// when the set is built. Clones share the round-robin position.
#[derive(Debug, Default, Clone)]
pub struct Candidates {
    endpoints: Vec<Arc<Endpoint>>,
    /// Running totals of the weights, when they differ (`None`: uniform).
    cumulative: Option<Vec<u64>>,
    /// The route's `balance=` (`None`: the gateway's `--balance`).
    policy: Option<Balance>,
    /// Where round-robin is in its turn (allocated with the set, touched only by round-robin).
    turn: Arc<round_robin::Turn>,
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
        Self { endpoints, cumulative, policy: None, turn: Arc::default() }
    }

    /// The same, balanced by `policy` whatever `--balance` says (`None`: as it says).
    pub fn with_policy(mut self, policy: Option<Balance>) -> Self {
        self.policy = policy;
        self
    }

    /// The route's own policy, if it names one.
    pub fn policy(&self) -> Option<Balance> {
        self.policy
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

    /// Picks an endpoint not in `tried` (indices of earlier picks) by `policy` (the route's own
    /// or the gateway's), following the weights and preferring endpoints not ejected. `None`
    /// once every endpoint was tried.
    #[inline]
    pub fn pick(&self, tried: &[usize], policy: Balance) -> Option<(usize, &Arc<Endpoint>)> {
        match policy {
            Balance::Random => self.random(tried),
            Balance::RoundRobin => round_robin::pick(self, tried).map(|i| (i, &self.endpoints[i])),
            Balance::LeastRequest => least_request::pick(self, tried).map(|i| (i, &self.endpoints[i])),
        }
    }

    /// Whether nothing is excluded: a first attempt, nothing ejected (no clock read).
    fn all_usable(&self, tried: &[usize]) -> bool {
        tried.is_empty() && self.endpoints.iter().all(|e| e.ejected_until_ms.load(Ordering::Relaxed) == 0)
    }

    /// Which endpoints may be picked: those not in `tried` and not ejected. Ejections that ran
    /// out are cleared on the way, so that [`Candidates::all_usable`] holds again.
    fn usable<'a>(&self, tried: &'a [usize]) -> Usable<'a> {
        if self.all_usable(tried) {
            return Usable { tried, now: None };
        }
        Usable { tried, now: Some(self.clear_expired()) }
    }

    /// Clears the ejections that ran out; the time now, in [`now_ms`]'s milliseconds.
    fn clear_expired(&self) -> u64 {
        let now = now_ms();
        for e in &self.endpoints {
            let until = e.ejected_until_ms.load(Ordering::Relaxed);
            if until != 0 && until <= now {
                let _ = e.ejected_until_ms.compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        now
    }

    /// An endpoint's weight for the draw: 1 each when the weights are equal.
    fn weight_of(&self, e: &Endpoint) -> u64 {
        if self.cumulative.is_none() {
            1
        } else {
            u64::from(e.weight())
        }
    }

    /// Weighted random ([`Balance::Random`]); also what the other policies fall back to when
    /// nothing usable is left (every endpoint ejected or of weight 0).
    #[inline(always)]
    fn random(&self, tried: &[usize]) -> Option<(usize, &Arc<Endpoint>)> {
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
        // An ejection that ran out is cleared, so the fast path above applies again.
        let now = self.clear_expired();
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

/// Which endpoints a pick may choose (see [`Candidates::usable`]).
struct Usable<'a> {
    tried: &'a [usize],
    /// `None`: every endpoint (a first attempt, nothing ejected).
    now: Option<u64>,
}

impl Usable<'_> {
    fn ok(&self, i: usize, e: &Endpoint) -> bool {
        self.now.is_none_or(|now| !self.tried.contains(&i) && !e.is_ejected(now))
    }
}

#[cfg(test)]
mod tests;
