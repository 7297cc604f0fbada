//! [`EtcdRegistry`]: the API's writes on etcd (`--source etcd`), in the key layout the watcher
//! reads (`etcd::model`: key `<prefix><service>/<id>`, value the JSON instance).
//!
//! - register = a lease of `ttl` granted, then the instance put under it; if the put fails the
//!   lease is revoked (which takes the key too, if the put was applied and its answer lost), so
//!   nothing stays half-registered. An instance already registered under the same ID (in any
//!   service) is replaced: the new key is written first, then the old key's lease is revoked (or,
//!   if other keys share that lease, only the old key deleted), so the instance is never absent.
//! - heartbeat = one keep-alive of the instance's lease.
//! - deregister = the key deleted and its lease revoked (when no other key holds it).
//!
//! The key and lease of an ID are looked up in etcd itself (a keys-only range over the prefix:
//! the key `<prefix><service>/<id>` and its lease), not kept in memory, so heartbeats and deletes
//! work after a gateway restart and through any of several gateways. An ID with no key (never
//! registered, deleted, or its lease ran out) is [`RegistryError::NotFound`].
//!
//! The client connects on the first call (and again after a failed connect), so a gateway started
//! while etcd is down starts, and its API answers 503 until etcd is back. Every etcd call is
//! bounded (`etcd::client::REQUEST_TIMEOUT`) and each API call as a whole by [`CALL_TIMEOUT`]:
//! an unreachable etcd is [`RegistryError::Unavailable`].

use std::time::Duration;

use ::etcd::{model, Client, Error, KeyLease, Lease, Registered};
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;
use tracing::warn;
use watcher::source::etcd::EtcdArgs;

use super::{Registry, RegistryError};
use crate::api::validate::Registration;

/// The longest one API call may spend on etcd (a register is up to four etcd calls).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(12);

/// Registrations in etcd, each under its own lease.
pub struct EtcdRegistry {
    endpoints: Vec<String>,
    prefix: String,
    /// Set by the first successful connect; the client reconnects by itself after that.
    client: Mutex<Option<Client>>,
}

/// The error for an etcd failure on instance `id`.
fn map_error(id: &str, e: &Error) -> RegistryError {
    if e.is_lease_gone() {
        RegistryError::NotFound(id.to_string())
    } else if e.is_unreachable() || matches!(e, Error::Connect { .. }) {
        RegistryError::Unavailable(e.to_string())
    } else {
        RegistryError::Failed(e.to_string())
    }
}

/// The keys of instance `id` (in any service) among `all`.
fn keys_of<'a>(prefix: &str, id: &str, all: &'a [KeyLease]) -> Vec<&'a KeyLease> {
    all.iter().filter(|kl| model::parse_key(prefix, &kl.key).is_some_and(|k| k.id == id)).collect()
}

/// Whether a key other than `except` holds `lease`.
fn lease_shared(all: &[KeyLease], lease: i64, except: &[u8]) -> bool {
    all.iter().any(|kl| kl.lease == lease && kl.key != except)
}

impl EtcdRegistry {
    /// A registry on the cluster and prefix of `args`; connects on the first call.
    pub fn new(args: &EtcdArgs) -> Self {
        Self { endpoints: args.etcd_endpoints.clone(), prefix: args.etcd_prefix.clone(), client: Mutex::new(None) }
    }

    /// The client, connecting if there is none yet.
    async fn client(&self) -> Result<Client, RegistryError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Client::connect(&self.endpoints).await.map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` within [`CALL_TIMEOUT`].
    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        tokio::time::timeout(CALL_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(RegistryError::Unavailable("etcd did not answer in time".into())))
    }

    /// Every key under the prefix with its lease.
    async fn key_leases(&self, c: &Client, id: &str) -> Result<Vec<KeyLease>, RegistryError> {
        c.key_leases(&self.prefix).await.map_err(|e| map_error(id, &e))
    }

    async fn do_register(&self, r: &Registration) -> Result<(), RegistryError> {
        let c = self.client().await?;
        let before = self.key_leases(&c, &r.id).await?;
        let instance =
            Registered { address: r.address.clone(), port: r.port, tags: r.tags.clone(), meta: r.meta.clone() };
        let lease = c.grant(r.ttl).await.map_err(|e| map_error(&r.id, &e))?;
        if let Err(e) = c.put_under(&self.prefix, &r.service, &r.id, &instance, lease).await {
            if let Err(re) = c.revoke(lease).await {
                warn!(id = %r.id, lease = lease.id, error = %re, "etcd: cannot revoke the lease of a failed registration (it runs out after its TTL)");
            }
            return Err(map_error(&r.id, &e));
        }
        // Replace: the old keys of this ID go (the new one is in place already).
        let new_key = model::key(&self.prefix, &r.service, &r.id);
        for old in keys_of(&self.prefix, &r.id, &before) {
            self.remove(&c, &r.id, old, &before, Some(new_key.as_bytes())).await;
        }
        Ok(())
    }

    /// Takes `old` away: its lease revoked if no other key holds it, else the key deleted (unless
    /// it is `keep`, rewritten under a new lease). Failures are logged: the old lease runs out.
    async fn remove(&self, c: &Client, id: &str, old: &KeyLease, all: &[KeyLease], keep: Option<&[u8]>) {
        let rewritten = keep == Some(old.key.as_slice());
        if old.lease != 0 && !lease_shared(all, old.lease, &old.key) {
            match c.revoke(Lease { id: old.lease, ttl: Duration::ZERO }).await {
                Ok(()) => return,
                Err(e) if e.is_lease_gone() => {}
                Err(e) => warn!(id, lease = old.lease, error = %e, "etcd: cannot revoke an old lease"),
            }
        }
        if !rewritten {
            let key = String::from_utf8_lossy(&old.key).into_owned();
            if let Err(e) = c.delete(&key).await {
                warn!(id, key, error = %e, "etcd: cannot delete an old key");
            }
        }
    }

    async fn do_heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        let c = self.client().await?;
        let all = self.key_leases(&c, id).await?;
        let mine = keys_of(&self.prefix, id, &all);
        if mine.is_empty() {
            return Err(RegistryError::NotFound(id.to_string()));
        }
        // A key without a lease never runs out: nothing to renew.
        for kl in mine.iter().filter(|kl| kl.lease != 0) {
            c.heartbeat(Lease { id: kl.lease, ttl: Duration::ZERO }).await.map_err(|e| map_error(id, &e))?;
        }
        Ok(())
    }

    async fn do_deregister(&self, id: &str) -> Result<(), RegistryError> {
        let c = self.client().await?;
        let all = self.key_leases(&c, id).await?;
        let mine = keys_of(&self.prefix, id, &all);
        if mine.is_empty() {
            return Err(RegistryError::NotFound(id.to_string()));
        }
        for kl in mine {
            let key = String::from_utf8_lossy(&kl.key).into_owned();
            c.delete(&key).await.map_err(|e| map_error(id, &e))?;
            if kl.lease != 0 && !lease_shared(&all, kl.lease, &kl.key) {
                match c.revoke(Lease { id: kl.lease, ttl: Duration::ZERO }).await {
                    Ok(()) => {}
                    Err(e) if e.is_lease_gone() => {}
                    // The key is gone already: the lease just runs out.
                    Err(e) => warn!(id, lease = kl.lease, error = %e, "etcd: cannot revoke the lease of a deleted key"),
                }
            }
        }
        Ok(())
    }
}

impl Registry for EtcdRegistry {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn register<'a>(&'a self, instance: &'a Registration) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.bounded(self.do_register(instance)))
    }

    fn heartbeat<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.bounded(self.do_heartbeat(id)))
    }

    fn deregister<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.bounded(self.do_deregister(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kl(key: &str, lease: i64) -> KeyLease {
        KeyLease { key: key.as_bytes().to_vec(), lease }
    }

    #[test]
    fn an_id_is_found_in_any_service_and_only_as_the_whole_id() {
        let all = [kl("/s/web/a", 1), kl("/s/api/a", 2), kl("/s/web/ab", 3), kl("/s/web/x/a", 4), kl("/other/a", 5)];
        let found: Vec<i64> = keys_of("/s/", "a", &all).iter().map(|k| k.lease).collect();
        assert_eq!(found, [1, 2]);
        assert!(keys_of("/s/", "zz", &all).is_empty());
        assert!(lease_shared(&[kl("/s/web/a", 7), kl("/s/web/b", 7)], 7, b"/s/web/a"));
        assert!(!lease_shared(&[kl("/s/web/a", 7), kl("/s/web/b", 8)], 7, b"/s/web/a"));
    }

    #[tokio::test]
    async fn an_unreachable_etcd_is_unavailable_not_a_hang() {
        let args = EtcdArgs { etcd_endpoints: vec!["http://127.0.0.1:1".into()], etcd_prefix: "/services/".into() };
        let reg = EtcdRegistry::new(&args);
        assert_eq!(reg.kind(), "etcd");
        let t = std::time::Instant::now();
        assert!(matches!(reg.heartbeat("x").await, Err(RegistryError::Unavailable(_))));
        assert!(t.elapsed() <= CALL_TIMEOUT + Duration::from_secs(1));
    }
}
