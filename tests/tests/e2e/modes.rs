//! The watcher's two modes give the same answers (issue 9). One scripted sequence of Consul
//! changes is applied to a real agent that a per-service and a multiplexed watcher follow at
//! once; after every step both must settle on the same instance set, the one the step expects.
//! Both run with 13 services (the count at which `auto` multiplexes), the route is configured as
//! `web` and Consul holds it under several spellings, and the whole sequence runs once per
//! `--health-status` setting. The multiplexed mode's safety-net resync stays at its default
//! (5 minutes), so it cannot hide a missed change.
//!
//! The same sequence runs once more between the multiplexed mode (plain HTTP) and the streams
//! mode (HTTPS, HTTP/2, `--streams-per-connection 4` so its 13 long polls take 4 connections)
//! against one agent with both listeners.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{bin, get_json, http, wait_for, Consul, Gateway, ServiceWeb};
use serde_json::Value;

/// The route every step is about, as configured.
const ROUTE: &str = "web";
/// How long a step may take to show in both watchers (after a Consul restart, a backoff).
const SETTLE: Duration = Duration::from_secs(20);
/// How long a step that changes nothing waits before it looks: time for a wrong change to show.
const QUIET: Duration = Duration::from_millis(1500);

type Set = BTreeSet<String>;

/// A watcher child process and the last instance set it printed for [`ROUTE`].
struct Watcher {
    mode: &'static str,
    child: Child,
    latest: Arc<Mutex<Option<Set>>>,
}

impl Watcher {
    fn start(consul: &Consul, mode: &'static str, health_status: &str) -> Self {
        let mut args: Vec<String> =
            vec!["--mode".into(), mode.into(), "--health-status".into(), health_status.into(), "--service".into()];
        args.push(ROUTE.into());
        for i in 0..12 {
            args.extend(["--service".to_string(), format!("svc-{i}")]);
        }
        let stderr = if std::env::var_os("E2E_ECHO_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() };
        let mut cmd = Command::new(bin("watcher"));
        if mode == "streams" {
            args.extend(["--streams-per-connection".to_string(), "4".to_string()]);
            cmd.env("CONSUL_HTTP_ADDR", consul.https_addr()).env("CONSUL_CACERT", consul.ca_file());
        } else {
            cmd.env("CONSUL_HTTP_ADDR", consul.addr());
        }
        let mut child = cmd
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let latest = Arc::new(Mutex::new(None));
        let sink = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["type"] == "snapshot" && v["service"] == ROUTE {
                    let set = v["instances"].as_array().map(|a| a.iter().map(describe).collect());
                    *sink.lock().unwrap_or_else(|e| e.into_inner()) = set;
                }
            }
        });
        Self { mode, child, latest }
    }

    fn latest(&self) -> Option<Set> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `id:port`, then `[tags]` if there are any.
fn describe(i: &Value) -> String {
    let mut tags: Vec<&str> =
        i["tags"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    tags.sort_unstable();
    let tags = if tags.is_empty() { String::new() } else { format!("[{}]", tags.join(",")) };
    format!("{}:{}{tags}", i["id"].as_str().unwrap_or("?"), i["port"])
}

/// Both watchers and the set the previous step settled on.
struct Script {
    watchers: [Watcher; 2],
    previous: Option<Set>,
}

impl Script {
    /// Waits until both watchers print `expected` for the route after step `name`.
    fn expect(&mut self, name: &str, expected: &[&str]) {
        let want: Set = expected.iter().map(|s| s.to_string()).collect();
        if self.previous.as_ref() == Some(&want) {
            std::thread::sleep(QUIET);
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            let got: Vec<Option<Set>> = self.watchers.iter().map(Watcher::latest).collect();
            if got.iter().all(|g| g.as_ref() == Some(&want)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "step {name:?}: the modes did not both settle on {want:?} within {SETTLE:?}\n  {}: {:?}\n  {}: {:?}",
                self.watchers[0].mode,
                got[0],
                self.watchers[1].mode,
                got[1],
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Settled means settled: no mode flips away right after.
        std::thread::sleep(Duration::from_millis(200));
        for w in &self.watchers {
            assert_eq!(w.latest().as_ref(), Some(&want), "step {name:?}: {} changed after settling", w.mode);
        }
        self.previous = Some(want);
    }
}

#[test]
fn both_modes_give_the_same_answers_with_passing_only() {
    both_modes_agree("passing", ["per-service", "multiplexed"]);
}

#[test]
fn both_modes_give_the_same_answers_with_passing_and_warning() {
    both_modes_agree("passing,warning", ["per-service", "multiplexed"]);
}

/// The streams mode over HTTPS against the multiplexed mode over plain HTTP, same agent.
#[test]
fn streams_over_https_and_multiplexed_give_the_same_answers() {
    both_modes_agree("passing", ["multiplexed", "streams"]);
}

fn both_modes_agree(health_status: &str, modes: [&'static str; 2]) {
    let warn_ok = health_status.contains("warning");
    // With warning allowed, `a` if the step put something in warning; else `b`.
    let w = |a: &'static [&'static str], b: &'static [&'static str]| if warn_ok { a } else { b };
    let mut consul = if modes.contains(&"streams") { Consul::start_tls() } else { Consul::start() };
    // Another watched service and an unwatched one: their changes move indexes, not our set.
    consul.register("svc-0", "svc-0-1", 3000);
    consul.register("unwatched", "u-1", 3001);
    let watchers = modes.map(|mode| Watcher::start(&consul, mode, health_status));
    if modes.contains(&"streams") {
        // 13 long polls, 4 per connection.
        let streams = &watchers[1];
        wait_for(Duration::from_secs(10), "the streams mode's 4 connections", || {
            (e2e::tcp_connections_to(streams.child.id(), consul.https_port()) == 4).then_some(())
        });
    }
    let mut s = Script { watchers, previous: None };
    s.expect("start: nothing registered", &[]);

    // Registrations under several spellings of one Consul service, all routed as `web`.
    consul.register_ttl("web", "web-1", 1001, "passing");
    s.expect("register web", &["web-1:1001"]);
    consul.register_ttl("Web", "up-1", 1002, "passing");
    s.expect("register Web beside web", &["web-1:1001", "up-1:1002"]);

    // Check statuses of the Web instance.
    consul.set_check("service:up-1", "warn");
    s.expect("Web's check warning", w(&["web-1:1001", "up-1:1002"], &["web-1:1001"]));
    consul.set_check("service:up-1", "fail");
    s.expect("Web's check critical", &["web-1:1001"]);
    consul.register_ttl("WEB", "caps-2", 1003, "passing");
    s.expect("a new WEB while Web is critical", &["web-1:1001", "caps-2:1003"]);
    consul.set_check("service:up-1", "pass");
    s.expect("Web's check passing", &["web-1:1001", "up-1:1002", "caps-2:1003"]);

    // Service maintenance (a critical `_service_maintenance:up-1` check).
    consul.maintenance(Some("up-1"), true);
    s.expect("Web in maintenance", &["web-1:1001", "caps-2:1003"]);
    consul.maintenance(Some("up-1"), false);
    s.expect("Web out of maintenance", &["web-1:1001", "up-1:1002", "caps-2:1003"]);

    // A check-less instance on another catalog node: node-level changes on the agent's node
    // must not touch it.
    consul.catalog_register("ext-1", "wEb", "ext-web", 1004);
    let all = ["web-1:1001", "up-1:1002", "caps-2:1003", "ext-web:1004"];
    s.expect("check-less wEb on another node", &all);
    consul.register_node_check("node-ttl", "warning");
    s.expect(
        "node-level check warning",
        w(&["web-1:1001", "up-1:1002", "caps-2:1003", "ext-web:1004"], &["ext-web:1004"]),
    );
    consul.set_check("node-ttl", "fail");
    s.expect("node-level check critical", &["ext-web:1004"]);
    consul.set_check("node-ttl", "pass");
    s.expect("node-level check passing", &all);
    consul.maintenance(None, true);
    s.expect("node in maintenance", &["ext-web:1004"]);
    consul.maintenance(None, false);
    s.expect("node out of maintenance", &all);

    // Tags, on an instance with a check and on a check-less one.
    consul.register_tagged("Web", "up-1", 1002, "passing", &["v2", "a"]);
    s.expect("tags on Web", &["web-1:1001", "up-1:1002[a,v2]", "caps-2:1003", "ext-web:1004"]);
    consul.catalog_register_tagged("ext-1", "wEb", "ext-web", 1004, &["x"]);
    s.expect("tags on the check-less wEb", &["web-1:1001", "up-1:1002[a,v2]", "caps-2:1003", "ext-web:1004[x]"]);

    // Deregistration.
    consul.deregister("up-1");
    s.expect("deregister Web", &["web-1:1001", "caps-2:1003", "ext-web:1004[x]"]);
    consul.catalog_deregister("ext-1", Some("ext-web"));
    s.expect("deregister the check-less wEb", &["web-1:1001", "caps-2:1003"]);

    // Consul restarted empty (its index starts over), then a registration after it.
    consul.restart_empty();
    s.expect("Consul restarted empty", &[]);
    consul.register_ttl("Web", "again-1", 1005, "passing");
    s.expect("register Web after the restart", &["again-1:1005"]);
}

/// The input through the gateway: `web` among 13 services (so its watcher multiplexes),
/// the instance registered as `Web`. Its failing check stops its traffic at once, and a new
/// `Web` instance gets traffic at once, not after the 5-minute resync.
#[test]
fn the_gateway_follows_a_case_variant_instance_among_13_services() {
    let consul = Consul::start();
    let (a, b) = (ServiceWeb::start(None), ServiceWeb::start(None));
    consul.register_ttl("Web", "first", a.port, "passing");
    let services: Vec<String> = std::iter::once(ROUTE.to_string()).chain((0..12).map(|i| format!("svc-{i}"))).collect();
    let gw = Gateway::start(&consul, &services.join(","), &[]);
    gw.proc.wait_for_log("multiplexed mode", 0, Duration::from_secs(10));
    let client = http();
    let url = gw.url("/web/getRemoteIp");
    let port_of = || match get_json(&client, &url) {
        Ok((200, v)) => v["port"].as_u64(),
        _ => None,
    };
    wait_for(Duration::from_secs(10), "traffic to Web", || (port_of() == Some(u64::from(a.port))).then_some(()));
    consul.set_check("service:first", "fail");
    wait_for(Duration::from_secs(10), "no traffic once Web's check fails", || {
        matches!(get_json(&client, &url), Ok((503, _))).then_some(())
    });
    consul.register_ttl("Web", "second", b.port, "passing");
    wait_for(Duration::from_secs(10), "traffic to the new Web", || {
        (port_of() == Some(u64::from(b.port))).then_some(())
    });
    for _ in 0..10 {
        assert_eq!(port_of(), Some(u64::from(b.port)), "only the new instance is routable");
    }
}
