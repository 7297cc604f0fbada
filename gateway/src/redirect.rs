//! The plain-HTTP listener of `--redirect-http`: every request is answered with a redirect to the
//! same host, path and query over https, on the TLS listener's port (`:port` left out when it
//! is 443). Nothing is proxied from it.
//!
//! The status follows Traefik's permanent `redirectScheme`: `301 Moved Permanently` for `GET`,
//! which every client follows, and `308 Permanent Redirect` for other methods, so that a `POST`
//! stays a `POST` with its body (RFC 9110 §15.4.2, §15.4.9: a 301 lets clients turn it into a
//! `GET`). Unlike Traefik, `HEAD` gets a 301 like `GET`, whose headers it must mirror (RFC 9110
//! §9.3.2). Caddy answers 308 to every method. A request without a usable host (no `Host`, an
//! empty one, or one with user info) gets `400`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST, LOCATION};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

/// The `https://` URL a request to the plain listener is sent to, or `None` when the request
/// names no usable host. `host` is the `Host` header (an absolute-form target's authority wins
/// over it, RFC 9112 §3.2.2); its port is dropped for `tls_port`.
pub fn location(uri: &Uri, host: Option<&HeaderValue>, tls_port: u16) -> Option<String> {
    let authority = match uri.authority() {
        Some(a) => a.clone(),
        None => host?.to_str().ok()?.parse::<http::uri::Authority>().ok()?,
    };
    let name = authority.host();
    if name.is_empty() || authority.as_str().contains('@') {
        return None;
    }
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    // An origin-form target always starts with '/'; an asterisk-form one (OPTIONS *) does not.
    let path = if path.starts_with('/') { path } else { "/" };
    Some(if tls_port == 443 { format!("https://{name}{path}") } else { format!("https://{name}:{tls_port}{path}") })
}

/// `301` for `GET` and `HEAD`, `308` for every other method.
pub fn status(method: &Method) -> StatusCode {
    if method == Method::GET || method == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    }
}

/// The answer to one request.
pub fn answer<B>(req: &Request<B>, tls_port: u16) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    let target = location(req.uri(), req.headers().get(HOST), tls_port).and_then(|l| HeaderValue::try_from(l).ok());
    match target {
        Some(l) => {
            *resp.status_mut() = status(req.method());
            resp.headers_mut().insert(LOCATION, l);
        }
        None => {
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            *resp.body_mut() = Full::new(Bytes::from_static(b"a Host header is required\n"));
        }
    }
    resp
}

/// Serves redirects on `listener` until `stop` turns true, then waits for open connections.
/// `client_timeout` bounds how long a client may take to send a request head, or sit idle.
pub async fn serve(listener: TcpListener, tls_port: u16, client_timeout: Duration, stop: watch::Receiver<bool>) {
    let connections = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new());
    http.header_read_timeout(client_timeout);
    let http = Arc::new(http);
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    crate::proxy::listener::accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let service = service_fn(move |req| async move { Ok::<_, Infallible>(answer(&req, tls_port)) });
        let conn = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "redirect connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(target: &str, host: Option<&'static str>, port: u16) -> Option<String> {
        location(&target.parse().unwrap(), host.map(HeaderValue::from_static).as_ref(), port)
    }

    #[test]
    fn the_location_keeps_host_path_and_query_and_names_the_tls_port() {
        assert_eq!(loc("/a/b?c=1&d", Some("example.com"), 443).unwrap(), "https://example.com/a/b?c=1&d");
        assert_eq!(loc("/a", Some("example.com:80"), 443).unwrap(), "https://example.com/a", "the plain port goes");
        assert_eq!(loc("/a", Some("example.com:8080"), 8443).unwrap(), "https://example.com:8443/a");
        assert_eq!(loc("/", Some("[::1]:80"), 8443).unwrap(), "https://[::1]:8443/");
        assert_eq!(loc("http://abs.example/x?y", Some("other"), 443).unwrap(), "https://abs.example/x?y");
        assert_eq!(loc("*", Some("example.com"), 443).unwrap(), "https://example.com/");
    }

    #[test]
    fn a_request_without_a_usable_host_has_no_location() {
        assert_eq!(loc("/a", None, 443), None);
        assert_eq!(loc("/a", Some(""), 443), None);
        assert_eq!(loc("/a", Some("user@example.com"), 443), None);
        assert_eq!(loc("/a", Some("exa mple.com"), 443), None);
        assert_eq!(loc("/a", Some("a/b"), 443), None);
    }

    #[test]
    fn get_and_head_get_301_and_the_rest_308() {
        assert_eq!(status(&Method::GET), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(status(&Method::HEAD), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(status(&Method::POST), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(status(&Method::DELETE), StatusCode::PERMANENT_REDIRECT);
        let req = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(answer(&req, 443).status(), StatusCode::BAD_REQUEST);
    }
}
