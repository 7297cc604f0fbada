//! Wires the gateway together and runs it until SIGTERM/SIGINT:
//! registry ← socket ← supervised watcher; public listener → proxy; admin listener → admin.
//!
//! Shutdown: stop accepting, let in-flight requests finish within the grace period, stop the
//! watcher, return.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin;
use crate::config::Config;
use crate::ipc::Socket;
use crate::listener;
use crate::proxy::Proxy;
use crate::registry::{ConsulDiscovery, Registry};
use crate::supervisor::{supervise, WatcherCommand};
use crate::upstream;
use crate::workers::{self, Workers};

/// Runs the gateway until a shutdown signal, then drains.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Before any endpoint (and its connection pool) exists.
    upstream::set_thread_slots(cfg.workers);
    let view = cfg.view;
    if cfg.args.catalog && cfg.args.health_status != consul::HealthStatuses::PASSING {
        warn!(health_status = %cfg.args.health_status, "--health-status has no effect with --catalog (every registered instance is routed)");
    }
    let client = consul::Client::new(cfg.args.consul.clone(), consul::Token::from_env());
    let registry = Arc::new(Registry::new(cfg.services.clone(), Arc::new(ConsulDiscovery { client, view })));

    let workers = cfg.workers;
    let mut public =
        workers::bind(cfg.args.listen, workers).with_context(|| format!("cannot listen on {}", cfg.args.listen))?;
    let public_addr = public[0].local_addr()?;
    let admin_listener = TcpListener::bind(cfg.args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", cfg.args.admin_listen))?;
    tokio::spawn(close_idle_connections(registry.clone(), cfg.args.upstream_idle_timeout));
    let socket = Socket::bind().context("cannot create the watcher socket")?;
    let socket_path = socket.path();
    tokio::spawn(socket.serve(registry.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let supervisor = tokio::spawn(supervise(watcher_command(&cfg, &socket_path.to_string_lossy()), stop_rx.clone()));

    let proxy = Arc::new(Proxy {
        registry: registry.clone(),
        timeouts: upstream::Timeouts { connect: cfg.args.connect_timeout, idle: cfg.args.upstream_idle_timeout },
        timeout: cfg.args.upstream_timeout,
        max_replay_body: cfg.args.max_replay_body,
    });
    info!(
        listen = %public_addr,
        workers,
        admin = %admin_listener.local_addr()?,
        consul = %cfg.args.consul,
        services = ?cfg.services,
        "gateway listening"
    );

    // One worker: everything on this thread's runtime. More: one thread and runtime each.
    let public_task = if workers == 1 {
        let l = TcpListener::from_std(public.remove(0))?;
        tokio::spawn(listener::serve(l, proxy, cfg.args.client_timeout, stop_rx.clone()))
    } else {
        let w = Workers::spawn(public, proxy, cfg.args.client_timeout, stop_rx.clone())
            .context("cannot start the worker threads")?;
        tokio::spawn(w.finished())
    };
    let mut stopping = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin::router(registry))
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await
    });

    let sig = common::shutdown_signal().await;
    info!(grace = ?cfg.args.grace_period, "{sig} received; draining in-flight requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(cfg.args.grace_period, public_task).await {
        Ok(_) => info!("all requests finished"),
        Err(_) => warn!("grace period over; closing the remaining connections"),
    }
    admin_task.abort();
    let _ = supervisor.await;
    info!("gateway stopped");
    Ok(())
}

/// Closes connections to instances that sat idle for `idle_timeout`, also when no request comes
/// to reuse (and so expire) them. A request never reuses an expired connection anyway, so this
/// sweep only frees sockets, and need not run more than once a second.
async fn close_idle_connections(registry: Arc<Registry>, idle_timeout: std::time::Duration) {
    use std::time::Duration;
    let period = idle_timeout.clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for endpoint in registry.endpoints() {
            endpoint.pool.expire(idle_timeout);
        }
    }
}

fn watcher_command(cfg: &Config, socket: &str) -> WatcherCommand {
    let mut args =
        vec!["--socket".to_string(), socket.to_string(), "--consul".to_string(), cfg.args.consul.to_string()];
    for s in &cfg.services {
        args.extend(["--service".to_string(), s.clone()]);
    }
    match cfg.view {
        consul::View::Catalog => args.push("--catalog".into()),
        consul::View::Health(statuses) => args.extend(["--health-status".to_string(), statuses.to_string()]),
    }
    let format = match cfg.args.log_format {
        common::LogFormat::Text => "text",
        common::LogFormat::Json => "json",
    };
    args.extend(["--log-format".to_string(), format.to_string()]);
    WatcherCommand { bin: cfg.watcher_bin.clone(), args }
}
