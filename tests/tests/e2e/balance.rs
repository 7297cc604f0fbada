//! Balancing policies through the real gateway and Consul: `--balance` / `GATEWAY_BALANCE`, the
//! route option `balance=` over it, round-robin's exact turns, and least-request steering around
//! an instance that answers 50 ms slower.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{get_json, http, wait_for, Consul, Gateway};

/// An HTTP/1.1 instance (keep-alive, a thread per connection) answering every request with its
/// port, after `delay`.
struct Delayed {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Delayed {
    fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let stopped = stopped.clone();
                std::thread::spawn(move || serve(conn, port, delay, &stopped));
            }
        });
        Self { port, stop }
    }
}

impl Drop for Delayed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, port: u16, delay: Duration, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let body = port.to_string();
    loop {
        // A GET without a body: the head ends at the first empty line.
        let mut line = String::new();
        loop {
            line.clear();
            if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) || stop.load(Ordering::SeqCst) {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        std::thread::sleep(delay);
        let resp =
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Three instances of `service-web`, the third 50 ms slower, each tagged with `tags`.
fn three(consul: &Consul, tags: &[&str]) -> Vec<Delayed> {
    let delays = [0, 0, 50].map(Duration::from_millis);
    let instances: Vec<Delayed> = delays.into_iter().map(Delayed::start).collect();
    for d in &instances {
        consul.register_tagged("service-web", &format!("web-{}", d.port), d.port, "passing", tags);
    }
    instances
}

/// The instance (port) that answered each of `n` requests to `path`, one at a time.
fn sequence(gw: &Gateway, path: &str, n: usize) -> Vec<u16> {
    let client = http();
    (0..n)
        .map(|_| {
            let resp = client.get(gw.url(path)).send().unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.text().unwrap().parse().unwrap()
        })
        .collect()
}

/// Requests per instance when `clients` clients send `each` requests to `path` at once.
fn under_load(gw: &Gateway, path: &str, clients: usize, each: usize) -> HashMap<u16, usize> {
    let url = gw.url(path);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = http();
                (0..each).map(|_| client.get(&url).send().unwrap().text().unwrap().parse::<u16>().unwrap()).collect()
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for t in threads {
        let got: Vec<u16> = t.join().unwrap();
        for p in got {
            *counts.entry(p).or_default() += 1;
        }
    }
    counts
}

fn assert_turns(seen: &[u16], ports: &[u16]) {
    let mut turn = seen[..3].to_vec();
    turn.sort();
    let mut want = ports.to_vec();
    want.sort();
    assert_eq!(turn, want, "each instance once per turn: {seen:?}");
    for (k, p) in seen.iter().enumerate() {
        assert_eq!(*p, seen[k % 3], "exact turns: {seen:?}");
    }
}

fn wait_for_instances(gw: &Gateway, n: usize) {
    let client = http();
    wait_for(Duration::from_secs(10), "all instances in /services", || {
        let (_, v) = get_json(&client, &gw.admin("/services")).ok()?;
        (v["services"][0]["instances"].as_array()?.len() == n).then_some(())
    });
}

#[test]
fn route_options_override_the_flag_and_least_request_avoids_the_slow_instance() {
    let consul = Consul::start();
    let tags = ["urlprefix-/rr strip=/rr balance=round-robin", "urlprefix-/lr strip=/lr balance=least-request"];
    let instances = three(&consul, &tags);
    let ports: Vec<u16> = instances.iter().map(|d| d.port).collect();
    let slow = ports[2];
    // Random for every route that names no policy (the name route /service-web/).
    let gw = Gateway::start(&consul, "service-web", &["--balance", "random"]);
    wait_for_instances(&gw, 3);
    let client = http();
    let (_, routes) = get_json(&client, &gw.admin("/routes")).unwrap();
    let policy = |path: &str| {
        let routes = routes["routes"].as_array().unwrap();
        routes.iter().find(|r| r["path"] == path).map(|r| r["balance"].as_str().unwrap().to_string())
    };
    assert_eq!(policy("/rr").as_deref(), Some("round-robin"), "{routes}");
    assert_eq!(policy("/lr").as_deref(), Some("least-request"), "{routes}");
    assert_eq!(policy("/service-web").as_deref(), Some("random"), "{routes}");

    // Round-robin on its route: A B C A B C...
    assert_turns(&sequence(&gw, "/rr/", 30), &ports);

    // Six clients at once: random gives the slow instance a third of the requests (each pick
    // ignores load), least-request clearly fewer.
    let random = under_load(&gw, "/service-web/", 6, 40);
    let least = under_load(&gw, "/lr/", 6, 40);
    let share = |c: &HashMap<u16, usize>| c.get(&slow).copied().unwrap_or(0) as f64 / c.values().sum::<usize>() as f64;
    let (random_share, least_share) = (share(&random), share(&least));
    eprintln!(
        "slow instance's share: random {random_share:.3} ({random:?}), least-request {least_share:.3} ({least:?})"
    );
    assert!(random_share > 0.2, "random: {random:?}");
    assert!(least_share < random_share * 0.6 && least_share < 0.2, "random {random:?}, least-request {least:?}");
}

#[test]
fn the_balance_flag_comes_from_the_environment_too() {
    let consul = Consul::start();
    let instances = three(&consul, &[]);
    let ports: Vec<u16> = instances.iter().map(|d| d.port).collect();
    let args = ["--consul", &consul.addr(), "--services", "service-web"].map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = Gateway::start_env(&[("GATEWAY_BALANCE", "round-robin".to_string())], &args);
    gw.wait_ready();
    wait_for_instances(&gw, 3);
    assert_turns(&sequence(&gw, "/service-web/", 12), &ports);
}
