//! Cluster-wide reads that let one watcher follow many services over few connections:
//! `/v1/health/state/any` (every check, with its `ModifyIndex`) and `/v1/catalog/services`
//! (every service name with its tags). Both are blocking queries like the per-service reads.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;

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

#[cfg(test)]
mod tests {
    use crate::model::CheckState;

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
