//! `/metrics` and `/api/status` of `tidewater run --http`, checked against the data.
//!
//! The binary runs the classic job (HOP 2 s / 10 s by key into CSV part files) on CSV
//! lines fed through standard input, so the test decides when the input pauses and when
//! it ends: it scrapes while the job is running (first half in, input still open), then
//! after the end (`--http-keep-open` keeps serving the final figures), and checks the
//! counters against what it wrote: rows in, bad lines, late events, rows written.
//! The library-level tests at the end start servers in-process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/http.rs"]
mod http;

#[path = "common/classic.rs"]
mod classic;

use http::{PATIENCE, get, status, wait_for};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use classic::{classic_csv, classic_events};
use tidewater::JobMetrics;
use tidewater::http::{Listen, StatusInfo, StatusServer, bind_with_fallback};

// ---------------------------------------------------------------------------------------
// HTTP and Prometheus text, by hand (no client dependency for one GET)
// ---------------------------------------------------------------------------------------

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (the subset the exporter writes).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").expect("k=\"v\"");
                (k.to_string(), v.trim_end_matches('"').to_string())
            })
            .collect();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    parse_metrics(&get(addr, "/metrics"))
}

/// Samples of `name` whose labels include `with`.
fn find<'a>(m: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    m.iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The single sample of `name` with labels `with`.
fn one(m: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found = find(m, name, with);
    assert_eq!(found.len(), 1, "{name} {with:?}: {found:?}");
    found[0].value
}

fn sum(m: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    find(m, name, with).iter().map(|s| s.value).sum()
}

/// Every counter of `before` is in `after` and not smaller.
fn assert_monotonic(before: &[Sample], after: &[Sample]) {
    for b in before
        .iter()
        .filter(|s| s.name.ends_with("_total") || s.name.ends_with("_count"))
    {
        let a = after
            .iter()
            .find(|a| a.name == b.name && a.labels == b.labels)
            .unwrap_or_else(|| panic!("{} {:?} disappeared", b.name, b.labels));
        assert!(
            a.value >= b.value,
            "{} {:?} went down: {} -> {}",
            b.name,
            b.labels,
            b.value,
            a.value
        );
    }
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// A running `tidewater run`, its stderr collected by a thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Running {
    fn start(job: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .arg("run")
            .arg(job)
            .args(args)
            .env_remove("RUST_LOG")
            .current_dir(job.parent().unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tidewater");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// The address logged as "status page and metrics at http://ADDR/".
    fn status_addr(&mut self) -> SocketAddr {
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no status URL logged; stderr: {:?}", self.stderr));
            self.stderr.push(line.clone());
            if let Some(rest) = line.split("status page and metrics at http://").nth(1) {
                let addr = rest.split('/').next().unwrap();
                return addr
                    .parse()
                    .unwrap_or_else(|_| panic!("bad address in {line:?}"));
            }
        }
    }

    /// Sends SIGTERM and returns the exit status (failing if it does not exit).
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success(), "kill -TERM {pid}");
        let status = wait_for("tidewater to exit after SIGTERM", || {
            self.child.try_wait().unwrap()
        });
        self.stderr.extend(self.lines.try_iter());
        assert!(
            status.success(),
            "exit {status} after SIGTERM; stderr:\n{}",
            self.stderr.join("\n")
        );
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn classic_stdin_job(out: &Path, dead: &Path) -> String {
    format!(
        "CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH ('connector' = 'stdin', 'format' = 'csv', 'dead-letter.path' = '{}');

CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key STRING,
                   total BIGINT, events BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');

INSERT INTO sums
SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
",
        dead.display(),
        out.display()
    )
}

fn part_file_rows(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum()
}

#[test]
fn metrics_match_the_data_during_and_after_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = (dir.path().join("out"), dir.path().join("dead.jsonl"));
    let job = dir.path().join("classic.sql");
    std::fs::write(&job, classic_stdin_job(&out, &dead)).unwrap();

    // The input: 20 000 good events in two halves; the second starts with 3 events far
    // behind the watermark the first half left (late) and 2 lines that cannot be parsed.
    let events = classic_events(20_000, 200, 5);
    let (first, rest) = events.split_at(10_000);
    let first_csv = classic_csv(first, false);
    // Late: the last window holding ts ends at or before ts + 10 s, so it has fired
    // once the watermark is 10 s past ts.
    let first_wm = first.iter().map(|e| e.ts).max().unwrap() - 2_000;
    let late = [first_wm - 10_000, first_wm - 10_700, first_wm - 14_000];
    let mut second_csv: String = late.iter().map(|ts| format!("k1,5,{ts}\n")).collect();
    second_csv.push_str("k2,not-a-number,1700000000000\nthis line has no commas\n");
    second_csv.push_str(&classic_csv(rest, false));
    let input = format!("{first_csv}{second_csv}");
    std::fs::write(dir.path().join("input.csv"), &input).unwrap();
    let lines_in = input.lines().count() as f64;
    let (good_rows, bad_lines) = (events.len() + late.len(), 2.0);

    let mut run = Running::start(
        &job,
        &["-p", "2", "--http", "127.0.0.1:0", "--http-keep-open"],
    );
    let addr = run.status_addr();
    let mut stdin = run.child.stdin.take().unwrap();
    stdin.write_all(first_csv.as_bytes()).unwrap();
    stdin.flush().unwrap();

    // During the run: the first half is in and the input is still open. The source's
    // watermark is then exactly the largest event time so far minus the 2 s delay, and
    // every window subtask gets there once it has processed what it was sent.
    let mut scrapes = Vec::new();
    let during = wait_for("the first half to pass through", || {
        let m = scrape(addr);
        scrapes.push(m.clone());
        let window_wms = find(
            &m,
            "tidewater_watermark_milliseconds",
            &[("operator", "window")],
        );
        let caught_up = one(&m, "tidewater_source_records_in_total", &[]) == first.len() as f64
            && window_wms.len() == 2
            && window_wms.iter().all(|s| s.value == first_wm as f64);
        caught_up.then_some(m)
    });
    for pair in scrapes.windows(2) {
        assert_monotonic(&pair[0], &pair[1]);
    }
    let source = [("operator", "source events")];
    assert_eq!(
        one(&during, "tidewater_job_finished", &[("job", "classic")]),
        0.0
    );
    assert!(!status(addr)["finished"].as_bool().unwrap());
    assert_eq!(
        sum(&during, "tidewater_records_in_total", &source),
        first.len() as f64
    );
    assert_eq!(
        one(&during, "tidewater_watermark_milliseconds", &source),
        first_wm as f64
    );
    assert!(one(&during, "tidewater_watermark_lag_seconds", &source) > 0.0);
    assert_eq!(
        sum(
            &during,
            "tidewater_records_in_total",
            &[("operator", "window")]
        ),
        first.len() as f64
    );
    // Windows up to the watermark fired: results reached the sink, timed.
    let out_during = one(&during, "tidewater_sink_records_out_total", &[]);
    assert!(out_during > 0.0, "no results before the end of input");
    assert_eq!(
        sum(
            &during,
            "tidewater_records_out_total",
            &[("operator", "window")]
        ),
        out_during
    );
    assert!(
        sum(
            &during,
            "tidewater_emit_latency_seconds_count",
            &[("operator", "window")]
        ) > 0.0
    );
    assert!(sum(&during, "tidewater_state_keys", &[("operator", "window")]) > 0.0);
    assert_eq!(one(&during, "tidewater_late_events_total", &[]), 0.0);
    assert_eq!(one(&during, "tidewater_dead_letters_total", &[]), 0.0);
    for s in find(&during, "tidewater_channel_capacity_messages", &[]) {
        assert_eq!(s.labels["operator"], "window", "{s:?}");
        assert!(s.value > 0.0);
    }

    // The rest, then the end of input.
    stdin.write_all(second_csv.as_bytes()).unwrap();
    drop(stdin);
    wait_for("the job to finish", || {
        status(addr)["finished"].as_bool().unwrap().then_some(())
    });
    let after = scrape(addr);
    assert_monotonic(&during, &after);

    let rows_written = part_file_rows(&out) as f64;
    assert!(rows_written > out_during);
    assert_eq!(one(&after, "tidewater_job_finished", &[]), 1.0);
    assert_eq!(
        one(&after, "tidewater_source_records_in_total", &[]),
        lines_in
    );
    assert_eq!(
        sum(&after, "tidewater_records_in_total", &source),
        good_rows as f64
    );
    assert_eq!(
        one(&after, "tidewater_sink_records_out_total", &[]),
        rows_written
    );
    assert_eq!(
        sum(
            &after,
            "tidewater_records_out_total",
            &[("operator", "window")]
        ),
        rows_written
    );
    assert_eq!(
        one(&after, "tidewater_late_events_total", &[]),
        late.len() as f64
    );
    assert_eq!(one(&after, "tidewater_dead_letters_total", &[]), bad_lines);
    let dead_lines = std::fs::read_to_string(&dead).unwrap().lines().count();
    assert_eq!(dead_lines as f64, bad_lines, "dead-letter file");
    // The last watermark: the largest event time minus the delay, on every subtask.
    let last_wm = events.iter().map(|e| e.ts).max().unwrap() - 2_000;
    let wms = find(&after, "tidewater_watermark_milliseconds", &[]);
    assert_eq!(wms.len(), 3, "1 source + 2 window subtasks: {wms:?}");
    assert!(wms.iter().all(|s| s.value == last_wm as f64), "{wms:?}");
    let emitted = sum(
        &after,
        "tidewater_emit_latency_seconds_count",
        &[("job", "classic")],
    );
    assert!(emitted > 0.0);
    let inf = sum(
        &after,
        "tidewater_emit_latency_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, emitted, "+Inf bucket holds every emission");
    assert_eq!(
        one(&after, "tidewater_checkpoints_completed_total", &[]),
        0.0
    );

    // /api/status says the same.
    let s = status(addr);
    assert_eq!(s["job"], "classic");
    assert_eq!(s["totals"]["records_in"].as_f64(), Some(lines_in));
    assert_eq!(s["totals"]["records_out"].as_f64(), Some(rows_written));
    assert_eq!(s["totals"]["late_events"], 3);
    assert_eq!(s["totals"]["dead_letters"], 2);
    let stages: Vec<&str> = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["source events", "window"]);
    let window = &s["stages"][1];
    assert_eq!(window["input"], "hash(key)");
    assert_eq!(window["records_out"].as_f64(), Some(rows_written));
    assert_eq!(window["subtasks"].as_array().unwrap().len(), 2);
    assert!(window["emit_latency"]["count"].as_u64().unwrap() > 0);
    assert_eq!(window["watermark"]["ms"], last_wm);

    run.terminate();
}

#[test]
fn an_explicit_address_that_is_taken_is_an_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("j.sql");
    std::fs::write(
        &job,
        classic_stdin_job(&dir.path().join("out"), &dir.path().join("d")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["run", job.to_str().unwrap(), "--http", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("--http {addr}")), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------------------

fn info(job: &str) -> StatusInfo {
    let metrics = Arc::new(JobMetrics::default());
    let t = metrics.task("window", 0);
    t.records_in.store(42, Ordering::Relaxed);
    t.watermark.store(1_700_000_000_000, Ordering::Relaxed);
    t.emit_latency.record(Duration::from_millis(3));
    StatusInfo {
        job: job.into(),
        graph: serde_json::json!({"stages": [{"name": "window", "parallelism": 1, "operators": ["w"], "input": "forward"}]}),
        explain: String::new(),
        metrics,
    }
}

#[test]
fn listen_parses_addresses_and_off() {
    assert_eq!("off".parse::<Listen>(), Ok(Listen::Off));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert_eq!("127.0.0.1:0".parse::<Listen>(), Ok(Listen::At(any)));
    assert!("8080".parse::<Listen>().unwrap_err().contains("'8080'"));
}

#[test]
fn a_taken_port_falls_back_to_the_next_free_one() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let first = taken.local_addr().unwrap();
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (l, fell_back) = bind_with_fallback(first, [first.port(), free]).unwrap();
    assert!(fell_back);
    assert_eq!(l.local_addr().unwrap().port(), free);
    let e = bind_with_fallback(first, [first.port()]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

/// Two servers in one process share the one global recorder and keep their jobs apart.
#[test]
fn two_servers_in_one_process_serve_their_own_job() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = StatusServer::start(any, info("job_a")).unwrap();
    let b = StatusServer::start(any, info("job_b")).unwrap();
    b.set_finished();
    assert!(b.finished() && !a.finished());
    for (server, job) in [(&a, "job_a"), (&b, "job_b")] {
        let m = scrape(server.local_addr());
        let labels = [("job", job), ("operator", "window"), ("subtask", "0")];
        assert_eq!(one(&m, "tidewater_records_in_total", &labels), 42.0);
        assert_eq!(one(&m, "tidewater_watermark_milliseconds", &labels), 1.7e12);
        let s = status(server.local_addr());
        assert_eq!(s["job"], job);
        assert_eq!(s["finished"], job == "job_b");
        assert_eq!(
            s["stages"][0]["watermark"]["iso"],
            "2023-11-14T22:13:20.000Z"
        );
        assert_eq!(s["stages"][0]["emit_latency"]["p50_ms"], 5);
        assert!(get(server.local_addr(), "/").contains("id=\"stages\""));
    }
    let addr = a.local_addr();
    a.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still serving after stop"
    );
}
