//! The input of the Kafka tests: the classic dataset as messages, and the oracle.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::broker::REQUEST_TIMEOUT;
use super::classic::ClassicEvent;
use super::*;

// ---------------------------------------------------------------------------------------
// The input
// ---------------------------------------------------------------------------------------

/// Where one produced message went.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
}

/// Keeps every delivery report.
#[derive(Debug, Default)]
pub struct Deliveries {
    delivered: Mutex<Vec<Delivery>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => lock(&self.delivered).push(Delivery {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, m)) => lock(&self.failed).push(format!(
                "{}: {e}",
                String::from_utf8_lossy(m.key().unwrap_or_default())
            )),
        }
    }
}

/// An idempotent producer of input messages that remembers where each one went.
pub struct InputProducer {
    producer: BaseProducer<Deliveries>,
    pub topic: String,
}

/// The JSON message of one event.
pub fn event_json(key: &str, value: i64, ts: i64) -> String {
    serde_json::json!({"key": key, "value": value, "ts": ts}).to_string()
}

impl InputProducer {
    pub fn new(bootstrap: &str, topic: &str) -> InputProducer {
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .unwrap_or_else(|e| panic!("input producer: {e}"));
        InputProducer {
            producer,
            topic: topic.to_string(),
        }
    }

    /// Sends one message keyed by `key` (to `partition`, or where the partitioner puts
    /// the key), waiting while the queue is full.
    pub fn send(&self, key: &str, payload: &[u8], partition: Option<i32>) {
        self.send_record(Some(key), payload, partition);
    }

    /// Sends one message with the key `key` (`None`: no key) to `partition`, or where
    /// the partitioner puts it, waiting while the queue is full.
    pub fn send_record(&self, key: Option<&str>, payload: &[u8], partition: Option<i32>) {
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
            }
        }
        self.producer.poll(Duration::ZERO);
    }

    /// Sends the classic events as JSON, keyed by key.
    pub fn send_events(&self, events: &[ClassicEvent], partition_of: Option<&dyn Fn(&str) -> i32>) {
        for e in events {
            let payload = event_json(&e.key, e.value, e.ts);
            self.send(&e.key, payload.as_bytes(), partition_of.map(|f| f(&e.key)));
        }
    }

    /// Sends the classic events as JSON regardless of their grouping key: `events[j]` is
    /// event `first + j` of the dataset, and event `i` goes to partition
    /// `i % partitions` with the message key `message_key(i)` (`None`: no key).
    pub fn send_spread(
        &self,
        events: &[ClassicEvent],
        first: usize,
        partitions: i32,
        message_key: MessageKey,
    ) {
        let n = usize::try_from(partitions)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("cannot spread over {partitions} partitions"));
        for (j, e) in events.iter().enumerate() {
            let i = first + j;
            let payload = event_json(&e.key, e.value, e.ts);
            let partition = i32::try_from(i % n).unwrap_or_else(|e| panic!("{e}"));
            let key = message_key.of(i);
            self.send_record(key.as_deref(), payload.as_bytes(), Some(partition));
        }
    }

    /// Waits until every message sent so far is delivered; panics on a failed delivery.
    pub fn flush(&self) {
        self.producer
            .flush(REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("flush input: {e}"));
        let failed = lock(&self.producer.context().failed).clone();
        assert!(failed.is_empty(), "input deliveries failed: {failed:?}");
    }

    /// After the dataset: one event per partition in `partitions`, with key
    /// `__flush_p<N>` and event time `ts`, so that every window of the data fires.
    pub fn send_sentinels(&self, partitions: impl IntoIterator<Item = i32>, ts: i64) {
        self.flush(); // the sentinels come after every event of the dataset
        for p in partitions {
            let key = format!("{SENTINEL_PREFIX}{p}");
            self.send(&key, event_json(&key, 0, ts).as_bytes(), Some(p));
        }
        self.flush();
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.producer.context().delivered).clone()
    }

    /// Per partition, the offset after its last delivered message: where a consumer
    /// that read everything has its position.
    pub fn ends(&self) -> BTreeMap<i32, i64> {
        let mut ends = BTreeMap::new();
        for d in self.deliveries() {
            let e = ends.entry(d.partition).or_insert(0);
            *e = (*e).max(d.offset + 1);
        }
        ends
    }

    /// The partition of every key delivered so far; panics when one key went to two
    /// partitions.
    pub fn key_partitions(&self) -> BTreeMap<String, i32> {
        let mut map = BTreeMap::new();
        for d in self.deliveries() {
            let first = *map.entry(d.key.clone()).or_insert(d.partition);
            assert_eq!(first, d.partition, "key {} went to two partitions", d.key);
        }
        map
    }
}

/// The message key of an input message that is not keyed by the grouping key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKey {
    /// No key at all.
    None,
    /// `e<i>` for event `i`: a key, but not the grouping key.
    EventIndex,
}

impl MessageKey {
    fn of(self, i: usize) -> Option<String> {
        match self {
            MessageKey::None => None,
            MessageKey::EventIndex => Some(format!("e{i}")),
        }
    }
}

/// Where the input events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Keyed by the grouping key, where the producer's partitioner puts the key.
    ByKey,
    /// Regardless of the grouping key: event `i` to partition `i % partitions`, with
    /// the given message key ([`InputProducer::send_spread`]).
    Spread {
        partitions: i32,
        message_key: MessageKey,
    },
}

/// Produces `events` (keyed by key, where the partitioner puts them) on a thread of its
/// own in 100 batches spread over `over`, then one sentinel per partition of
/// `s.input_partitions`; returns what [`InputProducer::key_partitions`] and
/// [`InputProducer::ends`] say at the end. The pause between batches is the pacing of
/// the stream, not a synchronisation.
pub fn produce_paced(
    s: &Scenario,
    events: &[ClassicEvent],
    over: Duration,
) -> std::thread::JoinHandle<(BTreeMap<String, i32>, BTreeMap<i32, i64>)> {
    produce_paced_placed(s, events, over, Placement::ByKey)
}

/// [`produce_paced`] with the events placed by `placement`. With
/// [`Placement::Spread`] a key is in many partitions, so the map of key partitions
/// returned is empty.
pub fn produce_paced_placed(
    s: &Scenario,
    events: &[ClassicEvent],
    over: Duration,
    placement: Placement,
) -> std::thread::JoinHandle<(BTreeMap<String, i32>, BTreeMap<i32, i64>)> {
    // Never hurried.
    produce_paced_until_hurried(s, events, over, placement, Default::default())
}

/// [`produce_paced_placed`], except that once `hurry` is set the events not sent yet go
/// at once, without pacing (then the sentinels, as always): for a test that needs the
/// stream to flow only until something has happened.
pub fn produce_paced_until_hurried(
    s: &Scenario,
    events: &[ClassicEvent],
    over: Duration,
    placement: Placement,
    hurry: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(BTreeMap<String, i32>, BTreeMap<i32, i64>)> {
    let bootstrap = s.bootstrap.clone();
    let topic = s.input.clone();
    let partitions = s.input_partitions;
    let sentinel = sentinel_ts(events);
    let events = events.to_vec();
    std::thread::spawn(move || {
        let producer = InputProducer::new(&bootstrap, &topic);
        let size = events.len().div_ceil(100).max(1);
        let step = over / 100;
        let began = Instant::now();
        let mut hurried = None;
        for (i, batch) in events.chunks(size).enumerate() {
            let due = began + step * u32::try_from(i).unwrap_or(u32::MAX);
            while !hurry.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(wait) = due.checked_duration_since(Instant::now()) else {
                    break;
                };
                // Pacing, woken every 50 ms to see whether to hurry.
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
            if hurried.is_none() && hurry.load(std::sync::atomic::Ordering::Relaxed) {
                hurried = Some((i * size, began.elapsed()));
            }
            match placement {
                Placement::ByKey => producer.send_events(batch, None),
                Placement::Spread {
                    partitions,
                    message_key,
                } => producer.send_spread(batch, i * size, partitions, message_key),
            }
        }
        producer.send_sentinels(0..partitions, sentinel);
        eprintln!(
            "input produced in {:.1} s{}",
            began.elapsed().as_secs_f64(),
            hurried.map_or(String::new(), |(sent, at)| format!(
                " (hurried after {:.1} s, from event {sent} of {})",
                at.as_secs_f64(),
                events.len()
            ))
        );
        let key_partitions = match placement {
            Placement::ByKey => producer.key_partitions(),
            Placement::Spread { .. } => BTreeMap::new(),
        };
        (key_partitions, producer.ends())
    })
}

/// The sentinels' event time for a dataset.
pub fn sentinel_ts(events: &[ClassicEvent]) -> i64 {
    events.iter().map(|e| e.ts).max().unwrap_or(classic::T0) + SENTINEL_LEAD_MS
}

/// What the job must output for `events`, by the naive oracle, sorted.
pub fn expected_rows(events: &[ClassicEvent]) -> Vec<Row> {
    use oracle::{Agg, AggFn, AggValue, ArgType, Event, KeyValue, Window};
    let input: Vec<Event> = events
        .iter()
        .map(|e| Event {
            keys: vec![KeyValue::Str(e.key.clone())],
            ts: e.ts,
            value: Some(e.value),
        })
        .collect();
    let aggs = [
        Agg {
            func: AggFn::Sum,
            arg: ArgType::Int,
        },
        Agg {
            func: AggFn::CountStar,
            arg: ArgType::Int,
        },
    ];
    let window = Window::Hop {
        size: SIZE_MS,
        slide: SLIDE_MS,
    };
    let mut rows: Vec<Row> = oracle::evaluate(&input, &window, &aggs)
        .into_iter()
        .map(|r| {
            let key = match &r.keys[..] {
                [KeyValue::Str(k)] => k.clone(),
                other => panic!("oracle key {other:?}"),
            };
            let int = |v: &AggValue| match v {
                AggValue::Int(i) => *i,
                other => panic!("oracle aggregate {other:?}"),
            };
            (
                key,
                r.window_start,
                r.window_end,
                int(&r.aggs[0]),
                int(&r.aggs[1]),
            )
        })
        .collect();
    rows.sort_unstable();
    rows
}
