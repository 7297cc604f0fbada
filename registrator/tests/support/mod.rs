//! Test support for the registrator's integration tests: a Consul dev agent on free loopback
//! ports, the real `registrator` binary, and Docker containers removed on drop. Everything a test
//! starts is stopped in `Drop`, also when an assertion fails.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Polls `f` every 100 ms until it returns `Some`, panicking after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free loopback TCP port (bound to port 0, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `docker <args>`, returning trimmed stdout on success.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).stdin(Stdio::null()).output().map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether a Docker engine answers. Without one the test is skipped, unless `REQUIRE_DOCKER` is
/// set, in which case a missing engine is a failure.
pub fn docker_or_skip(test: &str) -> bool {
    match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Ok(_) => true,
        Err(e) if std::env::var_os("REQUIRE_DOCKER").is_some() => {
            panic!("REQUIRE_DOCKER is set but no Docker engine answers: {e}")
        }
        Err(e) => {
            eprintln!("skipping {test}: no Docker engine ({e}); set REQUIRE_DOCKER=1 to make this fail");
            false
        }
    }
}

/// An image with `sleep`: `REGISTRATOR_TEST_IMAGE`, else the project's base image, built with
/// `scripts/build-images.sh base` (debootstrap, no registry) when it is missing.
pub fn test_image() -> String {
    if let Ok(img) = std::env::var("REGISTRATOR_TEST_IMAGE") {
        return img;
    }
    let img = std::env::var("BASE_IMAGE").unwrap_or_else(|_| "consul-gateway-base:bookworm".into());
    if docker(&["image", "inspect", &img]).is_err() {
        let status = Command::new(repo().join("scripts/build-images.sh"))
            .arg("base")
            .env("BASE_IMAGE", &img)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/build-images.sh base");
        assert!(status.success(), "scripts/build-images.sh base failed");
    }
    img
}

/// A container removed (with `docker rm -f`) on drop.
pub struct Container {
    /// The container name.
    pub name: String,
}

impl Container {
    /// `docker run -d --name <name> <args...>`.
    pub fn run(name: &str, args: &[&str]) -> Self {
        let _ = docker(&["rm", "-f", name]);
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        docker(&all).unwrap_or_else(|e| panic!("{e}"));
        Self { name: name.to_string() }
    }

    /// The container's IP on the default bridge network.
    pub fn ip(&self) -> String {
        docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &self.name]).expect("inspect")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// A child process killed on drop.
pub struct Proc {
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self { child, log }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Consul dev agent on free loopback ports.
pub struct Consul {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    proc: Proc,
    cmd: Vec<String>,
    http: reqwest::blocking::Client,
}

impl Consul {
    /// Starts the agent (binary: `CONSUL_BIN` or `scripts/install-consul.sh`) and waits for a leader.
    pub fn start(dir: &std::path::Path) -> Self {
        Self::start_on(dir, free_port())
    }

    /// Like [`Consul::start`], with the HTTP API on `http`.
    pub fn start_on(dir: &std::path::Path, http: u16) -> Self {
        let bin = std::env::var("CONSUL_BIN").unwrap_or_else(|_| {
            let out = Command::new(repo().join("scripts/install-consul.sh")).output().expect("install-consul.sh");
            assert!(out.status.success(), "scripts/install-consul.sh failed");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        });
        let [lan, wan, server] = [free_port(), free_port(), free_port()];
        let hcl = format!(
            "ports {{ http = {http}, dns = -1, grpc = -1, serf_lan = {lan}, serf_wan = {wan}, server = {server} }}"
        );
        let args = ["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn", "-hcl", &hcl];
        let cmd: Vec<String> = std::iter::once(bin).chain(args.iter().map(|a| a.to_string())).collect();
        let c = Self {
            addr: format!("http://127.0.0.1:{http}"),
            proc: Self::spawn(&cmd, dir),
            cmd,
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().expect("client"),
        };
        c.wait_leader();
        c
    }

    fn spawn(cmd: &[String], dir: &std::path::Path) -> Proc {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        Proc::spawn(c, dir.join("consul.log"))
    }

    fn wait_leader(&self) {
        wait_for(Duration::from_secs(30), "Consul leader", || {
            let leader = self.http.get(format!("{}/v1/status/leader", self.addr)).send().ok()?.text().ok()?;
            (leader.len() > 2).then_some(())
        });
    }

    /// Kills the agent and starts a fresh one on the same ports: a dev agent forgets everything.
    pub fn restart_empty(&mut self, dir: &std::path::Path) {
        self.proc.kill();
        self.proc = Self::spawn(&self.cmd, dir);
        self.wait_leader();
    }

    /// `/v1/agent/services`, or `None` if Consul did not answer.
    pub fn services(&self) -> Option<serde_json::Map<String, Value>> {
        let resp = self.http.get(format!("{}/v1/agent/services", self.addr)).send().ok()?;
        resp.json::<Value>().ok()?.as_object().cloned()
    }

    /// Registers a service by hand (not ours: no owner mark).
    pub fn register_foreign(&self, id: &str) {
        let body = serde_json::json!({"ID": id, "Name": "foreign", "Port": 1});
        let resp = self.http.put(format!("{}/v1/agent/service/register", self.addr)).json(&body).send();
        assert!(resp.map(|r| r.status().is_success()).unwrap_or(false), "register {id}");
    }
}

/// The real `registrator` binary against `consul`, logging to `<dir>/registrator-<n>.log`.
pub fn registrator(dir: &std::path::Path, n: u32, consul: &Consul, args: &[&str]) -> Proc {
    registrator_at(dir, n, &consul.addr, args, &[])
}

/// The real `registrator` binary against any address, with extra environment.
pub fn registrator_at(dir: &std::path::Path, n: u32, consul: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registrator"));
    cmd.args(["--consul", consul]).args(args).env("RUST_LOG", "registrator=debug,info");
    cmd.envs(env.iter().copied());
    Proc::spawn(cmd, dir.join(format!("registrator-{n}.log")))
}
