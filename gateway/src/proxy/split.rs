//! Which side of a split route a client is on: the canaries (instances with the split's tag)
//! or the rest, kept stable per client.
//!
//! - `sticky=cookie` (default): a client without our cookie is placed at random, with the route's
//!   percentage, and gets a cookie (`gw_split_<route hash>`, `Path` = the route's path, one day)
//!   that keeps it there. The cookie also records the percentage: when the route's percentage
//!   changes, clients are placed again.
//! - `sticky=addr`: a hash of the client's IP address and the route picks the side, so the same
//!   address always lands on the same side while the percentage stays the same, and no cookie is
//!   needed (clients behind one NAT share a side).
//!
//! When the chosen side has no instance, the other side serves: a split never makes a 503.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use rand::Rng;

use crate::discovery::routes::Route;
use crate::discovery::set::{Choice, SplitChoice};
use crate::discovery::tag::Sticky;
use crate::proxy::balancer::Candidates;

/// How long the split cookie keeps a client on its side.
pub const COOKIE_MAX_AGE_SECS: u32 = 86_400;

/// The candidates for this request and, if the client must be told its side, a `Set-Cookie`.
pub fn choose<'a>(
    route: &Route,
    choice: &'a Choice,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> (&'a Candidates, Option<HeaderValue>) {
    let Some(split) = &choice.split else { return (&choice.main, None) };
    let (canary, cookie) = match split.sticky {
        Sticky::Addr => (by_addr(route, split, peer), None),
        Sticky::Cookie => by_cookie(route, split, headers),
    };
    let side = if canary { &split.canary } else { &choice.main };
    let other = if canary { &choice.main } else { &split.canary };
    (if side.is_empty() { other } else { side }, cookie)
}

/// A stable hash of the route, naming its cookie and salting the address hash.
fn route_hash(route: &Route) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (route.shown(), route.service.as_str()).hash(&mut h);
    h.finish()
}

fn by_addr(route: &Route, split: &SplitChoice, peer: Option<SocketAddr>) -> bool {
    let Some(peer) = peer else { return false };
    let mut h = std::hash::DefaultHasher::new();
    (peer.ip(), route_hash(route)).hash(&mut h);
    h.finish() % 100 < u64::from(split.percent)
}

fn cookie_name(route: &Route) -> String {
    format!("gw_split_{:08x}", route_hash(route) as u32)
}

fn by_cookie(route: &Route, split: &SplitChoice, headers: &HeaderMap) -> (bool, Option<HeaderValue>) {
    let name = cookie_name(route);
    let kept = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| parse_value(v))
        .filter(|(_, percent)| *percent == split.percent);
    if let Some((canary, _)) = kept {
        return (canary, None);
    }
    let canary = rand::rng().random_range(0..100u8) < split.percent;
    let value = format!(
        "{name}={}{}; Path={}; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Lax",
        if canary { 'c' } else { 'm' },
        split.percent,
        route.path
    );
    (canary, HeaderValue::from_str(&value).ok())
}

/// `c10` (canary at 10 %) or `m10` (main at 10 %).
fn parse_value(v: &str) -> Option<(bool, u8)> {
    let canary = match v.as_bytes().first()? {
        b'c' => true,
        b'm' => false,
        _ => return None,
    };
    Some((canary, v[1..].parse().ok()?))
}

/// Adds the split cookie to a response's headers.
pub fn set_cookie(headers: &mut HeaderMap, cookie: HeaderValue) {
    headers.append(SET_COOKIE, cookie);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_parse_back() {
        assert_eq!(parse_value("c10"), Some((true, 10)));
        assert_eq!(parse_value("m0"), Some((false, 0)));
        assert_eq!(parse_value("x10"), None);
        assert_eq!(parse_value("c"), None);
        assert_eq!(parse_value(""), None);
        assert_eq!(parse_value("c1000"), None);
    }
}
