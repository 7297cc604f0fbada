//! The state file (`--state-file`, issue 14): a gateway that starts while Consul is unreachable
//! serves the last good state at once, marked stale, and converges when Consul is back; a bad
//! file is ignored with one warning; a gateway killed mid-run leaves a valid file.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{free_port, get_json, http, signal, wait_for, Consul, Gateway, ServiceWeb};
use serde_json::{json, Value};

/// The payload of a state file, if the file is one and its length and SHA-256 check out.
fn stored(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    let nl = bytes.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..nl]).ok()?;
    let words: Vec<&str> = header.split(' ').collect();
    let [magic, "1", sum, len] = words[..] else { return None };
    assert_eq!(magic, "gateway-state-file");
    let payload = &bytes[nl + 1..];
    assert_eq!(payload.len(), len.parse::<usize>().unwrap(), "{} is truncated", path.display());
    let digest = ring::digest::digest(&ring::digest::SHA256, payload);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sum.strip_prefix("sha256:"), Some(hex.as_str()), "{} has a bad checksum", path.display());
    Some(serde_json::from_slice(payload).unwrap())
}

/// The stored ports of `service`, if the file holds it.
fn stored_ports(state: &Value, service: &str) -> Option<HashSet<u64>> {
    let s = state["services"].as_array()?.iter().find(|s| s["service"] == service)?;
    Some(s["instances"].as_array()?.iter().filter_map(|i| i["port"].as_u64()).collect())
}

fn register_tagged(consul: &Consul, name: &str, id: &str, port: u16) {
    consul.register_json(json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": ["gateway"]}));
}

/// A gateway for `service-web` (and services tagged `gateway`) with the state file at `path`,
/// against Consul at `consul` (which may not be there), once its admin listener answers.
fn gateway(consul: &str, path: &Path) -> Gateway {
    let path = path.to_str().unwrap();
    let gw = Gateway::start_env(&[], &["--consul", consul, "--services", "service-web", "--state-file", path]);
    let client = http();
    wait_for(Duration::from_secs(10), "gateway /healthz", || get_json(&client, &gw.admin("/healthz")).ok());
    gw
}

/// The gateway's log lines that mention the state file at WARN level.
fn warnings_about(gw: &Gateway, path: &Path) -> Vec<String> {
    let p = path.display().to_string();
    gw.proc.logs().into_iter().filter(|l| l.contains("WARN") && l.contains(&p)).collect()
}

#[test]
fn a_cold_start_without_consul_serves_the_state_file_then_converges() {
    let mut consul = Consul::start();
    let web: Vec<ServiceWeb> = (0..2).map(|_| ServiceWeb::start(None)).collect();
    for b in &web {
        consul.register("service-web", &format!("web-{}", b.port), b.port);
    }
    register_tagged(&consul, "tagged", "tagged-1", web[0].port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.state");
    let all: HashSet<u64> = web.iter().map(|b| u64::from(b.port)).collect();

    let mut gw = gateway(&consul.addr(), &path);
    gw.wait_ready();
    wait_for(Duration::from_secs(10), "the state file with both instances and the tagged service", || {
        let s = stored(&path)?;
        (stored_ports(&s, "service-web")? == all && stored_ports(&s, "tagged").is_some()).then_some(())
    });
    signal(gw.proc.pid(), "TERM");
    assert!(gw.proc.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", gw.proc.log_text());
    consul.stop();

    // Consul unreachable: the first request is served from the file, at once.
    let started = Instant::now();
    let gw = gateway(&consul.addr(), &path);
    let client = http();
    let (status, body) = get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap();
    assert_eq!(status, 200, "the first request, {:?} after the start: {body}", started.elapsed());
    assert!(all.contains(&body["port"].as_u64().unwrap()), "{body}");
    let seen: HashSet<u64> = (0..30)
        .map(|_| get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap().1["port"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, all, "both stored instances are routed");
    let (status, _) = get_json(&client, &gw.url("/tagged/getRemoteIp")).unwrap();
    assert_eq!(status, 200, "the tagged service's route comes from the stored tags");
    let (status, ready) = gw.readyz();
    assert_eq!(status, 503, "{ready}");
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains("serving 2 services from the state file") && reasons.contains("gateway.state"),
        "{reasons}"
    );
    let (_, services) = get_json(&client, &gw.admin("/services")).unwrap();
    let listed = services["services"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{services}");
    for s in listed {
        assert_eq!((&s["source"], &s["stale"]), (&json!("state_file"), &json!(true)), "{s}");
    }
    assert!(warnings_about(&gw, &path).is_empty(), "{:?}", warnings_about(&gw, &path));
    let served_at = std::fs::read(&path).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(std::fs::read(&path).unwrap(), served_at, "unconfirmed state is not written back");

    // Consul comes back empty; the truth is one instance, and no tagged service.
    consul.restart_empty();
    consul.register("service-web", &format!("web-{}", web[0].port), web[0].port);
    gw.wait_ready();
    let (_, services) = get_json(&client, &gw.admin("/services")).unwrap();
    let listed = services["services"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "the stored tagged service is gone: {services}");
    assert_eq!(listed[0]["source"], "watcher", "{services}");
    assert_eq!(listed[0]["instances"].as_array().unwrap().len(), 1, "{services}");
    let seen: HashSet<u64> = (0..20)
        .map(|_| get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap().1["port"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, HashSet::from([u64::from(web[0].port)]), "only the live instance is routed");
    assert_eq!(get_json(&client, &gw.url("/tagged/getRemoteIp")).unwrap().0, 404);
    let only = HashSet::from([u64::from(web[0].port)]);
    wait_for(Duration::from_secs(5), "the state file rewritten with the live set", || {
        let s = stored(&path)?;
        (stored_ports(&s, "service-web")? == only && stored_ports(&s, "tagged").is_none()).then_some(())
    });
}

#[test]
fn a_corrupt_foreign_or_truncated_state_file_is_ignored_with_one_warning() {
    // A real file first, to damage.
    let consul = Consul::start();
    let b = ServiceWeb::start(None);
    consul.register("service-web", "web-1", b.port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.state");
    {
        let gw = gateway(&consul.addr(), &path);
        gw.wait_ready();
        wait_for(Duration::from_secs(10), "the state file", || stored(&path));
    }
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    let at = good.len() - 5;
    flipped[at] ^= 0x01;
    let cases: [(&str, Vec<u8>); 5] = [
        ("a flipped byte", flipped),
        ("foreign JSON", br#"{"hello":1}"#.to_vec()),
        ("random bytes", (0..500u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "another version",
            String::from_utf8_lossy(&good).replacen("gateway-state-file 1 ", "gateway-state-file 2 ", 1).into_bytes(),
        ),
    ];
    let nowhere = format!("127.0.0.1:{}", free_port());
    let client = http();
    for (what, bytes) in &cases {
        std::fs::write(&path, bytes).unwrap();
        let gw = gateway(&nowhere, &path);
        let (status, _) = get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap();
        assert_eq!(status, 503, "{what}: nothing is served from it");
        let (_, services) = get_json(&client, &gw.admin("/services")).unwrap();
        assert_eq!(services["services"][0]["loaded"], false, "{what}: {services}");
        std::thread::sleep(Duration::from_millis(1200));
        let warnings = warnings_about(&gw, &path);
        assert_eq!(warnings.len(), 1, "{what}: one warning naming the file: {warnings:?}");
        assert!(warnings[0].contains("ignoring the state file"), "{what}: {warnings:?}");
        assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{what}: left as it is while nothing is confirmed");
    }

    // With Consul there, confirmed state replaces the bad file.
    let gw = gateway(&consul.addr(), &path);
    gw.wait_ready();
    wait_for(Duration::from_secs(5), "the bad file replaced by confirmed state", || {
        stored_ports(&stored(&path)?, "service-web").filter(|p| p.contains(&u64::from(b.port)))
    });
    drop(gw);

    // A missing file is normal: no warning.
    std::fs::remove_file(&path).unwrap();
    let gw = gateway(&nowhere, &path);
    gw.proc.wait_for_log("no state file yet", 0, Duration::from_secs(5));
    assert!(warnings_about(&gw, &path).is_empty(), "{:?}", warnings_about(&gw, &path));
}

#[test]
fn a_gateway_killed_while_writing_leaves_a_valid_state_file() {
    let mut consul = Consul::start();
    let web: Vec<ServiceWeb> = (0..3).map(|_| ServiceWeb::start(None)).collect();
    consul.register("service-web", "web-0", web[0].port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.state");
    // Each round: the registry churns (a write about every second), and the gateway is killed
    // (SIGKILL) at a different moment; the file must then check out every time.
    for round in 0..3u64 {
        let mut gw = gateway(&consul.addr(), &path);
        gw.wait_ready();
        wait_for(Duration::from_secs(10), "the state file", || stored(&path));
        let until = Instant::now() + Duration::from_millis(1500 + 350 * round);
        let mut i = 0usize;
        while Instant::now() < until {
            let b = &web[1 + i % 2];
            if i % 4 < 2 {
                consul.register("service-web", &format!("web-{}", 1 + i % 2), b.port);
            } else {
                consul.deregister(&format!("web-{}", 1 + i % 2));
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(40));
        }
        signal(gw.proc.pid(), "KILL");
        gw.proc.wait_exit(Duration::from_secs(5)).unwrap();
        let state = stored(&path).unwrap_or_else(|| panic!("round {round}: not a state file"));
        assert!(stored_ports(&state, "service-web").unwrap().contains(&u64::from(web[0].port)), "{state}");
    }

    // And the file serves a cold start.
    consul.stop();
    let gw = gateway(&consul.addr(), &path);
    let (status, body) = get_json(&http(), &gw.url("/service-web/getRemoteIp")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(warnings_about(&gw, &path).is_empty(), "{:?}", warnings_about(&gw, &path));
}
