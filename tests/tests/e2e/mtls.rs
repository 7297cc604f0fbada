//! The gateway against a Consul that requires client certificates (issue 11, item 4): an agent
//! serving its API over HTTPS only, with `verify_incoming`, `verify_outgoing` and
//! `verify_server_hostname`, its CA and certificates made by `consul tls ca create` /
//! `consul tls cert create -server` / `-client`. The gateway (and the watcher it starts) is
//! configured only through Consul's own variables; the service is registered with Consul's own
//! CLI on the same variables.

use std::time::Duration;

use e2e::{get_json, http, wait_for, Consul, Gateway, ServiceWeb};

/// Waits until `path` through the gateway answers 200 from the instance on `port`.
fn wait_routed(gw: &Gateway, path: &str, port: u16) {
    let client = http();
    let url = gw.url(path);
    let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(Duration::from_secs(20), &format!("{path} routed to port {port}"), || {
            let (status, v) = get_json(&client, &url).ok()?;
            (status == 200 && v["port"].as_u64() == Some(u64::from(port))).then_some(())
        })
    }));
    assert!(routed.is_ok(), "not routed; gateway log:\n{}", gw.proc.log_text());
}

#[test]
fn mtls_with_consuls_variables_only_routes_a_tagged_service() {
    let consul = Consul::start_mtls();
    let web = ServiceWeb::start(None);
    consul.cli(&[
        "services",
        "register",
        "-name=web-mtls",
        "-id=web-mtls-1",
        "-address=127.0.0.1",
        &format!("-port={}", web.port),
        "-tag=gateway",
    ]);

    // CONSUL_CACERT.
    let gw = Gateway::start_env(&consul.mtls_env(), &[]);
    wait_routed(&gw, "/web-mtls/getRemoteIp", web.port);
    gw.wait_ready();
    drop(gw);

    // CONSUL_CAPATH instead: a directory holding the CA.
    let cas = tempfile::tempdir().unwrap();
    std::fs::copy(consul.ca_file(), cas.path().join("consul-agent-ca.pem")).unwrap();
    let mut env: Vec<(&str, String)> = consul.mtls_env().into_iter().filter(|(k, _)| *k != "CONSUL_CACERT").collect();
    env.push(("CONSUL_CAPATH", cas.path().display().to_string()));
    let gw = Gateway::start_env(&env, &[]);
    wait_routed(&gw, "/web-mtls/getRemoteIp", web.port);
    gw.wait_ready();
}

#[test]
fn mtls_without_the_client_certificate_fails_clearly_and_is_not_ready() {
    let consul = Consul::start_mtls();
    let env: Vec<(&str, String)> =
        consul.mtls_env().into_iter().filter(|(k, _)| !k.starts_with("CONSUL_CLIENT_")).collect();
    let gw = Gateway::start_env(&env, &[]);
    // The watcher says it cannot reach Consul, once, and why.
    gw.proc.wait_for_log("cannot reach Consul", 0, Duration::from_secs(20));
    let reason = wait_for(Duration::from_secs(20), "/readyz to say why Consul cannot be read", || {
        let (status, body) = gw.readyz();
        assert_ne!(status, 200, "ready without a client certificate: {body}");
        let reasons = body["reasons"].as_array()?.clone();
        reasons.iter().filter_map(|r| r.as_str()).find(|r| r.starts_with("consul: ")).map(str::to_string)
    });
    assert!(reason.contains("/v1/status/leader") && reason.contains("CONSUL_CLIENT_CERT"), "{reason}");
    // Retries do not flood the log: one warning for the one state.
    std::thread::sleep(Duration::from_secs(3));
    let log = gw.proc.log_text();
    assert_eq!(log.matches("cannot reach Consul").count(), 1, "{log}");
    eprintln!("the reason /readyz gives: {reason}");
}
