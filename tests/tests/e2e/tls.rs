//! The watcher against Consul's HTTPS API (issue 10, h2): a real Consul 1.8.7 agent with an
//! HTTPS listener, its CA and certificate made by `consul tls` for the test.
//!
//! - The streams mode follows services by tag (appear, change, go), one HTTP/2 connection per
//!   `--streams-per-connection` long polls, and `auto` picks it on an https:// address.
//! - TLS settings: `CONSUL_TLS_SERVER_NAME` is checked, a CA that did not sign the certificate is
//!   refused, `CONSUL_HTTP_SSL_VERIFY=false` skips the check (with a warning), `--mode streams` refuses an http:// address; plain http still works as before.
//! - The fact the design rests on: one HTTP client holds one HTTP/2 connection and queues the
//!   long polls beyond Consul's 250 streams instead of opening another connection.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{bin, tcp_connections_to, wait_for, Consul};
use serde_json::{json, Value};

/// A watcher whose stdout messages and stderr lines are collected.
struct Watcher {
    child: Child,
    messages: Arc<Mutex<Vec<Value>>>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(bin("watcher"));
        cmd.args(args).env_remove("CONSUL_HTTP_TOKEN").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let messages = Arc::new(Mutex::new(Vec::new()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str(&line).unwrap_or(Value::Null));
            }
        });
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("E2E_ECHO_LOGS").is_some() {
                    eprintln!("[watcher] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, messages, logs }
    }

    /// Waits until some message satisfies `f`.
    fn wait_message(&self, what: &str, f: impl Fn(&Value) -> bool) {
        wait_for(Duration::from_secs(20), what, || self.messages.lock().unwrap().iter().any(&f).then_some(()));
    }

    /// The ports of the latest snapshot of `service`, sorted.
    fn ports(&self, service: &str) -> Option<Vec<u64>> {
        let msgs = self.messages.lock().unwrap();
        let snap = msgs.iter().rev().find(|m| m["type"] == "snapshot" && m["service"] == service)?;
        let mut ports: Vec<u64> = snap["instances"].as_array()?.iter().filter_map(|i| i["port"].as_u64()).collect();
        ports.sort_unstable();
        Some(ports)
    }

    fn wait_ports(&self, service: &str, want: &[u64]) {
        wait_for(Duration::from_secs(20), &format!("{service} at ports {want:?}"), || {
            (self.ports(service).as_deref() == Some(want)).then_some(())
        });
    }

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    fn wait_log(&self, needle: &str) {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(Duration::from_secs(20), needle, || self.log_text().contains(needle).then_some(()))
        }));
        assert!(found.is_ok(), "the watcher never logged {needle:?}; its log:\n{}", self.log_text());
    }

    /// Waits for the process to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the watcher did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tagged(name: &str, id: &str, port: u16) -> Value {
    json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": ["gateway"],
           "Check": {"TTL": "600s", "Status": "passing"}})
}

fn tls_env(consul: &Consul) -> Vec<(&'static str, String)> {
    vec![("CONSUL_HTTP_ADDR", consul.https_addr()), ("CONSUL_CACERT", consul.ca_file().display().to_string())]
}

#[test]
fn streams_mode_follows_tagged_services_over_https() {
    let consul = Consul::start_tls();
    consul.register_json(tagged("alpha", "alpha-1", 3001));
    // `auto` on an https:// address that speaks HTTP/2: streams.
    let w =
        Watcher::start(&["--route-tag", "gateway", "--streams-per-connection", "2", "--wait", "5s"], &tls_env(&consul));
    w.wait_log("watching in streams mode");
    assert!(w.log_text().contains("version=HTTP/2.0"), "{}", w.log_text());
    w.wait_ports("alpha", &[3001]);

    // Appear: two more services; with the catalog query that is 4 streams, 2 per connection.
    consul.register_json(tagged("beta", "beta-1", 3002));
    consul.register_json(tagged("gamma", "gamma-1", 3003));
    w.wait_ports("beta", &[3002]);
    w.wait_ports("gamma", &[3003]);
    wait_for(Duration::from_secs(10), "2 connections to the HTTPS port", || {
        (tcp_connections_to(w.child.id(), consul.https_port()) == 2).then_some(())
    });
    assert_eq!(tcp_connections_to(w.child.id(), consul.http_port()), 0, "nothing goes to the plain listener");

    // Change: a second instance, then a failing check.
    consul.register_json(tagged("beta", "beta-2", 3004));
    w.wait_ports("beta", &[3002, 3004]);
    consul.set_check("service:beta-1", "fail");
    w.wait_ports("beta", &[3004]);

    // Gone: deregistered, and untagged.
    consul.deregister("gamma-1");
    w.wait_message("gamma gone", |m| m["type"] == "gone" && m["service"] == "gamma" && m["reason"] == "deregistered");
    consul.register_json(json!({"ID": "alpha-1", "Name": "alpha", "Address": "127.0.0.1", "Port": 3001}));
    w.wait_message("alpha gone", |m| m["type"] == "gone" && m["service"] == "alpha" && m["reason"] == "untagged");
    w.wait_message("the list without them", |m| m["type"] == "services" && m["services"] == json!(["beta"]));
    // And it comes back.
    consul.register_json(tagged("gamma", "gamma-9", 3009));
    w.wait_ports("gamma", &[3009]);
}

#[test]
fn tls_settings_are_honoured_and_plain_http_still_works() {
    let consul = Consul::start_tls();
    consul.register_json(tagged("alpha", "alpha-1", 3001));

    // The certificate names server.dc1.consul: checked against it instead of 127.0.0.1.
    let mut env = tls_env(&consul);
    env.push(("CONSUL_TLS_SERVER_NAME", "server.dc1.consul".into()));
    let w = Watcher::start(&["--route-tag", "gateway", "--mode", "streams"], &env);
    w.wait_ports("alpha", &[3001]);
    drop(w);

    // A name the certificate does not carry: refused, and said so.
    let mut env = tls_env(&consul);
    env.push(("CONSUL_TLS_SERVER_NAME", "other.example".into()));
    let w = Watcher::start(&["--route-tag", "gateway"], &env);
    w.wait_log("cannot reach Consul to see whether it speaks HTTP/2");
    assert!(w.log_text().contains("certificate"), "{}", w.log_text());
    // Nothing published without a verified server but Consul's status, which says why.
    w.wait_message("Consul's status", |m| m["type"] == "consul" && m["healthy"] == false);
    let msgs = w.messages.lock().unwrap().clone();
    assert!(msgs.iter().all(|m| m["type"] == "consul"), "{msgs:?}");
    assert!(msgs[0]["error"].as_str().unwrap().contains("certificate"), "{msgs:?}");
    drop(w);

    // Without our CA the built-in roots do not know Consul's.
    let w = Watcher::start(&["--route-tag", "gateway"], &[("CONSUL_HTTP_ADDR", consul.https_addr())]);
    w.wait_log("UnknownIssuer");
    drop(w);

    // CONSUL_HTTP_SSL_VERIFY=false: no CA and a name the certificate does not carry, yet it
    // works, as with Consul's own tools, and says once that the server is not verified.
    let env = [
        ("CONSUL_HTTP_ADDR", consul.https_addr()),
        ("CONSUL_TLS_SERVER_NAME", "other.example".to_string()),
        ("CONSUL_HTTP_SSL_VERIFY", "false".to_string()),
    ];
    let w = Watcher::start(&["--route-tag", "gateway"], &env);
    w.wait_ports("alpha", &[3001]);
    assert_eq!(w.log_text().matches("is NOT verified").count(), 1, "{}", w.log_text());
    drop(w);

    // Settings that cannot be honoured stop the watcher at once.
    let mut env = tls_env(&consul);
    env.push(("CONSUL_CLIENT_CERT", consul.ca_file().display().to_string()));
    let mut w = Watcher::start(&["--route-tag", "gateway"], &env);
    assert_eq!(w.exit_code(), Some(2), "{}", w.log_text());
    w.wait_log("CONSUL_CLIENT_KEY");
    let mut w =
        Watcher::start(&["--route-tag", "gateway", "--mode", "streams"], &[("CONSUL_HTTP_ADDR", consul.addr())]);
    assert_eq!(w.exit_code(), Some(2));
    // (The log reader may still be reading the last line when the process is gone.)
    w.wait_log("--mode streams needs an https:// Consul address");

    // Plain http, same agent: as before (auto with a follower multiplexes, over HTTP/1.1).
    let w = Watcher::start(&["--route-tag", "gateway"], &[("CONSUL_HTTP_ADDR", consul.addr())]);
    w.wait_log("multiplexed mode");
    w.wait_ports("alpha", &[3001]);
    consul.register_json(tagged("alpha", "alpha-2", 3002));
    w.wait_ports("alpha", &[3001, 3002]);
    assert_eq!(tcp_connections_to(w.child.id(), consul.https_port()), 0);
}

/// What the pool of connections is for: one client, one HTTP/2 connection, and the long polls
/// past Consul's 250 streams wait in the client for a free stream.
#[test]
fn one_client_queues_long_polls_past_consuls_stream_limit() {
    let consul = Consul::start_tls();
    let tls = consul::TlsConfig { ca_file: Some(consul.ca_file()), ..consul::TlsConfig::default() };
    let client =
        consul::Client::with_tls(consul.https_addr().parse().unwrap(), consul::Token::default(), &tls).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        assert_eq!(client.protocol().await.unwrap(), http::Version::HTTP_2);
        let view = consul::View::Catalog;
        let index = client.instances(view, "probe", 0, Duration::ZERO).await.unwrap().index;
        let t0 = Instant::now();
        let mut polls = tokio::task::JoinSet::new();
        for i in 0..260 {
            let client = client.clone();
            polls.spawn(async move {
                // 250 long polls of 3 s, then 10 of 1 s sent a little later: if they had streams
                // of their own they would be back after 1.3 s.
                let wait = if i < 250 { Duration::from_secs(3) } else { Duration::from_secs(1) };
                if i >= 250 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                client.instances(view, "probe", index, wait).await.map(|_| (i, t0.elapsed()))
            });
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(tcp_connections_to(std::process::id(), consul.https_port()), 1, "one connection");
        let mut late = Vec::new();
        while let Some(r) = polls.join_next().await {
            let (i, t) = r.unwrap().unwrap();
            if i >= 250 {
                late.push(t);
            }
        }
        let first = late.iter().min().unwrap();
        assert!(*first >= Duration::from_millis(2900), "the 251st long poll waited for a free stream: {late:?}");
        assert_eq!(tcp_connections_to(std::process::id(), consul.https_port()), 1, "still one connection");
        // A separate client is another connection.
        let other = client.separate();
        other.protocol().await.unwrap();
        assert_eq!(tcp_connections_to(std::process::id(), consul.https_port()), 2);
    });
}

/// Many requests started at once on a new HTTP/2-only client share one connection (left to ALPN,
/// each request started before the first handshake ends would open its own).
#[test]
fn an_http2_only_client_opens_one_connection_for_a_burst() {
    let consul = Consul::start_tls();
    let tls = consul::TlsConfig { ca_file: Some(consul.ca_file()), ..consul::TlsConfig::default() };
    let base = consul::Client::with_tls(consul.https_addr().parse().unwrap(), consul::Token::default(), &tls).unwrap();
    let plain = consul::Client::new(consul.addr().parse().unwrap(), consul::Token::default());
    assert!(plain.http2_only().is_none(), "no HTTP/2 on cleartext");
    let client = base.http2_only().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // Connections counted from another thread while the reads run.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let port = consul.https_port();
        let sampler = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut max = 0;
                loop {
                    // One more look after the reads: the connection stays open in the pool.
                    let last = done.load(std::sync::atomic::Ordering::SeqCst);
                    max = max.max(tcp_connections_to(std::process::id(), port));
                    if last {
                        break max;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let mut reads = tokio::task::JoinSet::new();
        for i in 0..200 {
            let client = client.clone();
            reads.spawn(
                async move { client.instances(consul::View::Catalog, &format!("s{i}"), 0, Duration::ZERO).await },
            );
        }
        while let Some(r) = reads.join_next().await {
            r.unwrap().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(sampler.join().unwrap(), 1, "200 reads at once on one connection");
        assert_eq!(client.protocol().await.unwrap(), http::Version::HTTP_2);
    });
}
