//! Which services' checks changed, from two answers of `/v1/health/state/any`.
//!
//! The multiplexed watcher ([`crate::mux`]) blocks on every check in the datacenter; comparing
//! per-service fingerprints of two answers names the services to re-read. A node-level check
//! (a node failing, a node in maintenance) touches every service on it, so its change makes
//! everything dirty. Checks report the service name as registered (`Web`); it is matched to the
//! configured names as Consul matches names, without regard to case ([`crate::names`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use consul::model::CheckState;

use crate::names::Watched;

/// Per-service fingerprints of `/v1/health/state/any`, plus one for node-level checks.
#[derive(Default, PartialEq, Eq, Debug)]
pub struct CheckPrints {
    services: HashMap<String, u64>,
    nodes: u64,
}

impl CheckPrints {
    /// Fingerprints the checks of the watched services, per configured name.
    pub fn of(checks: &[CheckState], watched: &Watched) -> Self {
        let mut per: BTreeMap<&str, Vec<&CheckState>> = BTreeMap::new();
        let mut nodes: Vec<(&str, &str, &str)> = Vec::new();
        for c in checks {
            if c.service_id.is_empty() {
                nodes.push((&c.node, &c.check_id, &c.status));
            } else {
                for name in watched.lookup(&c.service_name) {
                    per.entry(name).or_default().push(c);
                }
            }
        }
        let services = per
            .into_iter()
            .map(|(name, mut cs)| {
                cs.sort_by(|a, b| (&a.node, &a.check_id).cmp(&(&b.node, &b.check_id)));
                let mut h = DefaultHasher::new();
                for c in cs {
                    (&c.node, &c.check_id, &c.service_id, &c.service_name, &c.status, c.modify_index).hash(&mut h);
                }
                (name.to_string(), h.finish())
            })
            .collect();
        nodes.sort_unstable();
        let mut h = DefaultHasher::new();
        nodes.hash(&mut h);
        Self { services, nodes: h.finish() }
    }

    /// The services whose checks differ between `self` (before) and `now`; `None` means all
    /// (a node-level check changed).
    pub fn changed(&self, now: &Self) -> Option<BTreeSet<String>> {
        if self.nodes != now.nodes {
            return None;
        }
        let keys: BTreeSet<&String> = self.services.keys().chain(now.services.keys()).collect();
        Some(keys.into_iter().filter(|k| self.services.get(*k) != now.services.get(*k)).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(node: &str, id: &str, service: &str, status: &str, index: u64) -> CheckState {
        CheckState {
            node: node.into(),
            check_id: id.into(),
            status: status.into(),
            service_id: if service.is_empty() { String::new() } else { format!("{service}-1") },
            service_name: service.into(),
            modify_index: index,
        }
    }

    #[test]
    fn only_services_whose_checks_moved_are_dirty() {
        let watched = Watched::new(["a", "b"].map(String::from));
        let before = CheckPrints::of(
            &[
                check("n", "serfHealth", "", "passing", 1),
                check("n", "ca", "a", "passing", 5),
                check("n", "cb", "b", "passing", 6),
            ],
            &watched,
        );
        let after = CheckPrints::of(
            &[
                check("n", "serfHealth", "", "passing", 1),
                check("n", "ca", "a", "critical", 9),
                check("n", "cb", "b", "passing", 6),
            ],
            &watched,
        );
        assert_eq!(before.changed(&after), Some(BTreeSet::from(["a".to_string()])));
        // A check going away (instance deregistered) is a change too.
        let gone = CheckPrints::of(
            &[check("n", "serfHealth", "", "passing", 1), check("n", "cb", "b", "passing", 6)],
            &watched,
        );
        assert_eq!(before.changed(&gone), Some(BTreeSet::from(["a".to_string()])));
    }

    #[test]
    fn unwatched_services_and_order_do_not_matter() {
        let watched = Watched::new(["a"].map(String::from));
        let x = CheckPrints::of(&[check("n", "c1", "a", "passing", 5), check("m", "c2", "a", "passing", 7)], &watched);
        let y = CheckPrints::of(
            &[
                check("m", "c2", "a", "passing", 7),
                check("z", "cz", "other", "critical", 99),
                check("n", "c1", "a", "passing", 5),
            ],
            &watched,
        );
        assert_eq!(x.changed(&y), Some(BTreeSet::new()));
    }

    #[test]
    fn checks_of_case_variant_names_count_for_the_configured_name() {
        let watched = Watched::new(["web", "api"].map(String::from));
        let x =
            CheckPrints::of(&[check("n", "c1", "Web", "passing", 5), check("n", "c2", "API", "passing", 6)], &watched);
        let y =
            CheckPrints::of(&[check("n", "c1", "Web", "critical", 7), check("n", "c2", "API", "passing", 6)], &watched);
        assert_eq!(x.changed(&y), Some(BTreeSet::from(["web".to_string()])));
        // A new instance under yet another spelling; a service maintenance check.
        let z = CheckPrints::of(
            &[
                check("n", "c1", "Web", "critical", 7),
                check("n", "c2", "API", "passing", 6),
                check("n", "c3", "WEB", "passing", 8),
            ],
            &watched,
        );
        assert_eq!(y.changed(&z), Some(BTreeSet::from(["web".to_string()])));
        let m = CheckPrints::of(
            &[check("n", "c2", "API", "passing", 6), check("n", "_service_maintenance:api-1", "api", "critical", 9)],
            &watched,
        );
        assert_eq!(z.changed(&m), Some(BTreeSet::from(["api".to_string(), "web".to_string()])));
    }

    #[test]
    fn a_node_check_flip_makes_everything_dirty() {
        let watched = Watched::new(["a"].map(String::from));
        let x = CheckPrints::of(&[check("n", "serfHealth", "", "passing", 1)], &watched);
        let y = CheckPrints::of(&[check("n", "serfHealth", "", "critical", 2)], &watched);
        assert_eq!(x.changed(&y), None);
    }
}
