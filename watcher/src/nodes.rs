//! Per-node blocking queries: on a cluster of a few nodes, exact and cheap change detection for
//! every registration, with or without a check.
//!
//! `/v1/catalog/node/<n>` as a blocking query wakes only when a registration on node `n`
//! changes (Consul watches that node's part of the catalog; the index it answers with is the
//! catalog-wide one). With one such query per node, a change costs one node read instead of a
//! scan of every node ([`crate::scan`]). Each watch starts from what a scan read of its node and
//! at the index of that read, so no change falls between the scan and the watch. A node that
//! appears later starts from nothing: all its services count as changed. Beyond
//! [`MAX_NODE_WATCHES`] nodes the watches stop (they would cost one connection each) and the
//! multiplexed watcher goes back to scans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use consul::Client;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info};

use crate::names::{Names, Watched};
use crate::query::{Answer, Query, Subject};
use crate::watch::WatchConfig;

/// Most nodes watched one by one; each holds one connection to Consul.
pub const MAX_NODE_WATCHES: usize = 6;

/// The watched services' registrations on one node, as fingerprints, and the index they were
/// read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    index: u64,
    services: HashMap<String, Vec<u64>>,
}

impl NodeView {
    /// From one node answer: `(service, fingerprint)` per registration, filed under the
    /// configured names the service (as registered, in any case) stands for; unwatched ones
    /// dropped.
    pub fn new(index: u64, prints: Vec<(String, u64)>, watched: &Watched) -> Self {
        let mut services: HashMap<String, Vec<u64>> = HashMap::new();
        for (service, print) in prints {
            for name in watched.lookup(&service) {
                services.entry(name.clone()).or_default().push(print);
            }
        }
        for prints in services.values_mut() {
            prints.sort_unstable();
        }
        Self { index, services }
    }

    /// Each watched service on the node with its registrations' fingerprints (sorted).
    pub fn services(&self) -> impl Iterator<Item = (&str, &[u64])> {
        self.services.iter().map(|(s, p)| (s.as_str(), p.as_slice()))
    }

    /// The services whose registrations on this node differ between `self` and `now`.
    pub fn changed(&self, now: &Self) -> BTreeSet<String> {
        let keys = self.services.keys().chain(now.services.keys());
        keys.filter(|k| self.services.get(*k) != now.services.get(*k)).cloned().collect()
    }
}

/// Marks services as needing a re-read.
pub type Mark = Arc<dyn Fn(&BTreeSet<String>) + Send + Sync>;

/// The running node watches.
pub struct NodeWatches {
    client: Client,
    cfg: WatchConfig,
    names: Names,
    mark: Mark,
    tasks: HashMap<String, AbortHandle>,
    set: JoinSet<()>,
    /// Each watched node's latest view, for marking its services when the node goes.
    views: Arc<Mutex<HashMap<String, NodeView>>>,
}

impl NodeWatches {
    /// No watches yet. Registrations are filed under the current `names` of each answer.
    pub fn new(client: Client, cfg: WatchConfig, names: Names, mark: Mark) -> Self {
        Self { client, cfg, names, mark, tasks: HashMap::new(), set: JoinSet::new(), views: Arc::default() }
    }

    /// Whether every node is watched (then scans are unnecessary).
    pub fn active(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// Replaces every watch with one per node of `scanned`, each starting from its scanned view;
    /// none if there are too many nodes. Returns whether the watches are active.
    pub fn start(&mut self, scanned: &BTreeMap<String, NodeView>) -> bool {
        self.stop();
        if scanned.len() > MAX_NODE_WATCHES {
            return false;
        }
        for (node, view) in scanned {
            self.spawn(node.clone(), view.clone());
        }
        info!(nodes = scanned.len(), "watching every catalog node (one blocking query per node)");
        self.active()
    }

    /// Follows the current node list: watches new nodes (from nothing: their services count as
    /// changed), and drops gone ones (their services count as changed). With more than
    /// [`MAX_NODE_WATCHES`] nodes it stops every watch and returns false.
    pub fn follow(&mut self, nodes: &[String]) -> bool {
        if nodes.len() > MAX_NODE_WATCHES {
            info!(nodes = nodes.len(), max = MAX_NODE_WATCHES, "too many catalog nodes to watch one by one; scanning");
            self.stop();
            return false;
        }
        let current: BTreeSet<&String> = nodes.iter().collect();
        let gone: Vec<String> = self.tasks.keys().filter(|n| !current.contains(n)).cloned().collect();
        for node in gone {
            debug!(node, "catalog node went away");
            if let Some(task) = self.tasks.remove(&node) {
                task.abort();
            }
            if let Some(view) = self.views.lock().unwrap_or_else(|e| e.into_inner()).remove(&node) {
                (self.mark)(&view.services.into_keys().collect());
            }
        }
        for node in nodes {
            if !self.tasks.contains_key(node) {
                debug!(node, "new catalog node");
                self.spawn(node.clone(), NodeView::default());
            }
        }
        true
    }

    /// Stops every watch.
    pub fn stop(&mut self) {
        self.set.abort_all();
        self.tasks.clear();
        self.views.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn spawn(&mut self, node: String, view: NodeView) {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).insert(node.clone(), view.clone());
        let (client, cfg, names, mark, views) =
            (self.client.clone(), self.cfg.clone(), self.names.clone(), self.mark.clone(), self.views.clone());
        let task = self.set.spawn(watch_node(client, cfg, names, mark, views, node.clone(), view));
        self.tasks.insert(node, task);
    }
}

/// One node's blocking query, until aborted: marks the services whose registrations changed.
/// (When the followed set changed since the last answer, a service followed anew counts as
/// changed, and one that went too: the reader skips it.)
async fn watch_node(
    client: Client,
    cfg: WatchConfig,
    names: Names,
    mark: Mark,
    views: Arc<Mutex<HashMap<String, NodeView>>>,
    node: String,
    mut view: NodeView,
) {
    let mut query = Query::new(Subject::Node(node.clone()), &cfg, view.index);
    loop {
        // A failure is logged (at DEBUG: the cluster-wide loops report Consul being unreachable)
        // and backed off by the driver; this loop only retries.
        let Ok(Answer { value: r, .. }) = query.next(|index| client.catalog_node_prints(&node, index, cfg.wait)).await
        else {
            continue;
        };
        // Compared by content, so the answer after a failure or an index reset is as exact as any
        // other.
        let now = NodeView::new(r.index, r.value, &names.get());
        let changed = view.changed(&now);
        if !changed.is_empty() {
            debug!(node, services = changed.len(), "registrations changed on node");
            mark(&changed);
        }
        views.lock().unwrap_or_else(|e| e.into_inner()).insert(node.clone(), now.clone());
        view = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> Watched {
        Watched::new(["web", "api"].map(String::from))
    }

    fn view(regs: &[(&str, u64)]) -> NodeView {
        NodeView::new(7, regs.iter().map(|(s, p)| (s.to_string(), *p)).collect(), &watched())
    }

    #[test]
    fn a_view_names_the_watched_services_that_changed() {
        let a = view(&[("web", 1), ("web", 2), ("api", 3), ("other", 4)]);
        assert_eq!(a.services().count(), 2);
        // Order does not matter; unwatched services do not count.
        assert!(a.changed(&view(&[("api", 3), ("web", 2), ("web", 1), ("other", 5)])).is_empty());
        // One registration of web gone; api's changed; everything gone.
        assert_eq!(a.changed(&view(&[("web", 1), ("api", 3)])), BTreeSet::from(["web".to_string()]));
        assert_eq!(a.changed(&view(&[("web", 1), ("web", 2), ("api", 9)])), BTreeSet::from(["api".to_string()]));
        assert_eq!(a.changed(&NodeView::default()), BTreeSet::from(["web".to_string(), "api".to_string()]));
    }

    #[test]
    fn registrations_under_any_case_count_for_the_configured_name() {
        let a = view(&[("web", 1), ("Web", 2)]);
        assert_eq!(a.services().count(), 1);
        assert!(a.changed(&view(&[("Web", 2), ("web", 1)])).is_empty());
        assert_eq!(a.changed(&view(&[("web", 1), ("Web", 2), ("WEB", 3)])), BTreeSet::from(["web".to_string()]));
    }
}
