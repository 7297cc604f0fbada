//! `watcher`: long-polls Consul for the given services, and for every service that opts in by
//! tag, and streams every change, as NDJSON, to the gateway's Unix socket (`--socket`) or to
//! stdout. Only wiring: parse, validate, start the watch loops and the output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use common::backoff::Backoff;
use common::LogFormat;
use consul::{Client, Consistency, ConsulAddr, HealthStatuses, View};
use tokio::io::AsyncReadExt;
use tracing::{error, info, warn};
use watcher::followed::{Follower, OptIn};
use watcher::state::State;
use watcher::streams::Pool;
use watcher::watch::{watch_followed, watch_service, WatchConfig};

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
}

/// How services are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Per-service up to 12 static services, multiplexed above or when following tags.
    Auto,
    /// One blocking query (one connection) per service.
    PerService,
    /// Two blocking queries, whatever the number of services.
    Multiplexed,
    /// One blocking query per service, as HTTP/2 streams over a few connections (https only).
    Streams,
}

/// Above this many services, `auto` multiplexes (keeps connections to Consul few).
const AUTO_MAX_PER_SERVICE: usize = 12;

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

async fn run(args: Args) -> ExitCode {
    let client = match Client::from_env(args.consul.clone()) {
        Ok(c) => c.with_consistency(args.consistency),
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let view = if args.catalog { View::Catalog } else { View::Health(args.health_status) };
    let cfg = WatchConfig { view, wait: args.wait, rate: args.rate, ..WatchConfig::default() };
    let rule = OptIn::new(&args.route_tag, &args.route_prefix_tag);
    info!(consul = %args.consul, services = ?args.services, route_tag = %args.route_tag,
          route_prefix_tag = %args.route_prefix_tag, ?view, consistency = %args.consistency,
          token = client.has_token(), "watching");
    let mut services = args.services.clone();
    services.sort();
    services.dedup();
    // Without a follower the static list is the whole set: announce it at once.
    let state = State::with_static(&services, rule.is_none());
    let follower = rule.map(|rule| Follower::new(services.clone(), rule));
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
        code = watch(&args, client, cfg, state.clone(), services, follower) => code,
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

/// Picks the mode and starts the watch loops; returns only if they cannot start (the loops stop
/// when this future is dropped).
async fn watch(
    args: &Args,
    client: Client,
    cfg: WatchConfig,
    state: State,
    services: Vec<String>,
    follower: Option<Follower>,
) -> ExitCode {
    let many = follower.is_some() || services.len() > AUTO_MAX_PER_SERVICE;
    let mode = match args.mode {
        Mode::Auto if client.is_https() => match speaks_h2(&client, &state).await {
            true => Mode::Streams,
            false if many => Mode::Multiplexed,
            false => Mode::PerService,
        },
        Mode::Auto if many => Mode::Multiplexed,
        Mode::Auto => Mode::PerService,
        Mode::Streams => {
            if !speaks_h2(&client, &state).await {
                error!("--mode streams: Consul answers over HTTP/1.1, not HTTP/2; use --mode multiplexed");
                return ExitCode::from(2);
            }
            Mode::Streams
        }
        m => m,
    };
    // Dropped with this future: every loop stops.
    let mut tasks = tokio::task::JoinSet::new();
    // Keeps the follower's feed open when there is no follower (static services only).
    let mut _no_follower = None;
    match mode {
        Mode::Multiplexed => {
            let mux =
                watcher::mux::watch_many(client.clone(), services, cfg.clone(), args.resync, state.clone(), follower);
            tasks.spawn(mux);
        }
        Mode::Streams => {
            info!(
                streams_per_connection = args.streams_per_connection,
                max_connections = args.max_connections,
                "watching in streams mode (one blocking query per service, as HTTP/2 streams)"
            );
            // HTTP/2 from the first byte: one connection per client however many long polls start
            // at once (Consul was just seen to take h2).
            let Some(h2) = client.http2_only() else {
                error!("cannot set up HTTP/2 to Consul");
                return ExitCode::FAILURE;
            };
            let pool = Pool::new(h2, args.streams_per_connection, args.max_connections);
            let (events, feed) = tokio::sync::mpsc::channel(1);
            if follower.is_some() {
                // The catalog query is one more stream, on the first connection.
                let catalog = pool.assign(CATALOG_STREAM).client;
                tasks.spawn(watcher::follow::run(catalog, cfg.clone(), follower, state.clone(), events));
            } else {
                _no_follower = Some(events);
            }
            tasks.spawn(watch_followed(pool, cfg.clone(), state.clone(), services, feed));
        }
        _ => {
            if let Some(follower) = follower {
                let (events, feed) = tokio::sync::mpsc::channel(1);
                tasks.spawn(watcher::follow::run(client.clone(), cfg.clone(), Some(follower), state.clone(), events));
                // One client for every loop: over HTTP/1.1 each long poll opens its own connection.
                let pool = Pool::new(client.clone(), usize::MAX, 1);
                tasks.spawn(watch_followed(pool, cfg.clone(), state.clone(), services, feed));
            } else {
                for s in services {
                    tasks.spawn(watch_service(client.clone(), s, cfg.clone(), state.clone()));
                }
            }
        }
    }
    std::future::pending().await
}

/// The key the follower's catalog query takes in the streams pool (not a valid service name).
const CATALOG_STREAM: &str = " catalog/services";

/// Whether Consul answers over HTTP/2; asks until it answers (nothing can be watched before).
/// Asks on a connection of its own, closed after: the watch loops use clients of their own.
/// Failures are Consul's status in `state`, logged once per change.
async fn speaks_h2(client: &Client, state: &State) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut outage = watcher::outage::Outage::default();
    let probe = client.separate();
    loop {
        match probe.protocol().await {
            Ok(v) => {
                info!(version = ?v, "Consul's HTTPS API answers");
                state.set_consul(None);
                return v == http::Version::HTTP_2;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                if outage.failed(&e) {
                    warn!(error = %e, "cannot reach Consul to see whether it speaks HTTP/2; retrying with backoff (logged again when this changes)");
                }
                state.set_consul(Some(&e));
                tokio::time::sleep(delay).await;
            }
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
