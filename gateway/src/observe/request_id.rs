//! Request IDs: the `X-Request-Id` a request is known by in the gateway's logs, the instance's and
//! the client's. A client's own ID is kept when it is sane ([`is_sane`]); otherwise (absent, too
//! long, or with bytes a log line should not carry) the gateway makes one ([`generate`]).
//!
//! Generating costs a few multiplications on a thread-local state (wyrand, seeded once per thread
//! from the standard library's random hasher keys) and no allocation of its own: the digits are
//! cut from a thread-local arena ([`ARENA_IDS`] IDs' worth, allocated when the last one is used
//! up). No lock, no system call.

use std::cell::RefCell;
use std::hash::{BuildHasher, RandomState};

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header: the client's, passed to the instance, and returned to the client.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client ID kept, in bytes (Heroku's router keeps 20 to 200 characters).
pub const MAX_LEN: usize = 200;

/// Whether a client's ID may be kept: 1 to [`MAX_LEN`] bytes of visible ASCII (`!` to `~`: no
/// space, no control byte, nothing a log line could be forged with).
pub fn is_sane(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// The length of a generated ID: 32 hex digits.
const ID_LEN: usize = 32;

/// How many generated IDs share one allocation. Each ID is a view of its arena, which is freed
/// when the last ID cut from it is dropped: a request kept open for long (a stream) keeps its
/// arena's 32 KiB alive, a bounded cost for one allocation every 1024 requests instead of one
/// each.
pub const ARENA_IDS: usize = 1024;

/// A thread's generator: its random state and the arena IDs are cut from.
struct Generator {
    /// wyrand's state.
    state: u64,
    /// Room for the next IDs' digits (empty: none cut yet, or all used).
    arena: BytesMut,
}

impl Generator {
    /// wyrand (Wang Yi's PRNG): 64 random bits per call. Not for secrets; IDs only need to differ.
    fn next_u64(&mut self) -> u64 {
        let x = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        self.state = x;
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }
}

thread_local! {
    static GENERATOR: RefCell<Generator> = RefCell::new(Generator {
        state: RandomState::new().hash_one(std::thread::current().id()) | 1,
        arena: BytesMut::new(),
    });
}

/// Each byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// A new ID: 32 lowercase hex digits, two outputs of the thread's generator (64 bits of state,
/// seeded at random per thread): distinct enough to correlate requests, not a secret.
pub fn generate() -> HeaderValue {
    let digits = GENERATOR.with(|g| {
        let mut g = g.borrow_mut();
        let mut out = [0u8; ID_LEN];
        let bytes = g.next_u64().to_be_bytes().into_iter().chain(g.next_u64().to_be_bytes());
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        if g.arena.capacity() < ID_LEN {
            g.arena = BytesMut::with_capacity(ID_LEN * ARENA_IDS);
        }
        g.arena.extend_from_slice(&out);
        // Only these digits leave; the arena keeps the room after them. The value is then
        // cloned into the instance's request, the client's response and the log record by
        // reference count, without copies.
        g.arena.split().freeze()
    });
    HeaderValue::from_maybe_shared(digits).expect("hex digits are a valid header value")
}

/// The request's ID from the client's headers: its `X-Request-Id` when that is sane, else a new
/// one. A client's ID that is refused is logged at debug. (The request path settles the ID while
/// copying the headers for the instance, [`crate::proxy`]; this is for a request that went to
/// none.)
pub fn of_client(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) => keep_or_replace(v),
        None => generate(),
    }
}

/// A client's ID if it is sane, else a new one (and a debug line).
pub fn keep_or_replace(client: &HeaderValue) -> HeaderValue {
    if is_sane(client) {
        return client.clone();
    }
    tracing::debug!(len = client.len(), "client's X-Request-Id is not visible ASCII of at most 200 bytes; replaced");
    generate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_visible_ascii_of_bounded_length() {
        for ok in ["a", "abc-123_XYZ", "7f0c/1:2", &"x".repeat(MAX_LEN)] {
            assert!(is_sane(&HeaderValue::from_str(ok).unwrap()), "{ok}");
        }
        for bad in ["", "a b", "a\tb", &"x".repeat(MAX_LEN + 1)] {
            assert!(!is_sane(&HeaderValue::from_str(bad).unwrap()), "{bad:?}");
        }
        assert!(!is_sane(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()), "not ASCII");
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(10) {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32, "{s}");
            assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{s}");
            assert!(is_sane(id));
        }
        let other = std::thread::spawn(generate).join().unwrap();
        assert!(!ids.contains(&other), "another thread starts elsewhere");
        let more: std::collections::HashSet<_> = (0..2 * ARENA_IDS).map(|_| generate()).collect();
        assert_eq!(more.len(), 2 * ARENA_IDS, "arenas refilled");
        assert!(more.iter().all(|id| id.len() == 32 && !ids.contains(id)));
    }

    #[test]
    fn a_sane_client_id_is_kept_and_a_bad_one_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("client-1"));
        assert_eq!(of_client(&h), "client-1");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("two words"));
        assert_eq!(of_client(&h).len(), 32, "replaced");
        assert_eq!(of_client(&HeaderMap::new()).len(), 32, "made when absent");
    }
}
