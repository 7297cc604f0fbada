//! Instances caught sending bytes past the end of a response: their connections are not reused
//! for a while.
//!
//! HTTP/1.1 frames a response by its own headers; a server that writes more than it declared
//! (a body after a `204`, more than `Content-Length`, bytes after the last chunk) leaves them on
//! the connection, where they would be read as the answer to the next request on it. The pool
//! drops a connection whose socket shows such bytes, and a request answered with something that
//! is not HTTP goes again on a new connection. Bytes that arrive late enough can still pass for a
//! whole answer, once (see [`super::io`]). So once an instance has shown the fault, every
//! request to it gets a new connection, closed after its response, for [`SUSPECT_FOR`]: no
//! answer can then carry another request's leftovers. This costs that instance a connect per
//! request, and the gateway says so in its log, once per period.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tracing::warn;

/// How long an instance that sent bytes past a response gets no connection reuse.
pub const SUSPECT_FOR: Duration = Duration::from_secs(600);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Whether an instance's connections may be reused (see the module docs).
#[derive(Debug, Default)]
pub struct Suspect {
    /// Until when, in ms since [`EPOCH`] (never 0 while set); 0: trusted.
    until_ms: AtomicU64,
}

impl Suspect {
    /// Whether the instance's connections must not be reused now. Reads no clock in the usual
    /// case, an instance never caught.
    pub fn is_suspect(&self) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    /// Records that `instance` sent bytes past the end of a response (`what`, for the log).
    /// Logs a warning when this starts a period, not for every connection caught within one.
    pub fn caught(&self, instance: &str, what: &str) {
        let (now, until) = (now_ms(), now_ms().max(1) + SUSPECT_FOR.as_millis() as u64);
        if self.until_ms.swap(until, Ordering::Relaxed) <= now {
            warn!(
                instance,
                fault = what,
                "the instance sent bytes past the end of a response; its connections are not reused for {} min",
                SUSPECT_FOR.as_secs() / 60
            );
        }
    }

    #[cfg(test)]
    pub(crate) fn forgive(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_means_no_reuse_for_a_while() {
        let s = Suspect::default();
        assert!(!s.is_suspect());
        s.caught("127.0.0.1:1", "stray bytes");
        assert!(s.is_suspect());
        s.caught("127.0.0.1:1", "again");
        assert!(s.is_suspect());
        s.until_ms.store(1, Ordering::Relaxed); // a period that ran out
        std::thread::sleep(Duration::from_millis(2));
        let _ = now_ms();
        assert!(!s.is_suspect());
    }
}
