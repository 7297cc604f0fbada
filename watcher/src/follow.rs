//! The one blocking query on `/v1/catalog/services`, and the catalog follower that rides on it.
//!
//! [`run`] owns that query in every mode that needs it: it blocks on the last index, resets when
//! the index goes backwards, reads afresh after a failure, paces itself with a token bucket and
//! backs off with jitter on errors (the same `Cursor` rules as every other loop). With a
//! [`Follower`] (a route tag or prefix is configured), each answer is turned into a change of the
//! followed set ([`crate::followed`]), applied to the [`State`] (the `services` list, tags,
//! `gone`), and then handed on as an [`Event`] to whoever watches the instances:
//!
//! - per-service mode ([`crate::watch::watch_followed`]) starts and stops one watch per service;
//! - multiplexed mode ([`crate::mux`]) takes every answer as its catalog feed (index, services
//!   and tags), so following adds no connection to Consul.
//!
//! When Consul cannot be read the followed set stays as it was: an outage of the registry must
//! not look like every service going away. Neither must ACLs that hide everything: an answer
//! without any service, or (checked on every fresh start of the query) a catalog without any
//! node, is a failure ([`consul::Error::Filtered`]), not an empty catalog. Whether the catalog
//! can be read goes to the [`State`] as Consul's status (the `consul` message), logged once per
//! change of state, not once per retry.

use std::collections::BTreeMap;

use consul::Client;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::outage::Outage;

use crate::followed::{Change, Follower};
use crate::state::State;
use crate::watch::{Cursor, WatchConfig};
use common::backoff::{Backoff, TokenBucket};

/// One outcome of the catalog query, in order.
#[derive(Debug)]
pub enum Event {
    /// An answer.
    Answer {
        /// Its `X-Consul-Index`.
        index: u64,
        /// Whether the index moved since the previous answer (else the query timed out).
        moved: bool,
        /// Whether everything must be re-read: the first answer, or one after an index reset or a
        /// failure.
        everything: bool,
        /// Every service as registered (every spelling apart), with its tags.
        services: BTreeMap<String, Vec<String>>,
        /// How the followed set changed (empty without a follower), already applied to the state.
        change: Change,
    },
    /// The query failed; the loop backs off before the next one.
    Failed(consul::Error),
}

/// Runs the catalog query until `events` is closed. With `follower`, applies every change of the
/// followed set to `state` before sending the answer on.
pub async fn run(
    client: Client,
    cfg: WatchConfig,
    mut follower: Option<Follower>,
    state: State,
    events: mpsc::Sender<Event>,
) {
    let mut cursor = Cursor::default();
    let mut bucket = TokenBucket::new(cfg.burst, cfg.rate);
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut outage = Outage::default();
    loop {
        bucket.take().await;
        let before = cursor.index;
        let fresh = cursor.index == 0;
        let read = match client.catalog_services(cursor.index, cfg.wait).await {
            // A fresh start (first read, after a failure or a reset): can the token read nodes?
            Ok(r) if fresh => client.check_node_read().await.map(|()| r),
            other => other,
        };
        match read {
            Ok(r) => {
                backoff.reset();
                if outage.recovered() {
                    info!("the catalog's services can be read again");
                }
                state.set_consul(None);
                let everything = cursor.advance("catalog/services", r.index);
                let change = follower.as_mut().map(|f| f.answer(&r.value)).unwrap_or_default();
                if !change.is_empty() {
                    log_change(&change);
                    state.apply(&change);
                }
                let moved = r.index != before;
                let event = Event::Answer { index: r.index, moved, everything, services: r.value, change };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                cursor.failed();
                let delay = backoff.next_delay();
                if outage.failed(&e) {
                    warn!(error = %e, "cannot read the catalog's services; retrying with backoff (logged again when this changes)");
                } else {
                    debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read the catalog's services");
                }
                state.set_consul(Some(&e));
                if events.send(Event::Failed(e)).await.is_err() {
                    return;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn log_change(change: &Change) {
    for s in &change.added {
        info!(service = %s, "following a service");
    }
    for (s, reason) in &change.gone {
        info!(service = %s, ?reason, "no longer following a service");
    }
    if let Some(list) = &change.services {
        debug!(services = list.len(), "the followed set changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::followed::OptIn;
    use std::time::Duration;

    /// Against an address nothing listens on: the follower reports the failure, keeps the set
    /// and sends nothing to the state.
    #[tokio::test]
    async fn a_failure_is_reported_and_changes_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = Client::new(format!("127.0.0.1:{port}").parse().unwrap(), consul::Token::default());
        let state = State::with_static(&["web".to_string()], false);
        let follower = Follower::new(vec!["web".into()], OptIn::new("gateway", "").unwrap());
        let (tx, mut rx) = mpsc::channel(1);
        let cfg = WatchConfig { wait: Duration::from_millis(100), ..WatchConfig::default() };
        let task = tokio::spawn(run(client, cfg, Some(follower), state.clone(), tx));
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert!(matches!(first, Event::Failed(_)), "{first:?}");
        let (msgs, _) = state.since(0);
        assert!(
            matches!(&msgs[..], [crate::protocol::Message::Consul(c)] if !c.healthy && !c.denied),
            "no list, no gone (nothing is known yet), only Consul's status: {msgs:?}"
        );
        drop(rx);
        // The loop ends once its receiver is gone (after its backoff).
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }
}
