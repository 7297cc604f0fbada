//! Where a container's services are reached, per Docker network mode: which address to register
//! and whether the port is the container-side port or the published host port. Pure: Docker's
//! facts come from [`crate::docker`], the registrations are built in [`crate::desired`].
//!
//! | network mode | `--internal` | default |
//! |---|---|---|
//! | one or more Docker networks | the IP on `--network`; else on the network it was started on; else on the alphabetically first; container port | host address + published port |
//! | `host` | host address + container port | the same |
//! | `container:<id>` | as `<id>` would be (its address, its published ports) | the same |
//! | `none` | skipped: no address | skipped |
//!
//! The *host address* is `--ip`, else the address a port is bound to (`-p 10.0.0.5:80:80`),
//! else the address the Docker host's name resolves to, as gliderlabs does — but never a loopback
//! one (Debian maps the host name to `127.0.1.1`, which no other machine can reach), and only the
//! engine's own name, not a `--hostname` label. Without any, the container (host network) or port
//! (published on all interfaces) is skipped with a reason that says to set `--ip`.
//!
//! A host-network container listens in the host's stack directly, so its port is the
//! container-side one; Docker ignores `-p` there (the bindings stay in `HostConfig.PortBindings`,
//! which is where ports come from besides the exposed ones).
//!
//! `container:<id>` is resolved rather than skipped: the process listens in `<id>`'s namespace,
//! so it is reachable exactly where `<id>` is, and users who share a namespace (sidecars) expect
//! the sidecar's port to be found. The service ID and name stay the joining container's own.

use std::net::IpAddr;

use crate::convention::{Container, Network};
use crate::desired::Settings;

/// How the ports of one container are reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// At this IP on a Docker network, on the container-side port (`--internal`).
    Container(String),
    /// At the host address, on the published host port; unpublished ports are skipped.
    Published,
    /// At this host address, on the container-side port: a host-network container.
    HostStack(String),
}

/// The decision for one container, with lines worth telling the operator once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// How the ports are reached.
    pub reach: Reach,
    /// Choices that were made without being asked (e.g. which of several networks).
    pub notes: Vec<String>,
}

/// How `container`'s ports are reached under `settings`.
///
/// # Errors
/// The reason the whole container cannot be registered (network `none`, not on `--network`,
/// no host address for a host-network container, an unusable shared namespace).
pub fn route(container: &Container, settings: &Settings) -> Result<Route, String> {
    let via = |text: String| match &container.via {
        Some(owner) => format!("shares the network of container {owner}: {text}"),
        None => text,
    };
    let mut notes = Vec::new();
    if let Some(owner) = &container.via {
        notes.push(format!("shares the network of container {owner}: registered where {owner} is reached"));
    }
    let reach = match &container.network {
        Network::None => return Err(via("network mode none: no address to register".into())),
        Network::Joined(owner) => {
            return Err(format!("shares the network of container {owner}, which was not resolved"))
        }
        Network::Unusable(why) => return Err(why.clone()),
        Network::Host => match (&settings.network, settings.internal) {
            (Some(net), true) => return Err(via(format!("network mode host, not on network {net} (--network)"))),
            _ => match settings.host_ip.as_ref().or(settings.host_name_ip.as_ref()) {
                Some(ip) => Reach::HostStack(ip.clone()),
                None => return Err(via(format!("network mode host: no host address to advertise ({SET_IP})"))),
            },
        },
        Network::Attached { .. } if !settings.internal => Reach::Published,
        Network::Attached { primary, ips } => {
            let names = || ips.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            match &settings.network {
                Some(net) => match ips.get(net) {
                    Some(ip) => Reach::Container(ip.clone()),
                    None if ips.is_empty() => return Err(via(format!("not on network {net} (--network)"))),
                    None => return Err(via(format!("not on network {net} (--network), only on {}", names()))),
                },
                None => {
                    let (name, ip, why) = match ips.get_key_value(primary) {
                        Some((n, ip)) => (n, ip, "the network it was started on"),
                        None => match ips.iter().next() {
                            Some((n, ip)) => (n, ip, "the first by name"),
                            None => return Err(via("no IP address on any network".into())),
                        },
                    };
                    if ips.len() > 1 {
                        notes.push(format!(
                            "on networks {}: registered with its IP on {name} ({why}); --network picks another",
                            names()
                        ));
                    }
                    Reach::Container(ip.clone())
                }
            }
        }
    };
    Ok(Route { reach, notes })
}

/// The hint for a missing host address.
pub const SET_IP: &str = "set --ip";

/// The address to advertise for the host when `--ip` is not given: the first resolved address
/// that is neither loopback, unspecified nor IPv6 link-local, IPv4 before IPv6.
pub fn pick_host_ip(addrs: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    let link_local = |ip: &IpAddr| matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    let usable: Vec<IpAddr> =
        addrs.into_iter().filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !link_local(ip)).collect();
    usable.iter().find(|ip| ip.is_ipv4()).or(usable.first()).copied()
}

#[cfg(test)]
#[path = "address_tests.rs"]
mod tests;
