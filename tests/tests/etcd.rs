//! etcd as the registry (`--source etcd`): a real etcd server, the real gateway (whose watcher
//! reads and watches the prefix) and real serviceweb instances on loopback.
//!
//! - an instance registered by `serviceweb --register-etcd` is routable; SIGKILLed, it leaves
//!   routing when its lease runs out (TTL + a margin); its lease revoked behind its back, it
//!   registers again; SIGTERMed, it leaves at once (lease revoked);
//! - an instance whose lease etcd lost while it could not be reached (etcd started again with no
//!   data) registers again;
//! - the watch survives an etcd restart: requests keep succeeding from the last good set while
//!   etcd is down (readyz says stale), and changes made after the restart arrive;
//! - a watch resumed past a compaction reads the prefix afresh and ends up right;
//! - an etcd started again with an empty data dir (its revision lower than the watcher saw) is
//!   read afresh: its keys replace the old ones;
//! - values larger than gRPC's default message limit together still let the prefix be read;
//! - 500 services (half registered before the gateway starts, half after) all become routable.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{get_json, http, signal, wait_for, Etcd, Gateway, Proc, ServiceWeb};
use serde_json::json;

/// Starts a gateway following `etcd` (services opt in with the `gateway` tag).
fn gateway(etcd: &Etcd) -> Gateway {
    let gw = Gateway::start_env(&[], &["--source", "etcd", "--etcd-endpoints", &etcd.endpoint()]);
    gw.wait_ready();
    gw
}

/// The value of an instance at `port` opting in.
fn instance(port: u16) -> String {
    json!({"address": "127.0.0.1", "port": port, "tags": ["gateway"]}).to_string()
}

/// Which instance (by port) answers `/<service>/getRemoteIp`, if one does.
fn answer(gw: &Gateway, service: &str) -> Option<u16> {
    match get_json(&http(), &gw.url(&format!("/{service}/getRemoteIp"))) {
        Ok((200, v)) => v["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
        _ => None,
    }
}

/// The ports of the instances the gateway holds for `service` (admin `/services`).
fn held(gw: &Gateway, service: &str) -> BTreeSet<u16> {
    let (_, v) = get_json(&http(), &gw.admin("/services")).unwrap_or_default();
    let list = v.as_array().cloned().or_else(|| v["services"].as_array().cloned()).unwrap_or_default();
    list.iter()
        .filter(|s| s["service"] == service)
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect()
}

fn wait_held(gw: &Gateway, service: &str, want: &[u16], timeout: Duration) {
    let want: BTreeSet<u16> = want.iter().copied().collect();
    wait_for(timeout, &format!("{service} to be held as {want:?}"), || (held(gw, service) == want).then_some(()));
}

fn serviceweb_registered(etcd: &Etcd, ttl: &str) -> (Proc, u16) {
    let port = e2e::free_port();
    let args: Vec<String> =
        ["--listen", &format!("127.0.0.1:{port}"), "--register-etcd", &etcd.endpoint(), "--etcd-ttl", ttl]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let proc = Proc::spawn("serviceweb", &args, &[]);
    proc.wait_for_log("registered in etcd", 0, Duration::from_secs(15));
    (proc, port)
}

#[test]
fn a_self_registered_instance_is_routed_until_its_lease_goes() {
    let etcd = Etcd::start();
    let gw = gateway(&etcd);

    // SIGKILL: nothing revokes the lease; it runs out after the TTL.
    let (mut killed, port) = serviceweb_registered(&etcd, "3s");
    wait_for(Duration::from_secs(15), "the instance to be routed", || {
        (answer(&gw, "service-web") == Some(port)).then_some(())
    });
    killed.kill();
    let t0 = Instant::now();
    wait_held(&gw, "service-web", &[], Duration::from_secs(3 + 7));
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(1), "gone after {took:?}: before the lease could run out?");
    assert_eq!(answer(&gw, "service-web"), None);

    // The lease lost (revoked behind the instance's back): it is granted and put again.
    let (lost, port) = serviceweb_registered(&etcd, "3s");
    wait_for(Duration::from_secs(15), "the instance to be routed", || {
        (answer(&gw, "service-web") == Some(port)).then_some(())
    });
    assert_eq!(etcd.revoke_all_leases(), 1);
    let lost_at = lost.wait_for_log("registering again", 0, Duration::from_secs(10));
    lost.wait_for_log("registered in etcd", lost_at + 1, Duration::from_secs(10));
    wait_held(&gw, "service-web", &[port], Duration::from_secs(10));
    drop(lost);
    wait_held(&gw, "service-web", &[], Duration::from_secs(3 + 7));

    // SIGTERM: the lease is revoked on the way out, long before its 10 s TTL.
    let (mut termed, port) = serviceweb_registered(&etcd, "10s");
    wait_for(Duration::from_secs(15), "the second instance to be routed", || {
        (answer(&gw, "service-web") == Some(port)).then_some(())
    });
    signal(termed.pid(), "TERM");
    let t0 = Instant::now();
    assert!(termed.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", termed.log_text());
    wait_held(&gw, "service-web", &[], Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(8), "revoked, not expired: {:?}", t0.elapsed());
    assert!(termed.log_text().contains("lease revoked"), "{}", termed.log_text());
}

#[test]
fn a_self_registered_instance_registers_again_in_an_etcd_that_lost_its_data() {
    let mut etcd = Etcd::start();
    let (sw, _port) = serviceweb_registered(&etcd, "3s");
    // Down for longer than a renewal period, then back without the lease: the first renewal
    // after reconnecting finds no lease.
    etcd.kill();
    std::thread::sleep(Duration::from_secs(3));
    etcd.restart_empty();
    wait_for(Duration::from_secs(20), "the instance's key to be put again", || {
        let keys = etcd.with(|c| async move { c.range("/services/service-web/").await }).kvs.len();
        (keys == 1).then_some(())
    });
    assert!(sw.log_text().contains("registering again"), "{}", sw.log_text());
}

#[test]
fn the_watch_survives_an_etcd_restart() {
    let mut etcd = Etcd::start();
    let (a, b) = (ServiceWeb::start(None), ServiceWeb::start(None));
    etcd.put("/services/web/a", &instance(a.port));
    let gw = gateway(&etcd);
    wait_held(&gw, "web", &[a.port], Duration::from_secs(15));

    etcd.kill();
    // The last good set is served, marked stale.
    wait_for(Duration::from_secs(15), "readyz to say stale", || {
        let (status, v) = gw.readyz();
        (status == 503 && v.to_string().contains("stale")).then_some(())
    });
    for _ in 0..20 {
        assert_eq!(answer(&gw, "web"), Some(a.port), "requests keep succeeding while etcd is down");
    }

    etcd.restart();
    etcd.put("/services/web/b", &instance(b.port));
    wait_held(&gw, "web", &[a.port, b.port], Duration::from_secs(20));
    gw.wait_ready();
    let seen: BTreeSet<u16> = (0..20).filter_map(|_| answer(&gw, "web")).collect();
    assert_eq!(seen, [a.port, b.port].into_iter().collect());
}

#[test]
fn a_watch_resumed_past_a_compaction_reads_afresh() {
    let mut etcd = Etcd::start();
    let (a, b) = (ServiceWeb::start(None), ServiceWeb::start(None));
    etcd.put("/services/web/a", &instance(a.port));
    let gw = gateway(&etcd);
    wait_held(&gw, "web", &[a.port], Duration::from_secs(15));

    // The watcher sleeps through an etcd restart, changes and a compaction past its revision.
    let watcher = gw.watcher_pid();
    signal(watcher, "STOP");
    etcd.restart();
    etcd.delete("/services/web/a");
    etcd.put("/services/web/b", &instance(b.port));
    etcd.put("/services/other/x", "127.0.0.1:1");
    etcd.compact(etcd.revision());
    signal(watcher, "CONT");

    wait_held(&gw, "web", &[b.port], Duration::from_secs(20));
    assert!(gw.proc.log_text().matches("read the etcd prefix").count() >= 2, "{}", gw.proc.log_text());
    assert_eq!(answer(&gw, "web"), Some(b.port));
    assert_eq!(answer(&gw, "other"), None, "untagged: not routed");
    gw.wait_ready();
}

#[test]
fn an_etcd_started_again_with_an_empty_data_dir_is_read_afresh() {
    let mut etcd = Etcd::start();
    let (a, b) = (ServiceWeb::start(None), ServiceWeb::start(None));
    etcd.put("/services/web/a", &instance(a.port));
    for i in 0..20 {
        etcd.put(&format!("/elsewhere/{i}"), "x");
    }
    let gw = gateway(&etcd);
    wait_held(&gw, "web", &[a.port], Duration::from_secs(15));

    // The data is lost: the revision starts over, far below the one the watcher saw.
    etcd.restart_empty();
    etcd.put("/services/web/b", &instance(b.port));
    assert!(etcd.revision() < 10, "the revision went backwards");
    wait_held(&gw, "web", &[b.port], Duration::from_secs(20));
    gw.wait_ready();
    assert_eq!(answer(&gw, "web"), Some(b.port));
}

#[test]
fn large_values_do_not_stop_the_prefix_being_read() {
    let etcd = Etcd::start();
    let a = ServiceWeb::start(None);
    // Four values near etcd's 1.5 MiB request limit: one answer with all of them passes gRPC's
    // default 4 MiB message limit.
    let big = "x".repeat(1_200_000);
    for i in 0..4 {
        etcd.put(&format!("/services/big/{i}"), &big);
    }
    etcd.put("/services/web/a", &instance(a.port));
    let gw = gateway(&etcd);
    wait_held(&gw, "web", &[a.port], Duration::from_secs(15));
    assert_eq!(answer(&gw, "web"), Some(a.port));
}

#[test]
fn five_hundred_services_are_all_routed() {
    const N: usize = 500;
    let etcd = Etcd::start();
    let backend = ServiceWeb::start(None);
    let put = |range: std::ops::Range<usize>| {
        for i in range {
            etcd.put(&format!("/services/s{i}/one"), &instance(backend.port));
        }
    };
    put(0..N / 2);
    let gw = gateway(&etcd);
    let t0 = Instant::now();
    put(N / 2..N);
    wait_for(Duration::from_secs(60), "every service to be held", || {
        let (_, v) = get_json(&http(), &gw.admin("/services")).ok()?;
        let list = v.as_array().cloned().or_else(|| v["services"].as_array().cloned())?;
        let loaded = list.iter().filter(|s| s["instances"].as_array().is_some_and(|i| i.len() == 1)).count();
        (loaded == N).then_some(())
    });
    eprintln!("{N} services held {:?} after the gateway started", t0.elapsed());
    let missing: Vec<usize> = (0..N).filter(|i| answer(&gw, &format!("s{i}")) != Some(backend.port)).collect();
    assert!(missing.is_empty(), "not routed: {missing:?}");
}
