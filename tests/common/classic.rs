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

/// The classic job (HOP 2 s / 10 s, SUM and COUNT by key) over the CSV `input` into
/// CSV part files under `out`, after the `SET` statements in `settings`; small source
/// chunks so that barriers and stops take effect quickly.
pub fn classic_job(settings: &str, input: &std::path::Path, out: &std::path::Path) -> String {
    format!(
        "{settings}
         CREATE TABLE events (key STRING, `value` BIGINT, ts_ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ts_ms, 3), WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{input}', 'format' = 'csv',
               'csv.header' = 'true', 'source.chunk-size' = '65536');
         CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key STRING,
           total BIGINT, events BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv');
         INSERT INTO sums SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
         GROUP BY window_start, window_end, key;",
        input = input.display(),
        out = out.display(),
    )
}

/// Every row of the committed (visible) part files under `out`, sorted.
pub fn committed_rows(out: &std::path::Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("part-") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            rows.extend(text.lines().map(str::to_string));
        }
    }
    rows.sort_unstable();
    rows
}
