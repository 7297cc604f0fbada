//! The watcher ↔ gateway protocol decoder (`watcher::protocol::decode`) on any line.
//!
//! Invariants: no panic; a decoded message encodes as exactly one line (the newline only at the
//! end), that line decodes back to the same message, and encoding is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watcher::protocol::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(Some(msg)) = decode(line) else { return };
    let encoded = encode(&msg);
    let body = encoded.strip_suffix('\n').expect("an encoded message ends with a newline");
    assert!(!body.contains('\n'), "one message is one line: {encoded:?}");
    let again = decode(body).unwrap_or_else(|e| panic!("{body:?} does not decode: {e}"));
    assert_eq!(again.as_ref(), Some(&msg), "encode → decode round trip of {line:?}");
    assert_eq!(encode(&msg), encoded, "encoding is deterministic");
});
