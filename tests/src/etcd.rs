//! A real etcd server on free loopback ports with a temporary data directory, which tests can
//! kill (SIGKILL) and start again on the same ports and data (a restart keeps every key, lease and
//! revision), plus the few calls tests make through the `etcd` crate.
//!
//! The binary is found through `ETCD_BIN`, then `<repo>/.tools/etcd` (`scripts/install-etcd.sh`),
//! then `etcd` on `PATH`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http};

/// A running (or killed) single-member etcd.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

/// The etcd binary: `ETCD_BIN`, `<repo>/.tools/etcd`, or `etcd` on `PATH`.
pub fn etcd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/etcd");
    if local.exists() {
        return local;
    }
    PathBuf::from("etcd")
}

impl Etcd {
    /// Starts a server and waits until it answers `/health`.
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = Self { child: None, client_port: free_port(), peer_port: free_port(), dir, rt };
        e.spawn();
        e
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new(etcd_bin())
            .args(["--name", "e2e", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("e2e={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (run scripts/install-etcd.sh)", etcd_bin().display()));
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let client = http();
        let url = format!("{}/health", self.endpoint());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(&url).send() {
                if r.status().is_success() && r.text().unwrap_or_default().contains("true") {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited while starting ({status}):\n{}", self.log_tail());
            }
            assert!(Instant::now() < deadline, "etcd not healthy after 20s:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Kills the server (SIGKILL) and reaps it; the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and data (after [`Etcd::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts the server again on the same ports with an empty data directory (after
    /// [`Etcd::kill`]): every key is gone and the revision starts over, lower than before.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        self.spawn();
    }

    /// Runs `f` with a client of this server, on the harness's runtime.
    pub fn with<T, F: std::future::Future<Output = Result<T, etcd::Error>>>(
        &self,
        f: impl FnOnce(etcd::Client) -> F,
    ) -> T {
        let endpoints = [self.endpoint()];
        self.rt.block_on(async {
            let c = etcd::Client::connect(&endpoints).await.expect("etcd client");
            f(c).await.expect("etcd call")
        })
    }

    /// Writes `key` (no lease); returns the revision.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        let value = value.to_string();
        self.with(|c| async move { c.put(key, value).await })
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> bool {
        self.with(|c| async move { c.delete(key).await })
    }

    /// Compacts the history up to `revision`.
    pub fn compact(&self, revision: i64) {
        self.with(|c| async move { c.compact(revision).await })
    }

    /// Revokes every lease (their keys go at once); returns how many there were.
    pub fn revoke_all_leases(&self) -> usize {
        self.with(|c| async move {
            let ids = c.leases().await?;
            for id in &ids {
                c.revoke(etcd::Lease { id: *id, ttl: Duration::from_secs(1) }).await?;
            }
            Ok(ids.len())
        })
    }

    /// The store's revision now.
    pub fn revision(&self) -> i64 {
        self.with(|c| async move { Ok(c.range("/\u{10ffff}-none/").await?.revision) })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
