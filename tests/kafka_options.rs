//! Options of the `kafka` connector end to end (issue 4, point 1). As a source: a topic
//! chosen by 'topic-pattern', CSV values without the key columns
//! ('value.fields-include' = 'EXCEPT_KEY'), the key read from the message key
//! ('key.format' = 'raw'), judged like `kafka_scaleout.rs` (the committed output, from
//! broker state alone, equals the oracle's, each window result once). As a sink behind
//! a file source: 'at-least-once' with the key from 'key.fields'.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "common/kafka_job.rs"]
mod kafka_job;

use kafka_job::broker::Broker;
use std::time::{Duration, Instant};

use kafka_job::{
    InputProducer, PATIENCE, POLL_EVERY, Scenario, Watcher, classic, complete_and_stop,
    expected_rows, parse_row, sentinel_ts,
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

/// Without 'sink.transaction-headers' the exactly-once sink writes records as Flink's
/// does: key and value, no headers, stamped with their create time. One instance and no
/// fault, so no transaction is aborted and every visible record is committed: they are
/// the oracle's rows, each once.
#[test]
fn exactly_once_records_carry_no_headers_by_default() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let s = Scenario::new(&broker, "untagged", 2, 2, &[]);
    let job = s
        .job_sql(&[])
        .replace("  'sink.transaction-headers' = 'true',\n", "");
    assert!(
        !job.contains("transaction-headers"),
        "test bug: the job text changed shape:\n{job}"
    );
    std::fs::write(&s.job, &job).unwrap();
    let events = classic::classic_events(4_000, 25, 8);
    let mut expected = expected_rows(&events);
    let producer = InputProducer::new(&s.bootstrap, &s.input);
    producer.send_events(&events, None);
    producer.send_sentinels(0..s.input_partitions, sentinel_ts(&events));
    producer.flush();
    let ends = producer.ends();

    let watcher = Watcher::new(&broker, &s);
    let spawned_at = epoch_millis();
    let mut one = s.spawn("one", &[]);
    let began = Instant::now();
    loop {
        let committed = watcher.committed();
        let done = ends
            .iter()
            .all(|(p, end)| committed.get(p).and_then(|c| c.1) == Some(*end));
        if done {
            break;
        }
        one.check_running().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            began.elapsed() < PATIENCE,
            "input not committed to its ends {ends:?} in {PATIENCE:?}: {committed:?}"
        );
        std::thread::sleep(POLL_EVERY);
    }
    one.stop_cleanly();
    let stopped_at = epoch_millis();

    // Every output partition read to its end.
    let consumer = broker.consumer(&[
        (
            "group.id",
            &kafka_job::broker::unique_name("untagged-reader"),
        ),
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "true"),
    ]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..s.output_partitions {
        tpl.add_partition_offset(&s.output, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    rdkafka::consumer::Consumer::assign(&consumer, &tpl).unwrap();
    let mut at_end = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    while at_end.len() < usize::try_from(s.output_partitions).unwrap() {
        assert!(began.elapsed() < PATIENCE * 2, "output not read to its end");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {}: {e}", s.output),
            Some(Ok(m)) => {
                use rdkafka::Message;
                at_end.remove(&m.partition());
                assert!(
                    m.headers().is_none(),
                    "record {}@{} carries headers, though 'sink.transaction-headers' is off",
                    m.partition(),
                    m.offset()
                );
                // Create time, as a Kafka producer stamps it: while the job ran.
                match m.timestamp() {
                    rdkafka::Timestamp::CreateTime(t) => assert!(
                        (spawned_at..=stopped_at).contains(&t),
                        "record {}@{} stamped {t}, outside the run {spawned_at}..={stopped_at}",
                        m.partition(),
                        m.offset()
                    ),
                    other => panic!("record {}@{}: {other:?}", m.partition(), m.offset()),
                }
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default());
                rows.push(parse_row(&payload).unwrap_or_else(|e| panic!("{e}: {payload}")));
            }
        }
    }
    rows.sort();
    expected.sort();
    assert_eq!(rows.len(), expected.len(), "records vs the oracle's rows");
    assert!(rows == expected, "the records are not the oracle's rows");
}

fn epoch_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
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

/// A file source into a Kafka sink: at-least-once (flushed at the end of input), every
/// window result of the oracle in the topic, keyed by 'key.fields' with the default
/// partitioner. A bounded input ends the job, so it exits by itself.
#[test]
fn file_source_into_an_at_least_once_kafka_sink() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let topic = kafka_job::broker::unique_name("file-out");
    broker.create_topic(&topic, 3);
    let dir = tempfile::tempdir().unwrap();
    let events = classic::classic_events(6_000, 30, 4);
    let expected = expected_rows(&events);
    let input = dir.path().join("events.csv");
    std::fs::write(&input, classic::classic_csv(&events, true)).unwrap();
    let job = format!(
        "CREATE TABLE events (key STRING, `value` BIGINT, ts BIGINT,
           event_time AS TO_TIMESTAMP_LTZ(ts, 3),
           WATERMARK FOR event_time AS event_time - INTERVAL '2' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{input}', 'format' = 'csv',
               'csv.header' = 'true');
         CREATE TABLE results (key STRING, window_start TIMESTAMP(3),
           window_end TIMESTAMP(3), total BIGINT, cnt BIGINT)
         WITH ('connector' = 'kafka', 'topic' = '{topic}',
               'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json',
               'key.format' = 'raw', 'key.fields' = 'key',
               'sink.delivery-guarantee' = 'at-least-once');
         INSERT INTO results SELECT key, window_start, window_end, SUM(`value`), COUNT(*)
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(event_time), INTERVAL '2' SECOND,
                        INTERVAL '10' SECOND))
         GROUP BY window_start, window_end, key;",
        input = input.display(),
        bootstrap = broker.bootstrap(),
    );
    let job_path = dir.path().join("job.sql");
    std::fs::write(&job_path, job).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args([
            "run",
            job_path.to_str().unwrap(),
            "-p",
            "2",
            "--http",
            "off",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the job failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Read the topic to its end: the job has flushed every record before exiting.
    let consumer = broker.consumer(&[
        ("group.id", &kafka_job::broker::unique_name("reader")),
        ("enable.auto.commit", "false"),
    ]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    rdkafka::consumer::Consumer::assign(&consumer, &tpl).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while got.len() < expected.len() && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(std::time::Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let payload = rdkafka::Message::payload_view::<str>(&m).unwrap().unwrap();
        let row = kafka_job::parse_row(payload).unwrap();
        let key = rdkafka::Message::key(&m).map(|k| String::from_utf8_lossy(k).into_owned());
        assert_eq!(
            key.as_deref(),
            Some(row.0.as_str()),
            "message key is 'key.fields'"
        );
        got.push(row);
    }
    // At-least-once with no failure: exactly the oracle's rows (nothing more arrives
    // once the count is reached: the job has exited after flushing).
    kafka_job::assert_rows_exact(&got, &expected, "file -> kafka");
}
