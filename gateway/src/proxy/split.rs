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
//! When the chosen side has no instance, the other side serves: a split never makes a 503. At 0 and
//! 100 % there is no choice: no cookie is read or set. Hashes are FNV-1a, fixed by definition, so
//! every gateway replica and build puts a client on the same side.

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
    let (canary, cookie) = match (split.percent, split.sticky) {
        // 0 and 100 % leave nothing to choose (and no cookie to forge).
        (0, _) => (false, None),
        (100.., _) => (true, None),
        (_, Sticky::Addr) => (by_addr(route, split, peer), None),
        (_, Sticky::Cookie) => by_cookie(route, split, headers),
    };
    let side = if canary { &split.canary } else { &choice.main };
    let other = if canary { &choice.main } else { &split.canary };
    (if side.is_empty() { other } else { side }, cookie)
}

/// FNV-1a, 64 bits: a hash fixed by its definition, so cookie names and address sides stay the
/// same across gateway builds and replicas (std's `DefaultHasher` promises neither).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A stable hash of the route, naming its cookie and salting the address hash.
fn route_hash(route: &Route) -> u64 {
    fnv1a(&[route.shown().as_bytes(), route.service.as_bytes()])
}

fn by_addr(route: &Route, split: &SplitChoice, peer: Option<SocketAddr>) -> bool {
    let Some(peer) = peer else { return false };
    let ip = match peer.ip() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let h = fnv1a(&[&ip, &route_hash(route).to_le_bytes()]);
    // The high bits: FNV's low bits mix less.
    (h >> 32) % 100 < u64::from(split.percent)
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
    // A path that would break the header's syntax falls back to the whole site.
    let path = if route.path.contains([';', ',']) { "/" } else { route.path.as_str() };
    let value = format!(
        "{name}={}{}; Path={path}; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Lax",
        if canary { 'c' } else { 'm' },
        split.percent,
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
    let digits = &v[1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((canary, digits.parse().ok()?))
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
        assert_eq!(parse_value("c+0"), None);
        assert_eq!(parse_value("m-1"), None);
    }
}
