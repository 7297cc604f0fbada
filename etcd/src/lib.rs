//! # etcd
//!
//! etcd (its v3 API, over gRPC) as a service registry, spoken for the watcher (which reads and
//! watches instances) and for the instances (which register themselves under a lease).
//!
//! ## Layout
//! - [`model`]: the key and value of an instance (`<prefix><service>/<id>` → JSON or
//!   `host:port`), and its conversion to the protocol's [`consul::Instance`]. Pure.
//! - [`client`]: the calls: range reads, watches from a revision (with compaction reported as
//!   such), compaction, and the simple registration calls ([`Client::register`],
//!   [`Client::heartbeat`], [`Client::deregister`]).
//! - [`registration`]: an instance kept registered: lease grant, put under the lease,
//!   keep-alive, grant and put again when the lease is lost, revoke on shutdown.
//! - [`error`]: the typed [`Error`].
//!
//! Built on the `etcd-client` crate (tonic); its build script needs `protoc`
//! (scripts/install-protoc.sh).

pub mod client;
pub mod error;
pub mod model;
pub mod registration;

pub use client::{Client, KeepAlive, KeyLease, Kv, Lease, Range, Watch, WatchBatch, WatchEvent};
pub use error::Error;
pub use model::{InstanceKey, Registered, ValueError};
pub use registration::{Registration, Running};
