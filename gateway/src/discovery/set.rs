//! One service's current instances, as the request path uses them: its endpoints, and for each of
//! its routes the candidates to pick from (and the canary side of a split), worked out once per
//! change rather than per request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use consul::Instance;
use tracing::warn;

use super::tag::{self, Protocol, RouteSpec, Sticky, Tag, TagRules};
use crate::proxy::balancer::{Candidates, Endpoint};

/// Where a service's current set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A watcher snapshot.
    Watcher,
    /// A direct Consul read before the watcher delivered.
    Direct,
    /// The state file read at start (`--state-file`), not yet replaced by a watcher snapshot.
    StateFile,
}

/// Where one route sends: its candidates, and the canary side if it splits traffic.
#[derive(Debug, Default, Clone)]
pub struct Choice {
    /// The instances that get the traffic (all but the canaries when the route splits).
    pub main: Candidates,
    /// The canary side of a split route.
    pub split: Option<SplitChoice>,
    /// The route's `proto=`: HTTP/2 cleartext to every instance when [`Protocol::H2c`]; with
    /// HTTP/1.1 an instance's own `gateway-protocol` metadata decides
    /// ([`Endpoint::protocol`]).
    pub protocol: Protocol,
}

/// The canary side of a route: the instances with the split's tag and their share of clients.
#[derive(Debug, Clone)]
pub struct SplitChoice {
    /// The instances carrying the split tag.
    pub canary: Candidates,
    /// Percent of clients sent to them.
    pub percent: u8,
    /// How a client keeps its side.
    pub sticky: Sticky,
}

impl Choice {
    /// How many instances the route may send to.
    pub fn count(&self) -> usize {
        self.main.len() + self.split.as_ref().map_or(0, |s| s.canary.len())
    }
}

/// What one read of a service returned.
#[derive(Debug)]
pub struct Read {
    /// The instances, in canonical order.
    pub instances: Vec<Instance>,
    /// The service's catalog tags (empty from a direct read).
    pub tags: Vec<String>,
    /// Consul's index.
    pub index: u64,
    /// Where it came from.
    pub origin: Origin,
}

/// One service's current endpoints.
#[derive(Debug, Clone)]
pub struct ServiceSet {
    /// The endpoints, in canonical order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// When each endpoint joined the set (in the order of `endpoints`): carried over from the
    /// previous set for the same instance (node, ID, address and port), even when its weight, tags
    /// or metadata changed; the time of this set's read for a new one. For the status page.
    pub since: Vec<SystemTime>,
    /// The service's tags as the catalog reports them (over every registered instance).
    pub tags: Vec<String>,
    /// The tags its routes come from (see [`declaring`]).
    pub declaring: Vec<String>,
    /// Whether the opt-in tag names it (in the catalog, or on a routable instance).
    pub named_by_tag: bool,
    /// Each declaring tag that declares a route (`urlprefix-...`), parsed once: the route, or
    /// why it cannot be one.
    pub declared: Vec<(String, Result<RouteSpec, String>)>,
    /// Consul's index the set was read at.
    pub index: u64,
    /// When the set last changed.
    pub changed_at: SystemTime,
    /// Where it came from.
    pub origin: Origin,
    /// Per route (`None`: the name route; `Some(tag)`: the route that tag declares).
    choices: Vec<(Option<String>, Choice)>,
    /// Instances left out for a `gateway-protocol` value the gateway does not know (logged once
    /// each: a later set does not log them again while they stay the same).
    pub skipped: Vec<Instance>,
}

impl ServiceSet {
    /// A set of `instances`. Endpoints of `previous` for instances that did not change are kept,
    /// and with them their idle connections and ejection state; new ones keep idle connections
    /// apart for `workers` threads. Each endpoint's [`since`](Self::since) is carried over from
    /// `previous` when it held the same instance at the same address.
    pub fn new(service: &str, read: Read, previous: Option<&ServiceSet>, rules: &TagRules, workers: usize) -> Self {
        let Read { instances, tags, index, origin } = read;
        let previous_set = previous;
        let previous: HashMap<(&str, &str), &Arc<Endpoint>> = previous
            .map(|p| p.endpoints.iter().map(|e| ((e.instance.node.as_str(), e.instance.id.as_str()), e)).collect())
            .unwrap_or_default();
        let now = SystemTime::now();
        let joined: HashMap<(&str, &str, &str, u16), SystemTime> = previous_set
            .map(|p| {
                p.endpoints
                    .iter()
                    .zip(&p.since)
                    .map(|(e, t)| {
                        let i = &e.instance;
                        ((i.node.as_str(), i.id.as_str(), i.address.as_str(), i.port), *t)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let kept = |i: &Instance| {
            previous.get(&(i.node.as_str(), i.id.as_str())).filter(|e| &e.instance == i).map(|e| Arc::clone(e))
        };
        let skipped_before = previous_set.map_or(&[][..], |p| p.skipped.as_slice());
        let mut skipped = Vec::new();
        let endpoints: Vec<Arc<Endpoint>> = instances
            .into_iter()
            .filter_map(|i| {
                if let Some(e) = kept(&i) {
                    return Some(e);
                }
                // An unknown protocol is not guessed: HTTP/1.1 to an instance that asked for
                // something else would fail in ways that look like the instance's fault.
                if let Err(value) = tag::protocol_meta(&i.meta) {
                    if !skipped_before.contains(&i) {
                        warn!(service, instance = ?i.authority(), value = %value, "skipping an instance whose `{}` metadata is not h2c, grpc or http", tag::PROTOCOL_META);
                    }
                    skipped.push(i);
                    return None;
                }
                // Debug-formatted in the log: an address is Consul's text, and a newline in it
                // must not start a log line of its own.
                let shown = i.authority();
                let e = Endpoint::new(i, workers);
                if e.is_none() {
                    warn!(service, instance = ?shown, "ignoring an instance whose address is not usable in a URL");
                }
                e.map(Arc::new)
            })
            .collect();
        let since = endpoints
            .iter()
            .map(|e| {
                let i = &e.instance;
                joined.get(&(i.node.as_str(), i.id.as_str(), i.address.as_str(), i.port)).copied().unwrap_or(now)
            })
            .collect();
        let declaring = declaring(&endpoints, &tags);
        let named_by_tag = tags.iter().chain(&declaring).any(|t| rules.classify(t) == Tag::NameRoute);
        let declared: Vec<(String, Result<RouteSpec, String>)> = declaring
            .iter()
            .filter_map(|t| match rules.classify(t) {
                Tag::Declared(body) => Some((t.clone(), tag::parse(body).map_err(|e| e.to_string()))),
                _ => None,
            })
            .collect();
        let choices = choices(&endpoints, &declared);
        let changed_at = now;
        Self { endpoints, since, tags, declaring, named_by_tag, declared, index, changed_at, origin, choices, skipped }
    }

    /// The same set read at a later index.
    pub fn refreshed(&self, index: u64) -> Self {
        Self { index, origin: Origin::Watcher, ..self.clone() }
    }

    /// Where the route declared by `tag` (`None`: the name route) sends.
    pub fn candidates(&self, tag: Option<&str>) -> Option<&Choice> {
        self.choices.iter().find(|(k, _)| k.as_deref() == tag).map(|(_, c)| c)
    }

    /// The `address:port` of every endpoint.
    pub fn authorities(&self) -> BTreeSet<String> {
        self.endpoints.iter().map(|e| e.instance.authority()).collect()
    }

    /// Whether `other` holds exactly these instances (the skipped ones included).
    pub fn same_instances(&self, other: &[Instance]) -> bool {
        if self.skipped.is_empty() {
            return self.endpoints.len() == other.len()
                && self.endpoints.iter().zip(other).all(|(e, i)| &e.instance == i);
        }
        // Both are in `other`'s (canonical) order.
        let (mut endpoints, mut skipped) = (self.endpoints.iter().peekable(), self.skipped.iter().peekable());
        self.endpoints.len() + self.skipped.len() == other.len()
            && other
                .iter()
                .all(|i| endpoints.next_if(|e| &e.instance == i).is_some() || skipped.next_if(|s| *s == i).is_some())
    }
}

/// The change line users watch: `service-web: 3 -> 2 instances, removed 127.0.0.1:3001`, or
/// `None` when no instance came, went or changed.
pub fn change_line(service: &str, old: Option<&ServiceSet>, new: &ServiceSet) -> Option<String> {
    let before = old.map(ServiceSet::authorities).unwrap_or_default();
    let after = new.authorities();
    let added: Vec<&String> = after.difference(&before).collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    // Same address, something else changed (tags, weight, metadata).
    let changed: Vec<String> = match old {
        Some(old) => {
            let before: HashMap<String, &Instance> =
                old.endpoints.iter().map(|e| (e.instance.authority(), &e.instance)).collect();
            let mut v: Vec<String> = new
                .endpoints
                .iter()
                .filter(|e| before.get(&e.instance.authority()).is_some_and(|i| **i != e.instance))
                .map(|e| e.instance.authority())
                .collect();
            v.sort();
            v
        }
        None => Vec::new(),
    };
    let changed: Vec<&String> = changed.iter().collect();
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        return None;
    }
    let mut line = format!("{service}: {} -> {} instances", old.map_or(0, |o| o.endpoints.len()), new.endpoints.len());
    for (label, list) in [("added", &added), ("removed", &removed), ("changed", &changed)] {
        if !list.is_empty() {
            line.push_str(&format!(", {label} {}", list.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")));
        }
    }
    Some(line)
}

/// The tags a service's routes come from: the catalog's (every registered instance's, so a route
/// whose instances all fail answers 503 rather than falling through to a shorter route) — unless
/// a routable instance carries a tag the catalog does not list. The catalog and the instances
/// were then read at different moments of a tag change, and the instances' own tags are used, so
/// routes and instances agree (no route without the instances that declare it).
fn declaring(endpoints: &[Arc<Endpoint>], catalog: &[String]) -> Vec<String> {
    let mut own: Vec<String> = endpoints.iter().flat_map(|e| e.instance.tags.iter().cloned()).collect();
    own.sort();
    own.dedup();
    if own.iter().all(|t| catalog.binary_search(t).is_ok()) {
        catalog.to_vec()
    } else {
        own
    }
}

/// The name route sends to every endpoint; a declared route to those whose own tags carry the
/// declaring tag (as in Fabio), its canaries split off by the split tag.
fn choices(
    endpoints: &[Arc<Endpoint>],
    declared: &[(String, Result<RouteSpec, String>)],
) -> Vec<(Option<String>, Choice)> {
    let mut out = vec![(None, Choice { main: Candidates::new(endpoints.to_vec()), ..Choice::default() })];
    for (t, spec) in declared {
        let Ok(spec) = spec else { continue };
        let carrying: Vec<Arc<Endpoint>> =
            endpoints.iter().filter(|e| e.instance.tags.iter().any(|it| it == t)).cloned().collect();
        let choice = match &spec.split {
            None => Choice {
                main: Candidates::new(carrying).with_policy(spec.balance),
                split: None,
                protocol: spec.protocol,
            },
            Some(split) => {
                let (canary, main): (Vec<_>, Vec<_>) =
                    carrying.into_iter().partition(|e| e.instance.tags.contains(&split.tag));
                Choice {
                    main: Candidates::new(main).with_policy(spec.balance),
                    split: Some(SplitChoice {
                        canary: Candidates::new(canary).with_policy(spec.balance),
                        percent: split.percent,
                        sticky: split.sticky,
                    }),
                    protocol: spec.protocol,
                }
            }
        };
        out.push((Some(t.clone()), choice));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(instances: Vec<Instance>) -> Read {
        Read { instances, tags: vec![], index: 1, origin: Origin::Watcher }
    }

    #[test]
    fn since_is_carried_over_for_the_same_instance() {
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let a = Instance::new("a", "n1", "127.0.0.1", 1001);
        let b = Instance::new("b", "n1", "127.0.0.1", 1002);
        let first = ServiceSet::new("web", read(vec![a.clone(), b.clone()]), None, &rules, 1);
        assert_eq!(first.since.len(), 2);
        std::thread::sleep(std::time::Duration::from_millis(5));

        // `a` stays (with a new weight), `b` moves to another port, `c` is new.
        let heavier = Instance { weight: 5, ..a.clone() };
        let moved = Instance::new("b", "n1", "127.0.0.1", 2002);
        let c = Instance::new("c", "n1", "127.0.0.1", 1003);
        let second = ServiceSet::new("web", read(vec![heavier, moved, c]), Some(&first), &rules, 1);
        assert_eq!(second.since.len(), second.endpoints.len());
        assert_eq!(second.since[0], first.since[0], "a weight change keeps since");
        assert!(second.since[1] > first.since[1], "a new address is a new instance");
        assert_eq!(second.since[2], second.changed_at);
        assert_eq!(second.refreshed(7).since, second.since);
    }
}
