//! The balancer's policies against endpoints with no server behind them (picks only).

use super::*;
use std::collections::HashSet;

fn eps(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(p, &w)| {
            let mut i = Instance::new(format!("i{p}"), "n", "127.0.0.1", 1000 + p as u16);
            i.weight = w;
            Arc::new(Endpoint::new(i, 1).unwrap())
        })
        .collect()
}

#[test]
fn spreads_over_all_endpoints() {
    let c = Candidates::new(eps(&[1, 1, 1]));
    let seen: HashSet<usize> = (0..200).map(|_| c.pick(&[], Balance::Random).unwrap().0).collect();
    assert_eq!(seen.len(), 3);
}

#[test]
fn follows_the_weights() {
    let c = Candidates::new(eps(&[1, 3, 0]));
    let mut counts = [0u32; 3];
    for _ in 0..8000 {
        counts[c.pick(&[], Balance::Random).unwrap().0] += 1;
    }
    assert_eq!(counts[2], 0, "weight 0 is never picked while others are there");
    let share = f64::from(counts[1]) / 8000.0;
    assert!((0.72..0.78).contains(&share), "{counts:?}");
    // Also after an ejection (the slow path).
    c.endpoints[2].eject();
    let mut counts = [0u32; 3];
    for _ in 0..8000 {
        counts[c.pick(&[], Balance::Random).unwrap().0] += 1;
    }
    assert!((0.72..0.78).contains(&(f64::from(counts[1]) / 8000.0)), "{counts:?}");
    let zero = Candidates::new(eps(&[0, 0]));
    assert!(zero.pick(&[], Balance::Random).is_some(), "all weigh 0: still try one");
}

#[test]
fn never_repeats_a_tried_endpoint_and_ends() {
    for (weights, policy) in [&[1, 1, 1][..], &[5, 1, 0][..]].into_iter().flat_map(|w| Balance::ALL.map(|p| (w, p))) {
        let c = Candidates::new(eps(weights));
        let mut tried = vec![];
        while let Some((i, _)) = c.pick(&tried, policy) {
            assert!(!tried.contains(&i));
            tried.push(i);
        }
        assert_eq!(tried.len(), 3);
    }
    for policy in Balance::ALL {
        assert!(Candidates::default().pick(&[], policy).is_none());
    }
}

#[test]
fn ejected_endpoints_are_skipped_unless_nothing_else_is_left() {
    for (weights, policy) in [&[1, 1][..], &[2, 1][..]].into_iter().flat_map(|w| Balance::ALL.map(|p| (w, p))) {
        let c = Candidates::new(eps(weights));
        c.endpoints[0].eject();
        assert!((0..50).all(|_| c.pick(&[], policy).unwrap().0 == 1), "{policy}");
        c.endpoints[1].eject();
        assert!(c.pick(&[], policy).is_some(), "all ejected: still try one ({policy})");
    }
}

#[test]
fn an_ejection_ends() {
    let c = Candidates::new(eps(&[1, 1]));
    let _ = now_ms();
    std::thread::sleep(Duration::from_millis(2));
    c.endpoints[0].ejected_until_ms.store(1, Ordering::Relaxed); // ran out a millisecond after the epoch
    let seen: HashSet<usize> = (0..200).map(|_| c.pick(&[], Balance::Random).unwrap().0).collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(c.endpoints[0].ejected_until_ms.load(Ordering::Relaxed), 0, "cleared");
}

fn picks(c: &Candidates, policy: Balance, n: usize) -> Vec<usize> {
    (0..n).map(|_| c.pick(&[], policy).unwrap().0).collect()
}

#[test]
fn round_robin_alternates_exactly() {
    let c = Candidates::new(eps(&[1, 1, 1]));
    assert_eq!(picks(&c, Balance::RoundRobin, 9), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    // Equal weights other than 1 are equal too.
    let c = Candidates::new(eps(&[4, 4]));
    assert_eq!(picks(&c, Balance::RoundRobin, 4), [0, 1, 0, 1]);
}

#[test]
fn round_robin_turn_is_shared_by_threads_and_clones() {
    let c = Candidates::new(eps(&[1, 1, 1]));
    // One request at a time, each from another thread (or a clone): still in turn.
    let mut seen = vec![];
    for k in 0..6 {
        let c = if k % 2 == 0 { c.clone() } else { c.clone().with_policy(None) };
        seen.push(std::thread::spawn(move || c.pick(&[], Balance::RoundRobin).unwrap().0).join().unwrap());
    }
    assert_eq!(seen, [0, 1, 2, 0, 1, 2]);
    // Many at once: every endpoint gets exactly its share.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || picks(&c, Balance::RoundRobin, 3000))
        })
        .collect();
    let mut counts = [0u32; 3];
    for t in threads {
        for i in t.join().unwrap() {
            counts[i] += 1;
        }
    }
    assert_eq!(counts, [4000, 4000, 4000]);
}

#[test]
fn round_robin_follows_weights_smoothly() {
    // nginx's example: weights 5, 1, 1 interleave.
    let c = Candidates::new(eps(&[5, 1, 1]));
    assert_eq!(picks(&c, Balance::RoundRobin, 14), [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    let c = Candidates::new(eps(&[1, 3, 0]));
    let mut counts = [0u32; 3];
    for i in picks(&c, Balance::RoundRobin, 4000) {
        counts[i] += 1;
    }
    assert_eq!(counts, [1000, 3000, 0], "exact proportions, weight 0 never");
    let c = Candidates::new(eps(&[2, 1]));
    assert_eq!(picks(&c, Balance::RoundRobin, 6), [0, 1, 0, 0, 1, 0]);
}

#[test]
fn round_robin_retries_skip_tried_endpoints() {
    let c = Candidates::new(eps(&[1, 1, 1]));
    assert_eq!(c.pick(&[], Balance::RoundRobin).unwrap().0, 0);
    // The next turn is 1's, but the request tried 1 already.
    assert_eq!(c.pick(&[1], Balance::RoundRobin).unwrap().0, 2);
    let c = Candidates::new(eps(&[3, 1]));
    assert_eq!(c.pick(&[0], Balance::RoundRobin).unwrap().0, 1);
}

#[test]
fn least_request_prefers_the_less_loaded() {
    let c = Candidates::new(eps(&[1, 1, 1]));
    let busy: Vec<InFlight> = (0..5).map(|_| InFlight::start(&c.endpoints[0])).collect();
    let _one = InFlight::start(&c.endpoints[1]);
    let mut counts = [0u32; 3];
    for i in picks(&c, Balance::LeastRequest, 3000) {
        counts[i] += 1;
    }
    // Two distinct draws: the busiest loses every pair it is in; 1 loses to 2 always.
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!(counts[2] > 1800 && counts[1] > 600, "{counts:?}");
    drop(busy);
    assert_eq!(c.endpoints[0].in_flight(), 0);
}

#[test]
fn least_request_follows_weights_and_scales_load_by_weight() {
    let c = Candidates::new(eps(&[1, 3, 0]));
    let mut counts = [0u32; 3];
    for i in picks(&c, Balance::LeastRequest, 8000) {
        counts[i] += 1;
    }
    assert_eq!(counts[2], 0, "weight 0 is never picked while others are there");
    assert!((0.72..0.78).contains(&(f64::from(counts[1]) / 8000.0)), "{counts:?}");
    // 3 in flight on weight 3 is as loaded as 1 on weight 1: the first draw wins the tie, so
    // the weights still decide. 4 on weight 3 is more loaded: 0 wins every pair.
    let c = Candidates::new(eps(&[1, 3]));
    let _a = InFlight::start(&c.endpoints[0]);
    let mut b: Vec<InFlight> = (0..3).map(|_| InFlight::start(&c.endpoints[1])).collect();
    let share = picks(&c, Balance::LeastRequest, 4000).iter().filter(|&&i| i == 1).count();
    assert!((2800..3200).contains(&share), "{share}");
    b.push(InFlight::start(&c.endpoints[1]));
    assert!(picks(&c, Balance::LeastRequest, 200).iter().all(|&i| i == 0));
}

#[test]
fn in_flight_counts_while_the_guard_lives() {
    let c = Candidates::new(eps(&[1]));
    let e = &c.endpoints[0];
    let (g1, g2) = (InFlight::start(e), InFlight::start(e));
    assert_eq!(e.in_flight(), 2);
    drop(g1);
    assert_eq!(e.in_flight(), 1);
    drop(g2);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn policy_names_round_trip() {
    for b in Balance::ALL {
        assert_eq!(Balance::from_name(b.as_str()), Some(b));
        assert_eq!(<Balance as clap::ValueEnum>::from_str(b.as_str(), false), Ok(b));
    }
    assert_eq!(Balance::from_name("roundrobin"), None);
}
