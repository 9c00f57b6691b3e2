//! Shared by the benchmarks: the classic input and running the release binary.
#![allow(dead_code)]

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const T0: i64 = 1_700_000_000_000;

/// The shape of `gen.py`: Zipf(1) keys over `keys`, values 0..=1000, ~1 000 events per
/// second of event time, 10 % of events delayed by up to 1 999 ms.
pub fn generate(path: &Path, events: u64, keys: usize) {
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

pub struct Run {
    pub seconds: f64,
    pub events: u64,
    pub results: u64,
    pub peak_kib: Option<u64>,
    pub stderr: String,
}

pub fn run(dir: &Path, name: &str, sql: &str, parallelism: usize, extra: &[&str]) -> Run {
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
    cmd.args(extra);
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
        stderr: err.to_string(),
    }
}

/// `target/bench-data`, created.
pub fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `TIDEWATER_BENCH_CSV`, or a generated file of `events` classic events.
pub fn input_csv(dir: &Path, events: u64) -> PathBuf {
    match std::env::var("TIDEWATER_BENCH_CSV") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let path = dir.join(format!("events-{events}.csv"));
            if !path.exists() {
                eprintln!("generating {events} events into {}", path.display());
                generate(&path, events, 10_000);
            }
            path
        }
    }
}

/// An environment variable as a number, or `default`.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
