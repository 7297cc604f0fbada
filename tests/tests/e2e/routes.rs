//! Routes that services declare in their Consul tags (issue 10), end to end: a real Consul agent,
//! the real gateway and the watcher it spawns, and echo instances that tell what they received.
//! Every change is made to Consul while the gateway runs (it is never restarted), and the time a
//! change takes to show through the gateway is printed (`--nocapture`) and bounded.
//!
//! Requests are written by hand on `std::net` so that the test says exactly what goes on the wire
//! (the `Host` header as given, the source address of the connection).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{get_json, http, Consul, Echo, Echoed, Gateway};
use serde_json::{json, Value};

/// The target for a registration to become routable is ~100 ms; this bound is generous
/// for a busy 2-core machine, yet fails if routes do not follow Consul.
const ROUTABLE_WITHIN: Duration = Duration::from_secs(2);
/// The bound for the other changes to show (deregistrations, tag changes, many services).
const SETTLE_WITHIN: Duration = Duration::from_secs(3);
/// How long any wait may last before the test fails with what it last saw.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A client that writes requests by hand.

/// A gateway's answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names lowercased, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// What the echo instance received, if an instance answered.
    fn echo(&self) -> Option<Echoed> {
        (self.status == 200).then(|| Echoed::parse(&self.json())).flatten()
    }

    /// The port of the instance that answered.
    fn port(&self) -> Option<u16> {
        self.echo().map(|e| e.port)
    }

    fn short(&self) -> String {
        format!("{} {}", self.status, self.body.chars().take(300).collect::<String>())
    }
}

/// One client connection to the gateway, kept alive across requests, opened from `from` (a
/// loopback address; default 127.0.0.1).
struct Conn {
    port: u16,
    from: Option<Ipv4Addr>,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(port: u16) -> Self {
        Self { port, from: None, reader: None }
    }

    fn from(port: u16, from: Ipv4Addr) -> Self {
        Self { port, from: Some(from), reader: None }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let to = SocketAddr::from(([127, 0, 0, 1], self.port));
        let stream = match self.from {
            None => TcpStream::connect_timeout(&to, Duration::from_secs(5))?,
            Some(ip) => {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                s.bind(&SocketAddr::from((ip, 0)).into())?;
                s.connect_timeout(&to.into(), Duration::from_secs(5))?;
                s.into()
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// `GET target` with `Host: host` (default `127.0.0.1:<port>`) and `headers`. A request that
    /// fails on a reused connection is sent once more on a new one (the gateway may have closed
    /// it meanwhile).
    fn get(&mut self, host: Option<&str>, target: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
        let default_host = format!("127.0.0.1:{}", self.port);
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n", host.unwrap_or(&default_host));
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let reused = self.reader.is_some();
        match self.exchange(&req) {
            Ok(a) => Ok(a),
            Err(_) if reused => self.exchange(&req),
            Err(e) => Err(e),
        }
        .map_err(|e| format!("GET {target} (Host {host:?}, from {:?}): {e}", self.from))
    }

    fn exchange(&mut self, req: &str) -> Result<Answer, String> {
        if self.reader.is_none() {
            self.reader = Some(BufReader::new(self.connect().map_err(|e| format!("connect: {e}"))?));
        }
        let reader = self.reader.as_mut().expect("connected");
        let answer = (|| {
            reader.get_mut().write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
            read_answer(reader)
        })();
        let keep = answer.as_ref().is_ok_and(|a| !a.header("connection").is_some_and(|c| c.contains("close")));
        if !keep {
            self.reader = None;
        }
        answer
    }
}

fn read_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Reads one response: status line, headers, and a body framed by `Content-Length` or chunked.
fn read_answer(reader: &mut impl BufRead) -> Result<Answer, String> {
    let status_line = read_line(reader)?;
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v): &(String, String)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let size = read_line(reader)?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).map_err(|e| format!("read chunk: {e}"))?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let length: usize = find("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        body.resize(length, 0);
        reader.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
    }
    Ok(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// One request on a new connection.
fn get(gw: &Gateway, host: Option<&str>, target: &str) -> Answer {
    Conn::new(gw.port).get(host, target, &[]).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Checks and waits.

/// Asserts that the instance on `port` answered, and returns what it received.
#[track_caller]
fn from_instance(a: &Answer, port: u16, what: &str) -> Echoed {
    let e = a.echo().unwrap_or_else(|| panic!("{what}: no instance answered: {}", a.short()));
    assert_eq!(e.port, port, "{what}: the wrong instance answered: {e:?}");
    e
}

/// Asserts the gateway's 404 for `path`.
#[track_caller]
fn assert_no_route(a: &Answer, path: &str, what: &str) {
    assert_eq!((a.status, a.json()), (404, json!({"error": "no route", "path": path})), "{what}: {}", a.short());
}

/// Polls `probe` until it says `Ok`, for at most [`WAIT`]; prints and returns the time since
/// `since` with the value. Panics with the last thing `probe` saw.
fn settle<T>(since: Instant, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> (T, Duration) {
    let mut last;
    loop {
        match probe() {
            Ok(v) => {
                let took = since.elapsed();
                eprintln!("[routes] {what}: {:.1} ms", took.as_secs_f64() * 1000.0);
                return (v, took);
            }
            Err(e) => last = e,
        }
        assert!(since.elapsed() < WAIT, "{what}: not within {WAIT:?}; last seen: {last}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`settle`], asserting that it took less than `limit`.
#[track_caller]
fn propagates<T>(since: Instant, limit: Duration, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    let (v, took) = settle(since, what, probe);
    assert!(took < limit, "{what} took {took:?}, more than {limit:?}");
    v
}

/// A probe: `GET target` on `host` answers `status` (and, for 200, from one of `ports`).
fn answers(gw: &Gateway, host: Option<&str>, target: &str, status: u16, ports: &[u16]) -> Result<Answer, String> {
    let a = get(gw, host, target);
    let port_ok = status != 200 || a.port().is_some_and(|p| ports.contains(&p));
    if a.status == status && port_ok {
        Ok(a)
    } else {
        Err(a.short())
    }
}

/// A probe: the gateway logged a line with `needle`.
fn logged(gw: &Gateway, needle: &str) -> Result<String, String> {
    gw.proc.logs().into_iter().find(|l| l.contains(needle)).ok_or_else(|| format!("no log line with {needle:?}"))
}

/// How many log lines contain every one of `needles`.
fn log_count(gw: &Gateway, needles: &[&str]) -> usize {
    gw.proc.logs().iter().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// `n` requests on one keep-alive connection: how many each instance answered. Panics on
/// anything but 200.
fn spread(gw: &Gateway, host: Option<&str>, target: &str, n: usize) -> BTreeMap<u16, usize> {
    let mut conn = Conn::new(gw.port);
    let mut out = BTreeMap::new();
    for i in 0..n {
        let a = conn.get(host, target, &[]).unwrap_or_else(|e| panic!("request {i}: {e}"));
        let port = a.port().unwrap_or_else(|| panic!("request {i} to {target}: {}", a.short()));
        *out.entry(port).or_default() += 1;
    }
    out
}

/// `GET /routes`: the `routes` array.
fn routes(gw: &Gateway) -> Vec<Value> {
    let (status, v) = get_json(&http(), &gw.admin("/routes")).unwrap();
    assert_eq!(status, 200, "/routes: {v}");
    v["routes"].as_array().cloned().unwrap_or_default()
}

/// The `route` field of each entry of `/routes`, in order.
fn route_names(gw: &Gateway) -> Vec<String> {
    routes(gw).iter().map(|r| r["route"].as_str().unwrap_or("?").to_string()).collect()
}

/// A gateway with no static service (routes come from tags only), checked ready.
fn start_gateway(consul: &Consul) -> Gateway {
    let gw = Gateway::start_unready(consul, "", &[]);
    let client = http();
    let (body, _) =
        settle(Instant::now(), "gateway started -> /readyz 200", || match get_json(&client, &gw.admin("/readyz")) {
            Ok((200, v)) => Ok(v),
            Ok((s, v)) => Err(format!("{s} {v}")),
            Err(e) => Err(e),
        });
    assert_eq!(body, json!({"ready": true}));
    gw
}

/// An instance registration on 127.0.0.1 without a check (so passing).
fn instance(name: &str, id: &str, port: u16, tags: &[&str]) -> Value {
    json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": tags})
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_service_tagged_gateway_is_routed_at_its_name_while_registered() {
    let consul = Consul::start();
    let (other, e1, e2) = (Echo::start(), Echo::start(), Echo::start());
    // Never routable: no tag at all, or only tags that declare no route.
    consul.register("plain", "plain-1", other.port);
    let unrelated = ["web", "v1", "gateway-x", "gateways", "urlprefix", "xurlprefix-/other", "prefix-/other"];
    consul.register_json(instance("other", "other-1", other.port, &unrelated));
    let gw = start_gateway(&consul);
    assert_no_route(&get(&gw, None, "/billing/users"), "/billing/users", "before billing is registered");

    // Registered while the gateway runs: routed at its name within the bound.
    let t = Instant::now();
    consul.register_json(instance("billing", "billing-1", e1.port, &["gateway"]));
    let a = propagates(t, ROUTABLE_WITHIN, "billing registered (tag gateway) -> /billing/ routable", || {
        answers(&gw, None, "/billing/users?id=1", 200, &[e1.port])
    });
    let e = from_instance(&a, e1.port, "/billing/users?id=1");
    assert_eq!(e.path, "/users?id=1", "the service name is stripped, the query kept");
    assert_eq!(e.header("x-forwarded-prefix"), Some("/billing"));
    assert_eq!(e.header("host"), Some(format!("127.0.0.1:{}", e1.port).as_str()), "a name route sends host=dst");
    assert_eq!(from_instance(&get(&gw, None, "/billing"), e1.port, "/billing").path, "/");
    assert_eq!(from_instance(&get(&gw, None, "/billing/"), e1.port, "/billing/").path, "/");
    assert_no_route(&get(&gw, None, "/billingx/users"), "/billingx/users", "not on a segment boundary");
    assert_no_route(&get(&gw, None, "/Billing/users"), "/Billing/users", "paths are case-sensitive");
    logged(&gw, "route added: /billing -> billing (1 instance)").unwrap();

    // Untagged services and services with unrelated tags are never routed, nor listed.
    for path in ["/plain/", "/plain/x", "/plain", "/other/", "/other/x", "/web/x", "/v1/x"] {
        assert_no_route(&get(&gw, None, path), path, "an untagged service");
    }
    assert_eq!(route_names(&gw), ["/billing"]);
    let (_, services) = get_json(&http(), &gw.admin("/services")).unwrap();
    let listed: Vec<&str> =
        services["services"].as_array().unwrap().iter().filter_map(|s| s["service"].as_str()).collect();
    assert_eq!(listed, ["billing"], "only the tagged service is followed: {services}");

    // A second instance: both answer.
    let t = Instant::now();
    consul.register_json(instance("billing", "billing-2", e2.port, &["gateway"]));
    propagates(t, SETTLE_WITHIN, "second billing instance registered -> it answers", || {
        answers(&gw, None, "/billing/x", 200, &[e2.port])
    });
    let seen = spread(&gw, None, "/billing/x", 60);
    let both = BTreeSet::from([e1.port, e2.port]);
    assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), both, "both instances answer: {seen:?}");
    logged(&gw, &format!("billing: 1 -> 2 instances, added 127.0.0.1:{}", e2.port)).unwrap();

    // One deregistered: only the other answers, and the change is logged.
    let t = Instant::now();
    consul.deregister("billing-1");
    propagates(t, SETTLE_WITHIN, "billing-1 deregistered -> change logged", || {
        logged(&gw, &format!("billing: 2 -> 1 instances, removed 127.0.0.1:{}", e1.port))
    });
    let seen = spread(&gw, None, "/billing/x", 40);
    assert_eq!(seen, BTreeMap::from([(e2.port, 40)]), "only the remaining instance answers");

    // The last one deregistered: the route goes, logged as such, and the path is a 404.
    let t = Instant::now();
    consul.deregister("billing-2");
    let a = propagates(t, SETTLE_WITHIN, "last billing instance deregistered -> /billing/ 404", || {
        answers(&gw, None, "/billing/users", 404, &[])
    });
    assert_no_route(&a, "/billing/users", "after the service is deregistered");
    for _ in 0..5 {
        assert_no_route(&get(&gw, None, "/billing/users"), "/billing/users", "and it stays so");
    }
    assert!(route_names(&gw).is_empty(), "{:?}", routes(&gw));
    let removed =
        settle(Instant::now(), "the route removal logged", || logged(&gw, "route removed: /billing -> billing")).0;
    assert!(
        removed.contains("route removed: /billing -> billing (service deregistered)"),
        "the removal names the reason: {removed}"
    );
}

#[test]
fn declared_routes_match_the_host_then_the_longest_prefix_and_rewrite_as_declared() {
    let consul = Consul::start();
    let gw = start_gateway(&consul);
    // One instance per service, so the answering port names the route that matched.
    let services: [(&str, &str); 11] = [
        ("api", "urlprefix-api.example.com/v1 strip=/v1"),
        ("wild", "urlprefix-*.example.com/"),
        ("euwild", "urlprefix-*.eu.example.com/"),
        ("site", "urlprefix-/site"),
        ("short", "urlprefix-/a"),
        ("long", "urlprefix-/a/b"),
        ("pre", "urlprefix-/p strip=/p prepend=/v2"),
        ("base", "urlprefix-/q prepend=/base"),
        ("dst", "urlprefix-/dst host=dst"),
        ("named", "urlprefix-/named host=internal.name"),
        ("mover", "urlprefix-/old redirect=301,https://new.example.com$path"),
    ];
    let echoes: BTreeMap<&str, Echo> = services.iter().map(|(s, _)| (*s, Echo::start())).collect();
    let port = |s: &str| echoes[s].port;
    let t = Instant::now();
    for (name, tag) in services {
        if name == "mover" {
            // No instance passes: a redirect needs none.
            consul.register_tagged(name, &format!("{name}-1"), port(name), "critical", &[tag]);
        } else {
            consul.register_json(instance(name, &format!("{name}-1"), port(name), &[tag]));
        }
    }
    propagates(t, SETTLE_WITHIN, "11 services registered -> 11 routes with their instances", || {
        let r = routes(&gw);
        let counts: usize = r.iter().map(|r| r["instances"].as_u64().unwrap_or(0) as usize).sum();
        (r.len() == 11 && counts == 10).then_some(()).ok_or_else(|| format!("{} routes, {counts} instances", r.len()))
    });

    // (host, target, service that answers (None: 404), path it receives, X-Forwarded-Prefix)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, Option<&'a str>);
    let cases: [Case; 24] = [
        ("api.example.com", "/v1/users?x=1", Some("api"), "/users?x=1", Some("/v1")),
        ("api.example.com", "/v1", Some("api"), "/", Some("/v1")),
        ("API.Example.COM:3000", "/v1/users", Some("api"), "/users", Some("/v1")),
        ("api.example.com.", "/v1/users", Some("api"), "/users", Some("/v1")),
        // The exact host has no /v2: the wildcard tier answers (as Fabio).
        ("api.example.com", "/v2/x", Some("wild"), "/v2/x", None),
        // Another host is not the api route's.
        ("www.example.com", "/v1/users", Some("wild"), "/v1/users", None),
        ("a.eu.example.com", "/v1/users", Some("euwild"), "/v1/users", None),
        ("example.com", "/v1/users", None, "", None),
        ("other.test", "/v1/users", None, "", None),
        // A wildcard host beats a route for any host.
        ("x.example.com", "/site/p", Some("wild"), "/site/p", None),
        ("other.test", "/site/p", Some("site"), "/site/p", None),
        // The longest prefix, on segment boundaries.
        ("other.test", "/a", Some("short"), "/a", None),
        ("other.test", "/a/x", Some("short"), "/a/x", None),
        ("other.test", "/a/b", Some("long"), "/a/b", None),
        ("other.test", "/a/b/c?d=1", Some("long"), "/a/b/c?d=1", None),
        ("other.test", "/a/bc", Some("short"), "/a/bc", None),
        ("other.test", "/ab", None, "", None),
        ("other.test", "/A/b", None, "", None),
        // strip= then prepend=; prepend= alone.
        ("other.test", "/p/users?x=1", Some("pre"), "/v2/users?x=1", Some("/p")),
        ("other.test", "/p", Some("pre"), "/v2", Some("/p")),
        ("other.test", "/px", None, "", None),
        ("other.test", "/q/x", Some("base"), "/base/q/x", None),
        ("other.test", "/dst/x", Some("dst"), "/dst/x", None),
        ("other.test", "/named/x", Some("named"), "/named/x", None),
    ];
    for (host, target, service, path, prefix) in cases {
        let what = format!("Host {host}, GET {target}");
        let a = get(&gw, Some(host), target);
        let Some(service) = service else {
            assert_no_route(&a, target.split('?').next().unwrap(), &what);
            continue;
        };
        let e = from_instance(&a, port(service), &format!("{what} (expected {service})"));
        assert_eq!((e.path.as_str(), e.header("x-forwarded-prefix")), (path, prefix), "{what}: {e:?}");
        let host_sent = match service {
            "dst" => format!("127.0.0.1:{}", port("dst")),
            "named" => "internal.name".to_string(),
            _ => host.to_string(),
        };
        assert_eq!(e.header("host"), Some(host_sent.as_str()), "{what}: the Host the instance gets");
    }

    // A redirect answers without an instance, with the path and the query.
    for (target, location) in [
        ("/old/x?q=1", "https://new.example.com/old/x?q=1"),
        ("/old", "https://new.example.com/old"),
        ("/old/a/b", "https://new.example.com/old/a/b"),
    ] {
        let a = get(&gw, Some("any.test"), target);
        assert_eq!((a.status, a.header("location")), (301, Some(location)), "GET {target}: {a:?}");
    }
    assert_no_route(&get(&gw, None, "/older"), "/older", "a redirect route is a prefix on segments too");

    // /routes: match order (exact hosts, wildcards by longest domain, then any host by the longest
    // path), with what each route is.
    let order = [
        "api.example.com/v1",
        "*.eu.example.com/",
        "*.example.com/",
        "/named",
        "/site",
        "/a/b",
        "/dst",
        "/old",
        "/a",
        "/p",
        "/q",
    ];
    assert_eq!(route_names(&gw), order);
    let listed = routes(&gw);
    let api = &listed[0];
    let want = json!({"host": "api.example.com", "host_match": "exact", "path": "/v1", "service": "api",
                      "kind": "declared", "tag": "urlprefix-api.example.com/v1 strip=/v1",
                      "options": "api.example.com/v1 strip=/v1", "strip": "/v1", "instances": 1});
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&api[k], v, "/routes, api.example.com/v1, {k}: {api}");
    }
    let wild = &listed[2];
    assert_eq!(
        (&wild["host"], &wild["host_match"], &wild["service"]),
        (&json!("*.example.com"), &json!("wildcard"), &json!("wild"))
    );
    let mover = &listed[7];
    assert_eq!(
        (&mover["host"], &mover["service"], &mover["options"], &mover["instances"]),
        (&Value::Null, &json!("mover"), &json!("/old redirect=301,https://new.example.com$path"), &json!(0))
    );
    for r in &listed {
        let service = r["service"].as_str().unwrap();
        let tag = services.iter().find(|(s, _)| *s == service).map(|(_, t)| *t);
        assert_eq!(r["tag"].as_str(), tag, "{r}");
        let want_instances = u64::from(service != "mover");
        assert_eq!(r["instances"].as_u64(), Some(want_instances), "{r}");
    }
    for line in
        ["route added: api.example.com/v1 -> api (1 instance)", "route added: *.example.com/ -> wild (1 instance)"]
    {
        logged(&gw, line).unwrap();
    }
    let (status, ready) = get_json(&http(), &gw.admin("/readyz")).unwrap();
    assert_eq!((status, ready), (200, json!({"ready": true})), "still ready after the changes");
}

#[test]
fn tags_change_without_a_restart_and_a_bad_tag_is_skipped_and_warned_once() {
    let consul = Consul::start();
    let gw = start_gateway(&consul);
    let (e1, e2, e3) = (Echo::start(), Echo::start(), Echo::start());

    // A bad tag beside a good one: the good route works, the bad one is not a route.
    let bad_tag = "urlprefix-/bad allow=ip:10.0.0.0/8";
    let t = Instant::now();
    consul.register_json(instance("mixed", "mixed-1", e1.port, &["urlprefix-/good", bad_tag]));
    propagates(t, ROUTABLE_WITHIN, "mixed registered -> /good routable", || {
        answers(&gw, None, "/good/x", 200, &[e1.port])
    });
    for path in ["/bad", "/bad/x"] {
        assert_no_route(&get(&gw, None, path), path, "the route of a rejected tag");
    }
    assert_eq!(route_names(&gw), ["/good"]);
    let warning = ["WARN", "skipping a route tag that cannot be parsed", "service=mixed", &format!("tag={bad_tag}")];
    settle(Instant::now(), "the bad tag's warning logged", || {
        (log_count(&gw, &warning) > 0).then_some(()).ok_or_else(|| gw.proc.log_text())
    });
    let line = logged(&gw, "skipping a route tag").unwrap();
    assert!(line.contains("allow="), "the warning says what is wrong: {line}");

    // The service changes again (another instance, a new tag, so its routes are rebuilt), and
    // another service comes and changes the table: still one warning.
    let t = Instant::now();
    consul.register_json(instance("mixed", "mixed-2", e2.port, &["urlprefix-/good", bad_tag, "v2"]));
    propagates(t, SETTLE_WITHIN, "a second mixed instance -> it answers at /good", || {
        answers(&gw, None, "/good/x", 200, &[e2.port])
    });
    let seen = spread(&gw, None, "/good/x", 40);
    assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), BTreeSet::from([e1.port, e2.port]), "{seen:?}");
    assert_no_route(&get(&gw, None, "/bad/x"), "/bad/x", "the rejected tag, after the change");

    // A tag moves from /old to /new on the same instance: /new routes, /old is gone.
    let t = Instant::now();
    consul.register_json(instance("mover", "mover-1", e3.port, &["urlprefix-/old"]));
    propagates(t, ROUTABLE_WITHIN, "mover registered -> /old routable", || {
        answers(&gw, None, "/old/x", 200, &[e3.port])
    });
    // Clients keep asking at both paths while the tag moves: the instance passes throughout, so
    // each path answers from it or 404, never "no live instance".
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ["/old/x", "/new/x"]
        .into_iter()
        .map(|path| {
            let (stop, port) = (stop.clone(), gw.port);
            std::thread::spawn(move || {
                let (mut conn, mut statuses) = (Conn::new(port), BTreeMap::<u16, usize>::new());
                let until = Instant::now() + WAIT;
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    *statuses.entry(conn.get(None, path, &[]).map_or(0, |a| a.status)).or_default() += 1;
                }
                (path, statuses)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    consul.register_json(instance("mover", "mover-1", e3.port, &["urlprefix-/new"]));
    propagates(t, SETTLE_WITHIN, "mover's tag /old -> /new: /new routable and /old 404", || {
        answers(&gw, None, "/old/x", 404, &[])?;
        answers(&gw, None, "/new/x", 200, &[e3.port])
    });
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let during: Vec<(&str, BTreeMap<u16, usize>)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    eprintln!("[routes] statuses while the tag moved (status: count): {during:?}");
    assert_no_route(&get(&gw, None, "/old/x"), "/old/x", "the old route");
    assert_eq!(from_instance(&get(&gw, None, "/new/x?y=1"), e3.port, "/new/x?y=1").path, "/new/x?y=1");
    logged(&gw, "route removed: /old -> mover (tags changed)").unwrap();
    let added = logged(&gw, "route added: /new -> mover (").unwrap();
    assert_eq!(route_names(&gw), ["/good", "/new"]);
    assert_eq!(routes(&gw)[1]["instances"], 1, "{:?}", routes(&gw));
    assert_eq!(log_count(&gw, &warning), 1, "the bad tag was warned about once:\n{}", gw.proc.log_text());

    // The tag removed (the instance stays, with an unrelated tag): the service's routes go.
    let t = Instant::now();
    consul.register_json(instance("mover", "mover-1", e3.port, &["v3"]));
    propagates(t, SETTLE_WITHIN, "mover untagged -> /new 404", || answers(&gw, None, "/new/x", 404, &[]));
    assert_no_route(&get(&gw, None, "/new/x"), "/new/x", "after the tag was removed");
    assert_no_route(&get(&gw, None, "/mover/x"), "/mover/x", "an untagged service has no name route");
    assert_eq!(route_names(&gw), ["/good"]);
    let removed = settle(Instant::now(), "the removal logged", || logged(&gw, "route removed: /new -> mover (")).0;

    // The other service is unaffected, and its bad tag was still warned about once only.
    let seen = spread(&gw, None, "/good/x", 20);
    assert!(seen.keys().all(|p| [e1.port, e2.port].contains(p)), "{seen:?}");
    assert_eq!(log_count(&gw, &warning), 1, "the bad tag was warned about once:\n{}", gw.proc.log_text());

    // How the tag change went (checked last, so that everything above is checked first): no
    // moment without the instance, and the new route logged with it.
    for (path, statuses) in &during {
        assert!(statuses.keys().all(|s| [200, 404].contains(s)), "{path} while the tag moved: {statuses:?}");
    }
    assert!(added.contains("route added: /new -> mover (1 instance)"), "the new route's instances: {added}");
    assert!(
        ["(service no longer tagged)", "(tags changed)"].iter().any(|why| removed.contains(why)),
        "the removal says the tag went: {removed}"
    );
}

/// The split cookie of an answer, `name=value`, checked for its attributes.
#[track_caller]
fn split_cookie(a: &Answer, path: &str) -> String {
    let set = a.header("set-cookie").unwrap_or_else(|| panic!("no Set-Cookie from a split route: {a:?}"));
    let mut parts = set.split(';').map(str::trim);
    let pair = parts.next().unwrap_or_default().to_string();
    let attrs: Vec<&str> = parts.collect();
    assert!(pair.starts_with("gw_split_"), "{set}");
    for want in [format!("Path={path}"), "Max-Age=86400".to_string(), "HttpOnly".to_string()] {
        assert!(attrs.contains(&want.as_str()), "Set-Cookie {set} lacks {want}");
    }
    pair
}

/// Asserts that `part` of `total` is within `points` percentage points of `percent`.
#[track_caller]
fn share_near(what: &str, part: usize, total: usize, percent: f64, points: f64) {
    let share = 100.0 * part as f64 / total as f64;
    eprintln!("[routes] {what}: {part} of {total} = {share:.1} % (want {percent} ± {points})");
    assert!((share - percent).abs() <= points, "{what}: {share:.1} %, not within {points} points of {percent} %");
}

#[test]
fn weights_canary_splits_and_no_live_instance_without_fall_through() {
    let consul = Consul::start();
    let gw = start_gateway(&consul);
    let (root, down, heavy, light) = (Echo::start(), Echo::start(), Echo::start(), Echo::start());
    let shop: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let (cookie_tag, addr_tag) = ("urlprefix-/shop split=canary:10", "urlprefix-/shopa split=canary:10 sticky=addr");
    consul.register_json(instance("root", "root-1", root.port, &["urlprefix-/"]));
    consul.register_tagged("down", "down-1", down.port, "critical", &["urlprefix-/down"]);
    for (id, e, passing) in [("w-heavy", &heavy, 4), ("w-light", &light, 1)] {
        let mut r = instance("w", id, e.port, &["urlprefix-/w"]);
        r["Weights"] = json!({"Passing": passing, "Warning": 1});
        consul.register_json(r);
    }
    for (i, e) in shop.iter().enumerate() {
        let tags: &[&str] = if i == 2 { &[cookie_tag, addr_tag, "canary"] } else { &[cookie_tag, addr_tag] };
        consul.register_json(instance("shop", &format!("shop-{i}"), e.port, tags));
    }
    let canary = shop[2].port;
    let main: BTreeSet<u16> = [shop[0].port, shop[1].port].into();
    settle(Instant::now(), "5 routes with their instances", || {
        let r = routes(&gw);
        let counts: Vec<u64> = r.iter().map(|r| r["instances"].as_u64().unwrap_or(0)).collect();
        (counts.len() == 5 && counts.iter().sum::<u64>() == 1 + 2 + 3 + 3).then_some(()).ok_or(format!("{r:?}"))
    });

    // No passing instance: 503, never a fall-through to the shorter `/` route.
    for path in ["/down/x", "/down", "/down/"] {
        let a = get(&gw, None, path);
        // A 5xx of the gateway's own carries its request ID (issue 12): the rest is as before.
        let mut body = a.json();
        assert!(
            body.as_object_mut().and_then(|o| o.remove("request_id")).is_some_and(|id| id.is_string()),
            "GET {path}"
        );
        assert_eq!((a.status, body), (503, json!({"error": "no live instance", "service": "down"})), "GET {path}");
    }
    for path in ["/downx", "/elsewhere?x=1", "/"] {
        assert_eq!(from_instance(&get(&gw, None, path), root.port, path).path, path, "the `/` route answers {path}");
    }
    // Once its check passes, the route answers from the instance; failing again, 503 again.
    let t = Instant::now();
    consul.set_check("service:down-1", "pass");
    propagates(t, SETTLE_WITHIN, "down's check passes -> /down answers", || {
        answers(&gw, None, "/down/x", 200, &[down.port])
    });
    let t = Instant::now();
    consul.set_check("service:down-1", "fail");
    propagates(t, SETTLE_WITHIN, "down's check fails -> /down 503", || answers(&gw, None, "/down/x", 503, &[]));

    // Consul's weights: 4 to 1.
    let seen = spread(&gw, None, "/w/x", 1000);
    assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), BTreeSet::from([heavy.port, light.port]), "{seen:?}");
    share_near("weights 4:1, the heavy instance's share", seen[&heavy.port], 1000, 80.0, 5.0);
    let listed = routes(&gw);
    let w = listed.iter().find(|r| r["route"] == "/w").unwrap();
    let weights: BTreeSet<(String, u64)> = w["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["instance"].as_str().unwrap().to_string(), i["weight"].as_u64().unwrap()))
        .collect();
    let want = BTreeSet::from([(format!("127.0.0.1:{}", heavy.port), 4), (format!("127.0.0.1:{}", light.port), 1)]);
    assert_eq!(weights, want, "/routes shows the weights: {w}");
    let s = listed.iter().find(|r| r["route"] == "/shop").unwrap();
    assert_eq!((&s["split"]["percent"], &s["split"]["sticky"]), (&json!(10), &json!("cookie")), "{s}");
    assert_eq!(s["split"]["canary_instances"][0]["instance"], format!("127.0.0.1:{canary}"), "{s}");
    let s = listed.iter().find(|r| r["route"] == "/shopa").unwrap();
    assert_eq!((&s["split"]["percent"], &s["split"]["sticky"]), (&json!(10), &json!("addr")), "{s}");

    // Canary split by cookie: 2,000 new clients (no cookie), about 10 % to the canary.
    let mut conn = Conn::new(gw.port);
    let mut clients: Vec<(String, bool)> = Vec::new();
    let mut main_seen = BTreeSet::new();
    for i in 0..2000 {
        let a = conn.get(None, "/shop/x", &[]).unwrap_or_else(|e| panic!("client {i}: {e}"));
        let port = a.port().unwrap_or_else(|| panic!("client {i}: {}", a.short()));
        assert!(port == canary || main.contains(&port), "client {i}: port {port}");
        let cookie = split_cookie(&a, "/shop");
        let on_canary = port == canary;
        assert_eq!(cookie.ends_with("=c10"), on_canary, "client {i}: cookie {cookie} for port {port}");
        if !on_canary {
            main_seen.insert(port);
        }
        clients.push((cookie, on_canary));
    }
    let canaries = clients.iter().filter(|(_, c)| *c).count();
    share_near("split=canary:10 by cookie, new clients on the canary", canaries, 2000, 10.0, 3.0);
    assert_eq!(main_seen, main, "the main side spreads over both of its instances");
    // Clients that send their cookie back stay on their side: 50 of each, 3 requests each.
    let sample = clients.iter().filter(|(_, c)| *c).take(50).chain(clients.iter().filter(|(_, c)| !*c).take(50));
    for (cookie, on_canary) in sample {
        for n in 0..3 {
            let a = conn.get(None, "/shop/y", &[("Cookie", cookie)]).unwrap();
            let port = a.port().unwrap_or_else(|| panic!("{cookie}, request {n}: {}", a.short()));
            assert_eq!(port == canary, *on_canary, "{cookie}, request {n}: answered by {port}");
        }
    }

    // Canary split by address: 2,000 client addresses, each keeps its side.
    let addrs: Vec<Ipv4Addr> = (1..=8).flat_map(|c| (1..=250).map(move |d| Ipv4Addr::new(127, 0, c, d))).collect();
    let side = |ip: Ipv4Addr| -> bool {
        let a = Conn::from(gw.port, ip).get(None, "/shopa/x", &[]).unwrap_or_else(|e| panic!("{e}"));
        let port = a.port().unwrap_or_else(|| panic!("from {ip}: {}", a.short()));
        assert!(port == canary || main.contains(&port), "from {ip}: port {port}");
        assert_eq!(a.header("set-cookie"), None, "sticky=addr sets no cookie");
        port == canary
    };
    let first: Vec<bool> = addrs.iter().map(|ip| side(*ip)).collect();
    share_near(
        "split=canary:10 sticky=addr, addresses on the canary",
        first.iter().filter(|c| **c).count(),
        2000,
        10.0,
        3.0,
    );
    let moved: Vec<Ipv4Addr> =
        addrs.iter().zip(&first).filter(|(ip, was)| side(**ip) != **was).map(|(ip, _)| *ip).collect();
    assert!(
        moved.is_empty(),
        "{} addresses changed side on a new connection: {:?}",
        moved.len(),
        &moved[..moved.len().min(10)]
    );
}

/// A small random generator (xorshift64*), seeded from `E2E_SEED` or at random; the seed is
/// printed so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
            h.finish()
        });
        eprintln!("[routes] random services: E2E_SEED={seed}");
        Self(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    /// `len` characters of `[a-z0-9]`, starting with a letter.
    fn word(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len).map(|i| CHARS[self.below(if i == 0 { 26 } else { 36 }) as usize] as char).collect()
    }
}

/// One service the test made up.
struct Made {
    name: String,
    host: String,
    /// The route's path prefix (`/x` or `/x/y`).
    prefix: String,
    /// Whether the tag strips the prefix.
    strip: bool,
    instances: Vec<Echo>,
}

#[test]
fn services_the_tests_never_used_are_routed_and_unrouted() {
    let consul = Consul::start();
    let gw = start_gateway(&consul);
    let mut rng = Rng::new();
    let mut taken = HashSet::new();
    let made: Vec<Made> = (0..20)
        .map(|_| loop {
            let name = format!("{}-{}", rng.word(6), rng.word(4));
            let len = 3 + rng.below(10) as usize;
            let host = format!("{}.test", rng.word(len));
            let segments = 1 + rng.below(2) as usize;
            let prefix: String = (0..segments)
                .map(|_| {
                    let len = 1 + rng.below(8) as usize;
                    format!("/{}", rng.word(len))
                })
                .collect();
            if taken.insert(name.clone()) && taken.insert(host.clone()) {
                let instances = (0..1 + rng.below(3)).map(|_| Echo::start()).collect();
                break Made { name, host, prefix, strip: rng.below(2) == 0, instances };
            }
        })
        .collect();

    let t = Instant::now();
    for m in &made {
        let tag = match m.strip {
            true => format!("urlprefix-{}{} strip={}", m.host, m.prefix, m.prefix),
            false => format!("urlprefix-{}{}", m.host, m.prefix),
        };
        for (i, e) in m.instances.iter().enumerate() {
            consul.register_json(instance(&m.name, &format!("{}-{i}", m.name), e.port, &[&tag]));
        }
    }
    let total: usize = made.iter().map(|m| m.instances.len()).sum();
    let last = Instant::now();
    eprintln!("[routes] registered {} services, {total} instances, in {:?}", made.len(), t.elapsed());
    propagates(
        t,
        SETTLE_WITHIN,
        "20 random services registered (from the first) -> every route with all its instances",
        || {
            let r = routes(&gw);
            let counts: u64 = r.iter().map(|r| r["instances"].as_u64().unwrap_or(0)).sum();
            (r.len() == 20 && counts == total as u64)
                .then_some(())
                .ok_or_else(|| format!("{} routes, {counts} instances", r.len()))
        },
    );
    eprintln!("[routes] ... of which after the last registration: {:?}", last.elapsed());

    for m in &made {
        let ports: Vec<u16> = m.instances.iter().map(|e| e.port).collect();
        let what = format!("{} ({}{}, strip {})", m.name, m.host, m.prefix, m.strip);
        let rest = |sub: &str| if m.strip { sub.to_string() } else { format!("{}{sub}", m.prefix) };
        let upper = format!("{}:{}", m.host.to_uppercase(), gw.port);
        for (host, target, path) in [
            (m.host.as_str(), format!("{}/x", m.prefix), rest("/x")),
            (upper.as_str(), format!("{}/y/z", m.prefix), rest("/y/z")),
            (m.host.as_str(), format!("{}/q?a=1&b=%20", m.prefix), rest("/q?a=1&b=%20")),
            (m.host.as_str(), m.prefix.clone(), if m.strip { "/".to_string() } else { m.prefix.clone() }),
        ] {
            let a = get(&gw, Some(host), &target);
            let e = a.echo().unwrap_or_else(|| panic!("{what}: Host {host} GET {target}: {}", a.short()));
            assert!(ports.contains(&e.port), "{what}: Host {host} GET {target}: answered by {} not {ports:?}", e.port);
            assert_eq!(e.path, path, "{what}: Host {host} GET {target}");
            assert_eq!(e.header("host"), Some(host), "{what}: the client's Host is forwarded");
            assert_eq!(e.header("x-forwarded-prefix"), m.strip.then_some(m.prefix.as_str()), "{what}");
        }
        // Every instance gets traffic.
        let mut conn = Conn::new(gw.port);
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            seen.extend(conn.get(Some(&m.host), &format!("{}/s", m.prefix), &[]).unwrap().port());
            if seen.len() == ports.len() {
                break;
            }
        }
        assert_eq!(seen, ports.iter().copied().collect(), "{what}: every instance answers");
        // Not another host, not past a segment boundary, not another service's host.
        for (host, target) in [
            ("elsewhere.test".to_string(), format!("{}/x", m.prefix)),
            (m.host.clone(), format!("{}x/y", m.prefix)),
            (format!("www.{}", m.host), format!("{}/x", m.prefix)),
            (m.host.clone(), "/".to_string()),
        ] {
            let path = target.split('?').next().unwrap().to_string();
            assert_no_route(&get(&gw, Some(&host), &target), &path, &format!("{what}: Host {host} GET {target}"));
        }
    }

    let t = Instant::now();
    for m in &made {
        for i in 0..m.instances.len() {
            consul.deregister(&format!("{}-{i}", m.name));
        }
    }
    let last = Instant::now();
    propagates(t, SETTLE_WITHIN, "20 random services deregistered -> every route 404", || {
        let left: Vec<&str> = made
            .iter()
            .filter(|m| get(&gw, Some(&m.host), &format!("{}/x", m.prefix)).status != 404)
            .map(|m| m.name.as_str())
            .collect();
        left.is_empty().then_some(()).ok_or_else(|| format!("still routed: {left:?}"))
    });
    eprintln!("[routes] ... of which after the last deregistration: {:?}", last.elapsed());
    assert!(routes(&gw).is_empty(), "{:?}", routes(&gw));
    for m in &made {
        let target = format!("{}/x", m.prefix);
        assert_no_route(&get(&gw, Some(&m.host), &target), &target, &m.name);
        assert_eq!(log_count(&gw, &[&format!("route added: {}{} -> {} (", m.host, m.prefix, m.name)]), 1, "{}", m.name);
        assert_eq!(
            log_count(&gw, &[&format!("route removed: {}{} -> {} (", m.host, m.prefix, m.name)]),
            1,
            "{}",
            m.name
        );
    }
}

/// What a registration says (an instance's address, its `gateway-protocol` metadata) is logged
/// escaped: a newline in it cannot start a log line of its own (a forged one) in the gateway's log.
#[test]
fn a_registration_cannot_forge_log_lines() {
    let consul = Consul::start();
    let gw = Gateway::start(&consul, "", &[]);
    let forged = "2026-12-01T00:00:00.000000Z  INFO FORGED";
    consul.register_json(json!({"ID": "forge-1", "Name": "forge", "Address": format!("x\n{forged} address"),
        "Port": 1, "Tags": ["gateway"]}));
    consul.register_json(json!({"ID": "forge-2", "Name": "forge", "Address": "127.0.0.1", "Port": 2,
        "Tags": ["gateway"], "Meta": {"gateway-protocol": format!("h9\n{forged} metadata")}}));
    gw.proc.wait_for_log("not usable in a URL", 0, Duration::from_secs(15));
    gw.proc.wait_for_log("metadata is not h2c, grpc or http", 0, Duration::from_secs(15));
    let forged_lines: Vec<String> =
        gw.proc.logs().into_iter().filter(|l| l.contains("FORGED") && !l.contains("WARN")).collect();
    assert!(forged_lines.is_empty(), "lines of the gateway's log written by a registration: {forged_lines:?}");
}
