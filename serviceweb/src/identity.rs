//! Who this instance is: the IP it reports (its own non-loopback IPv4 when it listens on all
//! interfaces, else its listen IP), its port and hostname.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// What `/getRemoteIp` reports.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The instance's IP.
    pub ip: IpAddr,
    /// The port it listens on.
    pub port: u16,
    /// The host (container) name.
    pub hostname: String,
}

impl Identity {
    /// Works out the identity of an instance listening on `listen`.
    pub fn detect(listen: SocketAddr) -> Self {
        let ip = if listen.ip().is_unspecified() {
            own_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            listen.ip()
        };
        Self { ip, port: listen.port(), hostname: hostname() }
    }
}

/// The first non-loopback IPv4 address of this host.
fn own_ipv4() -> Option<IpAddr> {
    let mut addrs: Vec<Ipv4Addr> = if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .filter_map(|i| match i.ip() {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .collect();
    addrs.sort();
    addrs.first().copied().map(IpAddr::V4)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_listen_ip_is_reported_as_is() {
        let me = Identity::detect("127.0.0.2:3001".parse().unwrap());
        assert_eq!(me.ip.to_string(), "127.0.0.2");
        assert_eq!(me.port, 3001);
        assert!(!me.hostname.is_empty());
    }

    #[test]
    fn listening_everywhere_reports_a_real_address() {
        let me = Identity::detect("0.0.0.0:3000".parse().unwrap());
        assert!(me.ip.is_ipv4());
    }
}
