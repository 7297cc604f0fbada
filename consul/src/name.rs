//! Service names as Consul compares them: without regard to case.
//!
//! Consul indexes service names lowercased (`strings.ToLower`, rune by rune), so
//! `/v1/health/service/web` answers the instances registered as `web`, `Web` and `WEB` alike,
//! while the cluster-wide endpoints (`/v1/health/state/any`, `/v1/catalog/services`,
//! `/v1/catalog/node/<n>`) report each registration under the name it was registered with. Code
//! that matches one against the other must fold both with [`fold`].
//!
//! Service IDs are case-insensitive too, per node: registering `Web-1` and `web-1` on one node
//! makes the second overwrite the first in the catalog.

use std::borrow::Cow;

/// The form Consul compares a service name in: each character lowercased by its simple case
/// mapping, as Go's `strings.ToLower` does (`İ` becomes `i`, not `i̇`). Borrowed when the name
/// is already folded (the usual case: lowercase ASCII).
pub fn fold(name: &str) -> Cow<'_, str> {
    if name.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return Cow::Borrowed(name);
    }
    // Only U+0130 has a lowercase of more than one character; its first one is Go's mapping.
    Cow::Owned(name.chars().map(|c| c.to_lowercase().next().unwrap_or(c)).collect())
}

/// Whether Consul takes `a` and `b` for the same service.
pub fn same(a: &str, b: &str) -> bool {
    fold(a) == fold(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_as_consul_folds_them() {
        assert!(matches!(fold("service-web"), Cow::Borrowed("service-web")));
        assert_eq!(fold("Web-2"), "web-2");
        assert!(same("WEB", "web") && same("wEb", "Web"));
        assert!(!same("web", "web2"));
        // Go's simple case mapping: the Kelvin sign folds to `k`, the dotted capital I to `i`.
        assert_eq!(fold("\u{212A}ube"), "kube");
        assert_eq!(fold("\u{130}x"), "ix");
        assert_eq!(fold("ÉTÉ"), "été");
    }
}
