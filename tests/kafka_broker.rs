//! Smoke tests of the test broker (tests/common/broker.rs, docs/kafka-testing.md) with a
//! plain rdkafka client, no Tidewater code: what the Kafka connector's tests will rely
//! on works against it, and its known quirks are measured and printed
//! (`cargo test --test kafka_broker -- --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "common/broker.rs"]
mod broker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker::{Broker, REQUEST_TIMEOUT, unique_name};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

/// How long a test waits for records before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Records the partition and offset of every delivered record, and every failure.
#[derive(Debug, Default)]
struct Deliveries {
    /// key, payload, partition, offset
    delivered: Mutex<Vec<(String, String, i32, i64)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => lock(&self.delivered).push((
                text(m.key()),
                text(m.payload()),
                m.partition(),
                m.offset(),
            )),
            Err((e, m)) => lock(&self.failed).push(format!("{}: {e}", text(m.payload()))),
        }
    }
}

/// Notes when the group first assigns partitions to this consumer.
#[derive(Debug, Default)]
struct GroupWatch {
    assigned_at: Mutex<Option<Instant>>,
}

impl ClientContext for GroupWatch {}

impl ConsumerContext for GroupWatch {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && tpl.count() > 0
        {
            lock(&self.assigned_at).get_or_insert_with(Instant::now);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

/// One consumed record: key, payload, partition, offset.
fn record(m: &BorrowedMessage<'_>) -> (String, String, i32, i64) {
    (text(m.key()), text(m.payload()), m.partition(), m.offset())
}

#[test]
fn keyed_records_reach_a_consumer_group_once_each() {
    let Some(broker) = Broker::start() else {
        return;
    };
    eprintln!(
        "broker {} ready in {:?}",
        broker.bootstrap(),
        broker.started_in
    );
    let topic = unique_name("smoke-keyed");
    broker.create_topic(&topic, 4);

    // Idempotent producer: 2000 records over 20 keys.
    const RECORDS: usize = 2000;
    const KEYS: usize = 20;
    let producer: BaseProducer<Deliveries> = broker
        .config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
        .expect("idempotent producer");
    let began = Instant::now();
    for i in 0..RECORDS {
        let key = format!("key-{}", i % KEYS);
        let payload = i.to_string();
        let mut rec = BaseRecord::to(&topic).key(&key).payload(&payload);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                // Queue full: serve delivery reports, then try again.
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(REQUEST_TIMEOUT).expect("flush");
    let produced_in = began.elapsed();
    let failed = lock(&producer.context().failed).clone();
    assert!(failed.is_empty(), "delivery failed: {failed:?}");
    let delivered = lock(&producer.context().delivered).clone();
    assert_eq!(delivered.len(), RECORDS, "delivery reports");
    // Where the producer put each key, and how many records each partition got.
    let mut key_partition = HashMap::new();
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for (key, _, partition, _) in &delivered {
        let first = *key_partition.entry(key.clone()).or_insert(*partition);
        assert_eq!(first, *partition, "producer put {key} in two partitions");
        *per_partition.entry(*partition).or_default() += 1;
    }
    // The idempotent producer's offsets: 0..n in each partition, no gap, no duplicate.
    for (&partition, &n) in &per_partition {
        let offsets: BTreeSet<i64> = delivered
            .iter()
            .filter(|d| d.2 == partition)
            .map(|d| d.3)
            .collect();
        assert_eq!(
            offsets,
            (0..n).collect(),
            "offsets of partition {partition}"
        );
    }
    assert!(
        per_partition.len() > 1,
        "20 keys all hashed to one partition: {per_partition:?}"
    );

    // A consumer group reads them all, counting (never asking for "latest" offsets).
    let group = unique_name("smoke-group");
    let consumer: BaseConsumer<GroupWatch> = broker
        .config()
        .set("group.id", &group)
        .set("session.timeout.ms", "6000")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create_with_context(GroupWatch::default())
        .expect("group consumer");
    let subscribed = Instant::now();
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut consumed_key_partition: HashMap<String, BTreeSet<i32>> = HashMap::new();
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut count = 0;
    let mut first_record = None;
    while count < RECORDS {
        assert!(
            subscribed.elapsed() < PATIENCE,
            "consumed {count} of {RECORDS} records in {PATIENCE:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let (key, payload, partition, offset) = record(&m.expect("consume"));
        first_record.get_or_insert_with(Instant::now);
        *seen.entry(payload).or_default() += 1;
        consumed_key_partition
            .entry(key)
            .or_default()
            .insert(partition);
        next_offset.insert(partition, offset + 1);
        count += 1;
    }
    let consumed_in = subscribed.elapsed();
    let joined = lock(&consumer.context().assigned_at)
        .map(|at| at.duration_since(subscribed))
        .expect("assigned partitions before records arrived");

    for i in 0..RECORDS {
        assert_eq!(seen.get(&i.to_string()), Some(&1), "record {i} seen");
    }
    assert_eq!(seen.len(), RECORDS, "no unexpected records");
    for (key, partitions) in &consumed_key_partition {
        assert_eq!(
            partitions,
            &BTreeSet::from([key_partition[key]]),
            "records of {key} came from one partition, the producer's"
        );
    }
    assert_eq!(
        next_offset, per_partition,
        "consumed up to each partition's end"
    );

    // Committed offsets are stored by the group: a fresh member of it reads them back.
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let reader = broker.consumer(&[("group.id", &group)]);
    let mut partitions = TopicPartitionList::new();
    for p in 0..4 {
        partitions.add_partition(&topic, p);
    }
    let committed = reader
        .committed_offsets(partitions, REQUEST_TIMEOUT)
        .expect("committed offsets");
    for p in 0..4 {
        let offset = committed
            .find_partition(&topic, p)
            .map(|e| e.offset())
            .expect("partition listed");
        match per_partition.get(&p) {
            Some(&n) => assert_eq!(offset, Offset::Offset(n), "committed offset of {p}"),
            None => assert!(
                matches!(offset, Offset::Invalid | Offset::Offset(0)),
                "partition {p} got no records, committed {offset:?}"
            ),
        }
    }

    // Observed, not asserted: what the broker reports as the high watermark.
    let watermarks: Vec<_> = (0..4)
        .map(|p| reader.fetch_watermarks(&topic, p, REQUEST_TIMEOUT))
        .collect();
    eprintln!(
        "produced {RECORDS} records in {produced_in:?}, per partition {per_partition:?}; \
         group joined in {joined:?}, first record after {:?}, all consumed in {consumed_in:?}; \
         watermarks (low, high) {watermarks:?}",
        first_record.map(|at| at.duration_since(subscribed))
    );
}

#[test]
fn transactions_commit_and_abort() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let topic = unique_name("smoke-tx");
    broker.create_topic(&topic, 1);

    // Committed batch "a", aborted batch "x", committed batch "b", in that order.
    const BATCH: usize = 10;
    let producer: BaseProducer<Deliveries> = broker
        .config()
        .set("transactional.id", unique_name("smoke-tx-producer"))
        .create_with_context(Deliveries::default())
        .expect("transactional producer");
    producer
        .init_transactions(REQUEST_TIMEOUT)
        .expect("init_transactions");
    for (batch, commit) in [("a", true), ("x", false), ("b", true)] {
        producer.begin_transaction().expect("begin_transaction");
        for i in 0..BATCH {
            let payload = format!("{batch}{i}");
            producer
                .send(BaseRecord::to(&topic).key(batch).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        // The aborted batch reaches the broker before the abort.
        producer.flush(REQUEST_TIMEOUT).expect("flush");
        if commit {
            producer
                .commit_transaction(REQUEST_TIMEOUT)
                .expect("commit_transaction");
        } else {
            producer
                .abort_transaction(REQUEST_TIMEOUT)
                .expect("abort_transaction");
        }
    }
    let failed = lock(&producer.context().failed).clone();
    assert!(failed.is_empty(), "delivery failed: {failed:?}");
    let committed: Vec<String> = (0..BATCH)
        .map(|i| format!("a{i}"))
        .chain((0..BATCH).map(|i| format!("b{i}")))
        .collect();
    let aborted: Vec<String> = (0..BATCH).map(|i| format!("x{i}")).collect();
    let all: Vec<String> = (0..BATCH)
        .map(|i| format!("a{i}"))
        .chain(aborted.iter().cloned())
        .chain((0..BATCH).map(|i| format!("b{i}")))
        .collect();

    // read_uncommitted sees everything that was written, in order.
    let uncommitted = read_until(&broker, &topic, "read_uncommitted", &all);
    assert_eq!(uncommitted, all, "read_uncommitted");

    // read_committed: every committed record once, in order. Whether it also shows the
    // aborted batch depends on the broker (the pinned tansu does: docs/kafka-testing.md).
    let read = read_until(&broker, &topic, "read_committed", &committed);
    let visible_aborted: Vec<&String> = read.iter().filter(|p| p.starts_with('x')).collect();
    let without_aborted: Vec<String> = read
        .iter()
        .filter(|p| !p.starts_with('x'))
        .cloned()
        .collect();
    assert_eq!(
        without_aborted, committed,
        "read_committed: committed records"
    );
    if broker.hides_aborted_transactions() {
        assert!(
            visible_aborted.is_empty(),
            "read_committed showed aborted records: {visible_aborted:?}"
        );
    }
    let reader = broker.consumer(&[]);
    eprintln!(
        "read_committed saw {} of {BATCH} aborted records; watermarks (low, high) {:?} \
         for {} records and 3 transaction markers",
        visible_aborted.len(),
        reader.fetch_watermarks(&topic, 0, REQUEST_TIMEOUT),
        all.len()
    );
}

/// Reads partition 0 of `topic` from the beginning with `isolation.level` = `isolation`
/// until every payload of `wanted` has been seen (counting, not asking where the end is);
/// the payloads read, in order.
fn read_until(broker: &Broker, topic: &str, isolation: &str, wanted: &[String]) -> Vec<String> {
    let consumer = broker.consumer(&[
        ("group.id", &unique_name("smoke-tx-reader")),
        ("isolation.level", isolation),
        ("enable.auto.commit", "false"),
    ]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let began = Instant::now();
    let mut read = Vec::new();
    let mut missing: BTreeSet<&String> = wanted.iter().collect();
    while !missing.is_empty() {
        assert!(
            began.elapsed() < PATIENCE,
            "{isolation}: {missing:?} not seen in {PATIENCE:?}; read {read:?}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let payload = text(m.expect("consume").payload());
            missing.remove(&payload);
            read.push(payload);
        }
    }
    read
}
