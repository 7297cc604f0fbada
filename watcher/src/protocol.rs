//! The watcher ↔ gateway wire protocol: newline-delimited JSON over a Unix stream socket.
//!
//! watcher → gateway:
//! - `{"type":"snapshot","service":"web","index":12,"instances":[{"id":..,"node":..,"address":..,"port":..,"tags":[],"meta":{}}]}`:
//!   the *full* current set of one service. Sent for every watched service on every (re)connect
//!   and after every real change. Full sets, not deltas, make a missed or repeated message harmless.
//! - `{"type":"status","service":"web","healthy":false,"error":"..."}`: whether the watcher can
//!   currently read the service from Consul. Sent on connect and when it flips. While unhealthy,
//!   the last snapshot is stale.
//!
//! A reader skips (and logs) a malformed line and ignores a message type or field it does not know,
//! so either side can be upgraded first.

use consul::Instance;
use serde::{Deserialize, Serialize};

/// One line of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The full current instance set of one service.
    Snapshot(Snapshot),
    /// Whether the service can currently be read from Consul.
    Status(Status),
    /// TEMPORARY (watcher branch): a service is no longer followed.
    Gone(Gone),
    /// TEMPORARY (watcher branch): every followed service.
    Services(Services),
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
    /// The instances, in canonical order.
    pub instances: Vec<Instance>,
    /// TEMPORARY: the catalog tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// TEMPORARY.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    /// The service.
    pub service: String,
    /// Why.
    pub reason: String,
}

/// TEMPORARY.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// The services.
    pub services: Vec<String>,
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

    #[test]
    fn snapshot_round_trips_in_the_documented_shape() {
        let line = r#"{"type":"snapshot","service":"service-web","index":1234,"instances":[{"id":"a","node":"n","address":"172.21.0.7","port":3000,"tags":[],"meta":{}}]}"#;
        let msg = decode(line).unwrap().unwrap();
        let Message::Snapshot(s) = &msg else { panic!("not a snapshot: {msg:?}") };
        assert_eq!((s.service.as_str(), s.index, s.instances[0].port), ("service-web", 1234, 3000));
        assert_eq!(decode(encode(&msg).trim_end()).unwrap(), Some(msg));
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
