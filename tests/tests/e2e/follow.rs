//! Services followed by tag (issue 10). One scripted sequence of Consul changes is applied to a
//! real agent that a per-service and a multiplexed watcher follow at once, both with
//! `--route-tag gateway --route-prefix-tag urlprefix-` and one static `--service`. After every
//! step both must settle on what the step expects: the `services` list, each followed service's
//! snapshot (its tags, and each instance's ID, port, weight and tags) and the `gone` messages so
//! far. At the end both must have sent the same sequence of lists and of gones, the expected one.
//!
//! Every message is also checked against the protocol's order as a reader sees it: once a list
//! came, a snapshot only for a listed service, and a `gone` only for a service the list dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{bin, tcp_connections_to, Consul};
use serde_json::{json, Value};

/// How long a step may take to show in both watchers.
const SETTLE: Duration = Duration::from_secs(20);
/// The watchers' flags, besides `--mode`.
const ARGS: [&str; 8] =
    ["--service", "fixed", "--route-tag", "gateway", "--route-prefix-tag", "urlprefix-", "--wait", "5s"];

/// What one watcher printed, as a reader applying it would hold it.
#[derive(Debug, Default)]
struct Seen {
    /// Every `services` list, in order.
    lists: Vec<Vec<String>>,
    /// Each listed service's latest snapshot, described (see [`describe`]).
    snapshots: BTreeMap<String, String>,
    /// Every `gone`, in order: `service:reason`.
    gones: Vec<String>,
    /// Every service any message named.
    named: BTreeSet<String>,
    /// Gones not yet followed by the list that drops their services.
    pending_gones: Vec<String>,
    /// Messages out of the protocol's order.
    violations: Vec<String>,
}

impl Seen {
    fn take(&mut self, v: &Value) {
        let service = v["service"].as_str().unwrap_or_default().to_string();
        let listed = self.lists.last().is_some_and(|l| l.contains(&service));
        match v["type"].as_str() {
            Some("services") => {
                let list: Vec<String> = serde_json::from_value(v["services"].clone()).unwrap_or_default();
                // A gone comes just before the list that no longer names its service.
                for g in std::mem::take(&mut self.pending_gones) {
                    if list.contains(&g) {
                        self.violations.push(format!("{g} still listed after its gone: {v}"));
                    }
                }
                self.snapshots.retain(|s, _| list.contains(s));
                self.named.extend(list.iter().cloned());
                self.lists.push(list);
            }
            Some("snapshot") => {
                // Before the follower's first answer there is no list yet (static services only).
                if !listed && !self.lists.is_empty() {
                    self.violations.push(format!("a snapshot of {service}, not in the last list: {v}"));
                }
                self.snapshots.insert(service.clone(), describe(v));
                self.named.insert(service);
            }
            Some("gone") => {
                // Gones come before the list that drops the service: it is still in the last one.
                if !listed {
                    self.violations.push(format!("a gone of {service}, which the last list did not name: {v}"));
                }
                self.pending_gones.push(service.clone());
                self.gones.push(format!("{service}:{}", v["reason"].as_str().unwrap_or("?")));
                self.named.insert(service);
            }
            Some("status" | "consul") => {}
            _ => self.violations.push(format!("not a message of the protocol: {v}")),
        }
    }
}

/// `[service tags] id:port:wWeight[instance tags]{meta} ...`, instances sorted (`{meta}` only
/// when the instance has any: the gateway reads `gateway-protocol` from it).
fn describe(snapshot: &Value) -> String {
    let strings = |v: &Value| -> Vec<String> { serde_json::from_value(v.clone()).unwrap_or_default() };
    let mut instances: Vec<String> = snapshot["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    let id = i["id"].as_str().unwrap_or("?");
                    let meta: Vec<String> = i["meta"]
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?"))).collect())
                        .unwrap_or_default();
                    let meta = if meta.is_empty() { String::new() } else { format!("{{{}}}", meta.join(",")) };
                    format!("{id}:{}:w{}[{}]{meta}", i["port"], i["weight"], strings(&i["tags"]).join(","))
                })
                .collect()
        })
        .unwrap_or_default();
    instances.sort();
    format!("[{}] {}", strings(&snapshot["tags"]).join(","), instances.join(" ")).trim_end().to_string()
}

/// A watcher child process and what it printed.
struct Watcher {
    mode: &'static str,
    child: Child,
    seen: Arc<Mutex<Seen>>,
}

impl Watcher {
    fn start(consul: &Consul, mode: &'static str) -> Self {
        let stderr = if std::env::var_os("E2E_ECHO_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() };
        let mut child = Command::new(bin("watcher"))
            .args(ARGS)
            .args(["--mode", mode])
            .env("CONSUL_HTTP_ADDR", consul.addr())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                sink.lock().unwrap_or_else(|e| e.into_inner()).take(&v);
            }
        });
        Self { mode, child, seen }
    }

    fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a step must settle on: the last list, each listed service's snapshot, every gone so far.
#[derive(Debug, PartialEq)]
struct Expected {
    list: Vec<String>,
    snapshots: BTreeMap<String, String>,
    gones: Vec<String>,
}

fn current(seen: &Seen) -> Expected {
    Expected {
        list: seen.lists.last().cloned().unwrap_or_default(),
        snapshots: seen.snapshots.clone(),
        gones: seen.gones.clone(),
    }
}

struct Script {
    watchers: [Watcher; 2],
    gones: Vec<String>,
}

impl Script {
    /// Waits until both watchers hold `snapshots` (service → description; their names are the
    /// list) and have sent the gones so far plus `gone`.
    fn expect(&mut self, step: &str, snapshots: &[(&str, &str)], gone: Option<&str>) {
        self.gones.extend(gone.map(String::from));
        let want = Expected {
            list: snapshots.iter().map(|(s, _)| s.to_string()).collect(),
            snapshots: snapshots.iter().map(|(s, d)| (s.to_string(), d.to_string())).collect(),
            gones: self.gones.clone(),
        };
        let deadline = Instant::now() + SETTLE;
        loop {
            let got: Vec<Expected> = self.watchers.iter().map(|w| w.with(current)).collect();
            if got.iter().all(|g| *g == want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "step {step:?}: the modes did not both settle within {SETTLE:?}\n  want: {want:?}\n  {}: {:?}\n  {}: {:?}",
                self.watchers[0].mode,
                got[0],
                self.watchers[1].mode,
                got[1],
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for w in &self.watchers {
            let violations = w.with(|s| s.violations.clone());
            assert!(violations.is_empty(), "step {step:?}, {}: {violations:#?}", w.mode);
        }
    }
}

/// An instance registration with a TTL check in `passing`.
fn instance(name: &str, id: &str, port: u16, tags: &[&str], weights: Option<Value>) -> Value {
    let mut r = json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": tags,
                       "Check": {"TTL": "600s", "Status": "passing"}});
    if let Some(w) = weights {
        r["Weights"] = w;
    }
    r
}

#[test]
fn both_modes_follow_services_by_tag_alike() {
    let consul = Consul::start();
    // Registered, but without an opt-in tag: never followed.
    consul.register_json(instance("plain", "plain-1", 2000, &["web", "v1"], None));
    let watchers = [Watcher::start(&consul, "per-service"), Watcher::start(&consul, "multiplexed")];
    let mut s = Script { watchers, gones: vec![] };
    s.expect("start: the static service only", &[("fixed", "[]")], None);

    let heavy = Some(json!({"Passing": 5, "Warning": 1}));
    consul.register_json(instance("billing", "billing-1", 2001, &["gateway"], heavy.clone()));
    s.expect("billing tagged gateway", &[("billing", "[gateway] billing-1:2001:w5[gateway]"), ("fixed", "[]")], None);
    consul.register_json(json!({"ID": "shop-1", "Name": "shop", "Address": "127.0.0.1", "Port": 2002,
                                "Tags": ["urlprefix-/x"], "Meta": {"gateway-protocol": "grpc", "v": "1"}}));
    let shop = ("shop", "[urlprefix-/x] shop-1:2002:w1[urlprefix-/x]{gateway-protocol=grpc,v=1}");
    s.expect(
        "shop tagged urlprefix-/x",
        &[("billing", "[gateway] billing-1:2001:w5[gateway]"), ("fixed", "[]"), shop],
        None,
    );
    consul.register_json(instance("billing", "billing-2", 2003, &["gateway", "v2"], None));
    s.expect(
        "a second billing instance",
        &[("billing", "[gateway,v2] billing-1:2001:w5[gateway] billing-2:2003:w1[gateway,v2]"), ("fixed", "[]"), shop],
        None,
    );

    // The tag leaves one instance (still followed through the other), then the other.
    consul.register_json(instance("billing", "billing-1", 2001, &[], heavy.clone()));
    s.expect(
        "billing-1 untagged",
        &[("billing", "[gateway,v2] billing-1:2001:w5[] billing-2:2003:w1[gateway,v2]"), ("fixed", "[]"), shop],
        None,
    );
    consul.register_json(instance("billing", "billing-2", 2003, &["v2"], None));
    s.expect("billing untagged", &[("fixed", "[]"), shop], Some("billing:untagged"));
    consul.deregister("shop-1");
    s.expect("shop deregistered", &[("fixed", "[]")], Some("shop:deregistered"));

    // billing opts in again: followed from scratch. The static service gets its tags.
    consul.register_json(instance("billing", "billing-1", 2001, &["gateway"], heavy));
    s.expect(
        "billing tagged again",
        &[("billing", "[gateway,v2] billing-1:2001:w5[gateway] billing-2:2003:w1[v2]"), ("fixed", "[]")],
        None,
    );
    consul.register_json(instance("fixed", "fixed-1", 2004, &["v1"], None));
    s.expect(
        "the static service registered",
        &[
            ("billing", "[gateway,v2] billing-1:2001:w5[gateway] billing-2:2003:w1[v2]"),
            ("fixed", "[v1] fixed-1:2004:w1[v1]"),
        ],
        None,
    );

    let lists = |w: &Watcher| w.with(|s| s.lists.iter().map(|l| l.join(",")).collect::<Vec<_>>());
    let expected_lists = ["fixed", "billing,fixed", "billing,fixed,shop", "fixed,shop", "fixed", "billing,fixed"];
    for w in &s.watchers {
        assert_eq!(lists(w), expected_lists, "{}: the services lists, in order", w.mode);
        assert!(!w.with(|s| s.named.contains("plain")), "{}: an untagged service was followed", w.mode);
    }
    // Following adds no connection in multiplexed mode: the follower's query is its catalog query.
    let conns = tcp_connections_to(s.watchers[1].child.id(), consul.http_port());
    eprintln!("multiplexed watcher with the follower: {conns} connections to Consul");
    assert!((1..=16).contains(&conns), "multiplexed mode holds {conns} connections to Consul");
}

#[test]
fn without_a_static_service_the_tag_alone_is_enough_and_nothing_at_all_is_refused() {
    let consul = Consul::start();
    let (mut child, rx) = crate::watcher::run(&consul, &["--route-tag", "gateway", "--mode", "multiplexed"]);
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("a first line within 10 s");
    assert_eq!(first, serde_json::json!({"type": "services", "services": []}));
    let _ = child.kill();
    let _ = child.wait();

    for args in [&[][..], &["--route-tag", "", "--route-prefix-tag", ""][..]] {
        let out = Command::new(bin("watcher")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("nothing to watch: give --service, --route-tag or --route-prefix-tag"), "{stderr}");
    }
}
