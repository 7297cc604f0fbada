//! End-to-end tests: a real Consul agent and the real binaries on loopback. One test binary
//! (faster to build); one module per area.

mod failures;
mod lifecycle;
mod routing;
mod watcher;
