//! # watcher
//!
//! Watches services in Consul with blocking queries and streams each service's current instance
//! set, as newline-delimited JSON, to the gateway's Unix socket or to stdout. The services are the
//! static `--service` names plus, with a route tag or prefix, every service that opts in by tag.
//!
//! ## Layout
//! - [`protocol`]: the watcher ↔ gateway wire format. The one place that defines it; the gateway
//!   decodes with these same types.
//! - [`state`]: the followed list, the latest snapshot and status of every followed service, and
//!   the services that went, with change versions, so a reconnecting reader gets everything and a
//!   slow one only the newest of each.
//! - [`followed`]: which services are followed (opt-in rule, names, static services) and how that
//!   set changed between two answers of `/v1/catalog/services`. Pure.
//! - [`follow`]: the one blocking query on `/v1/catalog/services`; feeds the follower and the
//!   multiplexed watch.
//! - [`query`]: the blocking-query loop, written once (index rules, rate limit, backoff, logs once
//!   per change of state); every loop below turns through it.
//! - [`watch`]: one blocking-query loop per service (change detection), started and stopped as
//!   services are followed.
//! - [`mux`]: many services over two blocking queries plus targeted re-reads (for scale).
//! - [`streams`]: one blocking query per service as HTTP/2 streams over a few connections (for
//!   scale against an HTTPS Consul): which connection carries which service.
//! - [`names`]: the followed services, found by the names Consul reports (case-insensitively).
//! - [`checks`]: which services' checks changed, from two answers of `/v1/health/state/any`.
//! - [`scan`]: which services changed, from a node-by-node read of the catalog.
//! - [`budget`]: the bound on non-blocking reads in flight, shared by re-reads and scans.
//! - [`nodes`]: one blocking query per catalog node on small clusters, so a change costs one
//!   node read instead of a scan.
//! - [`source`]: the seam between a registry and the state: Consul, etcd and DNS each a
//!   [`source::Source`] in its own module, producing the same messages.
//! - [`outage`]: whether an answer that empties a service is a denial in disguise.
//! - [`output`]: writes the state to stdout or to the socket (reconnecting with backoff).
//!
//! Consul itself is spoken by the `consul` crate.

pub mod budget;
pub mod checks;
pub mod follow;
pub mod followed;
pub mod mux;
pub mod names;
pub mod nodes;
pub mod outage;
pub mod output;
pub mod protocol;
pub mod query;
pub mod scan;
pub mod source;
pub mod state;
pub mod streams;
pub mod watch;
