//! The watcher as a standalone tool: NDJSON on stdout, health versus catalog view.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::{bin, Consul};
use serde_json::Value;

/// Runs the watcher with `args`, returning a receiver of its stdout lines as JSON.
fn run(consul: &Consul, args: &[&str]) -> (std::process::Child, mpsc::Receiver<Value>) {
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
    assert_eq!(out.status.code(), Some(2), "--service is required");
}
