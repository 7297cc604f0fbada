//! Routing and change propagation through the real gateway.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::{assert_all_ok, get_json, http, wait_for, Consul, Gateway, Hammer, ServiceWeb};

#[test]
fn routes_spread_over_all_self_registered_instances() {
    let consul = Consul::start();
    let backends: Vec<ServiceWeb> = (0..3).map(|_| ServiceWeb::start(Some(&consul))).collect();
    let gw = Gateway::start(&consul, "service-web", &[]);
    let want: HashSet<u16> = backends.iter().map(|b| b.port).collect();
    let client = http();
    // The first snapshot may hold fewer than 3 if registrations raced the watcher: wait for all.
    wait_for(Duration::from_secs(5), "all 3 instances in /services", || {
        let (_, v) = get_json(&client, &gw.admin("/services")).ok()?;
        (v["services"][0]["instances"].as_array()?.len() == 3).then_some(())
    });
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let (status, v) = get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["ip"], "127.0.0.1");
        seen.insert(v["port"].as_u64().unwrap() as u16);
    }
    assert_eq!(seen, want, "60 requests must reach every instance");
}

#[test]
fn a_deregistered_instance_stops_receiving_traffic_within_a_second_and_is_logged() {
    let consul = Consul::start();
    let backends: Vec<ServiceWeb> = (0..3).map(|_| ServiceWeb::start(None)).collect();
    for b in &backends {
        consul.register("service-web", &format!("web-{}", b.port), b.port);
    }
    let gw = Gateway::start(&consul, "service-web", &[]);
    gw.proc.wait_for_log("-> 3 instances", 0, Duration::from_secs(5));
    let victim = backends[0].port;
    let hammer = Hammer::start(gw.url("/service-web/getRemoteIp"));
    std::thread::sleep(Duration::from_millis(300));

    consul.deregister(&format!("web-{victim}"));
    let deregistered = Instant::now();
    gw.proc.wait_for_log(&format!("removed 127.0.0.1:{victim}"), 0, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1500));
    let samples = hammer.finish();

    assert_all_ok(&samples, "traffic during the deregistration");
    let last_to_victim = samples.iter().filter(|s| s.port == Some(victim)).map(|s| s.at).max();
    if let Some(last) = last_to_victim {
        let lag = last.saturating_duration_since(deregistered);
        assert!(lag <= Duration::from_secs(1), "the removed instance still got traffic {lag:?} after deregistration");
    }
    let after: HashSet<u16> =
        samples.iter().filter(|s| s.at > deregistered + Duration::from_secs(1)).filter_map(|s| s.port).collect();
    assert_eq!(after, HashSet::from([backends[1].port, backends[2].port]));
    let line = gw.proc.logs().into_iter().find(|l| l.contains("removed 127.0.0.1")).unwrap();
    assert!(line.contains("service-web: 3 -> 2 instances"), "change line: {line}");
}

#[test]
fn a_new_instance_starts_receiving_traffic() {
    let consul = Consul::start();
    let first = ServiceWeb::start(None);
    consul.register("service-web", "web-a", first.port);
    let gw = Gateway::start(&consul, "service-web", &[]);
    let second = ServiceWeb::start(None);
    consul.register("service-web", "web-b", second.port);
    gw.proc.wait_for_log(&format!("added 127.0.0.1:{}", second.port), 0, Duration::from_secs(2));
    let client = http();
    let seen: HashSet<u64> = (0..40)
        .map(|_| get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap().1["port"].as_u64().unwrap())
        .collect();
    assert!(seen.contains(&u64::from(second.port)), "the new instance got no traffic: {seen:?}");
}

#[test]
fn errors_are_json_404_for_unknown_and_503_for_no_instance() {
    let consul = Consul::start();
    let b = ServiceWeb::start(None);
    consul.register("service-web", "web-a", b.port);
    // `service-empty` is routable but has no instance; `other` exists in Consul but is not routable
    // (neither named nor tagged).
    consul.register("other", "other-a", b.port);
    let gw = Gateway::start(&consul, "service-web,service-empty", &[]);
    let client = http();
    let (status, v) = get_json(&client, &gw.url("/other/getRemoteIp")).unwrap();
    assert_eq!((status, v["error"].as_str(), v["path"].as_str()), (404, Some("no route"), Some("/other/getRemoteIp")));
    let (status, _) = get_json(&client, &gw.url("/")).unwrap();
    assert_eq!(status, 404);
    let (status, v) = get_json(&client, &gw.url("/service-empty/x")).unwrap();
    assert_eq!(
        (status, v["error"].as_str(), v["service"].as_str()),
        (503, Some("no live instance"), Some("service-empty"))
    );
    let (status, _) = get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn many_services_are_watched_over_few_connections() {
    let consul = Consul::start();
    let backend = ServiceWeb::start(None);
    let names: Vec<String> = (0..40).map(|i| format!("svc-{i:02}")).collect();
    // Half the services have instances with checks, half without: both ways of finding what
    // changed are exercised (check fingerprints; the node-by-node catalog scan).
    for (i, n) in names.iter().enumerate() {
        if i % 2 == 0 {
            consul.register_ttl(n, &format!("{n}-a"), backend.port, "passing");
        } else {
            consul.register(n, &format!("{n}-a"), backend.port);
        }
    }
    let gw = Gateway::start(&consul, &names.join(","), &[]);
    let client = http();
    for n in &names {
        let (status, _) = get_json(&client, &gw.url(&format!("/{n}/getRemoteIp"))).unwrap();
        assert_eq!(status, 200, "{n}");
    }
    let other = ServiceWeb::start(None);
    let t = Duration::from_secs(2);
    // A check-less service gains and loses an instance.
    consul.register("svc-17", "svc-17-b", other.port);
    gw.proc.wait_for_log(&format!("svc-17: 1 -> 2 instances, added 127.0.0.1:{}", other.port), 0, t);
    consul.deregister("svc-17-b");
    gw.proc.wait_for_log(&format!("svc-17: 2 -> 1 instances, removed 127.0.0.1:{}", other.port), 0, t);
    // A service with checks: a new instance, then a failing check.
    consul.register_ttl("svc-18", "svc-18-b", other.port, "passing");
    gw.proc.wait_for_log(&format!("svc-18: 1 -> 2 instances, added 127.0.0.1:{}", other.port), 0, t);
    consul.set_check("service:svc-18-a", "fail");
    gw.proc.wait_for_log(&format!("svc-18: 2 -> 1 instances, removed 127.0.0.1:{}", backend.port), 0, t);
    // Instance change lines (`svc-17: 1 -> 2 instances, added ...`), not route lines.
    let changes = gw.proc.logs().iter().filter(|l| l.contains(" -> ") && l.contains(" instances, ")).count();
    assert_eq!(changes, 40 + 4, "one line per real change, none for untouched services");
    let watcher = gw.watcher_pid();
    let conns = e2e::tcp_connections_to(watcher, consul.http_port());
    assert!((1..=16).contains(&conns), "the watcher holds {conns} connections to Consul for 40 services");
}

#[test]
fn several_workers_share_the_port_and_all_follow_a_change() {
    let consul = Consul::start();
    let backends: Vec<ServiceWeb> = (0..3).map(|_| ServiceWeb::start(None)).collect();
    for b in &backends {
        consul.register("service-web", &format!("web-{}", b.port), b.port);
    }
    let gw = Gateway::start(&consul, "service-web", &["--workers", "3"]);
    gw.proc.wait_for_log("-> 3 instances", 0, Duration::from_secs(5));
    // The kernel spreads connections over the workers' sockets: several keep-alive clients.
    let hammers: Vec<Hammer> = (0..6).map(|_| Hammer::start(gw.url("/service-web/getRemoteIp"))).collect();
    std::thread::sleep(Duration::from_millis(300));

    let victim = backends[0].port;
    consul.deregister(&format!("web-{victim}"));
    let deregistered = Instant::now();
    gw.proc.wait_for_log(&format!("removed 127.0.0.1:{victim}"), 0, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1500));
    for (i, hammer) in hammers.into_iter().enumerate() {
        let samples = hammer.finish();
        assert!(samples.len() > 10, "client {i} got {} answers", samples.len());
        assert_all_ok(&samples, &format!("client {i}"));
        let late: Vec<_> = samples.iter().filter(|s| s.at > deregistered + Duration::from_secs(1)).collect();
        assert!(!late.is_empty(), "client {i} kept getting answers");
        assert!(late.iter().all(|s| s.port != Some(victim)), "client {i} still reached the removed instance");
    }
}
