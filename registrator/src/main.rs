//! `registrator`: registers Docker containers as Consul services (gliderlabs/registrator
//! conventions). This file only parses the command line and wires the parts together.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::LogFormat;
use consul::{Client, ConsulAddr};
use registrator::run::{run, Options};
use registrator::sync::Deregister;
use tracing::{info, warn};

/// Registers the ports of running Docker containers as Consul services.
///
/// Docker: DOCKER_HOST or /var/run/docker.sock. Consul: --consul / CONSUL_HTTP_ADDR, ACL token
/// from CONSUL_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN (never logged; the token needs service:write),
/// TLS from CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT/KEY, CONSUL_TLS_SERVER_NAME and
/// CONSUL_HTTP_SSL_VERIFY, as every Consul tool. Per-container settings come from SERVICE_* env vars or
/// labels, as with gliderlabs/registrator (see the README's registrator section).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// gliderlabs-style registry URI, e.g. `consul://consul:8500`, or `consul-tls://consul:8501`
    /// for Consul's HTTPS API (overrides --consul).
    registry: Option<String>,
    /// Consul agent HTTP address, with or without `http://`, or `https://`.
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = consul::addr::DEFAULT_ADDR)]
    consul: String,
    /// Register the container's IP and exposed port instead of the host IP and published port.
    #[arg(long, env = "REGISTRATOR_INTERNAL")]
    internal: bool,
    /// Host IP to advertise for published ports and host-network containers; default: what the Docker engine's host name resolves to, unless loopback (not looked up with --hostname); without one those are skipped.
    #[arg(long, env = "REGISTRATOR_IP")]
    ip: Option<String>,
    /// Host name used in service IDs (`<hostname>:<container>:<port>`) and as the owner mark; default: the Docker engine's host name.
    #[arg(long, env = "REGISTRATOR_HOSTNAME")]
    hostname: Option<String>,
    /// Comma-separated tags added to every service.
    #[arg(long, env = "REGISTRATOR_TAGS", default_value = "")]
    tags: String,
    /// Only register ports that have SERVICE_NAME or SERVICE_<port>_NAME.
    #[arg(long, env = "REGISTRATOR_EXPLICIT")]
    explicit: bool,
    /// With --internal: use the container's IP on this Docker network and skip containers not on it (default: the network a container was started on).
    #[arg(long, env = "REGISTRATOR_NETWORK")]
    network: Option<String>,
    /// Resync interval: `30s`, `2m`, or plain seconds; 0 turns the periodic resync off.
    #[arg(long, env = "REGISTRATOR_RESYNC", default_value = "30s", value_parser = parse_interval)]
    resync: Duration,
    /// When a stopped container's services are removed.
    #[arg(long, env = "REGISTRATOR_DEREGISTER", value_enum, default_value_t = Deregister::Always)]
    deregister: Deregister,
    /// Whether a resync removes this host's registrations whose container is gone.
    #[arg(long, env = "REGISTRATOR_CLEANUP", default_value_t = true, action = clap::ArgAction::Set)]
    cleanup: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `30` (seconds, as gliderlabs' `-resync`) or a humantime duration such as `30s`.
fn parse_interval(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(raw.trim()).map_err(|e| e.to_string()),
    }
}

/// `consul://host:port` (gliderlabs) → `host:port`, `consul-tls://host:port` (gliderlabs' TLS
/// scheme) → `https://host:port`; anything else is passed through.
fn consul_address(args: &Args) -> String {
    let raw = args.registry.as_deref().unwrap_or(&args.consul);
    if let Some(rest) = raw.strip_prefix("consul-tls://") {
        return format!("https://{rest}");
    }
    raw.strip_prefix("consul://").unwrap_or(raw).to_string()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    common::init_logging(args.log_format);
    let addr = ConsulAddr::parse(&consul_address(&args)).context("invalid Consul address")?;
    let client = Client::from_env(addr.clone()).context("cannot set up the Consul client")?;
    if args.network.is_some() && !args.internal {
        warn!("--network only matters with --internal");
    }
    info!(consul = %addr, token = client.has_token(), internal = args.internal, "registrator starting");
    let opts = Options {
        hostname: args.hostname.filter(|h| !h.trim().is_empty()),
        internal: args.internal,
        host_ip: args.ip,
        force_tags: registrator::convention::split_tags(&args.tags),
        explicit: args.explicit,
        network: args.network,
        resync: (!args.resync.is_zero()).then_some(args.resync),
        deregister: args.deregister,
        cleanup: args.cleanup,
    };
    run(opts, client, async {
        let sig = common::shutdown_signal().await;
        info!("{sig} received; stopping (registrations stay for the next registrator)");
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_accept_plain_seconds_and_units() {
        assert_eq!(parse_interval("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn gliderlabs_registry_uri_wins() {
        let args = Args::parse_from(["registrator", "--consul", "a:1", "consul://b:2"]);
        assert_eq!(consul_address(&args), "b:2");
        let args = Args::parse_from(["registrator", "--consul", "a:1"]);
        assert_eq!(consul_address(&args), "a:1");
        // gliderlabs' TLS scheme: Consul's HTTPS API (TLS from the CONSUL_CACERT family).
        let args = Args::parse_from(["registrator", "consul-tls://b:8501"]);
        assert_eq!(consul_address(&args), "https://b:8501");
    }

    #[test]
    fn cleanup_defaults_on_and_can_be_turned_off() {
        assert!(Args::parse_from(["registrator"]).cleanup);
        assert!(!Args::parse_from(["registrator", "--cleanup=false"]).cleanup);
    }
}
