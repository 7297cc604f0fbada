//! DNS as a [`Source`]: each followed service is a name made from a template (default
//! `_{service}._tcp.{domain}`, SRV records, which carry ports; with `--dns-port`, A/AAAA records
//! of `{service}.{domain}` with that port), re-resolved when its TTL runs out.
//!
//! This module owns the flags ([`DnsArgs`], checked by [`DnsArgs::validate`]) and the loop per
//! service; [`answer`] turns records into instances and picks the next lookup's time, and
//! [`resolve`] asks the server (hickory's resolver) and sorts out what its answer means.
//!
//! The rules, per lookup:
//! - records: the instance set ([`State::set_snapshot_if_changed`]), the service readable
//!   ([`State::set_status`]); the next lookup when the shortest TTL among the records used runs
//!   out, bounded by `--dns-min-ttl` and `--dns-max-ttl`;
//! - NXDOMAIN, or NOERROR with no record: no instance (an empty set), not a failure. Consul's DNS
//!   answers NXDOMAIN (with its SOA) both for a service it does not know and for one without a
//!   healthy instance (checked with Consul 1.8.7, the version the tests run); other servers
//!   answer NOERROR with an empty answer for a name that exists without records of the type
//!   asked. The next lookup after the SOA's negative TTL, within the same bounds;
//! - a failure (timeout, SERVFAIL, REFUSED, an unreachable server): the last good set stays, the
//!   service is marked stale (`set_status(service, false, error)`), and while the server does not
//!   answer at all the registry too ([`State::set_registry`]). Dropping the set instead would
//!   turn a resolver hiccup into an outage (Caddy's dynamic upstreams did; caddy issue #5816).
//!   Retried after `--dns-min-ttl`, doubling up to `min(--dns-max-ttl, 10s)`.
//!
//! DNS cannot list services: only the static services are followed; the opt-in rule (route tags)
//! has nothing to read, and is ignored (with a warning when it is all there is).

pub mod answer;
pub mod resolve;

use std::process::ExitCode;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::{Follow, RunFuture, Source};
use crate::followed::Change;
use crate::state::State;
use answer::{next_lookup, Template};
use resolve::{Lookup, Resolver};

/// Default `--dns-min-ttl`: Consul's DNS answers with TTL 0 unless `dns_config.service_ttl` is
/// set, and a lookup a second per service is cheap.
pub const DEFAULT_MIN_TTL: &str = "1s";
/// Default `--dns-max-ttl`: a record with a long TTL is still re-read every minute, so an
/// instance removed without lowering the TTL first is dropped within a minute.
pub const DEFAULT_MAX_TTL: &str = "60s";
/// Longest wait between retries of a failed lookup (when `--dns-max-ttl` is longer).
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// The DNS flags, shared by the watcher and the gateway (which passes them on with
/// [`DnsArgs::to_argv`]).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct DnsArgs {
    /// With --source dns: the DNS server to ask (`ip:port`; default: the system's resolvers,
    /// from /etc/resolv.conf).
    #[arg(long, env = "GATEWAY_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// With --source dns: the name asked for each service; `{service}` and `{domain}` are
    /// replaced. Default: `_{service}._tcp.{domain}` (SRV records), or `{service}.{domain}`
    /// (A/AAAA records) with --dns-port.
    #[arg(long, env = "GATEWAY_DNS_NAME", value_name = "TEMPLATE", value_parser = Template::parse)]
    pub dns_name: Option<Template>,
    /// With --source dns: what `{domain}` stands for in --dns-name.
    #[arg(long, env = "GATEWAY_DNS_DOMAIN", default_value = "service.consul", value_name = "DOMAIN")]
    pub dns_domain: String,
    /// With --source dns: ask for A/AAAA records and connect to this port on every address,
    /// instead of SRV records (which carry their ports).
    #[arg(long, env = "GATEWAY_DNS_PORT", value_name = "PORT")]
    pub dns_port: Option<u16>,
    /// With --source dns: the shortest wait before a name is asked again, whatever its TTL (TTL
    /// 0, Consul's default, would otherwise mean asking without pause); also the first retry
    /// delay after a failure.
    #[arg(long, env = "GATEWAY_DNS_MIN_TTL", default_value = DEFAULT_MIN_TTL, value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub dns_min_ttl: Duration,
    /// With --source dns: the longest wait before a name is asked again, whatever its TTL: how
    /// late, at worst, a change behind a long TTL is seen.
    #[arg(long, env = "GATEWAY_DNS_MAX_TTL", default_value = DEFAULT_MAX_TTL, value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub dns_max_ttl: Duration,
}

/// A DNS flag the watcher cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsArgsError {
    /// `--dns-min-ttl` is longer than `--dns-max-ttl`.
    #[error("--dns-min-ttl ({min:?}) must not be longer than --dns-max-ttl ({max:?})")]
    TtlBounds {
        /// `--dns-min-ttl`.
        min: Duration,
        /// `--dns-max-ttl`.
        max: Duration,
    },
    /// `--dns-min-ttl` is zero: a TTL-0 answer would be asked again without pause.
    #[error("--dns-min-ttl must be longer than 0 (a TTL-0 answer would be asked again in a busy loop)")]
    ZeroMinTtl,
    /// `--dns-domain` is empty or not a DNS name.
    #[error("--dns-domain {0:?} is not a DNS name")]
    Domain(String),
}

impl DnsArgs {
    /// The flags again, as the watcher takes them (every one, so the watcher sees what the
    /// gateway was given even when the environment differs).
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = self.dns_server.iter().map(|a| format!("--dns-server={a}")).collect();
        if let Some(t) = &self.dns_name {
            argv.push(format!("--dns-name={t}"));
        }
        argv.push(format!("--dns-domain={}", self.dns_domain));
        if let Some(p) = self.dns_port {
            argv.push(format!("--dns-port={p}"));
        }
        argv.push(format!("--dns-min-ttl={}", humantime::format_duration(self.dns_min_ttl)));
        argv.push(format!("--dns-max-ttl={}", humantime::format_duration(self.dns_max_ttl)));
        argv
    }

    /// Checks what the parser cannot check flag by flag (the template is checked as it is
    /// parsed: it must hold `{service}`).
    pub fn validate(&self) -> Result<(), DnsArgsError> {
        if self.dns_min_ttl.is_zero() {
            return Err(DnsArgsError::ZeroMinTtl);
        }
        if self.dns_min_ttl > self.dns_max_ttl {
            return Err(DnsArgsError::TtlBounds { min: self.dns_min_ttl, max: self.dns_max_ttl });
        }
        let d = self.dns_domain.trim_end_matches('.');
        if d.is_empty() || d.split('.').any(|l| l.is_empty() || l.len() > 63 || l.contains(char::is_whitespace)) {
            return Err(DnsArgsError::Domain(self.dns_domain.clone()));
        }
        Ok(())
    }

    /// The template in effect: --dns-name, or the default for the record type.
    pub fn template(&self) -> Template {
        self.dns_name.clone().unwrap_or_else(|| Template::default_for(self.dns_port))
    }
}

/// DNS, as the command line set it up.
pub struct DnsSource {
    /// The flags.
    pub args: DnsArgs,
}

impl Source for DnsSource {
    fn run(self: Box<Self>, what: Follow, state: State) -> RunFuture {
        Box::pin(self.follow(what, state))
    }
}

impl DnsSource {
    async fn follow(self, what: Follow, state: State) -> ExitCode {
        if let Err(e) = self.args.validate() {
            error!("{e}");
            return ExitCode::from(2);
        }
        let resolver = match Resolver::new(&self.args) {
            Ok(r) => r,
            Err(e) => {
                error!("cannot set up the DNS resolver: {e}");
                return ExitCode::from(2);
            }
        };
        let template = self.args.template();
        let services = what.services;
        if what.rule.is_some() {
            if services.is_empty() {
                warn!("--source dns cannot list services, so services cannot opt in by tag: nothing is followed; name the services (--service, or the gateway's --services)");
            } else {
                debug!("--source dns: the opt-in rule is ignored (DNS cannot list services); following the named services only");
            }
            // With a rule the list waits for a follower; DNS has none: announce the static list.
            let list = Change { services: Some(services.clone()), added: services.clone(), ..Change::default() };
            state.apply(&list);
        }
        info!(server = ?self.args.dns_server, template = %template, domain = %self.args.dns_domain,
              port = ?self.args.dns_port, min_ttl = ?self.args.dns_min_ttl, max_ttl = ?self.args.dns_max_ttl,
              ?services, "following DNS");
        let loops = services.into_iter().map(|service| {
            let name = template.render(&service, &self.args.dns_domain);
            follow_one(resolver.clone(), service, name, self.args.clone(), state.clone())
        });
        futures_util::future::join_all(loops).await;
        // Only with no service to follow: wait until the watcher is stopped.
        std::future::pending::<ExitCode>().await
    }
}

/// Resolves `name` for `service` until dropped, writing each answer into `state`.
async fn follow_one(resolver: Resolver, service: String, name: String, args: DnsArgs, state: State) {
    let retry_max = args.dns_max_ttl.min(MAX_RETRY).max(args.dns_min_ttl);
    let mut retry = args.dns_min_ttl;
    let mut index = 0u64;
    // The error last logged, so that a server down for an hour is one warning, not one per retry.
    let mut failing: Option<String> = None;
    loop {
        let wait = match resolver.lookup(&name, args.dns_port).await {
            Lookup::Found(found) => {
                state.set_registry(true, false, None);
                state.set_status(&service, true, None);
                retry = args.dns_min_ttl;
                if failing.take().is_some() {
                    info!(service, name, "the DNS lookup succeeds again");
                }
                if state.set_snapshot_if_changed(&service, index + 1, found.instances.clone()) {
                    index += 1;
                    info!(service, name, instances = found.instances.len(), "DNS answer changed");
                }
                next_lookup(found.ttl, args.dns_min_ttl, args.dns_max_ttl)
            }
            Lookup::Failed { answered, error } => {
                let error = format!("DNS lookup of {name}: {error}");
                if failing.as_deref() != Some(error.as_str()) {
                    warn!(
                        service,
                        "{error}; keeping the last answer, retrying with backoff (logged again when this changes)"
                    );
                } else {
                    debug!(service, "{error}; retrying in {retry:?}");
                }
                failing = Some(error.clone());
                if !answered {
                    state.set_registry(false, false, Some(error.clone()));
                } else {
                    state.set_registry(true, false, None);
                }
                state.set_status(&service, false, Some(error));
                let wait = retry;
                retry = (retry * 2).min(retry_max);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        dns: DnsArgs,
    }

    fn parse(args: &[&str]) -> Result<DnsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.dns)
    }

    #[test]
    fn defaults_are_srv_under_service_consul_between_1s_and_60s() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.template().to_string(), "_{service}._tcp.{domain}");
        assert_eq!(a.dns_domain, "service.consul");
        assert_eq!((a.dns_min_ttl, a.dns_max_ttl), (Duration::from_secs(1), Duration::from_secs(60)));
        assert_eq!(a.validate(), Ok(()));
        let a = parse(&["--dns-port", "8080"]).unwrap();
        assert_eq!(a.template().to_string(), "{service}.{domain}");
    }

    #[test]
    fn to_argv_passes_every_flag_on() {
        let a = parse(&[
            "--dns-server=127.0.0.1:8600",
            "--dns-name={service}.example",
            "--dns-domain=example.org",
            "--dns-port=81",
            "--dns-min-ttl=2s",
            "--dns-max-ttl=5m",
        ])
        .unwrap();
        let again = parse(&a.to_argv().iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(again, a);
        let d = parse(&[]).unwrap();
        assert_eq!(parse(&d.to_argv().iter().map(String::as_str).collect::<Vec<_>>()).unwrap(), d);
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        let e = parse(&["--dns-name=_web._tcp.{domain}"]).unwrap_err();
        assert!(e.to_string().contains("{service}"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let a = parse(&["--dns-min-ttl=10s", "--dns-max-ttl=5s"]).unwrap();
        assert!(matches!(a.validate(), Err(DnsArgsError::TtlBounds { .. })));
        assert_eq!(parse(&["--dns-min-ttl=0s"]).unwrap().validate(), Err(DnsArgsError::ZeroMinTtl));
        assert!(matches!(parse(&["--dns-domain=a..b"]).unwrap().validate(), Err(DnsArgsError::Domain(_))));
    }
}
