//! Failure behaviour: the watcher killed, Consul down and back empty, a dead instance still
//! registered.

use std::collections::HashSet;
use std::time::Duration;

use e2e::{assert_all_ok, get_json, http, signal, wait_for, Consul, Gateway, Hammer, ServiceWeb};

#[test]
fn killing_the_watcher_loses_no_request_and_later_changes_still_arrive() {
    let consul = Consul::start();
    let a = ServiceWeb::start(None);
    consul.register("service-web", "web-a", a.port);
    let gw = Gateway::start(&consul, "service-web", &[]);
    let hammer = Hammer::start(gw.url("/service-web/getRemoteIp"));
    let first = gw.watcher_pid();
    signal(first, "KILL");
    gw.proc.wait_for_log("watcher exited; restarting", 0, Duration::from_secs(5));
    let second = wait_for(Duration::from_secs(10), "a new watcher", || gw.watcher_pid_if_any().filter(|p| *p != first));
    assert_ne!(first, second);
    gw.wait_ready();
    let b = ServiceWeb::start(None);
    consul.register("service-web", "web-b", b.port);
    gw.proc.wait_for_log(&format!("added 127.0.0.1:{}", b.port), 0, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    let samples = hammer.finish();
    assert_all_ok(&samples, "traffic while the watcher was killed and restarted");
    assert!(samples.iter().any(|s| s.port == Some(b.port)), "the instance added after the restart got no traffic");
}

#[test]
fn consul_down_keeps_routing_then_an_empty_restart_converges() {
    let mut consul = Consul::start();
    let old: Vec<ServiceWeb> = (0..2).map(|_| ServiceWeb::start(None)).collect();
    for b in &old {
        consul.register("service-web", &format!("old-{}", b.port), b.port);
    }
    let gw = Gateway::start(&consul, "service-web", &[]);
    gw.proc.wait_for_log("-> 2 instances", 0, Duration::from_secs(5));
    let client = http();

    consul.stop();
    wait_for(Duration::from_secs(15), "/readyz to report stale data", || {
        let (status, v) = get_json(&client, &gw.admin("/readyz")).ok()?;
        (status == 503 && v.to_string().contains("stale")).then_some(())
    });
    let (_, services) = get_json(&client, &gw.admin("/services")).unwrap();
    assert_eq!(services["services"][0]["stale"], true, "{services}");
    let hammer = Hammer::start(gw.url("/service-web/getRemoteIp"));
    std::thread::sleep(Duration::from_secs(1));
    let during = hammer.finish();
    assert_all_ok(&during, "traffic while Consul is down");
    let ports: HashSet<u16> = during.iter().filter_map(|s| s.port).collect();
    assert_eq!(ports, old.iter().map(|b| b.port).collect(), "the last known instances keep serving");

    // Consul comes back with nothing it knew: its index starts over; the truth is a new instance.
    consul.restart_empty();
    let new = ServiceWeb::start(None);
    consul.register("service-web", "new-1", new.port);
    gw.proc.wait_for_log(&format!("added 127.0.0.1:{}", new.port), 0, Duration::from_secs(15));
    gw.wait_ready();
    let seen: HashSet<u64> = (0..30)
        .map(|_| get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap().1["port"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, HashSet::from([u64::from(new.port)]), "only the new truth is routed");
}

#[test]
fn a_registered_instance_with_nothing_listening_costs_clients_nothing() {
    let consul = Consul::start();
    let live: Vec<ServiceWeb> = (0..2).map(|_| ServiceWeb::start(None)).collect();
    for b in &live {
        consul.register("service-web", &format!("live-{}", b.port), b.port);
    }
    let dead_port = e2e::free_port();
    consul.register("service-web", "dead", dead_port);
    let gw = Gateway::start(&consul, "service-web", &[]);
    gw.proc.wait_for_log("-> 3 instances", 0, Duration::from_secs(5));
    let client = http();
    for i in 0..100 {
        let (status, v) = get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap();
        assert_eq!(status, 200, "request {i}: {v}");
    }
    assert!(gw.proc.logs().iter().any(|l| l.contains("connect failed; trying another instance")));
}

#[test]
fn without_a_watcher_requests_are_served_from_one_direct_consul_read() {
    let consul = Consul::start();
    let b = ServiceWeb::start(None);
    consul.register("service-web", "web-a", b.port);
    // A watcher that exits at once: the gateway keeps restarting it and never gets a snapshot.
    let gw = Gateway::start_unready(&consul, "service-web", &["--watcher-bin", "/bin/false"]);
    let client = http();
    wait_for(Duration::from_secs(10), "the gateway to listen", || get_json(&client, &gw.admin("/healthz")).ok());
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> =
            (0..8).map(|_| s.spawn(|| get_json(&http(), &gw.url("/service-web/getRemoteIp")).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, v) in &results {
        assert_eq!((*status, v["port"].as_u64()), (200, Some(u64::from(b.port))), "{v}");
    }
    let direct_reads = gw.proc.logs().iter().filter(|l| l.contains("loaded directly from Consul")).count();
    assert_eq!(direct_reads, 1, "concurrent first requests share one Consul read");
    let (status, v) = get_json(&client, &gw.admin("/readyz")).unwrap();
    assert_eq!(status, 503, "no watcher: the data cannot be trusted to be fresh: {v}");
    assert!(gw.proc.logs().iter().any(|l| l.contains("watcher exited; restarting")));
}
