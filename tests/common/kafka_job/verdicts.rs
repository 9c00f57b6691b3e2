//! The assertions of the Kafka tests: exactly once, waiting for completeness, the stop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::broker::{Broker, unique_name};
use super::*;

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
        .input_offsets
        .iter()
        .map(|(p, o)| (*p, *o))
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
