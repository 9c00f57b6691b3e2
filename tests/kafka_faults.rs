//! Broker faults a Kafka job must survive without losing or repeating a result
//! (issue 4): the broker stopped and started again mid-run.
//!
//! The pinned tansu keeps its data in memory, so a restarted tansu would come back
//! empty. What a client sees of a broker restart — every connection dropped, new ones
//! failing for a while, then the same broker with the same data — is made instead by a
//! proxy the broker advertises ([`broker::NetCut`]): it cuts every connection and
//! closes new ones at once for longer than the session timeout, then forwards again.
//! (librdkafka's mock cluster can take brokers down and up, but it does not store
//! offsets committed in transactions, so no exactly-once job can restore against it.)
//! The judge is the commit chain of `kafka_scaleout.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "common/kafka_job.rs"]
mod kafka_job;

use std::time::{Duration, Instant};

use kafka_job::broker::Broker;
use kafka_job::{
    InputProducer, POLL_EVERY, Scenario, Watcher, classic, complete_and_stop, expected_rows,
    sentinel_ts,
};

/// How long the broker stays away: longer than the session timeout (6 s), so the group
/// forgets the instance and it must rejoin and reopen its tasks.
const OUTAGE: Duration = Duration::from_secs(8);

#[test]
fn broker_stopped_and_restarted_mid_run_loses_and_repeats_nothing() {
    let Some((broker, cut)) = Broker::start_behind_netcut() else {
        return;
    };
    // As many output partitions as input ones: see Scenario::new on tansu's offsets.
    let s = Scenario::new(&broker, "restart", 4, 4, &[]);
    let events = classic::classic_events(16_000, 80, 9);
    let expected = expected_rows(&events);
    let (first, second) = events.split_at(events.len() / 2);
    let producer = InputProducer::new(&s.bootstrap, &s.input);
    producer.send_events(first, None);
    producer.flush();

    let mut watcher = Watcher::new(&broker, &s);
    let mut one = s.spawn("one", &[]);
    // Take the broker away once the job has committed output.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        watcher.poll();
        let v = watcher.verdict(None);
        if !v.committed.is_empty() {
            eprintln!("{} rows committed before the outage", v.committed.len());
            break;
        }
        one.check_running().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Instant::now() < deadline,
            "no committed output within 60 s: {}; committed offsets {:?}\n{}",
            v.summary(),
            watcher.committed(),
            one.log_tail(30)
        );
        std::thread::sleep(POLL_EVERY);
    }
    cut.set_up(false);
    let down = Instant::now();
    // The outage is the fault under test, not a wait for a signal: hold it.
    while down.elapsed() < OUTAGE {
        one.check_running()
            .unwrap_or_else(|e| panic!("the job died while the broker was down: {e}"));
        std::thread::sleep(POLL_EVERY);
    }
    cut.set_up(true);
    eprintln!("broker back after {:.1} s", down.elapsed().as_secs_f64());

    producer.send_events(second, None);
    producer.send_sentinels(0..s.input_partitions, sentinel_ts(&events));
    producer.flush();
    let key_partitions = producer.key_partitions();
    complete_and_stop(
        &broker,
        &s,
        &mut watcher,
        &mut [&mut one],
        &expected,
        &key_partitions,
        &producer.ends(),
        "broker restart",
    );
    // The outage outlasted the session timeout: the group dropped the instance, which
    // rejoined and reopened its tasks from their commits (the summary at the stop).
    let log = one.log();
    let restored: u64 = log
        .lines()
        .find_map(|l| {
            let rest = l.split("partition tasks: ").nth(1)?;
            rest.split('(')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no partition-task summary:\n{}", one.log_tail(20)));
    assert!(
        restored >= 1,
        "no task was reopened from a commit after the outage:\n{}",
        one.log_tail(40)
    );
}
