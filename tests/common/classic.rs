//! The classic dataset in the shape of `../shared/workload/gen.py`, shared by the
//! end-to-end and crash tests.

#![allow(dead_code)]

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// gen.py's first arrival time: 2023-11-14T22:13:20Z, a multiple of the 2 s slide.
pub const T0: i64 = 1_700_000_000_000;
/// Strictly less than the 2 s watermark delay, so no event is ever late.
pub const MAX_DELAY_MS: i64 = 1_999;

/// One line of the classic CSV: `key,value,ts`.
#[derive(Debug, Clone)]
pub struct ClassicEvent {
    pub key: String,
    pub value: i64,
    pub ts: i64,
}

/// The classic dataset, in the shape of gen.py: key `k<i>` drawn with weight `1/(i+1)`,
/// `value` in 0..=1000, arrival clock advancing 0..=2 ms per event (1 ms on average), and
/// 10 % of events delayed by 0..=1999 ms. Deterministic for a given seed.
pub fn classic_events(n: usize, keys: usize, seed: u64) -> Vec<ClassicEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cum = Vec::with_capacity(keys);
    let mut total = 0.0;
    for i in 0..keys {
        total += 1.0 / (i as f64 + 1.0);
        cum.push(total);
    }
    let mut t = T0;
    (0..n)
        .map(|_| {
            t += rng.random_range(0..=2);
            let mut ts = t;
            if rng.random_bool(0.1) {
                ts -= rng.random_range(0..=MAX_DELAY_MS);
            }
            let u = rng.random::<f64>() * total;
            let k = cum.partition_point(|&c| c <= u).min(keys - 1);
            ClassicEvent {
                key: format!("k{k}"),
                value: rng.random_range(0..=1000),
                ts,
            }
        })
        .collect()
}

pub fn classic_csv(events: &[ClassicEvent], header: bool) -> String {
    let mut s = String::with_capacity(events.len() * 24);
    if header {
        s.push_str("key,value,ts\n");
    }
    for e in events {
        let _ = writeln!(s, "{},{},{}", e.key, e.value, e.ts);
    }
    s
}
