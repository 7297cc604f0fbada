//! [`Error`]: what can go wrong between Docker and Consul. Owns no recovery policy; the run loop
//! in [`crate::run`] decides what to retry.

/// An error of the registrator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Docker engine could not be reached or answered with an error.
    #[error("Docker {action}: {source}")]
    Docker {
        /// What was being done, e.g. `inspect 3f2a…`.
        action: String,
        /// The client error.
        #[source]
        source: bollard::errors::Error,
    },
    /// Consul could not be reached or refused a request.
    #[error("Consul {action}: {source}")]
    Consul {
        /// What was being done, e.g. `register host:web:3000`.
        action: String,
        /// The client error (never contains the ACL token).
        #[source]
        source: consul::Error,
    },
    /// The Docker event stream ended.
    #[error("Docker event stream ended")]
    EventsEnded,
}

impl Error {
    /// Wraps a Docker client error with what was being done.
    pub fn docker(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        Error::Docker { action: action.into(), source }
    }

    /// Wraps a Consul client error with what was being done.
    pub fn consul(action: impl Into<String>, source: consul::Error) -> Self {
        Error::Consul { action: action.into(), source }
    }
}
