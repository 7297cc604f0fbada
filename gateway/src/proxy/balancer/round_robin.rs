//! `round-robin`: the endpoints in turn.
//!
//! - Equal weights: one counter per route's candidates, shared by every worker thread (one
//!   atomic add per pick), so a stream of requests, one at a time, goes A B C A B C… whichever
//!   thread serves each.
//! - Unequal weights: nginx's smooth weighted round-robin
//!   (`ngx_http_upstream_get_peer` in `src/http/ngx_http_upstream_round_robin.c`): each endpoint
//!   gains its weight on every pick, the one with the most is picked and loses the total. Weights
//!   5, 1, 1 give `a a b a c a a`, not `a a a a a b c`. The current weights sit under a mutex
//!   (held for one pass over the endpoints).
//!
//! An endpoint already tried by the request, ejected, or of weight 0 is passed over (its turn
//! goes to the next one, as nginx does with a down peer). When nothing is left, the pick falls
//! back to [`Candidates::random`]'s rules (every endpoint is then tried anyway).
//!
//! The turn starts over when the service's set changes (a new [`Candidates`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::Candidates;

/// Where a route's round-robin is: the next turn (equal weights) or each endpoint's current
/// weight (smooth weighted round-robin).
#[derive(Debug, Default)]
pub struct Turn {
    next: AtomicUsize,
    current: Mutex<Vec<i64>>,
}

/// The index of the next endpoint in turn that `tried` does not hold and is not ejected.
pub(super) fn pick(c: &Candidates, tried: &[usize]) -> Option<usize> {
    let n = c.endpoints.len();
    if n == 0 {
        return None;
    }
    let usable = c.usable(tried);
    if c.cumulative.is_none() {
        let start = c.turn.next.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = (0..n).map(|k| start.wrapping_add(k) % n).find(|&i| usable.ok(i, &c.endpoints[i])) {
            return Some(i);
        }
    } else {
        let mut current = c.turn.current.lock().unwrap_or_else(|e| e.into_inner());
        current.resize(n, 0);
        let (mut best, mut total) = (None::<usize>, 0i64);
        for (i, e) in c.endpoints.iter().enumerate() {
            let w = i64::from(e.weight());
            if w == 0 || !usable.ok(i, e) {
                continue;
            }
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total;
            return Some(b);
        }
    }
    c.random(tried).map(|(i, _)| i)
}
