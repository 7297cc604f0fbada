//! Whether a read loop is failing, so that it logs once per change of state (the first failure,
//! another kind of error, the recovery) instead of once per retry: a token without permission
//! makes every retry fail the same way, and a warning per retry would flood the log. Errors count
//! as the same state when they are of one kind (unreachable, the same HTTP status, emptied by
//! ACLs...): the text of a transport error varies from one attempt to the next (a refused TLS
//! handshake shows as a broken pipe, then a closed connection, then a bad-certificate alert).
//!
//! Also [`confirm_empty`]: whether an answer that empties a service is a denial in disguise.

/// The current failure of one read loop, if any.
#[derive(Debug, Default)]
pub struct Outage {
    current: Option<Kind>,
}

/// What makes two failures the same state: the error's variant and HTTP status.
type Kind = (std::mem::Discriminant<consul::Error>, Option<u16>);

fn kind(error: &consul::Error) -> Kind {
    (std::mem::discriminant(error), error.status())
}

impl Outage {
    /// Records a failure; true if it is news (the loop was healthy, or failed otherwise), which
    /// the caller logs at WARN (and the rest at DEBUG).
    pub fn failed(&mut self, error: &consul::Error) -> bool {
        let kind = kind(error);
        let news = self.current != Some(kind);
        self.current = Some(kind);
        news
    }

    /// Records a success; true if it ends a failure, which the caller logs.
    pub fn recovered(&mut self) -> bool {
        self.current.take().is_some()
    }
}

/// Whether an answer that leaves a service with no instance, where it had some (`had`), is to be
/// believed. Consul 1.8 answers a read its token may no longer make with `200 []`, not 403 (a
/// permission taken away while the watcher runs, ACLs turned on under it): publishing that would
/// drop the service's every route, where a denial must keep the last known instances. So such an
/// answer is checked against the catalog ([`consul::Client::check_readable`]: two non-blocking
/// reads, on this rare change only).
///
/// # Errors
/// The denial ([`consul::Error::Filtered`]), or whatever made the check fail: the caller keeps the
/// last set and retries as after a failed read.
pub async fn confirm_empty(
    client: &consul::Client,
    had: bool,
    read: consul::QueryResult,
) -> Result<consul::QueryResult, consul::Error> {
    if had && read.instances.is_empty() {
        client.check_readable().await?;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(body: &str) -> consul::Error {
        consul::Error::Status { endpoint: "/v1/catalog/services".into(), status: 403, body: body.into() }
    }

    #[test]
    fn news_only_on_a_change_of_state() {
        let mut o = Outage::default();
        assert!(!o.recovered(), "healthy from the start: nothing to say");
        assert!(o.failed(&denied("ACL not found")));
        assert!(!o.failed(&denied("ACL not found")), "the same failure again");
        assert!(!o.failed(&denied("Permission denied")), "another 403: the same state");
        let filtered =
            consul::Error::Filtered { endpoint: "/v1/catalog/services".into(), what: "service", token: true };
        assert!(o.failed(&filtered), "another kind of failure");
        assert!(o.recovered());
        assert!(!o.recovered());
        assert!(o.failed(&denied("Permission denied")), "failing again after a recovery");
    }
}
