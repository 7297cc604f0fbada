use super::*;
use crate::discovery::direct::{FetchFuture, StaticRead};
use std::sync::atomic::{AtomicUsize, Ordering};
use watcher::protocol::GoneReason;

fn inst(port: u16, tags: &[&str]) -> Instance {
    let mut i = Instance::new(format!("i{port}"), "n", "127.0.0.1", port);
    i.tags = tags.iter().map(|t| t.to_string()).collect();
    i
}

fn rules() -> TagRules {
    TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() }
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn services(statics: &[&str]) -> Services {
    Services::new(statics.iter().map(|s| s.to_string()), rules(), Arc::new(StaticRead::default()))
}

/// `service:host/path` of every route, in match order.
fn routes(s: &Services) -> Vec<String> {
    s.table().routes().iter().map(|r| format!("{}:{}", r.service, r.shown())).collect()
}

struct Counting(AtomicUsize, Result<Vec<Instance>, String>);
impl DirectRead for Counting {
    fn fetch<'a>(&'a self, _: &'a str) -> FetchFuture<'a> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let r = self.1.clone().map(|v| (5, v));
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            r
        })
    }
}

fn slot_of(s: &Services, name: &str) -> Arc<Slot> {
    s.slots().into_iter().find(|x| x.service == name).unwrap()
}

#[tokio::test]
async fn concurrent_misses_make_one_consul_call() {
    let d = Arc::new(Counting(AtomicUsize::new(0), Ok(vec![inst(1, &[])])));
    let s = Arc::new(Services::new(["web".to_string()], rules(), d.clone()));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.set_or_fetch(&slot_of(&s, "web")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().endpoints.len(), 1);
    }
    assert_eq!(d.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failed_reads_are_not_repeated_in_a_burst() {
    let d = Arc::new(Counting(AtomicUsize::new(0), Err("down".into())));
    let s = Services::new(["web".to_string()], rules(), d.clone());
    for _ in 0..5 {
        assert_eq!(s.set_or_fetch(&slot_of(&s, "web")).await.unwrap_err(), "down");
    }
    assert_eq!(d.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_snapshot_during_a_direct_read_wins() {
    let d = Arc::new(Counting(AtomicUsize::new(0), Ok(vec![inst(1, &[])])));
    let s = Arc::new(Services::new(["web".to_string()], rules(), d));
    let reading = tokio::spawn({
        let s = s.clone();
        async move { s.set_or_fetch(&slot_of(&s, "web")).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    s.apply_snapshot("web", 9, vec![inst(2, &[]), inst(3, &[])], vec![]);
    assert_eq!(reading.await.unwrap().endpoints.len(), 2, "the watcher's set, not the direct read's");
    assert_eq!(slot_of(&s, "web").set().unwrap().index, 9);
}

#[test]
fn static_services_are_routed_by_name_before_anything_is_known() {
    let s = services(&["web", "api"]);
    assert_eq!(routes(&s), ["api:/api", "web:/web"]);
    assert!(slot_of(&s, "web").set().is_none());
}

#[test]
fn snapshots_replace_sets_keep_endpoints_and_ignore_services_not_opted_in() {
    let s = services(&["web"]);
    s.apply_snapshot("web", 3, vec![inst(1, &[]), inst(2, &[])], vec![]);
    s.apply_snapshot("other", 3, vec![inst(9, &[])], tags(&["unrelated"]));
    assert_eq!(s.slots().len(), 1, "an untagged, unnamed service is never followed");
    let before = slot_of(&s, "web").set().unwrap();
    s.apply_snapshot("web", 4, vec![inst(2, &[])], vec![]);
    let set = slot_of(&s, "web").set().unwrap();
    assert_eq!((set.endpoints.len(), set.index, set.origin), (1, 4, Origin::Watcher));
    assert!(Arc::ptr_eq(&set.endpoints[0], &before.endpoints[1]), "an unchanged instance keeps its endpoint");
    assert_eq!(s.endpoints().len(), 1);
}

#[test]
fn tagged_services_come_and_go_with_their_routes() {
    let s = services(&[]);
    assert!(routes(&s).is_empty());
    s.apply_snapshot("billing", 5, vec![inst(1, &["gateway"])], tags(&["gateway"]));
    s.apply_snapshot(
        "api",
        5,
        vec![inst(2, &["urlprefix-api.example.com/v1 strip=/v1"])],
        tags(&["urlprefix-api.example.com/v1 strip=/v1", "urlprefix-/broken nope=1", "other"]),
    );
    assert_eq!(routes(&s), ["api:api.example.com/v1", "billing:/billing"], "the bad tag is skipped alone");
    let table = s.table();
    let r = table.lookup(Some(b"api.example.com"), "/v1/users").unwrap();
    assert_eq!(r.strip.as_deref(), Some("/v1"));
    let set = r.slot.set().unwrap();
    assert_eq!(set.candidates(r.tag.as_deref()).unwrap().count(), 1);
    // Tags change: the route moves with them.
    s.apply_snapshot("api", 6, vec![inst(2, &["urlprefix-/v2"])], tags(&["urlprefix-/v2"]));
    assert_eq!(routes(&s), ["billing:/billing", "api:/v2"], "longest path first");
    s.apply_gone("billing", GoneReason::Deregistered);
    assert_eq!(routes(&s), ["api:/v2"]);
    s.apply_list(&["other".to_string()]);
    assert!(routes(&s).is_empty(), "a service missing from the watcher's list is dropped");
}

#[test]
fn static_services_stay_when_gone_or_unlisted() {
    let s = services(&["web"]);
    s.apply_snapshot("web", 1, vec![inst(1, &[])], vec![]);
    s.apply_gone("web", GoneReason::Deregistered);
    s.apply_list(&[]);
    assert_eq!(routes(&s), ["web:/web"]);
}

#[test]
fn a_declared_route_sends_to_the_instances_carrying_its_tag_and_splits_canaries() {
    let s = services(&[]);
    let t = "urlprefix-/shop split=canary:10";
    s.apply_snapshot(
        "shop",
        1,
        vec![inst(1, &[t]), inst(2, &[t, "canary"]), inst(3, &["urlprefix-/old"]), inst(4, &[t])],
        tags(&[t, "canary", "urlprefix-/old"]),
    );
    let set = slot_of(&s, "shop").set().unwrap();
    let choice = set.candidates(Some(t)).unwrap();
    let ports =
        |c: &crate::proxy::balancer::Candidates| c.endpoints().iter().map(|e| e.instance.port).collect::<Vec<_>>();
    assert_eq!(ports(&choice.main), [1, 4]);
    let split = choice.split.as_ref().unwrap();
    assert_eq!((ports(&split.canary), split.percent), (vec![2], 10));
    assert_eq!(ports(&set.candidates(Some("urlprefix-/old")).unwrap().main), [3]);
}

#[test]
fn staleness_follows_watcher_and_consul() {
    let s = services(&["web"]);
    assert!(s.freshness().stale_reason("web").is_some());
    s.freshness().set_watcher_connected(true);
    assert!(s.freshness().stale_reason("web").is_none());
    s.freshness().set_readable("web", Some("connection refused".into()));
    assert!(s.freshness().stale_reason("web").unwrap().contains("cannot read it from Consul"));
    s.freshness().set_readable("web", None);
    assert!(s.freshness().stale_reason("web").is_none());
    assert_eq!(s.unlisted_reasons().len(), 1, "not listed yet");
    s.apply_snapshot("early", 1, vec![], tags(&["gateway"]));
    s.apply_list(&["early".to_string(), "a".to_string(), "b".to_string()]);
    assert_eq!(s.unlisted_reasons(), ["a: not loaded yet", "b: not loaded yet"], "listed, no snapshot yet");
    s.apply_snapshot("a", 1, vec![], tags(&["gateway"]));
    // Even a snapshot this gateway does not route (no opt-in tag it knows) counts as loaded.
    s.apply_snapshot("b", 1, vec![], tags(&[" odd"]));
    assert!(s.unlisted_reasons().is_empty());
}

#[test]
fn a_batch_rebuilds_the_table_once_at_its_end() {
    let s = services(&[]);
    s.begin_batch();
    for i in 0..50 {
        s.apply_snapshot(&format!("svc-{i:02}"), 1, vec![inst(1000 + i, &["gateway"])], tags(&["gateway"]));
    }
    assert!(routes(&s).is_empty(), "nothing swapped in before the batch ends");
    s.end_batch();
    assert_eq!(routes(&s).len(), 50);
    // Outside a batch, each change shows at once.
    s.apply_gone("svc-00", GoneReason::Deregistered);
    assert_eq!(routes(&s).len(), 49);
}

#[test]
fn a_bad_tag_is_reported_again_only_after_it_went_away() {
    let s = services(&[]);
    let bad = "urlprefix-/x allow=ip:10.0.0.0/8";
    s.apply_snapshot("a", 1, vec![], tags(&["gateway", bad]));
    s.apply_snapshot("a", 2, vec![inst(1, &[])], tags(&["gateway", bad, "v2"]));
    assert_eq!(lock(&s.writer).warned.len(), 1);
    s.apply_snapshot("a", 3, vec![inst(1, &[])], tags(&["gateway"]));
    assert!(lock(&s.writer).warned.is_empty(), "forgotten once the tag is gone");
}

#[test]
fn routes_follow_the_routable_instances_while_a_tag_change_reaches_catalog_and_instances_apart() {
    let s = services(&[]);
    s.apply_snapshot("mover", 1, vec![inst(1, &["urlprefix-/old"])], tags(&["urlprefix-/old"]));
    // The catalog's new tags arrive first, with the instances as last read: no route without an
    // instance to serve it.
    s.apply_snapshot("mover", 2, vec![inst(1, &["urlprefix-/old"])], tags(&["urlprefix-/new"]));
    assert_eq!(routes(&s), ["mover:/old"]);
    s.apply_snapshot("mover", 3, vec![inst(1, &["urlprefix-/new"])], tags(&["urlprefix-/new"]));
    assert_eq!(routes(&s), ["mover:/new"]);
    // The instances first, the catalog after: the same.
    s.apply_snapshot("mover", 4, vec![inst(1, &["urlprefix-/x"])], tags(&["urlprefix-/new"]));
    assert_eq!(routes(&s), ["mover:/x"]);
    let set = slot_of(&s, "mover").set().unwrap();
    assert_eq!(set.candidates(Some("urlprefix-/x")).unwrap().count(), 1);
    // No routable instance: the catalog's tags keep the route, which answers 503.
    s.apply_snapshot("mover", 5, vec![], tags(&["urlprefix-/x"]));
    assert_eq!(routes(&s), ["mover:/x"]);
}

#[test]
fn a_declared_route_whose_instances_all_fail_stays_while_others_of_its_service_pass() {
    let s = services(&[]);
    let reports = "urlprefix-/reports";
    // The instance carrying the route failed its check; another instance of the service passes.
    s.apply_snapshot("rep", 1, vec![inst(2, &["gateway"])], tags(&["gateway", reports]));
    assert_eq!(routes(&s), ["rep:/reports", "rep:/rep"], "no fall-through to a shorter route");
    let set = slot_of(&s, "rep").set().unwrap();
    assert_eq!(set.candidates(Some(reports)).unwrap().count(), 0, "so it answers 503");
}
