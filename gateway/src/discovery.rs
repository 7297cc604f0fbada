//! Discovery: what the gateway knows about services and routes, and how it learns it.
//!
//! - [`supervisor`] runs the watcher process; [`socket`] takes its messages.
//! - [`services`] is the one write path: snapshots, `gone` messages and direct reads update the
//!   followed services ([`set`]) and rebuild the [`routes`] table from their [`tag`]s.
//! - [`direct`] reads a service from Consul before the watcher has delivered it.
//! - [`freshness`] knows whether that knowledge is fresh (watcher connected, Consul readable).
//! - [`state_file`] keeps the last good state on disk (`--state-file`) and serves it at a start
//!   without the registry.

pub mod direct;
pub mod freshness;
pub mod routes;
pub mod services;
pub mod set;
pub mod socket;
pub mod state_file;
pub mod supervisor;
pub mod tag;
