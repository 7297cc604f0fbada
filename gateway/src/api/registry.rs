//! [`Registry`]: the seam between the API's write calls and the registry they change, chosen from
//! `--source`. [`ConsulRegistry`] registers on the local Consul agent; [`EtcdRegistry`] (in
//! [`etcd`]) in etcd under `--etcd-prefix`; [`ReadOnly`] answers 501 for a source the gateway
//! cannot write to (DNS, which is read-only).
//!
//! Each write is one registry operation, so nothing is ever half-registered:
//! - Consul: register = one `PUT /v1/agent/service/register` carrying the instance and its TTL
//!   check (passing at first, so it is routable at once; critical, and out of routing, once `ttl`
//!   passes without a heartbeat; removed by Consul after [`deregister_after`] critical);
//!   heartbeat = `PUT /v1/agent/check/pass/service:<id>`; deregister =
//!   `PUT /v1/agent/service/deregister/<id>`.
//!
//!   The API changes only what it registered: each registration carries the metadata
//!   [`OWNER_META`]` = "true"` (a key clients may not set, [`super::validate`]), and each write
//!   first looks at the agent's services (`/v1/agent/services`): an ID held by an instance without
//!   the mark (the registrator's, serviceweb's, one from an agent's configuration) is a
//!   [`RegistryError::Conflict`], left as it is. The look also tells an unknown ID (Consul answers
//!   200 to the deregistration of one).
//! - etcd ([`etcd`]): register = a lease of `ttl` granted, then the instance put under it (the
//!   lease revoked if the put fails; an earlier registration of the ID replaced); heartbeat = one
//!   keep-alive of the instance's lease; deregister = the key deleted and its lease revoked. The
//!   key and lease of an ID are read from etcd, so any gateway, restarted or not, finds them. No
//!   ownership mark here yet: any key under the prefix can be replaced or removed.

pub mod etcd;

use std::time::Duration;

use futures_util::future::BoxFuture;
use watcher::source::etcd::EtcdArgs;
use watcher::source::SourceKind;

pub use self::etcd::EtcdRegistry;
use super::validate::Registration;

/// Why a registry call failed. The API maps each to a status: 404, 501, 503, 502.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No instance with this ID (or it is gone: its TTL ran out and the registry removed it).
    #[error("no instance with ID {0:?}")]
    NotFound(String),
    /// This registry cannot be written through the gateway.
    #[error("{0}")]
    Unsupported(String),
    /// The registry could not be reached (or did not answer in time): 503, retry later.
    #[error("the registry is unavailable: {0}")]
    Unavailable(String),
    /// The registry answered with an error: 502.
    #[error("the registry refused the call: {0}")]
    Failed(String),
    /// The ID is held by an instance the API did not register: 409, left as it is.
    #[error("the ID {0:?} is held by an instance not registered through this API; it is left as it is")]
    Conflict(String),
}

/// The metadata key marking an instance the API registered (value `"true"`): only those can be
/// replaced, renewed or removed through it.
pub const OWNER_META: &str = "gateway-api";

/// Where the API registers instances. Object safe: the API holds an `Arc<dyn Registry>`.
pub trait Registry: Send + Sync {
    /// The registry's name as `--source` says it (`consul`, `etcd`, `dns`).
    fn kind(&self) -> &'static str;

    /// Registers (or replaces) the instance, with its TTL, in one call.
    ///
    /// # Errors
    /// [`RegistryError`]; on an error nothing of the instance stays behind.
    fn register<'a>(&'a self, instance: &'a Registration) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// Renews the instance's TTL.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown ID, or as [`Registry::register`].
    fn heartbeat<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// Removes the instance.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] for an unknown ID, or as [`Registry::register`].
    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>>;
}

/// The registry for `--source`: Consul through `consul`, etcd as `etcd` says (connected on the
/// first call).
pub fn for_source(source: SourceKind, consul: consul::Client, etcd: &EtcdArgs) -> std::sync::Arc<dyn Registry> {
    match source {
        SourceKind::Consul => std::sync::Arc::new(ConsulRegistry { client: consul }),
        SourceKind::Dns => std::sync::Arc::new(ReadOnly {
            kind: "dns",
            why: "the dns source is read-only: register instances in the DNS zone itself",
        }),
        SourceKind::Etcd => std::sync::Arc::new(EtcdRegistry::new(etcd)),
    }
}

/// A registry the API cannot write to: every write answers [`RegistryError::Unsupported`].
pub struct ReadOnly {
    /// The source's name.
    pub kind: &'static str,
    /// What to tell the client.
    pub why: &'static str,
}

impl Registry for ReadOnly {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn register<'a>(&'a self, _: &'a Registration) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async { Err(RegistryError::Unsupported(self.why.to_string())) })
    }
    fn heartbeat<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async { Err(RegistryError::Unsupported(self.why.to_string())) })
    }
    fn deregister<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async { Err(RegistryError::Unsupported(self.why.to_string())) })
    }
}

/// Registrations on the local Consul agent, each with a TTL check.
pub struct ConsulRegistry {
    /// The agent (its token needs `service:write` on the services registered).
    pub client: consul::Client,
}

/// How long Consul keeps an instance whose TTL check is critical before removing it: ten TTLs,
/// at least a minute (Consul's floor), so that a client that lost its heartbeats for a while
/// finds its registration (out of routing) and can heartbeat it back, while one that is gone for
/// good leaves no entry behind.
pub fn deregister_after(ttl: Duration) -> Duration {
    (ttl * 10).max(Duration::from_secs(60))
}

/// A duration as Go reads it (whole milliseconds).
fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl ConsulRegistry {
    /// The agent registration for `r`: the instance and its TTL check in one body.
    pub fn agent_registration(r: &Registration) -> consul::AgentRegistration {
        consul::AgentRegistration {
            id: r.id.clone(),
            name: r.service.clone(),
            tags: r.tags.clone(),
            address: r.address.clone(),
            port: r.port,
            meta: r.meta.clone().into_iter().chain([(OWNER_META.to_string(), "true".to_string())]).collect(),
            check: Some(consul::AgentCheck {
                check_id: consul::client::service_check_id(&r.id),
                ttl: Some(go_duration(r.ttl)),
                deregister_critical_service_after: Some(go_duration(deregister_after(r.ttl))),
                status: Some("passing".into()),
                ..Default::default()
            }),
        }
    }
}

impl ConsulRegistry {
    /// Whether the agent holds an instance `id` registered through the API (`false`: none).
    ///
    /// # Errors
    /// [`RegistryError::Conflict`] if an instance not registered through the API holds the ID.
    async fn owned(&self, id: &str) -> Result<bool, RegistryError> {
        let known = self.client.agent_services().await.map_err(|e| map_error(id, e))?;
        match known.get(id) {
            None => Ok(false),
            Some(s) if s.meta.as_ref().and_then(|m| m.get(OWNER_META)).is_some_and(|v| v == "true") => Ok(true),
            Some(_) => Err(RegistryError::Conflict(id.to_string())),
        }
    }
}

fn map_error(id: &str, e: consul::Error) -> RegistryError {
    if e.is_unknown_id() {
        RegistryError::NotFound(id.to_string())
    } else if e.is_unreachable() {
        RegistryError::Unavailable(e.to_string())
    } else {
        RegistryError::Failed(e.to_string())
    }
}

impl Registry for ConsulRegistry {
    fn kind(&self) -> &'static str {
        "consul"
    }

    fn register<'a>(&'a self, instance: &'a Registration) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let replaces = self.owned(&instance.id).await?;
            let reg = Self::agent_registration(instance);
            match self.client.register(&reg).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // The agent may have registered it before the answer was lost: take a new one
                    // back, so that a client told "failed" finds nothing behind. (An answer with
                    // an error status registered nothing; a replaced registration is whole either
                    // way and must not be removed.)
                    if e.is_unreachable() && !replaces {
                        let _ = self.client.deregister(&instance.id).await;
                    }
                    Err(map_error(&instance.id, e))
                }
            }
        })
    }

    fn heartbeat<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            if !self.owned(id).await? {
                return Err(RegistryError::NotFound(id.to_string()));
            }
            self.client.pass_check(&consul::client::service_check_id(id)).await.map_err(|e| map_error(id, e))
        })
    }

    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            // Consul (1.8) answers 200 for an unknown ID: look first, so the client learns of it.
            if !self.owned(id).await? {
                return Err(RegistryError::NotFound(id.to_string()));
            }
            self.client.deregister(id).await.map_err(|e| map_error(id, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_registration_carries_the_instance_and_its_ttl_check() {
        let r = Registration {
            service: "web".into(),
            id: "web-1".into(),
            address: "10.0.0.1".into(),
            port: 8080,
            tags: vec!["gateway".into()],
            meta: [("v".to_string(), "2".to_string())].into(),
            ttl: Duration::from_secs(10),
        };
        let v = serde_json::to_value(ConsulRegistry::agent_registration(&r)).unwrap();
        assert_eq!(v["ID"], "web-1");
        assert_eq!(v["Name"], "web");
        assert_eq!(v["Port"], 8080);
        assert_eq!(v["Meta"]["v"], "2");
        assert_eq!(v["Meta"][OWNER_META], "true", "marked as the API's");
        assert_eq!(v["Check"]["CheckID"], "service:web-1");
        assert_eq!(v["Check"]["TTL"], "10000ms");
        assert_eq!(v["Check"]["Status"], "passing");
        assert_eq!(v["Check"]["DeregisterCriticalServiceAfter"], "100000ms");
        assert_eq!(deregister_after(Duration::from_secs(1)), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn dns_is_not_written_and_etcd_is() {
        let client = consul::Client::new("http://127.0.0.1:1".parse().unwrap(), consul::Token::default());
        let etcd = EtcdArgs { etcd_endpoints: vec!["http://127.0.0.1:1".into()], etcd_prefix: "/services/".into() };
        let reg = for_source(SourceKind::Dns, client.clone(), &etcd);
        assert_eq!(reg.kind(), "dns");
        assert!(matches!(reg.heartbeat("x").await, Err(RegistryError::Unsupported(_))));
        assert!(matches!(reg.deregister("x").await, Err(RegistryError::Unsupported(_))));
        assert_eq!(for_source(SourceKind::Etcd, client, &etcd).kind(), "etcd");
    }
}
