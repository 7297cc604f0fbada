//! Cluster-wide reads that let one watcher follow many services over few connections:
//! `/v1/health/state/any` (every check, with its `ModifyIndex`) and `/v1/catalog/services`
//! (every service name with its tags). Both are blocking queries like the per-service reads.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;

use crate::client::{decode, Client};
use crate::index;
use crate::model::{AgentService, CheckState, Instance};
use crate::Error;

/// A cluster-wide answer and the `X-Consul-Index` it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed<T> {
    /// `X-Consul-Index` of the answer.
    pub index: u64,
    /// The data.
    pub value: T,
}

impl Client {
    /// Every check in the datacenter. With `index > 0`, a blocking query.
    pub async fn health_state_any(&self, index: u64, wait: Duration) -> Result<Indexed<Vec<CheckState>>, Error> {
        self.indexed_get("/v1/health/state/any", index, wait).await
    }

    /// Every service name with its tags. With `index > 0`, a blocking query.
    pub async fn catalog_services(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<BTreeMap<String, Vec<String>>>, Error> {
        let mut r: Indexed<BTreeMap<String, Option<Vec<String>>>> =
            self.indexed_get("/v1/catalog/services", index, wait).await?;
        let value = std::mem::take(&mut r.value)
            .into_iter()
            .map(|(name, tags)| {
                let mut tags = tags.unwrap_or_default();
                tags.sort();
                (name, tags)
            })
            .collect();
        Ok(Indexed { index: r.index, value })
    }

    /// The names of every node in the catalog.
    pub async fn catalog_nodes(&self) -> Result<Vec<String>, Error> {
        let r: Indexed<Vec<NodeName>> = self.indexed_get("/v1/catalog/nodes", 0, Duration::ZERO).await?;
        Ok(r.value.into_iter().map(|n| n.node).collect())
    }

    /// Every service instance registered on `node`, with its service name.
    pub async fn catalog_node(&self, node: &str) -> Result<Vec<(String, Instance)>, Error> {
        let endpoint = format!("/v1/catalog/node/{}", crate::client::path_segment(node));
        // A node that went away between the two calls answers `null`.
        let r: Indexed<Option<NodeServices>> = self.indexed_get(&endpoint, 0, Duration::ZERO).await?;
        let Some(ns) = r.value else { return Ok(Vec::new()) };
        let node_addr = ns.node.address;
        Ok(ns
            .services
            .unwrap_or_default()
            .into_values()
            .map(|s| {
                let address = if s.address.is_empty() { node_addr.clone() } else { s.address };
                let inst = Instance {
                    id: s.id,
                    node: node.to_string(),
                    address,
                    port: s.port,
                    tags: s.tags.unwrap_or_default(),
                    meta: s.meta.unwrap_or_default(),
                };
                (s.service, inst)
            })
            .collect())
    }

    async fn indexed_get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<T>, Error> {
        let mut url = self.url(endpoint);
        let timeout = if index > 0 {
            url.query_pairs_mut()
                .append_pair("index", &index.to_string())
                .append_pair("wait", &index::wait_param(wait));
            index::request_timeout(wait)
        } else {
            Duration::from_secs(30)
        };
        let resp = self.send(endpoint, self.request(Method::GET, url).timeout(timeout)).await?;
        let index = crate::client::consul_index(&resp);
        Ok(Indexed { index, value: decode(endpoint, resp).await? })
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeName {
    node: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServices {
    node: NodeAddress,
    #[serde(default)]
    services: Option<BTreeMap<String, AgentService>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeAddress {
    #[serde(default)]
    address: String,
}

#[cfg(test)]
mod tests {
    use super::NodeServices;
    use crate::model::CheckState;

    // Captured from `consul agent -dev` 1.8.7: `/v1/catalog/node/dev`.
    const NODE: &str = r#"{"Node":{"ID":"a1","Node":"dev","Address":"127.0.0.1","Datacenter":"dc1","TaggedAddresses":{},"Meta":{},"CreateIndex":9,"ModifyIndex":10},
      "Services":{"consul":{"ID":"consul","Service":"consul","Tags":[],"Address":"","Meta":{"raft_version":"3"},"Port":8300,"Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"CreateIndex":11,"ModifyIndex":11},
                  "web-1":{"ID":"web-1","Service":"web","Tags":null,"Address":"10.0.0.5","Meta":null,"Port":3001,"CreateIndex":20,"ModifyIndex":20}}}"#;

    #[test]
    fn node_services_parse_with_the_node_address_as_fallback() {
        let ns: NodeServices = serde_json::from_str(NODE).unwrap();
        assert_eq!(ns.node.address, "127.0.0.1");
        let services = ns.services.unwrap();
        assert_eq!(services["web-1"].address, "10.0.0.5");
        assert_eq!(services["consul"].port, 8300);
        assert!(serde_json::from_str::<Option<NodeServices>>("null").unwrap().is_none());
    }

    // Captured from `consul agent -dev` 1.8.7: `/v1/health/state/any`.
    const STATE: &str = r#"[{"Node":"dev","CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing","Notes":"","Output":"Agent alive and reachable","ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"","Definition":{},"CreateIndex":10,"ModifyIndex":10},
      {"Node":"dev","CheckID":"service:web-1","Name":"Service 'web' check","Status":"critical","Notes":"","Output":"TTL expired","ServiceID":"web-1","ServiceName":"web","ServiceTags":[],"Type":"ttl","Definition":{},"CreateIndex":20,"ModifyIndex":31}]"#;

    #[test]
    fn checks_parse_with_their_service_and_index() {
        let checks: Vec<CheckState> = serde_json::from_str(STATE).unwrap();
        assert_eq!(checks[0].service_name, "");
        assert_eq!(
            (checks[1].service_name.as_str(), checks[1].status.as_str(), checks[1].modify_index),
            ("web", "critical", 31)
        );
    }
}
