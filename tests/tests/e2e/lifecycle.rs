//! Process lifecycle: SIGTERM drains and leaves no child behind; a SIGKILLed gateway takes its
//! watcher with it; bad configuration is a clear error.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use e2e::{get_json, http, is_running, signal, wait_for, Consul, Gateway, Proc};

#[test]
fn sigterm_finishes_in_flight_requests_and_leaves_no_child_process() {
    sigterm_drains(&[]);
}

#[test]
fn sigterm_drains_every_worker() {
    sigterm_drains(&["--workers", "3"]);
}

fn sigterm_drains(extra: &[&str]) {
    let consul = Consul::start();
    // A backend that answers after 1 s, to have a request in flight at SIGTERM.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(8) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                std::thread::sleep(Duration::from_secs(1));
                let body = r#"{"slow":true}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    consul.register("slow", "slow-1", port);
    let mut gw = Gateway::start(&consul, "slow", extra);
    let watcher = gw.watcher_pid();
    // Three clients, three connections: with several workers they may land on different ones.
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = gw.url("/slow/x");
            std::thread::spawn(move || get_json(&http(), &url))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    signal(gw.proc.pid(), "TERM");
    for request in in_flight {
        let (status, body) = request.join().unwrap().expect("the in-flight request completes");
        assert_eq!((status, body["slow"].as_bool()), (200, Some(true)));
    }
    let exit = gw.proc.wait_exit(Duration::from_secs(10)).expect("gateway exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
    wait_for(Duration::from_secs(5), "the watcher to be gone", || (!is_running(watcher)).then_some(()));
    assert!(std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err(), "the listener is closed after shutdown");
}

#[test]
fn a_killed_gateway_takes_its_watcher_with_it() {
    let consul = Consul::start();
    let mut gw = Gateway::start_unready(&consul, "service-web", &[]);
    let watcher = gw.watcher_pid();
    gw.proc.kill();
    let start = Instant::now();
    wait_for(Duration::from_secs(5), "the orphaned watcher to exit", || (!is_running(watcher)).then_some(()));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_configuration_is_a_clear_error_not_a_panic() {
    for (args, needle) in [
        (vec!["--services", "a/b"], "invalid"),
        (vec!["--consul", "unix:///run/consul.sock"], "unsupported scheme"),
        (vec!["--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:1"], "must differ"),
        (vec!["--upstream-timeout", "soon"], "upstream-timeout"),
    ] {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let mut p = Proc::spawn("gateway", &args, &[]);
        let status = p.wait_exit(Duration::from_secs(5)).expect("exits");
        assert_eq!(status.code(), Some(2), "{args:?}");
        let logs = p.logs().join("\n");
        assert!(logs.contains(needle), "{args:?}: {logs}");
        assert!(!logs.contains("panicked"), "{logs}");
    }
}
