//! etcd (v3 API) as a [`Source`]: a range read of the key prefix, then a watch from the next
//! revision, each change applied as it comes.
//!
//! An instance is the key `<prefix><service>/<instance-id>`; its value is JSON
//! `{"address","port","tags","meta"}` or a plain `host:port` (the `etcd` crate's model). A value
//! that cannot be read is logged once and skipped ([`view`]).
//!
//! - **Followed services**: the static names, plus with the opt-in rule every service one of
//!   whose instances carries a matching tag (the same [`Follower`] as Consul's catalog, fed the
//!   service → tags map of the prefix). Route options in tags work as they do from Consul.
//! - **Snapshots**: after the range read and after every watch answer, each followed service's
//!   set is published if it changed, with the etcd revision as its index.
//! - **Compaction**: a watch whose start revision was compacted reads the prefix afresh.
//! - **Lost connection**: the last good sets keep being served, marked stale (every followed
//!   service's status and the registry's status say why); the watcher reconnects with backoff
//!   and reads the prefix afresh before watching again (not resuming after the last revision it
//!   applied: an etcd restarted with other data may be at a lower revision, and a watch from a
//!   revision it has not reached yet stays silent); the statuses go back to healthy once the
//!   watch runs again.

pub mod view;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use common::backoff::Backoff;
use etcd::{Client, WatchBatch};
use tracing::{info, warn};

use super::{Follow, RunFuture, Source};
use crate::followed::Follower;
use crate::state::State;
use view::View;

/// The etcd flags, shared by the watcher and the gateway (which passes them on with
/// [`EtcdArgs::to_argv`]).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct EtcdArgs {
    /// With --source etcd: the etcd endpoints (`http://host:port`), a comma list; etcdctl's
    /// variable.
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        value_name = "URLS"
    )]
    pub etcd_endpoints: Vec<String>,
    /// With --source etcd: the key prefix instances are registered under
    /// (`<prefix><service>/<instance-id>`).
    #[arg(long, env = "GATEWAY_ETCD_PREFIX", default_value = "/services/", value_name = "PREFIX")]
    pub etcd_prefix: String,
}

impl EtcdArgs {
    /// The flags again, as the watcher takes them.
    pub fn to_argv(&self) -> Vec<String> {
        vec![
            format!("--etcd-endpoints={}", self.etcd_endpoints.join(",")),
            format!("--etcd-prefix={}", self.etcd_prefix),
        ]
    }
}

/// etcd, as the command line set it up.
pub struct EtcdSource {
    /// The flags.
    pub args: EtcdArgs,
}

impl Source for EtcdSource {
    fn run(self: Box<Self>, what: Follow, state: State) -> RunFuture {
        Box::pin(follow(self.args, what, state))
    }
}

/// Reads and watches until dropped; failures are reported in `state` and retried.
async fn follow(args: EtcdArgs, what: Follow, state: State) -> ExitCode {
    info!(endpoints = %args.etcd_endpoints.join(","), prefix = %args.etcd_prefix, services = ?what.services,
          opt_in = what.rule.is_some(), "watching etcd");
    let mut w = Watcher {
        prefix: args.etcd_prefix.clone(),
        view: View::new(&args.etcd_prefix),
        revision: None,
        publisher: Publisher::new(what, state),
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing: Option<String> = None;
    loop {
        let Err(e) = w.session(&args.etcd_endpoints, &mut backoff, &mut failing).await;
        let why = e.to_string();
        if failing.as_deref() != Some(why.as_str()) {
            warn!(error = %why, "cannot read etcd; serving the last known instances (stale), retrying with backoff (logged again when this changes)");
        }
        w.publisher.stale(&why);
        failing = Some(why);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The read loop's memory across connections.
struct Watcher {
    prefix: String,
    view: View,
    /// The last revision applied (`None`: nothing read yet); only for telling when etcd's
    /// revision went backwards.
    revision: Option<i64>,
    publisher: Publisher,
}

impl Watcher {
    /// One connection: range read, watch, apply; returns when it fails.
    ///
    /// Every connection starts with a range read rather than resuming the watch after the last
    /// revision applied: an etcd restarted with another data directory (restored from an old
    /// backup, or empty) has a lower revision than the one the watcher saw, and a watch from a
    /// future revision is silent until the store gets there, so the old instances would be
    /// served as healthy and the new ones never seen.
    async fn session(
        &mut self,
        endpoints: &[String],
        backoff: &mut Backoff,
        failing: &mut Option<String>,
    ) -> Result<Infallible, etcd::Error> {
        let client = Client::connect(endpoints).await?;
        loop {
            let range = client.range(&self.prefix).await?;
            if let Some(before) = self.revision.filter(|r| *r > range.revision) {
                warn!(
                    before,
                    now = range.revision,
                    "etcd's revision went backwards (its data was replaced); reading the prefix afresh"
                );
            }
            self.view.reset(&range.kvs);
            self.revision = Some(range.revision);
            self.publisher.publish(&self.view, range.revision);
            info!(revision = range.revision, keys = range.kvs.len(), "read the etcd prefix");
            let from = range.revision + 1;
            let mut watch = client.watch(&self.prefix, from).await?;
            self.publisher.healthy();
            backoff.reset();
            if failing.take().is_some() {
                info!(revision = range.revision, "etcd can be read again; watching");
            }
            loop {
                match watch.next().await? {
                    WatchBatch::Compacted { compact_revision } => {
                        info!(
                            from,
                            compact_revision,
                            "etcd compacted the revisions the watch needed; reading the prefix afresh"
                        );
                        break;
                    }
                    WatchBatch::Events(events) => {
                        let Some(last) = events.last().map(|e| e.revision()) else { continue };
                        for e in &events {
                            self.view.apply(e);
                        }
                        self.revision = Some(last);
                        self.publisher.publish(&self.view, last);
                    }
                }
            }
        }
    }
}

/// Writes what the view says into the state: the followed set, snapshots, statuses.
struct Publisher {
    statics: Vec<String>,
    follower: Option<Follower>,
    state: State,
}

impl Publisher {
    fn new(what: Follow, state: State) -> Self {
        let follower = what.rule.map(|rule| Follower::new(what.services.clone(), rule));
        Self { statics: what.services, follower, state }
    }

    /// The services followed now.
    fn followed(&self) -> Vec<String> {
        match &self.follower {
            Some(f) => f.current().keys().cloned().collect(),
            None => self.statics.clone(),
        }
    }

    /// Updates the followed set from the view, and every followed service's set.
    fn publish(&mut self, view: &View, revision: i64) {
        if let Some(f) = &mut self.follower {
            let change = f.answer(&view.catalog());
            if !change.is_empty() {
                self.state.apply(&change);
            }
        }
        let spellings = view.spellings();
        let index = u64::try_from(revision).unwrap_or_default();
        let mut changed = BTreeSet::new();
        for s in self.followed() {
            if self.state.set_snapshot_if_changed(&s, index, view.instances(&s, &spellings)) {
                changed.insert(s);
            }
        }
        if !changed.is_empty() {
            info!(revision, services = ?changed, "instance sets changed");
        }
    }

    /// The watch runs: every followed service and the registry can be read.
    fn healthy(&self) {
        for s in self.followed() {
            self.state.set_status(&s, true, None);
        }
        self.state.set_registry(true, false, None);
    }

    /// etcd cannot be read: the last sets stay, marked stale with `why`.
    fn stale(&self, why: &str) {
        for s in self.followed() {
            self.state.set_status(&s, false, Some(why.to_string()));
        }
        self.state.set_registry(false, false, Some(why.to_string()));
    }
}
