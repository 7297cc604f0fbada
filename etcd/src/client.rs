//! The calls the gateway's components make to etcd: range reads and watches of a key prefix (for
//! the watcher), compaction, and the simple registration calls (lease grant + put, one
//! keep-alive, delete).
//!
//! Every unary call is bounded by [`REQUEST_TIMEOUT`]; connections send HTTP/2 pings
//! ([`PING_INTERVAL`]) so that a dead etcd ends a watch instead of leaving it hanging. A lost
//! connection is an [`Error`]; the client reconnects on the next call.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, WatchOptions, WatchStream,
};

use crate::error::Error;
use crate::model::{self, Registered};

/// The longest a unary call may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long setting up a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an HTTP/2 ping checks the connection (the same again is the ping's timeout).
pub const PING_INTERVAL: Duration = Duration::from_secs(3);

/// How many keys one page of a range read holds.
pub const RANGE_PAGE: i64 = 100;
/// The largest answer read (a range page, a watch answer): etcd takes values up to 1.5 MiB by
/// default, so a page of [`RANGE_PAGE`] of them, or a transaction's events, can pass the gRPC
/// default of 4 MiB.
pub const MAX_MESSAGE: usize = 256 << 20;

/// The end of the range of every key starting with `prefix` (etcd's "prefix end": the prefix
/// with its last byte below 0xff incremented, the bytes after it dropped; `\0` for every key).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A client of one etcd cluster. Cheap to clone (one connection, shared).
#[derive(Clone)]
pub struct Client {
    inner: etcd_client::Client,
    endpoints: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.endpoints).finish()
    }
}

/// One key-value pair as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the key's last change.
    pub mod_revision: i64,
}

/// A key and the lease it is attached to, as a keys-only range reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLease {
    /// The key.
    pub key: Vec<u8>,
    /// The ID of the key's lease; 0 when the key has none.
    pub lease: i64,
}

/// A range read: the pairs and the store's revision at the time of the read.
#[derive(Clone, Debug)]
pub struct Range {
    /// The store's revision the read saw (watch from the next one).
    pub revision: i64,
    /// Every pair under the prefix.
    pub kvs: Vec<Kv>,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put(Kv),
    /// A key was deleted (or its lease ran out), at `revision`.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The revision of the deletion.
        revision: i64,
    },
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// What one watch answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchBatch {
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The revision the watch started from is compacted: read the prefix afresh. The watch is
    /// over.
    Compacted {
        /// The oldest revision still kept.
        compact_revision: i64,
    },
}

/// A watch on a key prefix. Dropping it cancels it.
pub struct Watch {
    stream: WatchStream,
}

impl Watch {
    /// The next answer with changes (or the compaction). Errors when the connection is lost or
    /// etcd cancels the watch.
    pub async fn next(&mut self) -> Result<WatchBatch, Error> {
        loop {
            let resp = self.stream.message().await.map_err(Error::request("watch"))?;
            let Some(resp) = resp else { return Err(Error::StreamClosed("watch")) };
            if resp.compact_revision() > 0 {
                return Ok(WatchBatch::Compacted { compact_revision: resp.compact_revision() });
            }
            if resp.canceled() {
                return Err(Error::WatchCancelled(resp.cancel_reason().to_string()));
            }
            if resp.events().is_empty() {
                continue; // created, or progress
            }
            let events = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    Some(match e.event_type() {
                        EventType::Put => WatchEvent::Put(Kv {
                            key: kv.key().to_vec(),
                            value: kv.value().to_vec(),
                            mod_revision: kv.mod_revision(),
                        }),
                        EventType::Delete => WatchEvent::Delete { key: kv.key().to_vec(), revision: kv.mod_revision() },
                    })
                })
                .collect();
            return Ok(WatchBatch::Events(events));
        }
    }
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// etcd's lease ID.
    pub id: i64,
    /// The TTL etcd granted (it may raise a TTL below its minimum).
    pub ttl: Duration,
}

async fn bounded<T>(op: &'static str, f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(Error::request(op)),
        Err(_) => Err(Error::Timeout(op)),
    }
}

impl Client {
    /// A client of the cluster at `endpoints` (`http://host:port`). The connection is set up
    /// lazily or at once, as the endpoints allow; a cluster down now is an error on the first
    /// call, not here, unless no endpoint can be used at all.
    pub async fn connect(endpoints: &[String]) -> Result<Self, Error> {
        let joined = endpoints.join(",");
        let opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(PING_INTERVAL, PING_INTERVAL)
            .with_keep_alive_while_idle(true);
        let connect = etcd_client::Client::connect(endpoints, Some(opts));
        let inner = match tokio::time::timeout(CONNECT_TIMEOUT + REQUEST_TIMEOUT, connect).await {
            Ok(r) => r.map_err(|source| Error::Connect { endpoints: joined.clone(), source })?,
            Err(_) => return Err(Error::Timeout("connection")),
        };
        Ok(Self { inner, endpoints: joined })
    }

    /// The endpoints, comma-separated (for logs).
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Every pair under `prefix`, and the revision of the read: read in pages of [`RANGE_PAGE`]
    /// keys, all at the revision of the first page (so the pages make one consistent read).
    pub async fn range(&self, prefix: &str) -> Result<Range, Error> {
        let mut c = self.inner.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(RANGE_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = bounded("range", c.get(from.clone(), Some(opts))).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            kvs.extend(resp.kvs().iter().map(|kv| Kv {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
            }));
            match kvs.last() {
                Some(last) if resp.more() => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok(Range { revision, kvs }),
            }
        }
    }

    /// Every key under `prefix` with its lease (a keys-only read: no values).
    pub async fn key_leases(&self, prefix: &str) -> Result<Vec<KeyLease>, Error> {
        let mut c = self.inner.clone();
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let resp = bounded("range", c.get(prefix, Some(opts))).await?;
        Ok(resp.kvs().iter().map(|kv| KeyLease { key: kv.key().to_vec(), lease: kv.lease() }).collect())
    }

    /// Watches every key under `prefix` from `revision` on (the changes at `revision` included).
    pub async fn watch(&self, prefix: &str, revision: i64) -> Result<Watch, Error> {
        let mut c = self.inner.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let opts = WatchOptions::new().with_prefix().with_start_revision(revision);
        let stream = bounded("watch", c.watch(prefix, Some(opts))).await?;
        Ok(Watch { stream })
    }

    /// Writes a key (no lease); returns the revision of the write.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64, Error> {
        let mut c = self.inner.clone();
        let resp = bounded("put", c.put(key, value, None)).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Deletes a key; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let mut c = self.inner.clone();
        Ok(bounded("delete", c.delete(key, None)).await?.deleted() > 0)
    }

    /// Compacts the history up to `revision` (watches from before it get
    /// [`WatchBatch::Compacted`]).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        let mut c = self.inner.clone();
        bounded("compact", c.compact(revision, None)).await.map(drop)
    }

    /// Grants a lease of `ttl` (whole seconds, rounded up).
    pub async fn grant(&self, ttl: Duration) -> Result<Lease, Error> {
        if ttl < Duration::from_secs(1) {
            return Err(Error::BadTtl(ttl));
        }
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let mut c = self.inner.clone();
        let resp = bounded("lease grant", c.lease_grant(secs as i64, None)).await?;
        Ok(Lease { id: resp.id(), ttl: Duration::from_secs(resp.ttl().max(1) as u64) })
    }

    /// Registers `instance` as `<prefix><service>/<id>` under a new lease of `ttl`; the key goes
    /// when the lease is not kept alive ([`Client::heartbeat`]) for `ttl`.
    pub async fn register(
        &self,
        prefix: &str,
        service: &str,
        id: &str,
        instance: &Registered,
        ttl: Duration,
    ) -> Result<Lease, Error> {
        let lease = self.grant(ttl).await?;
        self.put_under(prefix, service, id, instance, lease).await?;
        Ok(lease)
    }

    /// Writes the instance's key under `lease`.
    pub async fn put_under(
        &self,
        prefix: &str,
        service: &str,
        id: &str,
        instance: &Registered,
        lease: Lease,
    ) -> Result<(), Error> {
        let mut c = self.inner.clone();
        let key = model::key(prefix, service, id);
        let opts = PutOptions::new().with_lease(lease.id);
        bounded("put", c.put(key, instance.to_value(), Some(opts))).await.map(drop)
    }

    /// Renews `lease` once; [`Error::LeaseLost`] when it is gone (register again).
    pub async fn heartbeat(&self, lease: Lease) -> Result<(), Error> {
        let mut keeper = self.keep_alive(lease).await?;
        keeper.renew().await
    }

    /// Opens a keep-alive stream for `lease` (which renews it once); [`Error::LeaseLost`] when
    /// it is gone.
    pub async fn keep_alive(&self, lease: Lease) -> Result<KeepAlive, Error> {
        let mut c = self.inner.clone();
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, c.lease_keep_alive(lease.id)).await;
        let (keeper, stream) = match opened {
            Ok(Ok(pair)) => pair,
            // etcd answers the first renewal with TTL 0 (the lease expired while etcd could not be
            // reached, was revoked, or etcd lost its data): the lease is gone, register again.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e == "lease not found" => {
                return Err(Error::LeaseLost(lease.id))
            }
            Ok(Err(e)) => return Err(Error::request("lease keep-alive")(e)),
            Err(_) => return Err(Error::Timeout("lease keep-alive")),
        };
        Ok(KeepAlive { lease, keeper, stream })
    }

    /// Revokes `lease`: its keys go at once.
    pub async fn revoke(&self, lease: Lease) -> Result<(), Error> {
        let mut c = self.inner.clone();
        bounded("lease revoke", c.lease_revoke(lease.id)).await.map(drop)
    }

    /// Every lease etcd holds now (their IDs).
    pub async fn leases(&self) -> Result<Vec<i64>, Error> {
        let mut c = self.inner.clone();
        Ok(bounded("lease list", c.leases()).await?.leases().iter().map(|l| l.id()).collect())
    }

    /// Removes the instance's key; returns whether it existed. (Its lease, if any, stays until it
    /// runs out or is revoked.)
    pub async fn deregister(&self, prefix: &str, service: &str, id: &str) -> Result<bool, Error> {
        self.delete(&model::key(prefix, service, id)).await
    }
}

/// A keep-alive stream for one lease.
pub struct KeepAlive {
    lease: Lease,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl KeepAlive {
    /// Renews the lease once: [`Error::LeaseLost`] when it is gone, another error when the
    /// connection is.
    pub async fn renew(&mut self) -> Result<(), Error> {
        let once = async {
            self.keeper.keep_alive().await.map_err(Error::request("lease keep-alive"))?;
            match self.stream.message().await.map_err(Error::request("lease keep-alive"))? {
                Some(resp) if resp.ttl() > 0 => Ok(()),
                Some(_) => Err(Error::LeaseLost(self.lease.id)),
                None => Err(Error::StreamClosed("lease keep-alive")),
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, once).await.unwrap_or(Err(Error::Timeout("lease keep-alive")))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/services/"), b"/services0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
