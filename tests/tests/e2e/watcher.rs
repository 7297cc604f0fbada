//! The watcher as a standalone tool: NDJSON on stdout, health versus catalog view.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::{bin, Consul};
use serde_json::Value;

/// Runs the watcher with `args`, returning a receiver of its stdout lines as JSON.
pub(crate) fn run(consul: &Consul, args: &[&str]) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new(bin("watcher"))
        .args(args)
        .env("CONSUL_HTTP_ADDR", consul.addr().trim_start_matches("http://"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap_or(Value::Null)).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The next snapshot of `service` within a deadline: its instance IDs.
fn next_snapshot(rx: &mpsc::Receiver<Value>, service: &str) -> Vec<String> {
    loop {
        let v = rx.recv_timeout(Duration::from_secs(5)).expect("a snapshot within 5 s");
        assert!(!v.is_null(), "stdout lines must be JSON");
        if v["type"] == "snapshot" && v["service"] == service {
            return v["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
        }
    }
}

const MODES: [&str; 2] = ["per-service", "multiplexed"];

#[test]
fn prints_a_snapshot_per_real_change() {
    for mode in MODES {
        prints_a_snapshot_per_real_change_in(mode);
    }
}

fn prints_a_snapshot_per_real_change_in(mode: &str) {
    let consul = Consul::start();
    let (mut child, rx) = run(&consul, &["--service", "web", "--service", "other", "--wait", "1s", "--mode", mode]);
    assert!(next_snapshot(&rx, "web").is_empty());
    consul.register("web", "web-1", 1001);
    assert_eq!(next_snapshot(&rx, "web"), vec!["web-1"]);
    // Another service's change moves the index but not our set: nothing is printed for us.
    consul.register("unrelated", "u-1", 1002);
    consul.deregister("web-1");
    assert!(next_snapshot(&rx, "web").is_empty());
    assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err(), "{mode}: no line without a change (wait=1s passed)");
    child.kill().unwrap();
}

/// Registrations without checks on catalog nodes that come and go: the multiplexed watcher
/// follows them while it watches every node one by one, after it gives that up for scans
/// (more nodes than it watches one by one), and after it takes it up again.
#[test]
fn check_less_instances_on_nodes_that_come_and_go() {
    let consul = Consul::start();
    let nodes = watcher::nodes::MAX_NODE_WATCHES + 2;
    // More check-less services than a scan costs requests, so the watcher scans rather than
    // re-reading them all, and goes back to watching nodes after a scan.
    let others: Vec<String> = (0..nodes + 3).map(|i| format!("other-{i}")).collect();
    for (i, o) in others.iter().enumerate() {
        consul.register(o, o, 3000 + i as u16);
    }
    let mut args = vec!["--service", "web", "--wait", "2s", "--mode", "multiplexed"];
    for o in &others {
        args.extend(["--service", o.as_str()]);
    }
    let (mut child, rx) = run(&consul, &args);
    assert!(next_snapshot(&rx, "web").is_empty());
    let mut expected = Vec::new();
    for n in 0..nodes {
        // The agent's own node plus these: past the limit from the last but one on.
        let id = format!("web-{n}");
        consul.catalog_register(&format!("node-{n}"), "web", &id, 2000 + n as u16);
        expected.push(id);
        expected.sort();
        assert_eq!(next_snapshot(&rx, "web"), expected, "after registering on node {n}");
    }
    // A change on one node among many (scanning), a whole node going away.
    consul.catalog_deregister("node-1", Some("web-1"));
    expected.retain(|i| i != "web-1");
    assert_eq!(next_snapshot(&rx, "web"), expected);
    for n in (2..nodes).rev() {
        consul.catalog_deregister(&format!("node-{n}"), None);
        expected.retain(|i| *i != format!("web-{n}"));
        assert_eq!(next_snapshot(&rx, "web"), expected, "after removing node {n}");
    }
    // Few nodes again (watched one by one after the next scan); a changed port is a change too.
    consul.catalog_register("node-0", "web", "web-0", 2999);
    let ports = loop {
        let v = rx.recv_timeout(Duration::from_secs(5)).expect("a snapshot within 5 s");
        if v["type"] == "snapshot" && v["service"] == "web" {
            break v["instances"].as_array().unwrap().iter().map(|i| i["port"].as_u64().unwrap()).collect::<Vec<_>>();
        }
    };
    assert_eq!(ports, vec![2999]);
    consul.catalog_deregister("node-0", Some("web-0"));
    assert!(next_snapshot(&rx, "web").is_empty());
    assert!(rx.recv_timeout(Duration::from_millis(2500)).is_err(), "no line without a change");
    child.kill().unwrap();
}

#[test]
fn a_failing_check_removes_the_instance_and_a_passing_one_brings_it_back() {
    for mode in MODES {
        let consul = Consul::start();
        consul.register_ttl("web", "web-1", 1001, "passing");
        consul.register_ttl("web", "web-2", 1002, "passing");
        let (mut child, rx) = run(&consul, &["--service", "web", "--mode", mode]);
        assert_eq!(next_snapshot(&rx, "web"), vec!["web-1", "web-2"], "{mode}");
        consul.set_check("service:web-1", "fail");
        assert_eq!(next_snapshot(&rx, "web"), vec!["web-2"], "{mode}");
        consul.set_check("service:web-1", "pass");
        assert_eq!(next_snapshot(&rx, "web"), vec!["web-1", "web-2"], "{mode}");
        child.kill().unwrap();
    }
}

#[test]
fn health_view_hides_failing_instances_and_catalog_view_shows_them() {
    let consul = Consul::start();
    consul.register("web", "ok-1", 1001);
    consul.register_critical("web", "bad-1", 1002);
    let (mut health, hrx) = run(&consul, &["--service", "web"]);
    let (mut catalog, crx) = run(&consul, &["--service", "web", "--catalog", "--mode", "multiplexed"]);
    assert_eq!(next_snapshot(&hrx, "web"), vec!["ok-1"]);
    assert_eq!(next_snapshot(&crx, "web"), vec!["bad-1", "ok-1"]);
    health.kill().unwrap();
    catalog.kill().unwrap();
}

#[test]
fn refuses_bad_input_with_a_clear_error() {
    let out = Command::new(bin("watcher")).args(["--service", "../etc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid name"));
    let out = Command::new(bin("watcher")).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "something to watch is required (see follow.rs)");
}
