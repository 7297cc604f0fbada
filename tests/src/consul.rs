//! A real `consul agent -dev` on free loopback ports, restartable on the same ports with an empty
//! state (dev mode keeps everything in memory), plus the few API calls tests make.
//!
//! [`Consul::start_tls`] adds an HTTPS listener, with a CA and a server certificate made by
//! `consul tls ca create` / `consul tls cert create -server` in the agent's temp dir. The tests'
//! own calls always go to the plain HTTP listener. [`Consul::start_mtls`] (HTTPS only, client
//! certificates required) and [`Consul::start_acl`] (ACLs, default deny) are in [`secure`].
//! [`Consul::start_dns`] turns Consul's DNS interface on (off otherwise), with a short TTL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http};

pub mod secure;

/// A running Consul dev agent.
pub struct Consul {
    child: Option<Child>,
    ports: [u16; 4],
    /// The HTTPS port and the CA file, with [`Consul::start_tls`].
    tls: Option<(u16, PathBuf)>,
    /// HTTPS only, with client certificates required ([`Consul::start_mtls`]).
    mtls: bool,
    /// The ACL master token, with [`Consul::start_acl`].
    acl_master: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The file in the agent's directory that turns DNS on: `<port> <service TTL>`.
const DNS_FILE: &str = "dns-settings";

/// The Consul binary: `CONSUL_BIN`, `<repo>/.tools/consul`, or `consul` on `PATH`.
pub fn consul_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CONSUL_BIN") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/consul");
    if local.exists() {
        return local;
    }
    PathBuf::from("consul")
}

impl Consul {
    /// Starts an agent and waits until it has a leader and its node is in the catalog.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Like [`Consul::start`], with the HTTP API on `http_port` (say, one a client was already
    /// pointed at while nothing listened there).
    pub fn start_on(http_port: u16) -> Self {
        Self::spawn_in(tempfile::tempdir().expect("tempdir"), http_port)
    }

    /// An agent whose HTTP API is on `http_port`, kept in `dir` (its log, and whatever settings
    /// files its (re)starts read), started.
    fn spawn_in(dir: tempfile::TempDir, http_port: u16) -> Self {
        let log = dir.path().join("consul.log");
        let mut c = Self {
            child: None,
            ports: [http_port, free_port(), free_port(), free_port()],
            tls: None,
            mtls: false,
            acl_master: None,
            log,
            _dir: dir,
        };
        c.spawn();
        c
    }

    /// Like [`Consul::start`], with Consul's DNS interface on a free loopback port
    /// ([`Consul::dns_port`], UDP and TCP), service records served with TTL `service_ttl` (Consul's
    /// `dns_config.service_ttl` for every service, e.g. `"1s"`; Consul's default is 0).
    pub fn start_dns(service_ttl: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Kept in the agent's directory, so every (re)start of this agent serves DNS the same way.
        std::fs::write(dir.path().join(DNS_FILE), format!("{} {service_ttl}", free_port())).expect("dns settings");
        Self::spawn_in(dir, free_port())
    }

    /// The DNS port and service TTL, with [`Consul::start_dns`].
    fn dns(&self) -> Option<(u16, String)> {
        let s = std::fs::read_to_string(self._dir.path().join(DNS_FILE)).ok()?;
        let (port, ttl) = s.split_once(' ')?;
        Some((port.parse().ok()?, ttl.to_string()))
    }

    /// The DNS port (with [`Consul::start_dns`]).
    pub fn dns_port(&self) -> u16 {
        self.dns().expect("started with start_dns").0
    }

    /// `127.0.0.1:<dns port>` (with [`Consul::start_dns`]).
    pub fn dns_addr(&self) -> String {
        format!("127.0.0.1:{}", self.dns_port())
    }

    /// Like [`Consul::start`], with an HTTPS listener too (TLS 1.2+, HTTP/2 by ALPN), its
    /// certificate signed by a CA made for this agent ([`Consul::ca_file`]); clients are not
    /// asked for a certificate.
    pub fn start_tls() -> Self {
        Self::start_with_certificates(false)
    }

    /// An agent with an HTTPS listener, its CA and server certificate made by `consul tls ca
    /// create` / `consul tls cert create -server` in a directory of its own; with `mtls`, also a
    /// client certificate (`-client`), and the agent serves HTTPS only and requires one
    /// ([`Consul::start_mtls`]).
    pub(crate) fn start_with_certificates(mtls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = mtls.then_some(&["tls", "cert", "create", "-client"][..]);
        for args in [&["tls", "ca", "create"][..], &["tls", "cert", "create", "-server"]].into_iter().chain(client) {
            let out = Command::new(consul_bin()).args(args).current_dir(dir.path()).output().expect("consul tls");
            assert!(out.status.success(), "consul {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let log = dir.path().join("consul.log");
        let ca = dir.path().join("consul-agent-ca.pem");
        let mut c = Self {
            child: None,
            ports: [free_port(), free_port(), free_port(), free_port()],
            tls: Some((free_port(), ca)),
            mtls,
            acl_master: None,
            log,
            _dir: dir,
        };
        c.spawn();
        c
    }

    /// Starts the agent and waits until it is ready. An agent that exits while starting (one of
    /// its internal ports was taken between [`free_port`] and its bind: the serf ports need UDP
    /// too, and the kernel hands the same ranges to outgoing connections) is started again on
    /// fresh serf and server ports, up to three times; the HTTP and HTTPS ports, which clients
    /// know, are kept. A failure panics with the end of the agent's log.
    fn spawn(&mut self) {
        for attempt in 1..=3 {
            self.launch();
            match self.wait_ready() {
                Ok(()) => return,
                Err(exited) if attempt < 3 => {
                    eprintln!("consul exited while starting ({exited}); again on fresh internal ports");
                    self.ports[1..].iter_mut().for_each(|p| *p = free_port());
                }
                Err(exited) => panic!("consul exited while starting ({exited}):\n{}", self.log_tail()),
            }
        }
    }

    fn launch(&mut self) {
        let [http_port, serf_lan, serf_wan, server] = self.ports;
        let https = self.tls.as_ref().map_or(-1, |(port, _)| i32::from(*port));
        let http_listener = if self.mtls { -1 } else { i32::from(http_port) };
        let (dns, service_ttl) = self.dns().map_or((-1, None), |(port, ttl)| (i32::from(port), Some(ttl)));
        let mut hcl = format!(
            "ports {{ http = {http_listener}, https = {https}, dns = {dns}, grpc = -1, serf_lan = {serf_lan}, serf_wan = {serf_wan}, server = {server} }}"
        );
        if self.tls.is_some() {
            let dir = self._dir.path();
            hcl.push_str(&format!(
                " ca_file = {:?} cert_file = {:?} key_file = {:?}",
                dir.join("consul-agent-ca.pem"),
                dir.join("dc1-server-consul-0.pem"),
                dir.join("dc1-server-consul-0-key.pem"),
            ));
        }
        if let Some(ttl) = service_ttl {
            hcl.push_str(&format!(r#" dns_config {{ service_ttl {{ "*" = "{ttl}" }} }}"#));
        }
        hcl.push_str(&self.security_hcl());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("consul log");
        let child = Command::new(consul_bin())
            .args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn", "-hcl", &hcl])
            .args(["-node", &format!("e2e-{http_port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (run scripts/install-consul.sh)", consul_bin().display()));
        self.child = Some(child);
    }

    /// Waits up to 60 s until the agent has a leader and lists its node; `Err` with the exit
    /// status if it exits first. Timing out panics with the end of its log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let client = http();
        let base = self.addr();
        // Under ACLs (default deny) the node list needs a token that may read nodes.
        let token = self.acl_master.clone().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(status.to_string());
            }
            let ready = if self.mtls { self.ready_mtls() } else { ready(&client, &base, &token) };
            if ready {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 60s waiting for Consul to elect itself and list its node:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 2,000 bytes of the agent's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(2000)..]).into_owned()
    }

    /// The HTTP API port.
    pub fn http_port(&self) -> u16 {
        self.ports[0]
    }

    /// `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// `https://127.0.0.1:<port>` (with [`Consul::start_tls`]).
    pub fn https_addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port())
    }

    /// The HTTPS port (with [`Consul::start_tls`]).
    pub fn https_port(&self) -> u16 {
        self.tls.as_ref().expect("started with start_tls").0
    }

    /// The CA that signed the HTTPS listener's certificate (with [`Consul::start_tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().expect("started with start_tls").1.clone()
    }

    /// Stops the agent (SIGKILL: an outage, not a graceful leave).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh agent on the same ports: same address, empty state, index starting over.
    pub fn restart_empty(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `/v1/agent/services` by ID, or `None` if Consul did not answer.
    pub fn agent_services(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let resp = http().get(format!("{}/v1/agent/services", self.addr())).send().ok()?;
        resp.json::<serde_json::Value>().ok()?.as_object().cloned()
    }

    /// Registers a service instance (no health check: passing).
    pub fn register(&self, name: &str, id: &str, port: u16) {
        self.put(
            "/v1/agent/service/register",
            serde_json::json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port}),
        );
    }

    /// Registers a service instance whose TTL check is critical (in the catalog, not healthy).
    pub fn register_critical(&self, name: &str, id: &str, port: u16) {
        self.put(
            "/v1/agent/service/register",
            serde_json::json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port,
                                "Check": {"TTL": "60s", "Status": "critical"}}),
        );
    }

    /// Registers a service instance with a TTL check (`check ID service:<id>`) in `status`.
    pub fn register_ttl(&self, name: &str, id: &str, port: u16, status: &str) {
        self.put(
            "/v1/agent/service/register",
            serde_json::json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port,
                                "Check": {"TTL": "600s", "Status": status}}),
        );
    }

    /// Sets a TTL check: `verb` is `pass`, `warn` or `fail`.
    pub fn set_check(&self, check_id: &str, verb: &str) {
        self.put(&format!("/v1/agent/check/{verb}/{check_id}"), serde_json::Value::Null);
    }

    /// Deregisters a service instance.
    pub fn deregister(&self, id: &str) {
        self.put(&format!("/v1/agent/service/deregister/{id}"), serde_json::Value::Null);
    }

    /// Registers a service instance with a TTL check (`service:<id>`) in `status` and `tags`.
    pub fn register_tagged(&self, name: &str, id: &str, port: u16, status: &str, tags: &[&str]) {
        self.put(
            "/v1/agent/service/register",
            serde_json::json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": tags,
                                "Check": {"TTL": "600s", "Status": status}}),
        );
    }

    /// Registers a service instance from a whole `/v1/agent/service/register` body (weights,
    /// several checks, anything the other helpers do not set).
    pub fn register_json(&self, registration: serde_json::Value) {
        self.put("/v1/agent/service/register", registration);
    }

    /// Registers a node-level TTL check `id` (no service) on the agent's node, in `status`.
    pub fn register_node_check(&self, id: &str, status: &str) {
        self.put(
            "/v1/agent/check/register",
            serde_json::json!({"ID": id, "Name": id, "TTL": "600s", "Status": status}),
        );
    }

    /// Puts one service instance (`Some(id)`) or the agent's whole node (`None`) in or out of
    /// maintenance (a critical `_service_maintenance:<id>` or `_node_maintenance` check).
    pub fn maintenance(&self, id: Option<&str>, enable: bool) {
        let path = match id {
            Some(id) => format!("/v1/agent/service/maintenance/{id}"),
            None => "/v1/agent/maintenance".to_string(),
        };
        self.put(&format!("{path}?enable={enable}&reason=e2e"), serde_json::Value::Null);
    }

    /// Registers an instance on catalog node `node` (created if new; no agent owns it), without a
    /// check, as an external registration would.
    pub fn catalog_register(&self, node: &str, name: &str, id: &str, port: u16) {
        self.catalog_register_tagged(node, name, id, port, &[]);
    }

    /// [`Consul::catalog_register`] with tags.
    pub fn catalog_register_tagged(&self, node: &str, name: &str, id: &str, port: u16, tags: &[&str]) {
        self.put(
            "/v1/catalog/register",
            serde_json::json!({"Node": node, "Address": "127.0.0.1",
                                "Service": {"ID": id, "Service": name, "Address": "127.0.0.1", "Port": port, "Tags": tags}}),
        );
    }

    /// Deregisters one instance from catalog node `node`, or (`id` = `None`) the whole node.
    pub fn catalog_deregister(&self, node: &str, id: Option<&str>) {
        let body = match id {
            Some(id) => serde_json::json!({"Node": node, "ServiceID": id}),
            None => serde_json::json!({"Node": node}),
        };
        self.put("/v1/catalog/deregister", body);
    }

    fn put(&self, path: &str, body: serde_json::Value) {
        let mut req = http().put(format!("{}{path}", self.addr()));
        if let Some(token) = &self.acl_master {
            req = req.header("X-Consul-Token", token);
        }
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
    }
}

/// Whether the agent at `base` has a leader and lists its node.
fn ready(client: &reqwest::blocking::Client, base: &str, token: &str) -> bool {
    let get = |path: &str| client.get(format!("{base}{path}")).header("X-Consul-Token", token).send().ok()?.text().ok();
    match (get("/v1/status/leader"), get("/v1/catalog/nodes")) {
        (Some(leader), Some(nodes)) => leader.len() > 2 && nodes.contains("e2e-"),
        _ => false,
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        self.stop();
    }
}
