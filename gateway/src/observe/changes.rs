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

/// An event's message is cut to this many bytes (a service going from 0 to 5,000 instances
/// names every address in its log line; the feed keeps the start), so [`RECENT`] events stay
/// small.
pub const MAX_MESSAGE: usize = 1000;

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
    published: AtomicU64,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            instance_changes: AtomicU64::new(0),
            route_changes: AtomicU64::new(0),
            published: AtomicU64::new(0),
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
        self.published.fetch_add(1, Ordering::Relaxed);
        let event = Arc::new(Event {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind,
            service: service.map(str::to_string),
            route: route.map(str::to_string),
            message: bounded(message.into()),
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

    /// How many events were published, of every kind (it grows with each change).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
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

/// `message`, cut to [`MAX_MESSAGE`] bytes at a character boundary, saying how much was cut.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!(" … ({cut} more bytes)"));
    message
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

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let feed = ChangeFeed::default();
        feed.publish(Kind::Instances, Some("web"), None, "é".repeat(MAX_MESSAGE));
        let message = &feed.recent()[0].message;
        assert!(message.starts_with(&"é".repeat(MAX_MESSAGE / 2)), "{message}");
        assert!(message.ends_with(&format!(" … ({} more bytes)", MAX_MESSAGE)), "{message}");
        assert_eq!(feed.published(), 1);
    }
}
