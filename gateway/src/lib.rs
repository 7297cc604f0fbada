//! # gateway
//!
//! An HTTP gateway that routes `/<service>/<rest>` to a random live instance of `<service>`, with
//! instances learned from Consul through a supervised `watcher` subprocess.
//!
//! ## Layout
//! - [`config`]: command line and environment, validated once into [`config::Config`].
//! - [`registry`]: the moka cache of each routable service's instances; applies watcher snapshots,
//!   logs every change, falls back to a direct (coalesced) Consul read before the first snapshot,
//!   and knows whether its data is stale.
//! - [`balancer`]: picks a random live endpoint, skipping ones that just refused a connection.
//! - [`listener`]: the public listener: accepts connections, serves HTTP/1.1 with hyper, drains
//!   on shutdown.
//! - [`proxy`]: the request path: parse, pick, forward (retrying a connection that failed before
//!   the request was sent), stream back.
//! - [`upstream`]: keep-alive connections to instances, pooled per endpoint.
//! - [`workers`]: more than one worker: a thread, a single-threaded runtime and a listening socket
//!   (SO_REUSEPORT) each.
//! - [`error`]: the gateway's errors and their JSON responses (404, 503, 502, 504).
//! - [`admin`]: `/healthz`, `/readyz`, `/services` on the admin listener.
//! - [`ipc`]: the Unix socket the watcher connects to, and decoding of its messages.
//! - [`supervisor`]: runs the watcher, restarts it with backoff, stops it on shutdown.
//! - [`server`]: binds both listeners and runs them until shutdown, then drains.
//!
//! Consul's API is spoken only by the `consul` crate; the wire protocol belongs to `watcher`.

pub mod admin;
pub mod balancer;
pub mod config;
pub mod discovery;
pub mod error;
pub mod ipc;
pub mod listener;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod supervisor;
pub mod upstream;
pub mod workers;

#[cfg(test)]
mod test_backends;
