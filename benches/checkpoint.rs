//! Checkpoint benchmark (`cargo bench --bench checkpoint`), for issue 3's targets:
//! 1. the classic job (q1, HOP 2 s / 10 s, SUM and COUNT by key, `blackhole` sink) over
//!    the 10 M-event CSV with a 1 s checkpoint interval against the same run without
//!    checkpoints (alternating runs, median wall time), with checkpoint count, duration
//!    and size read from the manifests;
//! 2. restoring a checkpoint that holds ~1 M keys with open windows: a `datagen` job
//!    (random BIGINT keys 0..999 999, TUMBLE 6 h, so nothing fires) is killed once a
//!    checkpoint holds at least 990 000 keys, then restarted; the restore time is the one
//!    the runtime logs ("restored checkpoint N in X ms"), plus process start to that line.
//!
//! Environment: `TIDEWATER_BENCH_CSV`, `TIDEWATER_BENCH_EVENTS`, `TIDEWATER_BENCH_RUNS`
//! (default 3 per variant).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{T0, bench_dir, env_num, input_csv, run};
use tidewater::state::protocol::Listing;
use tidewater::state::{LocalStore, recovery};

fn q1(csv: &Path) -> String {
    format!(
        "CREATE TABLE events (key STRING, `value` BIGINT, ts_ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'csv.header' = 'true');
         CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key STRING, total BIGINT, events BIGINT)
           WITH ('connector' = 'blackhole');
         INSERT INTO sums SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
         GROUP BY window_start, window_end, key;",
        csv.display()
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Complete checkpoints in `dir`: (duration ms, state bytes, window-state rows).
fn checkpoints(dir: &Path) -> Vec<(u64, u64, u64)> {
    let Ok(store) = LocalStore::open_existing(dir) else {
        return Vec::new();
    };
    recovery::list(&store)
        .unwrap()
        .values()
        .filter_map(|l| match l {
            Listing::Complete(m) => Some((
                m.duration_ms,
                m.state_bytes(),
                m.files
                    .iter()
                    .filter(|f| f.operator_name.starts_with("Window"))
                    .map(|f| f.rows)
                    .sum(),
            )),
            _ => None,
        })
        .collect()
}

fn throughput(dir: &Path, csv: &Path, runs: usize) {
    let sql = q1(csv);
    let state = dir.join("ck-state");
    let (mut plain, mut with_ck) = (Vec::new(), Vec::new());
    let mut stats = Vec::new();
    for _ in 0..runs {
        plain.push(run(dir, "q1_plain", &sql, 2, &[]).seconds);
        let _ = std::fs::remove_dir_all(&state);
        let args = [
            "--checkpoint-interval",
            "1s",
            "--checkpoint-dir",
            state.to_str().unwrap(),
        ];
        with_ck.push(run(dir, "q1_ck", &sql, 2, &args).seconds);
        stats.extend(checkpoints(&state));
    }
    let (p, c) = (median(plain), median(with_ck));
    println!("## q1 over {} at p=2, {runs} runs each\n", csv.display());
    println!("| variant | median wall s | events/s |");
    println!("|---|---:|---:|");
    println!("| no checkpoints | {p:.2} | {:.0} |", 10_000_000.0 / p);
    println!(
        "| checkpoint every 1 s | {c:.2} | {:.0} |",
        10_000_000.0 / c
    );
    println!("\noverhead: {:+.1} %", (c / p - 1.0) * 100.0);
    // The last checkpoint of a run is taken after the input ended (little state).
    let mid: Vec<_> = stats.iter().filter(|s| s.2 > 0).collect();
    if !mid.is_empty() {
        let n = mid.len() as u64;
        println!(
            "checkpoints with open windows: {n}, mean duration {} ms (max {}), mean size {:.1} MiB, mean {} window-state rows\n",
            mid.iter().map(|s| s.0).sum::<u64>() / n,
            mid.iter().map(|s| s.0).max().unwrap_or(0),
            mid.iter().map(|s| s.1).sum::<u64>() as f64 / n as f64 / 1048576.0,
            mid.iter().map(|s| s.2).sum::<u64>() / n
        );
    }
}

fn restore(dir: &Path) {
    let state = dir.join("restore-state");
    let _ = std::fs::remove_dir_all(&state);
    let job = dir.join("restore.sql");
    std::fs::write(
        &job,
        format!(
            "SET 'execution.checkpointing.interval' = '1s';
             SET 'state.checkpoints.dir' = '{}';
             CREATE TABLE events (key BIGINT, `value` BIGINT, ts_ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH ('connector' = 'datagen',
               'rows-per-second' = '1000000000', 'number-of-rows' = '20000000',
               'fields.key.min' = '0', 'fields.key.max' = '999999', 'fields.value.min' = '0', 'fields.value.max' = '1000',
               'fields.ts_ms.kind' = 'sequence', 'fields.ts_ms.start' = '{T0}');
             CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key BIGINT, total BIGINT, events BIGINT)
               WITH ('connector' = 'blackhole');
             INSERT INTO sums SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
             FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '6' HOUR))
             GROUP BY window_start, window_end, key;",
            state.display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_tidewater");
    let mut child = Command::new(bin)
        .args(["run", job.to_str().unwrap(), "-p", "2", "-q"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Polling the directory is the only signal that a big enough checkpoint exists.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (ck_ms, ck_bytes, keys) = loop {
        if let Some(c) = checkpoints(&state)
            .into_iter()
            .rev()
            .find(|c| c.2 >= 990_000)
        {
            child.kill().unwrap();
            child.wait().unwrap();
            break c;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before a 1 M-key checkpoint"
        );
        assert!(
            Instant::now() < deadline,
            "no 1 M-key checkpoint within 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["run", job.to_str().unwrap(), "-p", "2", "-q"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut restored_ms = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(i) = line.find("restored checkpoint") {
            let rest = &line[i..];
            restored_ms = rest
                .split(" in ")
                .nth(1)
                .and_then(|r| r.split(" ms").next())
                .and_then(|m| m.trim().parse::<u64>().ok());
            break;
        }
    }
    let to_line = started.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    println!("## restore of a checkpoint with {keys} window-state rows (key × open window, p=2)\n");
    println!(
        "| checkpoint size | checkpoint took | restore (runtime log) | process start to restored |"
    );
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.1} MiB | {ck_ms} ms | {} ms | {} ms |",
        ck_bytes as f64 / 1048576.0,
        restored_ms.map_or("?".into(), |m| m.to_string()),
        to_line.as_millis()
    );
}

fn main() {
    let dir = bench_dir();
    let csv = input_csv(&dir, env_num("TIDEWATER_BENCH_EVENTS", 10_000_000));
    throughput(&dir, &csv, env_num("TIDEWATER_BENCH_RUNS", 3));
    restore(&dir);
}
