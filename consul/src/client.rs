//! [`Client`]: the HTTP calls the workspace makes to Consul.
//!
//! Reads return a [`QueryResult`] carrying `X-Consul-Index`, so callers can run blocking queries;
//! the index rules themselves live in [`crate::index`]. The ACL token goes into `X-Consul-Token`
//! on every request and nowhere else.
//!
//! Plain `http://` is HTTP/1.1: one connection per request in flight. `https://` offers HTTP/2 by
//! ALPN ([`crate::tls`]); Consul's HTTPS listener takes it, and then every request of one
//! [`Client`] (and its clones) is a stream on one connection, up to the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (250 on Consul 1.8). Beyond that, requests wait in the client
//! for a stream to end: they do not open another connection. [`Client::separate`] gives a
//! client with connections of its own, to spread long polls over several connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

use crate::model::{canonical, AgentRegistration, AgentService, CatalogEntry, HealthEntry, Instance};
use crate::{index, Consistency, ConsulAddr, Error, HealthStatuses, TlsConfig, Token};

/// How often an idle HTTP/2 connection is pinged, so a Consul that vanished without closing it
/// (a host gone, a cable pulled) is noticed within a minute instead of at the long polls' timeout.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection counts as dead.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a non-blocking call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept to Consul.
pub const MAX_IDLE_CONNECTIONS: usize = 6;
/// Said with a failed request over `https://` without a client certificate.
const NO_CLIENT_CERT_HINT: &str =
    " (no client certificate was offered: if Consul's HTTPS requires one, verify_incoming, set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY)";
/// Said with a failed request over `https://` whose client certificate the server refused.
const CLIENT_CERT_REFUSED_HINT: &str = " (Consul refused the client certificate: check that CONSUL_CLIENT_CERT has not expired and is signed by a CA in the agent's ca_file)";
/// How much of an error body goes into an error message.
const MAX_ERROR_BODY: usize = 512;

/// Which view of a service's instances to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `/v1/health/service/<name>`: only instances whose checks (the node's and their own) all
    /// have an allowed status (the default: `passing` only).
    Health(HealthStatuses),
    /// `/v1/catalog/service/<name>`: every registered instance regardless of health.
    Catalog,
}

impl Default for View {
    fn default() -> Self {
        View::Health(HealthStatuses::PASSING)
    }
}

/// The answer to a read: the data and the `X-Consul-Index` it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResult {
    /// `X-Consul-Index` of the answer.
    pub index: u64,
    /// The instances, in canonical order.
    pub instances: Vec<Instance>,
    /// Whether a change of this service might not show in `/v1/health/state/any`: it has no
    /// instance, or an instance without a check of its own (always true for the catalog view).
    pub checkless: bool,
}

/// A Consul HTTP API client. Cheap to clone (clones share one connection pool).
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: ConsulAddr,
    pub(crate) token: Token,
    /// The TLS configuration (https only), kept to build [`Client::separate`] pools.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// HTTP/2 from the first byte ([`Client::http2_only`]).
    h2_only: bool,
    /// Whether a client certificate is offered (https only).
    client_cert: bool,
    /// The consistency mode of every catalog and health read ([`Client::with_consistency`]).
    consistency: Consistency,
}

/// Checks that a name can be used as one URL path segment without surprises.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// The ID Consul gives the one check registered with service `service_id` when the registration
/// names none (`service:<id>`): what `PUT /v1/agent/check/pass/<check>` takes for its TTL.
pub fn service_check_id(service_id: &str) -> String {
    format!("service:{service_id}")
}

impl Client {
    /// A client for the agent at `base`; for `https://`, trusting the built-in roots (see
    /// [`Client::with_tls`] for a CA of your own, as Consul's own certificates need).
    pub fn new(base: ConsulAddr, token: Token) -> Self {
        match Self::with_tls(base.clone(), token.clone(), &TlsConfig::default()) {
            Ok(c) => c,
            // Unreachable in practice (nothing is read from disk); keep a working client anyway.
            Err(_) => Self {
                http: reqwest::Client::new(),
                base,
                token,
                tls: None,
                h2_only: false,
                client_cert: false,
                consistency: Consistency::Default,
            },
        }
    }

    /// A client for the agent at `base`, with `tls` for an `https://` address (ignored for
    /// `http://`, as Consul's tools do).
    ///
    /// # Errors
    /// The TLS files cannot be read or used.
    /// With `CONSUL_HTTP_SSL_VERIFY=false` on an `https://` address, logs one warning that the
    /// server is not verified.
    ///
    /// # Errors
    /// The TLS files cannot be read or used.
    pub fn with_tls(base: ConsulAddr, token: Token, cfg: &TlsConfig) -> Result<Self, Error> {
        if base.is_https() && cfg.skip_verify {
            tracing::warn!(consul = %base, "CONSUL_HTTP_SSL_VERIFY=false: Consul's certificate is NOT verified; anyone on the path can pose as Consul");
        }
        let tls = if base.is_https() { Some(Arc::new(cfg.client_config()?)) } else { None };
        let http = build_http(tls.as_deref(), false)?;
        let client_cert = tls.is_some() && cfg.client_cert.is_some();
        Ok(Self { http, base, token, tls, h2_only: false, client_cert, consistency: Consistency::Default })
    }

    /// A client for [`crate::addr::ENV_ADDR`]'s address `base`, the token from
    /// `CONSUL_HTTP_TOKEN_FILE` or `CONSUL_HTTP_TOKEN` ([`Token::from_env`]) and TLS from the
    /// `CONSUL_CACERT` family ([`TlsConfig::from_env`]): every variable Consul's own tools read.
    ///
    /// # Errors
    /// As [`Token::from_env`], [`TlsConfig::from_env`] and [`Client::with_tls`].
    pub fn from_env(base: ConsulAddr) -> Result<Self, Error> {
        Self::with_tls(base, Token::from_env()?, &TlsConfig::from_env()?)
    }

    /// This client, its catalog and health reads asking for `consistency` (`?stale` or
    /// `?consistent`; see [`Consistency`]). Agent endpoints and `/v1/status` are local to the
    /// agent and take no mode.
    #[must_use]
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// The consistency mode of this client's reads.
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// A client to the same agent, with the same settings, and connections of its own: over
    /// HTTP/2 its requests are streams on another connection than this client's.
    pub fn separate(&self) -> Self {
        let http = build_http(self.tls.as_deref(), self.h2_only).unwrap_or_else(|_| self.http.clone());
        Self { http, tls: self.tls.clone(), ..self.clone() }
    }

    /// Like [`Client::separate`], speaking HTTP/2 from the first byte, for an `https://` agent
    /// known to take `h2` ([`Client::protocol`]); `None` for `http://` (Consul has no cleartext
    /// HTTP/2).
    ///
    /// Why: with `h2` left to ALPN, the HTTP client cannot know a new connection will be shared,
    /// so every request that starts before the first handshake ends opens a connection of its
    /// own (measured: 2,500 long polls started at once opened thousands, and Consul's
    /// per-client limit reset them). Known to be HTTP/2, they wait for the one connection.
    pub fn http2_only(&self) -> Option<Self> {
        let tls = self.tls.clone()?;
        let http = build_http(Some(&tls), true).ok()?;
        Some(Self { http, tls: Some(tls), h2_only: true, ..self.clone() })
    }

    /// Whether this client speaks TLS (and so HTTP/2 where Consul takes it).
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests carry an ACL token (never the token itself).
    pub fn has_token(&self) -> bool {
        self.token.is_set()
    }

    /// The agent address this client talks to.
    pub fn addr(&self) -> &ConsulAddr {
        &self.base
    }

    /// Reads a service's instances. With `index > 0` this is a blocking query that returns when
    /// Consul's index moves past `index` or after `wait` (plus Consul's jitter).
    ///
    /// Consul matches `service` without regard to case: instances registered as `Web` are
    /// instances of `web`. The health view keeps the instances whose every check is allowed
    /// ([`HealthStatuses`]); with `passing` only, Consul filters the same way (`?passing`) before
    /// sending, which saves sending failing instances.
    ///
    /// # Errors
    /// An invalid name, Consul unreachable, a non-success answer, or an undecodable body.
    pub async fn instances(&self, view: View, service: &str, index: u64, wait: Duration) -> Result<QueryResult, Error> {
        validate_name(service)?;
        let (prefix, passing) = match view {
            View::Health(allowed) => ("health/service", !allowed.warning()),
            View::Catalog => ("catalog/service", false),
        };
        let endpoint = format!("/v1/{prefix}/{service}");
        let mut url = self.read_url(&endpoint);
        {
            let mut q = url.query_pairs_mut();
            if passing {
                q.append_pair("passing", "1");
            }
            if index > 0 {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &index::wait_param(wait));
            }
        }
        let timeout = if index > 0 { index::request_timeout(wait) } else { CALL_TIMEOUT };
        let resp = self.send(&endpoint, self.request(Method::GET, url).timeout(timeout)).await?;
        let index = consul_index(&resp);
        let bytes = body(&endpoint, resp).await?;
        parse_instances(view, index, bytes.as_ref()).map_err(|e| Error::Decode { endpoint, why: e.to_string() })
    }

    /// The HTTP version Consul answers this client with (`/v1/status/leader`): HTTP/2 when an
    /// `https://` agent took `h2` by ALPN, HTTP/1.1 otherwise.
    ///
    /// # Errors
    /// Consul unreachable or answering with an error.
    pub async fn protocol(&self) -> Result<http::Version, Error> {
        let endpoint = "/v1/status/leader";
        let resp = self.send(endpoint, self.request(Method::GET, self.url(endpoint)).timeout(CALL_TIMEOUT)).await?;
        Ok(resp.version())
    }

    /// Registers (or re-registers) a service with the local agent, with its check if `reg` has one
    /// (one call: the agent stores both or neither).
    ///
    /// # Errors
    /// Consul unreachable, or answering with an error (400 for a registration it refuses, 403
    /// without `service:write`).
    pub async fn register(&self, reg: &AgentRegistration) -> Result<(), Error> {
        let endpoint = "/v1/agent/service/register";
        let req = self.request(Method::PUT, self.url(endpoint)).json(reg).timeout(CALL_TIMEOUT);
        self.send(endpoint, req).await.map(drop)
    }

    /// Removes a service (and its checks) from the local agent.
    ///
    /// # Errors
    /// Consul unreachable, or answering with an error; an unknown ID shows as
    /// [`Error::is_unknown_id`].
    pub async fn deregister(&self, service_id: &str) -> Result<(), Error> {
        let endpoint = format!("/v1/agent/service/deregister/{}", path_segment(service_id));
        let req = self.request(Method::PUT, self.url(&endpoint)).timeout(CALL_TIMEOUT);
        self.send(&endpoint, req).await.map(drop)
    }

    /// Marks a TTL check as passing. Consul answers 404 (or 500 on old versions) for an unknown
    /// check, which is how an owner learns that its registration is gone and must be redone.
    ///
    /// # Errors
    /// Consul unreachable, or answering with an error; an unknown check shows as
    /// [`Error::is_unknown_id`].
    pub async fn pass_check(&self, check_id: &str) -> Result<(), Error> {
        let endpoint = format!("/v1/agent/check/pass/{}", path_segment(check_id));
        let req = self.request(Method::PUT, self.url(&endpoint)).timeout(CALL_TIMEOUT);
        self.send(&endpoint, req).await.map(drop)
    }

    /// The services registered on the local agent, by ID.
    pub async fn agent_services(&self) -> Result<HashMap<String, AgentService>, Error> {
        let endpoint = "/v1/agent/services";
        let resp = self.send(endpoint, self.request(Method::GET, self.url(endpoint)).timeout(CALL_TIMEOUT)).await?;
        decode(endpoint, resp).await
    }

    /// The address of the cluster leader (`""` while there is none).
    pub async fn leader(&self) -> Result<String, Error> {
        let endpoint = "/v1/status/leader";
        let resp = self.send(endpoint, self.request(Method::GET, self.url(endpoint)).timeout(CALL_TIMEOUT)).await?;
        decode(endpoint, resp).await
    }

    pub(crate) fn url(&self, endpoint: &str) -> Url {
        // The base was validated as a URL and endpoints are built from validated segments.
        Url::parse(&format!("{}{endpoint}", self.base))
            .unwrap_or_else(|_| Url::parse("http://invalid./").expect("static URL"))
    }

    /// The URL of a catalog or health read: [`Client::url`] with the consistency mode.
    pub(crate) fn read_url(&self, endpoint: &str) -> Url {
        let mut url = self.url(endpoint);
        if let Some(mode) = self.consistency.query_param() {
            // `?stale=`: Consul looks only at the key, as for Go's client's `params.Set("stale", "")`.
            url.query_pairs_mut().append_pair(mode, "");
        }
        url
    }

    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match self.token.secret() {
            Some(t) => req.header("X-Consul-Token", t),
            None => req,
        }
    }

    pub(crate) async fn send(&self, endpoint: &str, req: RequestBuilder) -> Result<Response, Error> {
        let resp = req.send().await.map_err(|source| {
            let hint = match (self.is_https(), self.client_cert) {
                (true, false) => NO_CLIENT_CERT_HINT,
                (true, true) if certificate_refused(&source) => CLIENT_CERT_REFUSED_HINT,
                _ => "",
            };
            Error::Transport { endpoint: endpoint.to_string(), source: source.without_url(), hint }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let mut body = body.trim().to_string();
        if body.len() > MAX_ERROR_BODY {
            let mut cut = MAX_ERROR_BODY;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        Err(Error::Status { endpoint: endpoint.to_string(), status, body })
    }
}

fn build_http(tls: Option<&rustls::ClientConfig>, h2_only: bool) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        // Consul limits connections per client address (200 by default): keep few idle ones.
        // Connections in use are bounded by the callers (one per blocking query, a few reads).
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
        .http2_keep_alive_interval(H2_KEEPALIVE)
        .http2_keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true);
    if let Some(tls) = tls {
        b = b.use_preconfigured_tls(tls.clone());
    }
    if h2_only {
        // The pool's idle timer counts from the last checkout, not the last stream: a connection
        // carrying only long polls for 90 s would be dropped from the pool while busy, and the
        // next request would open another one (seen in bench/change_cost.py: 19 connections on
        // a cap of 16). Dead connections are found by the keep-alive pings instead.
        b = b.http2_prior_knowledge().pool_idle_timeout(None);
    }
    b.build().map_err(|e| Error::Tls { why: format!("cannot build the HTTP client: {e}") })
}

/// Whether the server ended the handshake with an alert that refuses our certificate (Go's TLS
/// server, Consul's, answers `bad_certificate` for an expired one or one of an unknown CA).
/// rustls' error sits inside an `io::Error`, whose `source()` skips it: looked up by hand. Over
/// HTTP/2 (TLS 1.3 sends the alert after the client's handshake is over) it is inside h2's error,
/// which has no `source()`: recognised by rustls' text (`received fatal alert: BadCertificate`).
fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::AlertDescription as A;
    const REFUSALS: [&str; 5] =
        ["BadCertificate", "CertificateExpired", "UnknownCA", "CertificateUnknown", "CertificateRevoked"];
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some((_, alert)) = text.split_once("received fatal alert: ") {
            if REFUSALS.iter().any(|r| alert.starts_with(r)) {
                return true;
            }
        }
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|i| i.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return matches!(
                alert,
                A::BadCertificate
                    | A::CertificateExpired
                    | A::UnknownCA
                    | A::CertificateUnknown
                    | A::CertificateRevoked
            );
        }
        cur = err.source();
    }
    false
}

pub(crate) fn consul_index(resp: &Response) -> u64 {
    resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

pub(crate) async fn decode<T: DeserializeOwned>(endpoint: &str, resp: Response) -> Result<T, Error> {
    let bytes = body(endpoint, resp).await?;
    serde_json::from_slice(bytes.as_ref())
        .map_err(|e| Error::Decode { endpoint: endpoint.to_string(), why: e.to_string() })
}

async fn body(endpoint: &str, resp: Response) -> Result<impl AsRef<[u8]>, Error> {
    resp.bytes().await.map_err(|source| Error::Transport {
        endpoint: endpoint.to_string(),
        source: source.without_url(),
        hint: "",
    })
}

/// The instances in the body of a `/v1/health/service/<name>` answer (`view` [`View::Health`]:
/// only those whose every check is allowed) or of a `/v1/catalog/service/<name>` answer
/// ([`View::Catalog`]), read at `index`, in canonical order ([`canonical`]). `checkless` is set
/// for the catalog view, and for a health answer that is empty or has an instance without a
/// check of its own. Pure: [`Client::instances`] reads with it; public so the parsing can be
/// exercised without a Consul (the fuzz targets in `fuzz/`).
///
/// # Errors
/// A body that is not a JSON array of Consul 1.8's entries for that view.
pub fn parse_instances(view: View, index: u64, body: &[u8]) -> Result<QueryResult, serde_json::Error> {
    let (instances, checkless): (Vec<Instance>, bool) = match view {
        View::Health(allowed) => {
            let entries: Vec<HealthEntry> = serde_json::from_slice(body)?;
            let checkless = entries.is_empty() || entries.iter().any(|e| !e.has_service_check());
            (entries.into_iter().filter(|e| e.routable(allowed)).map(Instance::from).collect(), checkless)
        }
        View::Catalog => {
            let entries: Vec<CatalogEntry> = serde_json::from_slice(body)?;
            (entries.into_iter().map(Instance::from).collect(), true)
        }
    };
    Ok(QueryResult { index, instances: canonical(instances), checkless })
}

/// Percent-encodes an ID for use as one path segment (IDs may hold ':' or '/').
pub(crate) fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("service-web").is_ok());
        assert!(validate_name("a.b_c").is_ok());
        for bad in ["", "..", "a/b", "a b", "a?b", "ü"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    /// An HTTP/1.1 server on loopback that answers every read with a minimal valid body and
    /// records each request line.
    async fn recorder() -> (ConsulAddr, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = ConsulAddr::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        // The rest of the head (no request here has a body).
                        let mut h = String::new();
                        while conn.read_line(&mut h).await.unwrap_or(0) > 2 {
                            h.clear();
                        }
                        let body = if line.contains("/v1/catalog/services") {
                            r#"{"consul":[]}"#
                        } else if line.contains("/v1/catalog/node/") {
                            "null"
                        } else {
                            "[]"
                        };
                        record.lock().unwrap().push(line.trim().to_string());
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nX-Consul-Index: 7\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    /// Every catalog and health read, blocking or not, asks for the configured mode; the
    /// default adds nothing.
    #[tokio::test]
    async fn every_read_carries_the_consistency_mode() {
        let (addr, seen) = recorder().await;
        for mode in [Consistency::Default, Consistency::Stale, Consistency::Consistent] {
            seen.lock().unwrap().clear();
            let c = Client::new(addr.clone(), Token::default()).with_consistency(mode);
            assert_eq!(c.separate().consistency(), mode, "kept by separate()");
            let wait = Duration::from_secs(1);
            c.instances(View::default(), "web", 0, wait).await.unwrap();
            c.instances(View::default(), "web", 5, wait).await.unwrap();
            c.instances(View::Catalog, "web", 5, wait).await.unwrap();
            c.catalog_services(0, wait).await.unwrap();
            c.catalog_services(5, wait).await.unwrap();
            c.health_state_any(5, wait).await.unwrap();
            c.catalog_nodes().await.unwrap();
            c.catalog_node_prints("n1", 5, wait).await.unwrap();
            let lines = seen.lock().unwrap().clone();
            assert_eq!(lines.len(), 8, "{lines:?}");
            for line in &lines {
                let query = line.split(' ').nth(1).unwrap().split_once('?').map_or("", |(_, q)| q);
                let params: Vec<&str> = query.split('&').map(|p| p.split('=').next().unwrap()).collect();
                let has = |p: &str| params.contains(&p);
                match mode {
                    Consistency::Default => assert!(!has("stale") && !has("consistent"), "{line}"),
                    Consistency::Stale => assert!(has("stale") && !has("consistent"), "{line}"),
                    Consistency::Consistent => assert!(has("consistent") && !has("stale"), "{line}"),
                }
            }
            assert!(lines[1].contains("index=5"), "blocking queries too: {}", lines[1]);
        }
    }

    /// An expired client certificate, or one of a CA the agent does not trust, shows to the
    /// client only as a `bad_certificate` alert: the error says what to check.
    #[test]
    fn a_refused_client_certificate_is_recognised_inside_io_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Wrapper(#[source] std::io::Error);
        let alert = |a| Wrapper(std::io::Error::other(rustls::Error::AlertReceived(a)));
        assert!(certificate_refused(&alert(rustls::AlertDescription::BadCertificate)));
        assert!(certificate_refused(&alert(rustls::AlertDescription::CertificateExpired)));
        assert!(!certificate_refused(&alert(rustls::AlertDescription::HandshakeFailure)));
        assert!(!certificate_refused(&Wrapper(std::io::Error::other("connection closed"))));
        // h2's connection error shows the alert only in its text.
        #[derive(Debug, thiserror::Error)]
        #[error("connection error: received fatal alert: BadCertificate")]
        struct H2;
        assert!(certificate_refused(&H2));
    }

    #[test]
    fn ids_are_encoded_as_one_segment() {
        assert_eq!(path_segment("host:web:3000"), "host:web:3000");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
