//! The instance model: how an instance is stored in etcd, and how it becomes the protocol's
//! [`consul::Instance`]. Pure: no I/O.
//!
//! - **Key**: `<prefix><service>/<instance-id>`. The service is the segment after the prefix (up
//!   to the first `/`); the instance ID is everything after that slash (non-empty; may hold more
//!   slashes). Keys not of that shape are not instances and are ignored.
//! - **Value**: JSON `{"address": "10.0.0.5", "port": 8080, "tags": [...], "meta": {...}}`
//!   (`tags` and `meta` optional), or a plain `host:port` (`[v6]:port` for IPv6) with no tags.
//! - **Conversion**: node = [`NODE`] (etcd has no nodes), weight = `meta.weight` when it is an
//!   integer from 1 to [`MAX_WEIGHT`], else [`consul::model::DEFAULT_WEIGHT`] (1). Tags are
//!   route options exactly as Consul's are: the gateway reads them.
//!
//! A value that cannot be read is a [`ValueError`]: the caller logs it and skips that one
//! instance; nothing here panics on input.

use std::collections::BTreeMap;

use consul::Instance;
use serde::{Deserialize, Serialize};

/// The node every etcd instance is reported on (etcd has no nodes).
pub const NODE: &str = "etcd";

/// The largest weight taken from `meta.weight` (Consul caps weights at 65535 too).
pub const MAX_WEIGHT: u32 = 65535;

/// An instance as stored in etcd, the JSON form of the value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    /// Address to connect to: an IP address or a host name.
    pub address: String,
    /// Port to connect to (1–65535).
    pub port: u16,
    /// Tags (route options, opt-in tag), as on Consul.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata; `weight` sets the instance's weight.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// Why a value is not an instance.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    /// Not UTF-8 text.
    #[error("the value is not UTF-8 text")]
    NotUtf8,
    /// Looks like JSON (starts with `{`) but is not the instance object.
    #[error("the value is not an instance object ({0})")]
    Json(String),
    /// Not JSON, and not `host:port` either.
    #[error("the value is neither JSON nor host:port")]
    NotHostPort,
    /// Empty address, or port 0.
    #[error("the value has an empty address or port 0")]
    Incomplete,
}

/// A key under the prefix, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceKey<'a> {
    /// The service name.
    pub service: &'a str,
    /// The instance ID, unique within the service.
    pub id: &'a str,
}

/// The key `<prefix><service>/<id>`.
pub fn key(prefix: &str, service: &str, id: &str) -> String {
    format!("{prefix}{service}/{id}")
}

/// The key prefix of every instance of `service`: `<prefix><service>/`.
pub fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{prefix}{service}/")
}

/// Splits a key into service and instance ID; `None` if it is outside the prefix or not of the
/// shape `<prefix><service>/<id>` (both non-empty), or not UTF-8.
pub fn parse_key<'a>(prefix: &str, key: &'a [u8]) -> Option<InstanceKey<'a>> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?;
    let (service, id) = rest.split_once('/')?;
    (!service.is_empty() && !id.is_empty()).then_some(InstanceKey { service, id })
}

/// Reads a value: the JSON object, or `host:port`.
pub fn parse_value(value: &[u8]) -> Result<Registered, ValueError> {
    let text = std::str::from_utf8(value).map_err(|_| ValueError::NotUtf8)?.trim();
    let reg = if text.starts_with('{') {
        serde_json::from_str::<Registered>(text).map_err(|e| ValueError::Json(e.to_string()))?
    } else {
        host_port(text)?
    };
    if reg.address.trim().is_empty() || reg.port == 0 {
        return Err(ValueError::Incomplete);
    }
    Ok(reg)
}

/// `host:port` or `[v6]:port`.
fn host_port(text: &str) -> Result<Registered, ValueError> {
    let (host, port) = text.rsplit_once(':').ok_or(ValueError::NotHostPort)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').ok_or(ValueError::NotHostPort)?,
        None if host.contains(':') => return Err(ValueError::NotHostPort),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| ValueError::NotHostPort)?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ValueError::NotHostPort);
    }
    Ok(Registered { address: host.to_string(), port, ..Registered::default() })
}

impl Registered {
    /// The value to store: the JSON object.
    pub fn to_value(&self) -> String {
        // Strings, numbers and string maps only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The instance weight: `meta.weight` when an integer from 1 to [`MAX_WEIGHT`], else 1.
    pub fn weight(&self) -> u32 {
        self.meta
            .get("weight")
            .and_then(|w| w.trim().parse::<u32>().ok())
            .filter(|w| (1..=MAX_WEIGHT).contains(w))
            .unwrap_or(consul::model::DEFAULT_WEIGHT)
    }

    /// The protocol's instance, with this ID.
    pub fn into_instance(self, id: &str) -> Instance {
        let weight = self.weight();
        let mut i = Instance::new(id, NODE, self.address, self.port);
        i.weight = weight;
        i.tags = self.tags;
        i.meta = self.meta;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_service_and_id() {
        let k = parse_key("/services/", b"/services/web/a-1").unwrap();
        assert_eq!((k.service, k.id), ("web", "a-1"));
        assert_eq!(parse_key("/services/", b"/services/web/a/b").unwrap().id, "a/b");
        for bad in [&b"/services/web"[..], b"/services/web/", b"/services//x", b"/other/web/a", b"/services/\xff/a"] {
            assert_eq!(parse_key("/services/", bad), None, "{bad:?}");
        }
        assert_eq!(key("/p/", "web", "1"), "/p/web/1");
        assert_eq!(service_prefix("/p/", "web"), "/p/web/");
    }

    #[test]
    fn json_values_read_with_optional_tags_and_meta() {
        let r = parse_value(br#"{"address":"10.0.0.5","port":8080,"tags":["gateway"],"meta":{"weight":"3"}}"#).unwrap();
        assert_eq!(
            (r.address.as_str(), r.port, r.tags.clone(), r.weight()),
            ("10.0.0.5", 8080, vec!["gateway".into()], 3)
        );
        let i = r.clone().into_instance("web-1");
        assert_eq!((i.id.as_str(), i.node.as_str(), i.weight, i.meta.len()), ("web-1", NODE, 3, 1));
        let r = parse_value(br#" {"address":"h","port":1} "#).unwrap();
        assert!(r.tags.is_empty() && r.meta.is_empty() && r.weight() == 1);
        assert_eq!(parse_value(r.to_value().as_bytes()), Ok(r));
    }

    #[test]
    fn plain_host_port_values_read() {
        assert_eq!(parse_value(b"127.0.0.1:80").unwrap().address, "127.0.0.1");
        let v6 = parse_value(b"[::1]:8080").unwrap();
        assert_eq!((v6.address.as_str(), v6.port), ("::1", 8080));
        assert_eq!(parse_value(b"web.internal:443\n").unwrap().port, 443);
    }

    #[test]
    fn bad_values_are_errors_never_panics() {
        assert_eq!(parse_value(b"\xff\xfe"), Err(ValueError::NotUtf8));
        assert!(matches!(parse_value(b"{\"address\":\"h\"}"), Err(ValueError::Json(_))), "no port");
        assert!(matches!(parse_value(b"{\"address\":\"h\",\"port\":70000}"), Err(ValueError::Json(_))));
        assert!(matches!(parse_value(b"{\"address\":\"h\",\"port\":1,\"x\":1}"), Err(ValueError::Json(_))));
        assert!(matches!(parse_value(b"{"), Err(ValueError::Json(_))));
        for bad in [&b""[..], b"host", b"host:", b":80", b"h:port", b"::1:80", b"[::1:80", b"a b:80", b"h:99999"] {
            assert_eq!(parse_value(bad), Err(ValueError::NotHostPort), "{bad:?}");
        }
        assert_eq!(parse_value(b"{\"address\":\" \",\"port\":1}"), Err(ValueError::Incomplete));
        assert_eq!(parse_value(b"{\"address\":\"h\",\"port\":0}"), Err(ValueError::Incomplete));
        assert_eq!(parse_value(b"h:0"), Err(ValueError::Incomplete));
    }

    #[test]
    fn weight_outside_the_range_is_one() {
        let with =
            |w: &str| Registered { meta: [("weight".into(), w.into())].into(), ..Registered::default() }.weight();
        assert_eq!(
            (with("0"), with("-2"), with("x"), with("65536"), with(" 7 "), with("65535")),
            (1, 1, 1, 1, 7, 65535)
        );
    }
}
