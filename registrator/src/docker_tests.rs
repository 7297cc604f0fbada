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

fn serving(resp: ContainerInspectResponse, network: Option<&str>) -> Container {
    match state_of(resp, network) {
        State::Serving(c) => *c,
        other => panic!("not serving: {other:?}"),
    }
}

#[test]
fn running_container_converts_with_ports_env_and_labels() {
    let c = serving(inspect(), None);
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
fn ip_comes_from_the_network_mode_network_not_the_first_one() {
    assert_eq!(serving(inspect(), None).ip.as_deref(), Some("172.18.0.2"));
}

#[test]
fn network_flag_picks_that_network_or_none() {
    assert_eq!(serving(inspect(), Some("other")).ip.as_deref(), Some("10.9.0.2"));
    assert_eq!(serving(inspect(), Some("missing")).ip, None);
}

#[test]
fn default_bridge_ip_is_used_when_present() {
    let mut r = inspect();
    if let Some(ns) = r.network_settings.as_mut() {
        ns.ip_address = Some("172.17.0.3".into());
    }
    assert_eq!(serving(r, None).ip.as_deref(), Some("172.17.0.3"));
}

#[test]
fn paused_and_exited_are_not_serving() {
    let mut r = inspect();
    if let Some(s) = r.state.as_mut() {
        s.paused = Some(true);
    }
    assert_eq!(state_of(r, None), State::Paused);
    let mut r = inspect();
    if let Some(s) = r.state.as_mut() {
        s.running = Some(false);
        s.exit_code = Some(137);
    }
    assert_eq!(state_of(r, None), State::Exited(137));
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
