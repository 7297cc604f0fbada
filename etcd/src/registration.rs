//! An instance kept registered in etcd under a lease (the keep-alive lease pattern).
//!
//! [`Registration::register`] grants a lease of the TTL and puts the instance's key under it;
//! [`Registration::spawn`] then renews the lease every third of the TTL. When etcd says the lease
//! is gone (it expired while etcd was unreachable, was revoked, or etcd lost it), a new lease is
//! granted and the key put again; when etcd cannot be reached, renewals are retried with backoff
//! (the key stays while the lease lives). [`Running::shutdown`] revokes the lease, which removes
//! the key at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::backoff::Backoff;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::client::{Client, Lease};
use crate::error::Error;
use crate::model::{self, Registered};

/// One instance's registration.
#[derive(Clone, Debug)]
pub struct Registration {
    client: Client,
    prefix: String,
    service: String,
    id: String,
    instance: Registered,
    ttl: Duration,
    /// The lease now holding the key.
    lease: Arc<Mutex<Option<Lease>>>,
}

/// A registration kept alive in the background; [`Running::shutdown`] ends it.
pub struct Running {
    reg: Registration,
    task: JoinHandle<()>,
}

impl Registration {
    /// `instance` as `<prefix><service>/<id>`, under leases of `ttl` (at least 1 s).
    pub fn new(
        client: Client,
        prefix: &str,
        service: &str,
        id: &str,
        instance: Registered,
        ttl: Duration,
    ) -> Result<Self, Error> {
        if ttl < Duration::from_secs(1) {
            return Err(Error::BadTtl(ttl));
        }
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            service: service.to_string(),
            id: id.to_string(),
            instance,
            ttl,
            lease: Arc::default(),
        })
    }

    /// The instance's key.
    pub fn key(&self) -> String {
        model::key(&self.prefix, &self.service, &self.id)
    }

    /// The lease now holding the key, if any.
    pub fn lease(&self) -> Option<Lease> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_lease(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    /// etcd says `lease` is gone (expired or revoked): forgets it, so the next turn registers
    /// again.
    fn lease_lost(&self, lease: Lease) {
        warn!(key = %self.key(), lease = format_args!("{:x}", lease.id),
              "etcd lost the lease (expired or revoked); registering again");
        self.set_lease(None);
    }

    /// Grants a new lease and puts the key under it.
    pub async fn register(&self) -> Result<Lease, Error> {
        let lease = self.client.register(&self.prefix, &self.service, &self.id, &self.instance, self.ttl).await?;
        self.set_lease(Some(lease));
        info!(key = %self.key(), lease = format_args!("{:x}", lease.id), ttl = ?lease.ttl,
              etcd = %self.client.endpoints(), "registered in etcd");
        Ok(lease)
    }

    /// Keeps the registration alive in the background (registering first if
    /// [`Registration::register`] was not called or failed).
    pub fn spawn(self) -> Running {
        let me = self.clone();
        let task = tokio::spawn(async move { me.keep_alive().await });
        Running { reg: self, task }
    }

    async fn keep_alive(&self) {
        let every = (self.ttl / 3).max(Duration::from_millis(300));
        let mut backoff = Backoff::new(Duration::from_millis(200), every);
        // The failure last warned about: etcd down for an hour is one warning, not one per retry.
        let mut failing: Option<String> = None;
        loop {
            let lease = match self.lease() {
                Some(l) => l,
                None => match self.register().await {
                    Ok(l) => l,
                    Err(e) => {
                        self.warn_once(&mut failing, "cannot register in etcd", &e);
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            let mut stream = match self.client.keep_alive(lease).await {
                Ok(s) => s,
                Err(Error::LeaseLost(_)) => {
                    self.lease_lost(lease);
                    continue;
                }
                Err(e) => {
                    self.warn_once(&mut failing, "cannot open the lease keep-alive", &e);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            loop {
                match stream.renew().await {
                    Ok(()) => {
                        backoff.reset();
                        if failing.take().is_some() {
                            info!(key = %self.key(), "the lease is renewed again");
                        }
                    }
                    Err(Error::LeaseLost(_)) => {
                        self.lease_lost(lease);
                        break;
                    }
                    Err(e) => {
                        self.warn_once(&mut failing, "cannot renew the lease", &e);
                        tokio::time::sleep(backoff.next_delay()).await;
                        break;
                    }
                }
                tokio::time::sleep(every).await;
            }
        }
    }
}

impl Registration {
    /// Warns about `e` unless it is the failure last warned about (`failing`).
    fn warn_once(&self, failing: &mut Option<String>, what: &str, e: &Error) {
        let why = format!("{what}: {e}");
        if failing.as_deref() != Some(why.as_str()) {
            warn!(key = %self.key(), "{why}; retrying with backoff (logged again when this changes)");
            *failing = Some(why);
        }
    }
}

impl Running {
    /// The lease now holding the key, if any.
    pub fn lease(&self) -> Option<Lease> {
        self.reg.lease()
    }

    /// Stops the keep-alive and revokes the lease (the key goes at once).
    pub async fn shutdown(self) {
        self.task.abort();
        let Some(lease) = self.reg.lease() else { return };
        match self.reg.client.revoke(lease).await {
            Ok(()) => info!(key = %self.reg.key(), "deregistered from etcd (lease revoked)"),
            Err(e) => warn!(key = %self.reg.key(), error = %e, "cannot revoke the lease; the key goes when it expires"),
        }
    }
}
