//! The real registrator binary against a real Consul dev agent and the real Docker engine:
//! registration from events, deregistration on kill, pause/unpause, and a registrator restart
//! that must neither leave a stale entry nor miss a container started while it was down.
//!
//! Needs a Docker engine: without one the test fails (it never passes without running).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{require_docker, test_image, wait_for, Consul, Container};

const WAIT: Duration = Duration::from_secs(10);

fn service<'a>(services: &'a serde_json::Map<String, Value>, id: &str) -> Option<&'a Value> {
    services.get(id)
}

fn wait_registered(consul: &Consul, id: &str) -> Value {
    wait_for(WAIT, &format!("{id} to be registered"), || service(&consul.agent_services()?, id).cloned())
}

fn wait_gone(consul: &Consul, id: &str, within: Duration) {
    wait_for(within, &format!("{id} to be deregistered"), || {
        let s = consul.agent_services()?;
        service(&s, id).is_none().then_some(())
    });
}

#[test]
fn registers_follows_events_and_repairs_after_restart() {
    require_docker();
    let image = test_image();
    let consul = Consul::start();
    // A unique owner per run: service IDs are `<hostname>:<container>:<port>`.
    let pid = std::process::id();
    let host = format!("regtest{pid}");
    let name = |s: &str| format!("regtest-{pid}-{s}");
    consul.register("foreign", "foreign-1", 1);

    let web = Container::run(
        &name("web"),
        &[
            "--expose",
            "3000",
            "-e",
            "SERVICE_3000_NAME=regtest-web",
            "-e",
            r"SERVICE_TAGS=a,b\,c",
            "-e",
            "SERVICE_CHECK_TCP=true",
            "-e",
            "SERVICE_CHECK_INTERVAL=1s",
            "--label",
            "SERVICE_REGION=eu",
            &image,
            "sleep",
            "600",
        ],
    );
    let ignored =
        Container::run(&name("ignored"), &["--expose", "4000", "-e", "SERVICE_IGNORE=1", &image, "sleep", "600"]);

    // A long resync period: anything faster than it below is the event path at work.
    let mut reg = support::registrator(&consul, &["--internal", "--hostname", &host, "--resync", "1h"]);
    let web_id = format!("{host}:{}:3000", web.name);
    let svc = wait_registered(&consul, &web_id);
    assert_eq!(svc["Service"], "regtest-web", "{svc}");
    assert_eq!(svc["Address"], web.ip(), "{svc}");
    assert_eq!(svc["Port"], 3000);
    assert_eq!(svc["Tags"], serde_json::json!(["a", "b,c"]));
    assert_eq!(svc["Meta"]["region"], "eu");
    assert_eq!(svc["Meta"]["registrator-owner"], host.as_str());
    let ignored_id = format!("{host}:{}:4000", ignored.name);
    assert!(service(&consul.agent_services().expect("services"), &ignored_id).is_none(), "SERVICE_IGNORE");

    // Kill: the die event deregisters long before any resync.
    support::docker(&["kill", &web.name]).expect("kill");
    wait_gone(&consul, &web_id, Duration::from_secs(5));
    // The registrator logs after Consul confirmed the deregistration: give the line a moment.
    let line = format!("deregistered {web_id}");
    wait_for(Duration::from_secs(5), "the deregistration log line", || reg.log_text().contains(&line).then_some(()));

    // Pause makes a container unable to serve; unpause brings it back.
    let paused = Container::run(&name("paused"), &["--expose", "5000", &image, "sleep", "600"]);
    let paused_id = format!("{host}:{}:5000", paused.name);
    let svc = wait_registered(&consul, &paused_id);
    assert_eq!(svc["Service"], base(&image), "default name from the image: {svc}");
    support::docker(&["pause", &paused.name]).expect("pause");
    wait_gone(&consul, &paused_id, Duration::from_secs(5));
    support::docker(&["unpause", &paused.name]).expect("unpause");
    wait_registered(&consul, &paused_id);

    // Registrator down: one container goes away, another appears. The restart must repair both.
    let doomed = Container::run(&name("doomed"), &["--expose", "6000", &image, "sleep", "600"]);
    let doomed_id = format!("{host}:{}:6000", doomed.name);
    wait_registered(&consul, &doomed_id);
    reg.kill();
    drop(doomed);
    let late = Container::run(&name("late"), &["--expose", "7000", &image, "sleep", "600"]);
    let late_id = format!("{host}:{}:7000", late.name);
    std::thread::sleep(Duration::from_millis(500));
    let before = consul.agent_services().expect("services");
    assert!(service(&before, &doomed_id).is_some(), "nobody should have removed it yet");
    assert!(service(&before, &late_id).is_none(), "nobody should have added it yet");

    let reg2 = support::registrator(&consul, &["--internal", "--hostname", &host, "--resync", "1h"]);
    wait_registered(&consul, &late_id);
    wait_gone(&consul, &doomed_id, WAIT);
    let after = consul.agent_services().expect("services");
    assert!(service(&after, &paused_id).is_some(), "running containers keep their registration");
    assert!(service(&after, "foreign-1").is_some(), "a registration that is not ours must survive");
    for (id, s) in &after {
        if s["Meta"]["registrator-owner"] == host.as_str() {
            let cid = s["Meta"]["registrator-container"].as_str().unwrap_or_default();
            let running = support::docker(&["inspect", "-f", "{{.State.Running}}", cid]);
            assert_eq!(running.as_deref(), Ok("true"), "{id} belongs to a container that is not running");
        }
    }
    assert!(!reg2.log_text().contains("panicked"), "{}", reg2.log_text());
}

/// The default service name for an image: its base name without tag.
fn base(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split(':').next().unwrap_or(last).to_string()
}
