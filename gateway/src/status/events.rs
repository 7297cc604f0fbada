//! `GET /events`: the status page's live feed, as server-sent events, from the gateway's own
//! change stream (never from Consul).
//!
//! - On connect: a full `state` (with the recent changes).
//! - Each published change: a `change` event (the [`Event`] as JSON), then, coalesced, a `state`:
//!   [`SETTLE`] after the first change of a burst, and never sooner than [`MIN_GAP`] after the
//!   previous state.
//! - Every [`TICK`]: a `state` (rates and staleness move without changes).
//! - A follower that fell behind the feed (the broadcast channel dropped events for it) gets a
//!   full `state` instead of what it missed and of its backlog: no error, no gap.
//!
//! The stream holds no task of its own: it ends when the client goes (axum drops it).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{interval_at, sleep_until, Instant, Interval, MissedTickBehavior};

use super::state::{self, Rates};
use crate::admin::Admin;
use crate::observe::changes::Event;

/// How long after the first change of a burst its `state` is sent (the rest of the burst, e.g. the
/// route changes after an instance change, lands meanwhile).
pub const SETTLE: Duration = Duration::from_millis(50);
/// The least time between two `state` events sent for changes.
pub const MIN_GAP: Duration = Duration::from_millis(150);
/// How often a `state` is sent anyway.
pub const TICK: Duration = Duration::from_secs(1);

/// How long a built `state` (not a full one) is sent as it is to other followers, as long as no
/// change was published meanwhile: the followers of one tick share one build.
pub const SHARE_FOR: Duration = Duration::from_millis(250);

/// What every follower shares: the rate samples, and the last `state` built (when, at which
/// point of the change feed, and its JSON), so that N followers cost one build per tick.
#[derive(Default)]
pub struct Shared {
    rates: Rates,
    last: std::sync::Mutex<Option<(Instant, u64, Arc<str>)>>,
}

impl Shared {
    /// The JSON of a `state` without the recent changes: the one built less than [`SHARE_FOR`]
    /// ago if no change was published since, else a new one.
    fn state_json(&self, admin: &Admin) -> Arc<str> {
        let seq = admin.services.feed().published();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, built_at_seq, json)) = last.as_ref() {
            if *built_at_seq == seq && at.elapsed() < SHARE_FOR {
                return json.clone();
            }
        }
        let state = state::build(&admin.services, &admin.metrics, &self.rates, false);
        let json: Arc<str> = serde_json::to_string(&state).unwrap_or_default().into();
        *last = Some((Instant::now(), seq, json.clone()));
        json
    }
}

/// One follower of the page.
struct Follower {
    admin: Admin,
    shared: Arc<Shared>,
    rx: broadcast::Receiver<Arc<Event>>,
    /// Whether the feed is gone (only when the gateway is).
    closed: bool,
    /// Events ready to send.
    queue: VecDeque<SseEvent>,
    /// When to send a `state` for the changes sent since the last one.
    due: Option<Instant>,
    last_state: Instant,
    tick: Interval,
}

/// The SSE response for one follower.
pub fn follow(admin: Admin, shared: Arc<Shared>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before the first state is built: a change in between is sent (maybe twice; the
    // page ignores repeats), never lost.
    let rx = admin.services.feed().subscribe();
    let mut tick = interval_at(Instant::now() + TICK, TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut follower = Follower {
        admin,
        shared,
        rx,
        closed: false,
        queue: VecDeque::new(),
        due: None,
        last_state: Instant::now(),
        tick,
    };
    let first = follower.state(true);
    follower.queue.push_back(first);
    let events = stream::unfold(follower, |mut f| async move {
        let event = f.next().await;
        Some((Ok(event), f))
    });
    // Proxies between the page and the gateway see traffic at least every TICK anyway.
    Sse::new(events).keep_alive(KeepAlive::default())
}

impl Follower {
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return event;
            }
            tokio::select! {
                biased;
                received = self.rx.recv(), if !self.closed => match received {
                    Ok(change) => {
                        let now = Instant::now();
                        self.due.get_or_insert((now + SETTLE).max(self.last_state + MIN_GAP));
                        return sse("change", &*change);
                    }
                    Err(RecvError::Lagged(_)) => {
                        // What is still queued is in the full state's recent changes: skip it.
                        self.rx = self.rx.resubscribe();
                        self.due = None;
                        return self.state(true);
                    }
                    Err(RecvError::Closed) => self.closed = true,
                },
                _ = sleep_until(self.due.unwrap_or_else(Instant::now)), if self.due.is_some() => {
                    self.due = None;
                    return self.state(false);
                }
                _ = self.tick.tick() => return self.state(false),
            }
        }
    }

    fn state(&mut self, full: bool) -> SseEvent {
        self.last_state = Instant::now();
        if full {
            let state = state::build(&self.admin.services, &self.admin.metrics, &self.shared.rates, true);
            return sse("state", &state);
        }
        SseEvent::default().event("state").data(&*self.shared.state_json(&self.admin))
    }
}

fn sse(name: &str, data: &impl Serialize) -> SseEvent {
    match SseEvent::default().event(name).json_data(data) {
        Ok(event) => event,
        // Our own types always serialize; say so rather than panic if one ever does not.
        Err(e) => SseEvent::default().comment(format!("cannot serialize a {name} event: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::direct::StaticRead;
    use crate::discovery::services::Services;
    use crate::discovery::tag::TagRules;
    use crate::observe::changes::Kind;
    use axum::body::Body;
    use axum::response::IntoResponse;
    use consul::Instance;
    use http_body_util::BodyExt;

    fn admin() -> Admin {
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
        services.freshness().set_watcher_connected(true);
        Admin { services, metrics: Arc::default() }
    }

    /// Reads SSE events (name, JSON) from a body until `n` arrived, or panics after 5 s.
    async fn read(body: &mut Body, buf: &mut String, n: usize) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.len() < n {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let name = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default().to_string();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    out.push((name, serde_json::from_str(data).unwrap()));
                }
            }
            if out.len() >= n {
                break;
            }
            let frame = tokio::time::timeout_at(deadline, body.frame()).await.expect("events in time");
            let data = frame.expect("the stream goes on").unwrap().into_data().unwrap();
            buf.push_str(std::str::from_utf8(&data).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn followers_share_one_state_per_tick_until_a_change() {
        let admin = admin();
        let shared = Shared::default();
        let a = shared.state_json(&admin);
        let b = shared.state_json(&admin);
        assert!(Arc::ptr_eq(&a, &b), "built once for both");
        admin.services.apply_snapshot("web", 3, vec![Instance::new("web-1", "n", "127.0.0.1", 3001)], vec![]);
        let c = shared.state_json(&admin);
        assert!(!Arc::ptr_eq(&b, &c), "a change published since: built again");
        assert!(c.contains("127.0.0.1:3001"), "{c}");
        tokio::time::sleep(SHARE_FOR + Duration::from_millis(50)).await;
        assert!(!Arc::ptr_eq(&c, &shared.state_json(&admin)), "too old: built again");
    }

    #[tokio::test]
    async fn a_follower_gets_state_then_changes_then_a_coalesced_state() {
        let admin = admin();
        let services = admin.services.clone();
        services.apply_snapshot("web", 3, vec![Instance::new("web-1", "n", "127.0.0.1", 3001)], vec![]);
        let mut body = follow(admin, Arc::default()).into_response().into_body();
        let mut buf = String::new();

        let first = read(&mut body, &mut buf, 1).await;
        assert_eq!(first[0].0, "state");
        assert_eq!(first[0].1["services"][0]["instances"].as_array().unwrap().len(), 1);
        assert!(first[0].1["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["message"] == "web: 0 -> 1 instances, added 127.0.0.1:3001"));

        let two = vec![Instance::new("web-1", "n", "127.0.0.1", 3001), Instance::new("web-2", "n", "127.0.0.1", 3002)];
        let t = Instant::now();
        services.apply_snapshot("web", 4, two, vec![]);
        let next = read(&mut body, &mut buf, 2).await;
        assert_eq!(next[0].0, "change");
        assert_eq!(next[0].1["kind"], "instances");
        assert_eq!(next[0].1["message"], "web: 1 -> 2 instances, added 127.0.0.1:3002");
        assert_eq!(next[1].0, "state", "{next:?}");
        assert!(t.elapsed() < Duration::from_millis(500), "the state follows the change at once");
        assert_eq!(next[1].1["services"][0]["instances"].as_array().unwrap().len(), 2);
        assert!(next[1].1.get("changes").is_none(), "a state after changes is not a full one");

        // Without changes, a state every second.
        let t = Instant::now();
        let tick = read(&mut body, &mut buf, 1).await;
        assert_eq!(tick[0].0, "state");
        assert!(t.elapsed() >= Duration::from_millis(500) && t.elapsed() < Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn a_lagging_follower_gets_a_full_state() {
        let admin = admin();
        let feed = admin.services.feed().clone();
        let mut body = follow(admin, Arc::default()).into_response().into_body();
        let mut buf = String::new();
        assert_eq!(read(&mut body, &mut buf, 1).await[0].0, "state");
        // More than the channel holds, while the follower does not read.
        for i in 0..1100 {
            feed.publish(Kind::Source, None, None, format!("event {i}"));
        }
        let next = read(&mut body, &mut buf, 1).await;
        assert_eq!(next[0].0, "state", "lagged: a fresh state, not an error");
        let changes = next[0].1["changes"].as_array().unwrap();
        assert_eq!(changes.last().unwrap()["message"], "event 1099");
        // And it follows on from there, without the backlog it was shown in full.
        feed.publish(Kind::Source, None, None, "after");
        let rest = read(&mut body, &mut buf, 1).await;
        assert_eq!((rest[0].0.as_str(), &rest[0].1["message"]), ("change", &serde_json::json!("after")));
    }
}
