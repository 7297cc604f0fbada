//! Which check statuses make an instance routable (`--health-status`), and the one rule that
//! applies them.
//!
//! An instance is routable only if *every* check on it is in the allowed set: its node's checks
//! (`serfHealth`, node maintenance `_node_maintenance`, any other node-level check) and its own
//! (service maintenance `_service_maintenance:<id>` included). Maintenance checks are critical,
//! so an instance or node in maintenance is never routable. This is the rule of Consul's
//! `?passing` filter, with `warning` optionally allowed as well (as Consul DNS, Traefik and Fabio
//! allow it).
//!
//! `critical` is refused: routing to failing instances is what the catalog view (`--catalog`)
//! is for. `passing` is always in the set: a set without it would route to a degraded instance
//! and not to a healthy one.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The check statuses that make an instance routable: `passing`, or `passing,warning`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HealthStatuses {
    warning: bool,
}

impl HealthStatuses {
    /// Only `passing` (the default, and Consul's `?passing`).
    pub const PASSING: Self = Self { warning: false };
    /// `passing` and `warning` (as Consul DNS answers).
    pub const PASSING_WARNING: Self = Self { warning: true };

    /// Whether a check in `status` leaves its instance routable.
    pub fn allows(self, status: &str) -> bool {
        status == "passing" || (self.warning && status == "warning")
    }

    /// Whether an instance whose checks have these statuses is routable.
    pub fn routable<'a>(self, mut statuses: impl Iterator<Item = &'a str>) -> bool {
        statuses.all(|s| self.allows(s))
    }

    /// Whether `warning` is allowed.
    pub fn warning(self) -> bool {
        self.warning
    }
}

impl FromStr for HealthStatuses {
    type Err = Error;

    /// Parses a comma list such as `passing,warning` (order, spaces and case do not matter).
    ///
    /// # Errors
    /// [`Error::InvalidHealthStatus`] for an empty list, an unknown or refused status
    /// (`critical`), or a list without `passing`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidHealthStatus { value: s.to_string(), why: why.to_string() };
        let (mut passing, mut warning) = (false, false);
        for part in s.split(',').map(|p| p.trim().to_ascii_lowercase()) {
            match part.as_str() {
                "passing" => passing = true,
                "warning" => warning = true,
                "maintenance" => {
                    return Err(bad("maintenance is a critical check: instances in maintenance are never routed"))
                }
                "critical" => {
                    return Err(bad(
                        "critical instances are never routed on the health view; use --catalog to ignore health",
                    ))
                }
                "" => return Err(bad("empty status")),
                other => return Err(bad(&format!("unknown status {other:?}"))),
            }
        }
        if !passing {
            return Err(bad("the list must include passing"));
        }
        Ok(Self { warning })
    }
}

impl fmt::Display for HealthStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.warning { "passing,warning" } else { "passing" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_sane_sets_and_refuses_the_rest() {
        assert_eq!("passing".parse::<HealthStatuses>().unwrap(), HealthStatuses::PASSING);
        for s in ["passing,warning", "warning,passing", " Passing , WARNING ", "passing,passing,warning"] {
            assert_eq!(s.parse::<HealthStatuses>().unwrap(), HealthStatuses::PASSING_WARNING, "{s}");
        }
        for s in ["", "warning", "passing,critical", "passing,", "passing,ok", "maintenance,passing"] {
            let e = s.parse::<HealthStatuses>().unwrap_err().to_string();
            assert!(e.contains("use passing, or passing,warning"), "{s}: {e}");
        }
        assert!("warning".parse::<HealthStatuses>().unwrap_err().to_string().contains("must include passing"));
        assert_eq!(
            HealthStatuses::PASSING_WARNING.to_string().parse::<HealthStatuses>().unwrap(),
            HealthStatuses::PASSING_WARNING
        );
    }

    #[test]
    fn every_check_must_be_allowed() {
        let (p, pw) = (HealthStatuses::PASSING, HealthStatuses::PASSING_WARNING);
        let warn = ["passing", "warning"];
        assert!(!p.routable(warn.into_iter()) && pw.routable(warn.into_iter()));
        // A maintenance check is critical: never routable.
        assert!(!pw.routable(["passing", "critical"].into_iter()));
        assert!(p.routable(std::iter::empty()), "no check at all: routable, as with ?passing");
        assert!(!p.routable([""].into_iter()), "an unknown status is not passing");
    }
}
