//! Kafka → Kafka benchmark of the classic job (`cargo bench --bench kafka`).
//!
//! Starts the test broker (tansu, `tests/common/broker.rs`; or `TIDEWATER_KAFKA_BOOTSTRAP`),
//! produces the classic dataset keyed by key, as JSON messages (or as CSV lines,
//! `TIDEWATER_BENCH_KAFKA_FORMAT=csv`: [`input_format`]), into a topic of
//! `TIDEWATER_BENCH_KAFKA_PARTITIONS` (default 4) partitions, then measures:
//!
//! 1. **Throughput**: one `tidewater run` (release) with `-p P` (`TIDEWATER_BENCH_PARALLELISM`,
//!    default 2) over the backlog, HOP 2 s / 10 s SUM and COUNT by key into an
//!    exactly-once Kafka sink, from every task open (group join excluded) to the end of the
//!    run ([`throughput`] says how the end is judged): events per wall-clock second (and
//!    per core), and, over the same window, the CPU time (utime + stime) of the tidewater
//!    process and of the broker: events per tidewater CPU-second, per CPU-second of both.
//!    The job keyed by the grouping key ('key.fields' = key: each partition aggregated on
//!    its own), and with `TIDEWATER_BENCH_KAFKA_REPARTITION=1` also the same job without
//!    'key.fields', which repartitions through `<group>-<topic>-repartition`; both read the
//!    same input topic, each in its own group. `TIDEWATER_BENCH_KAFKA_PERF=<dir>` records a
//!    `perf` profile of tidewater over each window (see [`start_perf`]).
//!    The sink writes no headers unless `TIDEWATER_BENCH_KAFKA_HEADERS=1` (then
//!    'sink.transaction-headers' = 'true'); `TIDEWATER_BENCH_KAFKA_PROPS=k=v;...` adds
//!    librdkafka properties.
//! 2. **Client alone**: what the Kafka client alone costs per event of this job at full
//!    speed, with no engine in between: a bare consumer's messages per CPU-second of this process, and
//!    transactional producers' records per CPU-second for as many result-shaped records
//!    as the job wrote, with and without the four `tidewater.*` headers
//!    (`TIDEWATER_BENCH_KAFKA_CLIENT_ONLY=1` measures only this;
//!    `TIDEWATER_BENCH_KAFKA_CLIENT_PRODUCERS=n` sets how many producers,
//!    `TIDEWATER_BENCH_KAFKA_CLIENT_TXN=0` makes them plain ones, flushed every second).
//!    `TIDEWATER_BENCH_KAFKA_LOG=<filter>` sets the instances' `RUST_LOG` (keep `info`: the
//!    timing starts at the tasks' "opened" lines) and keeps their logs;
//!    `TIDEWATER_BENCH_KAFKA_FAILOVER=0` skips part 3; `TIDEWATER_BENCH_BIN=<path>` runs
//!    another build of `tidewater` (to compare two versions on the same broker), and
//!    `TIDEWATER_BENCH_KAFKA_AB=<path>` alternates the keyed run between two builds
//!    instead of parts 1–3 ([`compare`]).
//! 3. **Failover**: two instances with `-p 1` over a fresh backlog in a new group; one is
//!    SIGKILLed after its first commit; the time from the kill until the partitions it
//!    owned commit again under the survivor (session timeout 6 s).
//!
//! Each run's topics (output, changelog, repartition) are deleted once its output is
//! counted: the test broker keeps every record in memory, about 1 GiB per run.
//!
//! The broker runs on the same machine and takes CPU of its own: events/s is the whole
//! system on loopback; events per tidewater CPU-second is the engine alone. Output partitions = input partitions
//! with 'sink.partitioner' = 'fixed', so no two tasks' transactions share a partition:
//! the pinned tansu loses committed offsets of transactions that do
//! (docs/kafka-testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

#[path = "../tests/common/broker.rs"]
mod broker;
/// Part 2: the Kafka client alone.
#[path = "kafka/client.rs"]
mod client;
mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::{Broker, unique_name};
use client::{bare_consume, client_producers, transactional_produce};
use common::{T0, env_num};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const BIN: &str = env!("CARGO_BIN_EXE_tidewater");

/// The `tidewater` binary the instances run: this build's, or `TIDEWATER_BENCH_BIN`
/// (another build, for comparing two versions on the same broker and input).
fn bin() -> String {
    std::env::var("TIDEWATER_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Extra librdkafka properties to try, `TIDEWATER_BENCH_KAFKA_PROPS=name=value;name=value`:
/// given to the job (as `properties.*`) and to the client-alone producers.
fn extra_props() -> Vec<(String, String)> {
    std::env::var("TIDEWATER_BENCH_KAFKA_PROPS")
        .unwrap_or_default()
        .split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .expect("TIDEWATER_BENCH_KAFKA_PROPS: name=value;...");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The input messages' format, `TIDEWATER_BENCH_KAFKA_FORMAT` = `json` (the default:
/// `{"key":"k1","value":5,"ts":1700000000000}`) or `csv` (`k1,5,1700000000000`, the
/// workload's own lines). The output is JSON either way.
fn input_format() -> &'static str {
    match std::env::var("TIDEWATER_BENCH_KAFKA_FORMAT").as_deref() {
        Ok("csv") => "csv",
        Ok("json") | Err(_) => "json",
        Ok(other) => panic!("TIDEWATER_BENCH_KAFKA_FORMAT={other}: json or csv"),
    }
}

/// One input message, as CSV or JSON ([`input_format`]).
fn payload(csv: bool, key: &str, value: i64, ts: i64) -> String {
    if csv {
        format!("{key},{value},{ts}")
    } else {
        format!("{{\"key\":\"{key}\",\"value\":{value},\"ts\":{ts}}}")
    }
}

/// The classic job from `input` to `output`. `keyed`: the source declares the message key
/// as the grouping key ('key.format' / 'key.fields'), so each partition is aggregated on
/// its own; otherwise the job repartitions through `<group>-<input>-repartition`.
fn job(
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
    dir: &std::path::Path,
    keyed: bool,
) -> String {
    let mut key = if keyed {
        "\n  'key.format' = 'raw', 'key.fields' = 'key',".to_string()
    } else {
        String::new()
    };
    for (k, v) in extra_props() {
        key.push_str(&format!("\n  'properties.{k}' = '{v}',"));
    }
    // `TIDEWATER_BENCH_KAFKA_HEADERS=1`: the sink tags every record with its transaction.
    let tags = if std::env::var("TIDEWATER_BENCH_KAFKA_HEADERS").is_ok_and(|v| v == "1") {
        " 'sink.transaction-headers' = 'true',"
    } else {
        ""
    };
    format!(
        "SET 'execution.checkpointing.interval' = '1 s';
CREATE TABLE events (key STRING, `value` BIGINT, ts BIGINT, event_time AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND)
WITH ('connector' = 'kafka', 'topic' = '{input}', 'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = '{group}', 'scan.startup.mode' = 'earliest-offset', 'format' = '{format}',{key}
  'properties.session.timeout.ms' = '6000', 'properties.heartbeat.interval.ms' = '500',
  'dead-letter.path' = '{dead}');
CREATE TABLE results (key STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), total BIGINT, cnt BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{output}', 'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{group}-tx',{tags}
  'sink.partitioner' = 'fixed');
INSERT INTO results SELECT key, window_start, window_end, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(event_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;",
        dead = dir.join(format!("{group}-dead.jsonl")).display(),
        format = input_format(),
    )
}

/// Produces `events` classic events (Zipf keys, 10 % late by < 2 s) and one far-future
/// sentinel per partition (so that every window fires).
fn produce(broker: &Broker, topic: &str, partitions: i32, events: u64) {
    let producer: BaseProducer = broker
        .config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let keys = 10_000usize;
    let cdf: Vec<f64> = {
        let w: Vec<f64> = (0..keys).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let total: f64 = w.iter().sum();
        w.iter()
            .scan(0.0, |acc, x| {
                *acc += x / total;
                Some(*acc)
            })
            .collect()
    };
    let mut rng = StdRng::seed_from_u64(1);
    let mut t = T0;
    // Read once: the environment is not looked up per event.
    let csv = input_format() == "csv";
    let started = Instant::now();
    let send = |key: &str, payload: &str, partition: Option<i32>| loop {
        let mut r = BaseRecord::<str, str>::to(topic).key(key).payload(payload);
        if let Some(p) = partition {
            r = r.partition(p);
        }
        match producer.send(r) {
            Ok(()) => break,
            Err(_) => {
                producer.poll(Duration::from_millis(5));
            }
        }
    };
    for _ in 0..events {
        t += rng.random_range(0..=2);
        let ts = if rng.random_bool(0.1) {
            t - rng.random_range(0..2000)
        } else {
            t
        };
        let u: f64 = rng.random();
        let k = cdf.partition_point(|c| *c < u).min(keys - 1);
        let key = format!("k{k}");
        let v: i64 = rng.random_range(0..=1000);
        send(&key, &payload(csv, &key, v, ts), None);
    }
    for p in 0..partitions {
        let key = format!("__end{p}");
        let ts = t + 60_000;
        send(&key, &payload(csv, &key, 0, ts), Some(p));
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {events} events in {secs:.1} s ({:.0} events/s)",
        events as f64 / secs
    );
}

/// The group's committed input offsets (the end of input is counted by the producer:
/// tansu's high watermarks are wrong).
fn committed(reader: &BaseConsumer, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    committed_in(reader, &[(topic, partitions)])
        .into_iter()
        .map(|((_, p), o)| (p, o))
        .collect()
}

/// The group's committed offsets of several topics, in one request.
fn committed_in(reader: &BaseConsumer, topics: &[(&str, i32)]) -> BTreeMap<(String, i32), i64> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition(topic, p);
        }
    }
    let Ok(c) = reader.committed_offsets(tpl, Duration::from_secs(10)) else {
        return BTreeMap::new();
    };
    c.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

/// Tasks opened so far, by the instance's log.
fn opened(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(" opened")).count())
        .unwrap_or(0)
}

fn spawn(bin: &str, job: &std::path::Path, p: usize, log: &std::path::Path) -> Child {
    let mut cmd = Command::new(bin);
    // `TIDEWATER_BENCH_KAFKA_LOG=<filter>`: the instances log at that level (RUST_LOG).
    match std::env::var("TIDEWATER_BENCH_KAFKA_LOG") {
        Ok(filter) => cmd.env("RUST_LOG", filter),
        Err(_) => cmd.env_remove("RUST_LOG"),
    };
    cmd.args([
        "run",
        job.to_str().unwrap(),
        "-p",
        &p.to_string(),
        "--http",
        "off",
    ])
    .env("NO_COLOR", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap())
    .spawn()
    .unwrap()
}

/// How long the committed offsets of a repartitioning job must stand still, once every
/// input offset is committed, before the run is judged over (its window tasks commit
/// every second while they have anything to apply).
const STABLE: Duration = Duration::from_secs(5);

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times: `getconf CLK_TCK`, or 100
/// (assumed, the second value `true`) when it cannot be read.
fn clock_ticks() -> (f64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .map_or((100.0, true), |t| (t, false))
}

/// CPU time a process has used so far (utime + stime of all its threads, in clock ticks),
/// or `None` when it cannot be read.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parentheses): field 3 (state)
    // first, so utime (field 14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// A moment of a run, with the CPU ticks used so far by tidewater, the broker and this
/// benchmark process (its offset polling).
#[derive(Debug, Clone, Copy)]
struct Moment {
    at: Instant,
    tidewater: Option<u64>,
    broker: Option<u64>,
    bench: Option<u64>,
}

impl Moment {
    fn now(tidewater: u32, broker: Option<u32>) -> Moment {
        Moment {
            at: Instant::now(),
            tidewater: cpu_ticks(tidewater),
            broker: broker.and_then(cpu_ticks),
            bench: cpu_ticks(std::process::id()),
        }
    }
}

/// What one throughput run measured.
#[derive(Debug)]
struct Run {
    /// From every task open to the end.
    secs: f64,
    /// From process start to the end.
    since_start: f64,
    /// CPU seconds in the same window.
    tidewater_cpu: Option<f64>,
    broker_cpu: Option<f64>,
    bench_cpu: Option<f64>,
    /// Records in the output topic (read_committed) after the run.
    output: u64,
    /// Load average (1 min) at the first and the last moment.
    load: (String, String),
}

/// `perf record` of the tidewater process over the measured window, when
/// `TIDEWATER_BENCH_KAFKA_PERF` names a directory (`<dir>/<case>.perf.data`; extra
/// arguments in `TIDEWATER_BENCH_KAFKA_PERF_ARGS`, default `-F 999 -g`). perf takes CPU of
/// its own: figures of a profiled run are not throughput figures.
fn start_perf(pid: u32, case: &str) -> Option<Child> {
    let dir = std::env::var_os("TIDEWATER_BENCH_KAFKA_PERF")?;
    let args = std::env::var("TIDEWATER_BENCH_KAFKA_PERF_ARGS")
        .unwrap_or_else(|_| "-F 999 -g".to_string());
    let out = std::path::Path::new(&dir).join(format!("{case}.perf.data"));
    eprintln!("perf record {args} -p {pid} -o {}", out.display());
    Command::new("perf")
        .arg("record")
        .args(args.split_whitespace())
        .args(["-p", &pid.to_string(), "-o", out.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .ok()
}

/// Records in `topic` as a read_committed consumer sees them: read from the beginning
/// until nothing more arrives for 3 s.
fn count_output(broker: &Broker, topic: &str, partitions: i32) -> u64 {
    let consumer: BaseConsumer = broker.consumer(&[
        ("group.id", &unique_name("bench-count")),
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_committed"),
    ]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = 0;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            got += 1;
            quiet_since = Instant::now();
        }
    }
    got
}

/// One `tidewater run -p p` of the classic job over the backlog of `input` (`total`
/// messages), in a new group into a new output topic. The window starts when every task
/// has opened (group join excluded). Keyed: it ends at the first poll that finds every
/// input offset committed (each task commits its output with its offsets). Repartitioning:
/// the input tasks commit the input offsets, the window tasks the repartition topic's, so
/// it ends at the last change of either, once every input offset is committed and nothing
/// has changed for [`STABLE`]; that the window tasks commit nothing after it is checked
/// once the process has stopped.
fn throughput(bin: &str, backlog: &Backlog<'_>, keyed: bool) -> Run {
    let Backlog {
        broker,
        dir,
        input,
        partitions,
        total,
        p,
    } = *backlog;
    let case = if keyed { "keyed" } else { "repartition" };
    let output = unique_name(&format!("bench-out-{case}"));
    broker.create_topic(&output, partitions);
    let group = unique_name(&format!("bench-{case}"));
    let job_path = dir.join(format!("{case}.sql"));
    std::fs::write(
        &job_path,
        job(broker.bootstrap(), input, &output, &group, dir, keyed),
    )
    .unwrap();
    // Input tasks, and for a repartitioning job as many window tasks.
    let tasks = if keyed { partitions } else { 2 * partitions } as usize;
    let data_topic = format!("{group}-{input}-repartition");
    let data_partitions = if keyed { 0 } else { partitions * partitions };
    let topics = [(input, partitions), (data_topic.as_str(), data_partitions)];
    let sums = |c: &BTreeMap<(String, i32), i64>| {
        let of = |topic: &str| -> i64 {
            c.iter()
                .filter(|((t, _), _)| t == topic)
                .map(|(_, o)| *o)
                .sum()
        };
        (of(input), of(&data_topic))
    };
    let reader: BaseConsumer = broker.consumer(&[("group.id", &group)]);
    let log = dir.join(format!("{case}.log"));
    let started = Instant::now();
    let mut child = spawn(bin, &job_path, p, &log);
    let pid = child.id();
    let mut first: Option<Moment> = None;
    let mut perf = None;
    let mut load_first = String::new();
    let mut seen = (0, 0);
    let mut moved: Option<Moment> = None;
    let end = loop {
        std::thread::sleep(Duration::from_millis(20));
        if first.is_none() && opened(&log) >= tasks {
            first = Some(Moment::now(pid, broker.pid()));
            load_first = load_average();
            perf = start_perf(pid, case);
        }
        let now_committed = sums(&committed_in(&reader, &topics));
        let now = Moment::now(pid, broker.pid());
        if now_committed != seen {
            seen = now_committed;
            moved = Some(now);
        }
        if seen.0 >= total {
            if keyed {
                break now;
            }
            if let Some(m) = moved
                && now.at.duration_since(m.at) >= STABLE
            {
                break m;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{case} run did not finish: {} of {total} input offsets committed",
            seen.0
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "tidewater exited early; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let load = (load_first, load_average());
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let after = sums(&committed_in(&reader, &topics));
    assert_eq!(
        after, seen,
        "{case}: offsets were committed after the judged end (input, repartition)"
    );
    let first = first.unwrap_or(Moment {
        at: started,
        tidewater: None,
        broker: None,
        bench: None,
    });
    let (ticks, _) = clock_ticks();
    let cpu = |a: Option<u64>, b: Option<u64>| Some((b? - a?) as f64 / ticks);
    let output_records = count_output(broker, &output, partitions);
    // The run's topics go: the test broker keeps every record in memory, and a dozen
    // runs (8.4 M results each) filled 24 GiB until the kernel killed it.
    let changelog = format!("{group}-{input}-changelog");
    let mut done = vec![output.as_str(), changelog.as_str()];
    if !keyed {
        done.push(&data_topic);
    }
    broker.delete_topics(&done);
    Run {
        secs: end.at.duration_since(first.at).as_secs_f64(),
        since_start: end.at.duration_since(started).as_secs_f64(),
        tidewater_cpu: cpu(first.tidewater, end.tidewater),
        broker_cpu: cpu(first.broker, end.broker),
        bench_cpu: cpu(first.bench, end.bench),
        output: output_records,
        load,
    }
}

/// The input every throughput run reads, and where and how wide they run.
#[derive(Clone, Copy)]
struct Backlog<'a> {
    broker: &'a Broker,
    dir: &'a std::path::Path,
    input: &'a str,
    partitions: i32,
    /// Messages in `input` (events and sentinels).
    total: i64,
    /// Group members per instance (`-p`).
    p: usize,
}

/// `TIDEWATER_BENCH_KAFKA_AB=<other tidewater>`: the keyed run alternates between this
/// build (or `TIDEWATER_BENCH_BIN`) and the other one, `TIDEWATER_BENCH_KAFKA_ROUNDS`
/// (default 3) times each, on the same input; prints every run and the medians. Runs of
/// one binary vary by up to ±25 % on a shared VM: pairs taken close together compare
/// two builds better than separate invocations.
fn compare(other: &str, backlog: &Backlog<'_>) {
    let rounds: usize = env_num("TIDEWATER_BENCH_KAFKA_ROUNDS", 3);
    let builds = [("A", bin()), ("B", other.to_string())];
    let mut per_cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut wall: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    println!("A = {}\nB = {}", builds[0].1, builds[1].1);
    println!("| round | build | events/s wall | events per tidewater CPU-second | load average |");
    println!("|---|---|---|---|---|");
    for round in 0..rounds {
        // Each round starts with the other build, so neither always runs second.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (name, bin) = &builds[i];
            let r = throughput(bin, backlog, true);
            let rate = backlog.total as f64 / r.secs;
            let cpu = r
                .tidewater_cpu
                .map_or(f64::NAN, |c| backlog.total as f64 / c);
            wall[i].push(rate);
            per_cpu[i].push(cpu);
            println!(
                "| {} | {name} | {rate:.0} | {cpu:.0} | {} → {} |",
                round + 1,
                r.load.0,
                r.load.1
            );
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (i, (name, _)) in builds.iter().enumerate() {
        println!(
            "{name}: median {:.0} events/s wall, {:.0} events per tidewater CPU-second",
            median(&wall[i]),
            median(&per_cpu[i])
        );
    }
    let better = (0..rounds)
        .filter(|&k| per_cpu[0][k] > per_cpu[1][k])
        .count();
    println!("A did more per CPU-second than B in {better} of {rounds} rounds");
}

fn main() {
    let events: u64 = env_num("TIDEWATER_BENCH_KAFKA_EVENTS", 2_000_000);
    let partitions: i32 = env_num("TIDEWATER_BENCH_KAFKA_PARTITIONS", 4);
    let p: usize = env_num("TIDEWATER_BENCH_PARALLELISM", 2);
    let repartition = std::env::var("TIDEWATER_BENCH_KAFKA_REPARTITION").is_ok_and(|v| v == "1");
    let Some(broker) = Broker::start() else {
        return;
    };
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("TIDEWATER_BENCH_KAFKA_LOG").is_some() {
        dir.disable_cleanup(true);
        println!("instance logs kept in {}", dir.path().display());
    }

    // 1. Throughput over a backlog, read by each case in its own group.
    let input = unique_name("bench-in");
    broker.create_topic(&input, partitions);
    produce(&broker, &input, partitions, events);
    let total = events as i64 + i64::from(partitions);
    let backlog = Backlog {
        broker: &broker,
        dir: dir.path(),
        input: &input,
        partitions,
        total,
        p,
    };
    if let Ok(other) = std::env::var("TIDEWATER_BENCH_KAFKA_AB") {
        return compare(&other, &backlog);
    }
    let (ceiling, consumed_per_cpu) = bare_consume(&broker, &input, partitions, total);
    // `TIDEWATER_BENCH_KAFKA_CLIENT_ONLY=1`: only the client alone (below), for profiling it.
    let client_only = std::env::var("TIDEWATER_BENCH_KAFKA_CLIENT_ONLY").is_ok_and(|v| v == "1");
    let run = |keyed| throughput(&bin(), &backlog, keyed);
    let mut runs = Vec::new();
    if !client_only {
        runs.push(("keyed by the grouping key", run(true)));
    }
    if repartition {
        runs.push(("repartitioning (no 'key.fields')", run(false)));
    }
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(p);
    let (ticks, assumed) = clock_ticks();
    println!(
        "CPU time: utime+stime from /proc/<pid>/stat at {ticks} ticks/s{}, over the same window as events/s",
        if assumed {
            " (assumed: getconf CLK_TCK failed)"
        } else {
            " (getconf CLK_TCK)"
        }
    );
    println!("| case | figure |");
    println!("|---|---|");
    println!(
        "| one bare consumer reading the input with the job's fetch settings ({total} messages, no processing) | {ceiling:.0} messages/s |"
    );
    let fmt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("n/a".to_string(), f);
    for (name, r) in &runs {
        let rate = total as f64 / r.secs;
        let both = match (r.tidewater_cpu, r.broker_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        println!(
            "| Kafka → Kafka {name}, {events} events, {partitions} partitions, -p {p} | {rate:.0} events/s wall ({:.0} per core): {:.1} s from every task open to the end (includes up to one 1 s commit interval); {:.1} s from process start; {} output records; load average {} → {} |",
            rate / cores as f64,
            r.secs,
            r.since_start,
            r.output,
            r.load.0,
            r.load.1,
        );
        println!(
            "| … CPU, {name} | tidewater {} CPU-s ({}) = **{} events per tidewater CPU-second**; broker {} CPU-s; **{} events per CPU-second of both**; this benchmark's polling {} CPU-s |",
            fmt(r.tidewater_cpu, &|c| format!("{c:.2}")),
            fmt(r.tidewater_cpu, &|c| format!("{:.2} cores", c / r.secs)),
            fmt(r.tidewater_cpu, &|c| format!("{:.0}", total as f64 / c)),
            fmt(r.broker_cpu, &|c| format!("{c:.2}")),
            fmt(both, &|c| format!("{:.0}", total as f64 / c)),
            fmt(r.bench_cpu, &|c| format!("{c:.2}")),
        );
    }

    // The Kafka client alone for this job: what consuming one message and producing the
    // job's output records cost at full speed, with nothing in between. Not a floor: the
    // client costs less per record when it waits on the broker and batches more.
    // The job's results per event: 1.41 on the classic input.
    let outputs = runs
        .first()
        .map_or((total as f64 * 1.41) as u64, |r| r.1.output);
    let per_event = outputs as f64 / total as f64;
    let bare = transactional_produce(&broker, partitions, outputs, false);
    let tagged = transactional_produce(&broker, partitions, outputs, true);
    let alone = 1.0 / (1.0 / consumed_per_cpu + per_event / tagged);
    println!(
        "| client alone: one consumer reading the input, no processing | {consumed_per_cpu:.0} messages per CPU-second |"
    );
    let (n, txn) = client_producers(partitions);
    let (kind, every) = if txn {
        ("transactional", "1 s transactions")
    } else {
        ("plain", "flushed every second")
    };
    println!(
        "| client alone: {outputs} result-shaped records, {n} {kind} producers, `linger.ms` 1000, {every}, no headers | {bare:.0} records per CPU-second |"
    );
    println!(
        "| … the same with the job's four `tidewater.*` headers on each record | {tagged:.0} records per CPU-second |"
    );
    println!(
        "| **client alone for the job**: one message consumed and {per_event:.2} records produced (with headers) per event | **{alone:.0} events per CPU-second** (without headers {:.0}) |",
        1.0 / (1.0 / consumed_per_cpu + per_event / bare)
    );

    // `TIDEWATER_BENCH_KAFKA_FAILOVER=0`: throughput only, for comparing settings.
    if client_only || std::env::var("TIDEWATER_BENCH_KAFKA_FAILOVER").is_ok_and(|v| v == "0") {
        return;
    }

    // 2. Failover, with input arriving all the time (5 000 events/s).
    let input = unique_name("failover-in");
    let output = unique_name("failover-out");
    broker.create_topic(&input, partitions);
    broker.create_topic(&output, partitions);
    let group = unique_name("failover-group");
    let job_path = dir.path().join("failover.sql");
    std::fs::write(
        &job_path,
        job(
            broker.bootstrap(),
            &input,
            &output,
            &group,
            dir.path(),
            true,
        ),
    )
    .unwrap();
    let reader: BaseConsumer = broker.consumer(&[("group.id", &group)]);
    let feeding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let feeding = feeding.clone();
        let producer: BaseProducer = broker.config().set("linger.ms", "5").create().unwrap();
        let input = input.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n: i64 = 0;
            while feeding.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..50 {
                    let key = format!("k{}", n % 1000);
                    let payload =
                        format!("{{\"key\":\"{key}\",\"value\":1,\"ts\":{}}}", T0 + n / 5);
                    let _ = producer.send(BaseRecord::to(&input).key(&key).payload(&payload));
                    n += 1;
                }
                producer.poll(Duration::ZERO);
                let due = Duration::from_micros((n * 200) as u64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            producer.flush(Duration::from_secs(30)).unwrap();
        })
    };
    let mut a = spawn(&bin(), &job_path, 1, &dir.path().join("a.log"));
    let mut b = spawn(&bin(), &job_path, 1, &dir.path().join("b.log"));
    // Wait until every partition has committed once, then kill a.
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if committed(&reader, &input, partitions).len() == partitions as usize {
            break;
        }
    }
    let a_log = dir.path().join("a.log");
    let owned_by_a: Vec<i32> = std::fs::read_to_string(&a_log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("opened"))
        .filter_map(|l| {
            let at = l.find(&format!("task {input}/"))? + format!("task {input}/").len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let before = committed(&reader, &input, partitions);
    let killed = Instant::now();
    a.kill().unwrap();
    let _ = a.wait();
    let mut moved = BTreeMap::new();
    while moved.len() < owned_by_a.len() && killed.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
        let c = committed(&reader, &input, partitions);
        for p in &owned_by_a {
            if !moved.contains_key(p) && c.get(p) > before.get(p) {
                moved.insert(*p, killed.elapsed());
            }
        }
    }
    feeding.store(false, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status();
    let _ = b.wait();
    let worst = moved.values().max().copied().unwrap_or_default();
    println!(
        "| failover: SIGKILL of 1 of 2 instances (-p 1, session.timeout.ms 6000) | partitions {owned_by_a:?} committed again under the survivor after {:.2} s (worst of {}) |",
        worst.as_secs_f64(),
        moved.len()
    );
    let b_log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    for l in b_log.lines().filter(|l| l.contains("restored checkpoint")) {
        println!("  survivor: {}", l.split("INFO").last().unwrap_or(l).trim());
    }
}
