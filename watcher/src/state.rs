//! The latest snapshot and status of every watched service, shared between the watch loops (which
//! write) and the output (which reads).
//!
//! It keeps only the newest value per service, each with a version, so that a reader that
//! reconnects gets every service's current set, and a reader that falls behind skips straight to
//! the newest set instead of replaying old ones (which could otherwise overwrite a newer set).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use consul::Instance;
use tokio::sync::watch;

use crate::protocol::{Message, Snapshot, Status};

#[derive(Debug, Default)]
struct Entry {
    snapshot: Option<(u64, Snapshot)>,
    status: Option<(u64, Status)>,
}

#[derive(Debug, Default)]
struct Inner {
    version: u64,
    services: BTreeMap<String, Entry>,
}

/// Shared state of all watched services. Cheap to clone.
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
    /// An empty state.
    pub fn new() -> Self {
        Self { inner: Arc::default(), changed: watch::Sender::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new instance set for a service.
    pub fn set_snapshot(&self, service: &str, index: u64, instances: Vec<Instance>) {
        let v = {
            let mut inner = self.lock();
            inner.version += 1;
            let v = inner.version;
            let snap = Snapshot { service: service.to_string(), index, instances, tags: vec![] };
            inner.services.entry(service.to_string()).or_default().snapshot = Some((v, snap));
            v
        };
        self.changed.send_replace(v);
    }

    /// Records whether a service can be read; only a flip (or a new error text) makes a message.
    pub fn set_status(&self, service: &str, healthy: bool, error: Option<String>) {
        let v = {
            let mut inner = self.lock();
            let same = inner
                .services
                .get(service)
                .and_then(|e| e.status.as_ref())
                .is_some_and(|(_, s)| s.healthy == healthy && (healthy || s.error == error));
            if same {
                return;
            }
            inner.version += 1;
            let v = inner.version;
            let status = Status { service: service.to_string(), healthy, error };
            inner.services.entry(service.to_string()).or_default().status = Some((v, status));
            v
        };
        self.changed.send_replace(v);
    }

    /// The messages newer than `cursor`, snapshots before statuses, and the new cursor. A cursor
    /// of 0 yields everything known.
    pub fn since(&self, cursor: Cursor) -> (Vec<Message>, Cursor) {
        let inner = self.lock();
        let mut out = Vec::new();
        for e in inner.services.values() {
            if let Some((v, s)) = &e.snapshot {
                if *v > cursor {
                    out.push(Message::Snapshot(s.clone()));
                }
            }
        }
        for e in inner.services.values() {
            if let Some((v, s)) = &e.status {
                if *v > cursor {
                    out.push(Message::Status(s.clone()));
                }
            }
        }
        (out, inner.version)
    }

    /// A receiver that wakes when anything changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
