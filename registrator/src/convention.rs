//! The `SERVICE_*` conventions of gliderlabs/registrator, as pure functions over [`Container`].
//!
//! Owns: the container model the conventions read, the lookup of `SERVICE_<key>` and
//! `SERVICE_<port>_<key>` (from env, then labels), tag lists with `\,` escapes, and the default
//! service name from the image. It does not build registrations ([`crate::desired`]) and never talks
//! to Docker ([`crate::docker`]).
//!
//! Precedence, as gliderlabs documents it: env over labels; `SERVICE_<port>_<key>` over
//! `SERVICE_<key>` for that port. Keys are case-insensitive after the `SERVICE_` prefix.

use std::collections::{BTreeMap, BTreeSet};

/// A port a container exposes, with its host binding when it is published.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// The container-side port.
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
    /// The host IP of the first binding (`0.0.0.0` or `""` means all interfaces).
    pub host_ip: Option<String>,
    /// The host port of the first binding; `None` when the port is only exposed.
    pub host_port: Option<u16>,
}

/// What the conventions need to know about one running container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// The full container ID.
    pub id: String,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// The image as the container was created from (`Config.Image`).
    pub image: String,
    /// `KEY=value` environment entries.
    pub env: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// How the container is connected (for `container:<id>`, the owner's connection once resolved).
    pub network: Network,
    /// The container whose network namespace this one shares (`--network container:<id>`), by name.
    pub via: Option<String>,
    /// Exposed and published ports, sorted. For `container:<id>`, the host bindings are the owner's.
    pub ports: Vec<Port>,
}

/// A container's network mode (`HostConfig.NetworkMode`) with the addresses it has there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Its own namespace on one or more Docker networks (bridge, user-defined, macvlan, ...).
    Attached {
        /// The network it was started on (`default` is `bridge`): the default choice of several.
        primary: String,
        /// Network name → the container's IP there; networks without an IP are left out.
        ips: BTreeMap<String, String>,
    },
    /// `--network host`: the host's own stack; the ports are listened on at the host's address.
    Host,
    /// `--network none`: no interface but loopback, so nothing to register.
    None,
    /// `--network container:<id>` not (yet) resolved to that container's network.
    Joined(String),
    /// A network that cannot be used, with the reason (e.g. the owner of a shared namespace stopped).
    Unusable(String),
}

impl Default for Network {
    fn default() -> Self {
        Network::Attached { primary: "bridge".into(), ips: BTreeMap::new() }
    }
}

impl Container {
    /// The first 12 characters of the ID, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// The `SERVICE_*` settings that apply to one port, keys lower-cased without the prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    values: BTreeMap<String, String>,
    from_port: BTreeSet<String>,
}

impl Metadata {
    /// The value of `key`, if set and not empty (gliderlabs treats empty as unset).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Whether `key` came from the port-specific form `SERVICE_<port>_<key>`.
    pub fn is_port_specific(&self, key: &str) -> bool {
        self.from_port.contains(key)
    }

    /// All settings, for turning the remaining ones into service metadata.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The settings for `port`: labels first, env on top; port-specific keys override generic ones.
pub fn metadata(container: &Container, port: u16) -> Metadata {
    let env = container.env.iter().filter_map(|e| e.split_once('='));
    let labels = container.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut generic = BTreeMap::new();
    let mut specific = BTreeMap::new();
    // Later writes win: labels, then env.
    for (key, value) in labels.chain(env) {
        let Some(rest) = key.strip_prefix("SERVICE_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let port_key = rest.split_once('_').and_then(|(p, k)| Some((p.parse::<u16>().ok()?, k)));
        match port_key {
            // Another port's setting, or the odd `SERVICE_<port>_`: not ours.
            Some((p, k)) if !k.is_empty() && p == port => {
                specific.insert(k.to_string(), value.to_string());
            }
            Some(_) => {}
            None if !rest.is_empty() => {
                generic.insert(rest, value.to_string());
            }
            _ => {}
        }
    }
    let from_port = specific.keys().cloned().collect();
    generic.extend(specific);
    Metadata { values: generic, from_port }
}

/// Splits a comma-separated tag list; `\,` is a literal comma. Empty items are dropped.
pub fn split_tags(raw: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut current = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => tags.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    tags.push(current);
    tags.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect()
}

/// The default service name: the image's last path component without tag or digest
/// (`registry:5000/team/web:1.2` → `web`).
pub fn base_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let no_digest = last.split('@').next().unwrap_or(last);
    no_digest.split(':').next().unwrap_or(no_digest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(env: &[&str], labels: &[(&str, &str)]) -> Container {
        Container {
            env: env.iter().map(|s| s.to_string()).collect(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn generic_keys_apply_to_every_port() {
        let c = container(&["SERVICE_NAME=web", "SERVICE_TAGS=a,b", "PATH=/bin"], &[]);
        for port in [80, 443] {
            let m = metadata(&c, port);
            assert_eq!(m.get("name"), Some("web"));
            assert_eq!(m.get("tags"), Some("a,b"));
            assert!(!m.is_port_specific("name"));
            assert_eq!(m.get("path"), None);
        }
    }

    #[test]
    fn port_specific_keys_win_only_for_their_port() {
        // The specific form comes first in env on purpose: order must not matter.
        let c = container(&["SERVICE_80_NAME=front", "SERVICE_NAME=web"], &[]);
        let m80 = metadata(&c, 80);
        assert_eq!(m80.get("name"), Some("front"));
        assert!(m80.is_port_specific("name"));
        assert_eq!(metadata(&c, 443).get("name"), Some("web"));
    }

    #[test]
    fn env_wins_over_labels() {
        let c = container(&["SERVICE_NAME=from-env"], &[("SERVICE_NAME", "from-label"), ("SERVICE_TAGS", "label-tag")]);
        let m = metadata(&c, 80);
        assert_eq!(m.get("name"), Some("from-env"));
        assert_eq!(m.get("tags"), Some("label-tag"));
    }

    #[test]
    fn port_specific_label_beats_generic_env() {
        let c = container(&["SERVICE_NAME=generic"], &[("SERVICE_80_NAME", "specific")]);
        assert_eq!(metadata(&c, 80).get("name"), Some("specific"));
    }

    #[test]
    fn keys_are_lower_cased_and_multi_word_keys_survive() {
        let c = container(&["SERVICE_CHECK_HTTP=/health", "SERVICE_3000_CHECK_INTERVAL=2s", "SERVICE_Region=eu"], &[]);
        let m = metadata(&c, 3000);
        assert_eq!(m.get("check_http"), Some("/health"));
        assert_eq!(m.get("check_interval"), Some("2s"));
        assert_eq!(m.get("region"), Some("eu"));
    }

    #[test]
    fn empty_values_and_odd_keys_are_unset() {
        let c = container(&["SERVICE_NAME=", "SERVICE_=x", "SERVICE_80_=y", "NOEQUALS"], &[]);
        let m = metadata(&c, 80);
        assert_eq!(m.get("name"), None);
        assert_eq!(m.iter().filter(|(k, _)| k.is_empty()).count(), 0);
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let c = container(&["SERVICE_QUERY=a=b"], &[]);
        assert_eq!(metadata(&c, 1).get("query"), Some("a=b"));
    }

    #[test]
    fn tags_split_on_unescaped_commas() {
        assert_eq!(split_tags("a,b , c"), ["a", "b", "c"]);
        assert_eq!(split_tags(r"a\,b,c"), ["a,b", "c"]);
        assert_eq!(split_tags(",,a,"), ["a"]);
        assert!(split_tags("").is_empty());
        assert_eq!(split_tags(r"x\y"), [r"x\y"]);
    }

    #[test]
    fn base_name_strips_registry_path_tag_and_digest() {
        assert_eq!(base_name("redis"), "redis");
        assert_eq!(base_name("repo/foo:tag"), "foo");
        assert_eq!(base_name("registry.local:5000/team/web:1.2"), "web");
        assert_eq!(base_name("web@sha256:abc"), "web");
        assert_eq!(base_name("consul-gateway:local"), "consul-gateway");
    }

    #[test]
    fn short_id_is_twelve_chars_or_whole() {
        let mut c = Container { id: "0123456789abcdef".into(), ..Default::default() };
        assert_eq!(c.short_id(), "0123456789ab");
        c.id = "abc".into();
        assert_eq!(c.short_id(), "abc");
    }
}
