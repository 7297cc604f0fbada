//! The Consul data the rest of the workspace uses, and the raw JSON shapes it comes from.
//!
//! [`Instance`] is the normalised form of one service instance, whichever endpoint it came from;
//! the raw shapes are private to this crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::HealthStatuses;

/// One instance of a service, as routed to: where it listens plus what identifies it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instance {
    /// The service ID (unique per agent).
    pub id: String,
    /// The node the instance is registered on.
    pub node: String,
    /// The address to connect to: the service address, or the node's when the service has none.
    pub address: String,
    /// The port to connect to.
    pub port: u16,
    /// The instance's effective weight, from the registration's `Weights` (Consul's default:
    /// 1 passing, 1 warning): on the health view, the warning weight when any of its checks (the
    /// node's or its own) is `warning`, else the passing weight; on the catalog view, the passing
    /// weight. Decodes as 1 when absent (a line from a writer older than weights).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The service tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The service metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    /// An instance with no tags or metadata.
    pub fn new(id: impl Into<String>, node: impl Into<String>, address: impl Into<String>, port: u16) -> Self {
        Self {
            id: id.into(),
            node: node.into(),
            address: address.into(),
            port,
            weight: DEFAULT_WEIGHT,
            tags: vec![],
            meta: BTreeMap::new(),
        }
    }

    /// `address:port`, with IPv6 addresses in brackets, as used in URLs and logs.
    pub fn authority(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// Consul's weight for an instance registered without `Weights`, passing or warning alike.
pub const DEFAULT_WEIGHT: u32 = 1;

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// A registration's `Weights` (`{"Passing":N,"Warning":M}`): how much traffic an instance takes
/// while its checks pass, and while one of them is `warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Weights {
    #[serde(default = "default_weight")]
    pub passing: u32,
    #[serde(default = "default_weight")]
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self { passing: DEFAULT_WEIGHT, warning: DEFAULT_WEIGHT }
    }
}

/// Sorts instances into a canonical order so that two reads of the same set compare equal.
pub fn canonical(mut instances: Vec<Instance>) -> Vec<Instance> {
    for i in &mut instances {
        i.tags.sort();
    }
    instances.sort();
    instances.dedup();
    instances
}

/// A service registration for `PUT /v1/agent/service/register`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentRegistration {
    /// Service ID, unique on the agent.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Address to advertise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port to advertise.
    pub port: u16,
    /// Metadata.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// The health check registered with the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<AgentCheck>,
}

/// A health check attached to a service registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentCheck {
    /// Check ID (defaults to `service:<id>` in Consul when empty).
    #[serde(rename = "CheckID", skip_serializing_if = "String::is_empty")]
    pub check_id: String,
    /// A TTL check: the owner must call `check/pass` before this elapses (e.g. `10s`).
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// An HTTP check URL.
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A TCP check `host:port`.
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// How often HTTP/TCP checks run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Timeout of one HTTP/TCP check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Consul removes the service after the check has been critical this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
    /// The initial status (`passing` makes a new instance routable at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// One entry of `/v1/health/service/<name>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthEntry {
    pub node: HealthNode,
    pub service: HealthService,
    #[serde(default)]
    pub checks: Option<Vec<EntryCheck>>,
}

impl HealthEntry {
    /// Whether the instance has a check of its own (not only the node's).
    pub fn has_service_check(&self) -> bool {
        self.checks.iter().flatten().any(|c| !c.service_id.is_empty() && c.service_id == self.service.id)
    }

    /// Whether every check on the instance (its node's and its own) is in `allowed`.
    pub fn routable(&self, allowed: HealthStatuses) -> bool {
        allowed.routable(self.checks.iter().flatten().map(|c| c.status.as_str()))
    }

    /// The weight Consul gives the instance in its current state: the warning weight when any
    /// of its checks (the node's or its own) is `warning`, else the passing weight. (A critical
    /// instance is not routed, so its weight does not matter.)
    pub fn weight(&self) -> u32 {
        let weights = self.service.weights.unwrap_or_default();
        if self.checks.iter().flatten().any(|c| c.status == "warning") {
            weights.warning
        } else {
            weights.passing
        }
    }
}

/// One check of a health entry: the node's checks and the instance's own.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EntryCheck {
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(default)]
    pub status: String,
}

/// One check of `/v1/health/state/any`: every check in the datacenter, node- or service-level.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckState {
    /// The node the check runs on.
    pub node: String,
    /// The check ID.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// The service instance it belongs to; empty for a node-level check.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// The service it belongs to; empty for a node-level check.
    #[serde(default)]
    pub service_name: String,
    /// Raft index of the check's last change.
    #[serde(default)]
    pub modify_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthNode {
    pub node: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthService {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub weights: Option<Weights>,
}

impl From<HealthEntry> for Instance {
    fn from(e: HealthEntry) -> Self {
        let weight = e.weight();
        let address = if e.service.address.is_empty() { e.node.address } else { e.service.address };
        Instance {
            id: e.service.id,
            node: e.node.node,
            address,
            port: e.service.port,
            weight,
            tags: e.service.tags.unwrap_or_default(),
            meta: e.service.meta.unwrap_or_default(),
        }
    }
}

/// One entry of `/v1/catalog/service/<name>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CatalogEntry {
    pub node: String,
    #[serde(default)]
    pub address: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(default)]
    pub service_address: String,
    pub service_port: u16,
    #[serde(default)]
    pub service_tags: Option<Vec<String>>,
    #[serde(default)]
    pub service_meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub service_weights: Option<Weights>,
}

impl From<CatalogEntry> for Instance {
    fn from(e: CatalogEntry) -> Self {
        let address = if e.service_address.is_empty() { e.address } else { e.service_address };
        Instance {
            id: e.service_id,
            node: e.node,
            address,
            port: e.service_port,
            // The catalog view ignores health, so the instance counts as passing.
            weight: e.service_weights.unwrap_or_default().passing,
            tags: e.service_tags.unwrap_or_default(),
            meta: e.service_meta.unwrap_or_default(),
        }
    }
}

/// One entry of `/v1/agent/services`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Service ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Metadata.
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// Address.
    #[serde(default)]
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from `consul agent -dev` 1.8.7: `/v1/health/service/web?passing`.
    const HEALTH: &str = r#"[{"Node":{"ID":"a1","Node":"dev","Address":"127.0.0.1","Datacenter":"dc1","TaggedAddresses":{"lan":"127.0.0.1"},"Meta":{"consul-network-segment":""},"CreateIndex":9,"ModifyIndex":10},
      "Service":{"ID":"web-1","Service":"web","Tags":["b","a"],"Address":"","Meta":null,"Port":3001,"Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"Proxy":{"MeshGateway":{},"Expose":{}},"Connect":{},"CreateIndex":20,"ModifyIndex":20},
      "Checks":[{"Node":"dev","CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing"}]},
     {"Node":{"ID":"a1","Node":"dev","Address":"127.0.0.1"},
      "Service":{"ID":"web-2","Service":"web","Tags":null,"Address":"10.0.0.2","Meta":{"v":"2"},"Port":3002},"Checks":[]}]"#;

    // Captured from `consul agent -dev` 1.8.7: `/v1/catalog/service/web`.
    const CATALOG: &str = r#"[{"ID":"a1","Node":"dev","Address":"127.0.0.1","Datacenter":"dc1","TaggedAddresses":{"lan":"127.0.0.1"},"NodeMeta":{},
      "ServiceKind":"","ServiceID":"web-1","ServiceName":"web","ServiceTags":[],"ServiceAddress":"","ServiceWeights":{"Passing":1,"Warning":1},
      "ServiceMeta":{},"ServicePort":3001,"ServiceEnableTagOverride":false,"CreateIndex":20,"ModifyIndex":20}]"#;

    #[test]
    fn health_entries_fall_back_to_the_node_address() {
        let entries: Vec<HealthEntry> = serde_json::from_str(HEALTH).unwrap();
        assert!(entries.iter().all(|e| !e.has_service_check()), "serfHealth is the node's, not web-1's");
        let got = canonical(entries.into_iter().map(Instance::from).collect());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].authority(), "127.0.0.1:3001");
        assert_eq!(got[0].tags, vec!["a", "b"]);
        assert_eq!(got[1].authority(), "10.0.0.2:3002");
        assert_eq!(got[1].meta.get("v").map(String::as_str), Some("2"));
    }

    // Shaped like `consul agent -dev` 1.8.7's `/v1/health/service/web` (no `?passing`): a
    // service in warning, one in service maintenance, one on a node in maintenance.
    const CHECKED: &str = r#"[
      {"Node":{"Node":"a","Address":"10.0.0.1"},"Service":{"ID":"w","Service":"Web","Port":1},
       "Checks":[{"CheckID":"serfHealth","Status":"passing","ServiceID":""},{"CheckID":"service:w","Status":"warning","ServiceID":"w"}]},
      {"Node":{"Node":"a","Address":"10.0.0.1"},"Service":{"ID":"m","Service":"web","Port":2},
       "Checks":[{"CheckID":"serfHealth","Status":"passing","ServiceID":""},{"CheckID":"_service_maintenance:m","Status":"critical","ServiceID":"m"}]},
      {"Node":{"Node":"b","Address":"10.0.0.2"},"Service":{"ID":"n","Service":"web","Port":3},
       "Checks":[{"CheckID":"_node_maintenance","Status":"critical","ServiceID":""},{"CheckID":"service:n","Status":"passing","ServiceID":"n"}]},
      {"Node":{"Node":"b","Address":"10.0.0.2"},"Service":{"ID":"p","Service":"WEB","Port":4},"Checks":[]}]"#;

    #[test]
    fn every_check_of_node_and_instance_decides_routability() {
        let entries: Vec<HealthEntry> = serde_json::from_str(CHECKED).unwrap();
        let ids = |allowed: HealthStatuses| -> Vec<&str> {
            entries.iter().filter(|e| e.routable(allowed)).map(|e| e.service.id.as_str()).collect()
        };
        assert_eq!(ids(HealthStatuses::PASSING), ["p"]);
        assert_eq!(ids(HealthStatuses::PASSING_WARNING), ["w", "p"]);
    }

    #[test]
    fn catalog_entries_fall_back_to_the_node_address() {
        let entries: Vec<CatalogEntry> = serde_json::from_str(CATALOG).unwrap();
        let got: Vec<Instance> = entries.into_iter().map(Instance::from).collect();
        assert_eq!(got[0].authority(), "127.0.0.1:3001");
        assert_eq!(got[0].id, "web-1");
    }

    // Shaped like `consul agent -dev` 1.8.7's `/v1/health/service/web`: `Weights` as registered
    // (`{"Passing":5,"Warning":1}`), or left out (Consul's default, 1 and 1).
    const WEIGHTED: &str = r#"[
      {"Node":{"Node":"a","Address":"10.0.0.1"},"Service":{"ID":"ok","Service":"web","Port":1,"Weights":{"Passing":5,"Warning":1}},
       "Checks":[{"CheckID":"serfHealth","Status":"passing","ServiceID":""},{"CheckID":"service:ok","Status":"passing","ServiceID":"ok"}]},
      {"Node":{"Node":"a","Address":"10.0.0.1"},"Service":{"ID":"warn","Service":"web","Port":2,"Weights":{"Passing":5,"Warning":2}},
       "Checks":[{"CheckID":"serfHealth","Status":"passing","ServiceID":""},{"CheckID":"service:warn","Status":"warning","ServiceID":"warn"}]},
      {"Node":{"Node":"b","Address":"10.0.0.2"},"Service":{"ID":"nodewarn","Service":"web","Port":3,"Weights":{"Passing":7,"Warning":0}},
       "Checks":[{"CheckID":"node-ttl","Status":"warning","ServiceID":""}]},
      {"Node":{"Node":"b","Address":"10.0.0.2"},"Service":{"ID":"plain","Service":"web","Port":4,"Weights":null},"Checks":[]}]"#;

    #[test]
    fn the_health_view_weighs_by_the_worst_check() {
        let entries: Vec<HealthEntry> = serde_json::from_str(WEIGHTED).unwrap();
        let got: Vec<(String, u32)> = entries.into_iter().map(Instance::from).map(|i| (i.id, i.weight)).collect();
        let want = [("ok", 5), ("warn", 2), ("nodewarn", 0), ("plain", 1)];
        assert_eq!(got, want.map(|(id, w)| (id.to_string(), w)));
    }

    #[test]
    fn the_catalog_view_takes_the_passing_weight() {
        let entries: Vec<CatalogEntry> =
            serde_json::from_str(&CATALOG.replace(r#""Passing":1,"Warning":1"#, r#""Passing":5,"Warning":2"#)).unwrap();
        assert_eq!(Instance::from(entries.into_iter().next().unwrap()).weight, 5);
        let bare = r#"[{"Node":"n","ServiceID":"x","ServicePort":1}]"#;
        let entries: Vec<CatalogEntry> = serde_json::from_str(bare).unwrap();
        assert_eq!(Instance::from(entries.into_iter().next().unwrap()).weight, DEFAULT_WEIGHT);
    }

    #[test]
    fn a_weight_change_is_a_change_and_an_old_line_decodes_with_weight_one() {
        let heavy = Instance { weight: 5, ..sample() };
        assert_ne!(canonical(vec![heavy.clone()]), canonical(vec![sample()]));
        let old: Instance =
            serde_json::from_str(r#"{"id":"x","node":"n","address":"127.0.0.1","port":1,"tags":[],"meta":{}}"#)
                .unwrap();
        assert_eq!(old, sample());
        let back: Instance = serde_json::from_str(&serde_json::to_string(&heavy).unwrap()).unwrap();
        assert_eq!(back.weight, 5);
    }

    #[test]
    fn ipv6_authority_is_bracketed() {
        let i = Instance { address: "::1".into(), port: 80, ..sample() };
        assert_eq!(i.authority(), "[::1]:80");
    }

    #[test]
    fn canonical_order_ignores_read_order() {
        let a = Instance { id: "a".into(), ..sample() };
        let b = Instance { id: "b".into(), ..sample() };
        assert_eq!(canonical(vec![b.clone(), a.clone()]), canonical(vec![a, b]));
    }

    #[test]
    fn registration_serialises_as_consul_expects() {
        let reg = AgentRegistration {
            id: "web-1".into(),
            name: "web".into(),
            port: 3001,
            check: Some(AgentCheck { ttl: Some("10s".into()), status: Some("passing".into()), ..Default::default() }),
            ..Default::default()
        };
        let v = serde_json::to_value(&reg).unwrap();
        assert_eq!(v["ID"], "web-1");
        assert_eq!(v["Check"]["TTL"], "10s");
        assert_eq!(v["Check"]["Status"], "passing");
        assert!(v.get("Tags").is_none());
    }

    fn sample() -> Instance {
        Instance::new("x", "n", "127.0.0.1", 1)
    }
}
