//! Many records in one librdkafka call: the producing half of Tidewater's direct use of
//! librdkafka (`fetch` is the consuming half).
//!
//! rust-rdkafka's `send` produces one record per call, and each call builds a C string
//! of the topic's name, looks the topic up by that name under the client's lock and
//! reads the clock twice (the enqueue time, then again when the record joins its
//! partition): the clock alone was 4 % of the keyed job's CPU (BENCHMARKS.md).
//! librdkafka's `rd_kafka_produce_batch` takes a whole array: the topic is looked up
//! once, the clock read once, and every record gets that reading as its timestamp. It
//! cannot carry headers, so records with headers still go one at a time through
//! rust-rdkafka (`txn::produce`).
//!
//! Why this is sound:
//! - the topic handle and the message array live only for the call, while the producer
//!   is borrowed;
//! - librdkafka copies every key and value (`RD_KAFKA_MSG_F_COPY`) before it returns;
//! - a record's delivery opaque is null, which rust-rdkafka's delivery reports turn
//!   back into `()` or `0`: [`NullOpaque`] admits only those.
#![allow(unsafe_code)]

use std::ffi::{CString, c_void};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::IntoOpaque;
use tidewater_core::{Error, Result};

/// librdkafka's "let the partitioner choose".
const PARTITION_UA: i32 = -1;

/// Delivery opaques that a null pointer stands for: the records produced here carry
/// none, and rust-rdkafka rebuilds the opaque from that pointer in its delivery report.
pub(crate) trait NullOpaque: IntoOpaque {}
impl NullOpaque for () {}
impl NullOpaque for usize {}

/// One record to produce: its key, value and partition (none: the producer's
/// partitioner chooses).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: &'a [u8],
    pub(crate) partition: Option<i32>,
}

/// Produces `records` to `topic` in their order, timestamped with one reading of the
/// clock, waiting for room whenever librdkafka's queue is full. Any other error fails
/// the call, and records on either side of the failing one may have been queued: the
/// caller's transaction (or job) fails with it.
pub(crate) fn produce_all<'a, C>(
    producer: &BaseProducer<C>,
    topic: &str,
    records: impl IntoIterator<Item = Record<'a>>,
) -> Result<()>
where
    C: ProducerContext,
    C::DeliveryOpaque: NullOpaque,
{
    let mut records = records.into_iter().peekable();
    if records.peek().is_none() {
        return Ok(());
    }
    let handle = TopicHandle::new(producer, topic)?;
    let mut messages: Vec<rd::rd_kafka_message_t> = Vec::with_capacity(CHUNK);
    loop {
        messages.clear();
        messages.extend(records.by_ref().take(CHUNK).map(message));
        if messages.is_empty() {
            return Ok(());
        }
        produce_chunk(producer, &handle, topic, &mut messages)?;
    }
}

/// Records per librdkafka call: the call holds the topic's read lock throughout, and
/// the message array (18 KiB) is reused from cache call after call. A first version
/// with 4 096 per call did worse, measured with the old 100 ms linger (BENCHMARKS.md).
const CHUNK: usize = 256;

fn message(r: Record<'_>) -> rd::rd_kafka_message_t {
    rd::rd_kafka_message_t {
        err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
        rkt: std::ptr::null_mut(),
        partition: r.partition.unwrap_or(PARTITION_UA),
        // librdkafka copies, never writes through these (RD_KAFKA_MSG_F_COPY).
        payload: r.value.as_ptr().cast_mut().cast::<c_void>(),
        len: r.value.len(),
        key: r
            .key
            .map_or(std::ptr::null_mut(), |k| k.as_ptr().cast_mut().cast()),
        key_len: r.key.map_or(0, <[u8]>::len),
        offset: 0,
        _private: std::ptr::null_mut(),
    }
}

/// Produces `messages` in order, waiting out full queues.
fn produce_chunk<C>(
    producer: &BaseProducer<C>,
    handle: &TopicHandle<'_>,
    topic: &str,
    messages: &mut [rd::rd_kafka_message_t],
) -> Result<()>
where
    C: ProducerContext,
{
    let mut from = 0;
    while from < messages.len() {
        let rest = &mut messages[from..];
        let n = i32::try_from(rest.len()).unwrap_or(i32::MAX);
        // One named partition for all (the 'fixed' partitioner): librdkafka looks it up
        // and adds it to the transaction once per call instead of once per record.
        let (partition, flags) = match one_partition(rest) {
            Some(p) => (p, rd::RD_KAFKA_MSG_F_COPY),
            None => (
                PARTITION_UA,
                rd::RD_KAFKA_MSG_F_COPY | rd::RD_KAFKA_MSG_F_PARTITION,
            ),
        };
        // SAFETY: the topic handle is live (it borrows the producer); `rest` holds `n`
        // initialised messages whose key and value point into bytes the caller
        // borrows, copied by librdkafka before the call returns; it writes only their
        // `err` fields.
        unsafe {
            rd::rd_kafka_produce_batch(handle.0.as_ptr(), partition, flags, rest.as_mut_ptr(), n);
        }
        let taken = usize::try_from(n).unwrap_or(rest.len()).min(rest.len());
        let failed = rest[..taken]
            .iter()
            .position(|m| m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        match failed {
            None => from += taken,
            // librdkafka gives every message after a full queue the same error, so
            // what failed is a tail and the order holds: make room, go on from there.
            Some(i) if rest[i].err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL => {
                from += i;
                producer.poll(Duration::from_millis(10));
            }
            Some(i) => {
                let e = KafkaError::MessageProduction(RDKafkaErrorCode::from(rest[i].err));
                return Err(Error::runtime(format!(
                    "cannot produce to kafka topic '{topic}': {e}"
                )));
            }
        }
    }
    Ok(())
}

/// The partition every message names, if they all name the same one.
fn one_partition(messages: &[rd::rd_kafka_message_t]) -> Option<i32> {
    let p = messages.first()?.partition;
    (p != PARTITION_UA && messages.iter().all(|m| m.partition == p)).then_some(p)
}

/// An application handle of a producer's topic, destroyed when dropped; it borrows the
/// producer, whose client must outlive it.
struct TopicHandle<'p>(
    NonNull<rd::rd_kafka_topic_t>,
    std::marker::PhantomData<&'p ()>,
);

impl<'p> TopicHandle<'p> {
    fn new<C: ProducerContext>(producer: &'p BaseProducer<C>, topic: &str) -> Result<Self> {
        let name = CString::new(topic)
            .map_err(|_| Error::runtime(format!("kafka topic name '{topic}' holds a NUL")))?;
        // SAFETY: the client pointer is valid while `producer` is borrowed; a null
        // configuration takes the client's default topic configuration, as
        // rust-rdkafka's `send` does.
        let raw = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        NonNull::new(raw)
            .map(|h| Self(h, std::marker::PhantomData))
            .ok_or_else(|| Error::runtime(format!("librdkafka has no topic handle for '{topic}'")))
    }
}

impl Drop for TopicHandle<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and the client still lives
        // (the handle borrows it); queued records keep their own reference to the topic.
        unsafe { rd::rd_kafka_topic_destroy(self.0.as_ptr()) };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::Producer;
    use rdkafka::{Offset, TopicPartitionList};

    /// Records reach the partitions they name in their order, with their keys and
    /// values, through a queue too small for them (every full queue waited out), and
    /// the partitioner places the ones that name none. Runs of one partition longer
    /// than a librdkafka call take the one-partition call, the others the per-record one.
    #[test]
    fn records_arrive_in_order_through_a_full_queue() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 3, 1).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("queue.buffering.max.messages", "50")
            .set("linger.ms", "1")
            .create()
            .expect("producer");
        let values: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let records = (0..1000usize).map(|i| Record {
            key: (!i.is_multiple_of(5)).then(|| keys[i].as_bytes()),
            value: values[i].as_bytes(),
            partition: (i < 900).then_some((i / 300) as i32),
        });
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        produce_all(&producer, "t", records).expect("produced");
        producer.flush(Duration::from_secs(30)).expect("delivered");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "produce-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition_offset("t", p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assigned");
        let mut read: Vec<Vec<(Option<String>, String)>> = vec![Vec::new(); 3];
        let started = std::time::Instant::now();
        while read.iter().map(Vec::len).sum::<usize>() < 1000 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {:?} read",
                read.iter().map(Vec::len).collect::<Vec<_>>()
            );
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.expect("no consumer error");
            let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            let ts = m.timestamp().to_millis().expect("a create time");
            assert!(ts >= before, "timestamp {ts} before the call at {before}");
            read[m.partition() as usize].push((text(m.key()), text(m.payload()).expect("value")));
        }
        let expected = |i: usize| {
            (
                (!i.is_multiple_of(5)).then(|| keys[i].clone()),
                values[i].clone(),
            )
        };
        for (p, got) in read.iter().enumerate() {
            let named: Vec<_> = (p * 300..(p + 1) * 300).map(expected).collect();
            let mine: Vec<_> = got
                .iter()
                .filter(|(_, v)| v[1..].parse::<usize>().expect("v<n>") < 900)
                .cloned()
                .collect();
            assert_eq!(mine, named, "partition {p}");
        }
        // The last 100 went where the partitioner put them, each once, in order within
        // its partition.
        let mut placed: Vec<usize> = Vec::new();
        for got in &read {
            let mut last = None;
            for (_, v) in got {
                let i: usize = v[1..].parse().expect("v<n>");
                if i >= 900 {
                    assert!(last < Some(i), "{i} after {last:?}");
                    last = Some(i);
                    placed.push(i);
                }
            }
        }
        placed.sort_unstable();
        assert_eq!(placed, (900..1000).collect::<Vec<_>>());
    }

    /// The one-partition call is taken only when every record names the same partition.
    #[test]
    fn one_partition_only_when_all_name_the_same() {
        let named = |ps: &[Option<i32>]| -> Vec<rd::rd_kafka_message_t> {
            ps.iter()
                .map(|&partition| {
                    message(Record {
                        key: None,
                        value: b"v",
                        partition,
                    })
                })
                .collect()
        };
        assert_eq!(one_partition(&named(&[])), None);
        assert_eq!(one_partition(&named(&[Some(2), Some(2), Some(2)])), Some(2));
        assert_eq!(one_partition(&named(&[Some(2), Some(1)])), None);
        assert_eq!(one_partition(&named(&[Some(2), None])), None);
        assert_eq!(one_partition(&named(&[None, None])), None);
    }

    /// A record larger than the producer takes fails the call with librdkafka's
    /// reason; the ones before it are queued.
    #[test]
    fn an_oversized_record_is_an_error_naming_the_topic() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.max.bytes", "1000")
            .create()
            .expect("producer");
        let big = vec![b'x'; 5000];
        let records = [b"a".as_slice(), &big, b"b"].map(|value| Record {
            key: None,
            value,
            partition: Some(0),
        });
        let e = produce_all(&producer, "t", records).expect_err("too large");
        let text = e.to_string();
        assert!(text.contains("'t'") && text.contains("too large"), "{text}");
        assert!(
            producer.in_flight_count() >= 1,
            "the record before it is queued"
        );
    }
}
