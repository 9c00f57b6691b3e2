//! Source options of the `kafka` connector end to end (issue 4, point 1): a topic
//! chosen by 'topic-pattern', CSV values without the key columns
//! ('value.fields-include' = 'EXCEPT_KEY'), the key read from the message key
//! ('key.format' = 'raw'). Judged like `kafka_scaleout.rs`: the committed output,
//! from broker state alone, equals the oracle's, each window result once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "common/kafka_job.rs"]
mod kafka_job;

use kafka_job::broker::Broker;
use kafka_job::{
    InputProducer, Scenario, Watcher, classic, complete_and_stop, expected_rows, sentinel_ts,
};

#[test]
fn topic_pattern_and_csv_values_keyed_by_the_message_key() {
    let Some(broker) = Broker::start() else {
        return;
    };
    // As many output partitions as input ones: see Scenario::new on tansu's offsets.
    let s = Scenario::new(&broker, "options", 3, 3, &[]);
    // The pattern matches the input topic only (the others have other prefixes).
    let pattern = format!("^{}$", regex_escape(&s.input));
    let job = s
        .job_sql(&[])
        .replace(
            &format!("'topic' = '{}',\n  'properties.bootstrap.servers'", s.input),
            &format!("'topic-pattern' = '{pattern}',\n  'properties.bootstrap.servers'"),
        )
        .replace(
            "'key.fields' = 'key',\n  'format' = 'json',",
            "'key.fields' = 'key',\n  'format' = 'csv',\n  'value.fields-include' = 'EXCEPT_KEY',",
        );
    assert!(
        job.contains("topic-pattern") && job.contains("EXCEPT_KEY"),
        "test bug: the job text changed shape:\n{job}"
    );
    std::fs::write(&s.job, &job).unwrap();

    let events = classic::classic_events(9_000, 40, 21);
    let expected = expected_rows(&events);
    let producer = InputProducer::new(&s.bootstrap, &s.input);
    for e in &events {
        // CSV of the value columns only: `value,ts`.
        producer.send(&e.key, format!("{},{}", e.value, e.ts).as_bytes(), None);
    }
    producer.flush();
    let end = sentinel_ts(&events);
    for p in 0..s.input_partitions {
        let key = format!("{}{p}", kafka_job::SENTINEL_PREFIX);
        producer.send(&key, format!("0,{end}").as_bytes(), Some(p));
    }
    producer.flush();
    let key_partitions = producer.key_partitions();

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
        "topic-pattern + CSV + EXCEPT_KEY",
    );
    assert!(
        s.dead_letters().is_empty(),
        "good CSV records became dead letters: {:?}",
        s.dead_letters()
    );
}

/// Escapes the regex metacharacters a generated topic name could hold.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".+*?()[]{}|^$\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}
