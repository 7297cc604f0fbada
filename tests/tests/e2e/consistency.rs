//! `--consistency` end to end (issue 11, item 5): the gateway passes the mode to its watcher,
//! routes with it against a real agent, and refuses a mode Consul does not have. (Which query
//! string each mode makes is checked in `consul/src/client.rs`.)

use std::time::Duration;

use e2e::{get_json, http, wait_for, Consul, Gateway, Proc, ServiceWeb};

#[test]
fn stale_and_consistent_reads_route_and_reach_the_watcher() {
    let consul = Consul::start();
    let web = ServiceWeb::start(Some(&consul));
    for mode in ["stale", "consistent"] {
        let gw = Gateway::start_env(&[("CONSUL_HTTP_ADDR", consul.addr()), ("GATEWAY_CONSISTENCY", mode.into())], &[]);
        let client = http();
        wait_for(Duration::from_secs(20), &format!("{mode}: service-web routed"), || {
            let (status, v) = get_json(&client, &gw.url("/service-web/getRemoteIp")).ok()?;
            (status == 200 && v["port"].as_u64() == Some(u64::from(web.port))).then_some(())
        });
        gw.wait_ready();
        let pid = gw.watcher_pid();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap().replace('\0', " ");
        assert!(cmdline.contains(&format!("--consistency {mode}")), "{cmdline}");
        gw.proc.wait_for_log(&format!("consistency={mode}"), 0, Duration::from_secs(5));
    }
}

#[test]
fn an_unknown_mode_is_a_clear_error() {
    for (args, env) in [
        (vec!["--consistency".to_string(), "eventual".to_string()], vec![]),
        (vec![], vec![("GATEWAY_CONSISTENCY", "eventual".to_string())]),
    ] {
        let mut p = Proc::spawn("gateway", &args, &env);
        let status = p.wait_exit(Duration::from_secs(5)).expect("exits");
        assert_eq!(status.code(), Some(2), "{args:?} {env:?}");
        let logs = p.log_text();
        assert!(logs.contains("--consistency") && logs.contains("default, stale or consistent"), "{logs}");
        assert!(!logs.contains("panicked"), "{logs}");
    }
    let mut w = Proc::spawn("watcher", &["--service".into(), "a".into(), "--consistency".into(), "x".into()], &[]);
    assert_eq!(w.wait_exit(Duration::from_secs(5)).expect("exits").code(), Some(2));
    assert!(w.log_text().contains("default, stale or consistent"), "{}", w.log_text());
}
