//! What the request path refuses before it looks for a route, so that no instance ever sees it:
//! the hostile or malformed requests hyper's parser lets through (hyper itself answers 400 to
//! malformed heads, bad `Content-Length`s, `Transfer-Encoding` on HTTP/1.0 or not ending in
//! `chunked`, 431 to heads over `--max-header-bytes`, and fails bad chunk sizes when the body is
//! read). Each refusal is a [`GatewayError::Refused`]: a JSON answer that says why, and closes the
//! connection.
//!
//! | request | answer | why |
//! |---|---|---|
//! | a head the tap found bad ([`framing`]) | 400 | request smuggling (RFC 9112 §6.1, §6.3, §2.2) |
//! | `CONNECT` | 405, `Allow` | the gateway is not a forward proxy (nginx answers 405 too) |
//! | a target longer than `--max-uri-bytes` | 414 | RFC 9110 §15.5.15 |
//! | HTTP/1.1 without `Host` (and not in absolute form; [`mark`]), or two `Host`s | 400 | RFC 9112 §3.2 "MUST respond with a 400" |
//! | an absolute-form target whose scheme is not `http` or `https` | 400 | only HTTP is served |
//! | `Transfer-Encoding` other than one `chunked` (`gzip, chunked`, `chunked, chunked`, two fields) | 400 | RFC 9112 §6.1: the gateway decodes no other coding; hyper accepts any list that ends in `chunked` |
//! | a chunked body malformed in what had arrived with its head | 400 | read before any instance is chosen ([`super::ahead`]) |
//!
//! On the common path (a `GET` in origin form) this costs a method compare, a length compare and
//! the `Host` look-up the router needs anyway; the `Transfer-Encoding` check runs only for a body
//! of unknown length.

use http::header::{HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, StatusCode, Version};
use hyper::body::Body;

use super::error::GatewayError;
use super::framing;

/// The `Host` the request names, after the checks above: the absolute-form authority's (made
/// here, rare) or the `Host` header's. `None` only for HTTP/1.0 and HTTP/2 without one.
/// `headers` are `parts.headers` (apart, so that the answer borrows only them).
///
/// # Errors
/// [`GatewayError::Refused`], as the table in the module docs says.
pub fn check<'h, B: Body>(
    parts: &http::request::Parts,
    headers: &'h http::HeaderMap,
    body: &B,
    max_uri_bytes: usize,
) -> Result<Option<HostValue<'h>>, GatewayError> {
    if let Some(Refusal(why)) = parts.extensions.get::<Refusal>() {
        return Err(refused(StatusCode::BAD_REQUEST, why));
    }
    if parts.method == Method::CONNECT {
        return Err(refused(StatusCode::METHOD_NOT_ALLOWED, "CONNECT: the gateway is not a forward proxy"));
    }
    let uri = &parts.uri;
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
    let absolute = uri.authority();
    let target = target + absolute.map_or(0, |a| a.as_str().len() + uri.scheme_str().map_or(0, str::len) + 3);
    if target > max_uri_bytes {
        return Err(GatewayError::Refused {
            status: StatusCode::URI_TOO_LONG,
            reason: format!("the request target is longer than {max_uri_bytes} bytes (--max-uri-bytes)"),
        });
    }
    let mut hosts = headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(refused(StatusCode::BAD_REQUEST, "more than one Host header"));
    }
    if !body.is_end_stream() && body.size_hint().exact().is_none() && parts.version != Version::HTTP_2 {
        only_chunked(headers)?;
    }
    let Some(authority) = absolute else {
        return Ok(header.map(HostValue::Borrowed));
    };
    // Absolute form (RFC 9112 §3.2.2): its authority wins over `Host`. HTTP/2 always has one.
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(refused(StatusCode::BAD_REQUEST, "an absolute-form target whose scheme is not http or https"));
    }
    Ok(super::headers::authority_host(authority).map(HostValue::Owned))
}

/// The host a request names: the `Host` header's value, or one made from its target's authority.
pub enum HostValue<'a> {
    /// The `Host` header's.
    Borrowed(&'a HeaderValue),
    /// Made from the absolute-form authority.
    Owned(HeaderValue),
}

impl HostValue<'_> {
    /// The value.
    pub fn get(&self) -> &HeaderValue {
        match self {
            HostValue::Borrowed(v) => v,
            HostValue::Owned(v) => v,
        }
    }
}

/// A body of unknown length over HTTP/1.1 is chunked (hyper accepted a `Transfer-Encoding`
/// ending in `chunked`): only exactly one `chunked` coding is accepted.
fn only_chunked(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let one = codings.next().is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if one && codings.next().is_none() {
        return Ok(());
    }
    Err(refused(StatusCode::BAD_REQUEST, "Transfer-Encoding other than chunked"))
}

/// A [`GatewayError::Refused`] with `status` and `reason`.
pub fn refused(status: StatusCode, reason: &str) -> GatewayError {
    GatewayError::Refused { status, reason: reason.to_string() }
}

/// Why the HTTP/1 listener refuses a request, carried to [`check`] as an extension (only
/// refused requests carry one, so the others pay no allocation).
#[derive(Debug, Clone, Copy)]
pub struct Refusal(pub &'static str);

/// What the HTTP/1 listener knows of a request before the proxy sees it: the tap's verdict on
/// its head ([`framing::Scan::verdict`]), and whether an HTTP/1.1 request names a host at all
/// (RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
/// request message that lacks a Host header field"; an absolute-form target names one too).
pub fn mark<B>(req: &mut http::Request<B>, scan: &framing::Scan) {
    let refusal = match scan.verdict() {
        Some(why) => Some(why.reason()),
        None if req.version() == Version::HTTP_11
            && req.uri().authority().is_none()
            && !req.headers().contains_key(HOST) =>
        {
            Some("an HTTP/1.1 request without Host")
        }
        None => None,
    };
    if let Some(why) = refusal {
        req.extensions_mut().insert(Refusal(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn status(r: Result<Option<HostValue<'_>>, GatewayError>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn hosts_connect_schemes_and_long_targets() {
        let empty = Empty::<Bytes>::new();
        let ok = parts(http::Request::get("/a").header("host", "x").body(()).unwrap());
        assert_eq!(check(&ok, &ok.headers, &empty, 100).unwrap().unwrap().get(), "x");
        let two = parts(http::Request::get("/a").header("host", "x").header("host", "y").body(()).unwrap());
        assert_eq!(status(check(&two, &two.headers, &empty, 100)), 400);
        let mut none = http::Request::get("/a").body(()).unwrap();
        mark(&mut none, &framing::Scan::default());
        let none = parts(none);
        assert_eq!(status(check(&none, &none.headers, &empty, 100)), 400);
        let mut named = http::Request::get("http://x/a").body(()).unwrap();
        mark(&mut named, &framing::Scan::default());
        let named = parts(named);
        assert_eq!(status(check(&named, &named.headers, &empty, 100)), 200, "absolute form names a host");
        let old = parts(http::Request::get("/a").version(Version::HTTP_10).body(()).unwrap());
        assert!(check(&old, &old.headers, &empty, 100).unwrap().is_none(), "HTTP/1.0 needs no Host");
        let abs = parts(http::Request::get("http://Other.example:81/a").header("host", "x").body(()).unwrap());
        assert_eq!(
            check(&abs, &abs.headers, &empty, 100).unwrap().unwrap().get(),
            "Other.example:81",
            "the authority wins"
        );
        let ftp = parts(http::Request::get("ftp://x/a").header("host", "x").body(()).unwrap());
        assert_eq!(status(check(&ftp, &ftp.headers, &empty, 100)), 400);
        let connect = parts(http::Request::connect("x:443").header("host", "x:443").body(()).unwrap());
        assert_eq!(status(check(&connect, &connect.headers, &empty, 100)), 405);
        let long = parts(http::Request::get(format!("/{}", "a".repeat(100))).header("host", "x").body(()).unwrap());
        assert_eq!(status(check(&long, &long.headers, &empty, 100)), 414);
        assert_eq!(status(check(&long, &long.headers, &empty, 101)), 200);
    }

    #[test]
    fn only_one_chunked_coding_passes() {
        let te = |values: &[&str]| {
            let mut b = http::Request::post("/a").header("host", "x");
            for v in values {
                b = b.header("transfer-encoding", *v);
            }
            only_chunked(&parts(b.body(()).unwrap()).headers).is_ok()
        };
        assert!(te(&["chunked"]) && te(&["Chunked "]));
        for bad in [&["gzip, chunked"][..], &["chunked, chunked"], &["gzip", "chunked"], &["xchunked"], &[]] {
            assert!(!te(bad), "{bad:?}");
        }
    }
}
