//! The one blocking query on `/v1/catalog/services`, and the catalog follower that rides on it.
//!
//! [`run`] owns that query in every mode that needs it, turning it with the same driver as every
//! other loop ([`crate::query`]: index rules, rate limit, backoff, outage logs). With a
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
use tracing::{debug, info};

use crate::followed::{Change, Follower};
use crate::query::{self, Answer, Query};
use crate::state::State;
use crate::watch::WatchConfig;

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
    let mut query = Query::new(query::CATALOG, &cfg, 0);
    let (client, wait) = (&client, cfg.wait);
    loop {
        let read = query.next(|index| async move {
            let r = client.catalog_services(index, wait).await?;
            // A fresh start (first read, after a failure or a reset): can the token read nodes?
            if index == 0 {
                client.check_node_read().await?;
            }
            Ok(r)
        });
        match read.await {
            Ok(Answer { value: r, moved, everything }) => {
                state.set_consul(None);
                let change = follower.as_mut().map(|f| f.answer(&r.value)).unwrap_or_default();
                if !change.is_empty() {
                    log_change(&change);
                    state.apply(&change);
                }
                let event = Event::Answer { index: r.index, moved, everything, services: r.value, change };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                state.set_consul(Some(&e));
                // The query backs off before the next read.
                if events.send(Event::Failed(e)).await.is_err() {
                    return;
                }
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
