//! The blocking-query index rules from Consul's documentation, as pure functions so they are
//! tested without a server.
//!
//! - A blocking query is `?index=N&wait=D`: it returns when the index moves past `N` or `D` passes.
//! - If the returned index goes *backwards* (Consul restarted, snapshot restored), reset and read
//!   again from scratch.
//! - Never block on index 0: it returns at once and turns the loop into a busy loop. A returned
//!   index below 1 is treated as 1.
//! - Consul adds up to `wait / 16` of jitter, so the client timeout must exceed `wait * 17 / 16`.

use std::time::Duration;

/// Consul's own cap on `wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// What to do after a blocking query returned `returned` while we were waiting on `prev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Block on this index next.
    Block(u64),
    /// The index went backwards: throw away what we knew and read afresh (index 0, non-blocking).
    Reset,
}

/// Applies the index rules to one answer.
pub fn next(prev: u64, returned: u64) -> Next {
    if returned < prev {
        return Next::Reset;
    }
    Next::Block(returned.max(1))
}

/// Clamps a requested wait to Consul's maximum.
pub fn clamp_wait(wait: Duration) -> Duration {
    wait.min(MAX_WAIT)
}

/// The client-side timeout for one blocking query: above Consul's `wait * 17/16` plus some slack
/// for the network, so the client never cuts a long poll that Consul is still allowed to hold.
pub fn request_timeout(wait: Duration) -> Duration {
    let wait = clamp_wait(wait);
    wait + wait / 16 + Duration::from_secs(5)
}

/// Formats a wait for Consul's `wait` parameter, in whole milliseconds (Consul accepts Go
/// durations; `ms` keeps sub-second waits exact).
pub fn wait_param(wait: Duration) -> String {
    format!("{}ms", clamp_wait(wait).as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_read_blocks_on_what_consul_returned() {
        assert_eq!(next(0, 1234), Next::Block(1234));
    }

    #[test]
    fn an_unchanged_index_keeps_blocking_on_it() {
        assert_eq!(next(1234, 1234), Next::Block(1234));
    }

    #[test]
    fn an_index_that_goes_backwards_resets() {
        // Consul restarted in dev mode: its raft index starts over.
        assert_eq!(next(1234, 12), Next::Reset);
    }

    #[test]
    fn index_zero_is_never_blocked_on() {
        assert_eq!(next(0, 0), Next::Block(1));
    }

    #[test]
    fn timeout_exceeds_consul_jitter() {
        let wait = Duration::from_secs(300);
        assert!(request_timeout(wait) > wait * 17 / 16);
        assert!(request_timeout(Duration::from_secs(3600)) > MAX_WAIT * 17 / 16);
        assert_eq!(wait_param(Duration::from_secs(3600)), "600000ms");
        assert_eq!(wait_param(Duration::from_millis(250)), "250ms");
    }
}
