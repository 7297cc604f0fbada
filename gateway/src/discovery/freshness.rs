//! Whether what the gateway knows is fresh: the watcher is connected, it can read Consul's
//! catalog (its `consul` status: a 403 for want of ACL permissions shows here), it can read each
//! service from Consul, and (when services opt in by tag) it has listed what it follows since it
//! connected. Stale data is still served (an outage of the registry must not become an outage of
//! the traffic); this only reports it, in the log and on `/readyz` and `/services`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tracing::{info, warn};

/// The watcher's connection and Consul's reachability, per service.
#[derive(Debug, Default)]
pub struct Freshness {
    watcher_connected: AtomicBool,
    /// Whether the watcher's list of followed services arrived since it connected.
    listed: AtomicBool,
    /// Services the watcher cannot read, with why.
    unreadable: Mutex<HashMap<String, String>>,
    /// Why the watcher cannot read Consul's catalog, if it cannot, and whether for want of ACL
    /// permissions.
    consul: Mutex<Option<(String, bool)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Freshness {
    /// Records whether the watcher can read `service` from Consul (`Some(why)` when not); logs
    /// the flips.
    pub fn set_readable(&self, service: &str, error: Option<String>) {
        let mut unreadable = lock(&self.unreadable);
        match error {
            Some(e) => {
                if unreadable.insert(service.to_string(), e.clone()).is_none() {
                    warn!(service, error = %e, "watcher cannot read the service from Consul; serving the last known instances");
                }
            }
            None => {
                if unreadable.remove(service).is_some() {
                    info!(service, "watcher reads the service from Consul again");
                }
            }
        }
    }

    /// Records whether the watcher can read Consul's catalog (`Some(why)` when not, `denied`
    /// when for want of ACL permissions); logs once per change of state (readable, unreadable,
    /// denied), never per retry, while `/readyz` shows the latest error. The error comes from the
    /// `consul` crate, which never puts the token in a message.
    pub fn set_consul(&self, error: Option<String>, denied: bool) {
        let mut consul = lock(&self.consul);
        let was = consul.as_ref().map(|(_, d)| *d);
        let now = error.as_ref().map(|_| denied);
        if was != now {
            match &error {
                Some(e) if denied => {
                    warn!(error = %e, "Consul refuses the gateway's reads (ACL); serving the last known instances, not ready")
                }
                Some(e) => {
                    warn!(error = %e, "the watcher cannot read Consul's catalog; serving the last known instances, not ready")
                }
                None => info!("the watcher reads Consul's catalog again"),
            }
        }
        *consul = error.map(|e| (e, denied));
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
    }
}
