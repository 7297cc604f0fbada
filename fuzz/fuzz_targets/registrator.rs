//! The registrator's `SERVICE_*` conventions and the registrations built from them.
//!
//! The input is a container description, one item a line: `image <image>`, `env <KEY=value>`,
//! `label <key>=<value>`, `port <port>/<proto>[:<host port>]`, `net host|none|<ip>`, `internal`.
//!
//! Invariants: no panic; `split_tags` gives trimmed non-empty tags that survive being joined
//! again with `\,` escapes (unless one ends in `\`, which the format cannot say); `base_name`
//! is idempotent and holds no `/`, `:` or `@`; `metadata` keys are lowercase and non-empty;
//! `registrations` is deterministic and every registration carries the three ownership marks,
//! at most 64 meta pairs, no empty tag.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use registrator::convention::{base_name, metadata, split_tags, Container, Network, Port};
use registrator::desired::{registrations, Settings, META_CONTAINER, META_OWNER, META_SPEC};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_tags(text);
    check_base_name(text);
    let mut c = Container { id: "0123456789abcdef0123".into(), name: "app".into(), ..Default::default() };
    let mut internal = false;
    for line in text.lines().take(64) {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "image" => c.image = rest.to_string(),
            "env" => c.env.push(rest.to_string()),
            "label" => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                c.labels.insert(k.to_string(), v.to_string());
            }
            "port" => {
                let (spec, host_port) = rest.split_once(':').unwrap_or((rest, ""));
                let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
                let Ok(port) = port.parse() else { continue };
                c.ports.push(Port { port, proto: proto.to_string(), host_ip: None, host_port: host_port.parse().ok() });
            }
            "net" => {
                c.network = match rest {
                    "host" => Network::Host,
                    "none" => Network::None,
                    ip => Network::Attached {
                        primary: "bridge".into(),
                        ips: BTreeMap::from([("bridge".to_string(), ip.to_string())]),
                    },
                }
            }
            "internal" => internal = true,
            _ => {}
        }
    }
    c.ports.sort();
    check_base_name(&c.image);
    for value in
        c.env.iter().filter_map(|e| e.split_once('=')).map(|(_, v)| v).chain(c.labels.values().map(String::as_str))
    {
        check_tags(value);
    }
    for port in c.ports.iter().map(|p| p.port).chain([0, 80]) {
        let meta = metadata(&c, port);
        for (k, v) in meta.iter() {
            assert!(!k.is_empty() && !k.bytes().any(|b| b.is_ascii_uppercase()), "key {k:?}");
            if !v.is_empty() {
                assert_eq!(meta.get(k), Some(v));
            }
        }
    }
    let settings = Settings {
        hostname: "host-1".into(),
        internal,
        host_ip: (!internal).then(|| "192.0.2.10".to_string()),
        host_name_ip: None,
        network: None,
        force_tags: vec!["forced".into()],
        explicit: false,
    };
    let desired = registrations(&c, &settings);
    assert_eq!(desired, registrations(&c, &settings), "deterministic");
    for reg in &desired.services {
        assert_eq!(reg.meta.get(META_OWNER).map(String::as_str), Some("host-1"));
        assert_eq!(reg.meta.get(META_CONTAINER), Some(&c.id));
        let spec = reg.meta.get(META_SPEC).expect("spec mark");
        assert!(spec.len() == 16 && spec.bytes().all(|b| b.is_ascii_hexdigit()), "{spec:?}");
        assert!(reg.meta.len() <= 64, "{} meta pairs", reg.meta.len());
        assert!(reg.tags.iter().all(|t| !t.is_empty()), "{:?}", reg.tags);
        serde_json::to_vec(reg).expect("a registration serialises");
    }
});

fn check_tags(raw: &str) {
    let tags = split_tags(raw);
    for t in &tags {
        assert!(!t.is_empty() && t.trim() == t, "tag {t:?} of {raw:?}");
    }
    if tags.iter().any(|t| t.ends_with('\\')) {
        return;
    }
    let joined = tags.iter().map(|t| t.replace(',', "\\,")).collect::<Vec<_>>().join(",");
    assert_eq!(split_tags(&joined), tags, "{raw:?} → {joined:?}");
}

fn check_base_name(image: &str) {
    let name = base_name(image);
    assert!(!name.contains(['/', ':', '@']), "{image:?} → {name:?}");
    assert_eq!(base_name(&name), name, "idempotent on {image:?}");
}
