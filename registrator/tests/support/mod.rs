//! Test support for the registrator's integration tests: the real `registrator` binary and Docker
//! containers removed on drop. Consul, processes and polling come from the workspace's shared
//! end-to-end support crate (`tests/`, crate `e2e`). Everything a test starts is stopped in
//! `Drop`, also when an assertion fails.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

// Each test binary uses a different subset of these.
#[allow(unused_imports)]
pub use e2e::{free_port, wait_for, Consul, Proc};

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

/// The real `registrator` binary against `consul`.
pub fn registrator(consul: &Consul, args: &[&str]) -> Proc {
    registrator_at(&consul.addr(), args, &[])
}

/// The real `registrator` binary against any address, with extra environment.
pub fn registrator_at(consul: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut all = vec!["--consul".to_string(), consul.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("RUST_LOG", "registrator=debug,info".to_string()));
    Proc::spawn_path(std::path::Path::new(env!("CARGO_BIN_EXE_registrator")), &all, &env)
}

/// Fails the test when no Docker engine answers: a test about Docker must not pass without one.
pub fn require_docker() {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        panic!("this test needs a Docker engine, and none answers: {e}");
    }
}

/// A Docker network created for one test, removed on drop. Declare it before the containers on
/// it, so they are dropped (removed) first.
pub struct Network {
    /// The network name.
    pub name: String,
}

impl Network {
    /// `docker network create <name>` (a leftover of the same name is removed first).
    pub fn create(name: &str) -> Self {
        let _ = docker(&["network", "rm", name]);
        docker(&["network", "create", name]).unwrap_or_else(|e| panic!("{e}"));
        Self { name: name.to_string() }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// A local image built from a Dockerfile given as text (no build context, no registry), removed
/// on drop. Declare it before the containers that use it.
pub struct Image {
    /// The image tag.
    pub tag: String,
}

impl Image {
    /// `docker build -t <tag> -` with `dockerfile` on stdin.
    pub fn build(tag: &str, dockerfile: &str) -> Self {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", tag, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker build");
        child.stdin.take().expect("stdin").write_all(dockerfile.as_bytes()).expect("write Dockerfile");
        let out = child.wait_with_output().expect("docker build");
        assert!(out.status.success(), "docker build {tag}: {}", String::from_utf8_lossy(&out.stderr));
        Self { tag: tag.to_string() }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

/// The IP of container `name` on Docker network `network`.
pub fn ip_on(name: &str, network: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    docker(&["inspect", "-f", &format, name]).expect("inspect")
}

/// Waits (10 s at most) for service `id` on the agent and returns it.
pub fn wait_registered(consul: &Consul, id: &str) -> serde_json::Value {
    wait_for(std::time::Duration::from_secs(10), &format!("{id} to be registered"), || {
        consul.agent_services()?.get(id).cloned()
    })
}

/// Waits for `reg` to log a line with both `container` and `text`, lets `resyncs` of its resync
/// period (1 s in these tests) pass, and asserts the line was logged exactly once, at INFO.
pub fn said_once(reg: &Proc, container: &str, text: &str, resyncs: u32) {
    let line = wait_for(std::time::Duration::from_secs(10), &format!("{container}: {text:?} in the log"), || {
        reg.logs().into_iter().find(|l| l.contains(container) && l.contains(text))
    });
    assert!(line.contains("INFO"), "not at INFO: {line}");
    std::thread::sleep(std::time::Duration::from_millis(1000 * u64::from(resyncs) + 300));
    let count = reg.logs().iter().filter(|l| l.contains(container) && l.contains(text)).count();
    assert_eq!(count, 1, "said {count} times over {resyncs} resyncs:\n{}", reg.log_text());
}
