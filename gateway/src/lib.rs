//! # gateway
//!
//! An HTTP gateway that routes requests to the live instances of the services that Consul knows, by
//! routes the services declare in their tags (or `/<service>/*`), with instances learned from Consul through a supervised `watcher` subprocess.
//!
//! ## Layout (by flow)
//! - [`config`]: command line and environment, validated once into [`config::Config`].
//! - [`run`]: wires the parts together and runs them until shutdown, then drains.
//! - [`discovery`]: what the gateway knows and how it learns it: the supervised watcher, its
//!   socket, the followed services with their instances, the route tags and the route table.
//! - [`proxy`]: the request path: the public listener and its workers, route match, balancer,
//!   canary split, rewriting, upstream connections and their pool, headers, errors.
//! - [`tls`]: TLS termination on the public listener: certificates by SNI, reloaded on change.
//! - [`redirect`]: the plain listener of `--redirect-http`, redirecting to https.
//! - [`admin`]: `/healthz`, `/readyz`, `/services`, `/routes` on the admin listener.
//! - [`api`]: the register/discover API under `/v1/` on the admin listener (bearer token).
//! - [`status`]: the live status page on the admin listener (`/`, `/events`).
//!
//! Consul's API is spoken only by the `consul` crate; the wire protocol belongs to `watcher`.

pub mod admin;
pub mod api;
pub mod config;
pub mod discovery;
pub mod observe;
pub mod proxy;
pub mod redirect;
pub mod run;
pub mod status;
pub mod tls;

#[cfg(test)]
mod test_backends;
