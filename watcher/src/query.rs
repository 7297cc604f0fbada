//! The blocking-query loop, written once. Every loop that long-polls Consul (per service, per
//! node, the checks, the catalog) turns through a [`Query`]: wait out the backoff a failure left
//! owing ([`Retry`]), take a token of its [`TokenBucket`] (so a server that answers at once, forever,
//! never makes a busy loop), read at its cursor's index as Consul's documentation asks (block
//! on the last index, never on 0, reset when it goes backwards, read afresh after a failure), and
//! log once per change of state ([`Retry`]), the other failures at DEBUG. What an answer means
//! stays with the loop, which ends when its caller stops turning it (a dropped receiver, an
//! aborted task), as linkerd2-proxy's DNS resolution loop does.

use std::future::Future;
use std::time::Duration;

use common::backoff::{Backoff, TokenBucket};
use consul::index::{self, Next};
use tracing::{debug, info, warn};

use crate::watch::WatchConfig;

/// Where a loop stands: the index to block on, and whether everything it knew must be re-read
/// (first answer, an index reset, or a failure before it).
#[derive(Debug)]
struct Cursor {
    index: u64,
    fresh: bool,
}

impl Cursor {
    /// Goes on from an index read earlier (0: a fresh start).
    fn at(index: u64) -> Self {
        Self { index, fresh: index == 0 }
    }

    /// Applies an answer's index ([`consul::index::next`]); true if everything must be re-read.
    fn advance(&mut self, what: &str, returned: u64) -> bool {
        let everything = std::mem::replace(&mut self.fresh, false);
        match index::next(self.index, returned) {
            Next::Reset => {
                warn!(
                    what,
                    from = self.index,
                    to = returned,
                    "Consul index went backwards (restart or restore); re-reading"
                );
                self.index = 0;
                true
            }
            Next::Block(i) => {
                self.index = i;
                everything
            }
        }
    }

    /// After a failure Consul may have restarted with an index below ours, and blocking on ours
    /// would hang until the new one overtakes it (up to `wait`): the next read is a fresh one.
    fn failed(&mut self) {
        *self = Self::at(0);
    }
}

/// After an error: the backoff, the delay still owed, and whether the loop is failing, so that it
/// logs once per change of state, not once per retry (a token without permission fails every
/// retry alike). Failures of one kind (variant and HTTP status) are one state: a transport error's
/// text varies between attempts (a refused TLS handshake: a broken pipe, a closed connection...).
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    owed: Option<Duration>,
    /// The current failure's kind: the error's variant and HTTP status.
    failing: Option<(std::mem::Discriminant<consul::Error>, Option<u16>)>,
}

impl Retry {
    /// Backs off from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { backoff: Backoff::new(min, max), owed: None, failing: None }
    }

    /// A success; true if it ends a failure (the caller logs that).
    pub fn succeeded(&mut self) -> bool {
        self.backoff.reset();
        self.failing.take().is_some()
    }

    /// A failure: whether it is news (for a WARN; the rest at DEBUG), and the delay now owed
    /// before the next attempt ([`Retry::pause`]).
    pub fn failed(&mut self, error: &consul::Error) -> (bool, Duration) {
        let delay = self.backoff.next_delay();
        self.owed = Some(delay);
        let kind = Some((std::mem::discriminant(error), error.status()));
        (std::mem::replace(&mut self.failing, kind) != kind, delay)
    }

    /// Waits out the delay the last failure left owing, if any.
    pub async fn pause(&mut self) {
        if let Some(delay) = self.owed.take() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// An answer that carries its `X-Consul-Index`.
pub trait HasIndex {
    /// The answer's `X-Consul-Index`.
    fn index(&self) -> u64;
}

impl HasIndex for consul::QueryResult {
    fn index(&self) -> u64 {
        self.index
    }
}

impl<T> HasIndex for consul::cluster::Indexed<T> {
    fn index(&self) -> u64 {
        self.index
    }
}

/// What a loop reads, which its logs name.
#[derive(Debug)]
pub enum Subject {
    /// One service's instances (the `service` field).
    Service(String),
    /// A cluster-wide query: its endpoint, and what its messages call it.
    Cluster(&'static str, &'static str),
    /// One catalog node: failures at DEBUG only (the cluster-wide loops report Consul's outages).
    Node(String),
}

/// `/v1/health/state/any`.
pub const CHECKS: Subject = Subject::Cluster("health/state/any", "Consul's checks");
/// `/v1/catalog/services`.
pub const CATALOG: Subject = Subject::Cluster("catalog/services", "the catalog's services");

impl Subject {
    /// The name an index reset is logged under.
    fn name(&self) -> &str {
        match self {
            Subject::Service(name) | Subject::Node(name) => name,
            Subject::Cluster(endpoint, _) => endpoint,
        }
    }

    fn recovered(&self) {
        match self {
            Subject::Service(service) => info!(service, "the service can be read from Consul again"),
            Subject::Cluster(_, what) => info!("{what} can be read again"),
            Subject::Node(_) => {}
        }
    }

    fn failed(&self, error: &consul::Error, news: bool, delay: Duration) {
        let retry_in_ms = delay.as_millis() as u64;
        match (self, news) {
            (Subject::Service(service), true) => {
                warn!(service, error = %error, "cannot read the service from Consul; retrying with backoff (logged again when this changes)")
            }
            (Subject::Service(service), false) => {
                debug!(service, error = %error, retry_in_ms, "cannot read the service from Consul")
            }
            (Subject::Cluster(_, what), true) => {
                warn!(error = %error, "cannot read {what}; retrying with backoff (logged again when this changes)")
            }
            (Subject::Cluster(_, what), false) => debug!(error = %error, retry_in_ms, "cannot read {what}"),
            (Subject::Node(node), _) => debug!(node, error = %error, "node watch failed"),
        }
    }
}

/// One answer of a [`Query`].
#[derive(Debug)]
pub struct Answer<T> {
    /// The answer itself.
    pub value: T,
    /// Whether its index moved since the one the read blocked on (else the query timed out).
    pub moved: bool,
    /// Whether everything must be re-read: the first answer, or one after a reset or a failure.
    pub everything: bool,
}

/// One blocking-query loop: its cursor, rate limit and backoff. See the module docs.
#[derive(Debug)]
pub struct Query {
    subject: Subject,
    cursor: Cursor,
    bucket: TokenBucket,
    retry: Retry,
}

impl Query {
    /// A loop paced and backed off as `cfg` says, going on from `index` (0: a fresh start; else,
    /// say, the index a scan read a node at).
    pub fn new(subject: Subject, cfg: &WatchConfig, index: u64) -> Self {
        let (bucket, retry) = (TokenBucket::new(cfg.burst, cfg.rate), Retry::new(cfg.backoff_min, cfg.backoff_max));
        Self { subject, cursor: Cursor::at(index), bucket, retry }
    }

    /// One turn: waits out the backoff a failure left owing, then for a token, then runs `read`
    /// at the index to block on (0: a fresh, non-blocking read) and moves the cursor on.
    ///
    /// # Errors
    /// `read`'s error, already logged; the next turn reads afresh, after a backoff.
    pub async fn next<T, F, Fut>(&mut self, read: F) -> Result<Answer<T>, consul::Error>
    where
        T: HasIndex,
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<T, consul::Error>>,
    {
        self.retry.pause().await;
        self.bucket.take().await;
        let before = self.cursor.index;
        match read(before).await {
            Ok(value) => {
                if self.retry.succeeded() {
                    self.subject.recovered();
                }
                let everything = self.cursor.advance(self.subject.name(), value.index());
                Ok(Answer { moved: value.index() != before, everything, value })
            }
            Err(e) => {
                self.cursor.failed();
                let (news, delay) = self.retry.failed(&e);
                self.subject.failed(&e, news, delay);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consul::cluster::Indexed;
    use tokio::time::Instant;

    fn cfg() -> WatchConfig {
        WatchConfig {
            rate: 10.0,
            burst: 3,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            ..WatchConfig::default()
        }
    }

    fn down() -> consul::Error {
        consul::Error::Status { endpoint: "/v1/health/state/any".into(), status: 500, body: "down".into() }
    }

    /// One turn answering `result` (an index, or a failure); returns the index the read was
    /// made at and the answer's (moved, everything).
    async fn turn(q: &mut Query, result: Option<u64>) -> (u64, Option<(bool, bool)>) {
        let mut asked = None;
        let answer = q
            .next(|index| {
                asked = Some(index);
                std::future::ready(result.map(|index| Indexed { index, value: () }).ok_or_else(down))
            })
            .await;
        (asked.unwrap_or(u64::MAX), answer.ok().map(|a| (a.moved, a.everything)))
    }

    #[tokio::test(start_paused = true)]
    async fn blocks_on_the_last_index_and_resets_when_it_goes_backwards() {
        let mut q = Query::new(CHECKS, &cfg(), 0);
        assert_eq!(turn(&mut q, Some(10)).await, (0, Some((true, true))), "first answer: everything");
        assert_eq!(turn(&mut q, Some(10)).await, (10, Some((false, false))), "timed out: nothing moved");
        assert_eq!(turn(&mut q, Some(12)).await, (10, Some((true, false))));
        // Consul restarted with an empty state.
        assert_eq!(turn(&mut q, Some(7)).await, (12, Some((true, true))), "a reset: everything");
        assert_eq!(turn(&mut q, Some(7)).await, (0, Some((true, false))), "then a fresh read, not a block on 12");
        assert_eq!(turn(&mut q, Some(8)).await, (7, Some((true, false))));
        let mut q = Query::new(CHECKS, &cfg(), 0);
        assert_eq!(turn(&mut q, Some(0)).await, (0, Some((false, true))));
        assert_eq!(turn(&mut q, Some(1)).await, (1, Some((false, false))), "never blocks on index 0");
        // Going on from an index read earlier (a node watch from its scan): not a first answer.
        let mut q = Query::new(Subject::Node("n1".into()), &cfg(), 42);
        assert_eq!(turn(&mut q, Some(43)).await, (42, Some((true, false))));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_it_backs_off_and_reads_everything_afresh() {
        // A burst large enough that only the backoff paces these reads.
        let mut q = Query::new(Subject::Service("web".into()), &WatchConfig { burst: 20, ..cfg() }, 0);
        assert_eq!(turn(&mut q, Some(1000)).await, (0, Some((true, true))));
        assert_eq!(turn(&mut q, None).await, (1000, None));
        // Jittered delays in [d/2, d], d = 100, 200, 400, 400 ms (capped).
        for (lo, hi) in [(50, 100), (100, 200), (200, 400), (200, 400)] {
            let start = Instant::now();
            assert_eq!(turn(&mut q, None).await, (0, None), "a fresh read after a failure");
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(lo) && waited <= Duration::from_millis(hi), "{waited:?}");
        }
        let start = Instant::now();
        assert_eq!(turn(&mut q, Some(12)).await, (0, Some((true, true))), "everything after a failure");
        assert!(start.elapsed() >= Duration::from_millis(200), "the last failure's backoff was waited out");
        // A success resets the backoff and owes nothing.
        let start = Instant::now();
        assert_eq!(turn(&mut q, Some(13)).await, (12, Some((true, false))));
        assert_eq!(turn(&mut q, None).await, (13, None));
        assert!(start.elapsed() < Duration::from_millis(1), "no wait after a success: {:?}", start.elapsed());
        let start = Instant::now();
        turn(&mut q, Some(14)).await;
        assert!(start.elapsed() <= Duration::from_millis(100), "backoff from the shortest again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_answers_at_once_is_paced_by_the_token_bucket() {
        let mut q = Query::new(CATALOG, &cfg(), 0);
        let start = Instant::now();
        for _ in 0..3 {
            turn(&mut q, Some(5)).await;
        }
        assert!(start.elapsed() < Duration::from_millis(1), "a burst of 3 at once");
        for _ in 0..10 {
            turn(&mut q, Some(5)).await;
        }
        // Ten more at 10/s take about a second: no busy loop.
        assert!(start.elapsed() >= Duration::from_millis(990), "{:?}", start.elapsed());
    }

    #[test]
    fn retry_says_news_only_on_a_change_of_state() {
        let denied = |body: &str| consul::Error::Status {
            endpoint: "/v1/catalog/services".into(),
            status: 403,
            body: body.into(),
        };
        let mut r = Retry::new(Duration::from_millis(100), Duration::from_secs(1));
        assert!(!r.succeeded(), "healthy from the start: nothing to say");
        assert!(r.failed(&denied("ACL not found")).0);
        assert!(!r.failed(&denied("ACL not found")).0, "the same failure again");
        assert!(!r.failed(&denied("Permission denied")).0, "another 403: the same state");
        assert!(r.failed(&down()).0, "another status");
        let filtered =
            consul::Error::Filtered { endpoint: "/v1/catalog/services".into(), what: "service", token: true };
        assert!(r.failed(&filtered).0, "another kind of failure");
        assert!(r.succeeded());
        assert!(!r.succeeded());
        assert!(r.failed(&denied("Permission denied")).0, "failing again after a recovery");
    }
}
