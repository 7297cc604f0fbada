//! The gateway's front side (issue 11): HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 on the
//! same port, with curl as the client and echo instances that tell what they received.

use std::process::Command;
use std::time::Duration;

use e2e::{get_json, http, wait_for, Consul, Echo, Echoed, Gateway};

/// What curl got: the HTTP version it spoke, the status, and the body.
#[derive(Debug)]
pub struct Curled {
    /// `1.1` or `2`.
    pub version: String,
    /// The status code.
    pub status: u16,
    /// The body (of every transfer, with their write-out lines but the last).
    pub body: String,
}

impl Curled {
    /// The echo instance's view of the request.
    pub fn echo(&self) -> Echoed {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"));
        Echoed::parse(&v).unwrap_or_else(|| panic!("not an echo answer: {self:?}"))
    }
}

/// Runs curl with `args` (`-sS`, a 10 s bound and the write-out added). Panics when curl is
/// missing or fails to connect: the test cannot run without it.
pub fn curl(args: &[&str]) -> Curled {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_version} %{http_code}"])
        .args(args)
        .output()
        .expect("curl is needed for this test (apt-get install curl)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').expect("write-out line");
    let (version, status) = tail.split_once(' ').expect("version and status");
    Curled { version: version.to_string(), status: status.parse().expect("status"), body: body.to_string() }
}

/// Consul with one echo instance of `web`, and a gateway routing /web/* to it.
pub fn setup(extra: &[&str]) -> (Consul, Echo, Gateway) {
    let consul = Consul::start();
    let echo = Echo::start();
    consul.register("web", "web-1", echo.port);
    let gw = Gateway::start(&consul, "web", extra);
    let client = http();
    wait_for(Duration::from_secs(10), "web's instance in /services", || {
        let (_, v) = get_json(&client, &gw.admin("/services")).ok()?;
        (v["services"][0]["instances"].as_array()?.len() == 1).then_some(())
    });
    (consul, echo, gw)
}

#[test]
fn http2_prior_knowledge_and_http1_are_served_on_the_same_port() {
    let (_consul, echo, gw) = setup(&[]);
    let url = gw.url("/web/a/b?c=1");

    let h2 = curl(&["--http2-prior-knowledge", "-H", "x-test: h2", &url]);
    assert_eq!((h2.version.as_str(), h2.status), ("2", 200), "{h2:?}");
    let seen = h2.echo();
    assert_eq!((seen.port, seen.path.as_str()), (echo.port, "/a/b?c=1"));
    // h2 carries :authority, not Host: the instance still gets a Host, and the client's authority.
    assert_eq!(seen.header("host"), Some(format!("127.0.0.1:{}", echo.port).as_str()), "{seen:?}");
    assert_eq!(seen.header("x-forwarded-host"), Some(format!("127.0.0.1:{}", gw.port).as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-test"), Some("h2"));

    let h1 = curl(&["--http1.1", &url]);
    assert_eq!((h1.version.as_str(), h1.status), ("1.1", 200), "{h1:?}");
    assert_eq!(h1.echo().header("host"), Some(format!("127.0.0.1:{}", echo.port).as_str()));

    // Concurrent streams on one h2 connection, with request bodies (curl 7.88's `-Z` with
    // prior knowledge fails on its own side, so reqwest's h2 client makes them).
    let client =
        reqwest::blocking::Client::builder().http2_prior_knowledge().timeout(Duration::from_secs(10)).build().unwrap();
    let answers: Vec<(reqwest::Version, u16, String)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let (client, url) = (&client, gw.url(&format!("/web/n{i}")));
                s.spawn(move || {
                    let resp = client.post(url).body(format!("body {i}")).send().unwrap();
                    for h in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
                        assert!(resp.headers().get(h).is_none(), "no {h} over HTTP/2");
                    }
                    (resp.version(), resp.status().as_u16(), resp.text().unwrap())
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (i, (version, status, body)) in answers.iter().enumerate() {
        assert_eq!((*version, *status), (reqwest::Version::HTTP_2, 200), "{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!((v["method"].as_str(), v["path"].as_str()), (Some("POST"), Some(format!("/n{i}").as_str())));
    }
}

#[test]
fn connection_specific_headers_of_an_instance_do_not_reach_http2_clients() {
    let consul = Consul::start();
    // An instance that sends `Keep-Alive: timeout=5` (and HTTP/1.1 keep-alive framing).
    let backend = e2e::Backend::start(Duration::from_secs(30), Some("timeout=5"));
    consul.register("ka", "ka-1", backend.port);
    let gw = Gateway::start(&consul, "ka", &[]);
    let client =
        reqwest::blocking::Client::builder().http2_prior_knowledge().timeout(Duration::from_secs(10)).build().unwrap();
    let resp = wait_for(Duration::from_secs(10), "ka routed", || {
        let r = client.get(gw.url("/ka/x")).send().ok()?;
        (r.status() == 200).then_some(r)
    });
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    for h in ["connection", "keep-alive", "transfer-encoding"] {
        assert!(resp.headers().get(h).is_none(), "{h} must not reach an HTTP/2 client: {:?}", resp.headers());
    }
    assert_eq!(resp.text().unwrap(), "GET /x");
}
