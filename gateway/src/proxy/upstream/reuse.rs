//! How long a connection may be reused after a response, from what the response says.
//!
//! **Framing anomalies.** A `204` must not declare a body (RFC 9110 §8.6) and a `304` has none
//! whatever it declares (§15.4.5). A response that declares one anyway (`Content-Length` above 0,
//! or `Transfer-Encoding`) comes from a server that may well send that body too; hyper, rightly,
//! reads no body after such a status, so those bytes would be read as the start of the next
//! response on the connection, whoever's request it carries. They may arrive only after the next
//! request went out (Nagle's algorithm holds a small write back until the gateway's next segment
//! acknowledges the previous one), so no check before reuse can see them: such a connection is
//! never reused.
//!
//! **`HEAD`.** The answer to a `HEAD` has no body but usually declares one (the length a `GET`
//! would get), so a server that wrongly sends the body cannot be told from one that does not;
//! `HEAD` is rare on the request path, so its connection is simply not reused.
//!
//! **The instance's `Keep-Alive: timeout=N` header**: how long it keeps an idle connection
//! open, so that the gateway stops reusing the connection before the instance closes it.
//!
//! The header is the one of RFC 2068 §19.7.1.1, its parameters as in RFC 9110's list syntax:
//! `Keep-Alive: timeout=5, max=1000`, where `timeout` is in seconds. Node.js sends it by default
//! (`timeout=5`), so do Apache httpd and others. `max` (requests left on the connection) is not
//! used: a server that will close after this response says `Connection: close`, which hyper
//! honours.
//!
//! A connection the instance is about to close must not take a request, because a request the
//! instance may have received cannot be sent again unless it is idempotent. So the gateway reuses
//! a connection for somewhat less than the instance said: `N − 1 s`, but at least `N / 2`
//! (undici, Node's HTTP client, also takes 1 s off). `timeout=0` means no reuse at all.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::StatusCode;

/// The `Keep-Alive` header name (not among `http`'s constants). A `HeaderName`, not a `&str`:
/// looking a header up by `&str` parses the name again on every call.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// How long a connection whose last response had `status` and `headers` (to a `HEAD` request if
/// `head`) may sit idle before it is no longer reused: zero (never) after a `HEAD` or a framing
/// anomaly, else what `Keep-Alive` allows, else `Duration::MAX` (the gateway's own limit applies;
/// so it does when the header is malformed).
pub fn max_idle(head: bool, status: StatusCode, headers: &HeaderMap) -> Duration {
    if head || declares_a_body_it_cannot_have(status, headers) {
        return Duration::ZERO;
    }
    keep_alive(headers)
}

fn declares_a_body_it_cannot_have(status: StatusCode, headers: &HeaderMap) -> bool {
    if status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED {
        return false;
    }
    let length = headers.get(CONTENT_LENGTH).map(|v| v.as_bytes().iter().any(|b| *b != b'0'));
    headers.contains_key(TRANSFER_ENCODING) || length.unwrap_or(false)
}

fn keep_alive(headers: &HeaderMap) -> Duration {
    let Some(value) = headers.get(&KEEP_ALIVE) else { return Duration::MAX };
    let Some(secs) = value.to_str().ok().and_then(timeout_secs) else { return Duration::MAX };
    let said = Duration::from_secs(secs);
    said.saturating_sub(Duration::from_secs(1)).max(said / 2)
}

/// The `timeout` parameter of a `Keep-Alive` value, in whole seconds.
fn timeout_secs(value: &str) -> Option<u64> {
    value.split(',').find_map(|param| {
        let (name, v) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        v.trim().trim_matches('"').parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(value: &str) -> Duration {
        let mut h = HeaderMap::new();
        h.insert(&KEEP_ALIVE, value.parse().unwrap());
        max_idle(false, StatusCode::OK, &h)
    }

    fn after(status: u16, headers: &[(&str, &str)]) -> Duration {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        max_idle(false, StatusCode::from_u16(status).unwrap(), &h)
    }

    #[test]
    fn a_bodiless_status_that_declares_a_body_ends_reuse() {
        for status in [204, 304] {
            assert_eq!(after(status, &[("content-length", "5")]), Duration::ZERO, "{status}");
            assert_eq!(after(status, &[("transfer-encoding", "chunked")]), Duration::ZERO, "{status}");
            assert_eq!(after(status, &[("content-length", "5"), ("keep-alive", "timeout=9")]), Duration::ZERO);
            assert_eq!(after(status, &[]), Duration::MAX, "{status} without a body is fine");
            assert_eq!(after(status, &[("content-length", "0")]), Duration::MAX, "{status}: length 0 is fine");
        }
        assert_eq!(after(200, &[("content-length", "5")]), Duration::MAX, "a 200 has its body");
    }

    #[test]
    fn the_instance_timeout_less_a_margin() {
        assert_eq!(idle("timeout=5"), Duration::from_secs(4));
        assert_eq!(idle("timeout=5, max=1000"), Duration::from_secs(4));
        assert_eq!(idle("max=100, Timeout = 60"), Duration::from_secs(59));
        assert_eq!(idle("timeout=2"), Duration::from_secs(1));
        assert_eq!(idle("timeout=1"), Duration::from_millis(500));
        assert_eq!(idle("timeout=\"3\""), Duration::from_secs(2));
        assert_eq!(idle("timeout=0"), Duration::ZERO, "no reuse at all");
    }

    #[test]
    fn nothing_or_nonsense_leaves_the_gateway_limit() {
        assert_eq!(max_idle(false, StatusCode::OK, &HeaderMap::new()), Duration::MAX);
        assert_eq!(max_idle(true, StatusCode::OK, &HeaderMap::new()), Duration::ZERO, "HEAD");
        for bad in ["", "max=5", "timeout=", "timeout=-1", "timeout=1.5", "timeout=abc", "timeouts=3"] {
            assert_eq!(idle(bad), Duration::MAX, "{bad:?}");
        }
    }
}
