//! What operators see of the gateway besides its log lines: the change feed every other view
//! follows ([`changes`]), the Prometheus metrics served on the admin listener ([`metrics`]), the
//! access log ([`access`]) and the request IDs that tie a request's lines together
//! ([`request_id`]).

pub mod access;
pub mod changes;
pub mod metrics;
pub mod request_id;
