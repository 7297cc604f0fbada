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
    // The main thread's runtime runs the watcher socket, the supervisor, the admin listener and,
    // with one worker, the public listener; more workers get threads of their own (workers.rs).
    let mut rt = tokio::runtime::Builder::new_current_thread();
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(gateway::run::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
