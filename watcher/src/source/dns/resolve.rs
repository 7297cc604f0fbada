//! Asking the DNS server, with hickory's resolver, and sorting out what its answer means: records
//! (turned into instances by [`super::answer`]), no instance (NXDOMAIN, or NOERROR without
//! records), or a failure, told apart by whether the server answered at all.
//!
//! The resolver keeps no cache (every lookup asks the server: the loop itself waits out the
//! TTLs), gives up on a server after 2 s, asks once more, falls back to TCP when a UDP answer is
//! truncated (a service with many instances), and with `--dns-server` asks only that server, with
//! no search domain (names are fully qualified anyway).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use consul::Instance;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use super::answer::{self, bare, Addresses, Srv};
use super::DnsArgs;

/// How long one query waits for the server.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What one lookup of a service's name gave.
#[derive(Debug)]
pub enum Lookup {
    /// The server answered with records, or with none (an empty `instances`).
    Found(Found),
    /// No usable answer: keep the last one.
    Failed {
        /// Whether the server answered (SERVFAIL, REFUSED...) rather than not at all (timeout,
        /// connection refused).
        answered: bool,
        /// Why, for logs and the status message.
        error: String,
    },
}

/// An answer.
#[derive(Debug)]
pub struct Found {
    /// The instance set (sorted by id; empty: no instance).
    pub instances: Vec<Instance>,
    /// The shortest TTL of the records used, or the negative TTL of an empty answer, in seconds.
    pub ttl: Option<u32>,
}

/// One query's outcome.
enum Asked {
    Records(Vec<Record>),
    Empty(Option<u32>),
    Failed { answered: bool, error: String },
}

/// The resolver every service loop asks through. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<TokioResolver>,
}

impl Resolver {
    /// A resolver for `--dns-server`, or the system's (/etc/resolv.conf) without it.
    pub fn new(args: &DnsArgs) -> Result<Self, ResolveError> {
        let mut builder = match args.dns_server {
            Some(addr) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], servers),
                    TokioConnectionProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()?,
        };
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 1;
        opts.edns0 = true;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Self { inner: Arc::new(builder.build()) })
    }

    /// Looks `name` up: SRV records (their targets resolved: from the additional section when
    /// there, else asked), or, with `port`, A/AAAA records.
    pub async fn lookup(&self, name: &str, port: Option<u16>) -> Lookup {
        match port {
            Some(port) => match self.addresses(name).await {
                Asked::Records(records) => {
                    let ips: Vec<IpAddr> = records.iter().filter_map(ip_of).collect();
                    let ttl = records.iter().filter(|r| ip_of(r).is_some()).map(Record::ttl).min();
                    Lookup::Found(Found { instances: answer::from_addresses(name, &ips, port), ttl })
                }
                Asked::Empty(ttl) => Lookup::Found(Found { instances: vec![], ttl }),
                Asked::Failed { answered, error } => Lookup::Failed { answered, error },
            },
            None => self.srv(name).await,
        }
    }

    async fn srv(&self, name: &str) -> Lookup {
        let records = match self.ask(name, RecordType::SRV).await {
            Asked::Records(r) => r,
            Asked::Empty(ttl) => return Lookup::Found(Found { instances: vec![], ttl }),
            Asked::Failed { answered, error } => return Lookup::Failed { answered, error },
        };
        let srvs: Vec<Srv> = records
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority(),
                    weight: s.weight(),
                    port: s.port(),
                    target: bare(&s.target().to_ascii()).to_string(),
                }),
                _ => None,
            })
            .collect();
        let mut ttl = records.iter().filter(|r| r.record_type() == RecordType::SRV).map(Record::ttl).min();
        // The additional section, as far as the resolver kept it.
        let mut addresses = Addresses::new();
        for r in &records {
            if let Some(ip) = ip_of(r) {
                addresses.entry(bare(&r.name().to_ascii()).to_string()).or_default().push(ip);
            }
        }
        for target in answer::targets(&srvs) {
            if addresses.contains_key(&target) {
                let t = records.iter().filter(|r| ip_of(r).is_some() && bare(&r.name().to_ascii()) == target);
                ttl = ttl.into_iter().chain(t.map(Record::ttl)).min();
                continue;
            }
            match self.addresses(&format!("{target}.")).await {
                Asked::Records(found) => {
                    ttl = ttl.into_iter().chain(found.iter().filter(|r| ip_of(r).is_some()).map(Record::ttl)).min();
                    addresses.insert(target, found.iter().filter_map(ip_of).collect());
                }
                // A target without an address is no instance.
                Asked::Empty(_) => {}
                Asked::Failed { answered, error } => {
                    return Lookup::Failed { answered, error: format!("resolving the SRV target {target}: {error}") }
                }
            }
        }
        Lookup::Found(Found { instances: answer::from_srv(&srvs, &addresses), ttl })
    }

    async fn ask(&self, name: &str, rtype: RecordType) -> Asked {
        match self.inner.lookup(name, rtype).await {
            Ok(l) => Asked::Records(l.records().to_vec()),
            Err(e) => classify(&e),
        }
    }

    /// A and AAAA records (both asked; one failing while the other answers counts as the answer).
    async fn addresses(&self, name: &str) -> Asked {
        match self.inner.lookup_ip(name).await {
            Ok(l) => Asked::Records(l.as_lookup().records().to_vec()),
            Err(e) => classify(&e),
        }
    }
}

fn ip_of(r: &Record) -> Option<IpAddr> {
    match r.data() {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// What a resolver error means: no record (NXDOMAIN, or NOERROR and nothing) is an answer; any
/// other response code is a failure of a server that answered; anything else (timeout, no
/// connection) is a server that did not answer.
fn classify(e: &ResolveError) -> Asked {
    if let Some(ProtoErrorKind::NoRecordsFound { response_code, negative_ttl, .. }) = e.proto().map(|p| p.kind()) {
        return match *response_code {
            ResponseCode::NXDomain | ResponseCode::NoError => Asked::Empty(*negative_ttl),
            code => Asked::Failed { answered: true, error: format!("the server answered {code:?} ({code})") },
        };
    }
    Asked::Failed { answered: false, error: e.to_string() }
}
