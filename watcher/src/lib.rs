//! # watcher
//!
//! Watches services in Consul with blocking queries and streams each service's current instance
//! set, as newline-delimited JSON, to the gateway's Unix socket or to stdout.
//!
//! ## Layout
//! - [`protocol`]: the watcher ↔ gateway wire format. The one place that defines it; the gateway
//!   decodes with these same types.
//! - [`state`]: the latest snapshot and status of every watched service, with change versions, so
//!   a reconnecting reader gets everything and a slow one only the newest of each.
//! - [`watch`]: one blocking-query loop per service (index rules, rate limit, backoff, change
//!   detection).
//! - [`mux`]: many services over two blocking queries plus targeted re-reads (for scale).
//! - [`names`]: the watched services, found by the names Consul reports (case-insensitively).
//! - [`checks`]: which services' checks changed, from two answers of `/v1/health/state/any`.
//! - [`scan`]: which services changed, from a node-by-node read of the catalog.
//! - [`nodes`]: one blocking query per catalog node on small clusters, so a change costs one
//!   node read instead of a scan.
//! - [`output`]: writes the state to stdout or to the socket (reconnecting with backoff).
//!
//! Consul itself is spoken by the `consul` crate.

pub mod checks;
pub mod followed;
pub mod mux;
pub mod names;
pub mod nodes;
pub mod output;
pub mod protocol;
pub mod scan;
pub mod state;
pub mod watch;
