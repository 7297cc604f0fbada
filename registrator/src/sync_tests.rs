//! Unit tests of ownership, planning and the deregistration policy.

use std::collections::BTreeMap;

use super::*;

fn reg(id: &str, container: &str, spec: &str) -> AgentRegistration {
    let mut meta = BTreeMap::new();
    meta.insert(META_OWNER.to_string(), "me".to_string());
    meta.insert(META_CONTAINER.to_string(), container.to_string());
    meta.insert(META_SPEC.to_string(), spec.to_string());
    AgentRegistration { id: id.into(), name: "web".into(), port: 1, meta, ..Default::default() }
}

fn own(id: &str, container: &str, spec: &str) -> Owned {
    Owned { id: id.into(), container: container.into(), spec: Some(spec.into()) }
}

fn agent_service(id: &str, meta: &[(&str, &str)]) -> AgentService {
    let json = serde_json::json!({
        "ID": id, "Service": "web", "Port": 1,
        "Meta": meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    });
    serde_json::from_value(json).expect("agent service")
}

#[test]
fn only_services_with_our_owner_mark_are_ours() {
    let mut services = HashMap::new();
    for (id, meta) in [
        ("mine", vec![(META_OWNER, "me"), (META_CONTAINER, "c1")]),
        ("other-host", vec![(META_OWNER, "them"), (META_CONTAINER, "c2")]),
        ("hand-made", vec![]),
    ] {
        services.insert(id.to_string(), agent_service(id, &meta));
    }
    let mut no_meta = agent_service("no-meta", &[]);
    no_meta.meta = None;
    services.insert("no-meta".into(), no_meta);
    let got = owned(&services, "me");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "mine");
    assert_eq!(got[0].container, "c1");
}

#[test]
fn registers_missing_and_changed_but_not_unchanged() {
    let desired = vec![reg("a", "c1", "s1"), reg("b", "c1", "s2"), reg("c", "c2", "s3")];
    let current = [own("a", "c1", "s1"), own("b", "c1", "old")];
    let p = plan(desired, &current, Scope::All, &BTreeSet::new());
    let ids: Vec<&str> = p.register.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    assert!(p.deregister.is_empty());
}

#[test]
fn resync_removes_ours_that_are_no_longer_wanted() {
    let current = [own("a", "c1", "s"), own("gone", "c9", "s")];
    let p = plan(vec![reg("a", "c1", "s")], &current, Scope::All, &BTreeSet::new());
    assert_eq!(p.deregister, ["gone"]);
}

#[test]
fn container_scope_leaves_other_containers_alone() {
    let current = [own("a", "c1", "s"), own("b", "c2", "s")];
    let p = plan(vec![], &current, Scope::Container("c1"), &BTreeSet::new());
    assert_eq!(p.deregister, ["a"]);
}

#[test]
fn kept_containers_keep_their_registrations() {
    let current = [own("a", "crashed", "s"), own("b", "stopped", "s")];
    let keep = BTreeSet::from(["crashed".to_string()]);
    let p = plan(vec![], &current, Scope::All, &keep);
    assert_eq!(p.deregister, ["b"]);
}

#[test]
fn duplicate_ids_register_once() {
    let p = plan(vec![reg("same", "c1", "x"), reg("same", "c1", "y")], &[], Scope::All, &BTreeSet::new());
    assert_eq!(p.register.len(), 1);
    assert_eq!(p.register[0].meta[META_SPEC], "x");
}

#[test]
fn on_success_keeps_only_failed_exits() {
    let p = Deregister::OnSuccess;
    assert!(p.keeps(1));
    assert!(p.keeps(2));
    assert!(!p.keeps(0));
    assert!(!p.keeps(137), "SIGKILL (docker kill) deregisters");
    assert!(!p.keeps(143), "SIGTERM (docker stop) deregisters");
    assert!(!Deregister::Always.keeps(1));
}

#[test]
fn description_names_id_address_and_check() {
    let mut r = reg("h:web:3000", "c", "s");
    r.address = "172.18.0.5".into();
    r.port = 3000;
    r.check = Some(consul::AgentCheck {
        http: Some("http://172.18.0.5:3000/health".into()),
        interval: Some("2s".into()),
        ..Default::default()
    });
    assert_eq!(describe(&r), "h:web:3000 as web at 172.18.0.5:3000 check http http://172.18.0.5:3000/health every 2s");
}
