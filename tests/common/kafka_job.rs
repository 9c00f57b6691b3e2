//! The Kafka form of the classic job (issue 4) run through the real binary against the
//! test broker, and the means to judge its output: the shared part of
//! `tests/kafka_scaleout.rs`, meant for later Kafka tests (broker restart) and the Kafka
//! benchmark too.
//!
//! - [`Scenario`]: unique topics, group and transactional-id prefix on one broker, the
//!   job file (HOP 2 s / 10 s, SUM and COUNT by key, Kafka in, exactly-once Kafka out)
//!   and [`Instance`]s of `tidewater run` started on it.
//! - [`InputProducer`]: the classic dataset as JSON messages keyed by key, with the
//!   partition and offset of every delivered message, and the sentinels that end the
//!   input (one far-future event per partition, so that every real window fires).
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
//! `tidewater.task`, `tidewater.generation` and `tidewater.checkpoint` lie on that chain.
#![allow(dead_code)]

#[path = "broker.rs"]
pub mod broker;
#[path = "classic.rs"]
pub mod classic;
#[path = "../../crates/tidewater-window/tests/common/oracle.rs"]
pub mod oracle;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use broker::{Broker, REQUEST_TIMEOUT, unique_name};
use chrono::NaiveDateTime;
use classic::ClassicEvent;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
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
/// How long an instance may take to stop after SIGTERM.
pub const STOP_PATIENCE: Duration = Duration::from_secs(30);

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

    /// The classic job over Kafka: checkpoints every 300 ms, JSON in (the grouping key
    /// is also the message key, as the engine requires), JSON out, exactly-once sink.
    pub fn job_sql(&self, extra_source_options: &[(&str, &str)]) -> String {
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
  'scan.startup.mode' = 'earliest-offset',
  'key.format' = 'raw',
  'key.fields' = 'key',
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
  'sink.partitioner' = '{partitioner}'
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

// ---------------------------------------------------------------------------------------
// The input
// ---------------------------------------------------------------------------------------

/// Where one produced message went.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
}

/// Keeps every delivery report.
#[derive(Debug, Default)]
pub struct Deliveries {
    delivered: Mutex<Vec<Delivery>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => lock(&self.delivered).push(Delivery {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, m)) => lock(&self.failed).push(format!(
                "{}: {e}",
                String::from_utf8_lossy(m.key().unwrap_or_default())
            )),
        }
    }
}

/// An idempotent producer of input messages that remembers where each one went.
pub struct InputProducer {
    producer: BaseProducer<Deliveries>,
    pub topic: String,
}

/// The JSON message of one event.
pub fn event_json(key: &str, value: i64, ts: i64) -> String {
    serde_json::json!({"key": key, "value": value, "ts": ts}).to_string()
}

impl InputProducer {
    pub fn new(bootstrap: &str, topic: &str) -> InputProducer {
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .unwrap_or_else(|e| panic!("input producer: {e}"));
        InputProducer {
            producer,
            topic: topic.to_string(),
        }
    }

    /// Sends one message keyed by `key` (to `partition`, or where the partitioner puts
    /// the key), waiting while the queue is full.
    pub fn send(&self, key: &str, payload: &[u8], partition: Option<i32>) {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
            }
        }
        self.producer.poll(Duration::ZERO);
    }

    /// Sends the classic events as JSON, keyed by key.
    pub fn send_events(&self, events: &[ClassicEvent], partition_of: Option<&dyn Fn(&str) -> i32>) {
        for e in events {
            let payload = event_json(&e.key, e.value, e.ts);
            self.send(&e.key, payload.as_bytes(), partition_of.map(|f| f(&e.key)));
        }
    }

    /// Waits until every message sent so far is delivered; panics on a failed delivery.
    pub fn flush(&self) {
        self.producer
            .flush(REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("flush input: {e}"));
        let failed = lock(&self.producer.context().failed).clone();
        assert!(failed.is_empty(), "input deliveries failed: {failed:?}");
    }

    /// After the dataset: one event per partition in `partitions`, with key
    /// `__flush_p<N>` and event time `ts`, so that every window of the data fires.
    pub fn send_sentinels(&self, partitions: impl IntoIterator<Item = i32>, ts: i64) {
        self.flush(); // the sentinels come after every event of the dataset
        for p in partitions {
            let key = format!("{SENTINEL_PREFIX}{p}");
            self.send(&key, event_json(&key, 0, ts).as_bytes(), Some(p));
        }
        self.flush();
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.producer.context().delivered).clone()
    }

    /// Per partition, the offset after its last delivered message: where a consumer
    /// that read everything has its position.
    pub fn ends(&self) -> BTreeMap<i32, i64> {
        let mut ends = BTreeMap::new();
        for d in self.deliveries() {
            let e = ends.entry(d.partition).or_insert(0);
            *e = (*e).max(d.offset + 1);
        }
        ends
    }

    /// The partition of every key delivered so far; panics when one key went to two
    /// partitions.
    pub fn key_partitions(&self) -> BTreeMap<String, i32> {
        let mut map = BTreeMap::new();
        for d in self.deliveries() {
            let first = *map.entry(d.key.clone()).or_insert(d.partition);
            assert_eq!(first, d.partition, "key {} went to two partitions", d.key);
        }
        map
    }
}

/// Produces `events` (keyed by key, where the partitioner puts them) on a thread of its
/// own in 100 batches spread over `over`, then one sentinel per partition of
/// `s.input_partitions`; returns what [`InputProducer::key_partitions`] and
/// [`InputProducer::ends`] say at the end. The pause between batches is the pacing of
/// the stream, not a synchronisation.
pub fn produce_paced(
    s: &Scenario,
    events: &[ClassicEvent],
    over: Duration,
) -> std::thread::JoinHandle<(BTreeMap<String, i32>, BTreeMap<i32, i64>)> {
    let bootstrap = s.bootstrap.clone();
    let topic = s.input.clone();
    let partitions = s.input_partitions;
    let sentinel = sentinel_ts(events);
    let events = events.to_vec();
    std::thread::spawn(move || {
        let producer = InputProducer::new(&bootstrap, &topic);
        let batches = events.chunks(events.len().div_ceil(100).max(1));
        let step = over / 100;
        let began = Instant::now();
        for (i, batch) in batches.enumerate() {
            let due = began + step * u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            producer.send_events(batch, None);
        }
        producer.send_sentinels(0..partitions, sentinel);
        eprintln!("input produced in {:.1} s", began.elapsed().as_secs_f64());
        (producer.key_partitions(), producer.ends())
    })
}

/// The sentinels' event time for a dataset.
pub fn sentinel_ts(events: &[ClassicEvent]) -> i64 {
    events.iter().map(|e| e.ts).max().unwrap_or(classic::T0) + SENTINEL_LEAD_MS
}

/// What the job must output for `events`, by the naive oracle, sorted.
pub fn expected_rows(events: &[ClassicEvent]) -> Vec<Row> {
    use oracle::{Agg, AggFn, AggValue, ArgType, Event, KeyValue, Window};
    let input: Vec<Event> = events
        .iter()
        .map(|e| Event {
            keys: vec![KeyValue::Str(e.key.clone())],
            ts: e.ts,
            value: Some(e.value),
        })
        .collect();
    let aggs = [
        Agg {
            func: AggFn::Sum,
            arg: ArgType::Int,
        },
        Agg {
            func: AggFn::CountStar,
            arg: ArgType::Int,
        },
    ];
    let window = Window::Hop {
        size: SIZE_MS,
        slide: SLIDE_MS,
    };
    let mut rows: Vec<Row> = oracle::evaluate(&input, &window, &aggs)
        .into_iter()
        .map(|r| {
            let key = match &r.keys[..] {
                [KeyValue::Str(k)] => k.clone(),
                other => panic!("oracle key {other:?}"),
            };
            let int = |v: &AggValue| match v {
                AggValue::Int(i) => *i,
                other => panic!("oracle aggregate {other:?}"),
            };
            (
                key,
                r.window_start,
                r.window_end,
                int(&r.aggs[0]),
                int(&r.aggs[1]),
            )
        })
        .collect();
    rows.sort_unstable();
    rows
}

// ---------------------------------------------------------------------------------------
// Reading the broker
// ---------------------------------------------------------------------------------------

/// The commit mark of one task: the manifest the group's committed offset of
/// `(changelog, p)` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub g: String,
    pub n: u64,
    /// Changelog offset of snapshot `n`'s manifest, and how many records the snapshot
    /// has (manifest included).
    pub offset: i64,
    pub count: u64,
    /// The mark generation `g` restored from; `None`: a fresh start.
    pub from: Option<(String, u64)>,
    /// The committed input offset, if any.
    pub input_offset: Option<i64>,
}

/// Parses `"<g>/<n>"` (or `""`: none).
pub fn parse_from_header(s: &str) -> Result<Option<(String, u64)>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let (g, n) = s
        .rsplit_once('/')
        .ok_or_else(|| format!("'{s}' is not '<generation>/<checkpoint>'"))?;
    let n = n
        .parse()
        .map_err(|_| format!("'{s}': checkpoint '{n}' is not a number"))?;
    Ok(Some((g.to_string(), n)))
}

/// The four contract headers of a record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub task: String,
    pub generation: String,
    pub checkpoint: u64,
    pub from: String,
}

fn tag_of<M: Message>(m: &M) -> Result<Tag, String> {
    tag_and_records(m).map(|(tag, _)| tag)
}

/// The four contract headers, and `tidewater.records` if present.
fn tag_and_records<M: Message>(m: &M) -> Result<(Tag, Option<u64>), String> {
    let mut found: HashMap<&str, String> = HashMap::new();
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let value = h
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            found.insert(h.key, value);
        }
    }
    let get = |k: &str| {
        found
            .get(k)
            .cloned()
            .ok_or_else(|| format!("no header {k} (headers: {found:?})"))
    };
    let checkpoint = get(H_CHECKPOINT)?;
    let records = match found.get(H_RECORDS) {
        None => None,
        Some(r) => Some(
            r.parse()
                .map_err(|_| format!("header {H_RECORDS} = {r:?} is not a number"))?,
        ),
    };
    let tag = Tag {
        task: get(H_TASK)?,
        generation: get(H_GEN)?,
        checkpoint: checkpoint
            .parse()
            .map_err(|_| format!("header {H_CHECKPOINT} = {checkpoint:?} is not a number"))?,
        from: get(H_FROM)?,
    };
    Ok((tag, records))
}

fn parse_ts(s: &str) -> Result<i64, String> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|e| format!("timestamp {s:?}: {e}"))
}

/// An output record's JSON as a row.
pub fn parse_row(payload: &str) -> Result<Row, String> {
    let v: Value = serde_json::from_str(payload).map_err(|e| format!("not JSON ({e})"))?;
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no string \"{k}\""))
    };
    let i = |k: &str| v[k].as_i64().ok_or_else(|| format!("no integer \"{k}\""));
    Ok((
        s("key")?,
        parse_ts(&s("window_start")?)?,
        parse_ts(&s("window_end")?)?,
        i("total")?,
        i("cnt")?,
    ))
}

/// One visible output record.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub partition: i32,
    pub offset: i64,
    pub tag: Tag,
    pub row: Row,
}

/// One visible changelog record.
#[derive(Debug, Clone)]
pub struct ChangeRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub tag: Tag,
    /// The header `tidewater.records` (manifests have it).
    pub records: Option<u64>,
}

/// The generations of one task, as one link of the chain: `generation` committed the
/// checkpoints in `(lo, hi]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub generation: String,
    pub lo: u64,
    pub hi: u64,
    /// The mark it restored from (`None`: a fresh start).
    pub from: Option<(String, u64)>,
}

/// `"<g>/<n>"`, or `""` for a fresh start: the form of the header `tidewater.from`.
pub fn from_header(from: &Option<(String, u64)>) -> String {
    from.as_ref()
        .map_or(String::new(), |(g, n)| format!("{g}/{n}"))
}

/// What the broker says at one moment.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Committed output rows, sentinel keys left out.
    pub committed: Vec<Row>,
    /// Committed output records, sentinel keys included, with their tags.
    pub committed_records: Vec<(Tag, Row)>,
    /// Committed rows of sentinel keys.
    pub committed_sentinel: usize,
    /// Visible output records not on the chain, by (task, generation, checkpoint):
    /// aborted attempts (or transactions still open).
    pub others: BTreeMap<(String, String, u64), usize>,
    /// Per input partition: checkpoints of the chain's newest generation whose snapshots
    /// are on the changelog beyond its committed mark (transactions aborted, still
    /// open, or whose offsets the broker lost).
    pub beyond_marks: BTreeMap<i32, Vec<u64>>,
    /// Per input partition: the committed mark, if any.
    pub marks: BTreeMap<i32, Mark>,
    /// Per input partition: the group's committed offsets of (changelog, p) and
    /// (input, p).
    pub committed_offsets: BTreeMap<i32, (Option<i64>, Option<i64>)>,
    /// Per input partition: the chain, newest generation first.
    pub chains: BTreeMap<i32, Vec<Link>>,
    /// Why a partition's chain cannot be decided yet (records not read yet, or
    /// missing).
    pub pending: Vec<String>,
    /// Contract violations seen.
    pub problems: Vec<String>,
    /// Records read so far.
    pub output_records: usize,
    pub changelog_records: usize,
}

impl Verdict {
    /// One line: committed rows, chain lengths, others, pending.
    pub fn summary(&self) -> String {
        let chains: Vec<String> = self
            .chains
            .iter()
            .map(|(p, c)| {
                let links: Vec<String> = c
                    .iter()
                    .map(|l| format!("{}({},{}]", short(&l.generation), l.lo, l.hi))
                    .collect();
                format!("p{p}: {}", links.join(" <- "))
            })
            .collect();
        format!(
            "{} committed rows (+{} of sentinels), {} other visible records; {} output and {} \
             changelog records read; chains [{}]; pending {:?}; problems {}",
            self.committed.len(),
            self.committed_sentinel,
            self.others.values().sum::<usize>(),
            self.output_records,
            self.changelog_records,
            chains.join("; "),
            self.pending,
            self.problems.len()
        )
    }
}

/// A generation id, shortened for progress lines: its last 8 characters.
pub fn short(g: &str) -> String {
    let chars: Vec<char> = g.chars().collect();
    if chars.len() > 10 {
        format!("..{}", chars[chars.len() - 8..].iter().collect::<String>())
    } else {
        g.to_string()
    }
}

/// Reads the output topic (read_uncommitted: every record written, committed or not),
/// the changelog topic once it exists, and the group's committed offsets.
pub struct Watcher {
    bootstrap: String,
    input: String,
    output: String,
    changelog: String,
    input_partitions: i32,
    output_consumer: BaseConsumer,
    changelog_consumer: Option<BaseConsumer>,
    group_reader: BaseConsumer,
    pub outputs: Vec<OutRecord>,
    pub changes: Vec<ChangeRecord>,
    /// Records that do not follow the contract (bad headers, bad JSON).
    pub malformed: Vec<String>,
    /// Errors the consumers reported.
    pub errors: Vec<String>,
}

impl Watcher {
    pub fn new(broker: &Broker, s: &Scenario) -> Watcher {
        let reader_settings = [
            ("group.id", unique_name("tidewater-test-reader")),
            ("enable.auto.commit", "false".to_string()),
            ("isolation.level", "read_uncommitted".to_string()),
        ];
        let settings: Vec<(&str, &str)> = reader_settings
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let output_consumer = broker.consumer(&settings);
        let mut tpl = TopicPartitionList::new();
        for p in 0..s.output_partitions {
            tpl.add_partition_offset(&s.output, p, Offset::Beginning)
                .unwrap_or_else(|e| panic!("assign output: {e}"));
        }
        output_consumer
            .assign(&tpl)
            .unwrap_or_else(|e| panic!("assign output: {e}"));
        // Never subscribes: it only asks for the group's committed offsets.
        let group_reader =
            broker.consumer(&[("group.id", &s.group), ("enable.auto.commit", "false")]);
        Watcher {
            bootstrap: s.bootstrap.clone(),
            input: s.input.clone(),
            output: s.output.clone(),
            changelog: s.changelog(),
            input_partitions: s.input_partitions,
            output_consumer,
            changelog_consumer: None,
            group_reader,
            outputs: Vec::new(),
            changes: Vec::new(),
            malformed: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Reads whatever has arrived on the output and changelog topics.
    pub fn poll(&mut self) {
        if self.changelog_consumer.is_none() {
            self.changelog_consumer = self.open_changelog();
        }
        let mut errors = Vec::new();
        for _ in 0..200_000 {
            match self.output_consumer.poll(Duration::from_millis(20)) {
                None => break,
                Some(Err(e)) => errors.push(format!("output: {e}")),
                Some(Ok(m)) => {
                    let payload = String::from_utf8_lossy(m.payload().unwrap_or_default());
                    let at = format!("output {}/{}@{}", self.output, m.partition(), m.offset());
                    match (tag_of(&m), parse_row(&payload)) {
                        (Ok(tag), Ok(row)) => self.outputs.push(OutRecord {
                            partition: m.partition(),
                            offset: m.offset(),
                            tag,
                            row,
                        }),
                        (Err(e), _) | (_, Err(e)) => {
                            self.malformed.push(format!("{at}: {e}; payload {payload}"));
                        }
                    }
                }
            }
        }
        if let Some(c) = &self.changelog_consumer {
            let mut read = Vec::new();
            for _ in 0..200_000 {
                match c.poll(Duration::from_millis(20)) {
                    None => break,
                    Some(Err(e)) => errors.push(format!("changelog: {e}")),
                    Some(Ok(m)) => {
                        let at = format!(
                            "changelog {}/{}@{}",
                            self.changelog,
                            m.partition(),
                            m.offset()
                        );
                        match tag_and_records(&m) {
                            Ok((tag, records)) => read.push(ChangeRecord {
                                partition: m.partition(),
                                offset: m.offset(),
                                key: String::from_utf8_lossy(m.key().unwrap_or_default())
                                    .into_owned(),
                                tag,
                                records,
                            }),
                            Err(e) => self.malformed.push(format!("{at}: {e}")),
                        }
                    }
                }
            }
            self.changes.extend(read);
        }
        for e in errors {
            self.note_error(e);
        }
    }

    fn note_error(&mut self, e: String) {
        if self.errors.len() < 20 {
            eprintln!("consumer error: {e}");
            self.errors.push(e);
        }
    }

    /// A consumer of every partition of the changelog topic, once the topic is listed
    /// (listing all topics, so that asking never creates it).
    fn open_changelog(&self) -> Option<BaseConsumer> {
        let metadata = self
            .output_consumer
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .ok()?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.changelog && t.error().is_none())?;
        let partitions = topic.partitions().len();
        if partitions == 0 {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let p = i32::try_from(p).ok()?;
            tpl.add_partition_offset(&self.changelog, p, Offset::Beginning)
                .ok()?;
        }
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique_name("tidewater-test-changelog"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create()
            .ok()?;
        consumer.assign(&tpl).ok()?;
        eprintln!(
            "changelog topic {} has {partitions} partitions",
            self.changelog
        );
        Some(consumer)
    }

    /// The group's committed offsets per input partition: of `(changelog, p)` (the
    /// committed snapshot's manifest) and of `(input, p)`.
    pub fn committed(&self) -> BTreeMap<i32, (Option<i64>, Option<i64>)> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.input_partitions {
            tpl.add_partition(&self.input, p);
            tpl.add_partition(&self.changelog, p);
        }
        let committed = match self.group_reader.committed_offsets(tpl, REQUEST_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("committed offsets: {e}");
                return BTreeMap::new();
            }
        };
        let mut out: BTreeMap<i32, (Option<i64>, Option<i64>)> = BTreeMap::new();
        for e in committed.elements() {
            let Offset::Offset(o) = e.offset() else {
                continue; // nothing committed yet
            };
            let entry = out.entry(e.partition()).or_default();
            if e.topic() == self.changelog {
                entry.0 = Some(o);
            } else {
                entry.1 = Some(o);
            }
        }
        out
    }

    /// Decides, from the marks and the records read so far, which output records are
    /// committed. `key_partitions` (the input partition of every key), when given, is
    /// checked against the output records' tasks.
    pub fn verdict(&self, key_partitions: Option<&BTreeMap<String, i32>>) -> Verdict {
        let committed = self.committed();
        let mut v = Verdict {
            committed_offsets: committed.clone(),
            output_records: self.outputs.len(),
            changelog_records: self.changes.len(),
            ..Verdict::default()
        };
        v.problems.extend(self.malformed.iter().cloned());
        let tasks: BTreeMap<String, i32> = (0..self.input_partitions)
            .map(|p| (format!("{}/{p}", self.input), p))
            .collect();

        // The changelog: per (partition, generation), its `from` and its snapshots.
        let mut gen_from: HashMap<(i32, &str), &str> = HashMap::new();
        let mut snapshots: HashMap<(i32, &str, u64), (i64, u64)> = HashMap::new();
        let mut manifests: BTreeSet<(i32, &str, u64)> = BTreeSet::new();
        for r in &self.changes {
            match tasks.get(&r.tag.task) {
                Some(&p) if p == r.partition => {}
                _ => v.problems.push(format!(
                    "changelog record {}@{} (key {:?}) has task {:?}, not {}/{}",
                    r.partition, r.offset, r.key, r.tag.task, self.input, r.partition
                )),
            }
            let from = *gen_from
                .entry((r.partition, r.tag.generation.as_str()))
                .or_insert(r.tag.from.as_str());
            if from != r.tag.from {
                v.problems.push(format!(
                    "changelog partition {}: generation {} has records from {from:?} and from \
                     {:?}",
                    r.partition, r.tag.generation, r.tag.from
                ));
            }
            let s = snapshots
                .entry((r.partition, r.tag.generation.as_str(), r.tag.checkpoint))
                .or_insert((r.offset, 0));
            s.0 = s.0.min(r.offset);
            s.1 += 1;
            if r.key == "manifest" {
                manifests.insert((r.partition, r.tag.generation.as_str(), r.tag.checkpoint));
            }
        }
        // The marks: the manifests the committed changelog offsets point at.
        let at: HashMap<(i32, i64), &ChangeRecord> = self
            .changes
            .iter()
            .map(|r| ((r.partition, r.offset), r))
            .collect();
        for (&p, &(manifest, input_offset)) in &committed {
            let Some(offset) = manifest else {
                if input_offset.is_some() {
                    v.pending.push(format!(
                        "p{p}: the input offset is committed, (changelog, {p}) is not"
                    ));
                }
                continue;
            };
            let Some(r) = at.get(&(p, offset)) else {
                v.pending.push(format!(
                    "p{p}: the committed manifest at changelog offset {offset} is not read yet"
                ));
                continue;
            };
            let (Some(count), "manifest") = (r.records, r.key.as_str()) else {
                v.problems.push(format!(
                    "p{p}: the committed changelog offset {offset} is not a manifest with \
                     {H_RECORDS}: key {:?}, tag {:?}, records {:?}",
                    r.key, r.tag, r.records
                ));
                continue;
            };
            match parse_from_header(&r.tag.from) {
                Ok(from) => {
                    v.marks.insert(
                        p,
                        Mark {
                            g: r.tag.generation.clone(),
                            n: r.tag.checkpoint,
                            offset,
                            count,
                            from,
                            input_offset,
                        },
                    );
                }
                Err(e) => v
                    .problems
                    .push(format!("p{p}: manifest at {offset}: {H_FROM}: {e}")),
            }
        }

        // The chains.
        for p in 0..self.input_partitions {
            let Some(mark) = v.marks.get(&p).cloned() else {
                continue;
            };
            let pending_before = v.pending.len();
            // The final mark's snapshot is on the changelog, where the mark says.
            match snapshots.get(&(p, mark.g.as_str(), mark.n)) {
                Some(&(first, count)) if count >= mark.count => {
                    if first != mark.offset || count != mark.count {
                        v.problems.push(format!(
                            "p{p}: mark {mark:?} says its snapshot is {} records from changelog \
                             offset {}; the changelog holds {count} records of it from offset \
                             {first}",
                            mark.count, mark.offset
                        ));
                    }
                }
                seen => v.pending.push(format!(
                    "p{p}: snapshot {} of {} not (completely) read: (first offset, records) \
                     {seen:?}, mark says {} records",
                    mark.n,
                    short(&mark.g),
                    mark.count
                )),
            }
            let mut chain: Vec<Link> = Vec::new();
            let (mut generation, mut hi, mut from) = (mark.g.clone(), mark.n, mark.from.clone());
            loop {
                if chain.iter().any(|l| l.generation == generation) {
                    v.problems
                        .push(format!("p{p}: the chain loops at {generation}: {chain:?}"));
                    break;
                }
                let lo = from.as_ref().map_or(0, |f| f.1);
                if lo >= hi {
                    v.problems.push(format!(
                        "p{p}: generation {generation} committed checkpoint {hi} but restored from \
                         checkpoint {lo}"
                    ));
                }
                // Its changelog records say where it restored from: the same place.
                if let Some(&have) = gen_from.get(&(p, generation.as_str()))
                    && have != from_header(&from)
                {
                    v.problems.push(format!(
                        "p{p}: generation {generation}: its changelog says {H_FROM} = {have:?}, \
                         its commit chain says {:?}",
                        from_header(&from)
                    ));
                }
                chain.push(Link {
                    generation: generation.clone(),
                    lo,
                    hi,
                    from: from.clone(),
                });
                let Some((fg, fnum)) = from else { break };
                // The snapshot restored from is a committed one: it is on the changelog,
                // with a manifest, and its generation's records name its own `from`.
                if !snapshots.contains_key(&(p, fg.as_str(), fnum)) {
                    v.pending.push(format!(
                        "p{p}: generation {} restored from {}/{fnum}, which is not on the \
                         changelog (yet)",
                        short(&generation),
                        short(&fg)
                    ));
                    break;
                }
                if !manifests.contains(&(p, fg.as_str(), fnum)) {
                    v.pending.push(format!(
                        "p{p}: snapshot {}/{fnum} has no manifest record (yet)",
                        short(&fg)
                    ));
                }
                let its_from = gen_from.get(&(p, fg.as_str())).copied().unwrap_or("");
                match parse_from_header(its_from) {
                    Ok(f) => from = f,
                    Err(e) => {
                        v.problems
                            .push(format!("p{p}: changelog of {fg}: {H_FROM}: {e}"));
                        break;
                    }
                }
                generation = fg;
                hi = fnum;
            }
            let beyond: Vec<u64> = snapshots
                .keys()
                .filter(|(sp, g, n)| *sp == p && *g == mark.g.as_str() && *n > mark.n)
                .map(|(_, _, n)| *n)
                .collect::<BTreeSet<u64>>()
                .into_iter()
                .collect();
            if !beyond.is_empty() {
                v.beyond_marks.insert(p, beyond);
            }
            if v.pending.len() == pending_before
                && !manifests.contains(&(p, mark.g.as_str(), mark.n))
            {
                v.problems.push(format!(
                    "p{p}: the committed snapshot {}/{} has no record with key \"manifest\"",
                    mark.g, mark.n
                ));
            }
            v.chains.insert(p, chain);
        }

        // The output records.
        for r in &self.outputs {
            let Some(&p) = tasks.get(&r.tag.task) else {
                v.problems.push(format!(
                    "output {}@{}: task {:?} is not a partition of {}",
                    r.partition, r.offset, r.tag.task, self.input
                ));
                continue;
            };
            if let Some(kp) = key_partitions
                && let Some(&key_p) = kp.get(&r.row.0)
                && key_p != p
            {
                v.problems.push(format!(
                    "output {}@{}: key {} is in input partition {key_p}, but task {} emitted it",
                    r.partition, r.offset, r.row.0, r.tag.task
                ));
            }
            let chain = v.chains.get(&p).map(Vec::as_slice).unwrap_or_default();
            let link = chain.iter().position(|l| l.generation == r.tag.generation);
            if let Some(i) = link {
                let l = &chain[i];
                if r.tag.from != from_header(&l.from) {
                    v.problems.push(format!(
                        "output {}@{}: {H_FROM} {:?}, but generation {} restored from {:?}",
                        r.partition,
                        r.offset,
                        r.tag.from,
                        l.generation,
                        from_header(&l.from)
                    ));
                }
                if r.tag.checkpoint <= l.lo {
                    v.problems.push(format!(
                        "output {}@{}: generation {} wrote checkpoint {}, but it restored from \
                         checkpoint {}",
                        r.partition, r.offset, l.generation, r.tag.checkpoint, l.lo
                    ));
                }
                if r.tag.checkpoint <= l.hi && r.tag.checkpoint > l.lo {
                    if is_sentinel(&r.row.0) {
                        v.committed_sentinel += 1;
                    } else {
                        v.committed.push(r.row.clone());
                    }
                    v.committed_records.push((r.tag.clone(), r.row.clone()));
                    continue;
                }
            }
            *v.others
                .entry((
                    r.tag.task.clone(),
                    r.tag.generation.clone(),
                    r.tag.checkpoint,
                ))
                .or_default() += 1;
        }
        v.committed.sort_unstable();
        v
    }
}

/// Panics unless `got` equals `expected` as multisets, saying what is missing and what
/// is extra (duplicates included).
pub fn assert_rows_exact(got: &[Row], expected: &[Row], what: &str) {
    let mut got = got.to_vec();
    got.sort_unstable();
    if got == expected {
        return;
    }
    let mut count: BTreeMap<&Row, i64> = BTreeMap::new();
    for r in expected {
        *count.entry(r).or_default() += 1;
    }
    for r in &got {
        *count.entry(r).or_default() -= 1;
    }
    let missing: Vec<&Row> = count
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(r, _)| *r)
        .collect();
    let extra: Vec<(&Row, i64)> = count
        .iter()
        .filter(|(_, c)| **c < 0)
        .map(|(r, c)| (*r, -c))
        .collect();
    panic!(
        "{what}: the committed output differs from the oracle's: {} rows, expected {}; {} \
         missing (first: {:?}), {} extra or duplicated (first, with how many too many: {:?})",
        got.len(),
        expected.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
}

/// The visible records not on the chain, as `"<task> <gen> checkpoints a..b: n"`.
pub fn others_by_attempt(v: &Verdict) -> Vec<String> {
    let mut by: BTreeMap<(&str, &str), (u64, u64, usize)> = BTreeMap::new();
    for ((task, g, n), count) in &v.others {
        let e = by.entry((task, g)).or_insert((*n, *n, 0));
        e.0 = e.0.min(*n);
        e.1 = e.1.max(*n);
        e.2 += count;
    }
    by.iter()
        .map(|((t, g), (lo, hi, n))| format!("{t} {} checkpoints {lo}..={hi}: {n}", short(g)))
        .collect()
}

/// Panics unless the verdict shows exactly the oracle's rows committed, every chain
/// resolved and no contract violation; prints what the other visible records were.
pub fn assert_exactly_once(v: &Verdict, expected: &[Row], what: &str) {
    assert!(
        v.problems.is_empty(),
        "{what}: {} contract violations, first {:#?}\n{}",
        v.problems.len(),
        &v.problems[..v.problems.len().min(10)],
        v.summary()
    );
    assert!(
        v.pending.is_empty(),
        "{what}: the commit chain cannot be decided: {:?}\n{}",
        v.pending,
        v.summary()
    );
    assert_rows_exact(&v.committed, expected, what);
    eprintln!(
        "{what}: {} committed rows equal the oracle's; {} other visible records (aborted or \
         open transactions), by attempt: {:?}",
        v.committed.len(),
        v.others.values().sum::<usize>(),
        others_by_attempt(v)
    );
}

/// Polls the broker every [`POLL_EVERY`] until the committed output has (at least) as
/// many rows as `expected` and every chain is decided; fails after `patience`, or as
/// soon as an instance that should run has ended. Prints progress every 5 s.
pub fn wait_for_complete(
    watcher: &mut Watcher,
    instances: &mut [&mut Instance],
    expected: &[Row],
    key_partitions: Option<&BTreeMap<String, i32>>,
    patience: Duration,
    what: &str,
) -> Verdict {
    let began = Instant::now();
    let mut last_print = Instant::now();
    loop {
        watcher.poll();
        let v = watcher.verdict(key_partitions);
        if v.committed.len() >= expected.len() && v.pending.is_empty() {
            eprintln!(
                "{what}: complete after {:.1} s: {}",
                began.elapsed().as_secs_f64(),
                v.summary()
            );
            return v;
        }
        for i in instances.iter_mut() {
            if let Err(e) = i.check_running() {
                panic!("{what}: {e}\nbroker state: {}", v.summary());
            }
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "{what}: {:.0} s: {} of {} rows committed; {}",
                began.elapsed().as_secs_f64(),
                v.committed.len(),
                expected.len(),
                v.summary()
            );
        }
        if began.elapsed() > patience {
            let mut logs = String::new();
            for i in instances.iter() {
                let _ = write!(logs, "\n---- {} ----\n{}", i.name, i.log_tail(30));
            }
            let missing: Vec<&Row> = {
                let have: BTreeSet<&Row> = v.committed.iter().collect();
                expected
                    .iter()
                    .filter(|r| !have.contains(r))
                    .take(5)
                    .collect()
            };
            panic!(
                "{what}: after {patience:?}, {} of {} rows committed (missing e.g. {missing:?}); \
                 marks {:?}; snapshots on the changelog beyond the committed marks {:?}; other \
                 visible records {:?}; {}; problems {:?}{logs}",
                v.committed.len(),
                expected.len(),
                v.marks,
                v.beyond_marks,
                others_by_attempt(&v),
                v.summary(),
                &v.problems[..v.problems.len().min(5)]
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// The end of every test: waits until the committed output is complete, asserts it is
/// exactly `expected`, stops `instances` with SIGTERM (each must exit cleanly), asserts
/// again once the broker is quiet (the stop commits nothing more) and that the group's
/// committed input offsets are at `input_ends` (the input was read to its end, sentinels
/// included), and, against a broker that hides aborted transactions, that read_committed
/// shows exactly the committed records. Returns the final verdict.
#[allow(clippy::too_many_arguments)]
pub fn complete_and_stop(
    broker: &Broker,
    s: &Scenario,
    watcher: &mut Watcher,
    instances: &mut [&mut Instance],
    expected: &[Row],
    key_partitions: &BTreeMap<String, i32>,
    input_ends: &BTreeMap<i32, i64>,
    what: &str,
) -> Verdict {
    let v = wait_for_complete(
        watcher,
        instances,
        expected,
        Some(key_partitions),
        PATIENCE,
        what,
    );
    assert_exactly_once(&v, expected, &format!("{what} (running)"));
    for i in instances.iter_mut() {
        i.stop_cleanly();
    }
    let v = settle(watcher, Some(key_partitions));
    assert_exactly_once(&v, expected, &format!("{what} (after the graceful stop)"));
    let committed_inputs: BTreeMap<i32, i64> = v
        .committed_offsets
        .iter()
        .filter_map(|(p, (_, input))| input.map(|o| (*p, o)))
        .filter(|(p, _)| input_ends.contains_key(p))
        .collect();
    assert_eq!(
        &committed_inputs, input_ends,
        "{what}: the group's committed input offsets after the stop (left) are not the ends \
         of the input partitions (right)"
    );
    if broker.hides_aborted_transactions() {
        assert_read_committed_matches(broker, s, &v, what);
    }
    v
}

/// After every instance has stopped: polls until no new record has arrived for a
/// second and every chain is decided (at most `STOP_PATIENCE`), then returns the
/// verdict.
pub fn settle(watcher: &mut Watcher, key_partitions: Option<&BTreeMap<String, i32>>) -> Verdict {
    let began = Instant::now();
    let mut seen = (usize::MAX, usize::MAX);
    let mut quiet_since = Instant::now();
    loop {
        watcher.poll();
        let v = watcher.verdict(key_partitions);
        let now = (v.output_records, v.changelog_records);
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
        let quiet = quiet_since.elapsed() >= Duration::from_secs(1);
        if (quiet && v.pending.is_empty()) || began.elapsed() > STOP_PATIENCE {
            return v;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Against a broker that hides aborted transactions (`TIDEWATER_KAFKA_READ_COMMITTED=1`):
/// a read_committed consumer of the output topic, read to the end of every partition,
/// sees exactly the committed records of `v`.
pub fn assert_read_committed_matches(broker: &Broker, s: &Scenario, v: &Verdict, what: &str) {
    let consumer = broker.consumer(&[
        ("group.id", &unique_name("tidewater-test-rc")),
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_committed"),
        ("enable.partition.eof", "true"),
    ]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..s.output_partitions {
        tpl.add_partition_offset(&s.output, p, Offset::Beginning)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    consumer.assign(&tpl).unwrap_or_else(|e| panic!("{e}"));
    let mut at_end = BTreeSet::new();
    let mut read: Vec<(Tag, Row)> = Vec::new();
    let began = Instant::now();
    while at_end.len() < usize::try_from(s.output_partitions).unwrap_or(0) {
        assert!(
            began.elapsed() < PATIENCE,
            "{what}: read_committed did not reach the end of {} in {PATIENCE:?}",
            s.output
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("{what}: read_committed: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let tag = tag_of(&m).unwrap_or_else(|e| panic!("{what}: {e}"));
                let row = parse_row(&payload).unwrap_or_else(|e| panic!("{what}: {e}"));
                read.push((tag, row));
            }
        }
    }
    let mut want = v.committed_records.clone();
    want.sort();
    read.sort();
    assert!(
        read == want,
        "{what}: read_committed shows {} records, the commit chain {}; first differences: {:?}",
        read.len(),
        want.len(),
        read.iter().zip(want.iter()).find(|(a, b)| a != b)
    );
    eprintln!(
        "{what}: read_committed shows exactly the {} committed records",
        read.len()
    );
}
