//! The followed services, found by the names Consul reports.
//!
//! Consul compares service names without regard to case ([`consul::name`]): a read of
//! `/v1/health/service/web` answers the instances registered as `Web` too. The cluster-wide
//! endpoints the multiplexed mode follows report each registration under the name it was
//! registered with, so a change to `Web` must mark `web` dirty, or the two modes disagree.
//! Every lookup of a name from Consul goes through [`Watched::lookup`].
//!
//! Snapshots carry the configured name (the one the gateway routes on), never Consul's spelling.
//! Several configured names may fold alike (`--service web --service Web`): Consul takes them for
//! one service, so each gets the same instance set, in both modes. A service discovered by tag is
//! named as [`crate::followed`] says (one name per folded form).
//!
//! [`Names`] holds the current [`Watched`] while the followed set changes under the multiplexed
//! watch: it is replaced whole, and each loop takes the current one for one answer.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

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

    /// Whether `name` is one of the configured names, exactly.
    pub fn has(&self, name: &str) -> bool {
        self.all.binary_search_by(|s| s.as_str().cmp(name)).is_ok()
    }
}

/// The current [`Watched`], replaced whole when the followed set changes. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Names(Arc<RwLock<Arc<Watched>>>);

impl Names {
    /// Starts with `watched`.
    pub fn new(watched: Watched) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(watched))))
    }

    /// The current names.
    pub fn get(&self) -> Arc<Watched> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the names.
    pub fn set(&self, watched: Watched) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(watched);
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
        assert!(w.has("Web") && w.has("api") && !w.has("API"));
    }

    #[test]
    fn names_are_replaced_whole() {
        let names = Names::new(Watched::new(["a".to_string()]));
        let before = names.get();
        names.set(Watched::new(["b".to_string()]));
        assert!(before.has("a") && !before.has("b"), "a loop keeps what it took");
        assert!(names.get().has("b") && !names.get().has("a"));
    }
}
