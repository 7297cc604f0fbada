//! Consul as a [`Source`]: picks how services are watched (one blocking query per service, the
//! multiplexed watch, or HTTP/2 streams) and starts the loops, which write into the [`State`].
//! The loops themselves live in [`crate::watch`], [`crate::mux`] and [`crate::follow`].

use std::process::ExitCode;
use std::time::Duration;

use consul::Client;
use tracing::{error, info, warn};

use super::{Follow, RunFuture, Source};
use crate::followed::Follower;
use crate::query::Retry;
use crate::state::State;
use crate::streams::Pool;
use crate::watch::{watch_followed, watch_service, WatchConfig};

/// How services are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
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
pub const AUTO_MAX_PER_SERVICE: usize = 12;

/// Consul, as the watcher's command line set it up.
pub struct ConsulSource {
    /// The client every loop reads through (consistency mode and token set).
    pub client: Client,
    /// The view, `wait`, rate and backoff of every blocking query.
    pub cfg: WatchConfig,
    /// How services are watched.
    pub mode: Mode,
    /// In streams mode, long polls per HTTP/2 connection.
    pub streams_per_connection: usize,
    /// In streams mode, the most HTTP/2 connections.
    pub max_connections: usize,
    /// In multiplexed mode, how often every service is re-read as a safety net.
    pub resync: Duration,
}

impl Source for ConsulSource {
    fn run(self: Box<Self>, what: Follow, state: State) -> RunFuture {
        Box::pin(self.watch(what, state))
    }
}

impl ConsulSource {
    /// Picks the mode and starts the watch loops; returns only if they cannot start (the loops stop
    /// when this future is dropped).
    async fn watch(self, what: Follow, state: State) -> ExitCode {
        let ConsulSource { client, cfg, mode, streams_per_connection, max_connections, resync } = self;
        let services = what.services;
        let follower = what.rule.map(|rule| Follower::new(services.clone(), rule));
        let many = follower.is_some() || services.len() > AUTO_MAX_PER_SERVICE;
        let mode = match mode {
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
                    crate::mux::watch_many(client.clone(), services, cfg.clone(), resync, state.clone(), follower);
                tasks.spawn(mux);
            }
            Mode::Streams => {
                info!(
                    streams_per_connection = streams_per_connection,
                    max_connections = max_connections,
                    "watching in streams mode (one blocking query per service, as HTTP/2 streams)"
                );
                // HTTP/2 from the first byte: one connection per client however many long polls start
                // at once (Consul was just seen to take h2).
                let Some(h2) = client.http2_only() else {
                    error!("cannot set up HTTP/2 to Consul");
                    return ExitCode::FAILURE;
                };
                let pool = Pool::new(h2, streams_per_connection, max_connections);
                let (events, feed) = tokio::sync::mpsc::channel(1);
                if follower.is_some() {
                    // The catalog query is one more stream, on the first connection.
                    let catalog = pool.assign(CATALOG_STREAM).client;
                    tasks.spawn(crate::follow::run(catalog, cfg.clone(), follower, state.clone(), events));
                } else {
                    _no_follower = Some(events);
                }
                tasks.spawn(watch_followed(pool, cfg.clone(), state.clone(), services, feed));
            }
            _ => {
                if let Some(follower) = follower {
                    let (events, feed) = tokio::sync::mpsc::channel(1);
                    tasks.spawn(crate::follow::run(client.clone(), cfg.clone(), Some(follower), state.clone(), events));
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
}

/// The key the follower's catalog query takes in the streams pool (not a valid service name).
const CATALOG_STREAM: &str = " catalog/services";

/// Whether Consul answers over HTTP/2; asks until it answers (nothing can be watched before).
/// Asks on a connection of its own, closed after: the watch loops use clients of their own.
/// Failures are Consul's status in `state`, logged once per change.
async fn speaks_h2(client: &Client, state: &State) -> bool {
    let mut retry = Retry::new(Duration::from_millis(100), Duration::from_secs(5));
    let probe = client.separate();
    loop {
        match probe.protocol().await {
            Ok(v) => {
                info!(version = ?v, "Consul's HTTPS API answers");
                state.set_consul(None);
                return v == http::Version::HTTP_2;
            }
            Err(e) => {
                if retry.failed(&e).0 {
                    warn!(error = %e, "cannot reach Consul to see whether it speaks HTTP/2; retrying with backoff (logged again when this changes)");
                }
                state.set_consul(Some(&e));
                retry.pause().await;
            }
        }
    }
}
