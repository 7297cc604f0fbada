//! # consul
//!
//! The one place in the workspace that speaks Consul's HTTP API and parses its JSON. Everything else
//! (watcher, gateway, serviceweb, registrator) sees only the typed model in [`model`].
//!
//! ## Layout
//! - [`addr`]: `CONSUL_HTTP_ADDR`-style addresses and the ACL token from `CONSUL_HTTP_TOKEN(_FILE)`
//!   (which never prints).
//! - [`tls`]: `CONSUL_CACERT`, `CONSUL_CAPATH` and friends: TLS (and mTLS) to an `https://`
//!   address, HTTP/2 by ALPN.
//! - [`model`]: [`Instance`], the normalised view of one service instance, and the raw response shapes.
//! - [`name`]: service names compared as Consul compares them (without regard to case).
//! - [`health`]: [`HealthStatuses`], which check statuses make an instance routable.
//! - [`consistency`]: [`Consistency`], the consistency mode every read asks for.
//! - [`index`]: the blocking-query index rules from Consul's docs, as pure functions.
//! - [`client`]: [`Client`], reads (blocking and not) and the agent endpoints used to register services.
//! - [`cluster`]: cluster-wide reads (every check, every service, a node's registrations).
//! - [`error`]: [`Error`], what can go wrong talking to Consul.

pub mod addr;
pub mod client;
pub mod cluster;
pub mod consistency;
pub mod error;
pub mod health;
pub mod index;
pub mod model;
pub mod name;
pub mod tls;

pub use addr::{ConsulAddr, Token};
pub use client::{parse_instances, Client, QueryResult, View};
pub use consistency::Consistency;
pub use error::Error;
pub use health::HealthStatuses;
pub use model::{AgentCheck, AgentRegistration, Instance};
pub use tls::TlsConfig;
