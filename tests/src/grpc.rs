//! A real gRPC server and client (Python grpcio, `tests/python/grpc_peer.py`) for the gRPC tests.
//!
//! The interpreter is found like Consul: `GRPC_PYTHON`, then `<repo>/.tools/pyenv/bin/python`
//! (made by `scripts/install-python-deps.sh`, which `scripts/test.sh` runs). Without one that can
//! import `grpc`, [`python`] panics saying how to install it: a gRPC test never passes silently.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The Python interpreter with grpcio.
///
/// # Panics
/// When none is installed (run `scripts/install-python-deps.sh`) or it cannot import `grpc`.
pub fn python() -> PathBuf {
    let py = std::env::var_os("GRPC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/pyenv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no Python with grpcio at {} (GRPC_PYTHON or <repo>/.tools/pyenv): run scripts/install-python-deps.sh",
        py.display()
    );
    py
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/grpc_peer.py")
}

/// A gRPC server for one service (`package.Service`) on a free loopback port; stopped on drop.
pub struct GrpcServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its port.
    pub port: u16,
}

impl GrpcServer {
    /// Starts the server and waits (at most 20 s) for its port.
    ///
    /// # Panics
    /// When it cannot start or says no port in time.
    pub fn start(service: &str) -> Self {
        let mut child = Command::new(python())
            .arg(peer_script())
            .args(["server", service])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let first = BufReader::new(stdout).lines().next().and_then(Result::ok);
            let _ = tx.send(first);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
        let port = line.as_deref().and_then(|l| l.strip_prefix("PORT ")).and_then(|p| p.trim().parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!("the gRPC server said no port: {line:?}");
        };
        Self { child, stdin, port }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client against `target` (`host:port`) for `service`, at most 60 s, and returns what
/// it printed (one JSON object: see `grpc_peer.py`).
///
/// # Panics
/// When it fails, prints no JSON or runs too long.
pub fn run_client(target: &str, service: &str) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(peer_script())
        .args(["client", target, service])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gRPC client");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut out);
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut err);
        let _ = tx.send((out, err));
    });
    let Ok((out, err)) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gRPC client ran for more than 60 s");
    };
    let status = child.wait().expect("wait for the gRPC client");
    assert!(status.success(), "the gRPC client failed ({status}): {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("the gRPC client printed no JSON ({e}): {out}{err}"))
}
