//! Asking the DNS server, with hickory's resolver, and sorting out what its answer means: records
//! (turned into instances by [`super::answer`]), no instance (NXDOMAIN, or NOERROR without
//! records), or a failure, told apart by whether the server answered at all.
//!
//! hickory's resolver keeps the additional section's addresses of one SRV target only (the last
//! one); the other targets are asked for (A and AAAA), which costs a query each, not correctness.
//!
//! The resolver keeps no cache (every lookup asks the server: the loop itself waits out the
//! TTLs), gives up on a server after 2 s, asks once more, and with `--dns-server` asks only that
//! server, over TCP (a UDP answer may be cut short without saying so: Consul's is unless its
//! `dns_config.enable_truncate` is on), with no search domain (names are fully qualified anyway).
//! With the system's resolvers, UDP first, and TCP when an answer says it is truncated.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use consul::Instance;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::proto::xfer::Protocol;
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
                // TCP only: Consul's DNS cuts UDP answers to what fits (its `enable_truncate` is
                // off by default) without setting the truncation bit, so over UDP a service with
                // many instances silently lost some (26 of 40 seen).
                let mut tcp = NameServerConfig::new(addr, Protocol::Tcp);
                tcp.trust_negative_responses = true;
                let servers = NameServerConfigGroup::from(vec![tcp]);
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use hickory_resolver::proto::op::{Message, MessageType};
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use hickory_resolver::proto::rr::Name;
    use hickory_resolver::proto::serialize::binary::{BinDecodable, BinEncodable};

    use super::*;

    type Answers = fn(&Name, RecordType) -> (Vec<Record>, Vec<Record>);

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// Answers of a UDP query are cut to this many records, without the truncation bit, as
    /// Consul's DNS does by default; TCP answers are whole.
    const UDP_LIMIT: usize = 3;

    fn respond(q: &Message, rcode: ResponseCode, answers: Answers, udp: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_op_code(q.op_code())
            .set_response_code(rcode)
            .set_recursion_desired(q.recursion_desired())
            .set_recursion_available(true)
            .set_authoritative(true);
        m.add_queries(q.queries().to_vec());
        if let Some(query) = q.queries().first() {
            let (mut answer, additional) = answers(query.name(), query.query_type());
            if udp {
                answer.truncate(UDP_LIMIT);
            }
            m.add_answers(answer);
            m.add_additionals(additional);
        }
        m.to_bytes().unwrap()
    }

    /// A DNS server on a loopback port (UDP and TCP): every query gets `rcode`, with the answer
    /// and additional records `answers` gives.
    async fn fake(rcode: ResponseCode, answers: Answers) -> SocketAddr {
        let (sock, tcp) = loop {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(sock.local_addr().unwrap()).await {
                break (sock, tcp);
            }
        };
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(q) = Message::from_bytes(&buf[..n]) else { continue };
                let _ = sock.send_to(&respond(&q, rcode, answers, true), from).await;
            }
        });
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = conn.read_u16().await else { return };
                        let mut buf = vec![0u8; usize::from(len)];
                        if conn.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Ok(q) = Message::from_bytes(&buf) else { return };
                        let out = respond(&q, rcode, answers, false);
                        let Ok(n) = u16::try_from(out.len()) else { return };
                        if conn.write_u16(n).await.is_err() || conn.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn resolver(server: SocketAddr) -> Resolver {
        let args = DnsArgs {
            dns_server: Some(server),
            dns_name: None,
            dns_domain: "service.consul".into(),
            dns_port: None,
            dns_min_ttl: Duration::from_secs(1),
            dns_max_ttl: Duration::from_secs(60),
        };
        Resolver::new(&args).unwrap()
    }

    async fn lookup(server: SocketAddr, port: Option<u16>) -> Lookup {
        let r = resolver(server);
        tokio::time::timeout(Duration::from_secs(20), r.lookup("_web._tcp.service.consul.", port)).await.unwrap()
    }

    fn no_records(_: &Name, _: RecordType) -> (Vec<Record>, Vec<Record>) {
        (vec![], vec![])
    }

    /// Two SRV targets: `b.` with its address in the additional section only, `a.` without (its
    /// A record is asked for); the shortest TTL is a's A record's.
    fn two_targets(n: &Name, t: RecordType) -> (Vec<Record>, Vec<Record>) {
        let a = |host: &str, ip: [u8; 4], ttl| Record::from_rdata(name(host), ttl, RData::A(A(Ipv4Addr::from(ip))));
        match t {
            RecordType::SRV => (
                vec![
                    Record::from_rdata(n.clone(), 30, RData::SRV(SRV::new(1, 5, 8081, name("a.example.")))),
                    Record::from_rdata(n.clone(), 30, RData::SRV(SRV::new(1, 0, 8082, name("b.example.")))),
                ],
                vec![a("b.example.", [10, 0, 0, 2], 30)],
            ),
            RecordType::A if *n == name("a.example.") => (vec![a("a.example.", [10, 0, 0, 1], 4)], vec![]),
            _ => (vec![], vec![]),
        }
    }

    #[tokio::test]
    async fn srv_targets_come_from_the_additional_section_or_are_asked_for() {
        let server = fake(ResponseCode::NoError, two_targets).await;
        let Lookup::Found(found) = lookup(server, None).await else { panic!("expected an answer") };
        let got: Vec<_> =
            found.instances.iter().map(|i| (i.id.as_str(), i.address.as_str(), i.port, i.weight)).collect();
        assert_eq!(got, [("a.example:8081", "10.0.0.1", 8081, 5), ("b.example:8082", "10.0.0.2", 8082, 1)]);
        assert_eq!(found.ttl, Some(4));
    }

    /// Ten SRV records of one target, with its address in the additional section.
    fn ten_instances(n: &Name, t: RecordType) -> (Vec<Record>, Vec<Record>) {
        match t {
            RecordType::SRV => (
                (0..10)
                    .map(|i| Record::from_rdata(n.clone(), 5, RData::SRV(SRV::new(1, 1, 9000 + i, name("h.example.")))))
                    .collect(),
                vec![Record::from_rdata(name("h.example."), 5, RData::A(A(Ipv4Addr::new(10, 0, 0, 1))))],
            ),
            _ => (vec![], vec![]),
        }
    }

    #[tokio::test]
    async fn every_instance_is_found_when_a_udp_answer_is_cut_short_silently() {
        let server = fake(ResponseCode::NoError, ten_instances).await;
        let Lookup::Found(found) = lookup(server, None).await else { panic!("expected an answer") };
        assert_eq!(found.instances.len(), 10, "{:?}", found.instances);
    }

    #[tokio::test]
    async fn nxdomain_and_an_empty_answer_are_no_instance() {
        for rcode in [ResponseCode::NXDomain, ResponseCode::NoError] {
            let server = fake(rcode, no_records).await;
            match lookup(server, None).await {
                Lookup::Found(f) => assert!(f.instances.is_empty(), "{rcode:?}"),
                other => panic!("{rcode:?}: {other:?}"),
            }
            match lookup(server, Some(80)).await {
                Lookup::Found(f) => assert!(f.instances.is_empty(), "{rcode:?}"),
                other => panic!("{rcode:?} (A/AAAA): {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn servfail_and_refused_are_failures_of_a_server_that_answers() {
        for rcode in [ResponseCode::ServFail, ResponseCode::Refused] {
            let server = fake(rcode, no_records).await;
            match lookup(server, None).await {
                Lookup::Failed { answered: true, error } => assert!(error.contains(&format!("{rcode:?}")), "{error}"),
                other => panic!("{rcode:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_a_failure_of_the_registry() {
        // Bound and silent: every query times out.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        match lookup(silent.local_addr().unwrap(), None).await {
            Lookup::Failed { answered: false, .. } => {}
            other => panic!("{other:?}"),
        }
    }
}
