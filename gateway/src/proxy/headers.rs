//! Header rewriting on the request path: hop-by-hop headers stay on their hop (RFC 9110 §7.6.1),
//! and the instance learns who asked through `X-Forwarded-For`, `-Proto` and `-Host`. The one
//! exception is a protocol upgrade (RFC 9110 §7.8): `Connection: upgrade` and `Upgrade` go on to
//! the instance, and back with its `101` ([`is_upgrade_request`], [`add_upgrade`],
//! [`switching_protocols`]).
//!
//! This runs twice per proxied request, so it compares standard header names as enum values,
//! uses header names built at compile time, and allocates nothing beyond the outgoing map.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

use crate::observe::request_id::{self, X_REQUEST_ID};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// A gRPC client's deadline for its call.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Whether a header is hop-by-hop by definition (the ones `Connection` names come on top).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Whether the client's `TE` header lists `trailers` (RFC 9110 §10.1.4): it will read trailer
/// fields, so an HTTP/2 instance may be sent `te: trailers` (gRPC servers require it).
pub fn te_trailers(client: &HeaderMap) -> bool {
    client
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers")))
}

/// Whether a request is a gRPC call: its `content-type` is `application/grpc`, maybe with a
/// `+proto`/`+json` suffix or parameters (gRPC-Web's `application/grpc-web...` too).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A gRPC client's deadline from its `grpc-timeout` header: 1 to 8 digits and a unit, `H`, `M`,
/// `S`, `m`, `u` or `n` (hours down to nanoseconds; gRPC's "PROTOCOL-HTTP2" document). `None`
/// for anything else.
pub fn grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a `Connection` value is just `keep-alive` or `close` (nearly always), naming no header.
fn is_plain_connection(value: &HeaderValue) -> bool {
    let v = value.as_bytes();
    v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
}

/// Whether any `Connection` header names other headers (which are then hop-by-hop too).
fn names_headers(headers: &HeaderMap) -> bool {
    headers.iter().any(|(n, v)| n == header::CONNECTION && !is_plain_connection(v))
}

/// The headers the `Connection` header names, other than its standard tokens.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

/// Whether any `Connection` header has `token` among its comma-separated options (RFC 9110
/// §7.6.1; case-insensitive).
fn connection_has(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether a request asks to switch protocols (RFC 9110 §7.8): HTTP/1.1, a `Connection` header
/// with the `upgrade` option, and an `Upgrade` header (any protocol: `websocket`, `h2c`...).
/// Never for HTTP/2, which forbids `Upgrade` (RFC 9113 §8.2.2), nor HTTP/1.0.
///
/// Runs on every request: an ordinary one costs a version compare and one pass over the header
/// names (a `Connection` header that is only `keep-alive` or `close` ends the check there).
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && names_headers(headers)
        && connection_has(headers, b"upgrade")
        && headers.contains_key(header::UPGRADE)
}

/// Adds to an upgrade request's upstream headers ([`upstream_headers`] removed them as
/// hop-by-hop) what the instance needs to switch: `Connection: upgrade` and the client's
/// `Upgrade` values, as sent.
pub fn add_upgrade(client: &HeaderMap, out: &mut HeaderMap) {
    out.append(header::CONNECTION, HeaderValue::from_static("upgrade"));
    for v in client.get_all(header::UPGRADE) {
        out.append(header::UPGRADE, v.clone());
    }
}

/// The headers of an instance's `101 Switching Protocols` as the client gets them: hop-by-hop
/// ones removed as on any response, except the instance's `Upgrade` (the protocol it switched
/// to), with `Connection: upgrade` (RFC 9110 §7.8 and §15.2.2).
pub fn switching_protocols(headers: &mut HeaderMap) {
    let protocols: Vec<HeaderValue> = headers.get_all(header::UPGRADE).iter().cloned().collect();
    strip_hop_by_hop(headers);
    headers.append(header::CONNECTION, HeaderValue::from_static("upgrade"));
    for p in protocols {
        headers.append(header::UPGRADE, p);
    }
}

/// Removes hop-by-hop headers in place (used on responses).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if names_headers(headers) {
        for h in connection_named(headers) {
            headers.remove(&h);
        }
    }
    while let Some(h) = headers.keys().find(|n| is_hop_by_hop(n)).cloned() {
        headers.remove(&h);
    }
}

/// The headers of a request to an instance: the client's minus hop-by-hop ones, `Host` set to
/// the instance (`host`), and the `X-Forwarded-*` headers. The client's `Host` (or the authority
/// of an absolute-form request) becomes `X-Forwarded-Host`; the client's IP is appended to any
/// `X-Forwarded-For` chain it sent. `X-Forwarded-Prefix` is the prefix the route stripped
/// (`prefix`), never the client's (as Traefik's strip-prefix middleware sets it).
///
/// `X-Request-Id` is `request_id` when it is settled (a retry); else the client's first sane one
/// ([`request_id::is_sane`]), else a new one, which then settles `request_id`.
pub fn upstream_headers(
    client: &HeaderMap,
    uri: &Uri,
    peer: Option<SocketAddr>,
    host: &HeaderValue,
    prefix: Option<&HeaderValue>,
    request_id: &mut Option<HeaderValue>,
) -> HeaderMap {
    let named = if names_headers(client) { connection_named(client) } else { Vec::new() };
    let mut out = HeaderMap::with_capacity(client.len() + 4);
    let mut client_host = None;
    let mut chain: Option<Vec<u8>> = None;
    for (name, value) in client {
        // The client's X-Forwarded-Proto and -Host are replaced by ours below.
        if is_hop_by_hop(name) || named.contains(name) || name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST {
            continue;
        }
        // Ours or none: a client's own would tell the instance about a prefix nobody stripped.
        if name == X_FORWARDED_PREFIX {
            continue;
        }
        if name == header::HOST {
            client_host.get_or_insert_with(|| value.clone());
        } else if name == X_REQUEST_ID {
            if request_id.is_none() {
                *request_id = Some(request_id::keep_or_replace(value));
            }
        } else if name == X_FORWARDED_FOR {
            let chain = chain.get_or_insert_with(Vec::new);
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(value.as_bytes());
        } else {
            out.append(name.clone(), value.clone());
        }
    }
    // None of these is in `out` yet: append, which skips the search for an existing entry.
    out.append(header::HOST, host.clone());
    if let Some(ip) = peer.map(|p| ip_text(p.ip())) {
        let value = match chain {
            Some(mut prev) => {
                prev.extend_from_slice(b", ");
                prev.extend_from_slice(ip.as_bytes());
                HeaderValue::from_bytes(&prev).ok()
            }
            None => HeaderValue::from_bytes(ip.as_bytes()).ok(),
        };
        if let Some(v) = value {
            out.append(X_FORWARDED_FOR.clone(), v);
        }
    } else if let Some(v) = chain.and_then(|c| HeaderValue::from_bytes(&c).ok()) {
        out.append(X_FORWARDED_FOR.clone(), v);
    }
    out.append(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    // An absolute-form request's authority replaces its Host header (RFC 9112 §3.2.2).
    let client_host = uri.authority().and_then(authority_host).or(client_host);
    if let Some(h) = client_host {
        out.append(X_FORWARDED_HOST.clone(), h);
    }
    if let Some(p) = prefix {
        out.append(X_FORWARDED_PREFIX.clone(), p.clone());
    }
    out.append(X_REQUEST_ID.clone(), request_id.get_or_insert_with(request_id::generate).clone());
    out
}

/// Says `X-Forwarded-Proto: https` instead of `http` in headers made by [`upstream_headers`],
/// for a client that came over TLS.
pub fn forwarded_https(headers: &mut HeaderMap) {
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
}

/// An absolute-form request's `host[:port]` as a header value: the authority without user info
/// (RFC 9110 §4.2.4 deprecates it; it is never forwarded).
pub fn authority_host(a: &http::uri::Authority) -> Option<HeaderValue> {
    match a.port() {
        Some(p) => HeaderValue::from_str(&format!("{}:{}", a.host(), p.as_str())).ok(),
        None => HeaderValue::from_str(a.host()).ok(),
    }
}

/// An IP address as text, formatted without `fmt` for IPv4 (this runs on every request).
pub struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    /// The text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Formats `ip` like `Display` does.
pub fn ip_text(ip: IpAddr) -> IpText {
    let mut t = IpText { buf: [0; 45], len: 0 };
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    t.push(b'.');
                }
                if octet >= 100 {
                    t.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    t.push(b'0' + (octet / 10) % 10);
                }
                t.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut t.buf[..]);
            // 45 bytes hold the longest form (IPv4-mapped with a full prefix).
            let _ = write!(cursor, "{v6}");
            t.len = cursor.position() as usize;
        }
    }
    t
}

impl IpText {
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn grpc_timeouts_parse_as_grpc_defines_them() {
        let t = |v: &'static str| grpc_timeout(&HeaderValue::from_static(v));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(t("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(t("5M"), Some(Duration::from_secs(300)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)), "the largest");
        for bad in ["", "S", "2", "2s", "2 S", "-2S", "123456789S", "2SS", "1.5S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn client_ips_format_like_std() {
        for ip in ["0.0.0.0", "10.9.8.7", "127.0.0.1", "255.255.255.255", "192.168.100.20", "::1", "fe80::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(std::str::from_utf8(ip_text(ip).as_bytes()).unwrap(), ip.to_string());
        }
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        assert_eq!(std::str::from_utf8(ip_text(longest).as_bytes()).unwrap(), longest.to_string());
    }

    #[test]
    fn hop_by_hop_headers_go_and_others_stay() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-ok", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x-ok"]);
    }

    #[test]
    fn an_upgrade_request_needs_http_1_1_the_connection_option_and_an_upgrade_header() {
        let ws = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(Version::HTTP_11, &ws));
        // Firefox sends both options; any case, any spacing; a repeated Connection header.
        let firefox = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(Version::HTTP_11, &firefox));
        let split = map(&[("connection", "keep-alive"), ("connection", " UPGRADE "), ("upgrade", "h2c")]);
        assert!(is_upgrade_request(Version::HTTP_11, &split));
        // HTTP/2 forbids it (RFC 9113 §8.2.2); HTTP/1.0 has no upgrade.
        assert!(!is_upgrade_request(Version::HTTP_2, &ws));
        assert!(!is_upgrade_request(Version::HTTP_10, &ws));
        // Both halves are needed.
        assert!(!is_upgrade_request(Version::HTTP_11, &map(&[("upgrade", "websocket")])));
        assert!(!is_upgrade_request(Version::HTTP_11, &map(&[("connection", "upgrade")])));
        let plain = map(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(!is_upgrade_request(Version::HTTP_11, &plain));
        let lookalike = map(&[("connection", "upgrade-insecure-requests"), ("upgrade", "websocket")]);
        assert!(!is_upgrade_request(Version::HTTP_11, &lookalike));
        assert!(!is_upgrade_request(Version::HTTP_11, &map(&[("host", "a")])));
    }

    #[test]
    fn an_upgrade_goes_upstream_with_only_its_own_hop_by_hop_headers() {
        let client = map(&[
            ("host", "gw"),
            ("connection", "keep-alive, Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "secret"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]);
        let mut h = upstream_headers(
            &client,
            &Uri::from_static("/ws"),
            None,
            &HeaderValue::from_static("i:1"),
            None,
            &mut None,
        );
        add_upgrade(&client, &mut h);
        assert_eq!(h.get_all("connection").iter().collect::<Vec<_>>(), ["upgrade"]);
        assert_eq!(h.get_all("upgrade").iter().collect::<Vec<_>>(), ["websocket"]);
        for gone in ["x-hop", "keep-alive", "te", "proxy-authorization"] {
            assert!(h.get(gone).is_none(), "{gone} stays on its hop");
        }
        assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(h["sec-websocket-version"], "13");
    }

    #[test]
    fn a_101_keeps_the_instances_upgrade_and_says_connection_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        switching_protocols(&mut h);
        assert_eq!(h.get_all("connection").iter().collect::<Vec<_>>(), ["upgrade"]);
        assert_eq!(h.get_all("upgrade").iter().collect::<Vec<_>>(), ["websocket"]);
        assert!(h.get("x-hop").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn upstream_headers_replace_host_and_extend_the_forwarding_chain() {
        let client = map(&[
            ("host", "gw.example"),
            ("connection", "close, x-drop"),
            ("x-drop", "1"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
            ("accept", "a"),
            ("accept", "b"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let h = upstream_headers(
            &client,
            &Uri::from_static("/x"),
            Some(peer),
            &HeaderValue::from_static("10.1.1.1:80"),
            None,
            &mut None,
        );
        assert_eq!(h["host"], "10.1.1.1:80");
        assert_eq!(h["x-forwarded-host"], "gw.example");
        assert_eq!(h.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["http"], "ours replaces the client's");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9");
        assert_eq!(h.get_all("accept").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(h.get("x-drop").is_none() && h.get("connection").is_none());
    }

    #[test]
    fn the_request_id_is_the_clients_sane_one_or_a_new_one_and_stays_across_attempts() {
        let host = HeaderValue::from_static("i:1");
        let uri = Uri::from_static("/x");
        let client = HeaderMap::from_iter([(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"))]);
        let mut id = None;
        let h = upstream_headers(&client, &uri, None, &host, None, &mut id);
        assert_eq!((h.get_all(&X_REQUEST_ID).iter().count(), &h[&X_REQUEST_ID]), (1, &HeaderValue::from_static("abc")));
        assert_eq!(id.as_ref().unwrap(), "abc");

        let bad = HeaderMap::from_iter([(X_REQUEST_ID.clone(), HeaderValue::from_static("a b"))]);
        let mut id = None;
        let first = upstream_headers(&bad, &uri, None, &host, None, &mut id);
        let made = id.clone().unwrap();
        assert_eq!((made.len(), first.get_all(&X_REQUEST_ID).iter().count()), (32, 1), "the bad one is not passed on");
        let again = upstream_headers(&bad, &uri, None, &host, None, &mut id);
        assert_eq!((&first[&X_REQUEST_ID], &again[&X_REQUEST_ID]), (&made, &made), "one ID for every attempt");

        let mut id = None;
        let h = upstream_headers(&HeaderMap::new(), &uri, None, &host, None, &mut id);
        assert_eq!(Some(&h[&X_REQUEST_ID]), id.as_ref());
    }

    #[test]
    fn an_absolute_form_authority_wins_over_the_host_header_and_loses_its_user_info() {
        let client = HeaderMap::from_iter([(header::HOST, HeaderValue::from_static("other.com"))]);
        let uri = Uri::from_static("http://user:pw@api.example.com:8080/x");
        let h = upstream_headers(&client, &uri, None, &HeaderValue::from_static("i:1"), None, &mut None);
        assert_eq!(h["x-forwarded-host"], "api.example.com:8080");
    }

    #[test]
    fn an_absolute_form_request_forwards_its_authority() {
        let h = upstream_headers(
            &HeaderMap::new(),
            &Uri::from_static("http://gw.example:8080/x"),
            None,
            &HeaderValue::from_static("i:1"),
            None,
            &mut None,
        );
        assert_eq!(h["x-forwarded-host"], "gw.example:8080");
        assert!(h.get("x-forwarded-for").is_none());
    }

    #[test]
    fn a_stripped_prefix_replaces_the_clients_forwarded_prefix() {
        let client = HeaderMap::from_iter([(X_FORWARDED_PREFIX.clone(), HeaderValue::from_static("/spoofed"))]);
        let ours = HeaderValue::from_static("/v1");
        let h = upstream_headers(
            &client,
            &Uri::from_static("/x"),
            None,
            &HeaderValue::from_static("i:1"),
            Some(&ours),
            &mut None,
        );
        assert_eq!(h.get_all("x-forwarded-prefix").iter().collect::<Vec<_>>(), ["/v1"]);
        let h =
            upstream_headers(&client, &Uri::from_static("/x"), None, &HeaderValue::from_static("i:1"), None, &mut None);
        assert!(h.get("x-forwarded-prefix").is_none(), "nothing stripped: the client's is dropped too");
    }
}
