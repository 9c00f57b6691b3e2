//! Emit latency of the classic job (`cargo bench --bench latency`): HOP 2 s / 10 s, SUM
//! and COUNT by key (10 000 BIGINT keys), fed by `datagen` paced at 100 000 and at
//! 1 000 000 events/s for `TIDEWATER_BENCH_SECONDS` (default 10) each, into `blackhole`
//! at p=2. Event time advances 1 ms per event (a window fires every 2 000 events).
//! Latency is measured per firing, from the moment the watermark that passes a window's
//! end was generated at the source to the window's results entering the sink, and
//! reported as histogram bucket bounds (≤ 1, 2, 5, 10, 20, 50, 100 … ms).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

mod common;

use common::{T0, bench_dir, env_num, run};

fn job(rate: u64, rows: u64) -> String {
    format!(
        "CREATE TABLE events (key BIGINT, `value` BIGINT, ts_ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH ('connector' = 'datagen',
           'rows-per-second' = '{rate}', 'number-of-rows' = '{rows}',
           'fields.key.min' = '0', 'fields.key.max' = '9999', 'fields.value.min' = '0', 'fields.value.max' = '1000',
           'fields.ts_ms.kind' = 'sequence', 'fields.ts_ms.start' = '{T0}');
         CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key BIGINT, total BIGINT, events BIGINT)
           WITH ('connector' = 'blackhole');
         INSERT INTO sums SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
         GROUP BY window_start, window_end, key;"
    )
}

fn main() {
    let dir = bench_dir();
    let seconds: u64 = env_num("TIDEWATER_BENCH_SECONDS", 10);
    println!("| feed | events | wall s | achieved events/s | firings | emit latency p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for rate in [100_000u64, 1_000_000] {
        let r = run(
            &dir,
            &format!("latency_{rate}"),
            &job(rate, rate * seconds),
            2,
            &["--http", "off"],
        );
        let line = r
            .stderr
            .lines()
            .find(|l| l.starts_with("emit latency"))
            .unwrap_or("")
            .to_string();
        let after = |key: &str| -> String {
            line.split(key)
                .nth(1)
                .map(|t| t.split(" ms").next().unwrap_or("").trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        let firings = line
            .split("over ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("?");
        println!(
            "| {rate} events/s | {} | {:.1} | {:.0} | {firings} | {} ms | {} ms |",
            r.events,
            r.seconds,
            r.events as f64 / r.seconds,
            after("p50 "),
            after("p99 ")
        );
    }
}
