//! Upgrades and streaming through the real gateway and a real Consul: a WebSocket echo (text,
//! binary, the close handshake), an idle tunnel closed after `--tunnel-idle-timeout`, a refused
//! connect before the `101` retried on another instance, an upgrade answered with a plain `200`,
//! and a response streamed one byte per 100 ms that reaches the client as it is written; an open
//! tunnel's connections in `gateway_open_connections`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::ws::{self, WsClient};
use e2e::{http, wait_for, Consul, Drip, Echo, Echoed, Gateway, WsEcho};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

/// A gateway routing `/ws/*` to `ports` (registered as service `ws`), once it knows them all.
fn gateway_for(consul: &Consul, ports: &[u16], extra: &[&str]) -> Gateway {
    for (i, port) in ports.iter().enumerate() {
        consul.register("ws", &format!("ws-{i}"), *port);
    }
    let gw = Gateway::start(consul, "ws", extra);
    for port in ports {
        // One "added" line names them all.
        gw.proc.wait_for_log(&format!(" 127.0.0.1:{port}"), 0, Duration::from_secs(10));
    }
    gw
}

fn ws_url(gw: &Gateway, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", gw.port)
}

/// Sends one message and expects it back as sent.
fn round_trip(client: &mut WsClient, msg: Message) {
    client.send(msg.clone()).unwrap();
    assert_eq!(client.recv(WAIT).unwrap(), Some(msg));
}

#[test]
fn a_websocket_echo_goes_through_the_gateway() {
    let consul = Consul::start();
    let echo = WsEcho::start();
    let gw = gateway_for(&consul, &[echo.port], &[]);
    let mut client = ws::connect(&ws_url(&gw, "/ws/chat?room=1")).expect("handshake through the gateway");
    assert_eq!(client.response.status().as_u16(), 101);
    let headers = client.response.headers();
    assert_eq!(headers["upgrade"].to_str().unwrap().to_ascii_lowercase(), "websocket");
    assert_eq!(headers["connection"].to_str().unwrap().to_ascii_lowercase(), "upgrade");
    assert!(headers.contains_key("sec-websocket-accept"), "the instance's accept key, checked by the client");

    round_trip(&mut client, Message::text("hello"));
    round_trip(&mut client, Message::binary(vec![0u8, 1, 2, 255]));
    // Larger than any one read or write of the tunnel (8 KiB buffers), in both kinds.
    round_trip(&mut client, Message::binary((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>()));
    round_trip(&mut client, Message::text("é".repeat(40_000)));
    for i in 0..100 {
        round_trip(&mut client, Message::text(format!("message {i}")));
    }
    assert!(client.close(WAIT), "the instance's close reply comes back through the tunnel");
    assert_eq!(echo.handshakes(), 1);
}

/// `gateway_open_connections{side="client"}`, `{side="upstream"}` and `gateway_websocket_tunnels`.
fn open_gauges(gw: &Gateway) -> [i64; 3] {
    let text = http().get(gw.admin("/metrics")).send().unwrap().text().unwrap();
    let value = |series: &str| {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap()
    };
    [
        value("gateway_open_connections{side=\"client\"} "),
        value("gateway_open_connections{side=\"upstream\"} "),
        value("gateway_websocket_tunnels "),
    ]
}

#[test]
fn an_open_tunnel_counts_as_a_client_and_an_upstream_connection() {
    let consul = Consul::start();
    let echo = WsEcho::start();
    let gw = gateway_for(&consul, &[echo.port], &[]);
    let mut client = ws::connect(&ws_url(&gw, "/ws/chat")).expect("handshake through the gateway");
    round_trip(&mut client, Message::text("hello"));
    // hyper has handed both connections over to the tunnel by now: they are still open.
    wait_for(WAIT, "the tunnel's connections in the gauges", || (open_gauges(&gw) == [1, 1, 1]).then_some(()));
    assert!(client.close(WAIT));
    drop(client);
    wait_for(WAIT, "every gauge back to 0", || (open_gauges(&gw) == [0, 0, 0]).then_some(()));
}

#[test]
fn an_idle_tunnel_is_closed_after_the_tunnel_idle_timeout() {
    let consul = Consul::start();
    let echo = WsEcho::start();
    let gw = gateway_for(&consul, &[echo.port], &["--tunnel-idle-timeout", "1s"]);
    let mut client = ws::connect(&ws_url(&gw, "/ws/idle")).unwrap();
    // Traffic every 300 ms for 2.4 s: longer than the timeout, never idle that long.
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        round_trip(&mut client, Message::text(format!("{i}")));
    }
    let quiet = Instant::now();
    let ended = client.recv(Duration::from_secs(10));
    let after = quiet.elapsed();
    assert_eq!(ended, Ok(None), "the gateway closed the tunnel");
    assert!(after >= Duration::from_millis(900), "not before the timeout: {after:?}");
    assert!(after < Duration::from_secs(4), "soon after the timeout: {after:?}");
}

#[test]
fn a_refused_connect_before_the_101_goes_to_another_instance() {
    let consul = Consul::start();
    let echo = WsEcho::start();
    let dead = e2e::free_port();
    let gw = gateway_for(&consul, &[dead, echo.port], &[]);
    // Random picks: go on until the dead instance was picked once (the log says so), each
    // handshake still succeeding.
    let mut opened = 0;
    for i in 0..40 {
        let mut client = ws::connect(&ws_url(&gw, "/ws/retry")).unwrap_or_else(|e| panic!("handshake {i}: {e}"));
        round_trip(&mut client, Message::text(format!("retry {i}")));
        opened += 1;
        if gw.proc.log_text().contains("trying another instance") {
            break;
        }
    }
    assert!(gw.proc.log_text().contains("trying another instance"), "the dead instance was never picked");
    assert_eq!(echo.handshakes(), opened, "every handshake reached the live instance");
}

/// Sends `request` on a new connection to `port`; the status code, headers (lowercased names)
/// and `Content-Length` body of the answer.
fn raw_exchange(port: u16, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    (&conn).write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    (code, headers, body)
}

#[test]
fn an_upgrade_answered_with_a_200_is_an_ordinary_response() {
    let consul = Consul::start();
    let echo = Echo::start();
    let gw = gateway_for(&consul, &[echo.port], &[]);
    let request = "GET /ws/no-upgrade HTTP/1.1\r\nhost: gw.test\r\nconnection: keep-alive, Upgrade, x-hop\r\n\
                   upgrade: websocket\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nsec-websocket-version: 13\r\n\
                   sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (code, headers, body) = raw_exchange(gw.port, request);
    assert_eq!(code, 200);
    assert!(!headers.iter().any(|(n, _)| n == "upgrade"), "{headers:?}");
    let echoed = Echoed::parse(&serde_json::from_slice(&body).unwrap()).expect("the instance's answer");
    assert_eq!(echoed.path, "/no-upgrade");
    assert_eq!(echoed.header("connection"), Some("upgrade"), "only the upgrade option goes upstream");
    assert_eq!(echoed.header("upgrade"), Some("websocket"), "the client's protocol");
    assert_eq!(echoed.header("sec-websocket-key"), Some("dGhlIHNhbXBsZSBub25jZQ=="));
    assert_eq!(echoed.header("x-hop"), None, "named in Connection: hop-by-hop");
    assert_eq!(echoed.header("keep-alive"), None);

    // Without the `upgrade` option in Connection it is no upgrade: Upgrade stays on its hop.
    let plain = "GET /ws/plain HTTP/1.1\r\nhost: gw.test\r\nupgrade: websocket\r\n\r\n";
    let (code, _, body) = raw_exchange(gw.port, plain);
    assert_eq!(code, 200);
    let echoed = Echoed::parse(&serde_json::from_slice(&body).unwrap()).unwrap();
    assert_eq!((echoed.header("upgrade"), echoed.header("connection")), (None, None));
}

#[test]
fn a_streamed_response_reaches_the_client_as_the_instance_writes_it() {
    let consul = Consul::start();
    let drip = Drip::start(10, Duration::from_millis(100));
    let gw = gateway_for(&consul, &[drip.port], &[]);
    let (status, body, arrived) = e2e::drip::get_timed(gw.port, "/ws/events", WAIT);
    let written = drip.written();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"0123456789");
    assert_eq!(written.len(), 10);
    // Bounds for a loaded 2-core machine; a buffering proxy misses them by most of a second.
    let lags: Vec<Duration> = arrived.iter().zip(&written).map(|(a, w)| a.saturating_duration_since(*w)).collect();
    assert!(lags.iter().all(|l| *l < Duration::from_millis(300)), "each byte soon after it was written: {lags:?}");
    assert!(arrived[0] + Duration::from_millis(500) < written[9], "the first byte came before the last was written");
    assert!(arrived[9] - arrived[0] >= Duration::from_millis(600), "spread over time, not in one lump");
}
