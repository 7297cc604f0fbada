//! The gateway's command line and environment, parsed and validated once into [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use common::LogFormat;
use consul::{Consistency, ConsulAddr, HealthStatuses, View};

use crate::api::auth::{ApiToken, RawToken, TokenError};
use crate::discovery::tag::TagRules;
use crate::observe::access;
use crate::proxy::balancer::Balance;
use crate::proxy::upstream::Timeouts;
use watcher::source::dns::DnsArgs;
use watcher::source::etcd::EtcdArgs;
use watcher::source::SourceKind;

/// Routes requests to the live instances of Consul services: by the routes services declare in
/// their tags (`urlprefix-[host]/path [options]`), and /<service>/* for services tagged `gateway`
/// or named in --services.
///
/// The Consul ACL token is read from CONSUL_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN (the file wins,
/// as in Consul's own tools; passed to the watcher through its environment, never on a command
/// line, never logged); it needs service:read and node:read.
#[derive(Parser, Debug, Clone)]
#[command(name = "gateway", version, about)]
pub struct Args {
    /// Address of the public listener: HTTP/1.1 and HTTP/2 with prior knowledge (h2c), or with
    /// --tls-cert/--tls-dir TLS only, HTTP/2 or HTTP/1.1 by ALPN.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Address of the admin listener: the status page (/, /events), /metrics, /healthz, /readyz,
    /// /services, /routes; the register/discover API under /v1/ with --api-token(-file).
    /// Unauthenticated (but /v1/): keep it on loopback or a private network.
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Consul HTTP address: host:port, http://host:port, or https://host:port (TLS from
    /// CONSUL_CACERT or CONSUL_CAPATH, CONSUL_CLIENT_CERT/KEY, CONSUL_TLS_SERVER_NAME and
    /// CONSUL_HTTP_SSL_VERIFY, which the watcher inherits too).
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = consul::addr::DEFAULT_ADDR)]
    pub consul: ConsulAddr,
    /// Comma list of services routable at /<service>/* whatever their tags (static routes).
    /// Services that carry --route-tag or a --route-prefix-tag tag are routable too; nothing
    /// else is reachable.
    #[arg(long, env = "GATEWAY_SERVICES", value_delimiter = ',')]
    pub services: Vec<String>,
    /// A service carrying this tag is routable at /<service>/* (its name stripped), found and
    /// followed while it carries it. Empty: off.
    #[arg(long, env = "GATEWAY_ROUTE_TAG", default_value = "gateway", value_name = "TAG")]
    pub route_tag: String,
    /// Tags starting with this declare routes in Fabio's grammar: `<prefix>[host]/path [options]`
    /// (README, "Routing"). Empty: off.
    #[arg(long, env = "GATEWAY_ROUTE_PREFIX_TAG", default_value = "urlprefix-", value_name = "PREFIX")]
    pub route_prefix_tag: String,
    /// Consistency mode of every Consul read, the watcher's and the gateway's own (Consul's
    /// "Consistency Modes"): `default` (the leader answers), `stale` (any server answers: reads
    /// may lag the leader a little, but keep working while the servers elect a leader) or
    /// `consistent` (the leader confirms its leadership with a quorum first: never stale, slower,
    /// nothing without a leader).
    #[arg(long, env = "GATEWAY_CONSISTENCY", default_value = "default", value_name = "MODE")]
    pub consistency: Consistency,
    /// The watcher executable (default: `watcher` next to the gateway executable).
    #[arg(long, env = "GATEWAY_WATCHER_BIN")]
    pub watcher_bin: Option<PathBuf>,
    /// Route on Consul's catalog (every registered instance) instead of the health view
    /// (only instances whose checks all have a --health-status).
    #[arg(long, env = "GATEWAY_CATALOG")]
    pub catalog: bool,
    /// The check statuses that make an instance routable: `passing` or `passing,warning`. Every
    /// check counts, the node's (serfHealth, node maintenance) and the instance's own (service
    /// maintenance included). Applies to the watcher and to the gateway's own direct reads alike;
    /// ignored with --catalog.
    #[arg(long, env = "GATEWAY_HEALTH_STATUS", default_value = "passing", value_name = "LIST")]
    pub health_status: HealthStatuses,
    /// Keep the last good state in this file (README, "State file"): every followed service's
    /// instances and tags, written atomically (temporary file, fsync, rename) with a SHA-256,
    /// at most once a second and at shutdown, and only while the registry confirms it (the
    /// gateway would be ready). A gateway that starts while the registry is unreachable serves
    /// the file's services at once, marked stale (/readyz 503), until the watcher's snapshots
    /// replace them. A corrupt or foreign file is ignored with a warning. Default: off.
    #[arg(long, env = "GATEWAY_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// How long an instance may take to start answering (its response headers) before the
    /// client gets a 504; a response body that streams longer (a gRPC server stream) is not cut.
    /// A gRPC call's longer deadline (`grpc-timeout`) extends it for that call.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// How long connecting to an instance may take before another one is tried.
    #[arg(long, env = "GATEWAY_CONNECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// How long an idle keep-alive connection to an instance is reused; older ones are closed.
    /// Shorter than the idle timeouts of common servers (gunicorn 2 s, Node.js, Apache httpd
    /// and uvicorn 5 s, some 1 s), so that the gateway closes a connection before the instance
    /// does: reusing one the instance is closing can cost a POST an error. An instance's own
    /// `Keep-Alive: timeout=N` shortens it further. 0: never reuse a connection.
    #[arg(
        long,
        env = "GATEWAY_UPSTREAM_IDLE_TIMEOUT",
        default_value = "500ms",
        value_parser = humantime::parse_duration
    )]
    pub upstream_idle_timeout: Duration,
    /// How long a client may take to send a request's headers (or its TLS handshake); also how
    /// long a keep-alive client connection may sit idle between requests (HTTP/2: move no byte).
    /// Then the gateway closes it.
    #[arg(long, env = "GATEWAY_CLIENT_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "GATEWAY_GRACE_PERIOD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// A tunnel (a WebSocket or another protocol a client switched to with `Upgrade`, after the
    /// instance's 101) with no byte in either direction for this long is closed.
    #[arg(long, env = "GATEWAY_TUNNEL_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub tunnel_idle_timeout: Duration,
    /// Request bodies up to this many bytes are buffered so that the request can be sent to
    /// another instance after a failure; larger ones are streamed, and go to another instance
    /// only if none of the body was sent.
    #[arg(long, env = "GATEWAY_MAX_REPLAY_BODY", default_value_t = 64 * 1024)]
    pub max_replay_body: u64,
    /// Worker threads, each with its own single-threaded event loop and listening socket
    /// (SO_REUSEPORT), like nginx's workers (default: one per CPU this process may use).
    #[arg(long, env = "GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// How a route's instances share its requests, unless the route's `balance=` option says:
    /// `random` (weighted), `round-robin` (in turn; smooth weighted) or `least-request` (the
    /// power of two choices over requests in flight).
    #[arg(long, env = "GATEWAY_BALANCE", value_enum, default_value_t = Balance::Random)]
    pub balance: Balance,
    /// Terminate TLS on the public listener with this PEM certificate chain (leaf first),
    /// served to every client; with --tls-key. Reloaded when the file changes.
    #[arg(long, env = "GATEWAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GATEWAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Terminate TLS with the certificates of this directory, chosen by SNI: pairs
    /// `<name>.crt` + `<name>.key`, each serving the DNS names in its certificate; a client
    /// without SNI or with an unknown name gets `default.crt` (else the first pair by name).
    /// Reloaded when the files change. Not with --tls-cert.
    #[arg(long, env = "GATEWAY_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Also listen for plain HTTP on this address and redirect every request there to https on
    /// the --listen port (301 for GET and HEAD, 308 for other methods). Needs TLS.
    #[arg(long, env = "GATEWAY_REDIRECT_HTTP", value_name = "ADDR")]
    pub redirect_http: Option<SocketAddr>,
    /// Log format on stderr (the watcher logs in the same format).
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// One line per request (README, "Access log and request IDs"): `off`, `text` or `json`, to
    /// stdout or to --access-log-file. Lines that find the writer's queue full are dropped and
    /// counted, never waited for.
    #[arg(long, env = "GATEWAY_ACCESS_LOG", value_enum, default_value_t = AccessLogMode::Off, value_name = "FORMAT")]
    pub access_log: AccessLogMode,
    /// Write the access log to this file (appended to, created if missing; reopened by name on
    /// SIGHUP, for logrotate) instead of stdout. Needs --access-log text or json; a file that
    /// cannot be opened stops the start.
    #[arg(long, env = "GATEWAY_ACCESS_LOG_FILE", value_name = "PATH")]
    pub access_log_file: Option<PathBuf>,
    /// The registry instances come from: `consul` (--consul), `etcd` (--etcd-*) or `dns`
    /// (--dns-*). The watcher follows it; routes, balancing and the API work the same on each.
    #[arg(long, env = "GATEWAY_SOURCE", value_enum, default_value_t = SourceKind::Consul)]
    pub source: SourceKind,
    /// The etcd flags (with --source etcd).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The DNS flags (with --source dns).
    #[command(flatten)]
    pub dns: DnsArgs,
    /// Turns on the register/discover API under /v1/ on the admin listener
    /// (docs/api/openapi.yaml); every /v1/ request must carry `Authorization: Bearer <TOKEN>`.
    /// Prefer --api-token-file: a flag shows in `ps`. Never logged.
    #[arg(long, env = "GATEWAY_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub api_token: Option<RawToken>,
    /// The API token from this file (surrounding whitespace dropped); wins over --api-token, as
    /// CONSUL_HTTP_TOKEN_FILE wins over CONSUL_HTTP_TOKEN.
    #[arg(long, env = "GATEWAY_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
}

/// `--access-log`: off, or a line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogMode {
    /// No access log.
    Off,
    /// Space-separated text lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A validated configuration: only checked values.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the public listener.
    pub listen: SocketAddr,
    /// Address of the admin listener.
    pub admin_listen: SocketAddr,
    /// Consul's HTTP address.
    pub consul: ConsulAddr,
    /// The consistency mode of every Consul read (the watcher's too).
    pub consistency: Consistency,
    /// The static services, valid Consul names, sorted and deduplicated (maybe none).
    pub services: Vec<String>,
    /// Which tags make routes.
    pub rules: TagRules,
    /// How instances are read from Consul, by the watcher and by direct reads alike.
    pub view: View,
    /// The state file (`--state-file`); `None`: off.
    pub state_file: Option<PathBuf>,
    /// The watcher executable.
    pub watcher_bin: PathBuf,
    /// Worker threads serving the public listener.
    pub workers: usize,
    /// The balancing policy of routes that name none.
    pub balance: Balance,
    /// Upstream connect timeout and idle-connection lifetime.
    pub timeouts: Timeouts,
    /// How long an instance may take to answer (response headers).
    pub upstream_timeout: Duration,
    /// How long a client may take to send a request head, or sit idle.
    pub client_timeout: Duration,
    /// How long in-flight requests may take at shutdown.
    pub grace_period: Duration,
    /// How long a tunnel may carry nothing before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// Request bodies up to this many bytes can be sent again.
    pub max_replay_body: u64,
    /// Log format (the watcher's too).
    pub log_format: LogFormat,
    /// Where the public listener's TLS certificates come from; `None`: cleartext.
    pub tls: Option<crate::tls::Source>,
    /// The plain listener redirecting to https, if any (TLS is then on).
    pub redirect_http: Option<SocketAddr>,
    /// The access log's format and destination; `None`: off.
    pub access_log: Option<(access::Format, access::Destination)>,
    /// The registry the watcher follows.
    pub source: SourceKind,
    /// The etcd flags, passed on to the watcher with --source etcd.
    pub etcd: EtcdArgs,
    /// The DNS flags, passed on to the watcher with --source dns.
    pub dns: DnsArgs,
    /// The register/discover API's bearer token; `None`: the API is off. (Its `Debug` is
    /// redacted.)
    pub api_token: Option<ApiToken>,
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--services` entry is not a valid Consul service name.
    #[error("--services: {0}")]
    ServiceName(#[source] consul::Error),
    /// Nothing could ever be routed.
    #[error("nothing to route: name services in --services, or keep --route-tag or --route-prefix-tag")]
    NothingToRoute,
    /// A route tag setting is unusable.
    #[error("{flag}: {why}")]
    RouteTag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// Both listeners on one address.
    #[error("--listen and --admin-listen must differ")]
    SameListeners,
    /// A timeout of zero.
    #[error("timeouts must be greater than zero")]
    ZeroTimeout,
    /// A worker count out of range.
    #[error("--workers must be between 1 and {MAX_WORKERS}")]
    Workers,
    /// A TLS flag without its partner, or both kinds of TLS source.
    #[error("TLS: give --tls-cert with --tls-key, or --tls-dir (not both)")]
    TlsSource,
    /// `--redirect-http` without TLS, or on an address already used.
    #[error("--redirect-http needs TLS (--tls-cert/--tls-key or --tls-dir) and an address of its own")]
    Redirect,
    /// `--access-log-file` with the access log off.
    #[error("--access-log-file needs --access-log text or json")]
    AccessLogFile,
    /// `--api-token` or `--api-token-file` is unusable (the message never holds the token).
    #[error("{flag}: {source}")]
    ApiToken {
        /// The flag.
        flag: &'static str,
        /// Why.
        #[source]
        source: TokenError,
    },
    /// A DNS flag is unusable (with --source dns).
    #[error(transparent)]
    Dns(#[from] watcher::source::dns::DnsArgsError),
    /// The watcher executable cannot be located.
    #[error("cannot locate the gateway executable (to find the watcher next to it): {0}")]
    WatcherBin(#[source] std::io::Error),
}

/// More worker threads than this is a typo, not a machine.
pub const MAX_WORKERS: usize = 1024;

impl Config {
    /// Validates the arguments.
    ///
    /// # Errors
    /// [`ConfigError`] naming the flag and what is wrong with it.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let mut services: Vec<String> =
            args.services.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        services.sort();
        services.dedup();
        for s in &services {
            consul::client::validate_name(s).map_err(ConfigError::ServiceName)?;
        }
        let rules = TagRules { route_tag: args.route_tag.trim().to_string(), prefix: args.route_prefix_tag.clone() };
        if rules.route_tag.chars().any(char::is_whitespace)
            || (rules.route_tag.is_empty() && !args.route_tag.is_empty())
        {
            return Err(ConfigError::RouteTag { flag: "--route-tag", why: "a tag without spaces, or empty for none" });
        }
        if rules.prefix.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(ConfigError::RouteTag {
                flag: "--route-prefix-tag",
                why: "a prefix without spaces or '/', or empty for none",
            });
        }
        if !rules.route_tag.is_empty() && !rules.prefix.is_empty() && rules.route_tag.starts_with(&rules.prefix) {
            return Err(ConfigError::RouteTag {
                flag: "--route-tag",
                why: "must not start with --route-prefix-tag (it would be read as a declared route)",
            });
        }
        if services.is_empty() && rules.route_tag.is_empty() && rules.prefix.is_empty() {
            return Err(ConfigError::NothingToRoute);
        }
        // Port 0 asks the kernel for a free port: two of those never collide.
        if args.listen == args.admin_listen && args.listen.port() != 0 {
            return Err(ConfigError::SameListeners);
        }
        if args.upstream_timeout.is_zero()
            || args.connect_timeout.is_zero()
            || args.client_timeout.is_zero()
            || args.tunnel_idle_timeout.is_zero()
        {
            return Err(ConfigError::ZeroTimeout);
        }
        if args.workers.is_some_and(|w| w == 0 || w > MAX_WORKERS) {
            return Err(ConfigError::Workers);
        }
        // By default one worker per CPU this process may use (its affinity mask and cgroup quota
        // count).
        let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let watcher_bin = match &args.watcher_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(ConfigError::WatcherBin)?.with_file_name("watcher"),
        };
        let tls = match (args.tls_cert.clone(), args.tls_key.clone(), args.tls_dir.clone()) {
            (None, None, None) => None,
            (Some(cert), Some(key), None) => Some(crate::tls::Source::Pair { cert, key }),
            (None, None, Some(dir)) => Some(crate::tls::Source::Dir(dir)),
            _ => return Err(ConfigError::TlsSource),
        };
        if let Some(r) = args.redirect_http {
            let taken = r.port() != 0 && (r == args.listen || r == args.admin_listen);
            if tls.is_none() || taken {
                return Err(ConfigError::Redirect);
            }
        }
        let to = match args.access_log_file.clone() {
            Some(p) => access::Destination::File(p),
            None => access::Destination::Stdout,
        };
        let access_log = match args.access_log {
            AccessLogMode::Off if args.access_log_file.is_some() => return Err(ConfigError::AccessLogFile),
            AccessLogMode::Off => None,
            AccessLogMode::Text => Some((access::Format::Text, to)),
            AccessLogMode::Json => Some((access::Format::Json, to)),
        };
        if args.source == SourceKind::Dns {
            // Checked here too, or the watcher would refuse them and be restarted forever.
            args.dns.validate()?;
        }
        let view = if args.catalog { View::Catalog } else { View::Health(args.health_status) };
        if args.catalog && args.health_status != HealthStatuses::PASSING {
            tracing::warn!(health_status = %args.health_status, "--health-status has no effect with --catalog (every registered instance is routed)");
        }
        // The file wins, as Consul's CONSUL_HTTP_TOKEN_FILE does.
        let api_token = match (&args.api_token_file, &args.api_token) {
            (Some(path), _) => Some(
                ApiToken::from_file(path)
                    .map_err(|source| ConfigError::ApiToken { flag: "--api-token-file", source })?,
            ),
            (None, Some(raw)) => {
                Some(ApiToken::new(&raw.0).map_err(|source| ConfigError::ApiToken { flag: "--api-token", source })?)
            }
            (None, None) => None,
        };
        Ok(Self {
            listen: args.listen,
            admin_listen: args.admin_listen,
            consul: args.consul,
            consistency: args.consistency,
            services,
            rules,
            view,
            state_file: args.state_file.filter(|p| !p.as_os_str().is_empty()),
            watcher_bin,
            workers,
            balance: args.balance,
            timeouts: Timeouts { connect: args.connect_timeout, idle: args.upstream_idle_timeout },
            upstream_timeout: args.upstream_timeout,
            client_timeout: args.client_timeout,
            grace_period: args.grace_period,
            tunnel_idle_timeout: args.tunnel_idle_timeout,
            max_replay_body: args.max_replay_body,
            log_format: args.log_format,
            tls,
            redirect_http: args.redirect_http,
            access_log,
            source: args.source,
            etcd: args.etcd,
            dns: args.dns,
            api_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("gateway").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        Config::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_sane() {
        let c = parse(&["--watcher-bin", "/bin/true"]).unwrap();
        assert!(c.services.is_empty(), "services opt in by tag");
        assert_eq!((c.rules.route_tag.as_str(), c.rules.prefix.as_str()), ("gateway", "urlprefix-"));
        assert_eq!(c.listen.port(), 3000);
        assert!(c.admin_listen.ip().is_loopback());
        assert_eq!(c.timeouts.idle, Duration::from_millis(500));
        assert_eq!(c.tunnel_idle_timeout, Duration::from_secs(3600));
        let c = parse(&["--watcher-bin", "/bin/true", "--tunnel-idle-timeout", "90s"]).unwrap();
        assert_eq!(c.tunnel_idle_timeout, Duration::from_secs(90));
        assert!(parse(&["--watcher-bin", "/bin/true", "--tunnel-idle-timeout", "0s"]).is_err());
    }

    #[test]
    fn services_are_a_validated_set() {
        let c = parse(&["--services", "b, a,b", "--watcher-bin", "w"]).unwrap();
        assert_eq!(c.services, vec!["a", "b"]);
        assert!(parse(&["--services", "a/b"]).is_err());
        assert_eq!(parse(&["--services", ",", "--watcher-bin", "w"]).unwrap().services, Vec::<String>::new());
        assert!(parse(&["--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:1"]).is_err());
        assert!(parse(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--watcher-bin", "w"]).is_ok());
        assert!(parse(&["--consul", "unix:///x"]).is_err());
        assert!(parse(&["--consul", "https://x", "--watcher-bin", "w"]).unwrap().consul.is_https());
        assert!(parse(&["--workers", "0", "--watcher-bin", "w"]).is_err());
        assert!(parse(&["--workers", "100000", "--watcher-bin", "w"]).is_err());
        assert_eq!(parse(&["--workers", "3", "--watcher-bin", "w"]).unwrap().workers, 3);
        assert_eq!(parse(&["--watcher-bin", "w"]).unwrap().balance, Balance::Random);
        let rr = parse(&["--balance", "round-robin", "--watcher-bin", "w"]).unwrap();
        assert_eq!(rr.balance, Balance::RoundRobin);
        assert!(parse(&["--balance", "fastest", "--watcher-bin", "w"]).is_err());
    }

    #[test]
    fn consistency_is_one_of_three() {
        assert_eq!(parse(&["--watcher-bin", "w"]).unwrap().consistency, Consistency::Default);
        for (v, c) in [("stale", Consistency::Stale), ("consistent", Consistency::Consistent)] {
            assert_eq!(parse(&["--consistency", v, "--watcher-bin", "w"]).unwrap().consistency, c);
        }
        let e = parse(&["--consistency", "eventual", "--watcher-bin", "w"]).unwrap_err();
        assert!(e.contains("--consistency") && e.contains("default, stale or consistent"), "{e}");
    }

    #[test]
    fn route_tags_are_checked() {
        let e = parse(&["--route-tag", "", "--route-prefix-tag", "", "--watcher-bin", "w"]).unwrap_err();
        assert!(e.contains("nothing to route"), "{e}");
        let c = parse(&["--route-tag", "", "--route-prefix-tag", "", "--services", "a", "--watcher-bin", "w"]).unwrap();
        assert_eq!((c.rules.route_tag.as_str(), c.rules.prefix.as_str(), c.services.len()), ("", "", 1));
        for bad in [
            &["--route-tag", "a b"][..],
            &["--route-prefix-tag", "x/"],
            &["--route-tag", "urlprefix-x"],
            &["--route-tag", " "],
        ] {
            let mut args = bad.to_vec();
            args.extend(["--watcher-bin", "w"]);
            let e = parse(&args).unwrap_err();
            assert!(e.contains("--route"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn health_status_is_validated_once_and_makes_the_view() {
        assert_eq!(parse(&["--watcher-bin", "w"]).unwrap().view, View::Health(HealthStatuses::PASSING));
        let c = parse(&["--health-status", "passing,warning", "--watcher-bin", "w"]).unwrap();
        assert_eq!(c.view, View::Health(HealthStatuses::PASSING_WARNING));
        let c = parse(&["--health-status", "passing,warning", "--catalog", "--watcher-bin", "w"]).unwrap();
        assert_eq!(c.view, View::Catalog);
        for bad in ["warning", "passing,critical", "passing,bogus", ""] {
            let e = parse(&["--health-status", bad, "--watcher-bin", "w"]).unwrap_err();
            assert!(e.contains("--health-status"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_access_log_is_off_by_default_and_its_file_needs_a_format() {
        use crate::observe::access::{Destination, Format};
        assert_eq!(parse(&["--watcher-bin", "w"]).unwrap().access_log, None);
        let c = parse(&["--access-log", "json", "--watcher-bin", "w"]).unwrap();
        assert_eq!(c.access_log, Some((Format::Json, Destination::Stdout)));
        let c = parse(&["--access-log", "text", "--access-log-file", "/var/log/a.log", "--watcher-bin", "w"]).unwrap();
        assert_eq!(c.access_log, Some((Format::Text, Destination::File("/var/log/a.log".into()))));
        let e = parse(&["--access-log-file", "a.log", "--watcher-bin", "w"]).unwrap_err();
        assert!(e.contains("--access-log"), "{e}");
        assert!(parse(&["--access-log", "xml", "--watcher-bin", "w"]).is_err());
    }

    #[test]
    fn the_api_token_comes_from_its_file_first_and_never_prints() {
        assert!(parse(&["--watcher-bin", "w"]).unwrap().api_token.is_none(), "off by default");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let path = file.to_str().unwrap();
        let c = parse(&["--api-token", "from-the-flag", "--api-token-file", path, "--watcher-bin", "w"]).unwrap();
        assert!(c.api_token.as_ref().unwrap().accepts(b"Bearer from-the-file"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("from-the-f"), "{shown}");
        let c = parse(&["--api-token", "from-the-flag", "--watcher-bin", "w"]).unwrap();
        assert!(c.api_token.as_ref().unwrap().accepts(b"Bearer from-the-flag"));
        assert!(!format!("{c:?}").contains("from-the-flag"));
        let args = Args::try_parse_from(["gateway", "--api-token", "from-the-flag"]).unwrap();
        assert!(!format!("{args:?}").contains("from-the-flag"));
        let e = parse(&["--api-token", "with space", "--watcher-bin", "w"]).unwrap_err();
        assert!(e.contains("--api-token") && !e.contains("with space"), "{e}");
        let e = parse(&["--api-token-file", "/nonexistent/token", "--watcher-bin", "w"]).unwrap_err();
        assert!(e.contains("--api-token-file"), "{e}");
    }

    #[test]
    fn dns_flags_are_checked_at_start_with_the_dns_source_only() {
        let bad = ["--watcher-bin", "w", "--dns-min-ttl", "10s", "--dns-max-ttl", "1s"];
        assert!(parse(&bad).is_ok(), "not checked unless --source dns");
        let with_source: Vec<&str> = bad.iter().copied().chain(["--source", "dns"]).collect();
        let e = parse(&with_source).unwrap_err();
        assert!(e.contains("--dns-min-ttl"), "{e}");
        assert!(parse(&["--watcher-bin", "w", "--source", "dns", "--services", "web"]).is_ok());
    }

    #[test]
    fn tls_flags_come_in_pairs_and_the_redirect_needs_tls() {
        assert_eq!(parse(&["--watcher-bin", "w"]).unwrap().tls, None);
        let c = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem", "--watcher-bin", "w"]).unwrap();
        assert_eq!(c.tls, Some(crate::tls::Source::Pair { cert: "c.pem".into(), key: "k.pem".into() }));
        let c = parse(&["--tls-dir", "/certs", "--redirect-http", "127.0.0.1:80", "--watcher-bin", "w"]).unwrap();
        assert_eq!(
            (c.tls, c.redirect_http),
            (Some(crate::tls::Source::Dir("/certs".into())), "127.0.0.1:80".parse().ok())
        );
        for bad in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &["--tls-dir", "d", "--tls-cert", "c", "--tls-key", "k"],
        ] {
            let mut args = bad.to_vec();
            args.extend(["--watcher-bin", "w"]);
            assert!(parse(&args).unwrap_err().contains("--tls-cert"), "{bad:?}");
        }
        let e = parse(&["--redirect-http", "127.0.0.1:80", "--watcher-bin", "w"]).unwrap_err();
        assert!(e.contains("--redirect-http needs TLS"), "{e}");
        let e = parse(&["--tls-dir", "d", "--redirect-http", "0.0.0.0:3000", "--watcher-bin", "w"]).unwrap_err();
        assert!(e.contains("--redirect-http"), "same address as --listen: {e}");
    }
}
