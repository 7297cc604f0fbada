//! `watcher`: long-polls Consul for the given services, and for every service that opts in by
//! tag, and streams every change, as NDJSON, to the gateway's Unix socket (`--socket`) or to
//! stdout. Only wiring: parse, validate, start the watch loops and the output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use common::LogFormat;
use consul::{Client, Consistency, ConsulAddr, HealthStatuses, View};
use tokio::io::AsyncReadExt;
use tracing::{error, info};
use watcher::followed::OptIn;
use watcher::source::consul::{ConsulSource, Mode};
use watcher::source::dns::{DnsArgs, DnsSource};
use watcher::source::etcd::{EtcdArgs, EtcdSource};
use watcher::source::{Follow, Source, SourceKind};
use watcher::state::State;
use watcher::watch::WatchConfig;

/// Watches services in Consul with blocking queries and prints or forwards every change.
///
/// The services are the --service names, plus (with --route-tag or --route-prefix-tag) every
/// service that opts in by tag, followed as they come and go. At least one of the three is
/// needed.
///
/// The ACL token is read from CONSUL_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN (the file wins, as in
/// Consul's own tools; never a flag, so it never shows in `ps`, and never logged); it needs
/// service:read and node:read. For an https:// address, TLS is set up from CONSUL_CACERT or
/// CONSUL_CAPATH (the CAs to trust; default: the built-in public roots), CONSUL_CLIENT_CERT and
/// CONSUL_CLIENT_KEY (a client certificate, both or neither), CONSUL_TLS_SERVER_NAME (the name
/// to check the server's certificate against) and CONSUL_HTTP_SSL_VERIFY (`false`: no check at
/// all, with a warning), and HTTP/2 is offered by ALPN.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Consul HTTP address: host:port, http://host:port, or https://host:port (TLS, HTTP/2).
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = consul::addr::DEFAULT_ADDR)]
    consul: ConsulAddr,
    /// A service to watch always, tagged or not, registered or not; repeat the flag or give a
    /// comma list.
    #[arg(long = "service", value_delimiter = ',', value_name = "NAME")]
    services: Vec<String>,
    /// Also watch every service with exactly this tag (on any of its instances), e.g.
    /// `gateway`, while it has it; the service list is followed with a blocking query on
    /// /v1/catalog/services. Empty: disabled.
    #[arg(long, default_value = "", value_name = "TAG")]
    route_tag: String,
    /// Also watch every service with a tag starting with this prefix, e.g. `urlprefix-`
    /// (Fabio's routes), while it has one. Empty: disabled.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    route_prefix_tag: String,
    /// Read /v1/catalog/service/<name> (every registered instance) instead of the health view
    /// (/v1/health/service/<name>, only instances whose checks all have a --health-status).
    #[arg(long)]
    catalog: bool,
    /// The check statuses that make an instance routable on the health view: `passing`, or
    /// `passing,warning`. Every check counts: the node's (serfHealth, node maintenance) and the
    /// instance's own (service maintenance included). Ignored with --catalog.
    #[arg(long, default_value = "passing", value_name = "LIST")]
    health_status: HealthStatuses,
    /// Consistency mode of every read (Consul's "Consistency Modes"): `default` (the leader
    /// answers), `stale` (any server answers, even during a leader election; may lag by a little)
    /// or `consistent` (the leader confirms its leadership first; no answer without a leader).
    #[arg(long, default_value = "default", value_name = "MODE")]
    consistency: Consistency,
    /// Send changes to the gateway's Unix socket instead of stdout.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// How long one blocking query may wait for a change (Consul caps it at 10m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Sustained Consul requests per second per service (bursts of 5 are allowed).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How to watch: one blocking query per service (`per-service`, one connection each over
    /// HTTP/1.1); two cluster-wide blocking queries plus re-reads of the services that changed
    /// (`multiplexed`, a handful of connections whatever the number of services, but each change
    /// re-reads every check in the cluster); or one blocking query per service as HTTP/2 streams
    /// over a few connections (`streams`, https:// only: a change costs one answer). `auto`
    /// streams when Consul speaks HTTP/2 (https), else multiplexes above 12 --service names and
    /// whenever services are followed by tag (their number has no bound).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// In streams mode, long polls per HTTP/2 connection (Consul 1.8 allows 250 streams; the
    /// rest is room for the catalog query).
    #[arg(long, default_value_t = watcher::streams::DEFAULT_STREAMS_PER_CONNECTION, value_name = "N")]
    streams_per_connection: usize,
    /// In streams mode, the most HTTP/2 connections to Consul. Past streams-per-connection times
    /// this, long polls wait for a free stream (and changes are seen late).
    #[arg(long, default_value_t = watcher::streams::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,
    /// In multiplexed mode, re-read every service this often as a safety net.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// Exit when standard input is closed. The gateway holds our stdin open, so its death (even
    /// SIGKILL) ends the watcher too: no orphans.
    #[arg(long)]
    exit_on_stdin_close: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The registry to follow: `consul`, `etcd` (--etcd-*) or `dns` (--dns-*).
    #[arg(long, env = "GATEWAY_SOURCE", value_enum, default_value_t = SourceKind::Consul)]
    source: SourceKind,
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(flatten)]
    dns: DnsArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logging(args.log_format);
    if args.services.is_empty() && OptIn::new(&args.route_tag, &args.route_prefix_tag).is_none() {
        error!("nothing to watch: give --service, --route-tag or --route-prefix-tag");
        return ExitCode::from(2);
    }
    for s in &args.services {
        if let Err(e) = consul::client::validate_name(s) {
            error!("{e}");
            return ExitCode::from(2);
        }
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        error!("--rate must be a positive number of requests per second");
        return ExitCode::from(2);
    }
    if args.streams_per_connection == 0 || args.max_connections == 0 {
        error!("--streams-per-connection and --max-connections must be at least 1");
        return ExitCode::from(2);
    }
    if args.mode == Mode::Streams && !args.consul.is_https() {
        error!("--mode streams needs an https:// Consul address (HTTP/2 is negotiated over TLS)");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args))
}

/// The source `--source` names, set up from its flags.
fn source(args: &Args) -> Result<Box<dyn Source>, ExitCode> {
    Ok(match args.source {
        SourceKind::Consul => {
            let client = match Client::from_env(args.consul.clone()) {
                Ok(c) => c.with_consistency(args.consistency),
                Err(e) => {
                    error!("{e}");
                    return Err(ExitCode::from(2));
                }
            };
            let view = if args.catalog { View::Catalog } else { View::Health(args.health_status) };
            let cfg = WatchConfig { view, wait: args.wait, rate: args.rate, ..WatchConfig::default() };
            info!(consul = %args.consul, services = ?args.services, route_tag = %args.route_tag,
                  route_prefix_tag = %args.route_prefix_tag, ?view, consistency = %args.consistency,
                  token = client.has_token(), "watching Consul");
            Box::new(ConsulSource {
                client,
                cfg,
                mode: args.mode,
                streams_per_connection: args.streams_per_connection,
                max_connections: args.max_connections,
                resync: args.resync,
            })
        }
        SourceKind::Etcd => Box::new(EtcdSource { args: args.etcd.clone() }),
        SourceKind::Dns => Box::new(DnsSource { args: args.dns.clone() }),
    })
}

async fn run(args: Args) -> ExitCode {
    let source = match source(&args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rule = OptIn::new(&args.route_tag, &args.route_prefix_tag);
    let mut services = args.services.clone();
    services.sort();
    services.dedup();
    // Without a follower the static list is the whole set: announce it at once.
    let state = State::with_static(&services, rule.is_none());
    let what = Follow { services, rule };
    let output = async {
        match &args.socket {
            Some(path) => {
                watcher::output::to_socket(path.clone(), state.clone()).await;
                ExitCode::SUCCESS
            }
            None => match watcher::output::to_stdout(state.clone()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("cannot write to stdout: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    };
    // The output runs from the start: while Consul cannot be read (say, a TLS handshake refused),
    // the gateway hears why (the `consul` status) instead of waiting for a watcher that never
    // connects.
    tokio::select! {
        code = output => code,
        code = source.run(what, state.clone()) => code,
        sig = common::shutdown_signal() => {
            info!("{sig} received; exiting");
            ExitCode::SUCCESS
        }
        () = stdin_closed(), if args.exit_on_stdin_close => {
            info!("stdin closed (the gateway is gone); exiting");
            ExitCode::SUCCESS
        }
    }
}

/// Resolves when stdin reaches end of file or fails.
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
