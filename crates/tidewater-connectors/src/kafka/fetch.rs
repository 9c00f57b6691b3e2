//! Batch reads of fetched messages: with `produce`, where Tidewater calls librdkafka directly.
//!
//! rust-rdkafka hands out one message per `poll`, and each costs an event, an `Arc`, a
//! lock of the partition and three clock reads: reading one message at a time, a member
//! spent about as much CPU consuming as producing its 1.4 results (BENCHMARKS.md).
//! librdkafka's `rd_kafka_consume_batch_queue` takes thousands at once, but rust-rdkafka
//! does not wrap it, and it must not read the consumer's own queue: that queue also
//! carries the rebalance events, which the batch call would answer by itself with an
//! empty assignment behind the tasks' backs. So a member routes every partition it is
//! assigned into a [`FetchQueue`] of its own, which only ever holds fetched messages
//! (and per-partition consumer errors), reads it in batches, and keeps polling the
//! consumer through rust-rdkafka for rebalances and errors.
//!
//! Why this is sound, by construction of the types:
//! - a [`FetchQueue`] holds an `Arc` of its consumer, so librdkafka's handle outlives
//!   the queue and every message taken from it;
//! - a [`Batch`] borrows its queue and destroys its messages when dropped, and every
//!   [`Fetched`] view borrows the batch, so no view outlives the message it reads;
//! - librdkafka's queues take their own lock on every operation, so the queue may be
//!   shared between threads (the rebalance callback routes into it).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tidewater_core::{Error, Result};

/// A librdkafka queue of the consumer's fetched messages, read in batches.
pub(crate) struct FetchQueue<C: ConsumerContext + 'static> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// Keeps librdkafka's handle alive as long as the queue (see the module docs).
    consumer: Arc<BaseConsumer<C>>,
}

// SAFETY: every librdkafka queue operation takes the queue's own lock; the handle is
// destroyed only in `Drop`, when no other reference exists.
unsafe impl<C: ConsumerContext> Send for FetchQueue<C> {}
// SAFETY: as for `Send`: `route` and `read` are safe to call from several threads.
unsafe impl<C: ConsumerContext> Sync for FetchQueue<C> {}

impl<C: ConsumerContext> std::fmt::Debug for FetchQueue<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchQueue").finish_non_exhaustive()
    }
}

impl<C: ConsumerContext> FetchQueue<C> {
    /// A new, empty queue of `consumer`'s.
    pub(crate) fn new(consumer: Arc<BaseConsumer<C>>) -> Result<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives; the queue keeps it.
        let raw = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        let queue = NonNull::new(raw)
            .ok_or_else(|| Error::runtime("librdkafka could not create a fetch queue"))?;
        Ok(Self { queue, consumer })
    }

    /// Sends the messages fetched for `topic`/`partition` here rather than to the
    /// consumer's queue. Call it before the partition is assigned: what was fetched
    /// earlier and already handed to the consumer's queue stays there, and reading both
    /// queues would reorder the partition. Routing a partition twice changes nothing; the
    /// route stays when the partition is revoked (librdkafka drops what was fetched for
    /// an older assignment).
    pub(crate) fn route(&self, topic: &str, partition: i32) -> Result<()> {
        let name = CString::new(topic)
            .map_err(|_| Error::runtime(format!("kafka topic name '{topic}' holds a NUL")))?;
        // SAFETY: the client pointer is valid while `self.consumer` lives and `name`
        // outlives the call. The partition's queue handle is only used here: the route
        // stays in librdkafka's partition once the handle is destroyed.
        unsafe {
            let partition_queue = rd::rd_kafka_queue_get_partition(
                self.consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            );
            if partition_queue.is_null() {
                return Err(Error::runtime(format!(
                    "librdkafka has no queue for {topic}/{partition}"
                )));
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        Ok(())
    }

    /// Waits up to `timeout` for a first message, then takes up to `max` that are there.
    pub(crate) fn read(&self, timeout: Duration, max: usize) -> Batch<'_> {
        let mut batch = Batch {
            messages: Vec::with_capacity(max),
            queue: PhantomData,
        };
        // librdkafka's batch call waits until it has all it was asked for or the time
        // is up: wait for one message alone, then take what else is there.
        if timeout > Duration::ZERO {
            self.take(&mut batch, timeout, 1);
            if batch.len() == 0 {
                return batch;
            }
        }
        if batch.len() < max {
            self.take(&mut batch, Duration::ZERO, max);
        }
        batch
    }

    /// Appends to `batch` up to `max` messages in total, waiting up to `timeout` until
    /// it holds that many.
    fn take(&self, batch: &mut Batch<'_>, timeout: Duration, max: usize) {
        let messages = &mut batch.messages;
        let have = messages.len();
        let want = max.min(messages.capacity()).saturating_sub(have);
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue lives as long as `self`; librdkafka writes at most `want`
        // message pointers into `messages`' spare capacity and returns how many (or -1).
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                ms,
                messages.as_mut_ptr().add(have),
                want,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            // SAFETY: librdkafka initialised the `n <= want` elements after `have`.
            unsafe { messages.set_len(have + n.min(want)) };
        }
    }
}

impl<C: ConsumerContext> Drop for FetchQueue<C> {
    fn drop(&mut self) {
        // SAFETY: the consumer is still alive (the field drops after this); the handle
        // owns the queue, so destroying it also disables it: partitions still routed
        // here drop what they fetch from now on.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Messages taken from a [`FetchQueue`]; destroyed when the batch is dropped.
pub(crate) struct Batch<'q> {
    messages: Vec<*mut rd::rd_kafka_message_t>,
    queue: PhantomData<&'q ()>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("messages", &self.messages.len())
            .finish()
    }
}

/// One fetched message, borrowed from its [`Batch`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fetched<'b> {
    pub(crate) topic: &'b str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'b [u8]>,
    pub(crate) payload: Option<&'b [u8]>,
}

impl Batch<'_> {
    /// How many messages (and consumer errors) the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// The messages in the order of their partitions, or the error librdkafka put in a
    /// message's place (`PartitionEOF` as rust-rdkafka reports it).
    pub(crate) fn iter(
        &self,
    ) -> impl Iterator<Item = std::result::Result<Fetched<'_>, KafkaError>> {
        // A batch holds runs of one partition: its topic's name is read once per run.
        let mut topic: (*const rd::rd_kafka_topic_t, &str) = (std::ptr::null(), "");
        self.messages.iter().map(move |&m| {
            // SAFETY: `m` came from librdkafka and lives until the batch is dropped,
            // which every returned view borrows.
            let m = unsafe { &*m };
            if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(
                    if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                        KafkaError::PartitionEOF(m.partition)
                    } else {
                        KafkaError::MessageConsumption(RDKafkaErrorCode::from(m.err))
                    },
                );
            }
            if m.rkt.cast_const() != topic.0 {
                let name = if m.rkt.is_null() {
                    ""
                } else {
                    // SAFETY: the topic handle lives as long as the message holding it.
                    let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(m.rkt)) };
                    // Kafka topic names are ASCII; anything else matches no task.
                    name.to_str().unwrap_or_default()
                };
                topic = (m.rkt.cast_const(), name);
            }
            Ok(Fetched {
                topic: topic.1,
                partition: m.partition,
                offset: m.offset,
                // SAFETY: librdkafka's pointers and lengths, valid as the message is.
                key: unsafe { bytes(m.key, m.key_len) },
                // SAFETY: as for the key.
                payload: unsafe { bytes(m.payload, m.len) },
            })
        })
    }
}

/// `len` bytes at `p`, or `None` for a null pointer.
///
/// # Safety
/// `p` must be null or point at `len` bytes that stay valid and unchanged for `'a`.
unsafe fn bytes<'a>(p: *const c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise.
    (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for &m in &self.messages {
            // SAFETY: each message was handed to us by librdkafka exactly once, and no
            // view of it outlives the batch.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    fn wall_limit(started: std::time::Instant, what: &str) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
    }

    /// A routed partition's messages come out of the fetch queue in offset order with
    /// their keys and payloads, never more than asked for at once, and then its end;
    /// an unrouted partition's messages stay on the consumer's own queue.
    #[test]
    fn routed_partitions_are_read_in_batches_and_the_rest_stays_with_the_consumer() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 2, 1).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("producer");
        for (partition, n) in [(0, 100), (1, 30)] {
            for i in 0..n {
                let (key, value) = (format!("k{i}"), format!("v{partition}-{i}"));
                producer
                    .send(
                        BaseRecord::to("t")
                            .partition(partition)
                            .key(&key)
                            .payload(&value),
                    )
                    .map_err(|(e, _)| e)
                    .expect("queued");
            }
        }
        producer.flush(Duration::from_secs(30)).expect("delivered");

        let consumer: Arc<BaseConsumer> = Arc::new(
            ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .set("group.id", "fetch-test")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .create()
                .expect("consumer"),
        );
        let fetch = FetchQueue::new(consumer.clone()).expect("queue");
        fetch.route("t", 0).expect("routed");
        fetch.route("t", 0).expect("routing twice changes nothing");
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset("t", p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assigned");

        let started = std::time::Instant::now();
        let mut read = Vec::new();
        let mut ended = false;
        while !ended {
            wall_limit(started, "partition 0");
            let batch = fetch.read(Duration::from_millis(100), 7);
            assert!(batch.len() <= 7, "{} messages, 7 asked for", batch.len());
            for m in batch.iter() {
                match m {
                    Ok(m) => read.push((
                        m.topic.to_string(),
                        m.partition,
                        m.offset,
                        m.key.map(<[u8]>::to_vec),
                        m.payload.map(<[u8]>::to_vec),
                    )),
                    Err(KafkaError::PartitionEOF(p)) => {
                        assert_eq!(p, 0, "only partition 0 is routed");
                        ended = read.len() == 100;
                    }
                    Err(e) => panic!("unexpected consumer error: {e}"),
                }
            }
        }
        let expected: Vec<_> = (0..100)
            .map(|i| {
                (
                    "t".to_string(),
                    0,
                    i64::from(i),
                    Some(format!("k{i}").into_bytes()),
                    Some(format!("v0-{i}").into_bytes()),
                )
            })
            .collect();
        assert_eq!(read, expected);

        let mut other = Vec::new();
        while other.len() < 30 {
            wall_limit(started, "partition 1");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                other.push((m.partition(), m.offset()));
            }
        }
        assert!(other.iter().all(|&(p, _)| p == 1), "{other:?}");
        assert_eq!(
            other.iter().map(|&(_, o)| o).collect::<Vec<_>>(),
            (0..30).collect::<Vec<i64>>()
        );
        assert_eq!(fetch.read(Duration::ZERO, 10).len(), 0);
    }
}
