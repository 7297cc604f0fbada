//! The watcher ↔ gateway wire protocol: newline-delimited JSON over a Unix stream socket. This
//! module owns it; the gateway decodes with these same types.
//!
//! watcher → gateway, in this order on every (re)connect, then as things change:
//! - `{"type":"services","services":["billing","web"]}`: the sorted full list of every followed
//!   service, static (`--service`) and discovered (by tag). Sent on every (re)connect once the
//!   catalog follower has answered at least once (at once when no follower runs: the static
//!   list), and whenever the set changes. A service not in it is not followed: the reader drops
//!   what it holds for it, even if it went away while the reader was disconnected.
//! - `{"type":"snapshot","service":"web","index":12,"tags":["gateway"],"instances":[{"id":..,"node":..,"address":..,"port":..,"weight":1,"tags":[],"meta":{}}]}`:
//!   the *full* current set of one service. `tags` are the service's tags as
//!   `/v1/catalog/services` reports them (sorted, deduplicated, merged over the spellings of its
//!   name; empty when no follower runs); `weight` is the instance's effective Consul weight (see
//!   [`consul::Instance::weight`]). Sent for every followed service on every (re)connect and
//!   after every real change, a change of `tags` alone included. Full sets, not deltas, make a
//!   missed or repeated message harmless.
//! - `{"type":"status","service":"web","healthy":false,"error":"..."}`: whether the watcher can
//!   currently read the service from Consul. Sent on connect and when it flips. While unhealthy,
//!   the last snapshot is stale.
//! - `{"type":"consul","healthy":false,"denied":true,"error":"..."}`: whether the watcher can
//!   read Consul's catalog as a whole (the one query on `/v1/catalog/services` that follows
//!   services by tag, and the check that the token can read nodes). `denied` says Consul refused
//!   for want of ACL permissions (a 403, or an answer the ACLs emptied; see
//!   [`consul::Error::is_denied`]); `error` says why, with what the token needs, and never holds
//!   the token. Sent from the first failure on: on connect and when it flips or its error changes
//!   (nothing while the catalog has always been readable). While
//!   unhealthy, what the reader knows may be stale or missing and it is not ready.
//! - `{"type":"gone","service":"billing","reason":"deregistered"}`: a discovered service left the
//!   followed set, because it is no longer in `/v1/catalog/services` (`deregistered`) or because
//!   it is still registered without an opt-in tag (`untagged`). Sent once, to a connected reader,
//!   after the `services` list without it; a (re)connecting reader gets the list only. If the
//!   service comes back it is followed from scratch (a new snapshot). Static services never go.
//!
//! A reader skips (and logs) a malformed line and ignores a message type or field it does not know,
//! so either side can be upgraded first. Fields added since the first version (`tags`, `weight`)
//! default when absent (empty, 1), and a `gone` reason this version does not know decodes as
//! [`GoneReason::Other`].

use consul::Instance;
use serde::{Deserialize, Serialize};

/// One line of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The sorted list of every followed service.
    Services(Services),
    /// The full current instance set of one service.
    Snapshot(Snapshot),
    /// Whether the service can currently be read from Consul.
    Status(Status),
    /// A discovered service is no longer followed.
    Gone(Gone),
    /// Whether Consul's catalog can be read at all.
    Consul(ConsulStatus),
    /// A message type this version does not know; ignored.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// The full current instance set of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The service name.
    pub service: String,
    /// Consul's `X-Consul-Index` the set was read at.
    pub index: u64,
    /// The service's tags in `/v1/catalog/services`: sorted, deduplicated, merged over the
    /// spellings of its name. Empty when no catalog follower runs.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The instances, in canonical order.
    pub instances: Vec<Instance>,
}

/// The sorted list of every followed service, static and discovered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// The service names, sorted (byte order), each once.
    pub services: Vec<String>,
}

/// A discovered service that is no longer followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    /// The service name.
    pub service: String,
    /// Why it is no longer followed.
    pub reason: GoneReason,
}

/// Why a discovered service is no longer followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoneReason {
    /// No longer in `/v1/catalog/services`.
    Deregistered,
    /// Still registered, but no instance carries an opt-in tag any more.
    Untagged,
    /// A reason this version does not know (sent by a newer watcher); gone all the same.
    #[serde(other)]
    Other,
}

/// Whether a service can currently be read from Consul.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The service name.
    pub service: String,
    /// `false` while reads fail; the last snapshot is then stale.
    pub healthy: bool,
    /// Why reads fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether the watcher can read Consul's catalog as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsulStatus {
    /// `false` while the catalog cannot be read.
    pub healthy: bool,
    /// Whether Consul refused for want of ACL permissions.
    #[serde(default)]
    pub denied: bool,
    /// Why the catalog cannot be read (never holds the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Encodes a message as one line, newline included.
pub fn encode(msg: &Message) -> String {
    // Serialising these plain structs cannot fail.
    let mut line = serde_json::to_string(msg).unwrap_or_default();
    line.push('\n');
    line
}

/// Decodes one line. `Ok(None)` is a well-formed message this version does not know.
pub fn decode(line: &str) -> Result<Option<Message>, serde_json::Error> {
    match serde_json::from_str::<Message>(line)? {
        Message::Unknown => Ok(None),
        msg => Ok(Some(msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot as the first version of the protocol wrote it (no `tags`, no `weight`).
    const SNAPSHOT_V1: &str = r#"{"type":"snapshot","service":"service-web","index":1234,"instances":[{"id":"a","node":"n","address":"172.21.0.7","port":3000,"tags":[],"meta":{}}]}"#;

    #[test]
    fn snapshot_round_trips_in_the_documented_shape() {
        let msg = decode(SNAPSHOT_V1).unwrap().unwrap();
        let Message::Snapshot(s) = &msg else { panic!("not a snapshot: {msg:?}") };
        assert_eq!((s.service.as_str(), s.index, s.instances[0].port), ("service-web", 1234, 3000));
        assert_eq!(decode(encode(&msg).trim_end()).unwrap(), Some(msg));
    }

    #[test]
    fn services_and_gone_round_trip_in_the_documented_shape() {
        let cases = [
            (
                r#"{"type":"services","services":["a","b"]}"#,
                Message::Services(Services { services: vec!["a".into(), "b".into()] }),
            ),
            (
                r#"{"type":"gone","service":"billing","reason":"deregistered"}"#,
                Message::Gone(Gone { service: "billing".into(), reason: GoneReason::Deregistered }),
            ),
            (
                r#"{"type":"gone","service":"billing","reason":"untagged"}"#,
                Message::Gone(Gone { service: "billing".into(), reason: GoneReason::Untagged }),
            ),
            (
                r#"{"type":"consul","healthy":false,"denied":true,"error":"Consul answered 403"}"#,
                Message::Consul(ConsulStatus {
                    healthy: false,
                    denied: true,
                    error: Some("Consul answered 403".into()),
                }),
            ),
            (
                r#"{"type":"consul","healthy":true,"denied":false}"#,
                Message::Consul(ConsulStatus { healthy: true, denied: false, error: None }),
            ),
        ];
        for (line, msg) in cases {
            assert_eq!(decode(line).unwrap().as_ref(), Some(&msg), "{line}");
            assert_eq!(encode(&msg), format!("{line}\n"), "encoded exactly as documented");
        }
        // A reason from a newer watcher: still a gone.
        let g = decode(r#"{"type":"gone","service":"x","reason":"moved"}"#).unwrap();
        assert!(matches!(g, Some(Message::Gone(Gone { reason: GoneReason::Other, .. }))));
        for bad in
            [r#"{"type":"gone","service":"x"}"#, r#"{"type":"services"}"#, r#"{"type":"services","services":"a"}"#]
        {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshot_tags_and_weights_are_always_written() {
        let mut web = Instance::new("w", "n", "10.0.0.1", 80);
        web.weight = 5;
        let msg = Message::Snapshot(Snapshot { service: "web".into(), index: 3, tags: vec![], instances: vec![web] });
        let v: serde_json::Value = serde_json::from_str(&encode(&msg)).unwrap();
        assert_eq!(v["tags"], serde_json::json!([]));
        assert_eq!(v["instances"][0]["weight"], 5);
        let tagged = Message::Snapshot(Snapshot {
            service: "web".into(),
            index: 3,
            tags: vec!["gateway".into()],
            instances: vec![],
        });
        assert_eq!(decode(encode(&tagged).trim_end()).unwrap(), Some(tagged));
    }

    #[test]
    fn a_snapshot_from_an_older_watcher_decodes_with_no_tags_and_weight_one() {
        let msg = decode(SNAPSHOT_V1).unwrap().unwrap();
        let Message::Snapshot(s) = msg else { panic!("not a snapshot") };
        assert!(s.tags.is_empty());
        assert_eq!(s.instances[0].weight, 1);
    }

    #[test]
    fn unknown_types_and_fields_are_ignored() {
        assert_eq!(decode(r#"{"type":"watch","service":"billing"}"#).unwrap(), None);
        let s = decode(r#"{"type":"status","service":"a","healthy":true,"v":2}"#).unwrap();
        assert!(matches!(s, Some(Message::Status(Status { healthy: true, .. }))));
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in ["", "{", "[]", r#"{"type":"snapshot"}"#, r#"{"service":"a"}"#] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
