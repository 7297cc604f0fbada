//! Turns one running [`Container`] into the Consul registrations it should have, following
//! gliderlabs/registrator: one service per port (exposed with `--internal`, published otherwise),
//! ID `<hostname>:<container-name>:<port>[:udp]`, name from `SERVICE_[<port>_]NAME` or the image
//! (suffixed `-<port>` when the container has several ports), tags, checks and metadata. Which
//! address and port number each network mode gets is decided in [`crate::address`].
//!
//! Owns the ownership marks ([`META_OWNER`], [`META_CONTAINER`], [`META_SPEC`]) every registration
//! carries, so [`crate::sync`] only ever touches what this host's registrator created. Pure: no I/O.

use std::collections::BTreeMap;

use consul::{AgentCheck, AgentRegistration};

use crate::address::{route, Reach, SET_IP};
use crate::convention::{base_name, metadata, split_tags, Container, Metadata, Port};

/// Meta key naming the registrator (host) that owns a registration.
pub const META_OWNER: &str = "registrator-owner";
/// Meta key holding the full ID of the container a registration belongs to.
pub const META_CONTAINER: &str = "registrator-container";
/// Meta key holding a hash of the registration, so an unchanged one is not re-sent.
pub const META_SPEC: &str = "registrator-spec";
/// gliderlabs' default check interval.
const DEFAULT_INTERVAL: &str = "10s";
/// Consul refuses more meta pairs than this.
const MAX_META: usize = 64;

/// How registrations are built; fixed for the life of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Host name used in service IDs and as the owner mark.
    pub hostname: String,
    /// Register container IP + exposed port instead of host IP + published port.
    pub internal: bool,
    /// The host IP to advertise for published ports and host-network containers (`--ip`).
    pub host_ip: Option<String>,
    /// Without `--ip`: the address the host name resolves to, if not loopback (see [`crate::address`]).
    pub host_name_ip: Option<String>,
    /// With `--internal`: the Docker network whose IP is registered (`--network`).
    pub network: Option<String>,
    /// Tags added to every service (`--tags`).
    pub force_tags: Vec<String>,
    /// Only register ports that have a `SERVICE_[<port>_]NAME` (`--explicit`).
    pub explicit: bool,
}

/// The registrations wanted for one container, and why ports were left out (for the log).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// Registrations, each carrying the ownership marks.
    pub services: Vec<AgentRegistration>,
    /// Why the container, or one of its ports, was deliberately not registered.
    pub skipped: Vec<String>,
    /// Choices made without being asked (which network, an ignored `-p`), worth one log line.
    pub notes: Vec<String>,
}

/// The registrations `container` should have.
pub fn registrations(container: &Container, settings: &Settings) -> Desired {
    let mut out = Desired::default();
    let route = match route(container, settings) {
        Ok(r) => r,
        Err(why) => {
            out.skipped.push(why);
            return out;
        }
    };
    out.notes = route.notes;
    if container.ports.is_empty() {
        out.skipped.push("no exposed or published ports".into());
    }
    let ports: Vec<&Port> = container
        .ports
        .iter()
        .filter(|p| {
            let keep = route.reach != Reach::Published || p.host_port.is_some();
            if !keep {
                out.skipped.push(format!("port {}/{} not published on host", p.port, p.proto));
            }
            keep
        })
        .collect();
    let is_group = ports.len() > 1;
    for port in ports {
        if let (Reach::HostStack(_), Some(hp)) = (&route.reach, port.host_port) {
            if hp != port.port {
                out.notes
                    .push(format!("network mode host: Docker ignores -p {hp}:{0}; port {0} is registered", port.port));
            }
        }
        let meta = metadata(container, port.port);
        match service(container, port, &route.reach, &meta, is_group, settings) {
            Ok(reg) => out.services.push(reg),
            Err(why) => out.skipped.push(format!("port {}/{}: {why}", port.port, port.proto)),
        }
    }
    out
}

fn service(
    container: &Container,
    port: &Port,
    reach: &Reach,
    meta: &Metadata,
    is_group: bool,
    settings: &Settings,
) -> Result<AgentRegistration, String> {
    if meta.get("ignore").is_some() {
        return Err("SERVICE_IGNORE set".into());
    }
    let name = match meta.get("name") {
        Some(n) => n.to_string(),
        None if settings.explicit => return Err("no SERVICE_NAME and --explicit".into()),
        None => base_name(&container.image),
    };
    let name = if is_group && !meta.is_port_specific("name") { format!("{name}-{}", port.port) } else { name };
    let (address, svc_port) = match reach {
        Reach::Container(ip) | Reach::HostStack(ip) => (ip.clone(), port.port),
        Reach::Published => {
            let bound = port.host_ip.clone().filter(|ip| !matches!(ip.as_str(), "" | "0.0.0.0" | "::"));
            let ip = settings.host_ip.clone().or(bound).or_else(|| settings.host_name_ip.clone());
            let ip = ip.ok_or_else(|| format!("no host IP to advertise ({SET_IP})"))?;
            (ip, port.host_port.ok_or("not published")?)
        }
    };
    let udp = port.proto == "udp";
    let mut tags = split_tags(meta.get("tags").unwrap_or(""));
    tags.extend(settings.force_tags.iter().cloned());
    if udp {
        tags.push("udp".into());
    }
    let id = match meta.get("id") {
        Some(id) => id.to_string(),
        None => {
            let base = format!("{}:{}:{}", settings.hostname, container.name, port.port);
            if udp {
                format!("{base}:udp")
            } else {
                base
            }
        }
    };
    let mut reg = AgentRegistration {
        id,
        name,
        tags,
        check: check(meta, &address, svc_port),
        address,
        port: svc_port,
        meta: service_meta(meta),
    };
    reg.meta.insert(META_OWNER.into(), settings.hostname.clone());
    reg.meta.insert(META_CONTAINER.into(), container.id.clone());
    let spec = spec_hash(&reg);
    reg.meta.insert(META_SPEC.into(), spec);
    Ok(reg)
}

/// The check gliderlabs' Consul adapter builds, in its order of preference. Script checks are
/// not supported (they would run commands on the Consul agent).
fn check(meta: &Metadata, ip: &str, port: u16) -> Option<AgentCheck> {
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    let mut check = AgentCheck::default();
    let with_timeout = |mut c: AgentCheck| {
        c.timeout = meta.get("check_timeout").map(str::to_string);
        c
    };
    if let Some(path) = meta.get("check_http") {
        check = with_timeout(AgentCheck { http: Some(format!("http://{host}:{port}{path}")), ..check });
    } else if let Some(path) = meta.get("check_https") {
        check = with_timeout(AgentCheck { http: Some(format!("https://{host}:{port}{path}")), ..check });
    } else if let Some(ttl) = meta.get("check_ttl") {
        check.ttl = Some(ttl.to_string());
    } else if meta.get("check_tcp").is_some() {
        check = with_timeout(AgentCheck { tcp: Some(format!("{host}:{port}")), ..check });
    } else {
        return None;
    }
    if check.http.is_some() || check.tcp.is_some() {
        check.interval = Some(meta.get("check_interval").unwrap_or(DEFAULT_INTERVAL).into());
    }
    check.status = meta.get("check_initial_status").map(str::to_string);
    check.deregister_critical_service_after = meta.get("check_deregister_after").map(str::to_string);
    Some(check)
}

/// Every other `SERVICE_<key>` becomes service metadata, as far as Consul accepts the key.
fn service_meta(meta: &Metadata) -> BTreeMap<String, String> {
    meta.iter()
        .filter(|(k, v)| {
            !v.is_empty()
                && !matches!(*k, "id" | "name" | "tags" | "ignore")
                && !k.starts_with("check_")
                && !k.starts_with("consul-")
                && !k.starts_with("registrator-")
                && k.len() <= 128
                && v.len() <= 512
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .take(MAX_META - 3)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// FNV-1a over the registration's JSON: stable across runs and builds (unlike `DefaultHasher`).
fn spec_hash(reg: &AgentRegistration) -> String {
    let json = serde_json::to_vec(reg).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
