//! The registrator survives its dependencies going away: Docker unreachable, Consul unreachable
//! at start, Consul restarted with an empty state. It keeps running, retries at a bounded pace
//! (no busy loop), and repairs the registrations once the dependency is back.

mod support;

use std::time::Duration;

use support::{free_port, require_docker, test_image, wait_for, Consul, Container};

#[test]
fn unreachable_docker_is_retried_with_backoff_not_spun_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = format!("unix://{}/no-docker.sock", dir.path().display());
    let consul = format!("http://127.0.0.1:{}", free_port());
    let mut reg = support::registrator_at(&consul, &["--internal", "--hostname", "h"], &[("DOCKER_HOST", &sock)]);
    let started = std::time::Instant::now();
    wait_for(Duration::from_secs(15), "three reconnect attempts", || {
        (reg.log_text().matches("reconnecting to Docker").count() >= 3).then_some(())
    });
    // Backoff 0.5 s then 1 s, each jittered down to no less than half (common::backoff): the
    // third attempt comes after at least 0.25 + 0.5 s. A busy loop would log thousands by then.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(750), "3 retries after only {elapsed:?}:\n{}", reg.log_text());
    let retries = reg.log_text().matches("reconnecting to Docker").count();
    assert!(retries <= 3 + elapsed.as_secs() as usize, "{retries} retries in {elapsed:?}");
    assert!(reg.is_running(), "registrator exited: {}", reg.log_text());
}

#[test]
fn consul_down_at_start_then_up_gets_everything_registered() {
    require_docker();
    let image = test_image();
    let pid = std::process::id();
    let host = format!("outage{pid}");
    let web = Container::run(&format!("outage-{pid}-web"), &["--expose", "3000", &image, "sleep", "600"]);
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let mut reg = support::registrator_at(&addr, &["--internal", "--hostname", &host, "--resync", "1h"], &[]);
    // Container events while Consul is down each fail to apply; they must not push the retry
    // of the repair far into the future.
    let started = std::time::Instant::now();
    for i in 0..4 {
        support::docker(&["run", "--rm", "--name", &format!("outage-{pid}-blip{i}"), &image, "true"]).expect("blip");
    }
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    assert!(reg.is_running(), "registrator exited: {}", reg.log_text());
    let retries = reg.log_text().matches("resync incomplete").count();
    assert!((1..=8).contains(&retries), "{retries} retries in {:?}:\n{}", started.elapsed(), reg.log_text());

    let mut consul = Consul::start_on(port);
    let id = format!("{host}:{}:3000", web.name);
    wait_for(Duration::from_secs(15), "registration once Consul is up", || consul.agent_services()?.get(&id).cloned());

    // A restarted dev agent has forgotten everything; the periodic resync puts it back. The
    // resync period is long here, so use a second registrator with a short one.
    reg.kill();
    let _reg2 = support::registrator_at(&addr, &["--internal", "--hostname", &host, "--resync", "2s"], &[]);
    // Dev mode keeps state in memory only: whatever is registered after this came from reg2.
    consul.restart_empty();
    wait_for(Duration::from_secs(10), "re-registration after the Consul restart", || {
        consul.agent_services()?.get(&id).cloned()
    });
}
