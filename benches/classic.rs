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

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const T0: i64 = 1_700_000_000_000;

/// The shape of `gen.py`: Zipf(1) keys over `keys`, values 0..=1000, ~1 000 events per
/// second of event time, 10 % of events delayed by up to 1 999 ms.
fn generate(path: &Path, events: u64, keys: usize) {
    let mut rng = StdRng::seed_from_u64(1);
    let weights: Vec<f64> = (0..keys).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(keys);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(out, "key,value,ts").unwrap();
    let mut t = T0 as f64;
    for _ in 0..events {
        t += -rng.random::<f64>().max(1e-12).ln(); // exponential gaps, mean 1 ms
        let u: f64 = rng.random();
        let k = cdf.partition_point(|c| *c < u).min(keys - 1);
        let delay = if rng.random::<f64>() < 0.1 {
            rng.random_range(0..2000)
        } else {
            0
        };
        let ts = (t as i64 - delay).max(T0);
        writeln!(out, "k{k},{},{ts}", rng.random_range(0..=1000)).unwrap();
    }
    out.flush().unwrap();
}

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

struct Run {
    seconds: f64,
    events: u64,
    results: u64,
    peak_kib: Option<u64>,
}

fn run(dir: &Path, name: &str, sql: &str, parallelism: usize) -> Run {
    let job = dir.join(format!("{name}.sql"));
    std::fs::write(&job, sql).unwrap();
    let bin = env!("CARGO_BIN_EXE_tidewater");
    let timed = Path::new("/usr/bin/time").exists();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "peak_kib=%M", bin]);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(["run", job.to_str().unwrap(), "-p", &parallelism.to_string()]);
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed: {err}");
    let field = |key: &str| -> Option<u64> {
        let i = err.find(key)? + key.len();
        err[i..].split_whitespace().next()?.parse().ok()
    };
    Run {
        seconds,
        events: field("events in:").unwrap(),
        results: field("results out:").unwrap(),
        peak_kib: field("peak_kib="),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let events: u64 = std::env::var("TIDEWATER_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let p: usize = std::env::var("TIDEWATER_BENCH_PARALLELISM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let csv = match std::env::var("TIDEWATER_BENCH_CSV") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let path = dir.join(format!("events-{events}.csv"));
            if !path.exists() {
                eprintln!("generating {events} events into {}", path.display());
                generate(&path, events, 10_000);
            }
            path
        }
    };
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
        let r = run(&dir, &name.replace([' ', '/'], "_"), &sql, p);
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
