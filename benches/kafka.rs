//! Kafka → Kafka benchmark of the classic job (`cargo bench --bench kafka`).
//!
//! Starts the test broker (tansu, `tests/common/broker.rs`; or `TIDEWATER_KAFKA_BOOTSTRAP`),
//! produces the classic dataset as JSON messages keyed by key into a topic of
//! `TIDEWATER_BENCH_KAFKA_PARTITIONS` (default 4) partitions, then measures:
//!
//! 1. **Throughput**: one `tidewater run` (release) with `-p P` (`TIDEWATER_BENCH_PARALLELISM`,
//!    default 2) over the backlog, HOP 2 s / 10 s SUM and COUNT by key into an
//!    exactly-once Kafka sink. Events per second between the first and the last commit
//!    of the group's input offsets (group join excluded), and per core.
//! 2. **Failover**: two instances with `-p 1` over a fresh backlog in a new group; one is
//!    SIGKILLed after its first commit; the time from the kill until the partitions it
//!    owned commit again under the survivor (session timeout 6 s).
//!
//! The broker runs on the same machine and takes CPU of its own: the figures are the
//! whole system on loopback, not the engine alone. Output partitions = input partitions
//! with 'sink.partitioner' = 'fixed', so no two tasks' transactions share a partition:
//! the pinned tansu loses committed offsets of transactions that do
//! (docs/kafka-testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

#[path = "../tests/common/broker.rs"]
mod broker;
mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::{Broker, unique_name};
use common::{T0, env_num};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const BIN: &str = env!("CARGO_BIN_EXE_tidewater");

fn job(bootstrap: &str, input: &str, output: &str, group: &str, dir: &std::path::Path) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '1 s';
CREATE TABLE events (key STRING, `value` BIGINT, ts BIGINT, event_time AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND)
WITH ('connector' = 'kafka', 'topic' = '{input}', 'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = '{group}', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json',
  'key.format' = 'raw', 'key.fields' = 'key',
  'properties.session.timeout.ms' = '6000', 'properties.heartbeat.interval.ms' = '500',
  'dead-letter.path' = '{dead}');
CREATE TABLE results (key STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), total BIGINT, cnt BIGINT)
WITH ('connector' = 'kafka', 'topic' = '{output}', 'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{group}-tx',
  'sink.partitioner' = 'fixed');
INSERT INTO results SELECT key, window_start, window_end, SUM(`value`), COUNT(*)
FROM TABLE(HOP(TABLE events, DESCRIPTOR(event_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, key;",
        dead = dir.join(format!("{group}-dead.jsonl")).display()
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
        send(
            &key,
            &format!("{{\"key\":\"{key}\",\"value\":{v},\"ts\":{ts}}}"),
            None,
        );
    }
    for p in 0..partitions {
        let key = format!("__end{p}");
        let ts = t + 60_000;
        send(
            &key,
            &format!("{{\"key\":\"{key}\",\"value\":0,\"ts\":{ts}}}"),
            Some(p),
        );
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
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let Ok(c) = reader.committed_offsets(tpl, Duration::from_secs(10)) else {
        return BTreeMap::new();
    };
    c.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Messages per second one consumer doing nothing else reads from the broker: what
/// the broker can deliver on this machine.
fn bare_consume(broker: &Broker, topic: &str, partitions: i32, total: i64) -> f64 {
    let consumer: BaseConsumer = broker.consumer(&[
        ("group.id", &unique_name("bench-bare")),
        ("enable.auto.commit", "false"),
    ]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut got = 0;
    while got < total {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            got += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "bare consumer: {got} of {total}"
        );
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Tasks opened so far, by the instance's log.
fn opened(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(" opened")).count())
        .unwrap_or(0)
}

fn spawn(job: &std::path::Path, p: usize, log: &std::path::Path) -> Child {
    Command::new(BIN)
        .args([
            "run",
            job.to_str().unwrap(),
            "-p",
            &p.to_string(),
            "--http",
            "off",
        ])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn main() {
    let events: u64 = env_num("TIDEWATER_BENCH_KAFKA_EVENTS", 2_000_000);
    let partitions: i32 = env_num("TIDEWATER_BENCH_KAFKA_PARTITIONS", 4);
    let p: usize = env_num("TIDEWATER_BENCH_PARALLELISM", 2);
    let Some(broker) = Broker::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // 1. Throughput over a backlog.
    let input = unique_name("bench-in");
    let output = unique_name("bench-out");
    broker.create_topic(&input, partitions);
    broker.create_topic(&output, partitions);
    produce(&broker, &input, partitions, events);
    let total = events as i64 + i64::from(partitions);
    let ceiling = bare_consume(&broker, &input, partitions, total);
    let group = unique_name("bench-group");
    let job_path = dir.path().join("job.sql");
    std::fs::write(
        &job_path,
        job(broker.bootstrap(), &input, &output, &group, dir.path()),
    )
    .unwrap();
    let reader: BaseConsumer = broker.consumer(&[("group.id", &group)]);
    let started = Instant::now();
    let mut child = spawn(&job_path, p, &dir.path().join("throughput.log"));
    let log = dir.path().join("throughput.log");
    let mut first: Option<Instant> = None;
    let end = loop {
        std::thread::sleep(Duration::from_millis(20));
        if first.is_none() && opened(&log) >= partitions as usize {
            first = Some(Instant::now());
        }
        let sum: i64 = committed(&reader, &input, partitions).values().sum();
        if sum >= total {
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "throughput run did not finish: {sum} of {total} committed"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "tidewater exited early"
        );
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let t0 = first.unwrap_or(started);
    let secs = end.duration_since(t0).as_secs_f64();
    let rate = total as f64 / secs;
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(p);
    println!("| case | figure |");
    println!("|---|---|");
    println!(
        "| broker ceiling: one bare consumer reading the input ({total} messages, no processing) | {ceiling:.0} messages/s |"
    );
    println!(
        "| Kafka → Kafka, {events} events, {partitions} partitions, -p {p} | {rate:.0} events/s ({:.0} per core): {secs:.1} s from every task open to the last commit (includes up to one 1 s commit interval); {:.1} s from process start |",
        rate / cores as f64,
        end.duration_since(started).as_secs_f64()
    );

    // 2. Failover, with input arriving all the time (5 000 events/s).
    let input = unique_name("failover-in");
    let output = unique_name("failover-out");
    broker.create_topic(&input, partitions);
    broker.create_topic(&output, partitions);
    let group = unique_name("failover-group");
    let job_path = dir.path().join("failover.sql");
    std::fs::write(
        &job_path,
        job(broker.bootstrap(), &input, &output, &group, dir.path()),
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
    let mut a = spawn(&job_path, 1, &dir.path().join("a.log"));
    let mut b = spawn(&job_path, 1, &dir.path().join("b.log"));
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
