use super::*;
use crate::discovery::tag;

fn slot(service: &str) -> Arc<Slot> {
    Arc::new(Slot::new(service, false))
}

fn declared(service: &str, body: &str) -> Route {
    Route::declared(format!("urlprefix-{body}"), tag::parse(body).unwrap(), slot(service))
}

fn table(routes: Vec<Route>) -> RouteTable {
    RouteTable::build(routes).0
}

fn hit(t: &RouteTable, host: &str, path: &str) -> Option<String> {
    let host = (!host.is_empty()).then_some(host.as_bytes());
    t.lookup(host, path).map(|r| format!("{}:{}", r.service, r.shown()))
}

#[test]
fn longest_prefix_on_segment_boundaries() {
    let t = table(vec![
        declared("root", "/"),
        declared("api", "/api"),
        declared("v1", "/api/v1"),
        declared("dir", "/static/"),
    ]);
    assert_eq!(hit(&t, "", "/api").as_deref(), Some("api:/api"));
    assert_eq!(hit(&t, "", "/api/x").as_deref(), Some("api:/api"));
    assert_eq!(hit(&t, "", "/api/v1").as_deref(), Some("v1:/api/v1"));
    assert_eq!(hit(&t, "", "/api/v1/users/7").as_deref(), Some("v1:/api/v1"));
    assert_eq!(hit(&t, "", "/api/v10").as_deref(), Some("api:/api"), "not a segment boundary");
    assert_eq!(hit(&t, "", "/apix").as_deref(), Some("root:/"));
    assert_eq!(hit(&t, "", "/static/a.css").as_deref(), Some("dir:/static/"));
    assert_eq!(hit(&t, "", "/static").as_deref(), Some("root:/"), "a route ending in / matches only below it");
    assert_eq!(hit(&t, "", "/").as_deref(), Some("root:/"));
    let no_root = table(vec![declared("api", "/api")]);
    assert_eq!(hit(&no_root, "", "/other"), None);
    assert_eq!(hit(&no_root, "", "*"), None);
}

#[test]
fn exact_host_then_wildcard_then_any_host() {
    let t = table(vec![
        declared("exact", "api.example.com/v1"),
        declared("wild", "*.example.com/v1"),
        declared("deeper", "*.eu.example.com/v1"),
        declared("any", "/v1"),
        declared("catchall", "/"),
    ]);
    assert_eq!(hit(&t, "api.example.com", "/v1/x").as_deref(), Some("exact:api.example.com/v1"));
    assert_eq!(hit(&t, "API.Example.com:8080", "/v1").as_deref(), Some("exact:api.example.com/v1"), "case, port");
    assert_eq!(hit(&t, "api.example.com.", "/v1").as_deref(), Some("exact:api.example.com/v1"), "trailing dot");
    assert_eq!(hit(&t, "web.example.com", "/v1").as_deref(), Some("wild:*.example.com/v1"));
    assert_eq!(hit(&t, "a.b.example.com", "/v1").as_deref(), Some("wild:*.example.com/v1"), "several labels");
    assert_eq!(hit(&t, "x.eu.example.com", "/v1").as_deref(), Some("deeper:*.eu.example.com/v1"));
    assert_eq!(hit(&t, "example.com", "/v1").as_deref(), Some("any:/v1"), "the bare domain is not *.domain");
    assert_eq!(hit(&t, "other.org", "/v1").as_deref(), Some("any:/v1"));
    assert_eq!(hit(&t, "", "/v1").as_deref(), Some("any:/v1"), "no Host");
    // A host tier without the path lets the request fall to the next tier.
    assert_eq!(hit(&t, "api.example.com", "/v2").as_deref(), Some("catchall:/"));
}

#[test]
fn collisions_are_decided_by_service_then_name_route_then_tag() {
    let (t, conflicts) = RouteTable::build(vec![
        declared("b", "/x"),
        declared("a", "/x strip=/x"),
        declared("a", "/x"),
        Route::name(slot("c")),
        declared("c", "/c"),
    ]);
    assert_eq!(t.lookup(None, "/x").unwrap().tag.as_deref(), Some("urlprefix-/x"), "service a, smaller tag");
    assert_eq!(t.lookup(None, "/c").unwrap().tag, None, "the name route beats the declared one");
    assert_eq!(conflicts.len(), 3);
    assert!(conflicts.iter().all(|c| c.winner.starts_with('a') || c.winner.starts_with('c')), "{conflicts:?}");
    // The same routes in another order: the same table.
    let (again, _) = RouteTable::build(vec![
        Route::name(slot("c")),
        declared("a", "/x"),
        declared("c", "/c"),
        declared("a", "/x strip=/x"),
        declared("b", "/x"),
    ]);
    let shown = |t: &RouteTable| t.routes().iter().map(|r| format!("{:?}", r.key())).collect::<Vec<_>>();
    assert_eq!(shown(&t), shown(&again));
}

#[test]
fn routes_are_listed_in_match_order() {
    let t = table(vec![
        declared("any", "/"),
        declared("long", "/a/b"),
        declared("wild", "*.example.com/"),
        declared("deeper", "*.eu.example.com/"),
        declared("exact", "b.example.com/"),
        declared("exact2", "a.example.com/x"),
    ]);
    let order: Vec<String> = t.routes().iter().map(|r| r.shown()).collect();
    assert_eq!(order, ["a.example.com/x", "b.example.com/", "*.eu.example.com/", "*.example.com/", "/a/b", "/"]);
}

#[test]
fn many_routes_still_match_by_hash() {
    let routes: Vec<Route> = (0..10_000).map(|i| Route::name(slot(&format!("svc-{i}")))).collect();
    let t = table(routes);
    assert_eq!(t.len(), 10_000);
    assert_eq!(hit(&t, "", "/svc-9999/x").as_deref(), Some("svc-9999:/svc-9999"));
    assert_eq!(hit(&t, "", "/svc-10000/x"), None);
}

#[test]
fn long_request_paths_match_like_short_ones() {
    let t = table(vec![declared("api", "/api"), declared("deep", "/a/b/c/"), declared("root", "/")]);
    let long = format!("/api/{}", "x/".repeat(30_000));
    assert_eq!(hit(&t, "", &long).as_deref(), Some("api:/api"));
    let deep = format!("/a/b/c/{}", "é/".repeat(10_000));
    assert_eq!(hit(&t, "", &deep).as_deref(), Some("deep:/a/b/c/"));
    assert_eq!(hit(&t, "", &format!("/a/b/cd/{}", "y/".repeat(10_000))).as_deref(), Some("root:/"));
    // A multi-byte character across the cut-off: no panic, the right answer.
    assert_eq!(hit(&t, "", "/apé").as_deref(), Some("root:/"));
    assert_eq!(hit(&t, "", "/a/b/é").as_deref(), Some("root:/"));
}
