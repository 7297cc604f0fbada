//! The Consul JSON model: the bodies of Consul's HTTP answers as the `consul` crate parses them.
//!
//! The first byte picks the endpoint, the rest is the body:
//! - 0: `/v1/health/service/<s>` and 1: `/v1/catalog/service/<s>` (`consul::parse_instances`);
//! - 2: `/v1/catalog/node/<n>` (`consul::cluster::node_prints`);
//! - 3: `/v1/health/state/any` (`Vec<consul::model::CheckState>`);
//! - 4: `/v1/agent/services` (`HashMap<String, consul::model::AgentService>`).
//!
//! Invariants: no panic; instances come out in canonical order; the health view with
//! `passing,warning` keeps every instance `passing` keeps, and both parse or fail alike; the
//! catalog view is always `checkless`; every instance goes through the watcher protocol
//! unchanged (it is what the watcher sends the gateway); parsing is deterministic.
#![no_main]

use std::collections::HashMap;

use consul::model::{canonical, AgentService, CheckState};
use consul::{parse_instances, HealthStatuses, View};
use libfuzzer_sys::fuzz_target;
use watcher::protocol::{decode, encode, Message, Snapshot};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 5 {
        0 => {
            let strict = parse_instances(View::Health(HealthStatuses::PASSING), 7, body);
            let loose = parse_instances(View::Health(HealthStatuses::PASSING_WARNING), 7, body);
            assert_eq!(strict.is_ok(), loose.is_ok());
            if let (Ok(strict), Ok(loose)) = (strict, loose) {
                assert_eq!(strict.checkless, loose.checkless);
                for i in &strict.instances {
                    assert!(loose.instances.contains(i), "passing-only kept {i:?}, passing,warning lost it");
                }
                check_instances(&strict.instances);
                check_instances(&loose.instances);
            }
        }
        1 => {
            if let Ok(r) = parse_instances(View::Catalog, 7, body) {
                assert!(r.checkless);
                assert_eq!(r.index, 7);
                check_instances(&r.instances);
            }
        }
        2 => {
            let a = consul::cluster::node_prints(body).map_err(|e| e.to_string());
            let b = consul::cluster::node_prints(body).map_err(|e| e.to_string());
            assert_eq!(a, b, "prints (and errors) are deterministic");
        }
        3 => {
            if let Ok(checks) = serde_json::from_slice::<Vec<CheckState>>(body) {
                let again: Vec<CheckState> = serde_json::from_slice(body).expect("parses twice");
                assert_eq!(checks, again);
            }
        }
        _ => {
            let _ = serde_json::from_slice::<HashMap<String, AgentService>>(body);
        }
    }
});

fn check_instances(instances: &[consul::Instance]) {
    assert_eq!(canonical(instances.to_vec()), instances, "canonical order");
    let msg =
        Message::Snapshot(Snapshot { service: "s".into(), index: 7, tags: vec![], instances: instances.to_vec() });
    let line = encode(&msg);
    let back = decode(line.trim_end_matches('\n')).expect("a snapshot of parsed instances decodes");
    assert_eq!(back, Some(msg), "instances survive the watcher protocol");
}
