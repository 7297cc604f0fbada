//! `gateway`: parse the configuration, start the runtime, run the server.

use std::process::ExitCode;

use clap::Parser;
use gateway::config::{Args, Config};
use tracing::error;

// mimalloc: the request path allocates a few small objects per request (header maps, futures);
// glibc's malloc/free were ~18% of the gateway's instructions per request under callgrind.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    common::init_logging(args.log_format);
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            error!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // By default one worker per CPU this process may use (its affinity mask and cgroup quota
    // count). One worker: tokio's current-thread scheduler does the same job without the
    // work-stealing machinery a multi-thread runtime keeps even for a single worker.
    let workers = cfg.args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(gateway::server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
