//! `--health-status` through the real gateway: which check statuses make an instance routable,
//! for snapshots from the watcher and for the gateway's own direct reads alike. The instance is
//! registered as `Web` and routed as `web`: Consul matches names without regard to case.

use std::time::Duration;

use e2e::{get_json, http, wait_for, Consul, Gateway, Proc, ServiceWeb};

/// Waits until `GET url` answers `status`, then checks that it keeps answering it.
fn settles_on(url: &str, status: u16, what: &str) {
    let client = http();
    wait_for(Duration::from_secs(10), &format!("{what}: {url} to answer {status}"), || {
        matches!(get_json(&client, url), Ok((s, _)) if s == status).then_some(())
    });
    for _ in 0..5 {
        let (s, v) = get_json(&client, url).unwrap();
        assert_eq!(s, status, "{what}: {v}");
    }
}

#[test]
fn warning_instances_are_routed_only_when_the_setting_allows_it() {
    let consul = Consul::start();
    let b = ServiceWeb::start(None);
    consul.register_ttl("Web", "w-1", b.port, "warning");
    let strict = Gateway::start(&consul, "web", &[]);
    let lenient = Gateway::start(&consul, "web", &["--health-status", "passing,warning"]);
    let (s, l) = (strict.url("/web/health"), lenient.url("/web/health"));
    settles_on(&s, 503, "warning, passing only");
    settles_on(&l, 200, "warning, passing,warning");
    // The check's next status, and what each gateway then answers.
    for (verb, strict_status, lenient_status, what) in
        [("pass", 200, 200, "passing"), ("warn", 503, 200, "warning again"), ("fail", 503, 503, "critical")]
    {
        consul.set_check("service:w-1", verb);
        settles_on(&s, strict_status, &format!("{what}, passing only"));
        settles_on(&l, lenient_status, &format!("{what}, passing,warning"));
    }
    // A node in maintenance: its instances are not routable under either setting.
    consul.set_check("service:w-1", "warn");
    settles_on(&l, 200, "warning before node maintenance, passing,warning");
    consul.maintenance(None, true);
    settles_on(&l, 503, "node maintenance, passing,warning");
}

#[test]
fn the_gateways_direct_read_applies_the_setting_too() {
    let consul = Consul::start();
    let b = ServiceWeb::start(None);
    consul.register_ttl("Web", "w-1", b.port, "warning");
    // The default, then the setting through its environment variable.
    for (env, status) in [(None, 503), (Some("passing,warning"), 200)] {
        let (port, admin) = (e2e::free_port(), e2e::free_port());
        let (listen, admin_listen, addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"), consul.addr());
        // A watcher that exits at once: every answer comes from the gateway's own Consul read.
        let args = ["--listen", &listen, "--admin-listen", &admin_listen, "--consul", &addr, "--services", "web"]
            .into_iter()
            .chain(["--watcher-bin", "/bin/false"])
            .map(String::from)
            .collect::<Vec<_>>();
        let env: Vec<(&str, String)> = env.map(|e| ("GATEWAY_HEALTH_STATUS", e.to_string())).into_iter().collect();
        let gw = Proc::spawn("gateway", &args, &env);
        settles_on(&format!("http://{listen}/web/health"), status, &format!("{env:?}"));
        assert!(gw.log_text().contains("loaded directly from Consul"), "{env:?}: {}", gw.log_text());
    }
}

#[test]
fn an_unusable_setting_is_refused_with_a_clear_error() {
    for (flag, env, why) in [
        (Some("passing,critical"), None, "use --catalog"),
        (Some("passing,sometimes"), None, "unknown status"),
        (None, Some("warning"), "must include passing"),
    ] {
        let mut args = vec!["--watcher-bin".to_string(), "/bin/false".to_string()];
        if let Some(f) = flag {
            args.extend(["--health-status".to_string(), f.to_string()]);
        }
        let env: Vec<(&str, String)> = env.map(|e| ("GATEWAY_HEALTH_STATUS", e.to_string())).into_iter().collect();
        let mut gw = Proc::spawn("gateway", &args, &env);
        let status = gw.wait_exit(Duration::from_secs(10)).expect("the gateway exits");
        assert_eq!(status.code(), Some(2), "{flag:?} {env:?}");
        let log = gw.log_text();
        assert!(log.contains("--health-status") && log.contains(why), "{flag:?} {env:?}: {log}");
    }
}
