//! What can go wrong talking to Consul.

/// An error from the Consul client. Messages never contain the ACL token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured address cannot be used.
    #[error("invalid Consul address {addr:?}: {why}")]
    InvalidAddress {
        /// What was given.
        addr: String,
        /// Why it was refused.
        why: String,
    },
    /// The TLS settings cannot be used (see [`crate::tls`]).
    #[error("TLS to Consul: {why}")]
    Tls {
        /// Why.
        why: String,
    },
    /// A service or check name that cannot be put in a URL path safely.
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.' only")]
    InvalidName(String),
    /// A `--health-status` list that cannot be used (see [`crate::health`]).
    /// (The message leaves out the value: clap, which reports it, names it already.)
    #[error("{why}; use passing, or passing,warning")]
    InvalidHealthStatus {
        /// What was given.
        value: String,
        /// Why it was refused.
        why: String,
    },
    /// Consul could not be reached, or the request timed out.
    #[error("Consul request to {endpoint} failed: {}", chain(source))]
    Transport {
        /// The API path, without query.
        endpoint: String,
        /// The underlying client error.
        #[source]
        source: reqwest::Error,
    },
    /// Consul answered with a non-success status.
    #[error("Consul answered {status} for {endpoint}: {body}")]
    Status {
        /// The API path, without query.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Consul's answer could not be decoded.
    #[error("cannot decode Consul's answer for {endpoint}: {why}")]
    Decode {
        /// The API path, without query.
        endpoint: String,
        /// The decoder's message.
        why: String,
    },
}

impl Error {
    /// Whether the error says Consul could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Transport { .. })
    }

    /// The HTTP status Consul answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An error and its causes on one line: reqwest's top-level message alone ("error sending
/// request") does not say that the connection was refused.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}
