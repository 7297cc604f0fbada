//! Routes that services declare in their Consul tags, in fabio's `urlprefix-` form.
//!
//! A tag is a route when it is the opt-in tag ([`TagRules::route_tag`], `gateway`: the service is
//! routed at `/<service>/…`, its name stripped) or starts with the prefix ([`TagRules::prefix`],
//! `urlprefix-`). What follows the prefix, the *body*, is parsed by [`parse`]:
//!
//! ```text
//! body   = route *( ws option )        surrounding and repeated whitespace ignored
//! route  = [ host ] path               split at the first '/': "api.example.com/v1", "/v1"
//! host   = name | "*." name            lowercased; no port
//! option = key "=" value               values never contain whitespace
//! ```
//!
//! | option | meaning |
//! |---|---|
//! | `strip=/p` | remove `/p` from the request path before forwarding |
//! | `prepend=/p` | add `/p` in front of the (stripped) path |
//! | `host=dst` / `host=name[:port]` | `Host` sent upstream: the instance's `address:port` / `name` (default: the client's) |
//! | `redirect=<code>,<url>` | answer `<code>` with `Location: <url>`, `$path` replaced by the request path |
//! | `split=<tag>:<percent>`, `sticky=cookie\|addr` | canary split (ours, not fabio's): `<percent>` % of clients go to the instances tagged `<tag>`, kept on their side by a cookie (default) or by their address |
//! | `proto=http` | fabio's default: HTTP/1.1 to the instances |
//! | `proto=grpc`, `proto=h2c` | HTTP/2 cleartext (prior knowledge) to the instances; `grpc` is fabio's name for gRPC routes, `h2c` ours for any HTTP/2 service |
//! | `balance=random\|round-robin\|least-request` | the route's balancing policy (ours, not fabio's), instead of the gateway's `--balance` ([`crate::proxy::balancer`]) |
//!
//! A bad tag is rejected whole, with a reason, never half-applied. Against fabio
//! (<https://github.com/fabiolb/fabio>, `master`):
//! - Like fabio (`parseURLPrefixTag`, `routecmd.build` in `registry/consul/routecmd.go`): the tag
//!   is trimmed, the options split on whitespace (so no value holds any), the host lowercased.
//! - fabio ignores options it does not know and lets a repeated one win (`route/route.go`). We
//!   reject both, and every fabio option we lack (`docs/content/cfg/_index.md`): `proto=https`,
//!   `grpcs` and `tcp+sni`, `tlsskipverify=`, `pxyproto=`, `register=`, `weight=`, and above all
//!   `allow=`, `deny=`, `auth=`: ignored, they would leave a route unprotected.
//! - `proto=grpc`: fabio routes gRPC on a listener of its own (`proxy.addr ...;proto=grpc`,
//!   `docs/content/feature/grpc-proxy.md`), the route path being `/<package.Service>` or a method;
//!   here the one listener takes HTTP/1.1 and h2c, and the option only says how to reach the
//!   instances: HTTP/2 cleartext. Host matching works as for any route.
//! - We also reject paths with whitespace, control or non-ASCII characters, `?`, `#`, `*` (fabio's
//!   glob matcher), `$` (its `$VAR` expansion), `.`/`..`/empty segments or bad `%` escapes (hex is
//!   uppercased); hosts with a port, IPv6 literals, `*` but as the whole first label; `:port`
//!   (TCP) routes.
//! - `strip=`: fabio strips it from each request path it is a string prefix of
//!   (`proxy/http_proxy.go`, `docs/content/feature/path-stripping.md`); one that is not a prefix of
//!   the route path strips some requests and not others. We require the route path or a prefix of
//!   it ending at a `/`, itself not ending in `/`. `prepend=` comes after stripping
//!   (`feature/http-path-prepending.md`), and may not end in `/` either.
//! - `redirect=`: fabio takes codes 300–399 (`route/route.go`), a URL without commas, `$path` (and
//!   `/$path`) for the request path and `$host` for its host (`route/target.go`,
//!   `feature/http-redirects.md`). We take 301, 302, 303, 307, 308, an `http(s)://` URL or a path,
//!   one `$path` in its path, no `$host`; `/$path` is read as `$path` (`//$path` is refused). A redirect forwards nothing,
//!   so `strip=`, `prepend=`, `host=`, `split=`, `proto=`, `balance=` beside it are errors.
//! - fabio matches path prefixes as strings (`route/matcher.go`: `/api` matches `/apix`); the
//!   gateway matches on segment boundaries (not this module's business).
//!
//! Tags come from anyone who can register in Consul: [`parse`] never panics, reads at most
//! [`MAX_TAG_LEN`] bytes, and quotes input in its errors escaped and cut short.

use std::fmt;

use values::{parse_balance, parse_redirect, parse_split, path_value, prefix_value, route_host, upstream_name};

use crate::proxy::balancer::Balance;

mod values;

/// The longest tag body [`parse`] accepts, in bytes.
pub const MAX_TAG_LEN: usize = 1024;

/// Which tags are routes: the opt-in tag (`gateway` by default) and the declared-route prefix
/// (`urlprefix-`). Either may be `""`: that kind of tag is then disabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRules {
    /// The tag that routes `/<service>/…` to the service, with `/<service>` stripped.
    pub route_tag: String,
    /// The prefix of tags declaring a route (`urlprefix-/api strip=/api`).
    pub prefix: String,
}

impl Default for TagRules {
    fn default() -> Self {
        Self { route_tag: "gateway".into(), prefix: "urlprefix-".into() }
    }
}

/// What one tag says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag<'a> {
    /// The opt-in tag: route `/<service>/…`.
    NameRoute,
    /// A declared route; the body after the prefix, for [`parse`].
    Declared(&'a str),
    /// Not about routing.
    Other,
}

impl TagRules {
    /// Classifies a tag, after trimming surrounding whitespace as fabio does. The opt-in tag must
    /// match exactly; the prefix is case-sensitive.
    pub fn classify<'a>(&self, tag: &'a str) -> Tag<'a> {
        let tag = tag.trim();
        if !self.route_tag.is_empty() && tag == self.route_tag {
            return Tag::NameRoute;
        }
        match tag.strip_prefix(self.prefix.as_str()) {
            Some(body) if !self.prefix.is_empty() => Tag::Declared(body),
            _ => Tag::Other,
        }
    }
}

/// A route a tag declares. Its [`Display`](fmt::Display) is the canonical tag body:
/// `parse(&spec.to_string()) == Ok(spec)` for every `spec` that [`parse`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// The request hosts it applies to.
    pub host: Host,
    /// The path prefix: starts with `/`, no query or fragment, `%` escapes in uppercase hex. A
    /// trailing `/` is kept (it means "below this", for the matcher).
    pub path: String,
    /// Removed from the front of the request path before forwarding: the route path or a prefix
    /// of it ending at a `/`; never ends in `/`. An empty remainder is forwarded as `/`.
    pub strip: Option<String>,
    /// Added in front of the path after stripping; starts with `/`, never ends in `/`.
    pub prepend: Option<String>,
    /// The `Host` header sent to the instance.
    pub upstream_host: UpstreamHost,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// Canary split of the route's instances.
    pub split: Option<Split>,
    /// How the instances are spoken to (`proto=`).
    pub protocol: Protocol,
    /// The route's balancing policy (`balance=`; `None`: the gateway's `--balance`).
    pub balance: Option<Balance>,
}

/// The protocol spoken to an instance: a route's `proto=` option, or an instance's
/// `gateway-protocol` metadata ([`protocol_meta`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (the default; `proto=http`).
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (RFC 9113 §3.3): `proto=grpc` or `proto=h2c`.
    H2c,
}

/// The Consul service metadata key an instance names its protocol with.
pub const PROTOCOL_META: &str = "gateway-protocol";

/// An instance's protocol by its [`PROTOCOL_META`] metadata: absent, `http` or `http1` is
/// HTTP/1.1; `h2c` or `grpc` (any case) HTTP/2 cleartext.
///
/// # Errors
/// Any other value, shown escaped and cut short: the caller should not guess a protocol.
pub fn protocol_meta(meta: &std::collections::BTreeMap<String, String>) -> Result<Protocol, String> {
    match meta.get(PROTOCOL_META).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(Protocol::Http1),
        Some(v) if v == "http" || v == "http1" => Ok(Protocol::Http1),
        Some(v) if v == "h2c" || v == "grpc" => Ok(Protocol::H2c),
        Some(_) => Err(shown(meta.get(PROTOCOL_META).map_or("", String::as_str))),
    }
}

/// The request hosts a route applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// No host in the tag: every host.
    Any,
    /// One host name, lowercase, without port.
    Exact(String),
    /// `*.example.com`, held as `example.com`: any name ending in `.example.com`.
    Wildcard(String),
}

/// The `Host` header sent to the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamHost {
    /// The client's own (the default, as in fabio).
    Client,
    /// `host=dst`: the instance's `address:port`.
    Dst,
    /// `host=<name>[:<port>]`: this, lowercase.
    Name(String),
}

/// `redirect=<code>,<url>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
    /// An absolute `http(s)://` URL or a path starting with a single `/`; at most one `$path`, to
    /// be replaced by the request path.
    pub url: String,
}

/// `split=<tag>:<percent>` with `sticky=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The Consul tag of the canary instances (may contain `:`; the last one separates).
    pub tag: String,
    /// The share of clients sent to them, 0 to 100.
    pub percent: u8,
    /// How a client keeps its side.
    pub sticky: Sticky,
}

/// How a client of a split route keeps its side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sticky {
    /// A cookie the gateway sets (the default).
    #[default]
    Cookie,
    /// A hash of the client's address.
    Addr,
}

/// Why a tag declares no route. Values from the tag are shown with control characters escaped,
/// cut to 64 characters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagError {
    /// Longer than [`MAX_TAG_LEN`]: its length.
    #[error("tag is {0} bytes long, more than the {MAX_TAG_LEN} allowed")]
    TooLong(usize),
    /// Nothing after the prefix.
    #[error("empty path: the tag declares no `[host]/path`")]
    Empty,
    /// The first word is not `[host]/path`: why.
    #[error("{0}")]
    NoRoute(String),
    /// A bad value: what it is (`route path`, `route host`, `strip=`, `prepend=`, `host=`,
    /// `redirect URL`), the value, what is wrong with it.
    #[error("{0} `{1}`: {2}")]
    Invalid(&'static str, String, String),
    /// An option neither fabio nor we know.
    #[error("unknown option `{0}`")]
    UnknownOption(String),
    /// A fabio option (with `=`, and its value when only that is unsupported) the gateway does not
    /// implement, and why rejecting it beats ignoring it.
    #[error("option `{0}` is not supported ({1})")]
    Unsupported(String, &'static str),
    /// An option given twice.
    #[error("option `{0}=` is given twice")]
    Duplicate(&'static str),
    /// An option without a value.
    #[error("option `{0}=` needs a value")]
    MissingValue(&'static str),
    /// `strip=` (first) that is not the route path (second) or a prefix of it ending at a `/`.
    #[error("strip=`{0}` is not the route path `{1}` or a prefix of it ending at a '/' (it would strip some requests and not others)")]
    StripNotPrefix(String, String),
    /// `strip=` or `prepend=` ending in `/`.
    #[error("option `{0}=` must not end with '/' (the forwarded path keeps its own leading '/')")]
    TrailingSlash(&'static str),
    /// An option's value not of its form: the option, the value, the form.
    #[error("{0}=`{1}`: expected {2}")]
    Syntax(&'static str, String, &'static str),
    /// A redirect code other than 301, 302, 303, 307, 308.
    #[error("redirect code {0} is not a redirect (301, 302, 303, 307 or 308)")]
    RedirectCode(String),
    /// `redirect=` beside an option that only applies to forwarded requests.
    #[error("option `redirect=` cannot be combined with `{0}=` (a redirected request is never forwarded)")]
    RedirectWith(&'static str),
    /// A split percentage that is not an integer from 0 to 100.
    #[error("split percent `{0}` is not an integer from 0 to 100")]
    SplitPercent(String),
    /// `sticky=` without `split=`.
    #[error("option `sticky=` needs `split=` (it says how a split keeps each client on its side)")]
    StickyWithoutSplit,
}

/// The options we accept, in canonical order.
const OPTIONS: [&str; 8] = ["strip", "prepend", "host", "redirect", "split", "sticky", "proto", "balance"];

/// Parses a tag body (the tag without its prefix) into the route it declares.
///
/// # Errors
/// A [`TagError`] saying what is wrong, for anything but the grammar in the [module docs](self).
pub fn parse(body: &str) -> Result<RouteSpec, TagError> {
    if body.len() > MAX_TAG_LEN {
        return Err(TagError::TooLong(body.len()));
    }
    let mut words = body.split_whitespace();
    let route = words.next().ok_or(TagError::Empty)?;
    let mut values: [Option<&str>; 8] = [None; 8];
    for word in words {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let Some(i) = OPTIONS.iter().position(|k| *k == key) else { return Err(rejected(key, word)) };
        if values[i].is_some() {
            return Err(TagError::Duplicate(OPTIONS[i]));
        }
        if value.is_empty() {
            return Err(TagError::MissingValue(OPTIONS[i]));
        }
        values[i] = Some(value);
    }
    let [strip, prepend, upstream, redirect, split, sticky, proto, balance] = values;
    let protocol = match proto {
        None | Some("http") => Protocol::Http1,
        Some("grpc" | "h2c") => Protocol::H2c,
        Some(p @ ("https" | "grpcs")) => {
            let why = "TLS to instances is not implemented: use proto=http, proto=grpc or proto=h2c";
            return Err(TagError::Unsupported(format!("proto={p}"), why));
        }
        Some(p) => {
            let why =
                "the gateway speaks HTTP/1.1 (proto=http) or HTTP/2 cleartext (proto=grpc, proto=h2c) to instances";
            return Err(TagError::Unsupported(format!("proto={}", shown(p)), why));
        }
    };
    let (host, path) = route.split_at(route.find('/').unwrap_or(route.len()));
    if host.contains('=') {
        return Err(TagError::NoRoute(format!(
            "`{}` looks like an option: a tag starts with `[host]/path`",
            shown(route)
        )));
    } else if path.is_empty() {
        return Err(TagError::NoRoute(match route {
            r if r.starts_with(':') => format!("`{}`: TCP routes (`:port`) are not supported", shown(r)),
            r => format!("route `{0}` has no path (write `{0}/` for the whole host)", shown(r)),
        }));
    }
    let (host, path) = (route_host(host)?, path_value("route path", path)?);
    let strip = strip.map(|s| prefix_value("strip", s)).transpose()?;
    if let Some(s) = &strip {
        if !path.strip_prefix(s.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')) {
            return Err(TagError::StripNotPrefix(shown(s), shown(&path)));
        }
    }
    let prepend = prepend.map(|p| prefix_value("prepend", p)).transpose()?;
    let upstream_host = match upstream {
        None => UpstreamHost::Client,
        Some(v) if v.eq_ignore_ascii_case("dst") => UpstreamHost::Dst,
        Some(v) => UpstreamHost::Name(upstream_name(v)?),
    };
    let redirect = redirect.map(parse_redirect).transpose()?;
    if redirect.is_some() {
        let others = [("strip", strip.is_some()), ("prepend", prepend.is_some()), ("host", upstream.is_some())];
        let more = [("split", split.is_some()), ("proto", protocol != Protocol::Http1), ("balance", balance.is_some())];
        if let Some((name, _)) = others.into_iter().chain(more).find(|(_, set)| *set) {
            return Err(TagError::RedirectWith(name));
        }
    }
    let sticky = match sticky {
        None => Sticky::Cookie,
        Some(_) if split.is_none() => return Err(TagError::StickyWithoutSplit),
        Some("cookie") => Sticky::Cookie,
        Some("addr") => Sticky::Addr,
        Some(v) => return Err(TagError::Syntax("sticky", shown(v), "sticky=cookie or sticky=addr")),
    };
    let split = split.map(|s| parse_split(s, sticky)).transpose()?;
    let balance = balance.map(parse_balance).transpose()?;
    Ok(RouteSpec { host, path, strip, prepend, upstream_host, redirect, split, protocol, balance })
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Any => {}
            Host::Exact(h) => f.write_str(h)?,
            Host::Wildcard(suffix) => write!(f, "*.{suffix}")?,
        }
        let host = match &self.upstream_host {
            UpstreamHost::Client => None,
            UpstreamHost::Dst => Some("dst"),
            UpstreamHost::Name(n) => Some(n.as_str()),
        };
        let redirect = self.redirect.as_ref().map(|r| format!("{},{}", r.code, r.url));
        let split = self.split.as_ref().map(|s| format!("{}:{}", s.tag, s.percent));
        let sticky = self.split.as_ref().filter(|s| s.sticky == Sticky::Addr).map(|_| "addr");
        let proto = (self.protocol == Protocol::H2c).then_some("grpc");
        f.write_str(&self.path)?;
        for (key, value) in [("strip", self.strip.as_deref()), ("prepend", self.prepend.as_deref()), ("host", host)]
            .into_iter()
            .chain([("redirect", redirect.as_deref()), ("split", split.as_deref()), ("sticky", sticky)])
            .chain([("proto", proto), ("balance", self.balance.map(Balance::as_str))])
        {
            if let Some(value) = value {
                write!(f, " {key}={value}")?;
            }
        }
        Ok(())
    }
}

/// The error for an option we do not accept: a fabio one with the reason, or an unknown one.
fn rejected(key: &str, word: &str) -> TagError {
    let why = match key {
        "allow" | "deny" | "auth" => "it would be ignored and the route left unprotected",
        "tlsskipverify" => "the gateway speaks plain HTTP to instances",
        "pxyproto" => "the gateway has no TCP routes",
        "register" => "the gateway does not register itself in Consul",
        "weight" => "use split=<tag>:<percent>",
        _ => return TagError::UnknownOption(shown(if key.is_empty() { word } else { key })),
    };
    TagError::Unsupported(format!("{key}="), why)
}

/// A tag fragment fit for a log line: control characters escaped, at most 64 characters.
fn shown(s: &str) -> String {
    let escaped = |c: char| if c.is_control() { c.escape_default().collect() } else { String::from(c) };
    let cut = if s.chars().nth(64).is_some() { "…" } else { "" };
    s.chars().take(64).map(escaped).collect::<String>() + cut
}

#[cfg(test)]
mod tests;
