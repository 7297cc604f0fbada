//! Which services are followed, worked out from one answer of `/v1/catalog/services`, and how
//! that set changed since the previous answer. Pure: no I/O, so every rule is tested here.
//!
//! - **Opt-in** ([`OptIn`]): a service is routed when any of its tags (the union over its
//!   instances, as `/v1/catalog/services` reports it) equals the route tag (`gateway`), or
//!   starts with the route prefix (Fabio's `urlprefix-`).
//! - **Names**: Consul takes names that fold alike ([`consul::name::fold`]) for one service, and
//!   lists each spelling apart. A discovered service is published under its smallest spelling in
//!   byte order, with the tags of every spelling merged; one that folds to a `--service` name *is*
//!   that static service, published under the configured name(s).
//! - **Static services** (`--service`) are always followed, tagged or not, registered or not.
//! - **Diff** ([`Follower::answer`]): each answer is compared with the previous set; the
//!   [`Change`] names what to start, what to stop (with its [`GoneReason`]), whose tags changed,
//!   and the new full list when it changed.
//!
//! It does not read Consul (that is [`crate::follow`]) nor hold the published state
//! ([`crate::state`]).

use std::collections::{BTreeMap, BTreeSet};

use consul::name::fold;
use tracing::warn;

use crate::names::Watched;
use crate::protocol::GoneReason;

/// The opt-in rule: a route tag, a route tag prefix, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptIn {
    tag: String,
    prefix: String,
}

impl OptIn {
    /// The rule for `--route-tag` and `--route-prefix-tag`; an empty string disables either.
    /// `None` when both are disabled: nothing opts in, so there is nothing to follow.
    pub fn new(tag: &str, prefix: &str) -> Option<Self> {
        (!tag.is_empty() || !prefix.is_empty()).then(|| Self { tag: tag.to_string(), prefix: prefix.to_string() })
    }

    /// Whether a service with these tags opts in. Surrounding whitespace is ignored, as Fabio
    /// and the gateway's tag parser ignore it.
    pub fn matches<'a>(&self, mut tags: impl Iterator<Item = &'a String>) -> bool {
        tags.any(|t| {
            let t = t.trim();
            (!self.tag.is_empty() && t == self.tag) || (!self.prefix.is_empty() && t.starts_with(&self.prefix))
        })
    }
}

/// Every followed service, by published name, with its tags (sorted, deduplicated).
pub type Set = BTreeMap<String, Vec<String>>;

/// How the followed set changed with one answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// The new full list (sorted) when it changed, and always on the first answer.
    pub services: Option<Vec<String>>,
    /// Services followed from now on (watch them).
    pub added: Vec<String>,
    /// Followed services (new ones included) whose tags are new, with their tags.
    pub tagged: Vec<(String, Vec<String>)>,
    /// Discovered services no longer followed (stop watching them), and why.
    pub gone: Vec<(String, GoneReason)>,
}

impl Change {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_none() && self.added.is_empty() && self.tagged.is_empty() && self.gone.is_empty()
    }
}

/// The followed set between two answers.
#[derive(Debug)]
pub struct Follower {
    statics: Watched,
    rule: OptIn,
    /// The set as of the last answer (before the first: the static services, untagged).
    last: Set,
    answered: bool,
    /// Opted-in names that cannot be watched (not a valid URL path segment), logged once.
    refused: BTreeSet<String>,
}

impl Follower {
    /// Follows `statics` always, and every service that opts in by `rule`.
    pub fn new(statics: Vec<String>, rule: OptIn) -> Self {
        let statics = Watched::new(statics);
        let last = statics.all().iter().map(|s| (s.clone(), Vec::new())).collect();
        Self { statics, rule, last, answered: false, refused: BTreeSet::new() }
    }

    /// The set as of the last answer.
    pub fn current(&self) -> &Set {
        &self.last
    }

    /// Applies one answer of `/v1/catalog/services` (name as registered → tags).
    pub fn answer(&mut self, catalog: &BTreeMap<String, Vec<String>>) -> Change {
        let groups = groups(catalog);
        let mut now = Set::new();
        let mut refused = BTreeSet::new();
        for (key, (name, tags)) in &groups {
            let configured = self.statics.lookup(name);
            if !configured.is_empty() {
                now.extend(configured.iter().map(|c| (c.clone(), tags.clone())));
            } else if self.rule.matches(tags.iter()) {
                if consul::client::validate_name(name).is_ok() {
                    now.insert(name.clone(), tags.clone());
                } else {
                    refused.insert(key.clone());
                    if !self.refused.contains(key) {
                        warn!(service = %common::untrusted(name), "a service opted in with a name that cannot be watched; ignoring it");
                    }
                }
            }
        }
        for s in self.statics.all() {
            now.entry(s.clone()).or_default();
        }
        self.refused = refused;
        let change = diff(&self.last, &now, &groups, !self.answered);
        self.last = now;
        self.answered = true;
        change
    }
}

/// `/v1/catalog/services` grouped by folded name: the smallest spelling, and the tags of every
/// spelling merged (sorted, deduplicated).
fn groups(catalog: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    // The map iterates in byte order: the first spelling seen of a group is its smallest.
    for (name, tags) in catalog {
        let group = out.entry(fold(name).into_owned()).or_insert_with(|| (name.clone(), BTreeSet::new()));
        group.1.extend(tags.iter().cloned());
    }
    out.into_iter().map(|(k, (name, tags))| (k, (name, tags.into_iter().collect()))).collect()
}

/// What changed from `before` to `now`. A service that went is `untagged` if its group is still
/// registered but followed under no name, else `deregistered` (its spelling is gone from the
/// catalog, even if another spelling of it is followed now).
fn diff(before: &Set, now: &Set, groups: &BTreeMap<String, (String, Vec<String>)>, first: bool) -> Change {
    let followed_keys: BTreeSet<String> = now.keys().map(|n| fold(n).into_owned()).collect();
    let gone = before
        .keys()
        .filter(|n| !now.contains_key(*n))
        .map(|n| {
            let key = fold(n);
            let reason = if groups.contains_key(key.as_ref()) && !followed_keys.contains(key.as_ref()) {
                GoneReason::Untagged
            } else {
                GoneReason::Deregistered
            };
            (n.clone(), reason)
        })
        .collect::<Vec<_>>();
    let added: Vec<String> = now.keys().filter(|n| !before.contains_key(*n)).cloned().collect();
    let tagged = now.iter().filter(|(n, t)| before.get(*n) != Some(*t)).map(|(n, t)| (n.clone(), t.clone())).collect();
    let services = (first || !added.is_empty() || !gone.is_empty()).then(|| now.keys().cloned().collect());
    Change { services, added, tagged, gone }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries.iter().map(|(n, t)| (n.to_string(), t.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn rule() -> OptIn {
        OptIn::new("gateway", "urlprefix-").unwrap()
    }

    #[test]
    fn a_service_opts_in_by_the_exact_tag_or_the_prefix() {
        let r = rule();
        let opts_in = |tags: &[&str]| r.matches(strings(tags).iter());
        assert!(opts_in(&["gateway"]) && opts_in(&["x", "urlprefix-/x"]) && opts_in(&["urlprefix-"]));
        assert!(!opts_in(&[]) && !opts_in(&["Gateway"]) && !opts_in(&["gateway2"]) && !opts_in(&["x-urlprefix-/x"]));
        let tag_only = OptIn::new("gateway", "").unwrap();
        assert!(tag_only.matches(strings(&["gateway"]).iter()) && !tag_only.matches(strings(&["", "a"]).iter()));
        let prefix_only = OptIn::new("", "urlprefix-").unwrap();
        assert!(!prefix_only.matches(strings(&["gateway", ""]).iter()));
        assert_eq!(OptIn::new("", ""), None, "both disabled: no rule");
    }

    #[test]
    fn spellings_merge_under_the_smallest_and_static_names_win() {
        let mut f = Follower::new(strings(&["Api"]), rule());
        let c = f.answer(&catalog(&[
            ("billing", &["gateway", "v1"]),
            ("Billing", &["v2", "v1"]),
            ("BILLING", &[]),
            ("api", &["v3"]),
            ("API", &["gateway"]),
            ("plain", &["x"]),
        ]));
        // One group per folded name: `BILLING` < `Billing` < `billing` in byte order.
        let want: Set = [("Api", vec!["gateway", "v3"]), ("BILLING", vec!["gateway", "v1", "v2"])]
            .into_iter()
            .map(|(n, t)| (n.to_string(), strings(&t)))
            .collect();
        assert_eq!(f.current(), &want);
        assert_eq!(c.services, Some(strings(&["Api", "BILLING"])));
        assert_eq!(c.added, ["BILLING"], "Api was followed (statically) before the first answer");
        assert_eq!(c.tagged.len(), 2, "both have new tags");
        assert!(c.gone.is_empty());
    }

    #[test]
    fn static_services_are_followed_untagged_and_unregistered() {
        let mut f = Follower::new(strings(&["web", "Web"]), rule());
        let c = f.answer(&catalog(&[("WEB", &["a"])]));
        assert_eq!(c.services, Some(strings(&["Web", "web"])), "the first answer always lists the set");
        assert!(c.added.is_empty() && c.gone.is_empty());
        assert_eq!(c.tagged, [("Web".to_string(), strings(&["a"])), ("web".to_string(), strings(&["a"]))]);
        let c = f.answer(&catalog(&[]));
        assert_eq!((c.services, c.gone.len()), (None, 0), "static services never go");
        assert_eq!(f.current().get("web"), Some(&vec![]));
    }

    #[test]
    fn the_diff_names_what_came_what_went_and_why() {
        let mut f = Follower::new(vec![], rule());
        let c = f.answer(&catalog(&[("a", &["gateway"]), ("b", &["urlprefix-/b"]), ("c", &[]), ("d", &["gateway"])]));
        assert_eq!((c.services, c.added), (Some(strings(&["a", "b", "d"])), strings(&["a", "b", "d"])));
        // Nothing changed: nothing to do (not even the list).
        assert!(f
            .answer(&catalog(&[("a", &["gateway"]), ("b", &["urlprefix-/b"]), ("c", &[]), ("d", &["gateway"])]))
            .is_empty());
        // a loses its tag, b is deregistered, c opts in, d gains a tag.
        let c = f.answer(&catalog(&[("a", &["v1"]), ("c", &["gateway"]), ("d", &["gateway", "v2"])]));
        assert_eq!(c.services, Some(strings(&["c", "d"])));
        assert_eq!(c.added, ["c"]);
        assert_eq!(c.gone, [("a".to_string(), GoneReason::Untagged), ("b".to_string(), GoneReason::Deregistered)]);
        assert_eq!(
            c.tagged,
            [("c".to_string(), strings(&["gateway"])), ("d".to_string(), strings(&["gateway", "v2"]))]
        );
        // A tag change alone: no new list, the new tags.
        let c = f.answer(&catalog(&[("c", &["gateway"]), ("d", &["gateway"])]));
        assert_eq!((c.services, c.added.len(), c.gone.len()), (None, 0, 0));
        assert_eq!(c.tagged, [("d".to_string(), strings(&["gateway"]))]);
        // a comes back: followed again from scratch.
        let c = f.answer(&catalog(&[("a", &["gateway"]), ("c", &["gateway"]), ("d", &["gateway"])]));
        assert_eq!(c.added, ["a"]);
    }

    #[test]
    fn a_spelling_that_goes_while_another_stays_is_deregistered() {
        let mut f = Follower::new(vec![], rule());
        f.answer(&catalog(&[("Shop", &["gateway"]), ("shop", &[])]));
        assert!(f.current().contains_key("Shop"));
        // `Shop` deregistered; `shop` still opts in (now it has the tag): a new name.
        let c = f.answer(&catalog(&[("shop", &["gateway"])]));
        assert_eq!(c.gone, [("Shop".to_string(), GoneReason::Deregistered)]);
        assert_eq!(c.added, ["shop"]);
    }

    #[test]
    fn names_that_cannot_be_watched_are_not_followed() {
        let mut f = Follower::new(vec![], rule());
        let c = f.answer(&catalog(&[("a b", &["gateway"]), ("ok", &["gateway"])]));
        assert_eq!(c.services, Some(strings(&["ok"])));
    }
}
