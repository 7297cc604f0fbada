//! Self-registration in etcd (`--register-etcd`): the instance's key
//! `<prefix><name>/<name>-<hostname>-<port>` under a lease of the TTL, kept alive, granted and put
//! again when etcd loses the lease, revoked on shutdown (the `etcd` crate's
//! [`etcd::Registration`]).

use std::time::Duration;

use anyhow::Context;
use etcd::{Client, Registered, Registration, Running};

/// What to register.
pub struct Instance<'a> {
    /// Service name.
    pub name: &'a str,
    /// Host name (part of the instance ID).
    pub hostname: &'a str,
    /// Address to register.
    pub address: String,
    /// Port to register (and part of the instance ID).
    pub port: u16,
    /// Tags to register with.
    pub tags: Vec<String>,
}

/// Registers `instance` in etcd at `endpoints` under `prefix`, and keeps it registered.
///
/// # Errors
/// When etcd cannot be reached for the first registration.
pub async fn start(
    endpoints: &[String],
    prefix: &str,
    instance: Instance<'_>,
    ttl: Duration,
) -> anyhow::Result<Running> {
    let client = Client::connect(endpoints).await.context("cannot set up the etcd client")?;
    let id = format!("{}-{}-{}", instance.name, instance.hostname, instance.port);
    let value =
        Registered { address: instance.address, port: instance.port, tags: instance.tags, ..Registered::default() };
    let reg = Registration::new(client, prefix, instance.name, &id, value, ttl)?;
    reg.register().await.context("cannot register in etcd")?;
    Ok(reg.spawn())
}
