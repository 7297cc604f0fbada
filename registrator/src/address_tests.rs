//! Unit tests of [`super::route`]: the address decision per network mode and flag.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;

fn settings(internal: bool, network: Option<&str>) -> Settings {
    Settings {
        hostname: "h".into(),
        internal,
        host_ip: None,
        host_name_ip: None,
        network: network.map(str::to_string),
        force_tags: vec![],
        explicit: false,
    }
}

fn on(primary: &str, ips: &[(&str, &str)]) -> Container {
    let ips: BTreeMap<String, String> = ips.iter().map(|(n, ip)| (n.to_string(), ip.to_string())).collect();
    Container { network: Network::Attached { primary: primary.into(), ips }, ..Default::default() }
}

#[test]
fn several_networks_use_the_one_started_on_and_say_so() {
    // Started on `zeta`, connected to `alpha` later: the start network wins over name order.
    let c = on("zeta", &[("alpha", "10.1.0.2"), ("zeta", "10.2.0.2")]);
    let r = route(&c, &settings(true, None)).expect("route");
    assert_eq!(r.reach, Reach::Container("10.2.0.2".into()));
    assert_eq!(
        r.notes,
        ["on networks alpha, zeta: registered with its IP on zeta (the network it was started on); --network picks another"]
    );
}

#[test]
fn without_the_start_network_the_first_by_name_is_used() {
    // `NetworkMode` may name a network by ID, or the start network may have been disconnected.
    let c = on("4f1c0ffee", &[("beta", "10.3.0.2"), ("alpha", "10.1.0.2")]);
    let r = route(&c, &settings(true, None)).expect("route");
    assert_eq!(r.reach, Reach::Container("10.1.0.2".into()));
    assert!(r.notes[0].contains("alpha (the first by name)"), "{:?}", r.notes);
}

#[test]
fn one_network_is_used_without_a_note() {
    let r = route(&on("bridge", &[("bridge", "172.17.0.2")]), &settings(true, None)).expect("route");
    assert_eq!(r.reach, Reach::Container("172.17.0.2".into()));
    assert!(r.notes.is_empty());
}

#[test]
fn network_flag_picks_or_skips() {
    let c = on("zeta", &[("alpha", "10.1.0.2"), ("zeta", "10.2.0.2")]);
    let r = route(&c, &settings(true, Some("alpha"))).expect("route");
    assert_eq!((r.reach, r.notes.len()), (Reach::Container("10.1.0.2".into()), 0));
    let why = route(&c, &settings(true, Some("gamma"))).expect_err("not on gamma");
    assert_eq!(why, "not on network gamma (--network), only on alpha, zeta");
    let why = route(&on("bridge", &[]), &settings(true, Some("gamma"))).expect_err("no networks");
    assert_eq!(why, "not on network gamma (--network)");
}

#[test]
fn published_mode_does_not_choose_a_network() {
    let c = on("zeta", &[("alpha", "10.1.0.2"), ("zeta", "10.2.0.2")]);
    let r = route(&c, &settings(false, Some("gamma"))).expect("route");
    assert_eq!((r.reach, r.notes.len()), (Reach::Published, 0));
}

#[test]
fn host_network_uses_ip_flag_then_host_name_address() {
    let c = Container { network: Network::Host, ..Default::default() };
    let both =
        Settings { host_ip: Some("192.0.2.1".into()), host_name_ip: Some("192.0.2.2".into()), ..settings(true, None) };
    assert_eq!(route(&c, &both).expect("route").reach, Reach::HostStack("192.0.2.1".into()));
    let resolved = Settings { host_ip: None, ..both.clone() };
    assert_eq!(route(&c, &resolved).expect("route").reach, Reach::HostStack("192.0.2.2".into()));
    assert!(route(&c, &settings(true, None)).expect_err("no address").contains("set --ip"));
    // A registrator scoped to one network does not register host-network containers.
    let scoped = Settings { network: Some("net".into()), ..both };
    assert_eq!(route(&c, &scoped).expect_err("scoped"), "network mode host, not on network net (--network)");
}

#[test]
fn reasons_name_the_owner_of_a_shared_namespace() {
    let c = Container { network: Network::None, via: Some("owner".into()), ..Default::default() };
    let why = route(&c, &settings(true, None)).expect_err("none");
    assert_eq!(why, "shares the network of container owner: network mode none: no address to register");
    let c = Container { network: Network::Joined("abc".into()), ..Default::default() };
    assert!(route(&c, &settings(true, None)).expect_err("unresolved").contains("not resolved"));
}

#[test]
fn host_name_address_is_never_loopback_and_prefers_ipv4() {
    let ips = |l: &[&str]| l.iter().map(|s| s.parse::<IpAddr>().expect("ip")).collect::<Vec<_>>();
    assert_eq!(pick_host_ip(ips(&["127.0.1.1", "::1"])), None);
    assert_eq!(pick_host_ip(ips(&["fe80::1", "2001:db8::5", "10.0.0.7"])), Some("10.0.0.7".parse().expect("ip")));
    assert_eq!(pick_host_ip(ips(&["fe80::1", "2001:db8::5"])), Some("2001:db8::5".parse().expect("ip")));
    assert_eq!(pick_host_ip(ips(&["0.0.0.0"])), None);
}
