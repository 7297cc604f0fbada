//! From DNS records to instances, and when to ask again: the name template, the SRV (or A/AAAA)
//! answer → instance set mapping, and the TTL bounds. Pure functions; [`super::resolve`] feeds
//! them what the server said.
//!
//! The mapping (SRV, RFC 2782):
//! - only the records of the lowest priority value are used (the others are fallbacks a client
//!   tries only when all of those fail; the gateway's balancing and health checks cover that);
//! - a target `.` ("no service here") and a target without an address are skipped;
//! - each address of a target is an instance: id `target:port` (the target without its final
//!   dot) when the target has one address, `ip:port` when it has several; node = the target;
//! - weight = the SRV weight, with 0 read as 1 (RFC 2782 gives weight-0 records a small chance
//!   rather than none; the gateway's weights must be at least 1). Consul puts the instance's
//!   `Weights.Passing` (or `Warning`) there.
//!
//! With A/AAAA records (`--dns-port`): each address is an instance, id `ip:port`, node = the
//! name asked, weight 1. Sets are sorted by id, so that a server's record shuffling is no change.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use consul::Instance;

/// A `--dns-name` template: holds `{service}`, and may hold `{domain}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(String);

impl Template {
    /// The default for SRV records: `_{service}._tcp.{domain}`.
    pub const SRV: &'static str = "_{service}._tcp.{domain}";
    /// The default for A/AAAA records (with `--dns-port`): `{service}.{domain}`.
    pub const ADDRESS: &'static str = "{service}.{domain}";

    /// Parses a template; it must name `{service}` (otherwise every service would ask the same
    /// name) and hold no space.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.contains("{service}") {
            return Err(format!("the DNS name template {s:?} must contain {{service}}"));
        }
        if s.contains(char::is_whitespace) {
            return Err(format!("the DNS name template {s:?} must not contain spaces"));
        }
        Ok(Self(s.to_string()))
    }

    /// The default template: SRV without a port, A/AAAA with one.
    pub fn default_for(port: Option<u16>) -> Self {
        Self(if port.is_some() { Self::ADDRESS } else { Self::SRV }.to_string())
    }

    /// The fully qualified name (final dot added, so no search domain is tried) for `service`.
    pub fn render(&self, service: &str, domain: &str) -> String {
        let name = self.0.replace("{service}", service).replace("{domain}", domain.trim_end_matches('.'));
        if name.ends_with('.') {
            name
        } else {
            name + "."
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One SRV record, as read from an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    /// Lower is preferred.
    pub priority: u16,
    /// Relative weight within a priority.
    pub weight: u16,
    /// The port to connect to.
    pub port: u16,
    /// The host to connect to, without the final dot (`.` when none).
    pub target: String,
}

/// The addresses of each SRV target (by target, without the final dot).
pub type Addresses = BTreeMap<String, Vec<IpAddr>>;

/// A name without its final dot (`.` stays `.`).
pub fn bare(name: &str) -> &str {
    match name.strip_suffix('.') {
        Some("") | None => name,
        Some(n) => n,
    }
}

/// The targets of the records that [`from_srv`] uses (lowest priority, target not `.`), once each.
pub fn targets(records: &[Srv]) -> Vec<String> {
    let mut out: Vec<String> = used(records).map(|r| r.target.clone()).collect();
    out.sort();
    out.dedup();
    out
}

fn used(records: &[Srv]) -> impl Iterator<Item = &Srv> {
    let best = records.iter().filter(|r| r.target != ".").map(|r| r.priority).min();
    records.iter().filter(move |r| Some(r.priority) == best && r.target != ".")
}

/// The instances of an SRV answer, given the addresses of its targets (see the module docs).
pub fn from_srv(records: &[Srv], addresses: &Addresses) -> Vec<Instance> {
    let mut out: Vec<Instance> = Vec::new();
    for r in used(records) {
        let ips = addresses.get(&r.target).map(Vec::as_slice).unwrap_or_default();
        for ip in ips {
            let addr = ip.to_string();
            let id = if ips.len() == 1 { format!("{}:{}", r.target, r.port) } else { authority(*ip, r.port) };
            let mut i = Instance::new(id, r.target.clone(), addr, r.port);
            i.weight = u32::from(r.weight.max(1));
            out.push(i);
        }
    }
    finish(out)
}

/// The instances of an A/AAAA answer for `name`: every address with `port`.
pub fn from_addresses(name: &str, ips: &[IpAddr], port: u16) -> Vec<Instance> {
    finish(ips.iter().map(|ip| Instance::new(authority(*ip, port), bare(name), ip.to_string(), port)).collect())
}

fn authority(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// Sorted by id, one instance per id (the first kept).
fn finish(mut out: Vec<Instance>) -> Vec<Instance> {
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    out
}

/// When to ask again: after `ttl` seconds (the shortest TTL of the records used, or the negative
/// TTL of an empty answer; `None` when the answer gave none), bounded by `min` and `max` (`None`
/// waits `min`).
pub fn next_lookup(ttl: Option<u32>, min: Duration, max: Duration) -> Duration {
    ttl.map_or(min, |s| Duration::from_secs(u64::from(s)).clamp(min, max.max(min)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv { priority, weight, port, target: target.into() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_template_makes_a_fully_qualified_name_and_needs_the_service() {
        let t = Template::default_for(None);
        assert_eq!(t.render("web", "service.consul"), "_web._tcp.service.consul.");
        assert_eq!(t.render("web", "service.consul."), "_web._tcp.service.consul.");
        assert_eq!(Template::default_for(Some(80)).render("web", "example.org"), "web.example.org.");
        assert_eq!(
            Template::parse("{service}.svc.cluster.local.").unwrap().render("api", "x"),
            "api.svc.cluster.local."
        );
        assert!(Template::parse("_web._tcp.{domain}").unwrap_err().contains("{service}"));
        assert!(Template::parse("{service} .x").is_err());
    }

    #[test]
    fn ttls_are_bounded_by_min_and_max() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(next_lookup(Some(0), min, max), min, "Consul's default TTL 0 waits the minimum");
        assert_eq!(next_lookup(Some(5), min, max), Duration::from_secs(5));
        assert_eq!(next_lookup(Some(86_400), min, max), max);
        assert_eq!(next_lookup(None, min, max), min);
    }

    #[test]
    fn srv_records_become_instances_with_their_ports_and_weights() {
        let records =
            [srv(1, 10, 8081, "a.node.dc1.consul"), srv(1, 0, 8082, "a.node.dc1.consul"), srv(1, 3, 9000, "b")];
        let addrs =
            Addresses::from([("a.node.dc1.consul".into(), vec![ip("127.0.0.1")]), ("b".into(), vec![ip("10.0.0.2")])]);
        let got = from_srv(&records, &addrs);
        let ids: Vec<_> = got.iter().map(|i| (i.id.as_str(), i.address.as_str(), i.port, i.weight)).collect();
        assert_eq!(
            ids,
            [
                ("a.node.dc1.consul:8081", "127.0.0.1", 8081, 10),
                ("a.node.dc1.consul:8082", "127.0.0.1", 8082, 1),
                ("b:9000", "10.0.0.2", 9000, 3)
            ]
        );
        assert_eq!(got[0].node, "a.node.dc1.consul");
    }

    #[test]
    fn only_the_lowest_priority_counts_and_targets_without_addresses_are_skipped() {
        let records = [srv(20, 1, 1, "backup"), srv(10, 1, 2, "main"), srv(10, 1, 3, "gone"), srv(5, 1, 4, ".")];
        assert_eq!(targets(&records), ["gone", "main"]);
        let addrs = Addresses::from([("main".into(), vec![ip("10.0.0.1")]), ("backup".into(), vec![ip("10.0.0.9")])]);
        let got = from_srv(&records, &addrs);
        assert_eq!(got.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["main:2"]);
    }

    #[test]
    fn a_target_with_several_addresses_is_one_instance_per_address() {
        let addrs = Addresses::from([("h".into(), vec![ip("10.0.0.2"), ip("::1")])]);
        let got = from_srv(&[srv(1, 1, 80, "h")], &addrs);
        assert_eq!(got.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["10.0.0.2:80", "[::1]:80"]);
        assert_eq!(got[1].authority(), "[::1]:80");
    }

    #[test]
    fn address_records_get_the_given_port_and_shuffling_is_no_change() {
        let a = from_addresses("web.example.org.", &[ip("10.0.0.2"), ip("10.0.0.1"), ip("10.0.0.2")], 8080);
        let b = from_addresses("web.example.org.", &[ip("10.0.0.1"), ip("10.0.0.2")], 8080);
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["10.0.0.1:8080", "10.0.0.2:8080"]);
        assert_eq!((a[0].node.as_str(), a[0].weight), ("web.example.org", 1));
    }
}
