//! What the watcher knows of etcd's instances: every key under the prefix as an instance (or as
//! a value that could not be read), changed by range reads and watch events. Pure: no I/O.
//!
//! A value that is not an instance is logged once (per key and revision) and skipped: its
//! service's other instances stay, and the key counts as no instance until a good value comes.

use std::collections::{BTreeMap, BTreeSet};

use consul::name::fold;
use consul::Instance;
use etcd::model::{parse_key, parse_value};
use etcd::{Kv, WatchEvent};
use tracing::warn;

/// Every instance under the prefix, by service and instance ID.
#[derive(Debug, Default)]
pub struct View {
    prefix: String,
    services: BTreeMap<String, BTreeMap<String, Instance>>,
    /// Keys whose value was bad, with the revision logged.
    bad: BTreeMap<Vec<u8>, i64>,
}

impl View {
    /// An empty view of the instances under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string(), ..Self::default() }
    }

    /// Replaces everything with a range read.
    pub fn reset(&mut self, kvs: &[Kv]) {
        self.services.clear();
        let mut bad = std::mem::take(&mut self.bad);
        for kv in kvs {
            self.put(kv, &mut bad);
        }
        // Keys no longer bad (gone, or good now) are forgotten.
        let now: BTreeSet<&Vec<u8>> = kvs.iter().map(|kv| &kv.key).collect();
        bad.retain(|k, _| now.contains(k));
        self.bad = bad;
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Put(kv) => {
                let mut bad = std::mem::take(&mut self.bad);
                self.put(kv, &mut bad);
                self.bad = bad;
            }
            WatchEvent::Delete { key, .. } => {
                self.bad.remove(key);
                self.remove(key);
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        let Some(k) = parse_key(&self.prefix, key) else { return };
        if let Some(instances) = self.services.get_mut(k.service) {
            instances.remove(k.id);
            if instances.is_empty() {
                self.services.remove(k.service);
            }
        }
    }

    fn put(&mut self, kv: &Kv, bad: &mut BTreeMap<Vec<u8>, i64>) {
        let Some(k) = parse_key(&self.prefix, &kv.key) else { return };
        match parse_value(&kv.value) {
            Ok(reg) => {
                bad.remove(&kv.key);
                let instance = reg.into_instance(k.id);
                self.services.entry(k.service.to_string()).or_default().insert(k.id.to_string(), instance);
            }
            Err(e) => {
                if bad.insert(kv.key.clone(), kv.mod_revision) != Some(kv.mod_revision) {
                    warn!(key = %common::untrusted(&String::from_utf8_lossy(&kv.key)), error = %e,
                          "skipping an etcd value that is not an instance");
                }
                self.remove(&kv.key);
            }
        }
    }

    /// Every service with an instance, with the union of its instances' tags (sorted,
    /// deduplicated): what the follower reads as Consul's catalog.
    pub fn catalog(&self) -> BTreeMap<String, Vec<String>> {
        self.services
            .iter()
            .map(|(s, instances)| {
                let tags: BTreeSet<&String> = instances.values().flat_map(|i| &i.tags).collect();
                (s.clone(), tags.into_iter().cloned().collect())
            })
            .collect()
    }

    /// The services by folded name (the spellings of one service, as the follower groups them).
    pub fn spellings(&self) -> BTreeMap<String, Vec<&str>> {
        let mut out: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for s in self.services.keys() {
            out.entry(fold(s).into_owned()).or_default().push(s);
        }
        out
    }

    /// The instances of every spelling of `service` (sorted by service, then ID).
    pub fn instances(&self, service: &str, spellings: &BTreeMap<String, Vec<&str>>) -> Vec<Instance> {
        let Some(names) = spellings.get(fold(service).as_ref()) else { return Vec::new() };
        names.iter().filter_map(|n| self.services.get(*n)).flat_map(|m| m.values().cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: i64) -> Kv {
        Kv { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec(), mod_revision: rev }
    }

    fn ids(v: &View, s: &str) -> Vec<String> {
        v.instances(s, &v.spellings()).into_iter().map(|i| i.id).collect()
    }

    #[test]
    fn range_reads_and_events_build_the_instances() {
        let mut v = View::new("/services/");
        v.reset(&[
            kv("/services/web/a", r#"{"address":"10.0.0.1","port":80,"tags":["gateway"]}"#, 2),
            kv("/services/web/b", "10.0.0.2:80", 3),
            kv("/services/api/x", r#"{"address":"h","port":1,"tags":["urlprefix-/api","v1"]}"#, 4),
            kv("/services/junk", "1.2.3.4:5", 5),
            kv("/elsewhere/web/z", "1.2.3.4:5", 6),
        ]);
        assert_eq!(ids(&v, "web"), ["a", "b"]);
        assert_eq!(v.catalog().get("api"), Some(&vec!["urlprefix-/api".to_string(), "v1".to_string()]));
        assert_eq!(v.catalog().get("web"), Some(&vec!["gateway".to_string()]));
        v.apply(&WatchEvent::Delete { key: b"/services/web/a".to_vec(), revision: 7 });
        v.apply(&WatchEvent::Put(kv("/services/web/c", "10.0.0.3:81", 8)));
        assert_eq!(ids(&v, "web"), ["b", "c"]);
        assert_eq!(v.catalog().get("web"), Some(&vec![]), "the tagged instance went");
        v.apply(&WatchEvent::Delete { key: b"/services/api/x".to_vec(), revision: 9 });
        assert!(!v.catalog().contains_key("api"), "a service with no instance is not listed");
        v.reset(&[]);
        assert!(v.catalog().is_empty());
    }

    #[test]
    fn a_bad_value_is_skipped_and_the_service_stays() {
        let mut v = View::new("/s/");
        v.reset(&[kv("/s/web/a", "10.0.0.1:80", 2), kv("/s/web/b", "not an address", 3)]);
        assert_eq!(ids(&v, "web"), ["a"]);
        // A good instance turning bad is no instance any more; the other stays.
        v.apply(&WatchEvent::Put(kv("/s/web/a", "{oops", 4)));
        assert!(ids(&v, "web").is_empty());
        v.apply(&WatchEvent::Put(kv("/s/web/b", "10.0.0.2:80", 5)));
        assert_eq!(ids(&v, "web"), ["b"]);
        assert_eq!(v.bad.len(), 1, "only a is bad now");
        v.reset(&[kv("/s/web/b", "10.0.0.2:80", 5)]);
        assert!(v.bad.is_empty(), "a is gone: forgotten");
    }

    #[test]
    fn spellings_of_one_service_are_read_together() {
        let mut v = View::new("/s/");
        v.reset(&[kv("/s/Web/a", "h:1", 2), kv("/s/web/b", "h:2", 3)]);
        assert_eq!(ids(&v, "WEB"), ["a", "b"]);
        assert!(ids(&v, "other").is_empty());
    }
}
