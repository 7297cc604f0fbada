//! The registrator's life cycle: connect to Docker, follow container events for immediate
//! (de)registration, and resync everything on a timer; reconnect with backoff when Docker goes
//! away, retry sooner when Consul refused a change. Never panics, never spins.
//!
//! Owns the orchestration only: conventions live in [`crate::desired`], planning and writing to
//! Consul in [`crate::sync`], Docker access in [`crate::docker`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::time::sleep_until;
use tracing::{debug, info, warn};

use crate::address::pick_host_ip;
use crate::convention::Container;
use crate::desired::{registrations, Desired, Settings};
use crate::docker::{short, Engine, State};
use crate::report::Reported;
use crate::sync::{Deregister, Scope, Syncer};
use crate::Error;
use common::backoff::Backoff;

/// A session that lasted this long counts as a success: the reconnect backoff starts over.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// Stand-in for "never" when periodic resync is off.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the command line decided.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--hostname`; `None` takes the Docker engine's host name.
    pub hostname: Option<String>,
    /// Everything of [`Settings`] except the host name.
    pub internal: bool,
    /// `--ip`.
    pub host_ip: Option<String>,
    /// `--tags`.
    pub force_tags: Vec<String>,
    /// `--explicit`.
    pub explicit: bool,
    /// `--network`.
    pub network: Option<String>,
    /// `--resync`; `None` turns the periodic resync off (the one at connect still runs).
    pub resync: Option<Duration>,
    /// `--deregister`.
    pub deregister: Deregister,
    /// `--cleanup`: a resync removes our registrations whose container is gone.
    pub cleanup: bool,
}

/// Runs until `shutdown` resolves. Registrations are left in place on shutdown: they describe
/// containers that are still running, and the next registrator adopts them.
pub async fn run(opts: Options, consul: consul::Client, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut reconnect = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut settings: Option<Settings> = None;
    let mut reported = Reported::default();
    loop {
        let started = Instant::now();
        let attempt = async {
            let engine = Engine::connect().await?;
            let settings = match &settings {
                Some(s) => s.clone(),
                None => {
                    let s = settings_for(&opts, &engine).await?;
                    info!(hostname = %s.hostname, "service IDs and the owner mark use this host name");
                    settings.insert(s).clone()
                }
            };
            info!(api = %engine.api_version(), "connected to Docker");
            let syncer = Syncer::new(consul.clone(), settings.hostname.clone());
            Err::<(), _>(session(&engine, &settings, &syncer, &opts, &mut reported).await)
        };
        let err = tokio::select! {
            _ = &mut shutdown => return,
            res = attempt => match res { Ok(()) => continue, Err(e) => e },
        };
        if started.elapsed() >= STABLE_SESSION {
            reconnect.reset();
        }
        let delay = reconnect.next_delay();
        warn!("{err}; reconnecting to Docker in {delay:.1?}");
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn settings_for(opts: &Options, engine: &Engine) -> Result<Settings, Error> {
    let engine_name = match &opts.hostname {
        Some(_) => None,
        None => Some(engine.host_name().await?).filter(|n| !n.is_empty()),
    };
    // An engine that reports no name still needs a stable, non-empty owner.
    let hostname = opts.hostname.clone().or(engine_name.clone()).unwrap_or_else(|| "docker-host".into());
    let host_name_ip = match (&opts.host_ip, &engine_name) {
        (None, Some(name)) => resolve(name).await,
        _ => None,
    };
    let what = if opts.internal {
        "host-network containers are"
    } else {
        "host-network containers and ports published on all interfaces are"
    };
    match (&opts.host_ip, &host_name_ip) {
        (Some(_), _) => {}
        (None, Some(ip)) => info!(host = %hostname, "no --ip: {what} registered at {ip}, the host name's address"),
        (None, None) => warn!("no --ip: {what} not registered"),
    }
    Ok(Settings {
        hostname,
        internal: opts.internal,
        host_ip: opts.host_ip.clone(),
        host_name_ip,
        network: opts.network.clone(),
        force_tags: opts.force_tags.clone(),
        explicit: opts.explicit,
    })
}

/// gliderlabs' fallback for the host's address: what the Docker host's name resolves to, unless
/// that is loopback. Only the engine's own name is looked up: a `--hostname` is a label for
/// service IDs, not necessarily a name any resolver knows.
async fn resolve(name: &str) -> Option<String> {
    let addrs = tokio::net::lookup_host((name, 0)).await.ok()?;
    pick_host_ip(addrs.map(|a| a.ip())).map(|ip| ip.to_string())
}

/// Logs at INFO, once per container, why it (or a port of it) is not registered and which
/// choices were made for it.
fn explain(reported: &mut Reported, c: &Container, d: &Desired) {
    let lines = d.skipped.iter().map(|why| format!("not registered: {why}")).chain(d.notes.iter().cloned()).collect();
    for line in reported.fresh(&c.id, lines) {
        info!(container = c.short_id(), name = %c.name, "{line}");
    }
}

/// One connection to Docker: events plus timed resyncs, until Docker fails (the returned error).
async fn session(
    engine: &Engine,
    settings: &Settings,
    syncer: &Syncer,
    opts: &Options,
    reported: &mut Reported,
) -> Error {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Replaying from `since` covers the gap between subscribing and the first listing.
    let mut events = engine.events(since);
    let period = opts.resync.unwrap_or(NEVER);
    let mut retry = Backoff::new(Duration::from_secs(1), period.min(Duration::from_secs(30)));
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = sleep_until(next) => match resync(engine, settings, syncer, opts, reported).await {
                Ok(()) => {
                    retry.reset();
                    next = tokio::time::Instant::now() + period;
                }
                Err(e @ Error::Docker { .. }) => return e,
                Err(e) => {
                    let delay = retry.next_delay();
                    warn!("resync incomplete: {e}; retrying in {delay:.1?}");
                    next = tokio::time::Instant::now() + delay;
                }
            },
            ev = events.next() => match ev {
                Some(Ok((id, action))) => {
                    debug!(container = short(&id), %action, "Docker event");
                    match refresh(engine, settings, syncer, opts, reported, &id).await {
                        Ok(()) => {}
                        Err(e @ Error::Docker { .. }) => return e,
                        Err(e) => {
                            // Only failed resyncs advance the backoff: a burst of events while
                            // Consul is down must not push the repair minutes away.
                            let delay = retry.current();
                            warn!("{e}; resync in {delay:.1?}");
                            next = next.min(tokio::time::Instant::now() + delay);
                        }
                    }
                }
                Some(Err(e)) => return e,
                None => return Error::EventsEnded,
            },
        }
    }
}

/// Brings one container's registrations up to date after an event about it.
async fn refresh(
    engine: &Engine,
    settings: &Settings,
    syncer: &Syncer,
    opts: &Options,
    reported: &mut Reported,
    id: &str,
) -> Result<(), Error> {
    let state = engine.state(id).await?;
    if !matches!(state, State::Serving(_)) {
        reported.forget(id);
    }
    let mut keep = BTreeSet::new();
    let desired = match state {
        State::Serving(c) => {
            let d = registrations(&c, settings);
            explain(reported, &c, &d);
            d.services
        }
        State::Exited(code) if opts.deregister.keeps(code) => {
            info!(container = short(id), "exited with {code}; keeping its services (--deregister on-success)");
            keep.insert(id.to_string());
            Vec::new()
        }
        State::Exited(_) | State::Paused | State::Gone => Vec::new(),
    };
    let owned = syncer.owned().await?;
    syncer.reconcile(desired, &owned, Scope::Container(id), &keep).await.map(drop)
}

/// Reconciles every running container with everything we own on the agent.
async fn resync(
    engine: &Engine,
    settings: &Settings,
    syncer: &Syncer,
    opts: &Options,
    reported: &mut Reported,
) -> Result<(), Error> {
    let ids = engine.running_ids().await?;
    let mut desired = Vec::new();
    let mut serving = BTreeSet::new();
    for id in &ids {
        if let State::Serving(c) = engine.state(id).await? {
            let d = registrations(&c, settings);
            explain(reported, &c, &d);
            desired.extend(d.services);
            serving.insert(id.clone());
        }
    }
    reported.retain(&serving);
    let owned = syncer.owned().await?;
    let mut keep = BTreeSet::new();
    for o in owned.iter().filter(|o| !serving.contains(&o.container)) {
        let kept = !opts.cleanup
            || matches!(engine.state(&o.container).await?,
                        State::Exited(code) if opts.deregister.keeps(code));
        if kept {
            keep.insert(o.container.clone());
        }
    }
    let wanted = desired.len();
    let changes = syncer.reconcile(desired, &owned, Scope::All, &keep).await?;
    let log = format!("resync: {} running containers, {wanted} services wanted, {changes} changes", ids.len());
    if changes > 0 {
        info!("{log}");
    } else {
        debug!("{log}");
    }
    Ok(())
}
