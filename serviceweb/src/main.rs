//! `serviceweb`: the demo backend. `GET /getRemoteIp` answers with the address of the instance
//! that served the request; `--register` makes it register itself in Consul with a TTL check,
//! `--register-etcd` in etcd under a lease.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::LogFormat;
use consul::{Client, ConsulAddr};
use tracing::info;

mod app;
mod etcd_registration;
mod identity;
mod registration;

/// Demo backend for the gateway: reports which instance answered.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "SERVICEWEB_LISTEN", default_value = "0.0.0.0:3000")]
    listen: SocketAddr,
    /// Register this instance in Consul (TTL check kept passing; deregistered on shutdown).
    #[arg(long, env = "SERVICEWEB_REGISTER")]
    register: bool,
    /// Service name to register under.
    #[arg(long, env = "SERVICEWEB_NAME", default_value = "service-web")]
    name: String,
    /// Tags to register with (repeat or comma list). The default `gateway` makes the instance
    /// routable through the gateway at /<name>/*; `urlprefix-...` tags declare routes.
    #[arg(long = "tag", env = "SERVICEWEB_TAGS", value_delimiter = ',', default_value = "gateway")]
    tags: Vec<String>,
    /// Address to register (default: the address /getRemoteIp reports).
    #[arg(long, env = "SERVICEWEB_ADVERTISE")]
    advertise: Option<String>,
    /// TTL of the health check; the instance reports every third of it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Consul HTTP address. Token from CONSUL_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN (it needs
    /// service:write on this service); TLS from CONSUL_CACERT, CONSUL_CAPATH,
    /// CONSUL_CLIENT_CERT/KEY, CONSUL_TLS_SERVER_NAME and CONSUL_HTTP_SSL_VERIFY.
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = consul::addr::DEFAULT_ADDR)]
    consul: ConsulAddr,
    /// Register this instance in etcd at these endpoints (`http://host:port`, comma list): the
    /// key `<--etcd-prefix><name>/<name>-<hostname>-<port>` under a lease of --etcd-ttl, kept
    /// alive, granted again if etcd loses it, revoked on shutdown.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    register_etcd: Vec<String>,
    /// With --register-etcd: the key prefix.
    #[arg(long, env = "GATEWAY_ETCD_PREFIX", default_value = "/services/", value_name = "PREFIX")]
    etcd_prefix: String,
    /// With --register-etcd: the lease TTL (whole seconds); renewed every third of it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    etcd_ttl: Duration,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    common::init_logging(args.log_format);
    consul::client::validate_name(&args.name)?;
    anyhow::ensure!(args.ttl >= Duration::from_secs(1), "--ttl must be at least 1s");

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let me = identity::Identity::detect(local);
    info!(listen = %local, ip = %me.ip, hostname = %me.hostname, "serviceweb listening");

    let registration = if args.register {
        let client = Client::from_env(args.consul.clone()).context("cannot set up the Consul client")?;
        let address = args.advertise.clone().unwrap_or_else(|| me.ip.to_string());
        let reg = registration::Registration::new(client, &args.name, &me.hostname, address, local.port(), args.ttl)
            .with_tags(args.tags.iter().filter(|t| !t.is_empty()).cloned().collect());
        reg.register().await.context("cannot register in Consul")?;
        Some(reg.spawn_keepalive())
    } else {
        None
    };

    let tags: Vec<String> = args.tags.iter().filter(|t| !t.is_empty()).cloned().collect();
    let etcd = if args.register_etcd.is_empty() {
        None
    } else {
        let instance = etcd_registration::Instance {
            name: &args.name,
            hostname: &me.hostname,
            address: args.advertise.clone().unwrap_or_else(|| me.ip.to_string()),
            port: local.port(),
            tags,
        };
        Some(etcd_registration::start(&args.register_etcd, &args.etcd_prefix, instance, args.etcd_ttl).await?)
    };

    let app = app::router(me);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let sig = common::shutdown_signal().await;
            info!("{sig} received; shutting down");
        })
        .await?;

    if let Some(reg) = registration {
        reg.deregister().await;
    }
    if let Some(reg) = etcd {
        reg.shutdown().await;
    }
    Ok(())
}
