//! A task's transactional side: its producer, which attempt it is, and the commit of
//! one checkpoint — what the task wrote, its state snapshot on the changelog and its
//! input offsets in one Kafka transaction. Input and window tasks share it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};

use super::changelog::{
    H_CHECKPOINT, H_FROM, H_GEN, H_LINEAGE, H_TASK, Mark, from_header, snapshot_records,
};
use super::encode::RecordEncoder;
use super::options::{KafkaSinkOptions, Partitioner};
use super::produce::{NullOpaque, Record, produce_all};
use super::repartition::{counter, lineage_header, next_lineage};
use super::tasks::Shared;

/// How long one transactional call may wait for the broker.
pub(crate) const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how output rows are written.
#[derive(Debug)]
pub(crate) struct OutputTarget {
    pub(crate) topic: String,
    encoder: RecordEncoder,
    route: Route,
    /// 'sink.transaction-headers': records carry their transaction's headers.
    tagged: bool,
}

/// Which partition each record goes to.
#[derive(Debug)]
struct Route {
    partitioner: Partitioner,
    partitions: i32,
    /// The partition of 'fixed', the next one of 'round-robin'.
    next: i32,
}

impl Route {
    /// The next record's partition; none: librdkafka's partitioner chooses.
    fn next(&mut self) -> Option<i32> {
        match self.partitioner {
            Partitioner::Default => None,
            Partitioner::Fixed => Some(self.next),
            Partitioner::RoundRobin => {
                let p = self.next;
                self.next = (self.next + 1) % self.partitions;
                Some(p)
            }
        }
    }
}

impl OutputTarget {
    /// `index` picks the partition of the 'fixed' partitioner (a sink subtask or an
    /// input partition).
    pub(crate) fn new<C: ProducerContext>(
        o: &KafkaSinkOptions,
        producer: &BaseProducer<C>,
        index: i32,
    ) -> Result<Self> {
        let partitions = match o.partitioner {
            Partitioner::Default => 0,
            _ => {
                let md = producer
                    .client()
                    .fetch_metadata(Some(&o.topic), TXN_TIMEOUT)
                    .map_err(|e| Error::runtime(format!("kafka topic '{}': {e}", o.topic)))?;
                md.topics()
                    .iter()
                    .find(|t| t.name() == o.topic)
                    .map_or(0, |t| t.partitions().len() as i32)
            }
        };
        if o.partitioner != Partitioner::Default && partitions == 0 {
            return Err(Error::runtime(format!(
                "kafka topic '{}' does not exist (sink table '{}')",
                o.topic, o.table
            )));
        }
        Ok(Self {
            topic: o.topic.clone(),
            encoder: RecordEncoder::new(
                o.format.clone(),
                o.key.as_ref().map(|k| (k.format.clone(), k.fields.clone())),
            ),
            route: Route {
                partitioner: o.partitioner,
                partitions,
                next: if partitions > 0 {
                    index % partitions
                } else {
                    0
                },
            },
            tagged: o.transaction_headers,
        })
    }

    /// Encodes `batch` and produces its records, each with `headers` if any; returns
    /// how many. Without headers they go in one librdkafka call (`produce_all`, which
    /// cannot carry headers), else one at a time.
    pub(crate) fn send_batch<C>(
        &mut self,
        producer: &BaseProducer<C>,
        batch: &RecordBatch,
        headers: Option<&OwnedHeaders>,
    ) -> Result<usize>
    where
        C: ProducerContext,
        C::DeliveryOpaque: NullOpaque + Clone + Default,
    {
        let records = self.encoder.encode(batch)?;
        let route = &mut self.route;
        if headers.is_none() {
            let all = records.iter().map(|(key, value)| Record {
                key,
                value,
                partition: route.next(),
            });
            produce_all(producer, &self.topic, all)?;
        } else {
            let extra = Extra {
                headers,
                timestamp: Some(now_millis()),
            };
            for (key, value) in records.iter() {
                let partition = route.next();
                let opaque = C::DeliveryOpaque::default();
                produce(producer, &self.topic, partition, key, value, extra, opaque)?;
            }
        }
        Ok(records.len())
    }

    /// Produces `outputs` as records of `txn`'s open transaction, each with its headers
    /// when the sink asks for them, and counts them.
    pub(crate) fn write(
        &mut self,
        txn: &TaskTxn,
        outputs: &[RecordBatch],
        metrics: &JobMetrics,
    ) -> Result<()> {
        let headers = self.tagged.then(|| txn.headers());
        for b in outputs {
            let n = self.send_batch(txn.producer(), b, headers.as_ref())?;
            JobMetrics::add(&metrics.records_out, n as u64);
        }
        Ok(())
    }
}

/// What a record carries besides its key and value.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Extra<'a> {
    /// Headers, copied into the record (librdkafka takes ownership of a record's).
    pub(crate) headers: Option<&'a OwnedHeaders>,
    /// The record's timestamp in epoch milliseconds; none: librdkafka reads the clock.
    /// Records produced together share one reading: one clock read per batch, not two
    /// per record.
    pub(crate) timestamp: Option<i64>,
}

/// Now, in epoch milliseconds (a record timestamp).
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Produces one record, waiting for room when librdkafka's queue is full.
pub(crate) fn produce<C>(
    producer: &BaseProducer<C>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: &[u8],
    extra: Extra<'_>,
    opaque: C::DeliveryOpaque,
) -> Result<()>
where
    C: ProducerContext,
    C::DeliveryOpaque: Clone,
{
    loop {
        let mut r = BaseRecord::with_opaque_to(topic, opaque.clone()).payload(value);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(p) = partition {
            r = r.partition(p);
        }
        if let Some(h) = extra.headers {
            r = r.headers(h.clone());
        }
        if let Some(t) = extra.timestamp {
            r = r.timestamp(t);
        }
        match producer.send(r) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => {
                return Err(Error::runtime(format!(
                    "cannot produce to kafka topic '{topic}': {e}"
                )));
            }
        }
    }
}

/// Waits until every record `producer` was given is delivered (or failed), serving the
/// delivery reports. Not rust-rdkafka's `flush`: it waits in steps of 100 ms, since its
/// `poll` returns only once its whole timeout has passed (every checkpoint took at least
/// 100 ms, the member's partitions unread meanwhile), and a `poll` with a timeout under
/// a millisecond spins on the clock. Here: serve what is there, else sleep 1 ms.
pub(crate) fn flush<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> std::result::Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        let waiting = producer.in_flight_count();
        // Serves one queued event: a batch of delivery reports.
        producer.poll(Duration::ZERO);
        match producer.flush(Duration::ZERO) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if Instant::now() < deadline =>
            {
                if producer.in_flight_count() >= waiting {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            done => return done,
        }
    }
}

/// Delivery reports of a task's producer: the offset of the snapshot's manifest, and
/// the first failure.
#[derive(Debug, Default)]
pub(crate) struct TaskDeliveries {
    manifest_offset: Mutex<Option<i64>>,
    failed: Mutex<Option<String>>,
}

/// Opaque tag of the manifest record.
const MANIFEST: usize = 1;

impl ClientContext for TaskDeliveries {}

impl ProducerContext for TaskDeliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        match result {
            Ok(m) if tag == MANIFEST => {
                if let Ok(mut o) = self.manifest_offset.lock() {
                    *o = Some(rdkafka::Message::offset(m));
                }
            }
            Ok(_) => {}
            Err((e, _)) => {
                if let Ok(mut f) = self.failed.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// A new generation id, `<counter>.<unique>`: unique per task attempt, across processes
/// and machines; `counter` is one more than the restored generation's
/// (`repartition::counter`).
fn new_generation(counter: u64) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{counter}.{nanos:x}-{:x}-{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed) ^ rand::random::<u64>()
    )
}

/// Why a checkpoint failed.
#[derive(Debug)]
pub(crate) enum CheckpointError {
    /// Another producer with this task's transactional id took over: this instance is a
    /// zombie for the partition and must let it go.
    Fenced(String),
    /// Anything else: the task restarts from its last committed checkpoint.
    Failed(Error),
}

impl From<Error> for CheckpointError {
    fn from(e: Error) -> Self {
        CheckpointError::Failed(e)
    }
}

pub(crate) fn txn_error(what: &str, e: &KafkaError) -> CheckpointError {
    let fenced = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    ) || matches!(e, KafkaError::Transaction(t) if t.is_fatal());
    let text = format!("{what}: {e}");
    if fenced {
        CheckpointError::Fenced(text)
    } else {
        CheckpointError::Failed(Error::runtime(text))
    }
}

/// The transactional side of one task attempt.
pub(crate) struct TaskTxn {
    /// The task's name (header `tidewater.task`).
    pub(crate) id: String,
    producer: BaseProducer<TaskDeliveries>,
    /// Where its snapshots go.
    changelog: String,
    changelog_partition: i32,
    generation: String,
    /// Last committed checkpoint (0: none yet).
    epoch: u64,
    from: Option<(String, u64)>,
    lineage: Vec<(String, u64)>,
    metrics: Arc<JobMetrics>,
}

impl std::fmt::Debug for TaskTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskTxn")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl TaskTxn {
    /// Creates the producer of `transactional_id` and fences every earlier producer of
    /// it, aborting its open transaction: from here on no older attempt can commit, so
    /// the committed offsets read next are final.
    pub(crate) fn fence(
        shared: &Shared,
        transactional_id: &str,
        id: String,
        changelog: String,
        changelog_partition: i32,
    ) -> Result<Self> {
        let mut config = shared.producer_config.clone();
        config.set("transactional.id", transactional_id);
        let producer: BaseProducer<TaskDeliveries> = config
            .create_with_context(TaskDeliveries::default())
            .map_err(|e| Error::runtime(format!("task {id}: cannot create producer: {e}")))?;
        producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(|e| Error::runtime(format!("task {id}: cannot start transactions: {e}")))?;
        Ok(Self {
            id,
            producer,
            changelog,
            changelog_partition,
            generation: String::new(),
            epoch: 0,
            from: None,
            lineage: Vec::new(),
            metrics: shared.job.metrics.clone(),
        })
    }

    /// Starts the attempt after `restored` (none: a fresh start) and opens its first
    /// transaction.
    pub(crate) fn start(&mut self, restored: Option<&Mark>) -> Result<()> {
        self.generation = new_generation(restored.map_or(1, |m| counter(&m.generation) + 1));
        self.epoch = restored.map_or(0, |m| m.n);
        self.from = restored.map(|m| (m.generation.clone(), m.n));
        self.lineage = restored.map(next_lineage).unwrap_or_default();
        self.producer.begin_transaction().map_err(|e| {
            Error::runtime(format!("task {}: cannot begin a transaction: {e}", self.id))
        })
    }

    pub(crate) fn producer(&self) -> &BaseProducer<TaskDeliveries> {
        &self.producer
    }

    pub(crate) fn generation(&self) -> &str {
        &self.generation
    }

    /// The checkpoint the open transaction will commit.
    pub(crate) fn checkpoint(&self) -> u64 {
        self.epoch + 1
    }

    /// True when the attempt started from a checkpoint.
    pub(crate) fn restored(&self) -> bool {
        self.from.is_some()
    }

    /// The four headers of everything the open transaction writes.
    pub(crate) fn headers(&self) -> OwnedHeaders {
        let n = self.checkpoint().to_string();
        let from = from_header(self.from.as_ref());
        [
            (H_TASK, self.id.as_str()),
            (H_GEN, self.generation.as_str()),
            (H_CHECKPOINT, n.as_str()),
            (H_FROM, from.as_str()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, v)| {
            h.insert(Header {
                key,
                value: Some(v),
            })
        })
    }

    /// Commits checkpoint [`TaskTxn::checkpoint`]: the snapshot `states` goes to the
    /// changelog; `offsets` (topic, partition, next offset) and the snapshot's manifest
    /// offset on the changelog are committed for the group, all in the open transaction
    /// with what the task wrote; then the next transaction begins. Returns the
    /// checkpoint committed.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        states: &[Vec<RecordBatch>],
        offsets: &[(&str, i32, i64)],
    ) -> std::result::Result<u64, CheckpointError> {
        let started = Instant::now();
        let n = self.checkpoint();
        let records = snapshot_records(states)?;
        let headers = self.headers();
        let lineage = lineage_header(&self.lineage);
        let mut bytes = 0;
        for (i, r) in records.iter().enumerate() {
            let mut h = headers.clone();
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_str()),
                });
            }
            let tag = if i == 0 {
                h = h.insert(Header {
                    key: H_LINEAGE,
                    value: Some(lineage.as_str()),
                });
                MANIFEST
            } else {
                0
            };
            bytes += r.value.len();
            produce(
                &self.producer,
                &self.changelog,
                Some(self.changelog_partition),
                Some(r.key.as_bytes()),
                &r.value,
                Extra {
                    headers: Some(&h),
                    timestamp: None,
                },
                tag,
            )?;
        }
        flush(&self.producer, TXN_TIMEOUT)
            .map_err(|e| txn_error(&format!("task {}: flush", self.id), &e))?;
        let ctx = self.producer.context();
        if let Some(e) = ctx.failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(CheckpointError::Failed(Error::runtime(format!(
                "task {}: a record was not delivered: {e}",
                self.id
            ))));
        }
        let Some(first) = ctx.manifest_offset.lock().ok().and_then(|mut o| o.take()) else {
            return Err(CheckpointError::Failed(Error::runtime(format!(
                "task {}: no delivery report for the snapshot",
                self.id
            ))));
        };
        // The input positions, and where the snapshot's manifest is: committed together.
        let mut tpl = TopicPartitionList::new();
        let pointer = (self.changelog.as_str(), self.changelog_partition, first);
        for (topic, p, o) in offsets.iter().chain([&pointer]) {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(|e| txn_error("offset", &e))?;
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            CheckpointError::Failed(Error::runtime("the consumer has no group metadata"))
        })?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)
            .map_err(|e| txn_error(&format!("task {}: send offsets", self.id), &e))?;
        self.producer
            .commit_transaction(TXN_TIMEOUT)
            .map_err(|e| txn_error(&format!("task {}: commit", self.id), &e))?;
        self.epoch = n;
        self.producer
            .begin_transaction()
            .map_err(|e| txn_error(&format!("task {}: begin", self.id), &e))?;
        let ms = started.elapsed().as_millis() as u64;
        let stats = &self.metrics.checkpoints;
        JobMetrics::add(&stats.completed, 1);
        stats.last_epoch.store(n, Ordering::Relaxed);
        stats.last_duration_ms.store(ms, Ordering::Relaxed);
        stats.last_bytes.store(bytes as u64, Ordering::Relaxed);
        tracing::debug!(task = %self.id, checkpoint = n, ms, bytes, "task checkpoint committed");
        Ok(n)
    }

    /// Gives the attempt up: the open transaction is aborted (if the producer still
    /// may), so nothing of it becomes visible to read_committed.
    pub(crate) fn abort(self) {
        if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
            tracing::debug!(task = %self.id, "abort: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;

    /// 'fixed' sends every record to the partition of its index, 'round-robin' cycles
    /// through all partitions from there, 'default' leaves it to librdkafka.
    #[test]
    fn route_picks_partitions_as_the_partitioner_says() {
        let take = |partitioner, next| {
            let mut r = Route {
                partitioner,
                partitions: 3,
                next,
            };
            (0..5).map(|_| r.next()).collect::<Vec<_>>()
        };
        assert_eq!(take(Partitioner::Fixed, 2), vec![Some(2); 5]);
        assert_eq!(
            take(Partitioner::RoundRobin, 1),
            [1, 2, 0, 1, 2].map(Some).to_vec()
        );
        assert_eq!(take(Partitioner::Default, 0), vec![None; 5]);
    }

    /// A record that cannot be delivered keeps `flush` waiting until its timeout, and
    /// then it says so: it never reports done with a record in flight.
    #[test]
    fn flush_waits_for_every_record_and_times_out_when_the_broker_is_gone() {
        // Nothing listens on port 1: the record stays queued.
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "60000")
            .set("log_level", "0")
            .create()
            .expect("a producer needs no broker to be created");
        producer
            .send(BaseRecord::<(), str>::to("t").payload("x"))
            .map_err(|(e, _)| e)
            .expect("queued");
        let result = flush(&producer, Duration::from_millis(300));
        assert!(
            matches!(
                result,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
            ),
            "{result:?}"
        );
        assert_eq!(producer.in_flight_count(), 1);
        // Once nothing is queued it is done (the purged record's report served).
        producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        assert!(flush(&producer, Duration::from_secs(30)).is_ok());
        assert_eq!(producer.in_flight_count(), 0);
    }
}
