//! Unit tests of the inspect → [`Container`] conversion, on JSON captured from Docker 20.10.

use super::*;

// `docker inspect` of `docker run --network regtest-net --expose 3000 -p 127.0.0.1::8080
// -e SERVICE_NAME=web ... sleep 60` on Docker 20.10.24, trimmed to the fields we read.
const INSPECT: &str = r#"{"Id": "17f565db109fb80d7a3b6d5afd0819692752216538a48c935fa95b4f596805d9", "Name": "/regtest1",
  "State": {"Status": "running", "Running": true, "Paused": false, "Restarting": false, "OOMKilled": false, "Dead": false, "Pid": 20521, "ExitCode": 0, "Error": "", "StartedAt": "2026-11-22T04:52:42.676533347Z", "FinishedAt": "0001-01-01T00:00:00Z"},
  "Config": {"Image": "consul-gateway-base:bookworm", "Env": ["SERVICE_NAME=web", "PATH=/usr/bin"], "Labels": {"SERVICE_TAGS": "x"}, "ExposedPorts": {"3000/tcp": {}, "8080/tcp": {}}},
  "HostConfig": {"NetworkMode": "regtest-net"},
  "NetworkSettings": {"IPAddress": "", "Ports": {"3000/tcp": null, "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}]},
    "Networks": {"other": {"IPAddress": "10.9.0.2"}, "regtest-net": {"IPAddress": "172.18.0.2"}}}}"#;

fn inspect() -> ContainerInspectResponse {
    serde_json::from_str(INSPECT).expect("inspect JSON")
}

fn serving(resp: ContainerInspectResponse) -> Container {
    match state_of(resp) {
        State::Serving(c) => *c,
        other => panic!("not serving: {other:?}"),
    }
}

#[test]
fn running_container_converts_with_ports_env_and_labels() {
    let c = serving(inspect());
    assert_eq!(c.name, "regtest1");
    assert_eq!(c.image, "consul-gateway-base:bookworm");
    assert_eq!(c.env[0], "SERVICE_NAME=web");
    assert_eq!(c.labels["SERVICE_TAGS"], "x");
    assert_eq!(c.ports.len(), 2);
    assert_eq!((c.ports[0].port, c.ports[0].host_port), (3000, None));
    assert_eq!(c.ports[1].port, 8080);
    assert_eq!(c.ports[1].host_port, Some(32768));
    assert_eq!(c.ports[1].host_ip.as_deref(), Some("127.0.0.1"));
}

#[test]
fn networks_are_reported_with_the_start_network_as_primary() {
    let mut ips = BTreeMap::new();
    ips.insert("other".to_string(), "10.9.0.2".to_string());
    ips.insert("regtest-net".to_string(), "172.18.0.2".to_string());
    assert_eq!(serving(inspect()).network, Network::Attached { primary: "regtest-net".into(), ips });
    assert_eq!(serving(inspect()).via, None);
}

/// `inspect()` with another `NetworkMode` and the `Networks` Docker 20.10 reports for it.
fn in_mode(mode: &str, networks: &str) -> ContainerInspectResponse {
    let json = INSPECT.replace(r#""NetworkMode": "regtest-net""#, &format!(r#""NetworkMode": "{mode}""#)).replace(
        r#""Networks": {"other": {"IPAddress": "10.9.0.2"}, "regtest-net": {"IPAddress": "172.18.0.2"}}"#,
        networks,
    );
    serde_json::from_str(&json).expect("inspect JSON")
}

#[test]
fn default_mode_is_the_bridge_network() {
    let c = serving(in_mode("default", r#""Networks": {"bridge": {"IPAddress": "172.17.0.3"}}"#));
    let Network::Attached { primary, ips } = c.network else { panic!("{:?}", c.network) };
    assert_eq!((primary.as_str(), ips["bridge"].as_str()), ("bridge", "172.17.0.3"));
}

#[test]
fn host_none_and_container_modes_are_recognised() {
    let host = r#""Networks": {"host": {"IPAddress": ""}}"#;
    assert_eq!(serving(in_mode("host", host)).network, Network::Host);
    assert_eq!(serving(in_mode("none", r#""Networks": {"none": {"IPAddress": ""}}"#)).network, Network::None);
    assert_eq!(serving(in_mode("container:6cfa3bdf", r#""Networks": {}"#)).network, Network::Joined("6cfa3bdf".into()));
}

#[test]
fn host_mode_ports_include_the_configured_bindings() {
    // `docker run --net=host -p 24120:8080 --expose 3000`: Docker reports no runtime port map,
    // only the configured binding it ignores.
    let json = INSPECT
        .replace(
            r#""NetworkMode": "regtest-net""#,
            r#""NetworkMode": "host", "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "24120"}]}"#,
        )
        .replace(
            r#""Ports": {"3000/tcp": null, "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}]}"#,
            r#""Ports": {}"#,
        );
    let c = serving(serde_json::from_str(&json).expect("inspect JSON"));
    assert_eq!(c.network, Network::Host);
    let ports: Vec<(u16, Option<u16>)> = c.ports.iter().map(|p| (p.port, p.host_port)).collect();
    assert_eq!(ports, [(3000, None), (8080, Some(24120))]);
}

#[test]
fn runtime_port_map_wins_over_the_configured_binding() {
    // `-p 127.0.0.1::8080` is configured without a host port; the runtime map has the one chosen.
    let json = INSPECT.replace(
        r#""NetworkMode": "regtest-net""#,
        r#""NetworkMode": "regtest-net", "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}"#,
    );
    let c = serving(serde_json::from_str(&json).expect("inspect JSON"));
    assert_eq!(c.ports[1].host_port, Some(32768));
}

#[test]
fn joining_takes_the_owners_network_and_bindings() {
    let mut joiner = serving(in_mode("container:17f565db", r#""Networks": {}"#));
    join(&mut joiner, "17f565db", Some(inspect()));
    assert_eq!(joiner.via.as_deref(), Some("regtest1"));
    assert!(matches!(&joiner.network, Network::Attached { primary, .. } if primary == "regtest-net"));
    assert_eq!(joiner.ports[1].host_port, Some(32768), "the owner's binding of 8080");
    assert_eq!(joiner.ports[0].host_port, None);
}

#[test]
fn joining_a_stopped_gone_or_joined_owner_is_unusable() {
    let mut stopped = inspect();
    if let Some(s) = stopped.state.as_mut() {
        s.running = Some(false);
    }
    let base = serving(in_mode("container:17f565db", r#""Networks": {}"#));
    let cases = [
        (Some(stopped), "shares the network of container regtest1, which is not running"),
        (None, "shares the network of container 17f565db, which no longer exists"),
        (
            Some(in_mode("container:aaaa", r#""Networks": {}"#)),
            "shares the network of container regtest1, which shares another's",
        ),
    ];
    for (owner, why) in cases {
        let mut c = base.clone();
        join(&mut c, "17f565db", owner);
        assert_eq!(c.network, Network::Unusable(why.into()));
    }
}

#[test]
fn paused_and_exited_are_not_serving() {
    let mut r = inspect();
    if let Some(s) = r.state.as_mut() {
        s.paused = Some(true);
    }
    assert_eq!(state_of(r), State::Paused);
    let mut r = inspect();
    if let Some(s) = r.state.as_mut() {
        s.running = Some(false);
        s.exit_code = Some(137);
    }
    assert_eq!(state_of(r), State::Exited(137));
}

#[test]
fn port_keys_parse() {
    assert_eq!(parse_port_key("53/udp"), Some((53, "udp".into())));
    assert_eq!(parse_port_key("80"), Some((80, "tcp".into())));
    assert_eq!(parse_port_key("x/tcp"), None);
}

#[test]
fn short_ids() {
    assert_eq!(short("0123456789abcdef"), "0123456789ab");
    assert_eq!(short("abc"), "abc");
}
