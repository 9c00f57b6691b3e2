//! The Kafka form of the classic job (issue 4) run through the real binary against the
//! test broker, and the means to judge its output: the shared part of
//! `tests/kafka_scaleout.rs`, meant for later Kafka tests (broker restart) and the Kafka
//! benchmark too.
//!
//! - [`Scenario`]: unique topics, group and transactional-id prefix on one broker, the
//!   job file (HOP 2 s / 10 s, SUM and COUNT by key, Kafka in, exactly-once Kafka out)
//!   and [`Instance`]s of `tidewater run` started on it. The source is keyed by the
//!   grouping key ([`Scenario::new`]: whole-partition tasks) or not
//!   ([`Scenario::unkeyed`]: the engine repartitions through internal topics, and
//!   window tasks write the output).
//! - [`InputProducer`]: the classic dataset as JSON messages keyed by key (or spread
//!   over the partitions regardless of key, [`Placement`]), with the partition and
//!   offset of every delivered message, and the sentinels that end the input (one
//!   far-future event per partition, so that every real window fires).
//! - [`expected_rows`]: the naive oracle of `tidewater-window` for the job.
//! - [`Watcher`]: reads the output topic (every visible record, aborted ones included:
//!   the pinned tansu shows them even to read_committed consumers), the changelog topic
//!   and the group's committed offsets, and decides from broker state alone which output
//!   records are committed ([`Verdict`]).
//!
//! How the commit chain is reconstructed (the engine's contract; offset metadata is not
//! used, because the pinned tansu drops it): per input partition `p`, every transaction
//! of a task commits, through `send_offsets_to_transaction` in the job's group, the input
//! offset of `(input, p)` and, for `(changelog, p)`, the offset of its snapshot's
//! manifest record on the changelog topic `<group>-<input>-changelog`. The manifest (key
//! `manifest`) carries the headers `tidewater.task`, `tidewater.generation`,
//! `tidewater.checkpoint`, `tidewater.from` (`"<gen>/<checkpoint>"` restored from, or
//! `""` for a fresh start) and `tidewater.records` (records of the snapshot, manifest
//! included). So the group's committed offset of `(changelog, p)` names the committed
//! mark `(g, n, from)`: generation `g` committed exactly the checkpoints in `(from.n, n]`
//! (`(0, n]` for a fresh start). The generation it restored from, `from.g`, committed
//! `(from'.n, from.n]`, where `from'` is in the manifest of snapshot `from`; and so on
//! back to a fresh start. An output record is committed exactly when its headers
//! `tidewater.task`, `tidewater.generation` and `tidewater.checkpoint` lie on that chain
//! (the job sets 'sink.transaction-headers' = 'true' so that output records carry them).
//!
//! A repartitioned job ([`Scenario::unkeyed`]) is judged the same way, per window task
//! `q` (task `<group>-<input>-repartition/<q>`) over its changelog
//! `<group>-<input>-repartition-changelog`, partition `q`, instead of per input
//! partition over the input changelog ([`Judged`]); its window tasks commit no input
//! offset, so completion is judged by the committed output rows alone.
#![allow(dead_code)]

#[path = "broker.rs"]
pub mod broker;
#[path = "classic.rs"]
pub mod classic;
#[path = "kafka_job/input.rs"]
mod input;
#[path = "kafka_job/judge.rs"]
mod judge;
#[path = "../../crates/tidewater-window/tests/common/oracle.rs"]
pub mod oracle;
#[path = "kafka_job/scaleout.rs"]
mod scaleout;
#[path = "kafka_job/verdicts.rs"]
mod verdicts;

pub use input::*;
pub use judge::*;
#[allow(unused_imports)] // the single-instance tests need none of it
pub use scaleout::*;
pub use verdicts::*;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use broker::{Broker, unique_name};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tidewater");

/// HOP slide and size of the job, in milliseconds.
pub const SLIDE_MS: i64 = 2_000;
pub const SIZE_MS: i64 = 10_000;
/// Keys of the sentinel events that end the input: `__flush_p<partition>`.
pub const SENTINEL_PREFIX: &str = "__flush_p";
/// A sentinel's event time: this long after the last event of the dataset.
pub const SENTINEL_LEAD_MS: i64 = 60_000;
/// How long a test waits for the committed output to be complete.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// How often a waiting test looks at the broker.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long an instance may take to stop after SIGTERM: its last commit is one
/// transactional call, which the engine lets wait 30 s for the broker (a zombie's commit
/// on the test broker can take all of it before it is told it was fenced), plus margin.
pub const STOP_PATIENCE: Duration = Duration::from_secs(45);

/// The output record headers of the contract.
pub const H_TASK: &str = "tidewater.task";
pub const H_GEN: &str = "tidewater.generation";
pub const H_CHECKPOINT: &str = "tidewater.checkpoint";
pub const H_FROM: &str = "tidewater.from";
/// On a manifest: records in the snapshot, manifest included.
pub const H_RECORDS: &str = "tidewater.records";

/// One result row: key, window start, window end (epoch ms), SUM(value), COUNT(*).
pub type Row = (String, i64, i64, i64, i64);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn is_sentinel(key: &str) -> bool {
    key.starts_with(SENTINEL_PREFIX)
}

// ---------------------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------------------

/// Topics, group and transactional-id prefix of one job on one broker, and the
/// directory that holds its job file, dead letters and the instances' logs.
#[derive(Debug)]
pub struct Scenario {
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub group: String,
    pub tx_prefix: String,
    pub input_partitions: i32,
    pub output_partitions: i32,
    /// 'sink.partitioner': `fixed` on the pinned tansu when every task can have an
    /// output partition of its own (see [`Scenario::new`]), otherwise `default`.
    pub sink_partitioner: &'static str,
    /// Whether the source declares the grouping key as its message key ('key.format',
    /// 'key.fields'), so that every input partition is a whole task; when not, the
    /// engine repartitions and window tasks write the output.
    pub keyed: bool,
    pub dir: tempfile::TempDir,
    pub job: PathBuf,
    pub dead_letters: PathBuf,
}

impl Scenario {
    /// Creates the input and output topics (unique names starting with `name`) and
    /// writes the job file, with `extra_source_options` added to the source's WITH.
    ///
    /// On the pinned tansu, with at least as many output partitions as input ones, the
    /// sink uses 'sink.partitioner' = 'fixed' (task `p` writes output partition `p`), so
    /// that no two tasks' transactions write one partition:
    /// tansu applies the offsets of a committed transaction only once no transaction
    /// that wrote the same partition is still open, and only when a transaction that
    /// overlaps it directly ends later; offsets deferred along a chain of overlaps
    /// (T1 and T3 share a partition, T3 and T0 another, T0 and T2 a third; committed in
    /// that order) are never applied, although every commit succeeded. The job then
    /// stalls (its tasks believe they committed) or replays. Other brokers get the
    /// default partitioner, where tasks share output partitions.
    pub fn new(
        broker: &Broker,
        name: &str,
        input_partitions: i32,
        output_partitions: i32,
        extra_source_options: &[(&str, &str)],
    ) -> Scenario {
        Scenario::create(
            broker,
            name,
            input_partitions,
            output_partitions,
            extra_source_options,
            true,
        )
    }

    /// As [`Scenario::new`], but the source table has no 'key.format' / 'key.fields':
    /// the input is not keyed by the grouping key, so the engine repartitions it. The
    /// output is written by the window tasks ([`Scenario::window_task`]), one per input
    /// partition, so the same output partition count rule applies.
    pub fn unkeyed(
        broker: &Broker,
        name: &str,
        input_partitions: i32,
        output_partitions: i32,
        extra_source_options: &[(&str, &str)],
    ) -> Scenario {
        Scenario::create(
            broker,
            name,
            input_partitions,
            output_partitions,
            extra_source_options,
            false,
        )
    }

    fn create(
        broker: &Broker,
        name: &str,
        input_partitions: i32,
        output_partitions: i32,
        extra_source_options: &[(&str, &str)],
        keyed: bool,
    ) -> Scenario {
        let input = unique_name(&format!("{name}-in"));
        let output = unique_name(&format!("{name}-out"));
        broker.create_topic(&input, input_partitions);
        broker.create_topic(&output, output_partitions);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let sink_partitioner = if !broker.is_local_tansu() {
            "default"
        } else if output_partitions >= input_partitions {
            "fixed"
        } else {
            eprintln!(
                "NOTE: {output_partitions} output partitions for {input_partitions} tasks: they \
                 share output partitions, and tansu may never apply some committed offsets \
                 (see Scenario::new); give the output as many partitions as the input"
            );
            "default"
        };
        let s = Scenario {
            bootstrap: broker.bootstrap().to_string(),
            group: unique_name(&format!("{name}-group")),
            tx_prefix: unique_name(&format!("{name}-tx")),
            input,
            output,
            input_partitions,
            output_partitions,
            sink_partitioner,
            keyed,
            job: dir.path().join("job.sql"),
            dead_letters: dir.path().join("dead-letters.jsonl"),
            dir,
        };
        fs::write(&s.job, s.job_sql(extra_source_options))
            .unwrap_or_else(|e| panic!("write {}: {e}", s.job.display()));
        s
    }

    /// The changelog topic the engine keeps for the group and the input topic.
    pub fn changelog(&self) -> String {
        format!("{}-{}-changelog", self.group, self.input)
    }

    /// The task name of input partition `p` (header `tidewater.task`).
    pub fn task(&self, p: i32) -> String {
        format!("{}/{p}", self.input)
    }

    /// A repartitioned job's data topic (N x N partitions for N input partitions).
    pub fn repartition_topic(&self) -> String {
        format!("{}-{}-repartition", self.group, self.input)
    }

    /// A repartitioned job's task topic (N partitions, never written): the group's
    /// assignment of its partition `q` decides who runs window task `q`.
    pub fn repartition_tasks_topic(&self) -> String {
        format!("{}-tasks", self.repartition_topic())
    }

    /// A repartitioned job's changelog of the window tasks: task `q` on partition `q`.
    pub fn repartition_changelog(&self) -> String {
        format!("{}-changelog", self.repartition_topic())
    }

    /// The name of window task `q` of a repartitioned job (header `tidewater.task`).
    pub fn window_task(&self, q: i32) -> String {
        format!("{}/{q}", self.repartition_topic())
    }

    /// The task that writes output and keeps its snapshots on partition `k` of the
    /// judged changelog: input partition `k`'s task, or window task `k` when unkeyed.
    pub fn output_task(&self, k: i32) -> String {
        if self.keyed {
            self.task(k)
        } else {
            self.window_task(k)
        }
    }

    /// The tasks that write the output, and where their snapshots are: what the
    /// [`Watcher`] judges. One per input partition either way.
    pub fn judged(&self) -> Judged {
        Judged {
            changelog: if self.keyed {
                self.changelog()
            } else {
                self.repartition_changelog()
            },
            tasks: (0..self.input_partitions)
                .map(|k| (self.output_task(k), k))
                .collect(),
            whole_partition: self.keyed,
        }
    }

    /// The classic job over Kafka: checkpoints every 300 ms, JSON in (keyed: the
    /// grouping key is also the message key; unkeyed: the message key is not read at
    /// all), JSON out, exactly-once sink. Its producers linger 20 ms rather than until
    /// the commit (the default), so that records of open transactions reach the broker
    /// before they commit: a killed instance leaves some behind, which the tests check
    /// stay invisible to the oracle's count.
    pub fn job_sql(&self, extra_source_options: &[(&str, &str)]) -> String {
        let key = if self.keyed {
            "\n  'key.format' = 'raw',\n  'key.fields' = 'key',"
        } else {
            ""
        };
        let mut extra = String::new();
        for (k, v) in extra_source_options {
            let _ = write!(extra, ",\n  '{k}' = '{v}'");
        }
        format!(
            "SET 'execution.checkpointing.interval' = '300 ms';

CREATE TABLE events (
  key STRING,
  `value` BIGINT,
  ts BIGINT,
  event_time AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '{input}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = '{group}',
  'scan.startup.mode' = 'earliest-offset',{key}
  'format' = 'json',
  'properties.session.timeout.ms' = '6000',
  'properties.heartbeat.interval.ms' = '500',
  'dead-letter.path' = '{dead}'{extra}
);

CREATE TABLE results (
  key STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  total BIGINT,
  cnt BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = '{output}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '{prefix}',
  'sink.transaction-headers' = 'true',
  'sink.partitioner' = '{partitioner}',
  'properties.linger.ms' = '20'
);

INSERT INTO results
SELECT key, window_start, window_end, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(event_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;
",
            input = self.input,
            output = self.output,
            bootstrap = self.bootstrap,
            group = self.group,
            prefix = self.tx_prefix,
            partitioner = self.sink_partitioner,
            dead = self.dead_letters.display(),
        )
    }

    /// Starts `tidewater run job.sql --http off` plus `extra` in a working directory of
    /// its own (so that no two instances share local state), stderr into
    /// `<name>.stderr`.
    pub fn spawn(&self, name: &str, extra: &[&str]) -> Instance {
        let cwd = self.dir.path().join(name);
        fs::create_dir_all(&cwd).unwrap_or_else(|e| panic!("mkdir {}: {e}", cwd.display()));
        let stderr = self.dir.path().join(format!("{name}.stderr"));
        let file =
            fs::File::create(&stderr).unwrap_or_else(|e| panic!("{}: {e}", stderr.display()));
        let child = Command::new(BIN)
            .arg("run")
            .arg(&self.job)
            .args(["--http", "off"])
            .args(extra)
            .current_dir(&cwd)
            .env_remove("RUST_LOG")
            .envs(std::env::var("TIDEWATER_TEST_RUST_LOG").map(|l| ("RUST_LOG", l)))
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        eprintln!("[{name}] started, pid {}", child.id());
        Instance {
            name: name.to_string(),
            child: Some(child),
            stderr,
            started: Instant::now(),
        }
    }

    /// The dead-letter file's lines as JSON (none when the file does not exist).
    pub fn dead_letters(&self) -> Vec<Value> {
        let Ok(text) = fs::read_to_string(&self.dead_letters) else {
            return Vec::new();
        };
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("dead letter {} is not JSON ({e}): {l}", i + 1))
            })
            .collect()
    }
}

/// The tasks an instance's log says it holds: `task <topic>/<p> opened` adds one,
/// `task <topic>/<p> revoked` or `... lost its partition` removes it. Only a hint (it
/// reads log lines), for choosing a moment, never for a verdict.
pub fn owned_tasks(log: &str) -> BTreeSet<String> {
    let mut owned = BTreeSet::new();
    for line in log.lines() {
        let Some(at) = line.find("task ") else {
            continue;
        };
        let rest = &line[at + "task ".len()..];
        let Some((task, what)) = rest.split_once(' ') else {
            continue;
        };
        if what.starts_with("opened") {
            owned.insert(task.to_string());
        } else if what.starts_with("revoked") || what.starts_with("lost") {
            owned.remove(task);
        }
    }
    owned
}

/// The generations an instance's log says it opened, each with its task: the field
/// `generation=<g>` of every `task <topic>/<p> opened` line. Unlike [`owned_tasks`] this
/// is exact: a generation is one attempt of a task, opened by exactly one instance, so an
/// output record's `tidewater.generation` names the instance that wrote it.
pub fn opened_generations(log: &str) -> std::collections::BTreeMap<String, String> {
    let mut opened = std::collections::BTreeMap::new();
    for line in log.lines() {
        let Some(at) = line.find("task ") else {
            continue;
        };
        let rest = &line[at + "task ".len()..];
        let Some((task, what)) = rest.split_once(' ') else {
            continue;
        };
        if !what.starts_with("opened") {
            continue;
        }
        if let Some(g) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("generation="))
        {
            opened.insert(g.trim_matches('"').to_string(), task.to_string());
        }
    }
    opened
}

/// One `tidewater run` process. Dropping it kills the process if it still runs, and
/// shows its stderr when the test is failing.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    child: Option<Child>,
    pub stderr: PathBuf,
    pub started: Instant,
}

impl Instance {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.stderr) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// The last `lines` lines of stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Err` with the exit status and stderr when the process has ended.
    pub fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{} was already stopped", self.name));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}) while it should be running; stderr:\n{}",
                self.name,
                self.log_tail(60)
            )),
            Err(e) => Err(format!("{}: wait: {e}", self.name)),
        }
    }

    /// Sends `signal` (a name for kill(1): `STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid} ({}) failed", self.name);
        eprintln!("[{}] SIG{signal}", self.name);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "[{}] SIGKILLed after {:.1} s",
                self.name,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// SIGTERM (a graceful stop), then waits up to [`STOP_PATIENCE`] for the process to
    /// end; if it does not, kills it and panics.
    pub fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("{} was already stopped", self.name);
        };
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map(|s| s.success());
        let asked = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!(
                        "[{}] stopped by SIGTERM in {:.2} s: {status}",
                        self.name,
                        asked.elapsed().as_secs_f64()
                    );
                    return status;
                }
                Ok(None) if asked.elapsed() < STOP_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} did not stop within {STOP_PATIENCE:?} of SIGTERM (kill: {signalled:?}, \
                         wait: {other:?}); stderr:\n{}",
                        self.name,
                        self.log_tail(60)
                    );
                }
            }
        }
    }

    /// [`Instance::stop`], and the exit must be a success without a panic on stderr.
    pub fn stop_cleanly(&mut self) {
        let status = self.stop();
        let log = self.log();
        assert!(
            status.success(),
            "{} ended with {status} after SIGTERM; stderr:\n{}",
            self.name,
            self.log_tail(60)
        );
        for bad in ["panicked", "RUST_BACKTRACE", "internal error"] {
            assert!(
                !log.contains(bad),
                "{}'s stderr mentions '{bad}':\n{}",
                self.name,
                self.log_tail(60)
            );
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} stderr (last 40 lines) ----\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }
}
