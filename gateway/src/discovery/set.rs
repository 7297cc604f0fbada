//! One service's current instances, as the request path uses them: its endpoints, and for each of
//! its routes the candidates to pick from (and the canary side of a split), worked out once per
//! change rather than per request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use consul::Instance;
use tracing::warn;

use super::tag::{self, Sticky, Tag, TagRules};
use crate::proxy::balancer::{Candidates, Endpoint};

/// Where a service's current set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A watcher snapshot.
    Watcher,
    /// A direct Consul read before the watcher delivered.
    Direct,
}

/// Where one route sends: its candidates, and the canary side if it splits traffic.
#[derive(Debug, Default)]
pub struct Choice {
    /// The instances that get the traffic (all but the canaries when the route splits).
    pub main: Candidates,
    /// The canary side of a split route.
    pub split: Option<SplitChoice>,
}

/// The canary side of a route: the instances with the split's tag and their share of clients.
#[derive(Debug)]
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

/// One service's current endpoints.
#[derive(Debug)]
pub struct ServiceSet {
    /// The endpoints, in canonical order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The service's tags as the catalog reports them (over every registered instance).
    pub tags: Vec<String>,
    /// Consul's index the set was read at.
    pub index: u64,
    /// When the set last changed.
    pub changed_at: SystemTime,
    /// Where it came from.
    pub origin: Origin,
    /// Per route (`None`: the name route; `Some(tag)`: the route that tag declares).
    choices: Vec<(Option<String>, Choice)>,
}

impl ServiceSet {
    /// A set of `instances`. Endpoints of `previous` for instances that did not change are kept,
    /// and with them their idle connections and ejection state.
    pub fn new(
        service: &str,
        instances: Vec<Instance>,
        tags: Vec<String>,
        index: u64,
        origin: Origin,
        previous: Option<&ServiceSet>,
        rules: &TagRules,
    ) -> Self {
        let previous: HashMap<(&str, &str), &Arc<Endpoint>> = previous
            .map(|p| p.endpoints.iter().map(|e| ((e.instance.node.as_str(), e.instance.id.as_str()), e)).collect())
            .unwrap_or_default();
        let kept = |i: &Instance| {
            previous.get(&(i.node.as_str(), i.id.as_str())).filter(|e| &e.instance == i).map(|e| Arc::clone(e))
        };
        let endpoints: Vec<Arc<Endpoint>> = instances
            .into_iter()
            .filter_map(|i| {
                if let Some(e) = kept(&i) {
                    return Some(e);
                }
                let shown = i.authority();
                let e = Endpoint::new(i);
                if e.is_none() {
                    warn!(service, instance = %shown, "ignoring an instance whose address is not usable in a URL");
                }
                e.map(Arc::new)
            })
            .collect();
        let choices = choices(&endpoints, &tags, rules);
        Self { endpoints, tags, index, changed_at: SystemTime::now(), origin, choices }
    }

    /// The same set read at a later index.
    pub fn refreshed(&self, index: u64) -> Self {
        let choices = self.choices.iter().map(|(k, c)| (k.clone(), c.clone_shallow())).collect();
        Self {
            endpoints: self.endpoints.clone(),
            tags: self.tags.clone(),
            index,
            changed_at: self.changed_at,
            origin: Origin::Watcher,
            choices,
        }
    }

    /// Where the route declared by `tag` (`None`: the name route) sends.
    pub fn candidates(&self, tag: Option<&str>) -> Option<&Choice> {
        self.choices.iter().find(|(k, _)| k.as_deref() == tag).map(|(_, c)| c)
    }

    /// The `address:port` of every endpoint.
    pub fn authorities(&self) -> BTreeSet<String> {
        self.endpoints.iter().map(|e| e.instance.authority()).collect()
    }

    /// Whether `other` holds exactly these instances.
    pub fn same_instances(&self, other: &[Instance]) -> bool {
        self.endpoints.len() == other.len() && self.endpoints.iter().zip(other).all(|(e, i)| &e.instance == i)
    }
}

impl Choice {
    fn clone_shallow(&self) -> Self {
        Self {
            main: self.main.clone(),
            split: self.split.as_ref().map(|s| SplitChoice {
                canary: s.canary.clone(),
                percent: s.percent,
                sticky: s.sticky,
            }),
        }
    }
}

/// The name route sends to every endpoint; a declared route to those whose own tags carry the
/// declaring tag (as in Fabio), its canaries split off by the split tag.
fn choices(endpoints: &[Arc<Endpoint>], tags: &[String], rules: &TagRules) -> Vec<(Option<String>, Choice)> {
    let mut out = vec![(None, Choice { main: Candidates::new(endpoints.to_vec()), split: None })];
    for t in tags {
        let Tag::Declared(body) = rules.classify(t) else { continue };
        let Ok(spec) = tag::parse(body) else { continue };
        let carrying: Vec<Arc<Endpoint>> =
            endpoints.iter().filter(|e| e.instance.tags.iter().any(|it| it == t)).cloned().collect();
        let choice = match spec.split {
            None => Choice { main: Candidates::new(carrying), split: None },
            Some(split) => {
                let (canary, main): (Vec<_>, Vec<_>) =
                    carrying.into_iter().partition(|e| e.instance.tags.contains(&split.tag));
                Choice {
                    main: Candidates::new(main),
                    split: Some(SplitChoice {
                        canary: Candidates::new(canary),
                        percent: split.percent,
                        sticky: split.sticky,
                    }),
                }
            }
        };
        out.push((Some(t.clone()), choice));
    }
    out
}
