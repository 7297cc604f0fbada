//! Finding which services' registrations changed by reading the catalog node by node.
//!
//! A change to an instance without a check of its own moves no check, so
//! `/v1/health/state/any` cannot say which service it touched, and `/v1/catalog/services` only
//! says that *something* changed. Re-reading every such service costs one request per service.
//! The catalog is organised by node, though: `/v1/catalog/nodes` plus `/v1/catalog/node/<n>` for
//! each node return every registration in (nodes + 1) requests, and comparing per-service
//! fingerprints with the previous scan names exactly the services that changed. Clusters have
//! far fewer nodes than services, so this is the cheaper way whenever there are more check-less
//! services than nodes.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use std::sync::Arc;

use consul::{Client, Instance};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

/// Node reads queued at once; how many are actually in flight is bounded by the caller's budget.
const MAX_NODE_READS: usize = 8;

/// The fingerprints of the last scan.
#[derive(Debug, Default)]
pub struct CatalogScan {
    prints: Option<HashMap<String, u64>>,
    nodes: usize,
}

impl CatalogScan {
    /// How many requests a scan costs, as far as the last scan knows (`None` before the first).
    pub fn cost(&self) -> Option<usize> {
        self.prints.as_ref().map(|_| self.nodes + 1)
    }

    /// Scans the catalog. Returns the watched services whose registrations differ from the
    /// previous scan, or `None` on the first scan (no baseline: everything may have changed).
    /// Node reads take a permit of `budget` each.
    pub async fn changed(
        &mut self,
        client: &Client,
        watched: &BTreeSet<&str>,
        budget: &Arc<Semaphore>,
    ) -> Result<Option<BTreeSet<String>>, consul::Error> {
        let nodes = client.catalog_nodes().await?;
        let count = nodes.len();
        // Owned data in the stream: borrowed closures trip rustc's Send inference in spawned tasks.
        let reads: Vec<Result<Vec<(String, Instance)>, consul::Error>> = futures_util::stream::iter(nodes)
            .map(|n| {
                let client = client.clone();
                let budget = budget.clone();
                async move {
                    let _permit = budget.acquire_owned().await;
                    client.catalog_node(&n).await
                }
            })
            .buffer_unordered(MAX_NODE_READS)
            .collect()
            .await;
        let mut per: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for r in reads {
            for (service, inst) in r? {
                if watched.contains(service.as_str()) {
                    per.entry(service).or_default().push(inst);
                }
            }
        }
        let now = fingerprints(per);
        self.nodes = count;
        let changed = self.prints.as_ref().map(|before| diff(before, &now));
        self.prints = Some(now);
        Ok(changed)
    }

    /// Forgets the baseline (after a failure or an index reset).
    pub fn reset(&mut self) {
        self.prints = None;
    }
}

fn fingerprints(per: BTreeMap<String, Vec<Instance>>) -> HashMap<String, u64> {
    per.into_iter()
        .map(|(service, instances)| {
            let mut h = DefaultHasher::new();
            consul::model::canonical(instances).hash(&mut h);
            (service, h.finish())
        })
        .collect()
}

fn diff(before: &HashMap<String, u64>, now: &HashMap<String, u64>) -> BTreeSet<String> {
    before.keys().chain(now.keys()).filter(|k| before.get(*k) != now.get(*k)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, port: u16) -> Instance {
        Instance::new(id, "n", "127.0.0.1", port)
    }

    #[test]
    fn only_services_whose_instances_changed_differ() {
        let a = fingerprints(BTreeMap::from([
            ("web".to_string(), vec![inst("w1", 1), inst("w2", 2)]),
            ("api".to_string(), vec![inst("a1", 3)]),
        ]));
        // Same instances read in another order: no change. One port moved: a change.
        let b = fingerprints(BTreeMap::from([
            ("web".to_string(), vec![inst("w2", 2), inst("w1", 1)]),
            ("api".to_string(), vec![inst("a1", 4)]),
        ]));
        assert_eq!(diff(&a, &b), BTreeSet::from(["api".to_string()]));
        // A service whose last instance went away, and a new one.
        let c = fingerprints(BTreeMap::from([("new".to_string(), vec![inst("n1", 5)])]));
        assert_eq!(diff(&a, &c), BTreeSet::from(["web".to_string(), "api".to_string(), "new".to_string()]));
    }
}
