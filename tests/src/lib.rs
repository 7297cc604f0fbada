//! # e2e support
//!
//! What every end-to-end test needs: a real Consul agent (`consul agent -dev`) and the real
//! workspace binaries, each on free loopback ports, with their logs captured, readiness polled
//! with deadlines, and every process killed on drop.
//!
//! The binaries are found next to the test executable's directory (`target/<profile>/`): build
//! them first (`cargo build --workspace --bins`, which `scripts/test.sh` does). Consul is found
//! through `CONSUL_BIN`, then `<repo>/.tools/consul` (`scripts/install-consul.sh`), then `PATH`;
//! the gRPC tests' Python with grpcio through `GRPC_PYTHON`, then `<repo>/.tools/pyenv`
//! (`scripts/install-python-deps.sh`; see [`grpc`]); Chromium, for the status page's browser test,
//! through `CHROMIUM_BIN`, then `PATH` (`scripts/install-chromium.sh`; see [`cdp`]); etcd, for the
//! etcd registry tests, through `ETCD_BIN`, then `<repo>/.tools/etcd` (`scripts/install-etcd.sh`;
//! see [`etcd`]).

pub mod backend;
pub mod cdp;
pub mod certs;
pub mod consul;
pub mod drip;
pub mod echo;
pub mod etcd;
pub mod grpc;
pub mod http1;
pub mod procs;
pub mod traffic;
pub mod ws;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use backend::Backend;
pub use consul::Consul;
pub use drip::Drip;
pub use echo::{Echo, Echoed};
pub use etcd::Etcd;
pub use procs::{Gateway, Proc, ServiceWeb};
pub use traffic::{assert_all_ok, Hammer, Sample};
pub use ws::WsEcho;

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// A workspace binary built next to the tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking HTTP client with short timeouts, for test traffic to loopback.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// GET `url`: the status and the body parsed as JSON (`Null` if it is not JSON).
pub fn get_json(client: &reqwest::blocking::Client, url: &str) -> Result<(u16, serde_json::Value), String> {
    let resp = client.get(url).send().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.bytes().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)))
}

/// Sends SIGTERM (or another signal by name) to a process.
pub fn signal(pid: u32, sig: &str) {
    let ok =
        std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "kill -{sig} {pid} failed");
}

/// Whether a process is still running (a zombie counts as gone).
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).is_some_and(|r| !r.starts_with('Z')),
        Err(_) => false,
    }
}

/// The direct children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// How many established TCP connections process `pid` holds to 127.0.0.1:`port`.
pub fn tcp_connections_to(pid: u32, port: u16) -> usize {
    // Socket inodes the process holds...
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // ...that are established (state 01) connections to the port (remote address field).
    let want = format!(":{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&want) && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}
