//! The gateway's command line and environment, parsed and validated once into [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use common::LogFormat;
use consul::{ConsulAddr, HealthStatuses, View};

/// Routes /<service>/* to a random live instance of <service>, as Consul knows it.
///
/// The Consul ACL token is read from CONSUL_HTTP_TOKEN (passed to the watcher through its
/// environment, never on a command line, never logged).
#[derive(Parser, Debug, Clone)]
#[command(name = "gateway", version, about)]
pub struct Args {
    /// Address of the public listener.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Address of the admin listener (/healthz, /readyz, /services).
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Consul HTTP address, with or without http://.
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = consul::addr::DEFAULT_ADDR)]
    pub consul: ConsulAddr,
    /// Comma list of the services routable through the gateway; nothing else is reachable.
    #[arg(long, env = "GATEWAY_SERVICES", default_value = "service-web", value_delimiter = ',')]
    pub services: Vec<String>,
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
    /// How long an instance may take to start answering before the client gets a 504.
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
    /// How long a client may take to send a request's headers; also how long a keep-alive client
    /// connection may sit idle between requests. Then the gateway closes it.
    #[arg(long, env = "GATEWAY_CLIENT_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "GATEWAY_GRACE_PERIOD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// Request bodies up to this many bytes are buffered so that the request can be sent to
    /// another instance after a failure; larger ones are streamed, and go to another instance
    /// only if none of the body was sent.
    #[arg(long, env = "GATEWAY_MAX_REPLAY_BODY", default_value_t = 64 * 1024)]
    pub max_replay_body: u64,
    /// Worker threads, each with its own single-threaded event loop and listening socket
    /// (SO_REUSEPORT), like nginx's workers (default: one per CPU this process may use).
    #[arg(long, env = "GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// Log format on stderr (the watcher logs in the same format).
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The parsed arguments.
    pub args: Args,
    /// The services, deduplicated.
    pub services: Vec<String>,
    /// How instances are read from Consul, by the watcher and by direct reads alike.
    pub view: View,
    /// The watcher executable.
    pub watcher_bin: PathBuf,
    /// Worker threads serving the public listener.
    pub workers: usize,
}

/// More worker threads than this is a typo, not a machine.
pub const MAX_WORKERS: usize = 1024;

impl Config {
    /// Validates the arguments.
    pub fn from_args(args: Args) -> Result<Self, String> {
        let mut services: Vec<String> =
            args.services.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        services.sort();
        services.dedup();
        if services.is_empty() {
            return Err("--services names no service".into());
        }
        for s in &services {
            consul::client::validate_name(s).map_err(|e| format!("--services: {e}"))?;
        }
        if args.listen == args.admin_listen {
            return Err("--listen and --admin-listen must differ".into());
        }
        if args.upstream_timeout.is_zero() || args.connect_timeout.is_zero() || args.client_timeout.is_zero() {
            return Err("timeouts must be greater than zero".into());
        }
        if args.workers.is_some_and(|w| w == 0 || w > MAX_WORKERS) {
            return Err(format!("--workers must be between 1 and {MAX_WORKERS}"));
        }
        // By default one worker per CPU this process may use (its affinity mask and cgroup quota
        // count).
        let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let watcher_bin = match &args.watcher_bin {
            Some(p) => p.clone(),
            None => default_watcher_bin()?,
        };
        let view = if args.catalog { View::Catalog } else { View::Health(args.health_status) };
        Ok(Self { args, services, view, watcher_bin, workers })
    }
}

fn default_watcher_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the gateway executable: {e}"))?;
    Ok(exe.with_file_name("watcher"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("gateway").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        Config::from_args(args)
    }

    #[test]
    fn defaults_are_sane() {
        let c = parse(&["--watcher-bin", "/bin/true"]).unwrap();
        assert_eq!(c.services, vec!["service-web"]);
        assert_eq!(c.args.listen.port(), 3000);
        assert!(c.args.admin_listen.ip().is_loopback());
        assert_eq!(c.args.upstream_idle_timeout, Duration::from_millis(500));
    }

    #[test]
    fn services_are_a_validated_set() {
        let c = parse(&["--services", "b, a,b", "--watcher-bin", "w"]).unwrap();
        assert_eq!(c.services, vec!["a", "b"]);
        assert!(parse(&["--services", "a/b"]).is_err());
        assert!(parse(&["--services", ","]).is_err());
        assert!(parse(&["--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:1"]).is_err());
        assert!(parse(&["--consul", "https://x"]).is_err());
        assert!(parse(&["--workers", "0", "--watcher-bin", "w"]).is_err());
        assert!(parse(&["--workers", "100000", "--watcher-bin", "w"]).is_err());
        assert_eq!(parse(&["--workers", "3", "--watcher-bin", "w"]).unwrap().workers, 3);
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
}
