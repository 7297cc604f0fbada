//! `least-request`: the power of two choices over in-flight requests (Mitzenmacher, "The Power of
//! Two Choices in Randomized Load Balancing"), as Envoy's `LEAST_REQUEST` and Linkerd's balancer
//! do.
//!
//! Two distinct usable endpoints are drawn at random, each by weight; the one with fewer requests
//! in flight per unit of weight wins (`in_flight_a / weight_a < in_flight_b / weight_b`, compared
//! as cross products), a tie goes to the first draw. With a single usable endpoint it is picked;
//! with none the pick falls back to [`Candidates::random`]'s rules.
//!
//! An endpoint's count ([`Endpoint::in_flight`]) goes up when a request is sent to it and down
//! when its response ends ([`InFlight`], held by the response body: read to its end or dropped,
//! the client gone included). A failed attempt drops its guard before the next instance is
//! tried, so retries leave no count behind. Only `least-request` routes count: the other
//! policies touch no counter.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::Rng;

use super::{Candidates, Endpoint};

/// One request in flight to an endpoint: counted while this lives.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    /// Counts a request to `endpoint` until this is dropped.
    pub fn start(endpoint: &Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(endpoint))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The index of the less loaded of two endpoints drawn by weight among those `tried` does not
/// hold and that are not ejected.
pub(super) fn pick(c: &Candidates, tried: &[usize]) -> Option<usize> {
    let usable = c.usable(tried);
    let weight = |i: usize| {
        let e = &c.endpoints[i];
        if usable.ok(i, e) {
            c.weight_of(e)
        } else {
            0
        }
    };
    let n = c.endpoints.len();
    let total: u64 = (0..n).map(weight).sum();
    if total == 0 {
        return c.random(tried).map(|(i, _)| i);
    }
    let mut rng = rand::rng();
    let draw = |r: u64, skip: Option<usize>| {
        let mut r = r;
        (0..n).filter(|&i| Some(i) != skip).find(|&i| {
            let w = weight(i);
            if r < w {
                return true;
            }
            r -= w;
            false
        })
    };
    let a = draw(rng.random_range(0..total), None)?;
    let (wa, rest) = (weight(a), total - weight(a));
    if rest == 0 {
        return Some(a);
    }
    let Some(b) = draw(rng.random_range(0..rest), Some(a)) else { return Some(a) };
    let wb = weight(b);
    let (la, lb) = (c.endpoints[a].in_flight() as u64, c.endpoints[b].in_flight() as u64);
    // la / wa > lb / wb, without division.
    Some(if la.saturating_mul(wb) > lb.saturating_mul(wa) { b } else { a })
}
