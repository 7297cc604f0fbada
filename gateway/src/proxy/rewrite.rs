//! What a matched route does to the request: the path the instance gets (the route's `strip=`
//! prefix removed, its `prepend=` prefix added; a name route strips `/<service>`), the `Host` it
//! gets, and the `Location` of a redirect route.

use http::HeaderValue;

use crate::discovery::routes::Route;
use crate::discovery::tag::{Redirect, UpstreamHost};

/// The upstream path-and-query for `path_and_query` (as the client sent it) on `route`, and
/// whether the route's prefix was stripped (then `X-Forwarded-Prefix` names it).
pub fn upstream_path(route: &Route, path_and_query: &str) -> (String, bool) {
    let mut rest = path_and_query;
    let mut stripped = false;
    if let Some(strip) = route.strip.as_deref() {
        if let Some(after) = strip_at_boundary(path_and_query, strip) {
            rest = after;
            stripped = true;
        }
    }
    let prepend = route.spec.as_ref().and_then(|s| s.prepend.as_deref()).unwrap_or("");
    let mut out = String::with_capacity(prepend.len() + rest.len() + 1);
    out.push_str(prepend);
    if out.ends_with('/') && rest.starts_with('/') {
        out.push_str(&rest[1..]);
    } else {
        // A segment after the prefix needs its slash; a query or nothing does not.
        if !rest.is_empty() && !rest.starts_with(['/', '?']) && !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(rest);
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    (out, stripped)
}

/// Whether `path` has a `.` or `..` segment, also percent-encoded (`%2e`) or behind an encoded
/// separator (`%2f`, `%5c`, and `\`, which some servers take for `/`). A backend that resolves
/// it would serve a path outside the route prefix that matched (`/public/../admin`); RFC 3986
/// §5.2.4 has clients remove such segments, so a request that still has one is refused.
pub fn has_dot_segment(path: &str) -> bool {
    // One pass over the bytes; nearly every path has neither.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        decoded.push_str(&rest[..i]);
        let escape = rest.get(i + 1..i + 3).unwrap_or("");
        match escape.to_ascii_lowercase().as_str() {
            "2e" => decoded.push('.'),
            "3b" => decoded.push(';'),
            "2f" | "5c" => decoded.push('/'),
            _ => {
                decoded.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    decoded.push_str(rest);
    // A segment's path parameters (`..;x`, RFC 3986 §3.3) are dropped before matching by some
    // servers (Tomcat: the `/..;/` bypass), so `..;x` is a `..` segment too.
    decoded.split(['/', '\\']).map(|seg| seg.split(';').next().unwrap_or(seg)).any(|seg| seg == "." || seg == "..")
}

/// `path_and_query` without `prefix`, when it starts with it on a segment boundary (the prefix
/// is the whole path, or followed by `/` or `?`, or ends in `/` itself).
fn strip_at_boundary<'a>(path_and_query: &'a str, prefix: &str) -> Option<&'a str> {
    let after = path_and_query.strip_prefix(prefix)?;
    let boundary = prefix.ends_with('/') || after.is_empty() || after.starts_with(['/', '?']);
    boundary.then_some(after)
}

/// The `Host` header the instance gets: its own `address:port` for name routes and `host=dst`,
/// the client's for declared routes (Fabio's default), or the name `host=` gives.
pub fn upstream_host<'a>(
    route: &'a Route,
    instance: &'a HeaderValue,
    client: Option<&'a HeaderValue>,
) -> &'a HeaderValue {
    match route.spec.as_ref().map(|s| &s.upstream_host) {
        None | Some(UpstreamHost::Dst) => instance,
        Some(UpstreamHost::Client) => client.unwrap_or(instance),
        Some(UpstreamHost::Name(_)) => route.fixed_host.as_ref().unwrap_or(instance),
    }
}

/// The `Location` of a redirect: the route's URL with `$path` replaced by the request's path,
/// and the request's query added when the URL has none (as Fabio does, `route/target.go`).
pub fn location(redirect: &Redirect, path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut url = redirect.url.replacen("$path", path, 1);
    if let Some(q) = query.filter(|_| !url.contains('?')) {
        url.push('?');
        url.push_str(q);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_carry_the_path_and_a_query() {
        let r = |url: &str| Redirect { code: 301, url: url.into() };
        assert_eq!(location(&r("https://n.example$path"), "/a/b?c=1"), "https://n.example/a/b?c=1");
        assert_eq!(location(&r("https://n.example/"), "/a?c=1"), "https://n.example/?c=1");
        assert_eq!(
            location(&r("https://n.example/?x=2"), "/a?c=1"),
            "https://n.example/?x=2",
            "the URL's own query wins"
        );
        assert_eq!(location(&r("/v2$path"), "/a"), "/v2/a");
    }

    fn route(tag: &str) -> Route {
        let slot = std::sync::Arc::new(crate::discovery::services::Slot::new("s", false));
        Route::declared(tag.to_string(), crate::discovery::tag::parse(tag).unwrap(), slot)
    }

    #[test]
    fn strip_and_prepend_keep_the_query_in_place() {
        let r = route("/pp strip=/pp prepend=/v2");
        for (from, to) in [("/pp", "/v2"), ("/pp?x=1", "/v2?x=1"), ("/pp/a?x=1", "/v2/a?x=1"), ("/pp/", "/v2/")] {
            assert_eq!(upstream_path(&r, from), (to.to_string(), true), "{from}");
        }
        let strip = route("/web strip=/web");
        for (from, to) in [("/web", "/"), ("/web?x", "/?x"), ("/web/a", "/a"), ("/webx", "/webx")] {
            assert_eq!(upstream_path(&strip, from).0, to, "{from}");
        }
        let prepend = route("/a prepend=/b");
        assert_eq!(upstream_path(&prepend, "/a/c?d").0, "/b/a/c?d");
    }

    #[test]
    fn dot_segments_are_found_however_written() {
        for bad in [
            "/public/../admin",
            "/a/./b",
            "/a/..",
            "/..",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/public/..%2fsecret",
            "/a\\..\\b",
            "/a/%2E",
            "/public/..;/admin",
            "/a/.;x/b",
            "/a/..;jsessionid=1",
            "/a/..%3b/b",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for ok in [
            "/",
            "/a/b.c",
            "/a/...",
            "/a/.well-known/x",
            "/v1.2/x",
            "/a%2fb",
            "/a/%2",
            "/a/%",
            "/a/b%2ec",
            "/a/b;c",
            "/a/...;x",
        ] {
            assert!(!has_dot_segment(ok), "{ok}");
        }
    }

    #[test]
    fn strips_only_on_segment_boundaries() {
        assert_eq!(strip_at_boundary("/v1/users?x", "/v1"), Some("/users?x"));
        assert_eq!(strip_at_boundary("/v1", "/v1"), Some(""));
        assert_eq!(strip_at_boundary("/v1?q", "/v1"), Some("?q"));
        assert_eq!(strip_at_boundary("/v1x", "/v1"), None);
        assert_eq!(strip_at_boundary("/v1/x", "/v1/"), Some("x"));
        assert_eq!(strip_at_boundary("/v2/x", "/v1"), None);
    }
}
