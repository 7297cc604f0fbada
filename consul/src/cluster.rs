//! Cluster-wide reads that let one watcher follow many services over few connections:
//! `/v1/health/state/any` (every check, with its `ModifyIndex`), `/v1/catalog/services`
//! (every service name with its tags) and `/v1/catalog/node/<n>` (every registration on one
//! node, fingerprinted). All can be blocking queries like the per-service reads.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use reqwest::Method;
use serde_json::value::RawValue;

use crate::client::{decode, Client};
use crate::index;
use crate::model::CheckState;
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
    ///
    /// # Errors
    /// As every read; and [`Error::Filtered`] for an answer without any service: every cluster
    /// has the `consul` service, so an empty answer says the ACL token may read none.
    pub async fn catalog_services(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<BTreeMap<String, Vec<String>>>, Error> {
        let mut r: Indexed<BTreeMap<String, Option<Vec<String>>>> =
            self.indexed_get("/v1/catalog/services", index, wait).await?;
        let value: BTreeMap<String, Vec<String>> = std::mem::take(&mut r.value)
            .into_iter()
            .map(|(name, tags)| {
                let mut tags = tags.unwrap_or_default();
                tags.sort();
                (name, tags)
            })
            .collect();
        if value.is_empty() {
            return Err(Error::Filtered {
                endpoint: "/v1/catalog/services".into(),
                what: "service",
                token: self.has_token(),
            });
        }
        Ok(Indexed { index: r.index, value })
    }

    /// Checks that the ACL token can read nodes, which the health reads need: without
    /// `node:read`, `/v1/health/service/<s>` answers an empty list for every service.
    ///
    /// # Errors
    /// As every read; and [`Error::Filtered`] when `/v1/catalog/nodes` is empty (a running
    /// cluster always has a node: the one that answers).
    pub async fn check_node_read(&self) -> Result<(), Error> {
        if self.catalog_nodes().await?.is_empty() {
            return Err(Error::Filtered {
                endpoint: "/v1/catalog/nodes".into(),
                what: "node",
                token: self.has_token(),
            });
        }
        Ok(())
    }

    /// Checks that the ACL token can still read the catalog: some service
    /// ([`Client::catalog_services`], non-blocking) and some node ([`Client::check_node_read`]).
    /// For a watcher to tell an answer the ACLs emptied (Consul 1.8 answers `200 []`, not 403,
    /// once a token loses its read permission, or when ACLs are turned on under it) from a
    /// service that really lost every instance.
    ///
    /// # Errors
    /// As every read; [`Error::Filtered`] when the token can read no service or no node.
    pub async fn check_readable(&self) -> Result<(), Error> {
        self.catalog_services(0, Duration::ZERO).await?;
        self.check_node_read().await
    }

    /// The names of every node in the catalog.
    pub async fn catalog_nodes(&self) -> Result<Vec<String>, Error> {
        let r: Indexed<Vec<NodeName>> = self.indexed_get("/v1/catalog/nodes", 0, Duration::ZERO).await?;
        Ok(r.value.into_iter().map(|n| n.node).collect())
    }

    /// A fingerprint of every service registration on `node`, with its service name.
    ///
    /// A fingerprint hashes the registration exactly as Consul sends it (including its
    /// `ModifyIndex`) together with the node's address (an instance without an address of its
    /// own takes the node's), so any change to what a watcher reads from that instance changes
    /// it. Hashing the raw JSON instead of decoding every field keeps a scan of a large catalog
    /// cheap: each node answer holds every registration on that node.
    ///
    /// With `index > 0`, a blocking query that returns when a registration on *that node*
    /// changes (its `X-Consul-Index` is the catalog-wide one, though).
    pub async fn catalog_node_prints(
        &self,
        node: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<Vec<(String, u64)>>, Error> {
        let endpoint = format!("/v1/catalog/node/{}", crate::client::path_segment(node));
        let resp = self.indexed_send(&endpoint, index, wait).await?;
        let index = crate::client::consul_index(&resp);
        let bytes = resp.bytes().await.map_err(|source| Error::Transport {
            endpoint: endpoint.clone(),
            source: source.without_url(),
            hint: "",
        })?;
        let value = node_prints(&bytes).map_err(|e| Error::Decode { endpoint, why: e.to_string() })?;
        Ok(Indexed { index, value })
    }

    async fn indexed_get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<T>, Error> {
        let resp = self.indexed_send(endpoint, index, wait).await?;
        let index = crate::client::consul_index(&resp);
        Ok(Indexed { index, value: decode(endpoint, resp).await? })
    }

    /// A GET of `endpoint`; with `index > 0` a blocking query (and a timeout longer than `wait`).
    async fn indexed_send(&self, endpoint: &str, index: u64, wait: Duration) -> Result<reqwest::Response, Error> {
        let mut url = self.read_url(endpoint);
        let timeout = if index > 0 {
            url.query_pairs_mut()
                .append_pair("index", &index.to_string())
                .append_pair("wait", &index::wait_param(wait));
            index::request_timeout(wait)
        } else {
            Duration::from_secs(30)
        };
        self.send(endpoint, self.request(Method::GET, url).timeout(timeout)).await
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeName {
    node: String,
}

/// `/v1/catalog/node/<n>`, borrowed: each registration stays raw JSON. A node that went away
/// between listing the nodes and reading it answers `null`. Registrations by ID in a `BTreeMap`,
/// so the prints come out, and a bad registration is reported, in one order (a `HashMap` visited
/// them in a random order: found by the `consul_model` fuzz target).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeServices<'a> {
    #[serde(borrow)]
    node: RawNodeAddress<'a>,
    #[serde(borrow, default)]
    services: Option<BTreeMap<Cow<'a, str>, &'a RawValue>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNodeAddress<'a> {
    #[serde(borrow, default)]
    address: Cow<'a, str>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceName<'a> {
    #[serde(borrow)]
    service: Cow<'a, str>,
}

/// The body of a `/v1/catalog/node/<n>` answer as `(service name, fingerprint)` per
/// registration, in the order of the registrations' IDs (see [`Client::catalog_node_prints`]);
/// `null` (a node gone) is no registration.
/// Pure; public so the parsing can be exercised without a Consul (the fuzz targets in `fuzz/`).
///
/// # Errors
/// A body that is not Consul 1.8's node answer, or a registration without a `Service` name.
pub fn node_prints(body: &[u8]) -> Result<Vec<(String, u64)>, serde_json::Error> {
    let Some(ns) = serde_json::from_slice::<Option<RawNodeServices>>(body)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for raw in ns.services.unwrap_or_default().into_values() {
        let name: ServiceName = serde_json::from_str(raw.get())?;
        let mut h = DefaultHasher::new();
        (ns.node.address.as_ref(), raw.get()).hash(&mut h);
        out.push((name.service.into_owned(), h.finish()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::node_prints;
    use crate::model::CheckState;

    // Captured from `consul agent -dev` 1.8.7: `/v1/catalog/node/dev`.
    const NODE: &str = r#"{"Node":{"ID":"a1","Node":"dev","Address":"127.0.0.1","Datacenter":"dc1","TaggedAddresses":{},"Meta":{},"CreateIndex":9,"ModifyIndex":10},
      "Services":{"consul":{"ID":"consul","Service":"consul","Tags":[],"Address":"","Meta":{"raft_version":"3"},"Port":8300,"Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"CreateIndex":11,"ModifyIndex":11},
                  "web-1":{"ID":"web-1","Service":"web","Tags":null,"Address":"10.0.0.5","Meta":null,"Port":3001,"CreateIndex":20,"ModifyIndex":20}}}"#;

    fn prints(body: &str) -> Vec<(String, u64)> {
        let mut p = node_prints(body.as_bytes()).unwrap();
        p.sort();
        p
    }

    #[test]
    fn node_registrations_are_fingerprinted_per_service() {
        let p = prints(NODE);
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["consul", "web"]);
        // Same registrations: same prints. A moved port, a new ModifyIndex or another node
        // address (the fallback address of instances without one) changes only what it touches.
        assert_eq!(prints(NODE), p);
        let port = prints(&NODE.replace("3001", "3002"));
        assert_eq!(port[0], p[0]);
        assert_ne!(port[1], p[1]);
        assert_ne!(prints(&NODE.replace(r#""ModifyIndex":20"#, r#""ModifyIndex":21"#))[1], p[1]);
        assert_ne!(prints(&NODE.replace("127.0.0.1", "127.0.0.2"))[1], p[1]);
        // A node gone between listing and reading; a node without services; escapes in names.
        assert!(prints("null").is_empty());
        assert!(prints(r#"{"Node":{"Address":"x"},"Services":null}"#).is_empty());
        assert_eq!(prints(r#"{"Node":{"Address":"x"},"Services":{"a":{"Service":"w\u0065b"}}}"#)[0].0, "web");
        assert!(node_prints(b"{").is_err());
    }

    // Captured from `consul agent -dev` 1.8.7: `/v1/health/state/any`.
    const STATE: &str = r#"[{"Node":"dev","CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing","Notes":"","Output":"Agent alive and reachable","ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"","Definition":{},"CreateIndex":10,"ModifyIndex":10},
      {"Node":"dev","CheckID":"service:web-1","Name":"Service 'web' check","Status":"critical","Notes":"","Output":"TTL expired","ServiceID":"web-1","ServiceName":"web","ServiceTags":[],"Type":"ttl","Definition":{},"CreateIndex":20,"ModifyIndex":31}]"#;

    /// Found by the `consul_model` fuzz target: with two bad registrations, the error named
    /// whichever a `HashMap` visited first, so two parses of one body disagreed.
    #[test]
    fn node_prints_are_in_id_order_and_errors_deterministic() {
        let body = br#"{"Node":{},"Services":{"b":false,"a":{"Servic":1},"c":{"Service":"x"}}}"#;
        let first = node_prints(body).unwrap_err().to_string();
        for _ in 0..20 {
            assert_eq!(node_prints(body).unwrap_err().to_string(), first);
        }
        assert!(first.contains("missing field `Service`"), "{first}");
        let ok = br#"{"Node":{},"Services":{"z":{"Service":"z"},"m":{"Service":"m"},"a":{"Service":"a"}}}"#;
        let names: Vec<String> = node_prints(ok).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "m", "z"]);
    }

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
