//! Issue 4 end to end: the classic job (HOP 2 s / 10 s, SUM and COUNT by key) reading
//! a Kafka topic and writing another one exactly-once, run by the real binary against
//! the test broker (tests/common/broker.rs, docs/kafka-testing.md).
//!
//! Which output records are committed is decided from broker state alone, because the
//! pinned tansu shows records of aborted transactions even to read_committed consumers:
//! the group's committed offset of each changelog partition points at the committed
//! snapshot's manifest, whose headers name the generation, the checkpoint and the mark
//! that generation restored from; together they give the chain of committed
//! (generation, checkpoint) ranges of every input partition (tests/common/kafka_job.rs).
//! The committed output must equal the naive oracle's rows, each window result once;
//! every other visible record belongs to an attempt that is not on the chain (they are
//! counted and printed). Against a broker that hides aborted transactions
//! (`TIDEWATER_KAFKA_READ_COMMITTED=1`), a read_committed consumer must see exactly the
//! committed records too.
//!
//! The input is unbounded, so after the dataset every partition gets one sentinel event
//! a minute of event time later (key `__flush_p<N>`): every real window fires, and the
//! sentinels' own windows are left out of the comparison.
//!
//! The tests: three instances, one SIGKILLed and a fourth joining; a partition that
//! never gets data; malformed messages into the dead-letter file; an instance frozen
//! (SIGSTOP) until its partitions move, then woken as a zombie.
//! `cargo test --test kafka_scaleout -- --nocapture` shows the progress, the recovery
//! times and how many aborted records were visible; `TIDEWATER_KAFKA_EVENTS` sets the
//! dataset size of the multi-instance tests, `TIDEWATER_TEST_RUST_LOG` the instances'
//! `RUST_LOG`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "common/kafka_job.rs"]
mod kafka_job;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_job::broker::Broker;
use kafka_job::classic;
use kafka_job::{
    InputProducer, Instance, Mark, Scenario, Watcher, complete_and_stop, env_or, expected_rows,
    observe_takeover, owned_tasks, print_opened, produce_paced, sentinel_ts, short,
    wait_for_kill_moment, wait_until,
};

/// One group member per instance (an instance runs one per unit of parallelism): three
/// instances then split the 4 partitions 2/1/1, so the one killed surely owns some, and
/// a fourth joining two survivors gets a share.
const ONE_MEMBER: [&str; 2] = ["-p", "1"];

/// The input partition of key `k<i>` when a test places keys itself: `i % partitions`.
fn key_index_partition(partitions: i32) -> impl Fn(&str) -> i32 {
    move |key: &str| {
        let i: i32 = key
            .strip_prefix('k')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("key {key:?} is not k<i>"));
        i % partitions
    }
}

#[test]
fn three_instances_one_killed_fourth_joins_exactly_once() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let n_events = env_or("TIDEWATER_KAFKA_EVENTS", 40_000);
    let s = Scenario::new(&broker, "scaleout", 4, 4, &[]);
    let events = classic::classic_events(n_events, 200, 4);
    let expected = expected_rows(&events);
    eprintln!(
        "{n_events} events over 200 keys, {} expected rows; input {}, group {}",
        expected.len(),
        s.input,
        s.group
    );

    // The input arrives while the instances run, paced over 30 s, so that the kill and
    // the fourth instance's join fall in mid-stream.
    let producing = produce_paced(&s, &events, Duration::from_secs(30));

    let mut watcher = Watcher::new(&broker, &s);
    let mut a = s.spawn("a", &ONE_MEMBER);
    let mut b = s.spawn("b", &ONE_MEMBER);
    let mut c = s.spawn("c", &ONE_MEMBER);

    // Every partition has committed, and has committed again since: the group is at work;
    // and, as far as its log tells, a holds a partition (given up on after 30 s: the kill
    // then still tests a member leaving).
    let a_log = a.stderr.clone();
    let at_kill = wait_for_kill_moment(
        &mut watcher,
        &mut [&mut a, &mut b, &mut c],
        &a_log,
        s.input_partitions,
    );
    let marks_at_kill: BTreeMap<i32, Mark> = at_kill.marks.clone();
    eprintln!(
        "killing a, which holds {:?}; {} rows committed so far; marks at the kill: {:?}",
        owned_tasks(&a.log()),
        at_kill.committed.len(),
        marks_at_kill
            .iter()
            .map(|(p, m)| format!("p{p}: {}/{}", short(&m.g), m.n))
            .collect::<Vec<_>>()
    );
    let killed_at = Instant::now();
    a.kill();

    // Which partitions were a's (their generation never commits again) and how long
    // until another instance committed them, and their output. Observed, not asserted.
    let a_partitions = observe_takeover(
        &mut watcher,
        &s,
        &mut [&mut b, &mut c],
        &marks_at_kill,
        killed_at,
    );
    if a_partitions.is_empty() {
        eprintln!("NOTE: the killed instance had no partition at the time of the kill");
    }

    let mut d = s.spawn("d", &ONE_MEMBER);
    let (key_partitions, input_ends) = producing.join().expect("producer thread");
    let per_partition: BTreeMap<i32, usize> =
        key_partitions.values().fold(BTreeMap::new(), |mut m, p| {
            *m.entry(*p).or_default() += 1;
            m
        });
    eprintln!("keys per input partition: {per_partition:?}; input ends {input_ends:?}");
    assert_eq!(
        per_partition.keys().copied().collect::<BTreeSet<i32>>(),
        (0..4).collect(),
        "the dataset's keys do not cover all 4 partitions"
    );

    let v = complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut b, &mut c, &mut d],
        &expected,
        &key_partitions,
        &input_ends,
        "scale-out",
    );
    let generations: BTreeMap<i32, usize> = v.chains.iter().map(|(p, c)| (*p, c.len())).collect();
    eprintln!("committed generations per partition: {generations:?}");
    print_opened(&[&a, &b, &c, &d]);
}

#[test]
fn idle_partition_does_not_stall_windows() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let s = Scenario::new(&broker, "idle", 4, 4, &[]);
    let events = classic::classic_events(12_000, 60, 5);
    let expected = expected_rows(&events);
    // Partitions 0..2 only; partition 3 gets nothing at all, not even a sentinel.
    let producer = InputProducer::new(&s.bootstrap, &s.input);
    let place = key_index_partition(3);
    producer.send_events(&events, Some(&place));
    producer.send_sentinels(0..3, sentinel_ts(&events));
    let key_partitions = producer.key_partitions();
    assert!(
        key_partitions.values().all(|p| *p != 3),
        "something was produced to partition 3"
    );

    let mut watcher = Watcher::new(&broker, &s);
    let mut one = s.spawn("one", &[]);
    complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut one],
        &expected,
        &key_partitions,
        &producer.ends(),
        "idle partition",
    );
}

#[test]
fn malformed_message_goes_to_dead_letter_with_coordinates() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let s = Scenario::new(&broker, "deadletter", 4, 4, &[]);
    let events = classic::classic_events(4_000, 20, 6);
    let expected = expected_rows(&events);
    let place = key_index_partition(4);

    // Bad messages, each after a given event and into a given partition.
    let t = classic::T0 + 1_000;
    let bad: Vec<(usize, i32, Vec<u8>)> = vec![
        (400, 0, b"this is not JSON".to_vec()),
        (
            1_200,
            1,
            format!(r#"{{"key":"k1","value":"seventeen","ts":{t}}}"#).into_bytes(),
        ),
        (2_000, 2, {
            let mut v = br#"{"key":"k"#.to_vec();
            v.push(0xff); // not UTF-8
            v.extend_from_slice(format!(r#"","value":5,"ts":{t}}}"#).as_bytes());
            v
        }),
        (2_800, 3, br#"{"key":"k2","value":5,"ts":"noon"}"#.to_vec()),
        (3_600, 1, br#"{"key":"k3","value":5"#.to_vec()),
    ];
    assert!(
        std::str::from_utf8(&bad[2].2).is_err(),
        "the third bad message must not be UTF-8"
    );
    let producer = InputProducer::new(&s.bootstrap, &s.input);
    let mut next_bad = 0;
    for (i, e) in events.iter().enumerate() {
        producer.send_events(std::slice::from_ref(e), Some(&place));
        while let Some((after, partition, payload)) = bad.get(next_bad)
            && *after == i
        {
            producer.send(&format!("bad-{next_bad}"), payload, Some(*partition));
            next_bad += 1;
        }
    }
    producer.send_sentinels(0..4, sentinel_ts(&events));
    let deliveries = producer.deliveries();
    // Where each bad message landed: (partition, offset) -> payload.
    let coordinates: BTreeMap<(i32, i64), Vec<u8>> = (0..bad.len())
        .map(|j| {
            let d = deliveries
                .iter()
                .find(|d| d.key == format!("bad-{j}"))
                .unwrap_or_else(|| panic!("bad message {j} was not delivered"));
            assert_eq!(d.partition, bad[j].1, "bad message {j}'s partition");
            ((d.partition, d.offset), bad[j].2.clone())
        })
        .collect();
    eprintln!(
        "bad messages at (partition, offset): {:?}",
        coordinates.keys()
    );

    let mut watcher = Watcher::new(&broker, &s);
    let mut one = s.spawn("one", &[]);
    let key_partitions = producer.key_partitions();
    complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut one],
        &expected,
        &key_partitions,
        &producer.ends(),
        "dead letters",
    );

    // Every bad message is in the dead-letter file once, with its coordinates, its raw
    // bytes and a reason. (They precede the sentinels that made the windows fire, so
    // the source had read them all before it stopped.)
    let letters = s.dead_letters();
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for l in &letters {
        let topic = l["topic"].as_str();
        let partition = l["partition"].as_i64().and_then(|p| i32::try_from(p).ok());
        let offset = l["offset"].as_i64();
        let reason = l["reason"].as_str().unwrap_or_default();
        assert_eq!(topic, Some(s.input.as_str()), "dead letter's topic: {l}");
        let (Some(partition), Some(offset)) = (partition, offset) else {
            panic!("dead letter without partition and offset: {l}");
        };
        let Some(raw) = coordinates.get(&(partition, offset)) else {
            panic!(
                "dead letter for {partition}@{offset}, which is not a bad message (those are at \
                 {:?}): {l}",
                coordinates.keys()
            );
        };
        assert!(
            !reason.trim().is_empty(),
            "dead letter without a reason: {l}"
        );
        assert_eq!(
            l["raw"].as_str(),
            Some(String::from_utf8_lossy(raw).as_ref()),
            "dead letter's raw text: {l}"
        );
        if std::str::from_utf8(raw).is_err() {
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                l["raw_hex"].as_str(),
                Some(hex.as_str()),
                "raw_hex of a message that is not UTF-8: {l}"
            );
        }
        *seen.entry((partition, offset)).or_default() += 1;
        eprintln!("dead letter {partition}@{offset}: {reason}");
    }
    let want: BTreeMap<(i32, i64), usize> = coordinates.keys().map(|k| (*k, 1)).collect();
    assert_eq!(
        seen,
        want,
        "dead letters by (partition, offset), each once; the file:\n{}",
        letters
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The partitions of the tasks an instance's log says it holds.
fn owned_partitions(i: &Instance) -> BTreeSet<i32> {
    owned_tasks(&i.log())
        .iter()
        .filter_map(|t| t.rsplit_once('/').and_then(|(_, p)| p.parse().ok()))
        .collect()
}

/// A zombie: an instance frozen (SIGSTOP) while it holds partitions loses them to the
/// other instance after the session timeout; when it wakes up (SIGCONT) with open
/// transactions, its producers must be fenced (a new owner of a task's transactional
/// id bumps its epoch), so nothing it does after waking becomes committed output: the
/// committed output is still exactly the oracle's, and the instance goes on (rejoins).
#[test]
fn frozen_instance_is_fenced_when_it_wakes() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let s = Scenario::new(&broker, "zombie", 4, 4, &[]);
    let events = classic::classic_events(env_or("TIDEWATER_KAFKA_EVENTS", 40_000), 200, 7);
    let expected = expected_rows(&events);
    let producing = produce_paced(&s, &events, Duration::from_secs(30));
    let mut watcher = Watcher::new(&broker, &s);
    let mut a = s.spawn("a", &ONE_MEMBER);
    let mut b = s.spawn("b", &ONE_MEMBER);

    // Every partition has committed and a holds some, as its log says.
    let a_log = a.stderr.clone();
    let at_freeze = wait_until(
        &mut watcher,
        &mut [&mut a, &mut b],
        Duration::from_secs(60),
        "marks on all 4 partitions while a holds one",
        |v| {
            v.marks.len() == 4
                && !owned_tasks(&std::fs::read_to_string(&a_log).unwrap_or_default()).is_empty()
        },
    );
    let a_parts = owned_partitions(&a);
    let frozen_marks = at_freeze.marks.clone();
    a.signal("STOP");
    let frozen_at = Instant::now();

    // b takes a's partitions over: a new generation commits each of them.
    let took_over = wait_until(
        &mut watcher,
        &mut [&mut b],
        Duration::from_secs(60),
        "b taking over the partitions of the frozen a",
        |v| {
            a_parts.iter().all(|p| {
                v.marks
                    .get(p)
                    .is_some_and(|m| frozen_marks.get(p).is_none_or(|f| f.g != m.g))
            })
        },
    );
    eprintln!(
        "a held {a_parts:?}; b committed them {:.2} s after the freeze: {}",
        frozen_at.elapsed().as_secs_f64(),
        took_over.summary()
    );
    a.signal("CONT");

    let (key_partitions, input_ends) = producing.join().expect("producer thread");
    let v = complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut a, &mut b],
        &expected,
        &key_partitions,
        &input_ends,
        "zombie",
    );
    let woke: Vec<String> = a
        .log()
        .lines()
        .filter(|l| l.contains("fenced") || l.contains("lost") || l.contains("WARN"))
        .map(str::to_string)
        .collect();
    eprintln!("a after waking up: {woke:#?}\nchains: {}", v.summary());
}
