//! Streams mode: one blocking query per followed service, as HTTP/2 streams over a few
//! connections to Consul's HTTPS API.
//!
//! Over HTTP/1.1 each long poll holds a connection of its own, and Consul refuses more than
//! `limits.http_max_conns_per_client` (200) from one address; the multiplexed mode ([`crate::mux`])
//! stays within a handful of connections, but learns *which* service changed by re-reading every
//! check in the cluster on each change, a cost that grows with the cluster, not with the change.
//! Over HTTP/2 a long poll is a stream: one connection carries up to the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (250 on Consul 1.8, Go's default), so the per-service loops
//! of [`crate::watch`] fit in `ceil(services / per_connection)` connections, and a change costs
//! one answer, for the one service that changed.
//!
//! The HTTP client opens one connection per [`Client`] and queues the streams beyond the server's
//! limit until one ends (measured against Consul 1.8.7: it never opens a second connection), and a
//! queued long poll is a change seen late. So [`Pool`] holds several clients, each with its own
//! connection ([`Client::separate`]), and [`Spread`] decides which one carries which service:
//! the least loaded connection with room, a new connection when all are full, never more than
//! `max_connections`. Past that it still places services (least loaded first) and says so: their
//! long polls wait for a free stream. They wait here, on a semaphore of `per_connection` permits
//! per connection ([`Lane`]), not in the HTTP client: measured at 5,000 services on 16
//! connections, a client pushed past the server's 250 streams now and then opened another
//! connection (19 in all), so the cap would not hold.
//!
//! The clients speak HTTP/2 from the first byte ([`Client::http2_only`], once Consul was seen to
//! take `h2`): left to ALPN, the HTTP client cannot know that a connection being set up will be
//! shared, and every long poll started before the first handshake ends opens a connection of its
//! own (measured at 2,500 services: thousands of connection attempts, reset by Consul's
//! per-client limit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use consul::Client;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Streams per connection by default: Consul 1.8's limit (250) less room for the follower's
/// catalog query and a few non-blocking reads.
pub const DEFAULT_STREAMS_PER_CONNECTION: usize = 240;
/// Connections by default: the watcher's budget.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// Which connection carries which service. Pure: no I/O.
#[derive(Debug)]
pub struct Spread {
    per_connection: usize,
    max_connections: usize,
    /// Services per connection, by connection number.
    load: Vec<usize>,
    at: HashMap<String, usize>,
}

impl Spread {
    /// An empty spread: connections carry up to `per_connection` streams (at least 1), and at most
    /// `max_connections` (at least 1) are opened.
    pub fn new(per_connection: usize, max_connections: usize) -> Self {
        Self {
            per_connection: per_connection.max(1),
            max_connections: max_connections.max(1),
            load: Vec::new(),
            at: HashMap::new(),
        }
    }

    /// The connection that carries `service` (placing it if new): the least loaded one with
    /// room (the lowest number among equals), else a new one, else (all `max_connections` full)
    /// the least loaded.
    pub fn assign(&mut self, service: &str) -> usize {
        if let Some(&c) = self.at.get(service) {
            return c;
        }
        let least = (0..self.load.len()).min_by_key(|&c| (self.load[c], c));
        let c = match least {
            Some(c) if self.load[c] < self.per_connection => c,
            _ if self.load.len() < self.max_connections => {
                self.load.push(0);
                self.load.len() - 1
            }
            Some(c) => c,
            None => unreachable!("max_connections >= 1"),
        };
        self.load[c] += 1;
        self.at.insert(service.to_string(), c);
        c
    }

    /// Frees the stream of a service that is no longer watched.
    pub fn release(&mut self, service: &str) {
        if let Some(c) = self.at.remove(service) {
            self.load[c] -= 1;
        }
    }

    /// Connections opened so far.
    pub fn connections(&self) -> usize {
        self.load.len()
    }

    /// Streams per connection, by connection number.
    pub fn load(&self) -> &[usize] {
        &self.load
    }

    /// Streams beyond what the connections carry at once (they wait for a free stream).
    pub fn over(&self) -> usize {
        self.load.iter().map(|l| l.saturating_sub(self.per_connection)).sum()
    }
}

/// Clients to one Consul agent, each with a connection of its own, handed out per service as
/// [`Spread`] says. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Mutex<PoolInner>>,
}

/// What carries one service's long polls: a client (one connection) and, in streams mode, the
/// permits that keep that connection's long polls within the server's stream limit.
#[derive(Clone, Debug)]
pub struct Lane {
    /// The client, shared by every service on the same connection.
    pub client: Client,
    /// One permit per long poll in flight on this connection; `None`: unbounded.
    pub permits: Option<Arc<Semaphore>>,
}

#[derive(Debug)]
struct PoolInner {
    template: Client,
    clients: Vec<Lane>,
    spread: Spread,
    /// Whether the last placement was over capacity (to warn once per crossing).
    warned: bool,
}

impl Pool {
    /// A pool of clients like `template` (the first one *is* `template`, the others
    /// [`Client::separate`] from it), `per_connection` streams each, at most `max_connections`.
    /// Streams mode passes a [`Client::http2_only`] template: each client then opens exactly
    /// one connection, however many long polls start on it at once.
    pub fn new(template: Client, per_connection: usize, max_connections: usize) -> Self {
        let inner = PoolInner {
            clients: Vec::new(),
            template,
            spread: Spread::new(per_connection, max_connections),
            warned: false,
        };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    /// The lane that carries `service`'s long polls (placing it if new).
    pub fn assign(&self, service: &str) -> Lane {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let c = inner.spread.assign(service);
        while inner.clients.len() <= c {
            let client = if inner.clients.is_empty() { inner.template.clone() } else { inner.template.separate() };
            let per = inner.spread.per_connection;
            let permits = (per < Semaphore::MAX_PERMITS).then(|| Arc::new(Semaphore::new(per)));
            inner.clients.push(Lane { client, permits });
            info!(connections = inner.clients.len(), "another HTTP/2 connection to Consul for the long polls");
        }
        let over = inner.spread.over();
        if over > 0 && !inner.warned {
            warn!(
                streams_waiting = over,
                connections = inner.spread.connections(),
                "more services than the connections carry at once: their long polls wait for a free stream \
                 (changes seen late); raise --max-connections (Consul allows 200 per client address)"
            );
        }
        inner.warned = over > 0;
        inner.clients[c].clone()
    }

    /// Frees the stream of a service no longer watched.
    pub fn release(&self, service: &str) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).spread.release(service);
    }

    /// Streams per connection, by connection number.
    pub fn load(&self) -> Vec<usize> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).spread.load().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_open_only_when_the_open_ones_are_full() {
        let mut s = Spread::new(3, 16);
        let placed: Vec<usize> = (0..7).map(|i| s.assign(&format!("s{i}"))).collect();
        assert_eq!(placed, [0, 0, 0, 1, 1, 1, 2], "ceil(7 / 3) = 3 connections");
        assert_eq!((s.connections(), s.load(), s.over()), (3, &[3, 3, 1][..], 0));
        // A service already placed keeps its connection.
        assert_eq!(s.assign("s4"), 1);
        assert_eq!(s.load(), [3, 3, 1]);
    }

    #[test]
    fn freed_streams_are_reused_least_loaded_first() {
        let mut s = Spread::new(3, 16);
        for i in 0..7 {
            s.assign(&format!("s{i}"));
        }
        s.release("s0");
        s.release("s1");
        s.release("s3");
        s.release("unknown");
        assert_eq!(s.load(), [1, 2, 1]);
        // Least loaded, lowest number first; no new connection while one has room.
        assert_eq!(s.assign("a"), 0);
        assert_eq!(s.assign("b"), 2);
        assert_eq!(s.assign("c"), 0);
        assert_eq!(s.assign("d"), 1);
        assert_eq!(s.assign("e"), 2);
        assert_eq!((s.connections(), s.load()), (3, &[3, 3, 3][..]));
        // A released service placed again is a new stream.
        s.release("a");
        assert_eq!(s.assign("a"), 0);
    }

    #[test]
    fn past_the_cap_services_go_to_the_least_loaded_and_are_counted_as_waiting() {
        let mut s = Spread::new(2, 2);
        let placed: Vec<usize> = (0..7).map(|i| s.assign(&format!("s{i}"))).collect();
        assert_eq!(placed, [0, 0, 1, 1, 0, 1, 0]);
        assert_eq!((s.connections(), s.load(), s.over()), (2, &[4, 3][..], 3));
        s.release("s0");
        s.release("s2");
        assert_eq!(s.over(), 1);
    }

    #[test]
    fn the_issue_sizes() {
        // 2,500 followed services and the follower's query: 11 connections of <= 240 streams.
        let mut s = Spread::new(DEFAULT_STREAMS_PER_CONNECTION, DEFAULT_MAX_CONNECTIONS);
        for i in 0..2_501 {
            s.assign(&format!("s{i}"));
        }
        assert_eq!((s.connections(), s.over()), (11, 0));
        // 5,000: 21 connections needed; 16 carry 3,840 at once.
        for i in 2_501..5_001 {
            s.assign(&format!("s{i}"));
        }
        assert_eq!((s.connections(), s.over()), (16, 5_001 - 16 * 240));
        let mut wide = Spread::new(DEFAULT_STREAMS_PER_CONNECTION, 21);
        for i in 0..5_001 {
            wide.assign(&format!("s{i}"));
        }
        assert_eq!((wide.connections(), wide.over()), (21, 0));
    }

    #[test]
    fn the_pool_hands_one_client_per_connection() {
        let client = Client::new("127.0.0.1:1".parse().unwrap(), consul::Token::default());
        let pool = Pool::new(client.clone(), 2, 3);
        let lanes: Vec<Lane> = (0..7).map(|i| pool.assign(&format!("s{i}"))).collect();
        assert_eq!(pool.load(), [3, 2, 2]);
        assert_eq!(pool.inner.lock().unwrap().clients.len(), 3);
        // Services on one connection share its permits: 2 long polls in flight, however many.
        let same = |a: &Lane, b: &Lane| Arc::ptr_eq(a.permits.as_ref().unwrap(), b.permits.as_ref().unwrap());
        assert!(same(&lanes[0], &lanes[1]) && same(&lanes[0], &lanes[6]) && !same(&lanes[0], &lanes[2]));
        assert_eq!(lanes[0].permits.as_ref().unwrap().available_permits(), 2);
        pool.release("s0");
        assert_eq!(pool.load(), [2, 2, 2]);
        // Per-service mode: one client, no bound.
        let one = Pool::new(client, usize::MAX, 1);
        assert!((0..300).map(|i| one.assign(&format!("s{i}"))).all(|l| l.permits.is_none()));
        assert_eq!(one.load(), [300]);
    }
}
