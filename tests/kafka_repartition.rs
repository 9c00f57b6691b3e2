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
//! The tests: three instances, one SIGKILLed and a fourth joining; an instance SIGKILLed
//! while a window task of its has output in its open transaction (which the test broker
//! then shows, aborted); an empty partition with an idle timeout; an empty partition
//! without one, holding every window back until it gets its sentinel.
//! `cargo test --test kafka_repartition -- --nocapture` shows the progress; `TIDEWATER_KAFKA_EVENTS` sets the dataset size of the
//! multi-instance test, `TIDEWATER_TEST_RUST_LOG` the instances' `RUST_LOG`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "common/kafka_job.rs"]
mod kafka_job;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_job::broker::{Broker, REQUEST_TIMEOUT, unique_name};
use kafka_job::classic::{self, ClassicEvent};
use kafka_job::{
    InputProducer, Instance, Mark, MessageKey, Placement, Row, Scenario, Verdict, Watcher,
    complete_and_stop, env_or, expected_rows, observe_takeover, opened_generations,
    others_by_attempt, owned_tasks, print_opened, produce_paced_placed,
    produce_paced_until_hurried, sentinel_ts, short, wait_for_kill_moment, wait_until,
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

/// The instances of a test that kills some and starts others: every instance ever
/// started (their logs say which generations they opened), and which were killed.
struct Fleet<'a> {
    s: &'a Scenario,
    all: Vec<Instance>,
    killed: BTreeSet<usize>,
}

impl<'a> Fleet<'a> {
    fn new(s: &'a Scenario) -> Fleet<'a> {
        Fleet {
            s,
            all: Vec::new(),
            killed: BTreeSet::new(),
        }
    }

    /// Starts one more instance with one group member, named `a`, `b`, `c`, ...
    fn spawn(&mut self) {
        let name = char::from(b'a' + u8::try_from(self.all.len()).unwrap()).to_string();
        let i = self.s.spawn(&name, &ONE_MEMBER);
        self.all.push(i);
    }

    fn live(&mut self) -> Vec<&mut Instance> {
        let killed = &self.killed;
        self.all
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| !killed.contains(i))
            .map(|(_, x)| x)
            .collect()
    }

    /// The instance whose log says it opened generation `g`, and the task it opened.
    fn opener(&self, g: &str) -> Option<(usize, String)> {
        self.all
            .iter()
            .enumerate()
            .find_map(|(i, x)| opened_generations(&x.log()).remove(g).map(|t| (i, t)))
    }

    fn name(&self, i: usize) -> &str {
        &self.all[i].name
    }
}

/// The window task `q` of a `tidewater.task` header, if it names one of `s`.
fn window_task_of(s: &Scenario, task: &str) -> Option<i32> {
    task.strip_prefix(&format!("{}/", s.repartition_topic()))?
        .parse()
        .ok()
}

/// Output records of one transaction of a window task that was open when seen: their
/// generation is the task's committed mark's, their checkpoint beyond the mark's.
#[derive(Debug, Clone)]
struct OpenOutput {
    q: i32,
    generation: String,
    checkpoint: u64,
    /// The committed mark's checkpoint when seen.
    mark: u64,
    records: usize,
    /// The instance that opened the generation ([`Fleet::opener`]).
    owner: usize,
}

/// Polls the broker until a visible output record belongs to an open transaction of a
/// window task whose generation a live instance of `fleet` opened; panics after
/// `patience` or when a live instance ends. Each poll fetches for some tens of ms, so
/// there is no pause between them: the transaction stays open for at most one
/// checkpoint interval (300 ms).
fn catch_open_output(
    watcher: &mut Watcher,
    fleet: &mut Fleet<'_>,
    patience: Duration,
) -> OpenOutput {
    let s = fleet.s;
    let began = Instant::now();
    loop {
        watcher.poll();
        let v = watcher.verdict(None);
        let mut open: BTreeMap<(i32, String, u64), usize> = BTreeMap::new();
        for r in &watcher.outputs {
            let Some(q) = window_task_of(s, &r.tag.task) else {
                continue;
            };
            if let Some(m) = v.marks.get(&q)
                && r.tag.generation == m.g
                && r.tag.checkpoint > m.n
            {
                *open
                    .entry((q, r.tag.generation.clone(), r.tag.checkpoint))
                    .or_default() += 1;
            }
        }
        for ((q, generation, checkpoint), records) in open {
            let Some((owner, task)) = fleet.opener(&generation) else {
                continue; // its opening not logged yet: next time
            };
            if fleet.killed.contains(&owner) {
                continue; // an attempt killed already: its transaction stays open until fenced
            }
            assert_eq!(
                task,
                s.window_task(q),
                "the output record of generation {generation} names window task {q}, but {} \
                 opened that generation for task {task}",
                fleet.name(owner)
            );
            return OpenOutput {
                q,
                generation,
                checkpoint,
                mark: v.marks[&q].n,
                records,
                owner,
            };
        }
        for i in fleet.live() {
            if let Err(e) = i.check_running() {
                panic!(
                    "waiting for output of an open transaction: {e}\n{}",
                    v.summary()
                );
            }
        }
        assert!(
            began.elapsed() < patience,
            "no output record of an open window task transaction seen within {patience:?}: {}",
            v.summary()
        );
    }
}

/// How many times the test kills the owner of an open transaction before it gives up on
/// the kill landing before the commit.
const KILL_ATTEMPTS: usize = 10;

/// The instance running a window task is SIGKILLed while that task's transaction holds
/// output records (visible on the test broker, which shows uncommitted and aborted
/// records to every consumer): those records must never count. The test watches the
/// output until it sees records of a window task's generation beyond the task's
/// committed mark, kills the instance whose log says it opened that generation at once,
/// and starts a replacement. If the transaction still committed (the kill came after
/// the commit had left), it tries again on the next open transaction. Once a kill has
/// left records of an aborted transaction on the output, the rest of the input goes at
/// once and the job completes. Then: the committed output is the oracle's, exactly once;
/// the aborted records are visible but off the commit chain; every record off the chain
/// is of a generation a killed instance opened; and every aborted row is the oracle's
/// row (the aborted attempt counted nothing twice), committed by another generation.
#[test]
fn repartition_window_task_killed_with_output_in_its_open_transaction() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let began = Instant::now();
    let s = Scenario::unkeyed(&broker, "repart-open", PARTITIONS, PARTITIONS, &[]);
    // 1 ms of event time per event on average, paced at 1 event per ms: the windows fire
    // every 2 s of wall time, for up to 60 s if the kills keep missing.
    let events = classic::classic_events(60_000, 200, 17);
    let expected = expected_rows(&events);
    assert_keys_are_spread(&events, 4);
    let hurry = Arc::new(AtomicBool::new(false));
    let producing = produce_paced_until_hurried(
        &s,
        &events,
        Duration::from_secs(60),
        Placement::Spread {
            partitions: PARTITIONS,
            message_key: MessageKey::None,
        },
        hurry.clone(),
    );

    let mut watcher = Watcher::new(&broker, &s);
    let mut fleet = Fleet::new(&s);
    fleet.spawn();
    fleet.spawn();

    let mut attempts: Vec<String> = Vec::new();
    let mut hit: Option<OpenOutput> = None;
    while hit.is_none() && attempts.len() < KILL_ATTEMPTS {
        let open = catch_open_output(&mut watcher, &mut fleet, Duration::from_secs(30));
        let seen_at = Instant::now();
        let OpenOutput {
            q,
            ref generation,
            checkpoint: c,
            ..
        } = open;
        fleet.all[open.owner].kill();
        fleet.killed.insert(open.owner);
        let victim = fleet.name(open.owner).to_string();
        eprintln!(
            "attempt {}: killed {victim} {:.0} ms after seeing {} records of window task {q}, \
             generation {}, checkpoint {c} (committed mark: checkpoint {})",
            attempts.len() + 1,
            seen_at.elapsed().as_secs_f64() * 1000.0,
            open.records,
            short(generation),
            open.mark
        );
        fleet.spawn();

        // Either the transaction committed after all (the mark reaches its checkpoint in
        // the killed generation), or another instance has taken the task over and the
        // chain says where the killed generation's commits ended.
        let mut live = fleet.live();
        let after = wait_until(
            &mut watcher,
            &mut live,
            Duration::from_secs(45),
            &format!(
                "window task {q} committed past checkpoint {c} of {}, or taken over",
                short(generation)
            ),
            |v| match v.marks.get(&q) {
                Some(m) if &m.g == generation => m.n >= c,
                Some(_) => v
                    .chains
                    .get(&q)
                    .is_some_and(|ch| ch.iter().any(|l| &l.generation == generation)),
                None => false,
            },
        );
        drop(live);
        let m = &after.marks[&q];
        let outcome = if &m.g == generation {
            format!(
                "missed: the transaction committed (mark {}/{})",
                short(&m.g),
                m.n
            )
        } else {
            let chain = &after.chains[&q];
            let link = chain
                .iter()
                .find(|l| &l.generation == generation)
                .expect("the wait's condition");
            if link.hi >= c {
                format!(
                    "missed: the transaction committed (generation {} committed up to checkpoint \
                     {}; generation {} restored from it)",
                    short(generation),
                    link.hi,
                    short(&m.g)
                )
            } else {
                hit = Some(open.clone());
                format!(
                    "hit: generation {} committed up to checkpoint {} only, its transaction of \
                     checkpoint {c} was aborted; generation {} restored from checkpoint {}, {:.1} s \
                     after the kill",
                    short(generation),
                    link.hi,
                    short(&m.g),
                    link.hi,
                    seen_at.elapsed().as_secs_f64()
                )
            }
        };
        eprintln!("attempt {}: {outcome}", attempts.len() + 1);
        attempts.push(format!("killed {victim}: {outcome}"));
    }
    let Some(hit) = hit else {
        panic!(
            "in {KILL_ATTEMPTS} attempts, no kill landed while a window task's transaction with \
             output was still open (each time the transaction committed first): {attempts:#?}"
        );
    };
    hurry.store(true, Ordering::Relaxed);
    let (_, input_ends) = producing.join().expect("producer thread");

    let mut live = fleet.live();
    let v = complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut live,
        &expected,
        &BTreeMap::new(),
        &input_ends,
        "window task killed with output in its open transaction",
    );
    drop(live);

    // The records off the chain: the aborted transaction's among them, and only
    // generations of killed instances.
    let off: Vec<_> = watcher
        .outputs
        .iter()
        .filter(|r| {
            v.others.contains_key(&(
                r.tag.task.clone(),
                r.tag.generation.clone(),
                r.tag.checkpoint,
            ))
        })
        .collect();
    let hit_task = s.window_task(hit.q);
    let aborted = off
        .iter()
        .filter(|r| {
            r.tag.task == hit_task
                && r.tag.generation == hit.generation
                && r.tag.checkpoint == hit.checkpoint
        })
        .count();
    assert!(
        aborted >= hit.records,
        "the {} records of window task {} generation {} checkpoint {c} seen before the kill \
         must be visible and off the commit chain, but {aborted} are; off the chain: {:?}",
        hit.records,
        hit.q,
        hit.generation,
        others_by_attempt(&v),
        c = hit.checkpoint
    );
    for r in &off {
        let opener = fleet.opener(&r.tag.generation);
        assert!(
            opener
                .as_ref()
                .is_some_and(|(i, t)| fleet.killed.contains(i) && *t == r.tag.task),
            "output {}@{} (task {}, generation {}, checkpoint {}) is off the commit chain, but \
             its generation was not opened for that task by a killed instance: {:?} (killed: \
             {:?})",
            r.partition,
            r.offset,
            r.tag.task,
            r.tag.generation,
            r.tag.checkpoint,
            opener.map(|(i, t)| (fleet.name(i).to_string(), t)),
            fleet
                .killed
                .iter()
                .map(|i| fleet.name(*i))
                .collect::<Vec<_>>()
        );
    }
    // Every aborted row is a correct result (the killed attempt applied only committed
    // input, once), and the same window's committed row is another generation's: the
    // successor's, counted once by the oracle check above.
    let oracle: BTreeSet<&Row> = expected.iter().collect();
    let committed_by: BTreeMap<(&str, i64, i64), &str> = v
        .committed_records
        .iter()
        .map(|(t, r)| ((r.0.as_str(), r.1, r.2), t.generation.as_str()))
        .collect();
    for r in off.iter().filter(|r| !kafka_job::is_sentinel(&r.row.0)) {
        assert!(
            oracle.contains(&r.row),
            "the aborted output record {}@{} (generation {}, checkpoint {}) holds {:?}, which is \
             not a row of the oracle",
            r.partition,
            r.offset,
            r.tag.generation,
            r.tag.checkpoint,
            r.row
        );
        let by = committed_by.get(&(r.row.0.as_str(), r.row.1, r.row.2));
        assert!(
            by.is_some_and(|g| *g != r.tag.generation),
            "the window of the aborted output record {}@{} ({:?}, generation {}) is committed by \
             {by:?}, not by another generation",
            r.partition,
            r.offset,
            r.row,
            r.tag.generation
        );
    }
    eprintln!(
        "{} kill attempts ({}); {} records off the commit chain, all of killed instances' \
         generations: {:?}; {:.1} s in all",
        attempts.len(),
        attempts.join("; "),
        off.len(),
        others_by_attempt(&v),
        began.elapsed().as_secs_f64()
    );
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
        // Longer than a live partition may be silent on a loaded machine (the first fetch
        // after the task opens): a live partition taken for idle would make its events
        // late, as in Flink.
        &[("scan.watermark.idle-timeout", "3 s")],
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
