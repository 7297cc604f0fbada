//! The gateway's own change stream: every instance and route change that is logged is also
//! published here, as one [`Event`], to whoever follows it (the status page's `GET /events`), and
//! counted (the `*_changes_total` metrics). The last [`RECENT`] events are kept, so a new follower
//! starts with the recent history.
//!
//! Publishing never blocks and never fails: a follower that falls behind loses the oldest events
//! (tokio's broadcast channel), and is told how many.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

/// How many past events are kept for a new follower.
pub const RECENT: usize = 100;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A service's instances changed (added, removed, or their address, weight or status).
    Instances,
    /// A route appeared.
    RouteAdded,
    /// A route went away.
    RouteRemoved,
    /// A service is no longer followed (deregistered, untagged, or not listed).
    ServiceGone,
    /// The watcher or Consul changed state (connected, disconnected, unreadable, readable again).
    Source,
}

/// One change: when, what, which service and route, and the log line that said it.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Wall-clock time, RFC 3339 with milliseconds (UTC).
    pub at: String,
    /// What changed.
    pub kind: Kind,
    /// The service it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The route it concerns (as `/routes` shows it), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The change, as the log line states it.
    pub message: String,
}

/// The feed: publish, follow, and the counts of what was published.
pub struct ChangeFeed {
    tx: broadcast::Sender<Arc<Event>>,
    recent: Mutex<VecDeque<Arc<Event>>>,
    instance_changes: AtomicU64,
    route_changes: AtomicU64,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            instance_changes: AtomicU64::new(0),
            route_changes: AtomicU64::new(0),
        }
    }
}

impl ChangeFeed {
    /// Publishes one change to every follower and counts it.
    pub fn publish(&self, kind: Kind, service: Option<&str>, route: Option<&str>, message: impl Into<String>) {
        match kind {
            Kind::Instances => self.instance_changes.fetch_add(1, Ordering::Relaxed),
            Kind::RouteAdded | Kind::RouteRemoved => self.route_changes.fetch_add(1, Ordering::Relaxed),
            Kind::ServiceGone | Kind::Source => 0,
        };
        let event = Arc::new(Event {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            service: service.map(str::to_string),
            route: route.map(str::to_string),
            message: message.into(),
        });
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No follower is not an error.
        let _ = self.tx.send(event);
    }

    /// Follows the feed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// The last [`RECENT`] events, oldest first.
    pub fn recent(&self) -> Vec<Arc<Event>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// How many instance changes were published.
    pub fn instance_changes(&self) -> u64 {
        self.instance_changes.load(Ordering::Relaxed)
    }

    /// How many route changes (added or removed) were published.
    pub fn route_changes(&self) -> u64 {
        self.route_changes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_events_and_counts_add_up() {
        let feed = ChangeFeed::default();
        let mut rx = feed.subscribe();
        feed.publish(Kind::Instances, Some("web"), None, "web: 3 -> 2 instances");
        feed.publish(Kind::RouteAdded, Some("web"), Some("/web"), "route added: /web -> web");
        assert_eq!(rx.recv().await.unwrap().message, "web: 3 -> 2 instances");
        assert_eq!(rx.recv().await.unwrap().kind, Kind::RouteAdded);
        assert_eq!((feed.instance_changes(), feed.route_changes()), (1, 1));
        for i in 0..RECENT + 5 {
            feed.publish(Kind::Source, None, None, format!("{i}"));
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent.last().unwrap().message, format!("{}", RECENT + 4));
    }
}
