//! Whether a read loop is failing, so that it logs once per change of state (the first failure,
//! another kind of error, the recovery) instead of once per retry: a token without permission
//! makes every retry fail the same way, and a warning per retry would flood the log. Errors count
//! as the same state when they are of one kind (unreachable, the same HTTP status, emptied by
//! ACLs...): the text of a transport error varies from one attempt to the next (a refused TLS
//! handshake shows as a broken pipe, then a closed connection, then a bad-certificate alert).

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
        let filtered = consul::Error::Filtered { endpoint: "/v1/catalog/services".into(), what: "service" };
        assert!(o.failed(&filtered), "another kind of failure");
        assert!(o.recovered());
        assert!(!o.recovered());
        assert!(o.failed(&denied("Permission denied")), "failing again after a recovery");
    }
}
