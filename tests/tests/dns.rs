//! DNS as the registry (`--source dns`), against Consul's own DNS interface on a loopback port:
//! the gateway routes to what the SRV records say, drops an instance within the record TTL once
//! Consul stops serving it, keeps routing to the last answer (and says it is stale) while the
//! DNS server is gone, and reads NXDOMAIN (an unknown service, or one without a healthy
//! instance: Consul answers both that way) as "no instance", not as a failure.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{assert_all_ok, get_json, http, wait_for, Consul, Gateway, Hammer, ServiceWeb};

/// The TTL Consul serves service records with here (`dns_config.service_ttl`).
const TTL: Duration = Duration::from_secs(1);
/// How long after Consul stops serving an instance the gateway may still route to it: the TTL,
/// one lookup interval (the gateway's minimum, 1s), and room for a loaded machine.
const DROP_WITHIN: Duration = Duration::from_secs(6);

fn gateway(consul: &Consul, services: &str) -> Gateway {
    let dns = consul.dns_addr();
    Gateway::start(consul, services, &["--source", "dns", "--dns-server", &dns])
}

/// The ports that answered `n` requests to `path`; `None` if one did not answer 200.
fn ports(gw: &Gateway, path: &str, n: usize) -> Option<BTreeSet<u16>> {
    let client = http();
    (0..n)
        .map(|_| match get_json(&client, &gw.url(path)) {
            Ok((200, body)) => body["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until 30 requests in a row answer 200 from exactly `want`; returns how long
/// it took.
fn wait_for_ports(gw: &Gateway, want: &BTreeSet<u16>, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(within, what, || (ports(gw, "/web/getRemoteIp", 30).as_ref() == Some(want)).then_some(()));
    start.elapsed()
}

#[test]
fn routes_to_the_srv_answer_and_drops_a_failed_or_deregistered_instance_within_the_ttl() {
    let consul = Consul::start_dns("1s");
    let webs: Vec<ServiceWeb> = (0..3).map(|_| ServiceWeb::start(None)).collect();
    for w in &webs {
        consul.register_ttl("web", &format!("web-{}", w.port), w.port, "passing");
    }
    let gw = gateway(&consul, "web");
    let all: BTreeSet<u16> = webs.iter().map(|w| w.port).collect();
    wait_for_ports(&gw, &all, Duration::from_secs(10), "requests to reach all 3 instances");

    // A failing health check: Consul stops serving the instance in its SRV answer.
    let hammer = Hammer::start(gw.url("/web/getRemoteIp"));
    consul.set_check(&format!("service:web-{}", webs[0].port), "fail");
    let two: BTreeSet<u16> = all.iter().copied().filter(|p| *p != webs[0].port).collect();
    let took = wait_for_ports(&gw, &two, DROP_WITHIN, "the failed instance to get no more requests");
    eprintln!("failed instance dropped after {took:?} (record TTL {TTL:?})");

    // A deregistration, the same way.
    consul.deregister(&format!("web-{}", webs[1].port));
    let one = BTreeSet::from([webs[2].port]);
    let took = wait_for_ports(&gw, &one, DROP_WITHIN, "the deregistered instance to get no more requests");
    eprintln!("deregistered instance dropped after {took:?}");
    assert_all_ok(&hammer.finish(), "traffic while instances left the DNS answer");
    gw.wait_ready();
}

#[test]
fn while_the_dns_server_is_down_the_last_answer_keeps_serving_and_is_reported_stale() {
    let mut consul = Consul::start_dns("1s");
    let webs: Vec<ServiceWeb> = (0..2).map(|_| ServiceWeb::start(None)).collect();
    for w in &webs {
        consul.register_ttl("web", &format!("web-{}", w.port), w.port, "passing");
    }
    let gw = gateway(&consul, "web");
    let all: BTreeSet<u16> = webs.iter().map(|w| w.port).collect();
    wait_for_ports(&gw, &all, Duration::from_secs(10), "requests to reach both instances");
    let client = http();

    consul.stop();
    let (_, ready) = wait_for(Duration::from_secs(15), "/readyz to report the stale answer", || {
        let (status, v) = get_json(&client, &gw.admin("/readyz")).ok()?;
        (status == 503 && v.to_string().contains("stale")).then_some((status, v))
    });
    assert!(ready.to_string().contains("DNS lookup"), "{ready}");
    let (_, services) = get_json(&client, &gw.admin("/services")).expect("/services");
    assert_eq!(services["services"][0]["stale"], true, "{services}");
    // Several failed lookups later (retries from 1s, doubling), the last answer still serves.
    let hammer = Hammer::start(gw.url("/web/getRemoteIp"));
    std::thread::sleep(Duration::from_secs(4));
    let during = hammer.finish();
    assert_all_ok(&during, "traffic while the DNS server is down");
    let seen: BTreeSet<u16> = during.iter().filter_map(|s| s.port).collect();
    assert_eq!(seen, all, "the last answer keeps serving");

    // Back, empty: the truth is a new instance, and the stale mark goes.
    consul.restart_empty();
    let new = ServiceWeb::start(None);
    consul.register_ttl("web", "web-new", new.port, "passing");
    wait_for_ports(&gw, &BTreeSet::from([new.port]), Duration::from_secs(20), "the new answer to be routed");
    gw.wait_ready();
}

#[test]
fn nxdomain_is_no_instance_not_a_failure() {
    let consul = Consul::start_dns("1s");
    let web = ServiceWeb::start(None);
    // Registered, but its check is critical: Consul answers NXDOMAIN, as for "ghost", which it
    // never heard of.
    consul.register_ttl("web", "web-1", web.port, "critical");
    let gw = gateway(&consul, "web,ghost");
    let client = http();
    let (_, services) = get_json(&client, &gw.admin("/services")).expect("/services");
    let list = services["services"].as_array().expect("services").clone();
    assert_eq!(list.len(), 2, "{services}");
    for s in &list {
        assert_eq!(s["stale"], false, "{services}");
    }
    let (status, _) = get_json(&client, &gw.url("/web/getRemoteIp")).expect("request");
    assert_eq!(status, 503, "no instance: nothing to route to");
    let log = gw.proc.log_text();
    assert!(log.contains("following DNS"), "the watcher's log is in the gateway's: {log}");
    assert!(!log.contains("keeping the last answer"), "{log}");

    consul.set_check("service:web-1", "pass");
    wait_for_ports(&gw, &BTreeSet::from([web.port]), Duration::from_secs(10), "the instance, once healthy");
}

#[test]
fn with_a_port_address_records_are_asked_and_routed_to_that_port() {
    let consul = Consul::start_dns("1s");
    let web = ServiceWeb::start(None);
    consul.register_ttl("web", "web-1", web.port, "passing");
    // `web.service.consul` A records: the instance's address; the port is the flag's.
    let port = web.port.to_string();
    let dns = consul.dns_addr();
    let gw = Gateway::start(&consul, "web", &["--source", "dns", "--dns-server", &dns, "--dns-port", &port]);
    wait_for_ports(&gw, &BTreeSet::from([web.port]), Duration::from_secs(10), "requests to reach the instance");
    let (_, services) = get_json(&http(), &gw.admin("/services")).expect("/services");
    assert!(services.to_string().contains(&format!("127.0.0.1:{port}")), "{services}");
    consul.set_check("service:web-1", "fail");
    let client = http();
    wait_for(DROP_WITHIN, "no instance once its check fails", || {
        matches!(get_json(&client, &gw.url("/web/getRemoteIp")), Ok((503, _))).then_some(())
    });
}
