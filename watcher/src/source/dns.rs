//! DNS as a [`Source`]. STUB: filled in by the DNS work (issue 13, item 3).
//!
//! Each followed service is a name made from a template (default `_{service}._tcp.{domain}`,
//! SRV records with ports; A/AAAA records with --dns-port), re-resolved when its TTL runs out.

use std::process::ExitCode;

use tracing::error;

use super::{Follow, RunFuture, Source};
use crate::state::State;

/// The DNS flags, shared by the watcher and the gateway (which passes them on with
/// [`DnsArgs::to_argv`]).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct DnsArgs {
    /// With --source dns: the DNS server to ask (`ip:port`; default: the system's resolvers,
    /// from /etc/resolv.conf).
    #[arg(long, env = "GATEWAY_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<std::net::SocketAddr>,
}

impl DnsArgs {
    /// The flags again, as the watcher takes them.
    pub fn to_argv(&self) -> Vec<String> {
        self.dns_server.iter().map(|a| format!("--dns-server={a}")).collect()
    }
}

/// DNS, as the command line set it up.
pub struct DnsSource {
    /// The flags.
    pub args: DnsArgs,
}

impl Source for DnsSource {
    fn run(self: Box<Self>, _what: Follow, _state: State) -> RunFuture {
        Box::pin(async move {
            error!("--source dns is not implemented yet");
            ExitCode::from(2)
        })
    }
}
