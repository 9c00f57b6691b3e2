//! Part 2 of the Kafka benchmark: what the Kafka client alone costs per event of the
//! job at full speed, with no engine in between (`kafka.rs` says how to run it).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::broker::{Broker, unique_name};
use super::common::env_num;
use super::{clock_ticks, cpu_ticks, extra_props};

/// CPU seconds this benchmark process has used so far.
fn own_cpu() -> f64 {
    cpu_ticks(std::process::id()).unwrap_or(0) as f64 / clock_ticks().0
}

/// Messages per second one consumer doing nothing else reads from the broker with the
/// job's fetch settings, and per CPU-second of this process (what the client costs per
/// message consumed).
pub(crate) fn bare_consume(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    total: i64,
) -> (f64, f64) {
    let group = unique_name("bench-bare");
    // The job's fetch settings (`client_defaults::consumer_defaults`): librdkafka's own stop
    // fetching for a second whenever 100 000 messages wait.
    let mut props = vec![
        ("group.id", group.as_str()),
        ("enable.auto.commit", "false"),
        ("fetch.queue.backoff.ms", "10"),
        ("queued.min.messages", "20000"),
    ];
    let extra = extra_props();
    props.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let consumer: BaseConsumer = broker.consumer(&props);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let cpu = own_cpu();
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
    (
        total as f64 / started.elapsed().as_secs_f64(),
        total as f64 / (own_cpu() - cpu),
    )
}

/// How many producers the client-alone rows use (default: one per partition), and
/// whether they are transactional (default) or plain.
pub(crate) fn client_producers(partitions: i32) -> (i32, bool) {
    (
        env_num("TIDEWATER_BENCH_KAFKA_CLIENT_PRODUCERS", partitions),
        std::env::var("TIDEWATER_BENCH_KAFKA_CLIENT_TXN").map_or(true, |v| v != "0"),
    )
}

/// Records per CPU-second of this process that `producers` transactional producers
/// (one per partition of a new topic, as the job's tasks have one each) take to write
/// `records` records shaped like the job's results, committing every second, with the
/// job's four `tidewater.*` headers on each record or none: what the Kafka client alone
/// costs for the job's output at full speed, without any encoding or aggregation.
pub(crate) fn transactional_produce(
    broker: &Broker,
    producers: i32,
    records: u64,
    headers: bool,
) -> f64 {
    use rdkafka::message::{Header, OwnedHeaders};
    let (producers, txn) = client_producers(producers);
    let topic = unique_name("bench-txn-client");
    broker.create_topic(&topic, producers);
    let all: Vec<BaseProducer> = (0..producers)
        .map(|p| {
            let mut config = broker.config();
            // As the job's task producers batch with 1 s commits
            // (`client_defaults::batch_defaults`: the commit interval).
            config.set("linger.ms", "1000");
            if txn {
                config.set("transactional.id", unique_name(&format!("client-{p}")));
            }
            for (k, v) in extra_props() {
                config.set(k, v);
            }
            let producer: BaseProducer = config.create().unwrap();
            if txn {
                producer.init_transactions(Duration::from_secs(30)).unwrap();
                producer.begin_transaction().unwrap();
            }
            producer
        })
        .collect();
    let payloads: Vec<String> = (0..10_007)
        .map(|i| {
            format!(
                "{{\"key\":\"k{}\",\"window_start\":\"2023-11-14 22:13:{:02}.000\",\"window_end\":\"2023-11-14 22:14:{:02}.000\",\"total\":{},\"cnt\":{}}}",
                i % 10_000,
                i % 60,
                i % 60,
                i * 37 % 100_000,
                i % 200
            )
        })
        .collect();
    let tags = [
        ("tidewater.task", "bench-in-12345-6-1796464405938/3"),
        (
            "tidewater.generation",
            "2.18ee52df9afe415f-32d4-1032430accf1818e",
        ),
        ("tidewater.checkpoint", "17"),
        (
            "tidewater.from",
            "1.18ee52dd3416a8dc-32d3-4fb7b762d076caa8/16",
        ),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, v)| {
        h.insert(Header {
            key,
            value: Some(v),
        })
    });
    let commit = |all: &[BaseProducer]| {
        if !txn {
            for producer in all {
                producer.flush(Duration::from_secs(30)).unwrap();
            }
            return;
        }
        for producer in all {
            producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap();
            producer.begin_transaction().unwrap();
        }
    };
    let cpu = own_cpu();
    let mut since = Instant::now();
    // As the job's tasks do: a burst of records per task (a watermark's results), then
    // its delivery reports served.
    const BURST: u64 = 1024;
    for i in 0..records.div_ceil(BURST) {
        let p = (i % producers as u64) as i32;
        let producer = &all[p as usize];
        for j in i * BURST..records.min((i + 1) * BURST) {
            let payload = &payloads[(j % payloads.len() as u64) as usize];
            loop {
                let mut r = BaseRecord::<(), str>::to(&topic)
                    .partition(p)
                    .payload(payload);
                if headers {
                    r = r.headers(tags.clone());
                }
                match producer.send(r) {
                    Ok(()) => break,
                    Err(_) => {
                        producer.poll(Duration::from_millis(5));
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
        if since.elapsed() >= Duration::from_secs(1) {
            commit(&all);
            since = Instant::now();
        }
    }
    commit(&all);
    records as f64 / (own_cpu() - cpu)
}
