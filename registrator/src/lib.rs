//! # registrator
//!
//! Registers the ports of running Docker containers as Consul services, following the
//! conventions of gliderlabs/registrator (`SERVICE_NAME`, `SERVICE_<port>_CHECK_HTTP`, ...), from
//! Docker events for immediate changes plus a periodic resync that repairs anything missed.
//!
//! ## Layout
//! - [`convention`]: the container model and the `SERVICE_*` lookup rules (pure).
//! - [`address`]: where a container is reached in each Docker network mode (pure).
//! - [`desired`]: container → the registrations it should have, with ownership marks (pure).
//! - [`sync`]: which registrations are ours, the plan against Consul's agent, applying it.
//! - [`docker`]: the Docker engine (bollard): connect, inspect, events.
//! - [`run`]: the event loop, resync timer and reconnects.
//! - [`report`]: says each reason a container is skipped once, not on every resync.

pub mod address;
pub mod convention;
pub mod desired;
pub mod docker;
pub mod error;
pub mod report;
pub mod run;
pub mod sync;

pub use error::Error;
