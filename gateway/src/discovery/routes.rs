//! The route table: which route answers a request, by host and path. One immutable value, built
//! whole from the followed services and swapped in ([`super::services`]); the request path only
//! reads it.
//!
//! **Matching** (documented in the README, "Routing"):
//! 1. Host tiers, in order: the exact host, then `*.domain` wildcards (the longest domain first,
//!    so `*.eu.example.com` beats `*.example.com`), then routes for any host. The request's host
//!    is its `Host` header (or an absolute URI's authority), lowercased, without port or trailing
//!    dot. The first tier with a matching path wins; a host route without a matching path lets
//!    the request fall to the next tier, as in Fabio.
//! 2. Within a tier, the longest path prefix, matched on segment boundaries: `/api` matches `/api`,
//!    `/api/x` and `/api?q`, never `/apix`; `/api/` matches only below `/api/`. Paths are compared
//!    as sent (case-sensitive, not percent-decoded).
//! 3. Two declarations of the same host and path: the one from the service whose name sorts first
//!    wins, then the name route over a declared one, then the tag that sorts first. The loser is
//!    logged and listed nowhere.
//!
//! A lookup costs one hash probe per path segment (two per `/`), so it does not grow with the
//! number of routes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;

use super::services::Slot;
use super::tag::{Host, RouteSpec, UpstreamHost};
use crate::observe::metrics::Labels;

/// One route: where it matches and what it does.
#[derive(Debug)]
pub struct Route {
    /// The host it matches.
    pub host: Host,
    /// The path prefix it matches.
    pub path: String,
    /// The service it sends to.
    pub service: String,
    /// The declaring tag (`None`: the service's name route, `/<service>`).
    pub tag: Option<String>,
    /// The options of a declared route (`None`: a name route).
    pub spec: Option<RouteSpec>,
    /// The prefix removed from the path before forwarding, and sent as `X-Forwarded-Prefix`.
    pub strip: Option<String>,
    /// `strip` as a header value, made once.
    pub forwarded_prefix: Option<HeaderValue>,
    /// The `Host` a `host=<name>` option sends, made once.
    pub fixed_host: Option<HeaderValue>,
    /// The service's current instances.
    pub slot: Arc<Slot>,
    /// What its requests are counted under (`shown()` and the service), made once.
    pub labels: Labels,
}

impl Route {
    /// A name route: `/<service>`, the name stripped.
    pub fn name(slot: Arc<Slot>) -> Self {
        let path = format!("/{}", slot.service);
        Self::new(Host::Any, path.clone(), None, None, Some(path), slot)
    }

    /// A route declared by `tag`.
    pub fn declared(tag: String, spec: RouteSpec, slot: Arc<Slot>) -> Self {
        let strip = spec.strip.clone();
        Self::new(spec.host.clone(), spec.path.clone(), Some(tag), Some(spec), strip, slot)
    }

    fn new(
        host: Host,
        path: String,
        tag: Option<String>,
        spec: Option<RouteSpec>,
        strip: Option<String>,
        slot: Arc<Slot>,
    ) -> Self {
        let forwarded_prefix = strip.as_deref().and_then(|s| HeaderValue::from_str(s).ok());
        let fixed_host = match spec.as_ref().map(|s| &s.upstream_host) {
            Some(UpstreamHost::Name(n)) => HeaderValue::from_str(n).ok(),
            _ => None,
        };
        let mut route = Self {
            host,
            path,
            service: slot.service.clone(),
            tag,
            spec,
            strip,
            forwarded_prefix,
            fixed_host,
            slot,
            labels: Labels { route: Arc::from(""), service: Arc::from("") },
        };
        route.labels = Labels { route: route.shown().into(), service: route.service.as_str().into() };
        route
    }

    /// `host/path` as users write it (`api.example.com/v1`, `*.example.com/`, `/billing`).
    pub fn shown(&self) -> String {
        match &self.host {
            Host::Any => self.path.clone(),
            Host::Exact(h) => format!("{h}{}", self.path),
            Host::Wildcard(d) => format!("*.{d}{}", self.path),
        }
    }

    /// What identifies a route across rebuilds: where it matches, and who declared it how.
    pub fn key(&self) -> (String, &str, Option<&str>) {
        (self.shown(), self.service.as_str(), self.tag.as_deref())
    }

    /// The order in which two routes for the same host and path win (the smaller wins).
    fn precedence(&self) -> (&str, bool, Option<&str>) {
        (self.service.as_str(), self.tag.is_some(), self.tag.as_deref())
    }
}

/// The routes of one host tier by path, and the longest of their paths: no probe is longer, so
/// a lookup costs the same for a long request path as for a short one.
#[derive(Debug, Default)]
struct Paths {
    by_path: HashMap<Box<str>, Arc<Route>>,
    longest: usize,
}

impl Paths {
    fn get(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_path.get(path)
    }

    fn insert(&mut self, route: Arc<Route>) {
        self.longest = self.longest.max(route.path.len());
        self.by_path.insert(route.path.as_str().into(), route);
    }

    fn len(&self) -> usize {
        self.by_path.len()
    }

    fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// The routes, indexed for matching. Immutable once built.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Paths>,
    wildcard: HashMap<Box<str>, Paths>,
    any: Paths,
    ordered: Vec<Arc<Route>>,
}

/// Two declarations of one host and path; the first wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `host/path`.
    pub at: String,
    /// `service (tag)` of the route that wins.
    pub winner: String,
    /// `service (tag)` of the one that is shadowed.
    pub loser: String,
}

fn who(r: &Route) -> String {
    match &r.tag {
        Some(t) => format!("{} (tag `{t}`)", r.service),
        None => format!("{} (name route)", r.service),
    }
}

impl RouteTable {
    /// Indexes `routes`; returns the table and the declarations that lost to another.
    pub fn build(mut routes: Vec<Route>) -> (Self, Vec<Conflict>) {
        routes.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        let mut table = Self::default();
        let mut conflicts = Vec::new();
        for route in routes {
            let paths = match &route.host {
                Host::Any => &mut table.any,
                Host::Exact(h) => table.exact.entry(h.as_str().into()).or_default(),
                Host::Wildcard(d) => table.wildcard.entry(d.as_str().into()).or_default(),
            };
            match paths.get(route.path.as_str()) {
                Some(winner) => conflicts.push(Conflict { at: route.shown(), winner: who(winner), loser: who(&route) }),
                None => paths.insert(Arc::new(route)),
            }
        }
        table.ordered = table.match_order();
        (table, conflicts)
    }

    /// Every route, in match order: exact hosts (by name), wildcards (longest domain first),
    /// then any host; within each, the longest path first.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.ordered
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// Whether there is no route.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    fn match_order(&self) -> Vec<Arc<Route>> {
        let by_path = |paths: &Paths| {
            let mut v: Vec<Arc<Route>> = paths.by_path.values().cloned().collect();
            v.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then_with(|| a.path.cmp(&b.path)));
            v
        };
        let mut exact: Vec<_> = self.exact.iter().collect();
        exact.sort_by(|a, b| a.0.cmp(b.0));
        let mut wild: Vec<_> = self.wildcard.iter().collect();
        wild.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(b.0)));
        let mut out = Vec::with_capacity(self.len_all());
        for (_, paths) in exact.into_iter().chain(wild) {
            out.extend(by_path(paths));
        }
        out.extend(by_path(&self.any));
        out
    }

    fn len_all(&self) -> usize {
        self.any.len() + self.exact.values().chain(self.wildcard.values()).map(Paths::len).sum::<usize>()
    }

    /// The route for a request to `host` (the `Host` header or the URI's authority, as sent) and
    /// `path` (without the query).
    pub fn lookup(&self, host: Option<&[u8]>, path: &str) -> Option<&Arc<Route>> {
        if !self.exact.is_empty() || !self.wildcard.is_empty() {
            if let Some(host) = host.and_then(normalize_host) {
                if let Some(r) = self.exact.get(host.as_ref()).and_then(|p| longest(p, path)) {
                    return Some(r);
                }
                if !self.wildcard.is_empty() {
                    let mut rest: &str = host.as_ref();
                    while let Some(dot) = rest.find('.') {
                        rest = &rest[dot + 1..];
                        if let Some(r) = self.wildcard.get(rest).and_then(|p| longest(p, path)) {
                            return Some(r);
                        }
                    }
                }
            }
        }
        longest(&self.any, path)
    }
}

/// The longest route path that is a prefix of `path` on a segment boundary. Probes start at the
/// longest route path's length (a path no route could match in full is never hashed whole), so
/// a long request path costs no more than a short one.
fn longest<'a>(paths: &'a Paths, path: &str) -> Option<&'a Arc<Route>> {
    if paths.is_empty() {
        return None;
    }
    if path.len() <= paths.longest {
        if let Some(r) = paths.get(path) {
            return Some(r);
        }
    }
    // Start at the last '/' that leaves a prefix no longer than the longest route (+1 for the
    // `/a/b/` form of a `/a/b` boundary).
    let mut end = path.len().min(paths.longest + 1);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    while let Some(slash) = path[..end].rfind('/') {
        // `/a/b/` (a route ending in a slash; the whole path was probed above), then `/a/b`.
        if slash + 1 < path.len() {
            if let Some(r) = paths.get(&path[..=slash]) {
                return Some(r);
            }
        }
        if slash > 0 {
            if let Some(r) = paths.get(&path[..slash]) {
                return Some(r);
            }
        }
        end = slash;
    }
    None
}

/// A `Host` value as routes name hosts: lowercase, no port, no trailing dot. `None` if it is not
/// text. Allocates only when there is something to change.
fn normalize_host(raw: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(raw).ok()?;
    let host = if text.starts_with('[') {
        // An IPv6 literal: keep the brackets, drop a port.
        text.find(']').map_or(text, |end| &text[..=end])
    } else {
        text.rsplit_once(':').map_or(text, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests;
