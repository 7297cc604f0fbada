//! etcd (v3 API) as a [`Source`]. STUB: filled in by the etcd work (issue 13, item 2).
//!
//! An instance is the key `<prefix><service>/<instance-id>`; its value is JSON
//! `{"address","port","tags","meta"}` or a plain `host:port`.

use std::process::ExitCode;

use tracing::error;

use super::{Follow, RunFuture, Source};
use crate::state::State;

/// The etcd flags, shared by the watcher and the gateway (which passes them on with
/// [`EtcdArgs::to_argv`]).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct EtcdArgs {
    /// With --source etcd: the etcd endpoints (`http://host:port`), a comma list; etcdctl's
    /// variable.
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        value_name = "URLS"
    )]
    pub etcd_endpoints: Vec<String>,
    /// With --source etcd: the key prefix instances are registered under
    /// (`<prefix><service>/<instance-id>`).
    #[arg(long, env = "GATEWAY_ETCD_PREFIX", default_value = "/services/", value_name = "PREFIX")]
    pub etcd_prefix: String,
}

impl EtcdArgs {
    /// The flags again, as the watcher takes them.
    pub fn to_argv(&self) -> Vec<String> {
        vec![
            format!("--etcd-endpoints={}", self.etcd_endpoints.join(",")),
            format!("--etcd-prefix={}", self.etcd_prefix),
        ]
    }
}

/// etcd, as the command line set it up.
pub struct EtcdSource {
    /// The flags.
    pub args: EtcdArgs,
}

impl Source for EtcdSource {
    fn run(self: Box<Self>, _what: Follow, _state: State) -> RunFuture {
        Box::pin(async move {
            error!("--source etcd is not implemented yet");
            ExitCode::from(2)
        })
    }
}
