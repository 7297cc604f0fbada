//! Runs the watcher as a child process: starts it, restarts it with backoff when it exits
//! (logging why), and stops it on shutdown.
//!
//! The child's stdin is a pipe we hold and it runs with `--exit-on-stdin-close`: if the gateway
//! dies in any way, even SIGKILL, the pipe closes and the watcher exits, so no orphan is left.
//! On a clean shutdown we close the pipe, give the watcher a moment, then kill it.
//!
//! Every restart after an exit (or a failed start) is counted (`gateway_watcher_restarts_total`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backoff::Backoff;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::services::Services;

/// A watcher that ran at least this long is restarted without delay after its first exit.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long the watcher gets to exit by itself at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How to start the watcher.
#[derive(Clone, Debug)]
pub struct WatcherCommand {
    /// The watcher executable.
    pub bin: PathBuf,
    /// Its arguments (socket, Consul address, services...). Never the token: that goes by env.
    pub args: Vec<String>,
}

/// Keeps the watcher running until `shutdown` turns true; counts its restarts in `services`'
/// freshness.
pub async fn supervise(cmd: WatcherCommand, mut shutdown: watch::Receiver<bool>, services: Arc<Services>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut first = true;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !std::mem::take(&mut first) {
            services.freshness().watcher_restarted();
        }
        let started = Instant::now();
        let mut child = match spawn(&cmd) {
            Ok(child) => child,
            Err(e) => {
                let delay = backoff.next_delay();
                error!(bin = %cmd.bin.display(), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot start the watcher");
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        // `Child::wait` closes a stdin it still holds; ours must stay open while the watcher runs.
        let stdin = child.stdin.take();
        info!(pid = child.id(), bin = %cmd.bin.display(), "watcher started");
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        match exited {
            Some(status) => {
                if started.elapsed() >= HEALTHY_RUN {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                match status {
                    Ok(s) => {
                        warn!(status = %s, retry_in_ms = delay.as_millis() as u64, "watcher exited; restarting")
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "lost track of the watcher; restarting")
                    }
                }
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return;
                }
            }
            None => {
                drop(stdin);
                stop(child).await;
                return;
            }
        }
    }
}

fn spawn(cmd: &WatcherCommand) -> std::io::Result<Child> {
    Command::new(&cmd.bin)
        .args(&cmd.args)
        .arg("--exit-on-stdin-close")
        // The API's token is the gateway's alone: the watcher never needs it.
        .env_remove("GATEWAY_API_TOKEN")
        .env_remove("GATEWAY_API_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
}

/// Stops a watcher whose stdin was already closed.
async fn stop(mut child: Child) {
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(status)) => info!(%status, "watcher stopped"),
        _ => {
            warn!("watcher did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Sleeps for `d`; returns true if shutdown began meanwhile.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    *shutdown.borrow()
}
