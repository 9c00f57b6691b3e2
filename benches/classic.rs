//! End-to-end benchmark of the classic job (`cargo bench --bench classic`).
//!
//! Runs the release `tidewater` binary on the workload of `../shared/workload/`:
//! q1 = HOP 2 s / 10 s and q2 = HOP 1 s / 60 s, SUM and COUNT by key, into the
//! `blackhole` sink, from a CSV file and from `datagen`. Prints a Markdown table with
//! events/s (input events over wall time, process start to exit) and peak memory.
//!
//! Environment:
//! - `TIDEWATER_BENCH_CSV=path`: use this CSV (`key,value,ts` with header, e.g. made by
//!   `gen.py`); otherwise a file of the same shape is generated under `target/bench-data`.
//! - `TIDEWATER_BENCH_EVENTS=n`: events to generate (default 10 000 000).
//! - `TIDEWATER_BENCH_PARALLELISM=p` (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

mod common;

use common::{T0, bench_dir, env_num, input_csv, run};

fn job(source: &str, slide: u32, size: u32) -> String {
    format!(
        "CREATE TABLE events (key STRING, `value` BIGINT, ts_ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH ({source});
         CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key STRING, total BIGINT, events BIGINT)
           WITH ('connector' = 'blackhole');
         INSERT INTO sums SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '{slide}' SECOND, INTERVAL '{size}' SECOND))
         GROUP BY window_start, window_end, key;"
    )
}

fn datagen_job(events: u64, slide: u32, size: u32) -> String {
    // Keys as numbers cast to strings would add work the file job does not have, so
    // the datagen job groups by a BIGINT key.
    format!(
        "CREATE TABLE events (key BIGINT, `value` BIGINT, ts_ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH ('connector' = 'datagen',
           'rows-per-second' = '1000000000', 'number-of-rows' = '{events}',
           'fields.key.min' = '0', 'fields.key.max' = '9999', 'fields.value.min' = '0', 'fields.value.max' = '1000',
           'fields.ts_ms.kind' = 'sequence', 'fields.ts_ms.start' = '{T0}');
         CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key BIGINT, total BIGINT, events BIGINT)
           WITH ('connector' = 'blackhole');
         INSERT INTO sums SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '{slide}' SECOND, INTERVAL '{size}' SECOND))
         GROUP BY window_start, window_end, key;"
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let events: u64 = env_num("TIDEWATER_BENCH_EVENTS", 10_000_000);
    let p: usize = env_num("TIDEWATER_BENCH_PARALLELISM", 2);
    let dir = bench_dir();
    let csv = input_csv(&dir, events);
    let source = format!(
        "'connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'csv.header' = 'true'",
        csv.display()
    );
    let cases: Vec<(&str, String)> = vec![
        ("q1 file HOP 2s/10s", job(&source, 2, 10)),
        ("q2 file HOP 1s/60s", job(&source, 1, 60)),
        ("q1 datagen HOP 2s/10s", datagen_job(events, 2, 10)),
        ("q2 datagen HOP 1s/60s", datagen_job(events, 1, 60)),
    ];
    println!("input: {} ({} parallelism)\n", csv.display(), p);
    println!("| case | events | results | wall s | events/s | peak MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, sql) in cases {
        let r = run(&dir, &name.replace([' ', '/'], "_"), &sql, p, &[]);
        println!(
            "| {name} | {} | {} | {:.2} | {:.0} | {} |",
            r.events,
            r.results,
            r.seconds,
            r.events as f64 / r.seconds,
            r.peak_kib
                .map(|k| format!("{:.0}", k as f64 / 1024.0))
                .unwrap_or_else(|| "n/a".into())
        );
    }
}
