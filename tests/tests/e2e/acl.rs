//! The gateway, its watcher and serviceweb against a Consul with ACLs enabled and
//! `default_policy = "deny"` (issue 11, item 4), with the minimal policies the README gives,
//! made through the HTTP API with the master token.
//!
//! What Consul 1.8.7 does, and what these tests hold the gateway to: a token Consul does not know
//! gets a 403 (`ACL not found`); no token, or a token without the read policy, gets no 403 but
//! answers emptied by the ACLs (`/v1/catalog/services` without even the `consul` service), which
//! the watcher reports as a denial. Either way the log says so once and `/readyz` says why, and no
//! token ever shows in any process's output or command line.

use std::time::Duration;

use e2e::{get_json, http, wait_for, Consul, Gateway, ServiceWeb};

/// The gateway's policy: read every service and every node (the health view needs both).
const GATEWAY_POLICY: &str = r#"service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }"#;

/// serviceweb's policy: write its own service (register, TTL check, deregister).
const SERVICEWEB_POLICY: &str = r#"service "service-web" { policy = "write" }"#;

fn routed(gw: &Gateway, port: u16) {
    let client = http();
    let url = gw.url("/service-web/getRemoteIp");
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(Duration::from_secs(20), "service-web routed", || {
            let (status, v) = get_json(&client, &url).ok()?;
            (status == 200 && v["port"].as_u64() == Some(u64::from(port))).then_some(())
        })
    }));
    assert!(ok.is_ok(), "not routed; gateway log:\n{}", gw.proc.log_text());
}

/// Asserts that no secret appears in `text` (a process's whole output).
fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows a token:\n{text}");
    }
}

/// The command line of the gateway's watcher.
fn watcher_cmdline(gw: &Gateway) -> String {
    let pid = gw.watcher_pid();
    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ")
}

#[test]
fn with_the_minimal_tokens_serviceweb_registers_and_the_gateway_routes() {
    let consul = Consul::start_acl();
    let read = consul.acl_token("e2e-gateway", GATEWAY_POLICY);
    let write = consul.acl_token("e2e-serviceweb", SERVICEWEB_POLICY);

    let web = ServiceWeb::start_env(Some(&[("CONSUL_HTTP_ADDR", consul.addr()), ("CONSUL_HTTP_TOKEN", write.clone())]));

    // The read token in CONSUL_HTTP_TOKEN.
    let env = [("CONSUL_HTTP_ADDR", consul.addr()), ("CONSUL_HTTP_TOKEN", read.clone())];
    let gw = Gateway::start_env(&env, &["--log-format", "json"]);
    routed(&gw, web.port);
    gw.wait_ready();
    let cmdline = watcher_cmdline(&gw);
    drop(gw);

    // The read token in CONSUL_HTTP_TOKEN_FILE, which wins over a CONSUL_HTTP_TOKEN Consul does
    // not know (as in Consul's own client).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.token");
    std::fs::write(&file, format!("{read}\n")).unwrap();
    let env = [
        ("CONSUL_HTTP_ADDR", consul.addr()),
        ("CONSUL_HTTP_TOKEN_FILE", file.display().to_string()),
        ("CONSUL_HTTP_TOKEN", "00000000-0000-0000-0000-000000000000".to_string()),
    ];
    let gw = Gateway::start_env(&env, &[]);
    routed(&gw, web.port);
    gw.wait_ready();

    let secrets = [read.as_str(), write.as_str(), consul.acl_master()];
    assert_no_secret("the watcher's command line", &cmdline, &secrets);
    assert_no_secret("the watcher's command line", &watcher_cmdline(&gw), &secrets);
    assert_no_secret("the gateway's (and its watcher's) log", &gw.proc.log_text(), &secrets);
    assert_no_secret("serviceweb's log", &web.proc.log_text(), &secrets);
}

#[test]
fn denials_are_reported_once_in_the_log_and_in_readyz() {
    let consul = Consul::start_acl();
    let powerless = consul.acl_token_without_policy();
    let unknown = "11111111-2222-3333-4444-555555555555".to_string();
    let cases: [(&str, Option<&String>, &str); 3] = [
        ("no token", None, "cannot read any service"),
        ("a token without the policy", Some(&powerless), "cannot read any service"),
        ("a token Consul does not know", Some(&unknown), "403"),
    ];
    for (what, token, expected) in cases {
        let mut env = vec![("CONSUL_HTTP_ADDR", consul.addr())];
        if let Some(t) = token {
            env.push(("CONSUL_HTTP_TOKEN", t.clone()));
        }
        let gw = Gateway::start_env(&env, &[]);
        let reason = wait_for(Duration::from_secs(20), &format!("{what}: /readyz to say why"), || {
            let (status, body) = gw.readyz();
            assert_ne!(status, 200, "{what}: ready: {body}");
            let reasons = body["reasons"].as_array()?.clone();
            reasons.iter().filter_map(|r| r.as_str()).find(|r| r.starts_with("consul: ")).map(str::to_string)
        });
        assert!(reason.contains(expected) && reason.contains("service:read, node:read"), "{what}: {reason}");
        gw.proc.wait_for_log("Consul refuses the gateway's reads (ACL)", 0, Duration::from_secs(10));
        // The watcher retries with backoff meanwhile: still one warning per state.
        std::thread::sleep(Duration::from_secs(3));
        let log = gw.proc.log_text();
        assert_eq!(log.matches("cannot read the catalog's services").count(), 1, "{what}: {log}");
        assert_eq!(log.matches("Consul refuses the gateway's reads").count(), 1, "{what}: {log}");
        let secrets: Vec<&str> = [Some(consul.acl_master()), token.map(String::as_str)].into_iter().flatten().collect();
        assert_no_secret(what, &log, &secrets);
        eprintln!("{what}: {reason}");
    }
}

/// A token whose read permission is taken away while the gateway runs (as when ACLs are turned
/// on after its start): Consul 1.8 then answers the service's reads with empty lists, not 403.
/// The README promises what a 403 gets: routing continues to the last known instances, and
/// `/readyz` says why. Checked in per-service mode (static services, no catalog query) and in
/// multiplexed mode (services followed by tag).
#[test]
fn a_read_permission_revoked_while_running_keeps_the_last_instances() {
    let consul = Consul::start_acl();
    let write = consul.acl_token("e2e-serviceweb", SERVICEWEB_POLICY);
    let web = ServiceWeb::start_env(Some(&[("CONSUL_HTTP_ADDR", consul.addr()), ("CONSUL_HTTP_TOKEN", write)]));
    let cases: [(&str, &[&str]); 2] =
        [("per-service", &["--services", "service-web", "--route-tag=", "--route-prefix-tag="]), ("multiplexed", &[])];
    for (mode, extra) in cases {
        let policy = format!("e2e-gateway-{mode}");
        let read = consul.acl_token(&policy, GATEWAY_POLICY);
        let gw = Gateway::start_env(&[("CONSUL_HTTP_ADDR", consul.addr()), ("CONSUL_HTTP_TOKEN", read)], extra);
        routed(&gw, web.port);
        gw.wait_ready();

        consul.acl_policy_update(&policy, r#"key "nothing" { policy = "read" }"#);
        // Wake the service's blocking query (a failing instance: not routable either way).
        consul.register_critical("service-web", &format!("service-web-critical-{mode}"), 1);
        let reason = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(Duration::from_secs(20), &format!("{mode}: /readyz to say why"), || {
                let (status, body) = gw.readyz();
                (status == 503).then(|| body["reasons"].to_string())
            })
        }))
        .unwrap_or_else(|_| {
            let health = http()
                .get(format!("{}/v1/health/service/service-web", consul.addr()))
                .header("X-Consul-Token", consul.acl_master())
                .send()
                .and_then(|r| r.text())
                .unwrap_or_default();
            panic!(
                "{mode}: still ready; health: {health}\ngateway log:\n{}\nserviceweb: {}",
                gw.proc.log_text(),
                web.proc.log_text()
            )
        });
        assert!(reason.contains("service:read, node:read"), "{mode}: {reason}");
        let client = http();
        for _ in 0..10 {
            let (status, v) = get_json(&client, &gw.url("/service-web/getRemoteIp")).unwrap();
            assert_eq!(
                status,
                200,
                "{mode}: the last known instance is not routed any more: {v}\n{}",
                gw.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(!gw.proc.log_text().contains("1 -> 0 instances"), "{mode}: {}", gw.proc.log_text());
        consul.deregister(&format!("service-web-critical-{mode}"));
    }
}
