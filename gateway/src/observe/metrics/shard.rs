//! One worker thread's request counts and durations: what [`super::Metrics::request_done`] writes
//! on the request path. Each worker has its own [`Shard`] behind its own mutex, locked by that
//! worker and, at scrape time, by the scraper: never by two workers, so the lock is uncontended
//! and its cache line stays on the worker's core.
//!
//! Entries are keyed by label *value* (route and service text), looked up with the borrowed
//! strings of the route's [`super::Labels`] (no allocation, no reference count touched); a new
//! key is stored once, cloning the label's `Arc`s. Keys are bounded by the routes that existed.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::{Equivalent, HashMap};
use rustc_hash::FxBuildHasher;

/// Upper bounds of the duration histogram's buckets, in seconds (1 ms to 30 s; `+Inf` implied).
pub const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The same bounds in nanoseconds, for the request path (an integer compare per bucket).
const BUCKET_NANOS: [u64; 14] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// The method classes requests are counted under (label `method`): the common methods, and
/// `other` for every other one, so a client cannot create series at will.
pub const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"];

/// The index in [`METHODS`] of `method`'s class.
pub fn method_class(method: &http::Method) -> u8 {
    use http::Method as M;
    if *method == M::GET {
        0
    } else if *method == M::HEAD {
        1
    } else if *method == M::POST {
        2
    } else if *method == M::PUT {
        3
    } else if *method == M::DELETE {
        4
    } else if *method == M::PATCH {
        5
    } else if *method == M::OPTIONS {
        6
    } else {
        7
    }
}

/// A stored key: a route and its service (both empty for requests no route matched).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The route as `/routes` shows it.
    pub route: Arc<str>,
    /// The route's service.
    pub service: Arc<str>,
}

/// The key borrowed from a request's labels; hashes and compares like [`Key`].
pub struct KeyRef<'a> {
    /// The route as `/routes` shows it.
    pub route: &'a str,
    /// The route's service.
    pub service: &'a str,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        KeyRef { route: &self.route, service: &self.service }.hash(h)
    }
}

/// Only the route is hashed: a route's text almost always names one service (equal keys still
/// hash alike), and it halves the hashing on the request path.
impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.route.hash(h);
    }
}

/// Whether two label texts are equal; the same `Arc` (the usual case until the route table is
/// rebuilt) is equal without comparing bytes.
#[inline]
fn same(a: &str, b: &str) -> bool {
    (std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()) || a == b
}

impl Equivalent<Key> for KeyRef<'_> {
    #[inline]
    fn equivalent(&self, key: &Key) -> bool {
        same(self.route, &key.route) && same(self.service, &key.service)
    }
}

/// How many `(status, method)` counts an entry keeps inline, scanned first; the rest (an
/// instance answering with many statuses) go to a map.
const INLINE: usize = 8;

/// One route's counts on one worker.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// Requests by `status << 3 | method class` (0: unused slot; a status is at least 100).
    inline: [(u32, u64); INLINE],
    /// Requests by the same key, past the inline slots.
    more: HashMap<u32, u64, FxBuildHasher>,
    /// Requests per duration bucket (not cumulative); the last is `+Inf`.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// Sum of the durations, in nanoseconds (584 years before it wraps).
    pub sum_nanos: u64,
}

impl Entry {
    /// Counts one request.
    #[inline]
    pub fn record(&mut self, method: u8, status: u16, duration: Duration) {
        self.count(u32::from(status) << 3 | u32::from(method), 1);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.iter().position(|&b| nanos <= b).unwrap_or(BUCKET_NANOS.len());
        self.buckets[bucket] += 1;
        self.sum_nanos = self.sum_nanos.wrapping_add(nanos);
    }

    /// Adds `n` requests under `key`.
    #[inline]
    fn count(&mut self, key: u32, n: u64) {
        for slot in &mut self.inline {
            if slot.0 == key {
                slot.1 += n;
                return;
            }
            if slot.0 == 0 {
                *slot = (key, n);
                return;
            }
        }
        *self.more.entry(key).or_insert(0) += n;
    }

    fn counts(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.inline.iter().copied().filter(|(k, _)| *k != 0).chain(self.more.iter().map(|(k, n)| (*k, *n)))
    }

    /// Adds `other`'s counts to these (summing shards at scrape time).
    pub fn add(&mut self, other: &Entry) {
        for (k, n) in other.counts() {
            self.count(k, n);
        }
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
    }

    /// Requests counted, whatever the status.
    pub fn requests(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Requests answered with a 5xx status.
    pub fn errors(&self) -> u64 {
        self.counts().filter(|(k, _)| (500..600).contains(&(*k >> 3))).map(|(_, n)| n).sum()
    }

    /// The counts as `(method, status, requests)`.
    pub fn by_method_and_status(&self) -> impl Iterator<Item = (&'static str, u16, u64)> + '_ {
        self.counts().map(|(k, n)| (METHODS[(k & 7) as usize], (k >> 3) as u16, n))
    }
}

/// One worker's entries.
#[derive(Debug, Default)]
pub struct Shard {
    entries: HashMap<Key, Entry, FxBuildHasher>,
}

impl Shard {
    /// Counts one request under `route` and `service`.
    #[inline]
    pub fn record(&mut self, route: &Arc<str>, service: &Arc<str>, method: u8, status: u16, duration: Duration) {
        let key = KeyRef { route, service };
        let entry = match self.entries.get_mut(&key) {
            Some(e) => e,
            None => self.entries.entry(Key { route: route.clone(), service: service.clone() }).or_default(),
        };
        entry.record(method, status, duration);
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter()
    }

    /// Drops the entries `keep` says no.
    pub fn retain(&mut self, mut keep: impl FnMut(&Key, &Entry) -> bool) {
        self.entries.retain(|k, e| keep(k, e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_classes_are_bounded() {
        let classes: Vec<&str> = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "BREW"]
            .iter()
            .map(|m| METHODS[method_class(&http::Method::from_bytes(m.as_bytes()).unwrap()) as usize])
            .collect();
        assert_eq!(classes, ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other", "other"]);
    }

    #[test]
    fn buckets_count_by_upper_bound() {
        let mut e = Entry::default();
        for ms in [0, 1, 2, 40, 29_000, 31_000] {
            e.record(0, 200, Duration::from_millis(ms));
        }
        // 0 and 1 ms fall in le=0.001 (bounds are inclusive), 2 in 0.0025, 40 in 0.05, 29 s in
        // 30, 31 s in +Inf.
        assert_eq!(e.buckets[0], 2);
        assert_eq!(e.buckets[1], 1);
        assert_eq!(e.buckets[5], 1);
        assert_eq!(e.buckets[13], 1);
        assert_eq!(e.buckets[14], 1);
        assert_eq!(e.requests(), 6);
        assert_eq!(e.sum_nanos, 60_043_000_000);
    }

    #[test]
    fn keys_are_values_not_pointers() {
        let mut s = Shard::default();
        // Two Arcs with the same text (a rebuilt route table) land in one entry.
        let (r1, r2): (Arc<str>, Arc<str>) = ("/web".into(), "/web".into());
        let svc: Arc<str> = "web".into();
        s.record(&r1, &svc, 0, 200, Duration::from_millis(1));
        s.record(&r2, &svc, 0, 503, Duration::from_millis(1));
        s.record(&r2, &svc, 2, 503, Duration::from_millis(1));
        assert_eq!(s.entries().count(), 1);
        let (_, e) = s.entries().next().unwrap();
        assert_eq!((e.requests(), e.errors()), (3, 2));
        // Past the inline slots, counts go on in the map.
        let mut many = Entry::default();
        for code in 200..230 {
            many.record(0, code, Duration::ZERO);
            many.record(0, code, Duration::ZERO);
        }
        assert_eq!(many.by_method_and_status().count(), 30);
        assert!(many.by_method_and_status().all(|(_, _, n)| n == 2));
        let mut by: Vec<_> = e.by_method_and_status().collect();
        by.sort();
        assert_eq!(by, [("GET", 200, 1), ("GET", 503, 1), ("POST", 503, 1)]);
    }
}
