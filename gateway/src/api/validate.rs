//! The body of `PUT /v1/instances`, checked field by field into a [`Registration`]: the first
//! field that is missing, of the wrong type or out of range is named in the error, so a client
//! learns what to fix (`{"error": "...", "field": "port"}`).
//!
//! The rules (docs/api/openapi.yaml says the same):
//! - `service`: a name Consul accepts in a URL path ([`consul::client::validate_name`]: letters,
//!   digits, `-`, `_`, `.`, up to 256 bytes).
//! - `id`: 1 to [`MAX_ID_LEN`] bytes of letters, digits, `-`, `_`, `.`, `:` (it travels in URL
//!   paths: `/v1/instances/{id}`).
//! - `address`: an IP address or a DNS host name (up to 253 bytes; its last label not all
//!   digits, so `999.1.1.1` is refused).
//! - `port`: an integer from 1 to 65535.
//! - `ttl`: a Go-style duration string (`"10s"`, `"1m30s"`, `"500ms"`; units `ms`, `s`, `m`, `h`)
//!   from [`MIN_TTL`] to [`MAX_TTL`], the form Consul's own TTL checks take. A number is refused:
//!   a bare `10` could mean seconds or nanoseconds (Go's `time.Duration`).
//! - `tags` (optional): up to [`MAX_TAGS`] strings of 1 to [`MAX_TAG_LEN`] bytes without control
//!   characters (a route tag holds spaces: `urlprefix-/api strip=/api`).
//! - `meta` (optional): Consul's limits: up to 64 pairs, keys of 1 to 128 bytes of letters, digits,
//!   `-`, `_` not starting with `consul-`, values up to 512 bytes; not the key `gateway-api`
//!   ([`OWNER_META`], the API's own mark).
//! - No other field: a misspelt `ttl` must not register an instance without the TTL meant; no
//!   key twice in any object (`body` names the error).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::registry::OWNER_META;

/// The longest instance ID, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// The shortest TTL: a heartbeat more often than each second is load, not liveness.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest TTL.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The most tags on one instance.
pub const MAX_TAGS: usize = 64;
/// The longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 512;
/// Consul's limits on service metadata (`structs.ValidateServiceMetadata`).
const MAX_META_PAIRS: usize = 64;
const MAX_META_KEY: usize = 128;
const MAX_META_VALUE: usize = 512;

/// A valid registration: what [`crate::api::registry::Registry::register`] gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The service name.
    pub service: String,
    /// The instance ID, unique in the registry.
    pub id: String,
    /// The address to route to.
    pub address: String,
    /// The port to route to.
    pub port: u16,
    /// Tags (route declarations among them).
    pub tags: Vec<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// How long the instance stays routable without a heartbeat.
    pub ttl: Duration,
}

/// A field that is missing, of the wrong type or out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct FieldError {
    /// The field's name (`body` for the body as a whole).
    pub field: String,
    /// What is wrong with it.
    pub why: String,
}

fn bad(field: &str, why: impl Into<String>) -> FieldError {
    FieldError { field: field.to_string(), why: why.into() }
}

const FIELDS: [&str; 7] = ["service", "id", "address", "port", "tags", "meta", "ttl"];

/// Parses and checks a `PUT /v1/instances` body.
///
/// # Errors
/// [`FieldError`] naming the first bad field: `body` if it is not a JSON object.
pub fn registration(body: &[u8]) -> Result<Registration, FieldError> {
    let value = serde_json::from_slice::<Strict>(body).map_err(|e| bad("body", format!("not valid JSON: {e}")))?.0;
    let Value::Object(obj) = value else {
        return Err(bad("body", "must be a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(unknown, format!("unknown field; the fields are {}", FIELDS.join(", "))));
    }
    let service = string(&obj, "service")?;
    consul::client::validate_name(service)
        .map_err(|_| bad("service", "use 1 to 256 letters, digits, '-', '_' or '.' (a name Consul accepts)"))?;
    let id = string(&obj, "id")?;
    check_id(id).map_err(|why| bad("id", why))?;
    let address = string(&obj, "address")?;
    check_address(address).map_err(|why| bad("address", why))?;
    let port = port(&obj)?;
    let tags = tags(&obj)?;
    let meta = meta(&obj)?;
    let ttl = ttl(string(&obj, "ttl")?).map_err(|why| bad("ttl", why))?;
    Ok(Registration {
        service: service.to_string(),
        id: id.to_string(),
        address: address.to_string(),
        port,
        tags,
        meta,
        ttl,
    })
}

/// A JSON value read with every object's keys unique: a key given twice (`{"ttl": "10s", ...,
/// "ttl": "1h"}`) is an error, not the last one winning silently (RFC 8259 section 4 leaves it to
/// the reader; two readers of one body, a proxy and the gateway, could each take another).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("the key {key:?} is given twice")));
            }
            let Strict(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

fn string<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(bad(field, "missing")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// Checks an instance ID (also as it comes in a URL path).
///
/// # Errors
/// Why it is refused.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("must be 1 to {MAX_ID_LEN} bytes"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        || id == "."
        || id == ".."
    {
        return Err("use letters, digits, '-', '_', '.' and ':' only".into());
    }
    Ok(())
}

fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host = address.strip_suffix('.').unwrap_or(address);
    // A name whose last label is all digits is no host name (RFC 3696 section 2): `999.1.1.1`
    // and `10.0.1` are IPv4 addresses mistyped, which a resolver would not find.
    let numeric_tld = host.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !host.is_empty() && address.len() <= 253 && host.split('.').all(label_ok) && !numeric_tld {
        Ok(())
    } else {
        Err("must be an IP address or a DNS host name".into())
    }
}

fn port(obj: &Map<String, Value>) -> Result<u16, FieldError> {
    match obj.get("port") {
        None | Some(Value::Null) => Err(bad("port", "missing")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(p @ 1..=65535) => Ok(p as u16),
            _ => Err(bad("port", "must be an integer from 1 to 65535")),
        },
        Some(_) => Err(bad("port", "must be an integer from 1 to 65535")),
    }
}

fn tags(obj: &Map<String, Value>) -> Result<Vec<String>, FieldError> {
    let items = match obj.get("tags") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("tags", "must be an array of strings")),
    };
    if items.len() > MAX_TAGS {
        return Err(bad("tags", format!("at most {MAX_TAGS} tags")));
    }
    let mut tags = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(tag) = item else {
            return Err(bad("tags", "must be an array of strings"));
        };
        if tag.is_empty() || tag.len() > MAX_TAG_LEN || tag.chars().any(char::is_control) {
            return Err(bad("tags", format!("each tag: 1 to {MAX_TAG_LEN} bytes, no control characters")));
        }
        tags.push(tag.clone());
    }
    Ok(tags)
}

fn meta(obj: &Map<String, Value>) -> Result<BTreeMap<String, String>, FieldError> {
    let pairs = match obj.get("meta") {
        None => return Ok(BTreeMap::new()),
        Some(Value::Object(pairs)) => pairs,
        Some(_) => return Err(bad("meta", "must be an object of strings")),
    };
    if pairs.len() > MAX_META_PAIRS {
        return Err(bad("meta", format!("at most {MAX_META_PAIRS} keys")));
    }
    let mut meta = BTreeMap::new();
    for (k, v) in pairs {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_META_KEY
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            && !k.starts_with("consul-")
            && k != OWNER_META;
        if !key_ok {
            return Err(bad(
                "meta",
                format!("keys: 1 to {MAX_META_KEY} letters, digits, '-' or '_', not starting with consul-, not {OWNER_META}"),
            ));
        }
        match v {
            Value::String(s) if s.len() <= MAX_META_VALUE => meta.insert(k.clone(), s.clone()),
            _ => return Err(bad("meta", format!("values: strings of up to {MAX_META_VALUE} bytes"))),
        };
    }
    Ok(meta)
}

/// Parses a Go-style duration (`"10s"`, `"1m30s"`, `"250ms"`, `"2h"`) and checks it is from
/// [`MIN_TTL`] to [`MAX_TTL`].
///
/// # Errors
/// Why it is refused.
pub fn ttl(text: &str) -> Result<Duration, String> {
    let refuse = || "a duration such as \"10s\", \"1m30s\" or \"500ms\" (units ms, s, m, h) from 1s to 24h".to_string();
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(refuse());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(refuse());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| refuse())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(refuse());
        };
        rest = &rest[len..];
        total = unit
            .checked_mul(u32::try_from(n).map_err(|_| refuse())?)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(refuse)?;
    }
    if (MIN_TTL..=MAX_TTL).contains(&total) {
        Ok(total)
    } else {
        Err(refuse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"service": "web", "id": "web-1", "address": "127.0.0.1", "port": 8080,
               "tags": ["gateway", "urlprefix-/api strip=/api"], "meta": {"version": "2"}, "ttl": "10s"})
    }

    fn field_of(v: Value) -> String {
        registration(v.to_string().as_bytes()).unwrap_err().field
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = good();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = good();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    #[test]
    fn a_good_body_is_read_whole() {
        let r = registration(good().to_string().as_bytes()).unwrap();
        assert_eq!((r.service.as_str(), r.id.as_str(), r.port), ("web", "web-1", 8080));
        assert_eq!(r.tags.len(), 2);
        assert_eq!(r.meta["version"], "2");
        assert_eq!(r.ttl, Duration::from_secs(10));
        let minimal = json!({"service": "a", "id": "a:1", "address": "host.example", "port": 1, "ttl": "1s"});
        let r = registration(minimal.to_string().as_bytes()).unwrap();
        assert!(r.tags.is_empty() && r.meta.is_empty());
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for f in ["service", "id", "address", "port", "ttl"] {
            assert_eq!(field_of(without(f)), f);
            assert_eq!(field_of(with(f, Value::Null)), f);
        }
    }

    #[test]
    fn wrong_types_and_values_name_their_field() {
        let cases = [
            ("service", json!(5)),
            ("service", json!("a/b")),
            ("service", json!("")),
            ("service", json!("x".repeat(257))),
            ("id", json!("")),
            ("id", json!("x".repeat(MAX_ID_LEN + 1))),
            ("id", json!("a/b")),
            ("id", json!(["a"])),
            ("address", json!("")),
            ("address", json!("not an address")),
            ("address", json!("-bad.example")),
            ("address", json!(127)),
            ("port", json!(0)),
            ("port", json!(65536)),
            ("port", json!(-1)),
            ("port", json!(80.5)),
            ("port", json!("80")),
            ("ttl", json!(10)),
            ("ttl", json!("0s")),
            ("ttl", json!("999ms")),
            ("ttl", json!("25h")),
            ("ttl", json!("10")),
            ("ttl", json!("10 s")),
            ("ttl", json!("-5s")),
            ("ttl", json!("1.5s")),
            ("ttl", json!("99999999999999h")),
            ("tags", json!("gateway")),
            ("tags", json!([1])),
            ("tags", json!([""])),
            ("tags", json!(["a\nb"])),
            ("tags", json!(vec!["t"; MAX_TAGS + 1])),
            ("tags", Value::Null),
            ("meta", Value::Null),
            ("meta", json!([])),
            ("meta", json!({"k": 1})),
            ("meta", json!({"consul-x": "v"})),
            ("meta", json!({OWNER_META: "true"})),
            ("meta", json!({"a b": "v"})),
            ("meta", json!({"k": "v".repeat(513)})),
        ];
        for (field, value) in cases {
            assert_eq!(field_of(with(field, value.clone())), field, "{field} = {value}");
        }
    }

    #[test]
    fn the_body_must_be_an_object_with_known_fields() {
        for body in [&b""[..], b"{", b"[]", b"\"x\"", b"null"] {
            assert_eq!(registration(body).unwrap_err().field, "body", "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(field_of(with("tll", json!("10s"))), "tll");
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        let twice = [
            &br#"{"service":"web","id":"a","address":"10.0.0.1","port":80,"ttl":"10s","ttl":"24h"}"#[..],
            br#"{"service":"web","id":"a","address":"10.0.0.1","port":80,"ttl":"10s","meta":{"k":"1","k":"2"}}"#,
        ];
        for body in twice {
            let e = registration(body).unwrap_err();
            assert_eq!(e.field, "body", "{e}");
            assert!(e.why.contains("twice"), "{e}");
        }
        let nested = br#"{"service":"web","id":"a","address":"10.0.0.1","port":80,"ttl":"10s","tags":["x"],"meta":{}}"#;
        assert!(registration(nested).is_ok());
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(ttl("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(ttl("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(ttl("24h"), Ok(MAX_TTL));
        assert_eq!(ttl("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert!(ttl("24h1s").is_err());
        assert!(ttl("").is_err());
        assert!(ttl("s").is_err());
        assert!(ttl("10x").is_err());
    }

    #[test]
    fn addresses_are_ips_or_host_names() {
        for ok in ["10.0.0.1", "::1", "fe80::1", "web-1.internal", "localhost", "a.b.c."] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "a..b", "a_b.example", "[::1]", "1.2.3.4:80", &"a".repeat(64), "999.1.1.1", "10.0.1", "80"]
        {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
