//! The route-tag parser: `TagRules::classify` then `tag::parse` on the body of a declared route.
//!
//! The input is tried as a whole tag (classified with the default rules) and as a bare body.
//! Invariants: no panic; an accepted route renders to its canonical body, which parses back to
//! the same route and renders the same again (a fixed point), and classifies back as declared
//! once prefixed; the accepted route obeys the documented rules (path starts with `/`, `strip=`
//! is the path or a prefix of it ending at a `/`, neither `strip=` nor `prepend=` ends in `/`,
//! no whitespace anywhere); an error renders without panicking.
#![no_main]

use gateway::discovery::tag::{parse, Tag, TagRules, MAX_TAG_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let rules = TagRules::default();
    if let Tag::Declared(body) = rules.classify(text) {
        check(&rules, body);
    }
    check(&rules, text);
});

fn check(rules: &TagRules, body: &str) {
    let spec = match parse(body) {
        Ok(spec) => spec,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(body.len() <= MAX_TAG_LEN);
    assert!(spec.path.starts_with('/'), "{body:?}: path {:?}", spec.path);
    if let Some(strip) = &spec.strip {
        let rest = spec.path.strip_prefix(strip.as_str()).expect("strip is a prefix of the path");
        assert!(rest.is_empty() || rest.starts_with('/'), "{body:?}");
        assert!(!strip.ends_with('/'), "{body:?}");
    }
    if let Some(prepend) = &spec.prepend {
        assert!(prepend.starts_with('/') && !prepend.ends_with('/'), "{body:?}");
    }
    let canonical = spec.to_string();
    assert!(!canonical.starts_with(char::is_whitespace) && !canonical.contains(['\n', '\t']), "{canonical:?}");
    let again = parse(&canonical).unwrap_or_else(|e| panic!("{body:?} → {canonical:?} does not parse: {e}"));
    assert_eq!(again, spec, "{body:?} → {canonical:?}");
    assert_eq!(again.to_string(), canonical, "the canonical body is a fixed point");
    let tag = format!("{}{canonical}", rules.prefix);
    assert_eq!(rules.classify(&tag), Tag::Declared(canonical.as_str()));
}
