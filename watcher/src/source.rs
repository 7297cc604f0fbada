//! Where instances come from: the seam between a registry and the watcher's [`State`].
//!
//! Each registry is a [`Source`] in its own module ([`consul`], [`etcd`], [`dns`]). A source
//! follows the services it is asked for ([`Follow`]: the static names plus, where the registry
//! can list services, every service that opts in by tag) and writes what it learns into the
//! shared [`State`]: snapshots ([`State::set_snapshot`]), the followed list and the services that
//! went ([`State::apply`]), per-service read status ([`State::set_status`]) and whether the
//! registry as a whole can be read ([`State::set_registry`]). The output and the gateway see the
//! same messages whichever registry is followed.

pub mod consul;
pub mod dns;
pub mod etcd;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use crate::followed::OptIn;
use crate::state::State;

/// `--source`: which registry the watcher (and the gateway through it) follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Consul's HTTP API, with blocking queries (the default).
    #[default]
    Consul,
    /// etcd's v3 API: a range read, then a watch on a key prefix.
    Etcd,
    /// DNS: SRV (or A/AAAA) records, re-resolved as their TTLs run out.
    Dns,
}

impl SourceKind {
    /// The flag value, as `--source` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Consul => "consul",
            SourceKind::Etcd => "etcd",
            SourceKind::Dns => "dns",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a source is asked to follow.
#[derive(Clone, Debug, Default)]
pub struct Follow {
    /// Services followed always, registered or not: sorted, without duplicates, valid names.
    pub services: Vec<String>,
    /// The opt-in rule (route tag, route prefix tag): every service one of whose instances
    /// carries a matching tag is followed while it does. `None`: only `services`.
    pub rule: Option<OptIn>,
}

/// What [`Source::run`] returns: the exit code the watcher ends with.
pub type RunFuture = Pin<Box<dyn Future<Output = ExitCode> + Send>>;

/// A registry the watcher can follow.
pub trait Source: Send {
    /// Follows `what` and writes every change into `state`, until the future is dropped.
    /// Failures to read the registry are reported in `state` and retried with backoff, never
    /// returned; the future ends only when the source cannot work at all (say, a configuration
    /// the registry refuses), with the exit code.
    fn run(self: Box<Self>, what: Follow, state: State) -> RunFuture;
}
