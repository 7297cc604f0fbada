//! The latest snapshot and status of every followed service, the followed list, and the
//! services that went; shared between the watch loops and the follower (which write) and the
//! output (which reads).
//!
//! It keeps only the newest value per service, each with a version, so that a reader that
//! reconnects gets every service's current set, and a reader that falls behind skips straight to
//! the newest set instead of replaying old ones (which could otherwise overwrite a newer set).
//!
//! Once it knows the followed set ([`State::with_static`], then [`State::apply`]) it takes writes
//! for followed services only: a read that finishes after its service went cannot bring it back.
//! A service that went leaves a tombstone (its `gone` message) for readers already connected; a
//! reader that connects afterwards gets the `services` list, which says the same.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use consul::Instance;
use tokio::sync::watch;
use tracing::debug;

use crate::followed::Change;
use crate::protocol::{ConsulStatus, Gone, Message, Services, Snapshot, Status};

/// Most tombstones kept. Older ones are dropped: a reader that far behind still gets the
/// `services` list, which no longer names them.
const MAX_TOMBSTONES: usize = 1024;

#[derive(Debug, Default)]
struct Entry {
    tags: Vec<String>,
    snapshot: Option<(u64, Snapshot)>,
    status: Option<(u64, Status)>,
}

#[derive(Debug, Default)]
struct Inner {
    version: u64,
    services: BTreeMap<String, Entry>,
    /// Whether only the services in `services` take writes (the followed set is known).
    closed: bool,
    /// The last `services` message.
    list: Option<(u64, Vec<String>)>,
    /// The services that went, with the version of their `gone`.
    gone: BTreeMap<String, (u64, Gone)>,
    /// The last `consul` status.
    consul: Option<(u64, ConsulStatus)>,
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// The entry of a service that takes writes.
    fn writable(&mut self, service: &str) -> Option<&mut Entry> {
        if self.closed {
            let entry = self.services.get_mut(service);
            if entry.is_none() {
                debug!(service, "dropping a write for a service no longer followed");
            }
            entry
        } else {
            Some(self.services.entry(service.to_string()).or_default())
        }
    }
}

/// Shared state of all followed services. Cheap to clone.
#[derive(Clone, Debug)]
pub struct State {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
}

/// A reader's position: which versions it has already seen.
pub type Cursor = u64;

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// An empty state that takes writes for any service and sends no `services` list.
    pub fn new() -> Self {
        Self { inner: Arc::default(), changed: watch::Sender::new(0) }
    }

    /// A state following the static `services` (untagged until told otherwise). With
    /// `announce`, their list is the first `services` message; without, the list waits for the
    /// follower's first [`State::apply`].
    pub fn with_static(services: &[String], announce: bool) -> Self {
        let state = Self::new();
        {
            let mut inner = state.lock();
            inner.closed = true;
            for s in services {
                inner.services.entry(s.clone()).or_default();
            }
            if announce {
                let v = inner.bump();
                inner.list = Some((v, inner.services.keys().cloned().collect()));
            }
        }
        state
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, v: u64) {
        self.changed.send_replace(v);
    }

    /// Records a new instance set for a service.
    pub fn set_snapshot(&self, service: &str, index: u64, instances: Vec<Instance>) {
        let v = {
            let mut inner = self.lock();
            let v = inner.version + 1;
            let Some(entry) = inner.writable(service) else { return };
            let snap = Snapshot { service: service.to_string(), index, tags: entry.tags.clone(), instances };
            entry.snapshot = Some((v, snap));
            inner.version = v;
            v
        };
        self.publish(v);
    }

    /// Records an instance set unless it equals the service's current one; returns whether it
    /// was recorded. (A service followed anew has none, so its first set always is.)
    pub fn set_snapshot_if_changed(&self, service: &str, index: u64, instances: Vec<Instance>) -> bool {
        let same = self
            .lock()
            .services
            .get(service)
            .and_then(|e| e.snapshot.as_ref())
            .is_some_and(|(_, s)| s.instances == instances);
        if !same {
            self.set_snapshot(service, index, instances);
        }
        !same
    }

    /// Whether the set published for `service` has any instance.
    pub fn has_instances(&self, service: &str) -> bool {
        self.lock()
            .services
            .get(service)
            .and_then(|e| e.snapshot.as_ref())
            .is_some_and(|(_, s)| !s.instances.is_empty())
    }

    /// Records whether a service can be read; only a flip (or a new error text) makes a message.
    pub fn set_status(&self, service: &str, healthy: bool, error: Option<String>) {
        let v = {
            let mut inner = self.lock();
            let v = inner.version + 1;
            let Some(entry) = inner.writable(service) else { return };
            let same =
                entry.status.as_ref().is_some_and(|(_, s)| s.healthy == healthy && (healthy || s.error == error));
            if same {
                return;
            }
            entry.status = Some((v, Status { service: service.to_string(), healthy, error }));
            inner.version = v;
            v
        };
        self.publish(v);
    }

    /// Records whether Consul's catalog can be read (`None`: it can; `Some(error)`: why not);
    /// see [`State::set_registry`].
    pub fn set_consul(&self, error: Option<&consul::Error>) {
        self.set_registry(error.is_none(), error.is_some_and(consul::Error::is_denied), error.map(ToString::to_string));
    }

    /// Records whether the registry as a whole can be read (Consul's catalog, etcd's prefix, the
    /// DNS server): `healthy`, or why not (`error`, never holding a secret; `denied` when the
    /// registry refused for want of permissions). Only a flip or another error makes a message
    /// (the wire name stays `consul` for every registry), and nothing is said before the first
    /// failure.
    pub fn set_registry(&self, healthy: bool, denied: bool, error: Option<String>) {
        let status = ConsulStatus { healthy, denied, error };
        let v = {
            let mut inner = self.lock();
            // Nothing to say until something goes wrong: a reader assumes the registry readable.
            let unchanged = match &inner.consul {
                Some((_, s)) => *s == status,
                None => status.healthy,
            };
            if unchanged {
                return;
            }
            let v = inner.bump();
            inner.consul = Some((v, status));
            v
        };
        self.publish(v);
    }

    /// Applies a change of the followed set: the new list, new tags (a service with a snapshot
    /// gets it again with them), and the services that went (dropped, with a tombstone).
    pub fn apply(&self, change: &Change) {
        if change.is_empty() {
            return;
        }
        let v = {
            let mut inner = self.lock();
            inner.closed = true;
            for (service, reason) in &change.gone {
                inner.services.remove(service);
                let v = inner.bump();
                inner.gone.insert(service.clone(), (v, Gone { service: service.clone(), reason: *reason }));
            }
            for (service, tags) in &change.tagged {
                inner.gone.remove(service);
                let v = inner.version + 1;
                let entry = inner.services.entry(service.clone()).or_default();
                entry.tags = tags.clone();
                if let Some((at, snap)) = &mut entry.snapshot {
                    snap.tags = tags.clone();
                    *at = v;
                    inner.version = v;
                }
            }
            if let Some(list) = &change.services {
                let v = inner.bump();
                inner.list = Some((v, list.clone()));
            }
            prune(&mut inner.gone);
            inner.version
        };
        self.publish(v);
    }

    /// The messages newer than `cursor`, and the new cursor: Consul's status, the services that
    /// went (each with its reason), the `services` list, snapshots, then statuses. A cursor of 0 (a new reader)
    /// yields everything known except tombstones: the list says what is followed.
    pub fn since(&self, cursor: Cursor) -> (Vec<Message>, Cursor) {
        let inner = self.lock();
        let mut out: Vec<Message> = newer(&inner.consul, cursor).map(Message::Consul).into_iter().collect();
        // Gones before the list that no longer names them, so a reader learns why a service left
        // before the list would drop it for no stated reason.
        if cursor > 0 {
            out.extend(inner.gone.values().filter(|(v, _)| *v > cursor).map(|(_, g)| Message::Gone(g.clone())));
        }
        if let Some((v, list)) = &inner.list {
            if *v > cursor {
                out.push(Message::Services(Services { services: list.clone() }));
            }
        }
        out.extend(inner.services.values().filter_map(|e| newer(&e.snapshot, cursor)).map(Message::Snapshot));
        out.extend(inner.services.values().filter_map(|e| newer(&e.status, cursor)).map(Message::Status));
        (out, inner.version)
    }

    /// A receiver that wakes when anything changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A versioned value if it is newer than `cursor`.
fn newer<T: Clone>(value: &Option<(u64, T)>, cursor: Cursor) -> Option<T> {
    value.as_ref().filter(|(v, _)| *v > cursor).map(|(_, m)| m.clone())
}

/// Keeps the newest [`MAX_TOMBSTONES`] tombstones.
fn prune(gone: &mut BTreeMap<String, (u64, Gone)>) {
    if gone.len() > MAX_TOMBSTONES {
        let mut versions: Vec<u64> = gone.values().map(|(v, _)| *v).collect();
        versions.sort_unstable();
        let keep_from = versions[versions.len() - MAX_TOMBSTONES];
        gone.retain(|_, (v, _)| *v >= keep_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::GoneReason;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// Each message as `type:service` (`services:a,b` for the list).
    fn kinds(msgs: &[Message]) -> Vec<String> {
        msgs.iter()
            .map(|m| match m {
                Message::Services(l) => format!("services:{}", l.services.join(",")),
                Message::Snapshot(s) => format!("snapshot:{}", s.service),
                Message::Status(s) => format!("status:{}", s.service),
                Message::Gone(g) => format!("gone:{}", g.service),
                Message::Consul(c) => format!("consul:{}", c.healthy),
                Message::Unknown => "unknown".into(),
            })
            .collect()
    }

    fn change(list: Option<&[&str]>, tagged: &[(&str, &[&str])], gone: &[(&str, GoneReason)]) -> Change {
        Change {
            services: list.map(strings),
            added: vec![],
            tagged: tagged.iter().map(|(n, t)| (n.to_string(), strings(t))).collect(),
            gone: gone.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
        }
    }

    #[test]
    fn gones_then_the_list_then_snapshots_and_statuses() {
        let st = State::with_static(&strings(&["s"]), false);
        assert!(st.since(0).0.is_empty(), "no list before the follower's first answer");
        st.set_status("s", true, None);
        st.set_snapshot("s", 1, vec![]);
        st.apply(&change(Some(&["a", "b", "s"]), &[("a", &["gateway"]), ("b", &["gateway"])], &[]));
        st.set_snapshot("b", 2, vec![]);
        st.set_snapshot("a", 3, vec![]);
        st.set_status("a", true, None);
        let (msgs, cur) = st.since(0);
        assert_eq!(kinds(&msgs), ["services:a,b,s", "snapshot:a", "snapshot:b", "snapshot:s", "status:a", "status:s"]);
        st.apply(&change(Some(&["b", "s"]), &[], &[("a", GoneReason::Untagged)]));
        st.set_snapshot("b", 4, vec![]);
        let (msgs, _) = st.since(cur);
        assert_eq!(kinds(&msgs), ["gone:a", "services:b,s", "snapshot:b"]);
        assert!(matches!(&msgs[0], Message::Gone(Gone { reason: GoneReason::Untagged, .. })));
    }

    #[test]
    fn without_a_follower_the_static_list_is_announced_at_once() {
        let st = State::with_static(&strings(&["b", "a"]), true);
        assert_eq!(kinds(&st.since(0).0), ["services:a,b"]);
        // And only the followed services take writes.
        st.set_snapshot("c", 1, vec![]);
        st.set_status("c", false, Some("x".into()));
        assert_eq!(kinds(&st.since(0).0), ["services:a,b"]);
    }

    #[test]
    fn a_service_that_went_leaves_a_tombstone_and_takes_no_late_write() {
        let st = State::with_static(&[], false);
        st.apply(&change(Some(&["a"]), &[("a", &["gateway"])], &[]));
        st.set_snapshot("a", 1, vec![]);
        st.set_status("a", true, None);
        let (_, cur) = st.since(0);
        st.apply(&change(Some(&[]), &[], &[("a", GoneReason::Deregistered)]));
        // A read that was in flight when it went finishes now: dropped.
        st.set_snapshot("a", 2, vec![]);
        st.set_status("a", false, Some("late".into()));
        let (msgs, cur2) = st.since(cur);
        assert_eq!(kinds(&msgs), ["gone:a", "services:"]);
        // A reader connecting now gets the list only.
        assert_eq!(kinds(&st.since(0).0), ["services:"]);
        // It comes back: followed from scratch, the tombstone gone.
        st.apply(&change(Some(&["a"]), &[("a", &["gateway"])], &[]));
        st.set_snapshot("a", 3, vec![]);
        let (msgs, _) = st.since(cur2);
        assert_eq!(kinds(&msgs), ["services:a", "snapshot:a"]);
        assert_eq!(kinds(&st.since(cur).0), ["services:a", "snapshot:a"], "no stale gone after the comeback");
    }

    #[test]
    fn new_tags_alone_resend_the_snapshot_with_them() {
        let st = State::with_static(&strings(&["web"]), false);
        st.set_snapshot("web", 5, vec![Instance::new("w", "n", "127.0.0.1", 1)]);
        assert!(matches!(&st.since(0).0[..], [Message::Snapshot(s)] if s.tags.is_empty()));
        let (_, cur) = st.since(0);
        st.apply(&change(Some(&["web"]), &[("web", &["v2"])], &[]));
        let (msgs, cur) = st.since(cur);
        assert_eq!(kinds(&msgs), ["services:web", "snapshot:web"]);
        let Message::Snapshot(s) = &msgs[1] else { panic!() };
        assert_eq!((s.index, s.tags.clone(), s.instances.len()), (5, strings(&["v2"]), 1));
        // Later sets carry the tags too; a set equal to the current one is not recorded again.
        assert!(!st.set_snapshot_if_changed("web", 6, vec![Instance::new("w", "n", "127.0.0.1", 1)]));
        assert!(st.since(cur).0.is_empty());
        assert!(st.set_snapshot_if_changed("web", 7, vec![]));
        assert!(matches!(&st.since(cur).0[..], [Message::Snapshot(s)] if s.tags == ["v2"] && s.index == 7));
    }

    #[test]
    fn tombstones_are_bounded_newest_kept() {
        let st = State::with_static(&[], false);
        for i in 0..MAX_TOMBSTONES + 10 {
            let name = format!("s{i}");
            st.apply(&change(None, &[(&name, &["gateway"])], &[]));
            st.apply(&change(None, &[], &[(&name, GoneReason::Deregistered)]));
        }
        let gone = st.lock().gone.len();
        assert_eq!(gone, MAX_TOMBSTONES);
        assert!(st.lock().gone.contains_key(&format!("s{}", MAX_TOMBSTONES + 9)));
        assert!(!st.lock().gone.contains_key("s0"));
    }

    #[test]
    fn a_reader_sees_only_the_newest_set_per_service() {
        let st = State::new();
        st.set_snapshot("a", 1, vec![]);
        let (msgs, cur) = st.since(0);
        assert_eq!(msgs.len(), 1);
        st.set_snapshot("a", 2, vec![]);
        st.set_snapshot("a", 3, vec![]);
        st.set_snapshot("b", 4, vec![]);
        let (msgs, _) = st.since(cur);
        let idx: Vec<u64> = msgs
            .iter()
            .map(|m| match m {
                Message::Snapshot(s) => s.index,
                _ => 0,
            })
            .collect();
        assert_eq!(idx, vec![3, 4]);
        // A reconnecting reader gets everything again.
        assert_eq!(st.since(0).0.len(), 2);
    }

    #[test]
    fn consul_status_first_and_only_on_changes() {
        let st = State::with_static(&strings(&["a"]), true);
        st.set_consul(None);
        assert_eq!(kinds(&st.since(0).0), ["services:a"], "readable from the start: nothing to say");
        let denied = consul::Error::Status {
            endpoint: "/v1/catalog/services".into(),
            status: 403,
            body: "ACL not found".into(),
        };
        st.set_consul(Some(&denied));
        let (msgs, cur) = st.since(0);
        assert_eq!(kinds(&msgs), ["consul:false", "services:a"]);
        let Message::Consul(c) = &msgs[0] else { panic!() };
        assert!(c.denied && c.error.as_deref().unwrap().contains("ACL not found"));
        st.set_consul(Some(&denied));
        assert!(st.since(cur).0.is_empty(), "the same failure again: nothing new");
        st.set_consul(None);
        let (msgs, _) = st.since(cur);
        assert!(matches!(&msgs[..], [Message::Consul(ConsulStatus { healthy: true, denied: false, error: None })]));
    }

    #[test]
    fn status_messages_only_on_flips() {
        let st = State::new();
        st.set_status("a", true, None);
        let (_, cur) = st.since(0);
        st.set_status("a", true, None);
        assert!(st.since(cur).0.is_empty());
        st.set_status("a", false, Some("down".into()));
        let (msgs, cur) = st.since(cur);
        assert!(matches!(&msgs[..], [Message::Status(Status { healthy: false, .. })]));
        st.set_status("a", false, Some("down".into()));
        assert!(st.since(cur).0.is_empty());
    }
}
