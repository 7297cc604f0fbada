//! `watcher`: long-polls Consul for the given services and streams every change, as NDJSON, to
//! the gateway's Unix socket (`--socket`) or to stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use common::LogFormat;
use consul::{Client, ConsulAddr, Token, View};
use tokio::io::AsyncReadExt;
use tracing::{error, info};
use watcher::state::State;
use watcher::watch::{watch_service, WatchConfig};

/// Watches services in Consul with blocking queries and prints or forwards every change.
///
/// The ACL token is read from CONSUL_HTTP_TOKEN only (never a flag, so it never shows in `ps`).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Consul HTTP address, with or without http://.
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = consul::addr::DEFAULT_ADDR)]
    consul: ConsulAddr,
    /// A service to watch; repeat the flag or give a comma list.
    #[arg(long = "service", required = true, value_delimiter = ',', value_name = "NAME")]
    services: Vec<String>,
    /// Read /v1/catalog/service/<name> (every registered instance) instead of the health view
    /// (/v1/health/service/<name>?passing, only instances whose checks pass).
    #[arg(long)]
    catalog: bool,
    /// Send changes to the gateway's Unix socket instead of stdout.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// How long one blocking query may wait for a change (Consul caps it at 10m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Sustained Consul requests per second per service (bursts of 5 are allowed).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Exit when standard input is closed. The gateway holds our stdin open, so its death (even
    /// SIGKILL) ends the watcher too: no orphans.
    #[arg(long)]
    exit_on_stdin_close: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logging(args.log_format);
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
    let client = Client::new(args.consul.clone(), Token::from_env());
    let view = if args.catalog { View::Catalog } else { View::Health };
    let cfg = WatchConfig { view, wait: args.wait, rate: args.rate, ..WatchConfig::default() };
    info!(consul = %args.consul, services = ?args.services, ?view, "watching");
    let state = State::new();
    let mut tasks = tokio::task::JoinSet::new();
    for s in &args.services {
        tasks.spawn(watch_service(client.clone(), s.clone(), cfg.clone(), state.clone()));
    }
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
    let code = tokio::select! {
        code = output => code,
        sig = common::shutdown_signal() => {
            info!("{sig} received; exiting");
            ExitCode::SUCCESS
        }
        () = stdin_closed(), if args.exit_on_stdin_close => {
            info!("stdin closed (the gateway is gone); exiting");
            ExitCode::SUCCESS
        }
    };
    tasks.abort_all();
    code
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
