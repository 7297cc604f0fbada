//! Finding which services' registrations changed by reading the catalog node by node.
//!
//! A change to an instance without a check of its own moves no check, so
//! `/v1/health/state/any` cannot say which service it touched, and `/v1/catalog/services` only
//! says that *something* changed. Re-reading every such service costs one request per service.
//! The catalog is organised by node, though: `/v1/catalog/nodes` plus `/v1/catalog/node/<n>` for
//! each node return every registration in (nodes + 1) requests, and comparing per-service
//! fingerprints with the previous scan names exactly the services that changed. Clusters have
//! far fewer nodes than services, so this is the cheaper way whenever there are more check-less
//! services than nodes. On clusters of a few nodes a scan also seeds the per-node watches
//! ([`crate::nodes`]), which then make further scans unnecessary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consul::Client;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::budget::budgeted;
use crate::names::Watched;
use crate::nodes::NodeView;

/// Node reads queued at once; how many are actually in flight is bounded by the caller's budget.
const MAX_NODE_READS: usize = 8;

/// What the last scan read: every node's registrations.
#[derive(Debug, Default)]
pub struct CatalogScan {
    nodes: Option<BTreeMap<String, NodeView>>,
    scans: u64,
}

impl CatalogScan {
    /// How many requests a scan costs, as far as the last scan knows (`None` before the first).
    pub fn cost(&self) -> Option<usize> {
        self.nodes.as_ref().map(|n| n.len() + 1)
    }

    /// The nodes of the last scan, as read (`None` before the first scan or after a reset).
    pub fn nodes(&self) -> Option<&BTreeMap<String, NodeView>> {
        self.nodes.as_ref()
    }

    /// How many scans succeeded so far.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Scans the catalog. Returns the watched services whose registrations differ from the
    /// previous scan, or `None` on the first scan (no baseline: everything may have changed).
    /// Node reads take a permit of `budget` each.
    pub async fn changed(
        &mut self,
        client: &Client,
        watched: &Arc<Watched>,
        budget: &Arc<Semaphore>,
    ) -> Result<Option<BTreeSet<String>>, consul::Error> {
        let started = Instant::now();
        let names = client.catalog_nodes().await?;
        // Owned data in the stream: borrowed closures trip rustc's Send inference in spawned tasks.
        let reads: Vec<Result<(String, NodeView), consul::Error>> = futures_util::stream::iter(names)
            .map(|n| {
                let client = client.clone();
                let budget = budget.clone();
                let watched = watched.clone();
                async move {
                    let r = budgeted(&budget, client.catalog_node_prints(&n, 0, Duration::ZERO)).await?;
                    Ok((n, NodeView::new(r.index, r.value, &watched)))
                }
            })
            .buffer_unordered(MAX_NODE_READS)
            .collect()
            .await;
        let now = reads.into_iter().collect::<Result<BTreeMap<_, _>, _>>()?;
        let changed = self.nodes.as_ref().map(|before| diff(&fingerprints(before), &fingerprints(&now)));
        debug!(nodes = now.len(), ms = started.elapsed().as_secs_f64() * 1e3, "catalog scan");
        self.nodes = Some(now);
        self.scans += 1;
        Ok(changed)
    }

    /// Forgets the baseline (after a failure or an index reset).
    pub fn reset(&mut self) {
        self.nodes = None;
    }
}

/// One fingerprint per service over every node (a service's instances may sit on many).
fn fingerprints(nodes: &BTreeMap<String, NodeView>) -> HashMap<&str, Vec<(&str, &[u64])>> {
    let mut per: HashMap<&str, Vec<(&str, &[u64])>> = HashMap::new();
    for (node, view) in nodes {
        for (service, prints) in view.services() {
            per.entry(service).or_default().push((node, prints));
        }
    }
    per
}

fn diff(before: &HashMap<&str, Vec<(&str, &[u64])>>, now: &HashMap<&str, Vec<(&str, &[u64])>>) -> BTreeSet<String> {
    before.keys().chain(now.keys()).filter(|k| before.get(*k) != now.get(*k)).map(|k| k.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[(&str, &[(&str, u64)])]) -> BTreeMap<String, NodeView> {
        let watched = Watched::new(["web", "api", "new"].map(String::from));
        list.iter()
            .map(|(node, regs)| {
                let prints = regs.iter().map(|(s, p)| (s.to_string(), *p)).collect();
                (node.to_string(), NodeView::new(1, prints, &watched))
            })
            .collect()
    }

    #[test]
    fn only_services_whose_registrations_changed_differ() {
        let a = nodes(&[("n1", &[("web", 11), ("api", 13)]), ("n2", &[("web", 12)])]);
        // Same registrations read in another order: no change. One registration changed: a change.
        let b = nodes(&[("n2", &[("web", 12)]), ("n1", &[("api", 14), ("web", 11)])]);
        assert_eq!(diff(&fingerprints(&a), &fingerprints(&b)), BTreeSet::from(["api".to_string()]));
        // One instance of several went away.
        let w = nodes(&[("n1", &[("web", 11), ("api", 13)])]);
        assert_eq!(diff(&fingerprints(&a), &fingerprints(&w)), BTreeSet::from(["web".to_string()]));
        // A service whose last instance went away, a new one, and one not watched at all.
        let c = nodes(&[("n1", &[("new", 15), ("other", 16)])]);
        assert_eq!(
            diff(&fingerprints(&a), &fingerprints(&c)),
            BTreeSet::from(["web".to_string(), "api".to_string(), "new".to_string()])
        );
    }
}
