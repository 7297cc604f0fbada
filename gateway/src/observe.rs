//! What operators see of the gateway besides its log lines: the change feed every other view
//! follows ([`changes`]), and the Prometheus metrics served on the admin listener ([`metrics`]).

pub mod changes;
pub mod metrics;
