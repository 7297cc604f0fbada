//! The crate's error type.

/// What went wrong speaking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be set up to any endpoint.
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// A request failed (connection lost, timeout, or etcd refused it).
    #[error("etcd {op} failed: {source}")]
    Request {
        /// The operation: `range`, `put`, `watch`, `lease grant`, ...
        op: &'static str,
        /// The client's error (a gRPC status or a transport error).
        #[source]
        source: etcd_client::Error,
    },
    /// A stream (watch, lease keep-alive) ended: the connection was lost.
    #[error("etcd closed the {0} stream")]
    StreamClosed(&'static str),
    /// etcd cancelled the watch for a reason other than compaction.
    #[error("etcd cancelled the watch: {0}")]
    WatchCancelled(String),
    /// The lease expired or was revoked: its keys are gone.
    #[error("lease {0:x} is gone (expired or revoked)")]
    LeaseLost(i64),
    /// No answer in time.
    #[error("etcd did not answer the {0} in time")]
    Timeout(&'static str),
    /// A TTL etcd cannot take (whole seconds, at least 1).
    #[error("a lease TTL must be at least 1s, got {0:?}")]
    BadTtl(std::time::Duration),
}

impl Error {
    /// Whether etcd could not be reached or did not answer in time (retry later), as opposed to
    /// etcd answering with an error.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::StreamClosed(_) | Error::Timeout(_) => true,
            Error::Request { source, .. } => match source {
                etcd_client::Error::IoError(_) | etcd_client::Error::TransportError(_) => true,
                etcd_client::Error::GRpcStatus(s) => matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                        | tonic::Code::Unknown
                ),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether etcd said the lease is gone (expired or revoked).
    pub fn is_lease_gone(&self) -> bool {
        match self {
            Error::LeaseLost(_) => true,
            Error::Request { source: etcd_client::Error::GRpcStatus(s), .. } => {
                s.code() == tonic::Code::NotFound || s.message().contains("requested lease not found")
            }
            _ => false,
        }
    }

    /// A failed request.
    pub(crate) fn request(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
        move |source| Error::Request { op, source }
    }
}
