//! Wires the gateway together and runs it until SIGTERM/SIGINT:
//! services and routes ← socket ← supervised watcher; public listener (TLS, certificates reloaded
//! on change) → proxy; plain redirecting listener; admin listener → admin.
//!
//! The access log, if on, starts before the listeners (a file that cannot be opened stops the
//! start) and is reopened on SIGHUP.
//!
//! Shutdown: stop accepting, let in-flight requests finish within the grace period, stop the
//! watcher, write the state file's last changes and the access log's queued lines (within 5 s
//! each), return.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin;
use crate::config::Config;
use crate::discovery::direct::{ConsulRead, DirectRead, NoDirectRead};
use crate::discovery::services::Services;
use crate::discovery::socket::Socket;
use crate::discovery::state_file;
use crate::discovery::supervisor::{supervise, WatcherCommand};
use crate::observe::access::{self, AccessLog};
use crate::observe::metrics::Metrics;
use crate::proxy::listener::{self, Front};
use crate::proxy::workers::{self, Workers};
use crate::proxy::Proxy;
use crate::redirect;
use crate::tls::{self, reload};
use watcher::source::SourceKind;

/// At shutdown, how long the access log's writer gets to write what is queued.
const ACCESS_LOG_CLOSE: Duration = Duration::from_secs(5);
/// At shutdown, how long the state file's last write may take.
const STATE_FILE_CLOSE: Duration = Duration::from_secs(5);

/// Runs the gateway until a shutdown signal, then drains.
///
/// # Errors
/// A listener or the watcher socket cannot be set up.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Every variable Consul's tools read (address, token or token file, TLS); the watcher reads
    // the same ones from the environment it inherits.
    let client = consul::Client::from_env(cfg.consul.clone())
        .context("cannot set up the Consul client")?
        .with_consistency(cfg.consistency);
    // Direct reads (before the watcher's first snapshot) go to Consul only; from another registry
    // a request waits for the watcher.
    let direct: Arc<dyn DirectRead> = match cfg.source {
        SourceKind::Consul => Arc::new(ConsulRead { client: client.clone(), view: cfg.view }),
        other => Arc::new(NoDirectRead(other)),
    };
    let services = Arc::new(
        Services::new(cfg.services.clone(), cfg.rules.clone(), direct)
            .with_workers(cfg.workers)
            .with_balance(cfg.balance),
    );
    services.freshness().set_source(cfg.source);
    // The last good state, served at once (marked stale) until the watcher delivers.
    if let Some(path) = &cfg.state_file {
        state_file::restore(path, &services).await;
    }
    // The register/discover API (with a token): writes go to the registry of --source.
    let api = cfg.api_token.clone().map(|token| crate::api::Api {
        token,
        registry: crate::api::registry::for_source(cfg.source, client, &cfg.etcd),
        services: services.clone(),
    });

    // Certificates first: a bad file stops the start with its name.
    let tls = cfg.tls.as_ref().map(start_tls).transpose()?;
    let workers = cfg.workers;
    let mut public = workers::bind(cfg.listen, workers).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let public_addr = public[0].local_addr()?;
    let admin_listener = TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", cfg.admin_listen))?;
    let redirect_listener = match cfg.redirect_http {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (--redirect-http)"))?)
        }
        None => None,
    };
    tokio::spawn(close_idle_connections(services.clone(), cfg.timeouts.idle));
    let socket = Socket::bind().context("cannot create the watcher socket")?;
    let socket_path = socket.path();
    tokio::spawn(socket.serve(services.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let state_writer = cfg
        .state_file
        .clone()
        .map(|path| tokio::spawn(state_file::keep_written(path, services.clone(), stop_rx.clone())));
    let supervisor = tokio::spawn(supervise(
        watcher_command(&cfg, &socket_path.to_string_lossy()),
        stop_rx.clone(),
        services.clone(),
    ));

    // A file that cannot be opened stops the start, with its name.
    let access = match cfg.access_log.clone() {
        Some((format, to)) => {
            let log = AccessLog::start(format, to.clone(), access::QUEUE).context("cannot start the access log")?;
            info!(?format, to = ?to, "access log on");
            Some(Arc::new(log))
        }
        None => None,
    };
    if let Some(log) = &access {
        tokio::spawn(reopen_on_sighup(log.clone()));
    }
    let access_log = access.clone();
    let metrics = Arc::new(Metrics::new(workers));
    if let Some(log) = &access {
        metrics.follow_access_log(log.clone());
    }
    // Counts of routes and services that are gone are dropped even if nobody scrapes.
    let period = std::time::Duration::from_secs(60);
    tokio::spawn(crate::observe::metrics::prune_every(metrics.clone(), services.clone(), period));
    let proxy = Arc::new(Proxy {
        services: services.clone(),
        timeouts: cfg.timeouts,
        timeout: cfg.upstream_timeout,
        max_replay_body: cfg.max_replay_body,
        tunnel_idle_timeout: cfg.tunnel_idle_timeout,
        metrics: metrics.clone(),
        access,
    });
    info!(
        listen = %public_addr,
        workers,
        balance = %cfg.balance,
        admin = %admin_listener.local_addr()?,
        consul = %cfg.consul,
        consistency = %cfg.consistency,
        services = ?cfg.services,
        route_tag = %cfg.rules.route_tag,
        route_prefix_tag = %cfg.rules.prefix,
        tls = cfg.tls.is_some(),
        api = api.is_some(),
        "gateway listening"
    );

    let front = Front { client_timeout: cfg.client_timeout, tls: tls.as_ref().map(|t| t.acceptor.clone()) };
    if let (Some(t), Some(source)) = (tls, cfg.tls.clone()) {
        tokio::spawn(reload::follow(source, t.provider, t.certificates, t.seen, stop_rx.clone()));
    }
    if let Some(l) = redirect_listener {
        info!(listen = %l.local_addr()?, to_port = public_addr.port(), "redirecting plain HTTP to https");
        tokio::spawn(redirect::serve(l, public_addr.port(), cfg.client_timeout, stop_rx.clone()));
    }
    // One worker: everything on this thread's runtime. More: one thread and runtime each.
    let public_task = if workers == 1 {
        let l = TcpListener::from_std(public.remove(0))?;
        tokio::spawn(listener::serve(l, proxy, front, stop_rx.clone()))
    } else {
        let w = Workers::spawn(public, proxy, front, stop_rx.clone()).context("cannot start the worker threads")?;
        tokio::spawn(w.finished())
    };
    let mut stopping = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        // A client that stops reading (a stuck follower of /events) is dropped, not kept.
        let admin_listener = admin::stall_limited(admin_listener, admin::WRITE_STALL);
        axum::serve(admin_listener, admin::router(services, metrics).merge(crate::api::router(api)))
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await
    });

    let sig = common::shutdown_signal().await;
    info!(grace = ?cfg.grace_period, "{sig} received; draining in-flight requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(cfg.grace_period, public_task).await {
        Ok(_) => info!("all requests finished"),
        Err(_) => warn!("grace period over; closing the remaining connections"),
    }
    admin_task.abort();
    let _ = supervisor.await;
    if let Some(writer) = state_writer {
        // It wrote the last changes when the stop came; a disk that hangs does not hold the exit.
        if tokio::time::timeout(STATE_FILE_CLOSE, writer).await.is_err() {
            warn!(within = ?STATE_FILE_CLOSE, "the state file's last write did not finish");
        }
    }
    if let Some(log) = access_log {
        // The queue may hold the last requests' lines (a slow stdout): written before exiting.
        let closed = tokio::task::spawn_blocking(move || log.close(ACCESS_LOG_CLOSE)).await;
        if !matches!(closed, Ok(true)) {
            warn!(within = ?ACCESS_LOG_CLOSE, "the access log could not be written to the end; its last lines are lost");
        }
    }
    info!("gateway stopped");
    Ok(())
}

/// Asks the access log to reopen its file at each SIGHUP (logrotate's `create` mode moves the
/// file, then signals). Ends with the process.
async fn reopen_on_sighup(log: Arc<AccessLog>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => return warn!(error = %e, "cannot listen for SIGHUP; the access log will not be reopened"),
    };
    while hup.recv().await.is_some() {
        info!("SIGHUP received; reopening the access log");
        log.reopen();
    }
}

/// TLS, loaded and ready: the acceptor for the listener, and what the reload task needs.
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    provider: Arc<rustls::crypto::CryptoProvider>,
    certificates: Arc<tls::Certificates>,
    seen: reload::Fingerprint,
}

/// Loads the certificates of `source` and makes the TLS acceptor.
fn start_tls(source: &tls::Source) -> anyhow::Result<Tls> {
    let provider = tls::provider();
    let seen = reload::fingerprint(source);
    let store = tls::certs::load(source, &provider).context("cannot load the TLS certificates")?;
    info!(names = store.len(), "TLS certificates loaded");
    let certificates = Arc::new(tls::Certificates::new(store));
    let acceptor = tls::acceptor(provider.clone(), certificates.clone())?;
    Ok(Tls { acceptor, provider, certificates, seen })
}

/// Closes connections to instances that sat idle for `idle_timeout`, also when no request comes
/// to reuse (and so expire) them. A request never reuses an expired connection anyway, so this
/// sweep only frees sockets, and need not run more than once a second.
async fn close_idle_connections(services: Arc<Services>, idle_timeout: Duration) {
    let period = idle_timeout.clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for endpoint in services.endpoints() {
            endpoint.pool.expire(idle_timeout);
        }
    }
}

fn watcher_command(cfg: &Config, socket: &str) -> WatcherCommand {
    let mut args = vec!["--socket".to_string(), socket.to_string(), "--consul".to_string(), cfg.consul.to_string()];
    for s in &cfg.services {
        args.extend(["--service".to_string(), s.clone()]);
    }
    // `=`: a tag may start with '-'.
    args.push(format!("--route-tag={}", cfg.rules.route_tag));
    args.push(format!("--route-prefix-tag={}", cfg.rules.prefix));
    match cfg.view {
        consul::View::Catalog => args.push("--catalog".into()),
        consul::View::Health(statuses) => args.extend(["--health-status".to_string(), statuses.to_string()]),
    }
    args.extend(["--consistency".to_string(), cfg.consistency.to_string()]);
    args.push(format!("--source={}", cfg.source));
    match cfg.source {
        SourceKind::Consul => {}
        SourceKind::Etcd => args.extend(cfg.etcd.to_argv()),
        SourceKind::Dns => args.extend(cfg.dns.to_argv()),
    }
    let format = match cfg.log_format {
        common::LogFormat::Text => "text",
        common::LogFormat::Json => "json",
    };
    args.extend(["--log-format".to_string(), format.to_string()]);
    WatcherCommand { bin: cfg.watcher_bin.clone(), args }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_watcher_gets_the_consistency_mode_and_never_the_token() {
        let args =
            crate::config::Args::try_parse_from(["gateway", "--consistency", "stale", "--watcher-bin", "/bin/watcher"])
                .unwrap();
        let cmd = watcher_command(&Config::from_args(args).unwrap(), "/tmp/s.sock");
        let joined = cmd.args.join(" ");
        assert!(joined.contains("--consistency stale"), "{joined}");
        // The token goes by the inherited environment (CONSUL_HTTP_TOKEN or _FILE), never argv.
        assert!(!joined.to_lowercase().contains("token"), "{joined}");
    }
}
