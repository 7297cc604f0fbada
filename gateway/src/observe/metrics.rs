//! Prometheus metrics (STUB: the interface the request path and the admin listener use; the
//! storage and the exposition are being written).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The labels a request is counted under, built once per route when the route table is built:
/// the route as `/routes` shows it, and its service. Bounded by the route table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    /// The route, as `/routes` shows it (`api.example.com/v1`, `/web`).
    pub route: Arc<str>,
    /// The service the route sends to.
    pub service: Arc<str>,
}

/// Why a request went again to an instance (the same one on a new connection, or another one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// The connect failed (refused, reset, timed out): another instance.
    ConnectFailed,
    /// A reused (pooled) connection closed before the response: the same instance, new connection.
    ReusedConnectionClosed,
    /// Sent but unanswered, idempotent: another instance.
    NoResponse,
    /// An HTTP/2 instance refused the stream unprocessed (REFUSED_STREAM, GOAWAY).
    Unprocessed,
}

/// Connections and tunnels open now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// Client connections to the public listener.
    Client,
    /// Connections to instances.
    Upstream,
    /// Upgraded tunnels (WebSocket and others).
    Tunnel,
}

/// One service's request totals since the gateway started, for the status page's rates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTotals {
    /// The service.
    pub service: String,
    /// Requests answered, whatever the status.
    pub requests: u64,
    /// Of those, answered with a 5xx status (the instance's or the gateway's own).
    pub errors: u64,
}

/// Every metric the gateway keeps.
#[derive(Default)]
pub struct Metrics {
    open: [Arc<AtomicI64>; 3],
}

/// Counts one open connection or tunnel until dropped.
pub struct OpenGuard(Arc<AtomicI64>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Metrics for `workers` worker threads (request counts are kept apart per worker).
    pub fn new(_workers: usize) -> Self {
        Self::default()
    }

    /// One finished request: its route (`None`: no route matched), method, status and how long
    /// it took from its head's arrival to the end of its response body.
    pub fn request_done(&self, _labels: Option<&Labels>, _method: &http::Method, _status: u16, _duration: Duration) {}

    /// A request goes again, for `reason`.
    pub fn retry(&self, _service: &str, _reason: RetryReason) {}

    /// A connect to an instance failed.
    pub fn connect_failure(&self, _service: &str) {}

    /// An instance was ejected (taken out of the rotation for a while) after a failure.
    pub fn ejection(&self, _service: &str) {}

    /// Counts one open connection or tunnel until the guard is dropped.
    pub fn open(&self, what: Open) -> OpenGuard {
        let gauge = self.open[what as usize].clone();
        gauge.fetch_add(1, Ordering::Relaxed);
        OpenGuard(gauge)
    }

    /// Each service's request totals (summed over the workers), by service name.
    pub fn service_totals(&self) -> Vec<ServiceTotals> {
        Vec::new()
    }

    /// How many of `what` are open now.
    pub fn open_now(&self, what: Open) -> i64 {
        self.open[what as usize].load(Ordering::Relaxed)
    }
}
