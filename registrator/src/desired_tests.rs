//! Unit tests of [`super::registrations`]: the gliderlabs conventions end to end, per flag.

use super::*;
use crate::convention::Network;

fn settings(internal: bool) -> Settings {
    Settings {
        hostname: "host1".into(),
        internal,
        host_ip: None,
        host_name_ip: None,
        network: None,
        force_tags: vec![],
        explicit: false,
    }
}

fn port(port: u16, proto: &str, host: Option<(&str, u16)>) -> Port {
    Port { port, proto: proto.into(), host_ip: host.map(|(ip, _)| ip.to_string()), host_port: host.map(|(_, p)| p) }
}

fn attached(ips: &[(&str, &str)]) -> Network {
    let ips = ips.iter().map(|(n, ip)| (n.to_string(), ip.to_string())).collect();
    Network::Attached { primary: "proj_default".into(), ips }
}

fn web(env: &[&str], ports: Vec<Port>) -> Container {
    Container {
        id: "f00dfeedcafe0123456789".into(),
        name: "proj_web_1".into(),
        image: "registry:5000/acme/web:1.0".into(),
        env: env.iter().map(|s| s.to_string()).collect(),
        labels: BTreeMap::new(),
        network: attached(&[("proj_default", "172.18.0.5")]),
        via: None,
        ports,
    }
}

#[test]
fn internal_mode_registers_container_ip_and_exposed_port() {
    let c = web(&[], vec![port(3000, "tcp", None)]);
    let d = registrations(&c, &settings(true));
    assert_eq!(d.services.len(), 1, "{d:?}");
    let s = &d.services[0];
    assert_eq!(s.id, "host1:proj_web_1:3000");
    assert_eq!(s.name, "web");
    assert_eq!(s.address, "172.18.0.5");
    assert_eq!(s.port, 3000);
    assert!(s.check.is_none());
    assert_eq!(s.meta[META_OWNER], "host1");
    assert_eq!(s.meta[META_CONTAINER], c.id);
    assert_eq!(s.meta[META_SPEC].len(), 16);
}

#[test]
fn host_mode_skips_unpublished_ports_and_uses_the_binding() {
    let c = web(&[], vec![port(3000, "tcp", None), port(8080, "tcp", Some(("10.0.0.9", 32768)))]);
    let d = registrations(&c, &settings(false));
    assert_eq!(d.services.len(), 1);
    let s = &d.services[0];
    assert_eq!((s.address.as_str(), s.port), ("10.0.0.9", 32768));
    // One published port is not a group: no suffix.
    assert_eq!(s.name, "web");
    assert_eq!(s.id, "host1:proj_web_1:8080");
    assert!(d.skipped[0].contains("3000/tcp not published"));
}

#[test]
fn host_mode_needs_an_address_for_wildcard_bindings() {
    let c = web(&[], vec![port(80, "tcp", Some(("0.0.0.0", 8000)))]);
    let d = registrations(&c, &settings(false));
    assert!(d.services.is_empty());
    assert!(d.skipped[0].contains("--ip"), "{:?}", d.skipped);
    let s = Settings { host_ip: Some("192.0.2.1".into()), ..settings(false) };
    let d = registrations(&c, &s);
    assert_eq!(d.services[0].address, "192.0.2.1");
    assert_eq!(d.services[0].port, 8000);
}

#[test]
fn ip_flag_overrides_a_specific_binding() {
    let c = web(&[], vec![port(80, "tcp", Some(("10.0.0.9", 8000)))]);
    let s = Settings { host_ip: Some("192.0.2.1".into()), ..settings(false) };
    assert_eq!(registrations(&c, &s).services[0].address, "192.0.2.1");
}

#[test]
fn several_ports_get_port_suffixes_unless_named_per_port() {
    let c = web(
        &["SERVICE_NAME=app", "SERVICE_8081_NAME=app-admin"],
        vec![port(3000, "tcp", None), port(8081, "tcp", None)],
    );
    let d = registrations(&c, &settings(true));
    let names: Vec<&str> = d.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["app-3000", "app-admin"]);
}

#[test]
fn service_name_env_from_the_brief() {
    let c = web(&["SERVICE_3000_NAME=service-web", "SERVICE_CHECK_HTTP=/health"], vec![port(3000, "tcp", None)]);
    let s = &registrations(&c, &settings(true)).services[0];
    assert_eq!(s.name, "service-web");
    let check = s.check.as_ref().expect("check");
    assert_eq!(check.http.as_deref(), Some("http://172.18.0.5:3000/health"));
    assert_eq!(check.interval.as_deref(), Some("10s"));
    assert_eq!(check.timeout, None);
}

#[test]
fn ignore_generic_and_per_port() {
    let both = web(&["SERVICE_IGNORE=1"], vec![port(1, "tcp", None)]);
    assert!(registrations(&both, &settings(true)).services.is_empty());
    let one = web(&["SERVICE_2_IGNORE=true"], vec![port(1, "tcp", None), port(2, "tcp", None)]);
    let d = registrations(&one, &settings(true));
    assert_eq!(d.services.len(), 1);
    assert_eq!(d.services[0].port, 1);
    // The group suffix still applies: gliderlabs decides "group" before ignoring.
    assert_eq!(d.services[0].name, "web-1");
    assert!(d.skipped.iter().any(|s| s.contains("SERVICE_IGNORE")));
}

#[test]
fn explicit_mode_needs_a_name() {
    let s = Settings { explicit: true, ..settings(true) };
    let unnamed = web(&[], vec![port(1, "tcp", None)]);
    assert!(registrations(&unnamed, &s).services.is_empty());
    let named = web(&["SERVICE_1_NAME=x"], vec![port(1, "tcp", None)]);
    assert_eq!(registrations(&named, &s).services[0].name, "x");
}

#[test]
fn tags_merge_env_and_forced_and_udp() {
    let c = web(&[r"SERVICE_TAGS=a,b\,c", "SERVICE_53_TAGS=dns"], vec![port(53, "udp", None), port(80, "tcp", None)]);
    let s = Settings { force_tags: vec!["prod".into()], ..settings(true) };
    let d = registrations(&c, &s);
    let udp = d.services.iter().find(|s| s.port == 53).expect("udp");
    assert_eq!(udp.tags, ["dns", "prod", "udp"]);
    assert_eq!(udp.id, "host1:proj_web_1:53:udp");
    let tcp = d.services.iter().find(|s| s.port == 80).expect("tcp");
    assert_eq!(tcp.tags, ["a", "b,c", "prod"]);
}

#[test]
fn id_override_generic_and_per_port() {
    let c = web(&["SERVICE_ID=custom"], vec![port(1, "tcp", None)]);
    assert_eq!(registrations(&c, &settings(true)).services[0].id, "custom");
    let c = web(&["SERVICE_ID=custom", "SERVICE_1_ID=one"], vec![port(1, "tcp", None)]);
    assert_eq!(registrations(&c, &settings(true)).services[0].id, "one");
}

#[test]
fn check_variants_follow_the_consul_adapter() {
    let one =
        |env: &[&str]| registrations(&web(env, vec![port(9, "tcp", None)]), &settings(true)).services[0].check.clone();
    let tcp = one(&[
        "SERVICE_CHECK_TCP=true",
        "SERVICE_CHECK_INTERVAL=3s",
        "SERVICE_CHECK_TIMEOUT=1s",
        "SERVICE_CHECK_DEREGISTER_AFTER=1m",
    ])
    .expect("tcp");
    assert_eq!(tcp.tcp.as_deref(), Some("172.18.0.5:9"));
    assert_eq!(tcp.interval.as_deref(), Some("3s"));
    assert_eq!(tcp.timeout.as_deref(), Some("1s"));
    assert_eq!(tcp.deregister_critical_service_after.as_deref(), Some("1m"));

    let https = one(&["SERVICE_CHECK_HTTPS=/h", "SERVICE_9_CHECK_TIMEOUT=2s"]).expect("https");
    assert_eq!(https.http.as_deref(), Some("https://172.18.0.5:9/h"));
    assert_eq!(https.timeout.as_deref(), Some("2s"));

    let ttl = one(&["SERVICE_CHECK_TTL=30s", "SERVICE_CHECK_INITIAL_STATUS=passing"]).expect("ttl");
    assert_eq!(ttl.ttl.as_deref(), Some("30s"));
    assert_eq!(ttl.interval, None);
    assert_eq!(ttl.status.as_deref(), Some("passing"));

    // HTTP wins over TCP, as in gliderlabs.
    let both = one(&["SERVICE_CHECK_TCP=1", "SERVICE_CHECK_HTTP=/x"]).expect("http");
    assert!(both.http.is_some() && both.tcp.is_none());
    assert!(one(&["SERVICE_CHECK_SCRIPT=true"]).is_none());
}

#[test]
fn ipv6_check_addresses_are_bracketed() {
    let mut c = web(&["SERVICE_CHECK_HTTP=/h"], vec![port(80, "tcp", None)]);
    c.network = attached(&[("proj_default", "fd00::5")]);
    let s = &registrations(&c, &settings(true)).services[0];
    let http = s.check.as_ref().and_then(|c| c.http.clone());
    assert_eq!(http.as_deref(), Some("http://[fd00::5]:80/h"));
}

#[test]
fn other_keys_become_meta_and_reserved_ones_do_not() {
    let c = web(
        &[
            "SERVICE_REGION=eu",
            "SERVICE_80_VERSION=2",
            "SERVICE_CHECK_HTTP=/h",
            "SERVICE_REGISTRATOR-OWNER=evil",
            "SERVICE_BAD.KEY=x",
        ],
        vec![port(80, "tcp", None)],
    );
    let s = &registrations(&c, &settings(true)).services[0];
    assert_eq!(s.meta["region"], "eu");
    assert_eq!(s.meta["version"], "2");
    assert_eq!(s.meta[META_OWNER], "host1");
    assert!(!s.meta.contains_key("check_http"));
    assert!(!s.meta.contains_key("name"));
    assert!(!s.meta.contains_key("bad.key"));
}

#[test]
fn internal_mode_without_ip_is_skipped_not_registered_wrongly() {
    let mut c = web(&[], vec![port(80, "tcp", None)]);
    c.network = attached(&[]);
    let d = registrations(&c, &settings(true));
    assert!(d.services.is_empty());
    assert_eq!(d.skipped, ["no IP address on any network"]);
}

#[test]
fn spec_hash_is_stable_and_changes_with_content() {
    let c = web(&["SERVICE_CHECK_HTTP=/h"], vec![port(80, "tcp", None)]);
    let a = registrations(&c, &settings(true)).services[0].meta[META_SPEC].clone();
    let b = registrations(&c, &settings(true)).services[0].meta[META_SPEC].clone();
    assert_eq!(a, b);
    let c2 = web(&["SERVICE_CHECK_HTTP=/other"], vec![port(80, "tcp", None)]);
    let changed = registrations(&c2, &settings(true)).services[0].meta[META_SPEC].clone();
    assert_ne!(a, changed);
}

#[test]
fn no_ports_means_no_services_and_says_so() {
    let d = registrations(&web(&["SERVICE_NAME=x"], vec![]), &settings(true));
    assert!(d.services.is_empty());
    assert_eq!(d.skipped, ["no exposed or published ports"]);
}

#[test]
fn host_network_registers_container_ports_at_the_host_address_in_both_modes() {
    let mut c = web(&["SERVICE_NAME=hostnet"], vec![port(24120, "tcp", Some(("", 24120))), port(24121, "tcp", None)]);
    c.network = Network::Host;
    for internal in [false, true] {
        let s = Settings { host_ip: Some("192.0.2.1".into()), ..settings(internal) };
        let d = registrations(&c, &s);
        let got: Vec<(&str, &str, u16)> =
            d.services.iter().map(|s| (s.name.as_str(), s.address.as_str(), s.port)).collect();
        assert_eq!(got, [("hostnet-24120", "192.0.2.1", 24120), ("hostnet-24121", "192.0.2.1", 24121)]);
        assert!(d.skipped.is_empty(), "{d:?}");
    }
    // Without --ip, the host name's address (resolved at start) is used.
    let s = Settings { host_name_ip: Some("198.51.100.7".into()), ..settings(false) };
    assert_eq!(registrations(&c, &s).services[0].address, "198.51.100.7");
}

#[test]
fn host_network_ignores_the_host_side_of_p_and_says_so() {
    let mut c = web(&[], vec![port(3000, "tcp", Some(("", 8080)))]);
    c.network = Network::Host;
    let d = registrations(&c, &Settings { host_ip: Some("192.0.2.1".into()), ..settings(false) });
    assert_eq!(d.services[0].port, 3000);
    assert_eq!(d.notes, ["network mode host: Docker ignores -p 8080:3000; port 3000 is registered"]);
}

#[test]
fn host_network_without_a_host_address_is_skipped_with_the_reason() {
    let mut c = web(&[], vec![port(24120, "tcp", None)]);
    c.network = Network::Host;
    let d = registrations(&c, &settings(false));
    assert!(d.services.is_empty());
    assert_eq!(d.skipped, ["network mode host: no host address to advertise (set --ip)"]);
}

#[test]
fn none_network_is_skipped_once_for_the_container_not_per_port() {
    let mut c = web(&[], vec![port(1, "tcp", None), port(2, "tcp", None)]);
    c.network = Network::None;
    for internal in [false, true] {
        let d = registrations(&c, &settings(internal));
        assert!(d.services.is_empty());
        assert_eq!(d.skipped, ["network mode none: no address to register"]);
    }
}

#[test]
fn joined_container_is_registered_where_its_owner_is() {
    let mut c = web(&["SERVICE_NAME=side"], vec![port(24130, "tcp", Some(("127.0.0.1", 32770)))]);
    c.via = Some("owner".into());
    let d = registrations(&c, &settings(true));
    assert_eq!((d.services[0].address.as_str(), d.services[0].port), ("172.18.0.5", 24130));
    assert_eq!(d.services[0].id, "host1:proj_web_1:24130", "the ID stays the joining container's");
    assert!(d.notes[0].contains("shares the network of container owner"), "{:?}", d.notes);
    let d = registrations(&c, &settings(false));
    assert_eq!((d.services[0].address.as_str(), d.services[0].port), ("127.0.0.1", 32770));
    c.network = Network::Unusable("shares the network of container owner, which is not running".into());
    assert_eq!(
        registrations(&c, &settings(true)).skipped,
        ["shares the network of container owner, which is not running"]
    );
}
