//! gRPC end to end (issue 11): a real gRPC server (Python grpcio) registered in a real Consul
//! agent, the real gateway and its watcher, and a real gRPC client calling through the gateway's
//! public listener (h2c with prior knowledge). The gateway speaks HTTP/2 cleartext to the
//! instance because the route tag says `proto=grpc`, or because the instance's
//! `gateway-protocol` metadata does. Without grpcio the tests fail, saying how to install it.

use std::time::Duration;

use e2e::grpc::{run_client, GrpcServer};
use e2e::{Consul, Gateway};
use serde_json::{json, Value};

/// What the client must have seen through the gateway: see `tests/python/grpc_peer.py`.
fn assert_grpc_works(seen: &Value) {
    assert_eq!(seen["unary"], "echo:hello", "a unary call: {seen}");
    // Server streaming: four messages, sent 300 ms apart, arrive as sent (not buffered to the end).
    let stream = seen["stream"].as_array().unwrap_or_else(|| panic!("no stream: {seen}"));
    let msgs: Vec<&str> = stream.iter().filter_map(|m| m["msg"].as_str()).collect();
    assert_eq!(msgs, ["msg 0", "msg 1", "msg 2", "msg 3"], "{seen}");
    let at: Vec<f64> = stream.iter().filter_map(|m| m["at"].as_f64()).collect();
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap > 0.15, "messages sent 300 ms apart arrived {gap:.3} s apart: buffered? {seen}");
    }
    assert!(seen.get("stream_error").is_none(), "{seen}");
    // grpc-status and grpc-message come in trailers: the client sees them only if they went through.
    assert_eq!(seen["fail"], json!({"code": "PERMISSION_DENIED", "details": "no entry for mallory"}), "{seen}");
    // The server sleeps 3 s; the client's 0.5 s deadline ends the call, promptly.
    assert_eq!(seen["slow"]["code"], "DEADLINE_EXCEEDED", "{seen}");
    let elapsed = seen["slow"]["elapsed"].as_f64().unwrap_or(f64::MAX);
    assert!(elapsed < 1.5, "the deadline took {elapsed} s");
    // And the instance stopped working on it: the call ended for it too (the deadline forwarded
    // in `grpc-timeout`, or the stream reset through the gateway).
    assert_eq!(seen["slow"]["server_saw_end"], "yes", "{seen}");
    // `grpc-timeout` reaches the instance: a 7 s deadline leaves it about 7 s (grpc rounds it
    // up a little when it encodes it); without the header it would see none.
    let left: f64 = seen["remaining"].as_str().and_then(|r| r.parse().ok()).unwrap_or(-1.0);
    assert!((5.0..=7.5).contains(&left), "the instance saw {left} s left of a 7 s deadline: {seen}");
}

/// Registers `server` as `name` with `tags` and `meta`, starts a gateway following tags (with
/// `extra` arguments), and waits for the route `/service` to be added.
fn routed_with(
    consul: &Consul,
    name: &str,
    service: &str,
    server: &GrpcServer,
    tags: &[&str],
    meta: Value,
    extra: &[&str],
) -> Gateway {
    consul.register_json(json!({
        "ID": format!("{name}-1"), "Name": name, "Address": "127.0.0.1", "Port": server.port,
        "Tags": tags, "Meta": meta,
    }));
    let gw = Gateway::start(consul, "", extra);
    gw.proc.wait_for_log(&format!("route added: /{service} -> {name}"), 0, Duration::from_secs(15));
    gw
}

fn routed(consul: &Consul, name: &str, service: &str, server: &GrpcServer, tags: &[&str], meta: Value) -> Gateway {
    routed_with(consul, name, service, server, tags, meta, &[])
}

#[test]
fn grpc_calls_go_through_a_route_tagged_proto_grpc() {
    let consul = Consul::start();
    let server = GrpcServer::start("test.Echo");
    let gw = routed(&consul, "echo-grpc", "test.Echo", &server, &["urlprefix-/test.Echo proto=grpc"], json!({}));
    let seen = run_client(&format!("127.0.0.1:{}", gw.port), "test.Echo");
    println!("through the gateway: {seen}");
    assert_grpc_works(&seen);
}

#[test]
fn grpc_calls_go_through_to_an_instance_whose_metadata_says_grpc() {
    let consul = Consul::start();
    let server = GrpcServer::start("test.Meta");
    let meta = json!({"gateway-protocol": "grpc"});
    let gw = routed(&consul, "meta-grpc", "test.Meta", &server, &["urlprefix-/test.Meta"], meta);
    let seen = run_client(&format!("127.0.0.1:{}", gw.port), "test.Meta");
    println!("through the gateway: {seen}");
    assert_grpc_works(&seen);
}

#[test]
fn a_grpc_call_answered_after_the_upstream_timeout_but_within_its_deadline_succeeds() {
    let consul = Consul::start();
    let server = GrpcServer::start("test.Late");
    let tags = &["urlprefix-/test.Late proto=grpc"];
    // grpcio sends its response headers with the answer, 3 s after the call: past the upstream
    // timeout, within the client's 10 s deadline (`grpc-timeout`).
    let gw = routed_with(&consul, "late-grpc", "test.Late", &server, tags, json!({}), &["--upstream-timeout", "1s"]);
    let seen = run_client(&format!("127.0.0.1:{}", gw.port), "test.Late");
    println!("through the gateway: {seen}");
    assert_grpc_works(&seen);
    assert_eq!(seen["late"]["reply"], "too late", "{seen}");
    // The gateway's own error is a gRPC status with a message, not an HTTP status.
    assert_eq!(seen["no_route"], json!({"code": "UNIMPLEMENTED", "details": "no route: /nope.Nothing/Call"}), "{seen}");
}
