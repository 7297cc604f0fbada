//! The watched services, found by the names Consul reports.
//!
//! Consul compares service names without regard to case ([`consul::name`]): a read of
//! `/v1/health/service/web` answers the instances registered as `Web` too. The cluster-wide
//! endpoints the multiplexed mode follows report each registration under the name it was
//! registered with, so a change to `Web` must mark `web` dirty, or the two modes disagree.
//! Every lookup of a name from Consul goes through [`Watched::lookup`].
//!
//! Snapshots carry the configured name (the one the gateway routes on), never Consul's spelling.
//! Several configured names may fold alike (`--service web --service Web`): Consul takes them for
//! one service, so each gets the same instance set, in both modes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use consul::name::fold;

/// The configured service names, indexed by their folded form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Watched {
    by_key: BTreeMap<String, Vec<String>>,
    all: Vec<String>,
}

impl Watched {
    /// Indexes `services` (the configured names, as given).
    pub fn new(services: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<String> = services.into_iter().collect();
        all.sort();
        all.dedup();
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in &all {
            by_key.entry(fold(s).into_owned()).or_default().push(s.clone());
        }
        Self { by_key, all }
    }

    /// The configured names that `consul_name` (as Consul reports it) stands for; empty if it is
    /// not watched.
    pub fn lookup(&self, consul_name: &str) -> &[String] {
        let key: Cow<'_, str> = fold(consul_name);
        self.by_key.get(key.as_ref()).map_or(&[], Vec::as_slice)
    }

    /// Whether `consul_name` is watched under some configured name.
    pub fn contains(&self, consul_name: &str) -> bool {
        !self.lookup(consul_name).is_empty()
    }

    /// Every configured name, sorted.
    pub fn all(&self) -> &[String] {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_spellings_find_the_configured_names() {
        let w = Watched::new(["web", "api", "Web", "web"].map(String::from));
        assert_eq!(w.all(), ["Web", "api", "web"]);
        assert_eq!(w.lookup("WEB"), ["Web", "web"]);
        assert_eq!(w.lookup("web"), ["Web", "web"]);
        assert_eq!(w.lookup("Api"), ["api"]);
        assert!(w.lookup("web2").is_empty() && !w.contains("other") && w.contains("aPI"));
    }
}
