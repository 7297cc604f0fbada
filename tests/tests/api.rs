//! The register/discover API (`/v1/` on the admin listener, docs/api/openapi.yaml) against a real
//! Consul agent and the real gateway: an instance registered through the API is routed to, kept
//! by heartbeats, leaves routing when they stop, and is gone when deleted; bad input and bad
//! tokens are refused and register nothing; the discover calls answer from the gateway's cache
//! while Consul is down; and schemathesis, run against the running gateway with the OpenAPI
//! document, finds no failure.
//!
//! schemathesis comes from the project's Python venv (`scripts/install-python-deps.sh`, found as
//! the gRPC tests find their Python: `GRPC_PYTHON`, then `<repo>/.tools/pyenv`).

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{get_json, http, wait_for, Consul, Echo, Gateway};
use serde_json::{json, Value};

const TOKEN: &str = "e2e-api-token-5f2c81";

/// A gateway with the API on (token from a file), following `apiweb` statically.
struct Setup {
    consul: Consul,
    gw: Gateway,
    _dir: tempfile::TempDir,
}

fn start() -> Setup {
    let consul = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let gw = Gateway::start(&consul, "apiweb", &["--api-token-file", file.to_str().unwrap()]);
    Setup { consul, gw, _dir: dir }
}

/// One API call: the status, the body as JSON, and the `WWW-Authenticate` header.
fn call(gw: &Gateway, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value, String) {
    let mut req = http().request(method.parse().unwrap(), gw.admin(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let auth = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = resp.text().unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path} answered {status} not JSON: {text}"));
    (status, body, auth)
}

fn registration(id: &str, port: u16, ttl: &str) -> Value {
    json!({"service": "apiweb", "id": id, "address": "127.0.0.1", "port": port, "ttl": ttl,
           "tags": ["v1"], "meta": {"owner": "e2e"}})
}

/// The port of the echo instance that answered `/apiweb/` through the public listener, or the
/// status when no instance answered.
fn routed(gw: &Gateway) -> Result<u16, u16> {
    match get_json(&http(), &gw.url("/apiweb/x")) {
        Ok((200, v)) => Ok(v["port"].as_u64().unwrap() as u16),
        Ok((status, _)) => Err(status),
        Err(_) => Err(0),
    }
}

#[test]
fn an_instance_registered_through_the_api_is_routed_kept_and_removed() {
    let s = start();
    let echo = Echo::start();
    let (status, body, _) =
        call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&registration("apiweb-1", echo.port, "30s")));
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["id"].as_str(), body["registry"].as_str()), (Some("apiweb-1"), Some("consul")));
    let t = Instant::now();
    wait_for(Duration::from_secs(10), "the registered instance to be routed", || {
        (routed(&s.gw) == Ok(echo.port)).then_some(())
    });
    eprintln!("routable {:?} after registering", t.elapsed());
    let agent = s.consul.agent_services().unwrap();
    assert_eq!(agent["apiweb-1"]["Meta"]["owner"], "e2e");

    let (status, body, _) = call(&s.gw, "PUT", "/v1/instances/apiweb-1/heartbeat", Some(TOKEN), None);
    assert_eq!((status, body["status"].as_str()), (200, Some("passing")));
    let (status, body, _) = call(&s.gw, "GET", "/v1/services/apiweb", Some(TOKEN), None);
    assert_eq!(status, 200);
    assert_eq!(body["instances"][0]["id"], "apiweb-1", "{body}");
    assert_eq!(body["stale"], false);

    let (status, body, _) = call(&s.gw, "DELETE", "/v1/instances/apiweb-1", Some(TOKEN), None);
    assert_eq!((status, body["deregistered"].as_bool()), (200, Some(true)));
    wait_for(Duration::from_secs(10), "the deleted instance to leave routing", || routed(&s.gw).is_err().then_some(()));
    assert!(!s.consul.agent_services().unwrap().contains_key("apiweb-1"));
    for (method, path) in [("DELETE", "/v1/instances/apiweb-1"), ("PUT", "/v1/instances/apiweb-1/heartbeat")] {
        let (status, body, _) = call(&s.gw, method, path, Some(TOKEN), None);
        assert_eq!(status, 404, "{method} {path} after the delete: {body}");
    }
}

#[test]
fn instances_not_registered_through_the_api_are_left_alone() {
    let s = start();
    // Registered on the agent by someone else (the registrator, serviceweb, a config file).
    s.consul.register_ttl("apiweb", "theirs-1", 8080, "passing");
    let theirs = || s.consul.agent_services().unwrap().get("theirs-1").cloned();
    assert!(theirs().is_some());
    let (status, body, _) = call(&s.gw, "DELETE", "/v1/instances/theirs-1", Some(TOKEN), None);
    assert_eq!(status, 409, "{body}");
    let (status, body, _) = call(&s.gw, "PUT", "/v1/instances/theirs-1/heartbeat", Some(TOKEN), None);
    assert_eq!(status, 409, "{body}");
    let (status, body, _) =
        call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&registration("theirs-1", 9090, "10s")));
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("theirs-1"), "{body}");
    let after = theirs().expect("still registered");
    assert_eq!((after["Port"].as_u64(), after["Meta"].get("owner")), (Some(8080), None), "unchanged: {after}");
    // The API's own mark cannot be forged by a client.
    let mut forged = registration("mine-1", 9090, "10s");
    forged["meta"] = json!({"gateway-api": "true"});
    let (status, body, _) = call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&forged));
    assert_eq!((status, body["field"].as_str()), (400, Some("meta")), "{body}");
    // Its own instances it replaces, renews and removes.
    for _ in 0..2 {
        let (status, body, _) =
            call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&registration("mine-1", 9090, "10s")));
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(call(&s.gw, "PUT", "/v1/instances/mine-1/heartbeat", Some(TOKEN), None).0, 200);
    assert_eq!(call(&s.gw, "DELETE", "/v1/instances/mine-1", Some(TOKEN), None).0, 200);
}

#[test]
fn bad_input_and_bad_tokens_are_refused_and_register_nothing() {
    let s = start();
    let good = registration("apiweb-bad", 8080, "10s");
    let cases: Vec<(&str, Value)> = vec![
        ("service", json!(null)),
        ("service", json!("a/b")),
        ("service", json!(7)),
        ("id", json!("")),
        ("id", json!("x".repeat(129))),
        ("address", json!("not an address")),
        ("port", json!(0)),
        ("port", json!(65536)),
        ("port", json!("80")),
        ("ttl", json!("0s")),
        ("ttl", json!("25h")),
        ("ttl", json!(10)),
        ("tags", json!("v1")),
        ("meta", json!({"consul-x": "y"})),
    ];
    for (field, value) in cases {
        let mut body = good.clone();
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value.clone();
        }
        let (status, answer, _) = call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&body));
        assert_eq!((status, answer["field"].as_str()), (400, Some(field)), "{field} = {value}: {answer}");
        assert!(answer["error"].is_string());
    }
    // Not JSON, and too large.
    let url = s.gw.admin("/v1/instances");
    let resp =
        http().put(&url).bearer_auth(TOKEN).header("content-type", "text/plain").body(good.to_string()).send().unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let big = format!("{{\"service\": \"{}\"}}", "a".repeat(70 * 1024));
    let resp = http().put(&url).bearer_auth(TOKEN).header("content-type", "application/json").body(big).send().unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert!(!s.consul.agent_services().unwrap().contains_key("apiweb-bad"), "nothing registered");

    for token in [None, Some("wrong-token"), Some(&TOKEN[..TOKEN.len() - 1])] {
        for (method, path) in
            [("GET", "/v1/services"), ("PUT", "/v1/instances"), ("DELETE", "/v1/instances/apiweb-bad")]
        {
            let (status, body, auth) = call(&s.gw, method, path, token, Some(&good));
            assert_eq!((status, auth.as_str()), (401, "Bearer"), "{method} {path} with {token:?}: {body}");
        }
    }
    assert!(!s.consul.agent_services().unwrap().contains_key("apiweb-bad"), "nothing registered");
    // The token is never logged.
    assert!(!s.gw.proc.log_text().contains(TOKEN), "the gateway logged its API token");

    // Without a token the API is off, and says how to turn it on.
    let off = Gateway::start(&s.consul, "apiweb", &[]);
    let (status, body, _) = call(&off, "GET", "/v1/services", Some(TOKEN), None);
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("--api-token"), "{body}");
}

#[test]
fn an_instance_without_heartbeats_leaves_routing_and_a_heartbeat_brings_it_back() {
    let s = start();
    let echo = Echo::start();
    // The TTL runs from the registration.
    let registered = Instant::now();
    let (status, body, _) =
        call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&registration("apiweb-ttl", echo.port, "2s")));
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(10), "the instance to be routed", || (routed(&s.gw) == Ok(echo.port)).then_some(()));
    // No heartbeat: Consul turns the check critical after 2 s, and the gateway drops it.
    wait_for(Duration::from_secs(15), "the instance without heartbeats to leave routing", || {
        routed(&s.gw).err().map(|status| assert_eq!(status, 503, "no instance left: 503"))
    });
    let gone_after = registered.elapsed();
    eprintln!("left routing {gone_after:?} after it was registered (TTL 2 s)");
    assert!(gone_after >= Duration::from_millis(1900), "gone before its TTL ran out: {gone_after:?}");
    let (_, body, _) = call(&s.gw, "GET", "/v1/services/apiweb", Some(TOKEN), None);
    assert_eq!(body["instances"], json!([]), "{body}");

    // Still registered (critical): a heartbeat makes it routable again.
    let (status, _, _) = call(&s.gw, "PUT", "/v1/instances/apiweb-ttl/heartbeat", Some(TOKEN), None);
    assert_eq!(status, 200);
    wait_for(Duration::from_secs(10), "the instance to be routed after a heartbeat", || {
        (routed(&s.gw) == Ok(echo.port)).then_some(())
    });
}

#[test]
fn discovery_answers_from_the_cache_while_consul_is_down() {
    let mut s = start();
    let echo = Echo::start();
    let (status, _, _) =
        call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&registration("apiweb-d", echo.port, "1h")));
    assert_eq!(status, 200);
    wait_for(Duration::from_secs(10), "the instance to be routed", || (routed(&s.gw) == Ok(echo.port)).then_some(()));
    let (_, body, _) = call(&s.gw, "GET", "/v1/services", Some(TOKEN), None);
    assert_eq!(body["stale"], false, "{body}");

    s.consul.stop();
    let body = wait_for(Duration::from_secs(30), "GET /v1/services to say stale", || {
        let (status, body, _) = call(&s.gw, "GET", "/v1/services", Some(TOKEN), None);
        assert_eq!(status, 200);
        (body["stale"] == true).then_some(body)
    });
    assert!(body["stale_reason"].is_string(), "{body}");
    let web = body["services"].as_array().unwrap().iter().find(|v| v["service"] == "apiweb").unwrap().clone();
    assert_eq!((web["stale"].as_bool(), web["instances"][0]["id"].as_str()), (Some(true), Some("apiweb-d")), "{web}");
    let (status, body, _) = call(&s.gw, "GET", "/v1/services/apiweb", Some(TOKEN), None);
    assert_eq!((status, body["stale"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(routed(&s.gw), Ok(echo.port), "the last known instance is still routed");
    // Writes need the registry: 503, said in JSON.
    let (status, body, _) = call(&s.gw, "PUT", "/v1/instances/apiweb-d/heartbeat", Some(TOKEN), None);
    assert_eq!(status, 503, "{body}");
    let (status, body, _) =
        call(&s.gw, "PUT", "/v1/instances", Some(TOKEN), Some(&registration("apiweb-e", echo.port, "10s")));
    assert_eq!(status, 503, "{body}");
}

/// The schemathesis executable in the project's venv.
fn schemathesis() -> PathBuf {
    let py = std::env::var_os("GRPC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/pyenv/bin/python"));
    let st = py.with_file_name("schemathesis");
    assert!(
        st.exists(),
        "no schemathesis at {} (next to GRPC_PYTHON or in <repo>/.tools/pyenv): run scripts/install-python-deps.sh",
        st.display()
    );
    st
}

/// How long schemathesis may run before it is stopped and the test fails.
const SCHEMATHESIS_LIMIT: Duration = Duration::from_secs(240);

#[test]
fn schemathesis_finds_no_failure() {
    let s = start();
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api/openapi.yaml");
    let report = tempfile::tempdir().unwrap();
    // Every check that holds whatever the data, on a fixed number of examples from a fixed seed.
    // Left out: positive_data_acceptance (the API is stricter than a schema can say: a TTL from
    // 1s to 24h, IPv6 addresses, names "." and ".."), object_level_authorization (one token).
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
        response_headers_conformance,response_schema_conformance,negative_data_rejection,\
        missing_required_header,unsupported_method,allow_header_conformance,use_after_free,\
        ensure_resource_availability,ignored_auth";
    let mut child = Command::new(schemathesis())
        // Its cache (`.schemathesis/`) goes to the temp dir, not the source tree.
        .current_dir(report.path())
        .arg("run")
        .arg(&spec)
        .args(["--url", &s.gw.admin("")])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", checks])
        .args(["--max-examples", "25", "--seed", "20261201", "--workers", "1"])
        .args(["--generation-database", "none", "--request-timeout", "10", "--no-color"])
        .args(["--report", "junit", "--report-dir"])
        .arg(report.path())
        .stdin(Stdio::null())
        // To a file, not a pipe nobody reads while it runs (a full pipe would stall it).
        .stdout(Stdio::from(std::fs::File::create(report.path().join("out.txt")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(report.path().join("err.txt")).unwrap()))
        .spawn()
        .expect("start schemathesis");
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > SCHEMATHESIS_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis ran over {SCHEMATHESIS_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |name: &str| std::fs::read_to_string(report.path().join(name)).unwrap_or_default();
    let text = format!("{}\n{}", read("out.txt"), read("err.txt"));
    eprintln!("schemathesis took {:?}:\n{text}", t.elapsed());
    assert!(status.success(), "schemathesis found failures (exit {status}):\n{text}");
    // All five operations were tested, and the JUnit report names them without a failure.
    assert!(text.contains("Tested: 5"), "schemathesis did not test the five operations:\n{text}");
    let junit: String = std::fs::read_dir(report.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("junit"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(junit.contains("PUT /v1/instances") && !junit.contains("<failure"), "JUnit report:\n{junit}");
    assert_eq!(s.gw.readyz().0, 200, "the gateway is still up and ready");
}
