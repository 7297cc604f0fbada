//! Consul's consistency modes for reads (Consul docs, "Consistency Modes"), as Fabio and Traefik
//! offer them:
//!
//! - `default`: the leader answers, unless it lost its leadership without knowing yet (a small
//!   window). Nothing is added to the query string.
//! - `stale`: any server answers from its own state, even without a leader. Reads may lag the
//!   leader (by `X-Consul-LastContact`, usually well under a second), and keep working while
//!   the servers elect a new leader, so changes keep arriving through an election. `?stale`.
//! - `consistent`: the leader confirms with a quorum that it still leads before answering: never
//!   stale, one more round trip per read, and no answer at all without a leader. `?consistent`.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Which consistency mode every read asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Consul's default: nothing added.
    #[default]
    Default,
    /// `?stale`: any server answers.
    Stale,
    /// `?consistent`: the leader confirms its leadership first.
    Consistent,
}

impl Consistency {
    /// The query parameter this mode adds to a read (`None` for the default).
    pub fn query_param(self) -> Option<&'static str> {
        match self {
            Consistency::Default => None,
            Consistency::Stale => Some("stale"),
            Consistency::Consistent => Some("consistent"),
        }
    }

    /// The name as given on a command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Default => "default",
            Consistency::Stale => "stale",
            Consistency::Consistent => "consistent",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = Error;

    /// `default`, `stale` or `consistent` (any case, spaces around ignored).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "default" => Ok(Consistency::Default),
            "stale" => Ok(Consistency::Stale),
            "consistent" => Ok(Consistency::Consistent),
            _ => Err(Error::InvalidConsistency(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_modes_and_refuses_the_rest() {
        for (s, c) in [
            ("default", Consistency::Default),
            ("Stale", Consistency::Stale),
            (" consistent ", Consistency::Consistent),
        ] {
            assert_eq!(s.parse::<Consistency>().unwrap(), c);
            assert_eq!(c.as_str().parse::<Consistency>().unwrap(), c, "round trip");
        }
        for bad in ["", "strong", "stale,consistent"] {
            let e = bad.parse::<Consistency>().unwrap_err().to_string();
            assert!(e.contains("default, stale or consistent"), "{e}");
        }
    }
}
