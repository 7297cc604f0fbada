//! End-to-end tests: a real Consul agent and the real binaries on loopback. One test binary
//! (faster to build); one module per area.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod acl;
mod balance;
mod consistency;
mod failures;
mod follow;
mod front;
mod front_tls;
mod grpc;
mod health_status;
mod lifecycle;
mod metrics;
mod modes;
mod mtls;
mod routes;
mod routing;
mod tls;
mod upgrade;
mod upstream;
mod watcher;
