//! The gateway's application of watcher lines (`gateway::discovery::socket::apply`) to a fresh
//! [`Services`] following the static service `web` with the default tag rules.
//!
//! The input is a sequence of lines. Invariants, after every line: no panic; the static service
//! is still followed; a snapshot's index is the followed set's index; a `gone` service is no
//! longer followed (unless static); after a `services` list every followed service is static or
//! listed; every route in the table belongs to a followed service.
#![no_main]

use std::collections::BTreeSet;
use std::sync::Arc;

use gateway::discovery::direct::StaticRead;
use gateway::discovery::services::Services;
use gateway::discovery::socket::apply;
use gateway::discovery::tag::TagRules;
use libfuzzer_sys::fuzz_target;
use watcher::protocol::{decode, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let services = Services::new(["web".to_string()], TagRules::default(), Arc::new(StaticRead::default()));
    for line in text.lines().take(64) {
        apply(line, &services);
        let followed: BTreeSet<String> = services.slots().iter().map(|s| s.service.clone()).collect();
        assert!(followed.contains("web"), "the static service is always followed");
        match decode(line) {
            Ok(Some(Message::Snapshot(s))) => {
                if let Some(slot) = services.slots().into_iter().find(|slot| slot.service == s.service) {
                    let set = slot.set().expect("a followed service with a snapshot has a set");
                    assert_eq!(set.index, s.index, "{line}");
                }
            }
            Ok(Some(Message::Gone(g))) if g.service != "web" => {
                assert!(!followed.contains(&g.service), "{line}");
            }
            Ok(Some(Message::Services(l))) => {
                let listed: BTreeSet<&str> = l.services.iter().map(String::as_str).collect();
                assert!(followed.iter().all(|s| s == "web" || listed.contains(s.as_str())), "{line}");
            }
            _ => {}
        }
        for route in services.table().routes() {
            assert!(followed.contains(&route.service), "route {} of an unfollowed service", route.shown());
        }
    }
});
