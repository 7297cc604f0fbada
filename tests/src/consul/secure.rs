//! Consul agents that guard their API: [`Consul::start_mtls`] (HTTPS only, a client certificate
//! required, `verify_server_hostname`) and [`Consul::start_acl`] (ACLs enabled, default deny),
//! and what tests need to drive them: Consul's own CLI on the same variables our binaries read,
//! policies and tokens made through the HTTP API.

use std::path::PathBuf;
use std::process::Command;

use super::{consul_bin, Consul};
use crate::{free_port, http};

impl Consul {
    /// Starts an agent that serves its API over HTTPS only (no plain listener) and requires a
    /// client certificate signed by its CA (`verify_incoming`, with `verify_outgoing` and
    /// `verify_server_hostname`). The CA, the server certificate (`server.dc1.consul`) and a client
    /// certificate are made by `consul tls ca create` / `consul tls cert create -server` /
    /// `-client`.
    pub fn start_mtls() -> Self {
        Self::start_with_certificates(true)
    }

    /// Starts an agent with ACLs enabled and `default_policy = "deny"` (Consul 1.8 syntax:
    /// `acl.tokens.master`); the tests' own calls ([`Consul::register`] and friends) carry the
    /// master token, which is also the agent's own token (for syncing its node).
    pub fn start_acl() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("consul.log");
        let master = format!("e2e-master-{}-{}", std::process::id(), free_port());
        let mut c = Self {
            child: None,
            ports: [free_port(), free_port(), free_port(), free_port()],
            tls: None,
            mtls: false,
            acl_master: Some(master),
            log,
            _dir: dir,
        };
        c.spawn();
        c
    }

    /// The configuration the security settings add to the agent's `-hcl`.
    pub(super) fn security_hcl(&self) -> String {
        let mut hcl = String::new();
        if self.mtls {
            hcl.push_str(" verify_incoming = true verify_outgoing = true verify_server_hostname = true");
        } else if self.tls.is_some() {
            hcl.push_str(" verify_incoming = false");
        }
        if let Some(master) = &self.acl_master {
            hcl.push_str(&format!(
                " acl {{ enabled = true default_policy = \"deny\" down_policy = \"extend-cache\" tokens {{ master = {master:?} agent = {master:?} }} }}"
            ));
        }
        hcl
    }

    /// Whether, asked through Consul's own CLI over mTLS, the agent has a leader and lists its node.
    pub(super) fn ready_mtls(&self) -> bool {
        let out = self.cli_output(&["catalog", "nodes"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("e2e-")
    }

    /// The client certificate and key made for [`Consul::start_mtls`].
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        let dir = self._dir.path();
        (dir.join("dc1-client-consul-0.pem"), dir.join("dc1-client-consul-0-key.pem"))
    }

    /// The variables of Consul's own tools that reach an [`Consul::start_mtls`] agent: its HTTPS
    /// address, the CA, the client certificate and key, and the name its certificate carries.
    pub fn mtls_env(&self) -> Vec<(&'static str, String)> {
        let (cert, key) = self.client_cert();
        vec![
            ("CONSUL_HTTP_ADDR", self.https_addr()),
            ("CONSUL_CACERT", self.ca_file().display().to_string()),
            ("CONSUL_CLIENT_CERT", cert.display().to_string()),
            ("CONSUL_CLIENT_KEY", key.display().to_string()),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul".to_string()),
        ]
    }

    fn cli_output(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(consul_bin());
        cmd.args(args).env_remove("CONSUL_HTTP_TOKEN").env_remove("CONSUL_HTTP_TOKEN_FILE");
        if self.mtls {
            cmd.envs(self.mtls_env());
        } else {
            cmd.env("CONSUL_HTTP_ADDR", self.addr());
        }
        if let Some(master) = &self.acl_master {
            cmd.env("CONSUL_HTTP_TOKEN", master);
        }
        cmd.output().expect("run the consul CLI")
    }

    /// Runs Consul's CLI against this agent (over mTLS, or with the master token); its stdout.
    /// Panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(out.status.success(), "consul {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The ACL master token (with [`Consul::start_acl`]).
    pub fn acl_master(&self) -> &str {
        self.acl_master.as_deref().expect("started with start_acl")
    }

    /// Creates an ACL policy `name` with `rules` (HCL) and a token holding only it, through the
    /// HTTP API with the master token; the token's secret.
    pub fn acl_token(&self, name: &str, rules: &str) -> String {
        let client = http();
        let put = |path: &str, body: serde_json::Value| -> serde_json::Value {
            let resp = client
                .put(format!("{}{path}", self.addr()))
                .header("X-Consul-Token", self.acl_master())
                .json(&body)
                .send()
                .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
            let status = resp.status();
            let text = resp.text().unwrap_or_default();
            assert!(status.is_success(), "PUT {path}: {status} {text}");
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
        };
        put("/v1/acl/policy", serde_json::json!({"Name": name, "Rules": rules}));
        let token = put(
            "/v1/acl/token",
            serde_json::json!({"Description": format!("e2e {name}"), "Policies": [{"Name": name}]}),
        );
        token["SecretID"].as_str().expect("SecretID").to_string()
    }

    /// Replaces the rules of the policy `name` (made by [`Consul::acl_token`]), through the HTTP
    /// API with the master token: what an operator does to take a permission away (Consul
    /// applies it to the tokens holding the policy at once).
    pub fn acl_policy_update(&self, name: &str, rules: &str) {
        let client = http();
        let policy: serde_json::Value = client
            .get(format!("{}/v1/acl/policy/name/{name}", self.addr()))
            .header("X-Consul-Token", self.acl_master())
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("GET policy {name}: {e}"));
        let id = policy["ID"].as_str().unwrap_or_else(|| panic!("policy {name}: {policy}"));
        let resp = client
            .put(format!("{}/v1/acl/policy/{id}", self.addr()))
            .header("X-Consul-Token", self.acl_master())
            .json(&serde_json::json!({"Name": name, "Rules": rules}))
            .send()
            .unwrap_or_else(|e| panic!("PUT policy {name}: {e}"));
        assert!(resp.status().is_success(), "PUT policy {name}: {}", resp.status());
    }

    /// A token with no policy at all (under default deny it may read nothing).
    pub fn acl_token_without_policy(&self) -> String {
        let resp = http()
            .put(format!("{}/v1/acl/token", self.addr()))
            .header("X-Consul-Token", self.acl_master())
            .json(&serde_json::json!({"Description": "e2e no policy"}))
            .send()
            .expect("PUT /v1/acl/token");
        assert!(resp.status().is_success());
        let v: serde_json::Value = resp.json().expect("token JSON");
        v["SecretID"].as_str().expect("SecretID").to_string()
    }
}
