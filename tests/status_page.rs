//! The status page in a real browser: headless Chromium loads `/` of a running job twice
//! and the DOM it rendered must show every stage and operator of the job's graph, and a
//! records-in figure that grew between the two loads (the page's script polls
//! `/api/status` and updates in place).
//!
//! Needs Debian's `chromium` (scripts/test installs it); without it the test says
//! `SKIPPED: ...` and passes. `TIDEWATER_SCREENSHOT=1` also writes
//! `docs/status-page.png` (the README's picture).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/http.rs"]
mod http;

use http::{PATIENCE, status, wait_for};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// A paced, practically endless classic job with checkpoints (so the page has some):
/// 1 000 events a second, 1 ms of event time apart from `start_ms` on, so event time
/// keeps pace with the wall clock.
fn job_sql(start_ms: i64) -> String {
    format!(
        "
CREATE TABLE events (
  key BIGINT,
  `value` BIGINT,
  ts_ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000',
  'fields.key.min' = '0',
  'fields.key.max' = '499',
  'fields.value.min' = '0',
  'fields.value.max' = '1000',
  'fields.ts_ms.kind' = 'sequence',
  'fields.ts_ms.start' = '{start_ms}',
  'fields.ts_ms.end' = '{}'
);

CREATE TABLE sums (window_start TIMESTAMP(3), window_end TIMESTAMP(3), key BIGINT,
                   total BIGINT, events BIGINT) WITH ('connector' = 'blackhole');

INSERT INTO sums
SELECT window_start, window_end, key, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
",
        start_ms + 1_000_000_000
    )
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs headless Chromium on `url` with `args` (a fresh profile each time); its stdout.
fn chromium(bin: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Lets the page's script fetch /api/status and render before the dump.
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let status = wait_for("chromium to exit", || child.try_wait().unwrap());
    assert!(status.success(), "chromium {args:?} failed: {status}");
    reader.join().unwrap()
}

/// Undoes the HTML escaping of a serialized DOM.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `(data-stage, data-records-in)` of each `class="stage"` element of a dumped DOM.
fn stage_figures(dom: &str) -> Vec<(String, u64)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let len = tag[start..].find('"')?;
        Some(unescape(&tag[start..start + len]))
    };
    dom.split("<div class=\"stage\"")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            Some((
                attr(tag, "data-stage")?,
                attr(tag, "data-records-in")?.parse().ok()?,
            ))
        })
        .collect()
}

/// The running job; killed when dropped.
struct Tidewater(Child);

impl Drop for Tidewater {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_status_page_shows_the_graph_and_live_throughput() {
    let Some(bin) = find_chromium() else {
        println!("SKIPPED: chromium not installed (scripts/test installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("live_classic.sql");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::fs::write(&job, job_sql(now.as_millis() as i64)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .arg("run")
        .arg(&job)
        .args([
            "-p",
            "2",
            "--http",
            "127.0.0.1:0",
            "--checkpoint-interval",
            "1s",
        ])
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tidewater");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let _job = Tidewater(child);
    let addr: SocketAddr = loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the status URL in the log");
        if let Some(rest) = line.split("status page and metrics at http://").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    let url = format!("http://{addr}/");

    // The graph the page must show, and a job that has started moving.
    let graph = status(addr)["graph"].clone();
    let stages = graph["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{graph}");
    wait_for("records in the window stage", || {
        (status(addr)["stages"][1]["records_in"].as_u64().unwrap() > 0).then_some(())
    });

    let first = chromium(&bin, &url, &["--dump-dom"]);
    let text = unescape(&first);
    for st in stages {
        let name = st["name"].as_str().unwrap();
        assert!(
            text.contains(name),
            "stage {name:?} not on the page:\n{first}"
        );
        for op in st["operators"].as_array().unwrap() {
            let op = op.as_str().unwrap();
            assert!(
                text.contains(op),
                "operator {op:?} not on the page:\n{first}"
            );
        }
        let parallelism = format!("×{}", st["parallelism"]);
        assert!(text.contains(&parallelism), "{parallelism} not on the page");
    }
    assert!(text.contains("hash(key)"), "the edge's partitioning");
    let before = stage_figures(&first);
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["source events", "window"], "{first}");
    assert!(before.iter().all(|(_, n)| *n > 0), "{before:?}");

    // Once the job has moved on (the JSON says so), a second load must show it too.
    let moved_past = before[1].1 + 1_000;
    wait_for("the job to move on", || {
        (status(addr)["stages"][1]["records_in"].as_u64().unwrap() > moved_past).then_some(())
    });
    let second = chromium(&bin, &url, &["--dump-dom"]);
    let after = stage_figures(&second);
    assert_eq!(after.len(), before.len(), "{second}");
    for ((name, n0), (_, n1)) in before.iter().zip(&after) {
        assert!(n1 > n0, "records in of {name} did not grow: {n0} -> {n1}");
    }

    if std::env::var_os("TIDEWATER_SCREENSHOT").is_some_and(|v| v == "1") {
        let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::create_dir_all(png.parent().unwrap()).unwrap();
        wait_for("a few checkpoints to show", || {
            (status(addr)["checkpoints"]["completed"].as_u64().unwrap() >= 3).then_some(())
        });
        let shot = format!("--screenshot={}", png.display());
        chromium(&bin, &url, &[&shot, "--window-size=1280,900"]);
        let header = std::fs::read(&png).unwrap();
        assert!(header.starts_with(b"\x89PNG"), "{png:?} is not a PNG");
        println!("screenshot: {}", png.display());
    }
}
