//! WebSocket echo throughput, for bench/ws.py (not a test).
//!
//! ```text
//! ws-bench echo                      # a WebSocket echo instance on a free loopback port;
//!                                    # prints "listening <port>", serves until killed
//! ws-bench client <url> <size> <seconds> <connections>
//! ```
//!
//! The client opens `connections` WebSockets to `url` (`ws://127.0.0.1:port/path`) and on each
//! sends one binary message of `size` bytes, waits for its echo, and again, for `seconds`. It
//! prints one JSON line: messages echoed, seconds, messages/s, and MB/s of payload (each way).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("echo") => {
            let echo = e2e::WsEcho::start();
            println!("listening {}", echo.port);
            loop {
                std::thread::park();
            }
        }
        Some("client") if args.len() == 5 => {
            let parsed = (args[2].parse::<usize>(), args[3].parse::<f64>(), args[4].parse::<usize>());
            let (Ok(size), Ok(seconds), Ok(connections)) = parsed else {
                usage();
            };
            client(&args[1], size, Duration::from_secs_f64(seconds), connections);
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: ws-bench echo | ws-bench client <url> <size> <seconds> <connections>");
    std::process::exit(2);
}

fn client(url: &str, size: usize, duration: Duration, connections: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (echoed, elapsed) = rt.block_on(async {
        let mut sockets = Vec::new();
        for _ in 0..connections {
            match tokio_tungstenite::connect_async(url).await {
                Ok((ws, _)) => sockets.push(ws),
                Err(e) => {
                    eprintln!("ws-bench: cannot open {url}: {e}");
                    std::process::exit(1);
                }
            }
        }
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = sockets
            .into_iter()
            .map(|mut ws| {
                let payload = payload.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        if ws.send(Message::binary(payload.clone())).await.is_err() {
                            break;
                        }
                        match ws.next().await {
                            Some(Ok(Message::Binary(b))) if b.len() == payload.len() => n += 1,
                            other => {
                                eprintln!("ws-bench: unexpected answer: {other:?}");
                                std::process::exit(1);
                            }
                        }
                    }
                    let _ = ws.close(None).await;
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        (total, started.elapsed())
    });
    let secs = elapsed.as_secs_f64();
    let mb = (echoed as f64) * (size as f64) / 1e6;
    println!(
        "{{\"messages\": {echoed}, \"seconds\": {secs:.3}, \"messages_per_s\": {:.0}, \"mb_per_s\": {:.1}}}",
        echoed as f64 / secs,
        mb / secs
    );
}
