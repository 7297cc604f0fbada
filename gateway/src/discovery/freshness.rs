//! Whether what the gateway knows is fresh: the watcher is connected, it can read Consul's
//! catalog (its `consul` status: a 403 for want of ACL permissions shows here), it can read each
//! service from Consul, and (when services opt in by tag) it has listed what it follows since it
//! connected. Stale data is still served (an outage of the registry must not become an outage of
//! the traffic); this only reports it, in the log, on `/readyz` and `/services`, and in the
//! metrics (`gateway_stale`, `gateway_consul_last_success_age_seconds`,
//! `gateway_watcher_restarts_total`).
//!
//! Each change of state it logs is also returned as a line, for the caller to publish on the
//! change feed (`Kind::Source`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use watcher::source::SourceKind;

/// The watcher's connection and Consul's reachability, per service.
#[derive(Debug)]
pub struct Freshness {
    watcher_connected: AtomicBool,
    /// Whether the watcher's list of followed services arrived since it connected.
    listed: AtomicBool,
    /// Services the watcher cannot read, with why.
    unreadable: Mutex<HashMap<String, String>>,
    /// Why the watcher cannot read Consul's catalog, if it cannot, and whether for want of ACL
    /// permissions.
    consul: Mutex<Option<(String, bool)>>,
    /// Whether everything was fresh at the last change of state, and when that was (at first:
    /// not fresh, since the start).
    fresh: Mutex<(bool, Instant)>,
    /// Times the watcher process exited and was started again.
    watcher_restarts: AtomicU64,
    /// The registry the watcher follows, for messages (set once at start; default Consul).
    source: OnceLock<SourceKind>,
    /// The state file served from at start, as `<path> written at <time>` (`--state-file`).
    state_file: OnceLock<String>,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            watcher_connected: AtomicBool::new(false),
            listed: AtomicBool::new(false),
            unreadable: Mutex::default(),
            consul: Mutex::default(),
            fresh: Mutex::new((false, Instant::now())),
            watcher_restarts: AtomicU64::new(0),
            source: OnceLock::new(),
            state_file: OnceLock::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Freshness {
    /// Records whether the watcher can read `service` from Consul (`Some(why)` when not); logs
    /// the flips, and returns the flip's line.
    pub fn set_readable(&self, service: &str, error: Option<String>) -> Option<String> {
        let mut unreadable = lock(&self.unreadable);
        let line = match error {
            Some(e) => {
                if unreadable.insert(service.to_string(), e.clone()).is_none() {
                    warn!(service, error = %e, "watcher cannot read the service from Consul; serving the last known instances");
                    Some(format!(
                        "{service}: the watcher cannot read it from Consul ({e}); serving the last known instances"
                    ))
                } else {
                    None
                }
            }
            None => {
                if unreadable.remove(service).is_some() {
                    info!(service, "watcher reads the service from Consul again");
                    Some(format!("{service}: the watcher reads it from Consul again"))
                } else {
                    None
                }
            }
        };
        drop(unreadable);
        self.update_fresh();
        line
    }

    /// Says which registry the watcher follows (once, at start), so messages name it.
    pub fn set_source(&self, source: SourceKind) {
        let _ = self.source.set(source);
    }

    /// The registry the watcher follows (Consul unless [`Freshness::set_source`] said otherwise).
    pub fn source(&self) -> SourceKind {
        self.source.get().copied().unwrap_or_default()
    }

    /// Says which state file the gateway served from at start (once), for `/readyz`.
    pub fn set_state_file(&self, described: String) {
        let _ = self.state_file.set(described);
    }

    /// The state file served from at start, as `<path> written at <time>`, if any.
    pub fn state_file(&self) -> Option<String> {
        self.state_file.get().cloned()
    }

    /// What the watcher reads, in words: "Consul's catalog", "etcd", "the DNS server".
    fn registry(&self) -> &'static str {
        match self.source() {
            SourceKind::Consul => "Consul's catalog",
            SourceKind::Etcd => "etcd",
            SourceKind::Dns => "the DNS server",
        }
    }

    /// Records whether the watcher can read Consul's catalog (`Some(why)` when not, `denied`
    /// when for want of ACL permissions); logs once per change of state (readable, unreadable,
    /// denied), never per retry, while `/readyz` shows the latest error, and returns the change's
    /// line. The error comes from the `consul` crate, which never puts the token in a message.
    pub fn set_consul(&self, error: Option<String>, denied: bool) -> Option<String> {
        let mut consul = lock(&self.consul);
        let was = consul.as_ref().map(|(_, d)| *d);
        let now = error.as_ref().map(|_| denied);
        let line = if was != now {
            Some(match &error {
                Some(e) if denied => {
                    warn!(error = %e, "Consul refuses the gateway's reads (ACL); serving the last known instances, not ready");
                    format!("Consul refuses the gateway's reads (ACL): {e}")
                }
                Some(e) => {
                    let what = self.registry();
                    warn!(error = %e, "the watcher cannot read {what}; serving the last known instances, not ready");
                    format!("the watcher cannot read {what}: {e}")
                }
                None => {
                    let line = format!("the watcher reads {} again", self.registry());
                    info!("{line}");
                    line
                }
            })
        } else {
            None
        };
        *consul = error.map(|e| (e, denied));
        drop(consul);
        self.update_fresh();
        line
    }

    /// Why the watcher cannot read Consul's catalog, if it cannot.
    pub fn consul_reason(&self) -> Option<String> {
        lock(&self.consul).as_ref().map(|(e, _)| e.clone())
    }

    /// Records whether the watcher is connected; a new connection has listed nothing yet, and
    /// says anew whether it can read Consul.
    pub fn set_watcher_connected(&self, connected: bool) {
        self.watcher_connected.store(connected, Ordering::Relaxed);
        if connected {
            self.listed.store(false, Ordering::Relaxed);
            *lock(&self.consul) = None;
        }
        self.update_fresh();
    }

    /// Whether the watcher is connected now.
    pub fn watcher_connected(&self) -> bool {
        self.watcher_connected.load(Ordering::Relaxed)
    }

    /// Whether the watcher is connected, Consul's catalog readable and every service readable.
    fn is_fresh_now(&self) -> bool {
        self.watcher_connected.load(Ordering::Relaxed)
            && lock(&self.consul).is_none()
            && lock(&self.unreadable).is_empty()
    }

    /// Notes a change of state: when data stops being fresh, that moment is the last success.
    fn update_fresh(&self) {
        let now_fresh = self.is_fresh_now();
        let mut fresh = lock(&self.fresh);
        if fresh.0 != now_fresh {
            *fresh = (now_fresh, Instant::now());
        }
    }

    /// Whether what the gateway serves may be out of date: the watcher is not connected, or it
    /// cannot read Consul's catalog or a followed service.
    pub fn is_stale(&self) -> bool {
        !self.is_fresh_now()
    }

    /// How long since the watcher last read Consul successfully as far as the gateway knows:
    /// zero while it is connected and reports no read failure (it follows Consul with blocking
    /// queries and reports failures as they happen), else the time since that stopped being so
    /// (since the start when it never was so).
    pub fn last_success_age(&self) -> Duration {
        let fresh = lock(&self.fresh);
        if fresh.0 {
            Duration::ZERO
        } else {
            fresh.1.elapsed()
        }
    }

    /// Counts one restart of the watcher process.
    pub fn watcher_restarted(&self) {
        self.watcher_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Times the watcher process exited and was started again.
    pub fn watcher_restarts(&self) -> u64 {
        self.watcher_restarts.load(Ordering::Relaxed)
    }

    /// Why the data of `service` may be out of date, if it may be.
    pub fn stale_reason(&self, service: &str) -> Option<String> {
        if !self.watcher_connected.load(Ordering::Relaxed) {
            return Some("watcher not connected".to_string());
        }
        lock(&self.unreadable).get(service).map(|e| format!("cannot read it from Consul: {e}"))
    }

    /// The watcher listed what it follows.
    pub(super) fn listed(&self) {
        self.listed.store(true, Ordering::Relaxed);
    }

    /// Whether the watcher listed what it follows since it connected.
    pub(super) fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    /// Forgets a service that is no longer followed.
    pub(super) fn forget(&self, service: &str) {
        lock(&self.unreadable).remove(service);
        self.update_fresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_registry_the_watcher_follows() {
        let f = Freshness::default();
        assert_eq!(f.source(), SourceKind::Consul);
        let line = f.set_consul(Some("refused".into()), false).expect("a change");
        assert_eq!(line, "the watcher cannot read Consul's catalog: refused");

        let f = Freshness::default();
        f.set_source(SourceKind::Etcd);
        assert_eq!(
            f.set_consul(Some("refused".into()), false).as_deref(),
            Some("the watcher cannot read etcd: refused")
        );
        assert_eq!(f.set_consul(None, false).as_deref(), Some("the watcher reads etcd again"));
        f.set_source(SourceKind::Dns);
        assert_eq!(f.source(), SourceKind::Etcd, "set once, at start");
    }
}
