//! Says once why a container is not (fully) registered, or which choice was made for it.
//!
//! Events and resyncs rebuild every container's registrations again and again; the reasons come
//! with them each time. An operator needs each reason once, at INFO, naming the container — not
//! once per resync, and not only at debug level. This memo remembers what was said per container
//! and hands back only what is new; a container that stops is forgotten, so a restart says it
//! again. Owns no logging itself: [`crate::run`] logs what it returns.

use std::collections::{BTreeSet, HashMap};

/// What has been said, per container ID.
#[derive(Debug, Default)]
pub struct Reported {
    said: HashMap<String, BTreeSet<String>>,
}

impl Reported {
    /// The lines of `lines` not yet said for container `id`, in their order. Remembers exactly
    /// `lines`, so a reason that goes away and comes back is said again.
    pub fn fresh(&mut self, id: &str, lines: Vec<String>) -> Vec<String> {
        let before = self.said.remove(id).unwrap_or_default();
        let new = lines.iter().filter(|l| !before.contains(*l)).cloned().collect();
        if !lines.is_empty() {
            self.said.insert(id.to_string(), lines.into_iter().collect());
        }
        new
    }

    /// Forgets a container that stopped or went away.
    pub fn forget(&mut self, id: &str) {
        self.said.remove(id);
    }

    /// Forgets every container not in `running`.
    pub fn retain(&mut self, running: &BTreeSet<String>) {
        self.said.retain(|id, _| running.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_line_is_said_once_per_container() {
        let mut r = Reported::default();
        assert_eq!(r.fresh("a", lines(&["x", "y"])), ["x", "y"]);
        assert!(r.fresh("a", lines(&["x", "y"])).is_empty());
        assert_eq!(r.fresh("b", lines(&["x"])), ["x"], "another container hears it too");
        assert_eq!(r.fresh("a", lines(&["y", "z"])), ["z"]);
    }

    #[test]
    fn a_reason_that_comes_back_is_said_again() {
        let mut r = Reported::default();
        r.fresh("a", lines(&["x"]));
        assert!(r.fresh("a", vec![]).is_empty());
        assert_eq!(r.fresh("a", lines(&["x"])), ["x"]);
    }

    #[test]
    fn stopped_containers_are_forgotten() {
        let mut r = Reported::default();
        r.fresh("a", lines(&["x"]));
        r.fresh("b", lines(&["x"]));
        r.forget("a");
        assert_eq!(r.fresh("a", lines(&["x"])), ["x"]);
        r.retain(&BTreeSet::from(["a".to_string()]));
        assert_eq!(r.fresh("b", lines(&["x"])), ["x"]);
        assert!(r.fresh("a", lines(&["x"])).is_empty());
    }
}
