//! The access log and request IDs with the real gateway (issue 12, parts 2, 3 and 5): JSON lines
//! parsed field by field for known requests, IDs kept or made and seen by the client, the
//! instance and the log, the gateway's own 5xx carrying the ID in its body and logged once, and
//! the file reopened after logrotate's rename and SIGHUP.

// Tests: a failed unwrap is a failed test, with its line.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use e2e::{free_port, http, signal, wait_for, Consul, Echo, Echoed, Gateway};

/// The access log's lines now, parsed, by request ID.
fn lines_by_id(path: &Path) -> HashMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .map(|v| (v["request_id"].as_str().expect("request_id").to_string(), v))
        .collect()
}

/// Sends a request; its status, its `X-Request-Id` and its body as JSON.
fn send(req: reqwest::blocking::RequestBuilder) -> (u16, String, serde_json::Value) {
    let resp = req.send().expect("an answer");
    let status = resp.status().as_u16();
    let id = resp.headers().get("x-request-id").expect("every response has X-Request-Id").to_str().unwrap();
    let id = id.to_string();
    let body = resp.bytes().unwrap();
    (status, id, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[test]
fn json_lines_name_every_request_and_ids_go_everywhere() {
    let consul = Consul::start();
    let echo = Echo::start();
    consul.register("echo", "echo-1", echo.port);
    // Two instances that refuse connections: a 502 after one retry.
    let dead = [free_port(), free_port()];
    for (i, port) in dead.iter().enumerate() {
        consul.register("dead", &format!("dead-{i}"), *port);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let log_arg = log.to_str().unwrap();
    let gw = Gateway::start(&consul, "echo,dead,empty", &["--access-log", "json", "--access-log-file", log_arg]);
    let client = http();

    // The client's ID is kept, reaches the instance and comes back.
    let (status, id, body) = send(client.get(gw.url("/echo/hello?x=1")).header("x-request-id", "client-abc-1"));
    assert_eq!((status, id.as_str()), (200, "client-abc-1"));
    let seen = Echoed::parse(&body).expect("the echo's answer");
    assert_eq!(seen.header("x-request-id"), Some("client-abc-1"), "{seen:?}");

    // None sent: one is made, and the instance gets the same.
    let (status, generated, body) = send(client.post(gw.url("/echo/upload")).body("hello"));
    assert_eq!(status, 200);
    assert!(is_generated(&generated), "{generated}");
    assert_eq!(Echoed::parse(&body).unwrap().header("x-request-id"), Some(generated.as_str()));

    // A bad one (a space in it) is replaced.
    let (_, replaced, body) = send(client.get(gw.url("/echo/bad")).header("x-request-id", "two words"));
    assert!(is_generated(&replaced), "{replaced}");
    assert_eq!(Echoed::parse(&body).unwrap().header("x-request-id"), Some(replaced.as_str()));

    // The gateway's own answers: 404, 502, 503, each with the ID in the header, and the 5xx in
    // the body too.
    let (status, no_route, body) = send(client.get(gw.url("/nowhere/x")).header("x-request-id", "nr-1"));
    assert_eq!((status, no_route.as_str()), (404, "nr-1"));
    assert!(body.get("request_id").is_none(), "only the gateway's own failures (5xx) carry it: {body}");
    let (status, failed, body) = send(client.get(gw.url("/dead/x")).header("x-request-id", "dead-1"));
    assert_eq!((status, failed.as_str()), (502, "dead-1"));
    assert_eq!((body["request_id"].as_str(), body["service"].as_str()), (Some("dead-1"), Some("dead")), "{body}");
    let (status, empty, body) = send(client.get(gw.url("/empty/x")));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["request_id"].as_str(), Some(empty.as_str()));

    let lines = wait_for(Duration::from_secs(5), "six access log lines", || {
        let l = lines_by_id(&log);
        (l.len() == 6).then_some(l)
    });
    let ok = &lines["client-abc-1"];
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/echo/hello?x=1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "/echo");
    assert_eq!(ok["service"], "echo");
    assert_eq!(ok["instance"], format!("127.0.0.1:{}", echo.port));
    assert_eq!(ok["retries"], 0);
    assert_eq!(ok["bytes_in"], 0);
    assert!(ok["bytes_out"].as_u64().unwrap() > 0, "{ok}");
    assert!(ok["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{ok}");
    assert!(ok["time"].as_str().unwrap().ends_with('Z'), "{ok}");
    let d = ok["duration_seconds"].as_f64().unwrap();
    assert!(d > 0.0 && d < 5.0, "{ok}");

    let up = &lines[&generated];
    assert_eq!(
        (up["method"].as_str(), up["bytes_in"].as_u64(), up["status"].as_u64()),
        (Some("POST"), Some(5), Some(200))
    );

    let nr = &lines["nr-1"];
    assert_eq!(
        (nr["status"].as_u64(), nr["route"].is_null(), nr["service"].is_null()),
        (Some(404), true, true),
        "{nr}"
    );
    assert!(nr["instance"].is_null() && nr["bytes_out"].as_u64().unwrap() > 0, "{nr}");

    let bad = &lines["dead-1"];
    assert_eq!(
        (bad["status"].as_u64(), bad["service"].as_str(), bad["retries"].as_u64()),
        (Some(502), Some("dead"), Some(1))
    );
    let last = bad["instance"].as_str().unwrap();
    assert!(dead.iter().any(|p| last == format!("127.0.0.1:{p}")), "{bad}");

    assert_eq!((lines[&empty]["status"].as_u64(), lines[&empty]["service"].as_str()), (Some(503), Some("empty")));
    assert!(lines[&empty]["instance"].is_null());

    // The 502 is logged once, at WARN, with route, service, instance and ID; the earlier attempt
    // (its instance ejected) has its own line.
    let (attempts, failures): (Vec<String>, Vec<String>) = gw
        .proc
        .logs()
        .into_iter()
        .filter(|l| l.contains("request_id=dead-1"))
        .partition(|l| l.contains("trying another instance"));
    assert_eq!((attempts.len(), failures.len()), (1, 1), "{attempts:#?} {failures:#?}");
    let w = &failures[0];
    assert!(w.contains("WARN") && w.contains("route=\"/dead\"") && w.contains(last), "{w}");
    assert!(!attempts[0].contains(last), "the earlier attempt went to the other instance: {attempts:#?}");
}

#[test]
fn sighup_reopens_the_access_log_after_a_rename() {
    let consul = Consul::start();
    let echo = Echo::start();
    consul.register("echo", "echo-1", echo.port);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let gw = Gateway::start(&consul, "echo", &["--access-log", "text", "--access-log-file", log.to_str().unwrap()]);
    let client = http();
    let get = |id: &str| {
        let resp = client.get(gw.url("/echo/x")).header("x-request-id", id).send().unwrap();
        assert_eq!(resp.status(), 200);
    };
    get("before-rotation");
    wait_for(Duration::from_secs(5), "the first line", || {
        std::fs::read_to_string(&log).ok().filter(|t| t.contains("request_id=before-rotation"))
    });
    std::fs::rename(&log, &rotated).unwrap();
    signal(gw.proc.pid(), "HUP");
    let mut n = 0;
    let text = wait_for(Duration::from_secs(5), "a line in a new file", || {
        n += 1;
        get(&format!("after-{n}"));
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&log).ok().filter(|t| t.contains("request_id=after-"))
    });
    assert!(!text.contains("before-rotation"), "{text}");
    let line = text.lines().next().unwrap();
    assert!(line.contains("\"GET /echo/x HTTP/1.1\" 200 0 ") && line.contains(" route=/echo service=echo "), "{line}");
    assert!(std::fs::read_to_string(&rotated).unwrap().contains("request_id=before-rotation"));
    assert!(e2e::is_running(gw.proc.pid()), "SIGHUP does not stop the gateway");
}
