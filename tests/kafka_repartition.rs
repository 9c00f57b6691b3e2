//! Repartitioning end to end: the classic job (HOP 2 s / 10 s, SUM and COUNT by key) on a
//! Kafka topic whose messages are NOT keyed by the grouping key (the source table has no
//! 'key.format' / 'key.fields'; events are spread over the partitions by their index,
//! whatever their key), run by the real binary against the test broker
//! (tests/common/broker.rs, docs/kafka-testing.md).
//!
//! The engine's contract for such a job, with input topic T (N partitions) and group G:
//! input-partition tasks decode, compute the watermark and write to the internal data
//! topic `G-T-repartition` (N x N partitions); window task `q` (run by whoever the group
//! assigns partition `q` of `G-T-repartition-tasks`, a topic never written) aggregates
//! and writes every output record, with `tidewater.task` = `G-T-repartition/<q>`, and its
//! snapshots on partition `q` of `G-T-repartition-changelog`, where the group's committed
//! offset points at its committed manifest. So the committed output is decided from
//! broker state alone by the commit chain of `kafka_scaleout.rs`
//! (tests/common/kafka_job.rs), per window task over the repartition changelog. No
//! committed input offset says when the window tasks are done: completion is judged by
//! the committed output rows.
//!
//! A window task's watermark is the minimum over all N input partitions, so the flush
//! sentinels (one event per partition a minute of event time later, key `__flush_p<N>`)
//! still fire every window when every partition gets one. A partition that gets no data
//! holds every window back, unless 'scan.watermark.idle-timeout' lets it go.
//!
//! The tests: three instances, one SIGKILLed and a fourth joining; an empty partition
//! with an idle timeout; an empty partition without one, holding every window back
//! until it gets its sentinel. `cargo test --test kafka_repartition -- --nocapture`
//! shows the progress; `TIDEWATER_KAFKA_EVENTS` sets the dataset size of the
//! multi-instance test, `TIDEWATER_TEST_RUST_LOG` the instances' `RUST_LOG`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "common/kafka_job.rs"]
mod kafka_job;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_job::broker::{Broker, REQUEST_TIMEOUT, unique_name};
use kafka_job::classic::{self, ClassicEvent};
use kafka_job::{
    InputProducer, Mark, MessageKey, Placement, Scenario, Verdict, Watcher, complete_and_stop,
    env_or, expected_rows, observe_takeover, owned_tasks, print_opened, produce_paced_placed,
    sentinel_ts, short, wait_for_kill_moment, wait_until,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// One group member per instance: three instances then split the 4 input partitions and
/// the 4 window tasks between them, so the one killed surely holds some.
const ONE_MEMBER: [&str; 2] = ["-p", "1"];
/// Input (and so window task) partitions of every test.
const PARTITIONS: i32 = 4;

/// Panics unless the events, placed by index over `partitions`, put most keys in more
/// than one partition: a job that did not repartition could not get them right.
fn assert_keys_are_spread(events: &[ClassicEvent], partitions: usize) {
    let mut by_key: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        by_key.entry(&e.key).or_default().insert(i % partitions);
    }
    let spread = by_key.values().filter(|ps| ps.len() > 1).count();
    let everywhere = by_key.values().filter(|ps| ps.len() == partitions).count();
    eprintln!(
        "{} keys: {spread} in more than one input partition, {everywhere} in all {partitions}",
        by_key.len()
    );
    assert!(
        spread * 2 > by_key.len() && everywhere > 0,
        "test bug: the dataset leaves most keys in one partition ({spread} of {} spread)",
        by_key.len()
    );
}

/// The window tasks an instance's log says it holds.
fn window_tasks_held(s: &Scenario, log: &str) -> BTreeSet<String> {
    let prefix = format!("{}/", s.repartition_topic());
    owned_tasks(log)
        .into_iter()
        .filter(|t| t.starts_with(&prefix))
        .collect()
}

/// Panics unless every mark committed at some moment (`earlier`, per window task) is
/// still on that task's final chain: a commit is never undone, so the final chain must
/// contain the generation of each earlier mark, having committed at least as far.
fn assert_marks_kept(v: &Verdict, earlier: &BTreeMap<i32, Mark>, when: &str) {
    for (q, m) in earlier {
        let chain = v.chains.get(q).map(Vec::as_slice).unwrap_or_default();
        assert!(
            chain.iter().any(|l| l.generation == m.g && l.hi >= m.n),
            "window task {q}: the mark committed {when} ({}/{}) is not on the final chain {:?}",
            m.g,
            m.n,
            chain
                .iter()
                .map(|l| format!("{}({},{}]", l.generation, l.lo, l.hi))
                .collect::<Vec<_>>()
        );
    }
}

/// Panics unless the internal topics of the repartitioned job are as the contract says:
/// the data topic with N x N partitions, the task topic and both changelogs with N, and
/// the task topic empty (read from the beginning to the end of every partition).
fn assert_internal_topics(broker: &Broker, s: &Scenario) {
    let n = s.input_partitions;
    let probe = broker.consumer(&[]);
    let metadata = probe
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("metadata: {e}"));
    let partitions = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
    };
    let want = [
        (s.repartition_topic(), n * n),
        (s.repartition_tasks_topic(), n),
        (s.repartition_changelog(), n),
        (s.changelog(), n),
    ];
    for (topic, count) in &want {
        assert_eq!(
            partitions(topic),
            usize::try_from(*count).ok(),
            "partitions of the internal topic {topic} (None: it does not exist); topics: {:?}",
            metadata
                .topics()
                .iter()
                .map(|t| (t.name(), t.partitions().len()))
                .collect::<Vec<_>>()
        );
    }

    let tasks_topic = s.repartition_tasks_topic();
    let reader = broker.consumer(&[
        ("group.id", &unique_name("tidewater-test-tasks-reader")),
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_uncommitted"),
        ("enable.partition.eof", "true"),
    ]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(&tasks_topic, p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while at_end.len() < usize::try_from(n).unwrap() {
        assert!(
            Instant::now() < deadline,
            "reading the task topic {tasks_topic}: no end of partitions {:?} within \
             {REQUEST_TIMEOUT:?}",
            (0..n).filter(|p| !at_end.contains(p)).collect::<Vec<_>>()
        );
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading the task topic {tasks_topic}: {e}"),
            Some(Ok(m)) => panic!(
                "the task topic {tasks_topic} must never be written, but partition {} holds a \
                 record at offset {}",
                rdkafka::Message::partition(&m),
                rdkafka::Message::offset(&m)
            ),
        }
    }
    eprintln!("internal topics as the contract says: {want:?}; the task topic is empty");
}

#[test]
fn repartition_three_instances_one_killed_fourth_joins_exactly_once() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let n_events = env_or("TIDEWATER_KAFKA_EVENTS", 30_000);
    // As many output partitions as window tasks: see Scenario::new on tansu's offsets.
    let s = Scenario::unkeyed(&broker, "repart", PARTITIONS, PARTITIONS, &[]);
    let events = classic::classic_events(n_events, 200, 11);
    let expected = expected_rows(&events);
    assert_keys_are_spread(&events, 4);
    eprintln!(
        "{n_events} events over 200 keys, {} expected rows; input {}, group {}",
        expected.len(),
        s.input,
        s.group
    );

    // The input arrives while the instances run, paced over 30 s, so that the kill and
    // the fourth instance's join fall in mid-stream. Each message has a key, but not the
    // grouping key: `e<i>` for event i, which goes to partition i % 4.
    let placement = Placement::Spread {
        partitions: PARTITIONS,
        message_key: MessageKey::EventIndex,
    };
    let producing = produce_paced_placed(&s, &events, Duration::from_secs(30), placement);

    let mut watcher = Watcher::new(&broker, &s);
    let mut a = s.spawn("a", &ONE_MEMBER);
    let mut b = s.spawn("b", &ONE_MEMBER);
    let mut c = s.spawn("c", &ONE_MEMBER);

    // Every window task has committed twice, and a holds a task (as its log says) ...
    let a_log = a.stderr.clone();
    wait_for_kill_moment(
        &mut watcher,
        &mut [&mut a, &mut b, &mut c],
        &a_log,
        PARTITIONS,
    );
    // ... preferably a window task (given up on after 30 s more: the kill then tests
    // the failover of its input tasks only), and the verdict at the kill knows every
    // window task's mark (one whose manifest is not read yet has none).
    let since = Instant::now();
    let at_kill = wait_until(
        &mut watcher,
        &mut [&mut a, &mut b, &mut c],
        Duration::from_secs(60),
        "a holding a window task, with every window task's mark read",
        |v| {
            let log = std::fs::read_to_string(&a_log).unwrap_or_default();
            let held = !window_tasks_held(&s, &log).is_empty();
            // The marks at the kill are compared with later ones: all of them, read.
            v.marks.len() == 4 && (held || since.elapsed() > Duration::from_secs(30))
        },
    );
    let marks_at_kill: BTreeMap<i32, Mark> = at_kill.marks.clone();
    let a_held = owned_tasks(&a.log());
    let a_windows = window_tasks_held(&s, &a.log());
    eprintln!(
        "killing a, which holds {a_held:?}; {} rows committed so far; window task marks at \
         the kill: {:?}",
        at_kill.committed.len(),
        marks_at_kill
            .iter()
            .map(|(q, m)| format!("q{q}: {}/{}", short(&m.g), m.n))
            .collect::<Vec<_>>()
    );
    if a_windows.is_empty() {
        eprintln!("NOTE: the killed instance held no window task at the time of the kill");
    }
    let killed_at = Instant::now();
    a.kill();

    // Which window tasks were a's and how long until another instance committed them
    // (observed, not asserted: the log is only a hint).
    let moved = observe_takeover(
        &mut watcher,
        &s,
        &mut [&mut b, &mut c],
        &marks_at_kill,
        killed_at,
    );
    eprintln!(
        "window tasks a held by its log {a_windows:?}; window tasks whose generation changed \
         after the kill {moved:?}"
    );

    let mut d = s.spawn("d", &ONE_MEMBER);
    let (_, input_ends) = producing.join().expect("producer thread");
    eprintln!("input ends {input_ends:?}");
    assert_eq!(
        input_ends.keys().copied().collect::<BTreeSet<i32>>(),
        (0..PARTITIONS).collect(),
        "the input does not cover all {PARTITIONS} partitions"
    );

    // No key-to-partition map: every key is in several input partitions.
    let v = complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut b, &mut c, &mut d],
        &expected,
        &BTreeMap::new(),
        &input_ends,
        "repartitioned scale-out",
    );
    assert_marks_kept(&v, &marks_at_kill, "at the kill");
    assert_internal_topics(&broker, &s);
    let generations: BTreeMap<i32, usize> = v.chains.iter().map(|(q, c)| (*q, c.len())).collect();
    eprintln!("committed generations per window task: {generations:?}");
    print_opened(&[&a, &b, &c, &d]);
}

/// The classic events of the idle-partition tests, spread by index over partitions
/// 0..3 (partition 3 gets nothing, not even a sentinel) with no message key, and each of
/// the three a sentinel; all produced before the job starts. Returns the events.
fn produce_all_but_partition_3(s: &Scenario, producer: &InputProducer) -> Vec<ClassicEvent> {
    let events = classic::classic_events(12_000, 60, 13);
    assert_keys_are_spread(&events, 3);
    producer.send_spread(&events, 0, 3, MessageKey::None);
    producer.send_sentinels(0..3, sentinel_ts(&events));
    let ends = producer.ends();
    assert_eq!(
        ends.keys().copied().collect::<Vec<i32>>(),
        vec![0, 1, 2],
        "test bug: the input of {} is not on partitions 0, 1 and 2 alone",
        s.input
    );
    events
}

#[test]
fn repartition_idle_partition_stops_holding_back_with_idle_timeout() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let s = Scenario::unkeyed(
        &broker,
        "repart-idle",
        PARTITIONS,
        PARTITIONS,
        &[("scan.watermark.idle-timeout", "1 s")],
    );
    let producer = InputProducer::new(&s.bootstrap, &s.input);
    let events = produce_all_but_partition_3(&s, &producer);
    let expected = expected_rows(&events);

    let mut watcher = Watcher::new(&broker, &s);
    let mut one = s.spawn("one", &ONE_MEMBER);
    complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut one],
        &expected,
        &BTreeMap::new(),
        &producer.ends(),
        "idle partition with an idle timeout",
    );
    assert_internal_topics(&broker, &s);
}

/// How long the window tasks must be quiet (nothing new on their changelog or the
/// output), once the input tasks have committed the whole input, before the test
/// believes they have seen it all and hold the windows back. (Window tasks commit only
/// when there is something to commit, so no later commit can be waited for.)
const QUIET: Duration = Duration::from_secs(3);

/// Without 'scan.watermark.idle-timeout', the empty partition holds every window back:
/// once the other partitions' input, sentinels included, is committed and the window
/// tasks have gone quiet, no window has fired. Once the empty partition gets its sentinel,
/// every window fires, exactly once.
#[test]
fn repartition_idle_partition_holds_windows_back_without_idle_timeout() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let s = Scenario::unkeyed(&broker, "repart-held", PARTITIONS, PARTITIONS, &[]);
    let producer = InputProducer::new(&s.bootstrap, &s.input);
    let events = produce_all_but_partition_3(&s, &producer);
    let expected = expected_rows(&events);
    let ends_0_to_2 = producer.ends();

    let mut watcher = Watcher::new(&broker, &s);
    let mut one = s.spawn("one", &ONE_MEMBER);
    // The input tasks have read and committed partitions 0..3 to their ends ...
    let read = wait_until(
        &mut watcher,
        &mut [&mut one],
        Duration::from_secs(60),
        "committed input offsets at the ends of partitions 0..3",
        |v| {
            v.marks.len() == 4
                && ends_0_to_2
                    .iter()
                    .all(|(p, end)| v.input_offsets.get(p) == Some(end))
        },
    );
    // ... and the window tasks have been quiet since for a while.
    let (mut seen, mut quiet_since) = (
        (read.output_records, read.changelog_records),
        Instant::now(),
    );
    let held = wait_until(
        &mut watcher,
        &mut [&mut one],
        Duration::from_secs(60),
        &format!("the window tasks quiet for {QUIET:?}"),
        |v| {
            let now = (v.output_records, v.changelog_records);
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
            quiet_since.elapsed() >= QUIET
        },
    );
    assert!(
        held.committed.is_empty() && held.committed_sentinel == 0 && watcher.outputs.is_empty(),
        "windows fired while partition 3 had no data and no idle timeout: {} committed rows, \
         {} visible output records; {}",
        held.committed.len(),
        watcher.outputs.len(),
        held.summary()
    );
    eprintln!(
        "held back: no output while partition 3 is empty; {}",
        held.summary()
    );

    // The last sentinel lets every window go.
    producer.send_sentinels([3], sentinel_ts(&events));
    complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut one],
        &expected,
        &BTreeMap::new(),
        &producer.ends(),
        "idle partition released by its sentinel",
    );
}
