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
    /// `CONSUL_HTTP_TOKEN_FILE` names a file that cannot be read (the message never holds a
    /// token).
    #[error("cannot read the ACL token file {path:?} (CONSUL_HTTP_TOKEN_FILE): {why}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why it cannot be read.
        why: String,
    },
    /// An ACL token that no HTTP header can carry (the message never holds the token).
    #[error(
        "the ACL token from {from} holds a control character, which no HTTP header can carry (the value is not shown)"
    )]
    InvalidToken {
        /// Where it came from: the variable, or the file.
        from: String,
    },
    /// A consistency mode other than `default`, `stale` or `consistent`.
    #[error("invalid consistency mode {0:?}: use default, stale or consistent")]
    InvalidConsistency(String),
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
    #[error("Consul request to {endpoint} failed: {}{hint}", chain(source))]
    Transport {
        /// The API path, without query.
        endpoint: String,
        /// The underlying client error.
        #[source]
        source: reqwest::Error,
        /// What to check, if the settings suggest something (else empty): an `https://` client
        /// without a client certificate is told about `verify_incoming`, since a server that
        /// requires one shows only as a closed connection or an alert.
        hint: &'static str,
    },
    /// Consul answered with a non-success status. A 403 (ACL: token unknown, or without the
    /// permission) says which permissions the endpoint needs ([`acl_hint`]).
    #[error("Consul answered {status} for {endpoint}: {body}{}", acl_hint(*status, endpoint))]
    Status {
        /// The API path, without query.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Consul answered, but its ACLs filtered everything out: a read that can never be empty in a
    /// running cluster (every cluster has the `consul` service and at least one node) came back
    /// empty. Consul does not answer 403 for a token that lacks a read permission (or for no
    /// token under `default_policy = "deny"`): it leaves out what the token may not see.
    #[error("Consul's answer for {endpoint} is empty, which no running cluster's is: {} cannot read any {what} (check the ACL token in CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE and its policy: service:read, node:read)", if *token { "the ACL token" } else { "no ACL token was sent (CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE give none) and the anonymous token" })]
    Filtered {
        /// The API path, without query.
        endpoint: String,
        /// What the token cannot see: `service` or `node`.
        what: &'static str,
        /// Whether a token was sent (without one, Consul applies its anonymous token).
        token: bool,
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

    /// Whether Consul refused the request for want of ACL permissions (403: the token is unknown
    /// to Consul, `ACL not found`, or lacks a permission, `Permission denied`).
    /// Also true for an answer its ACLs emptied ([`Error::Filtered`]).
    pub fn is_denied(&self) -> bool {
        self.status() == Some(403) || matches!(self, Error::Filtered { .. })
    }

    /// Whether Consul said that the service or check ID of an agent call is unknown: a 404, or
    /// the 500 older agents answer instead (`Unknown check`, `Unknown service`, and 1.8's
    /// `CheckID "..." does not have associated TTL` for a TTL pass to a check that does not exist
    /// or is not a TTL check). (1.8 answers a deregistration of an unknown service with 200.)
    pub fn is_unknown_id(&self) -> bool {
        match self {
            Error::Status { status: 404, .. } => true,
            Error::Status { status: 500, body, .. } => {
                let body = body.to_ascii_lowercase();
                body.contains("unknown check")
                    || body.contains("unknown service")
                    || body.contains("does not have associated ttl")
            }
            _ => false,
        }
    }

    /// The HTTP status Consul answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// For a 403, what to check: the token (`CONSUL_HTTP_TOKEN` / `CONSUL_HTTP_TOKEN_FILE`) and the
/// permissions the endpoint needs (Consul's ACL rules: reads of the catalog and health need
/// `service:read` and `node:read`; the agent's service endpoints need `service:write`). Empty for
/// any other status.
pub fn acl_hint(status: u16, endpoint: &str) -> &'static str {
    if status != 403 {
        return "";
    }
    if endpoint.starts_with("/v1/agent/") {
        " (check the ACL token in CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE and its policy: service:write on the service)"
    } else {
        " (check the ACL token in CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE and its policy: service:read, node:read)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_are_recognised_in_both_forms() {
        let status = |status, body: &str| Error::Status { endpoint: "/v1/agent/x".into(), status, body: body.into() };
        assert!(status(404, "").is_unknown_id());
        assert!(status(500, "CheckID \"service:nope\" does not have associated TTL").is_unknown_id());
        assert!(status(500, "Unknown service \"x\"").is_unknown_id());
        assert!(status(500, "Unknown check \"x\"").is_unknown_id());
        assert!(!status(500, "rpc error").is_unknown_id());
        assert!(!status(403, "Permission denied").is_unknown_id());
    }

    /// An answer the ACLs emptied for a program that sends no token at all (an empty token file,
    /// a variable not passed on) says so: "check the token" would send the operator to check a
    /// token that is not there.
    #[test]
    fn a_denial_without_a_token_says_that_no_token_was_sent() {
        let without = Error::Filtered { endpoint: "/v1/catalog/services".into(), what: "service", token: false };
        let msg = without.to_string();
        assert!(msg.contains("no ACL token") && msg.contains("CONSUL_HTTP_TOKEN_FILE"), "{msg}");
        let with = Error::Filtered { endpoint: "/v1/catalog/services".into(), what: "service", token: true };
        let msg = with.to_string();
        assert!(!msg.contains("no ACL token") && msg.contains("the ACL token cannot read any service"), "{msg}");
        assert!(msg.contains("service:read, node:read"), "{msg}");
    }
}
