//! One partition task: the chain over one input partition, its transactional producer,
//! and its checkpoint — output, state snapshot and input offset in one transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::InlineChain;

use super::changelog::{
    H_CHECKPOINT, H_FROM, H_GEN, H_TASK, changelog_topic, from_header, read_snapshot,
    snapshot_records,
};
use super::codec::{MessageDecoder, Pending, RecordEncoder};
use super::options::{KafkaSinkOptions, Partitioner};
use super::tasks::Shared;

/// How long one transactional call may wait for the broker.
pub(crate) const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how output rows are written.
#[derive(Debug)]
pub(crate) struct OutputTarget {
    pub(crate) topic: String,
    pub(crate) encoder: RecordEncoder,
    partitioner: Partitioner,
    partitions: i32,
    /// The partition of 'fixed', the next one of 'round-robin'.
    next: i32,
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
            partitioner: o.partitioner,
            partitions,
            next: if partitions > 0 {
                index % partitions
            } else {
                0
            },
        })
    }

    /// Produces one output record.
    pub(crate) fn send<C>(
        &mut self,
        producer: &BaseProducer<C>,
        record: (Option<&[u8]>, &[u8]),
        headers: Option<OwnedHeaders>,
        opaque: C::DeliveryOpaque,
    ) -> Result<()>
    where
        C: ProducerContext,
        C::DeliveryOpaque: Clone,
    {
        let partition = self.partition();
        produce(
            producer,
            &self.topic,
            partition,
            record.0,
            record.1,
            headers,
            opaque,
        )
    }

    fn partition(&mut self) -> Option<i32> {
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

/// Produces one record, waiting for room when librdkafka's queue is full.
fn produce<C>(
    producer: &BaseProducer<C>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: &[u8],
    headers: Option<OwnedHeaders>,
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
        if let Some(h) = &headers {
            r = r.headers(h.clone());
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

/// A new generation id: unique per task attempt, across processes and machines.
fn new_generation() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{:x}-{:x}",
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

fn txn_error(what: &str, e: &KafkaError) -> CheckpointError {
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

/// One input partition's task.
pub(crate) struct Task {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    id: String,
    chain: InlineChain,
    decoder: MessageDecoder,
    producer: BaseProducer<TaskDeliveries>,
    output: Option<OutputTarget>,
    changelog: String,
    generation: String,
    /// Last committed checkpoint (0: none yet).
    epoch: u64,
    from: Option<(String, u64)>,
    /// Messages polled but not yet pushed through the chain.
    pub(crate) pending: Pending,
    /// Offset after the last message processed, once one was.
    next_offset: Option<i64>,
    metrics: Arc<JobMetrics>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// Opens the task of `topic`/`partition`: fences earlier owners, restores the
    /// committed snapshot, and says where to start reading.
    pub(crate) fn open<C: ConsumerContext>(
        shared: &Shared,
        consumer: &BaseConsumer<C>,
        restorer: &BaseConsumer,
        topic: &str,
        partition: i32,
    ) -> Result<(Task, Offset)> {
        let started = Instant::now();
        let job = &shared.job;
        let id = format!("{topic}/{partition}");
        let tid = format!("{}-{topic}-{partition}", shared.transactional_prefix);
        let mut config = shared.producer_config.clone();
        config.set("transactional.id", &tid);
        let producer: BaseProducer<TaskDeliveries> = config
            .create_with_context(TaskDeliveries::default())
            .map_err(|e| Error::runtime(format!("task {id}: cannot create producer: {e}")))?;
        // Fences every earlier producer of this task and aborts its open transaction.
        producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(|e| Error::runtime(format!("task {id}: cannot start transactions: {e}")))?;
        let changelog = changelog_topic(&job.source.group, topic);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        tpl.add_partition(&changelog, partition);
        let committed = consumer.committed_offsets(tpl, TXN_TIMEOUT).map_err(|e| {
            Error::runtime(format!("task {id}: cannot read the committed offsets: {e}"))
        })?;
        let offset_of = |t: &str| {
            committed
                .find_partition(t, partition)
                .map_or(Offset::Invalid, |e| e.offset())
        };
        let committed_offset = offset_of(topic);
        let mut chain = InlineChain::new((job.make_chain)()?);
        let mark = match offset_of(&changelog) {
            Offset::Offset(manifest) => {
                let (mark, states) = read_snapshot(
                    restorer,
                    &changelog,
                    partition,
                    manifest,
                    chain.len(),
                    TXN_TIMEOUT,
                )?;
                chain.restore(mark.n, states)?;
                Some(mark)
            }
            _ => None,
        };
        let start = match committed_offset {
            Offset::Offset(o) => Offset::Offset(o),
            _ => shared.startup_offset(consumer, topic, partition)?,
        };
        producer
            .begin_transaction()
            .map_err(|e| Error::runtime(format!("task {id}: cannot begin a transaction: {e}")))?;
        let output = match &shared.output {
            Some(o) => Some(OutputTarget::new(o, &producer, partition)?),
            None => None,
        };
        let decoder = MessageDecoder::new(
            &job.source,
            job.schema.clone(),
            topic,
            partition,
            job.dead_letters.clone(),
            job.metrics.clone(),
        );
        let task = Task {
            topic: topic.to_string(),
            partition,
            id,
            chain,
            decoder,
            producer,
            output,
            changelog: changelog_topic(&job.source.group, topic),
            generation: new_generation(),
            epoch: mark.as_ref().map_or(0, |m| m.n),
            from: mark.as_ref().map(|m| (m.generation.clone(), m.n)),
            pending: Pending::default(),
            next_offset: None,
            metrics: job.metrics.clone(),
        };
        let restored = match &mark {
            Some(m) => format!("restored checkpoint {} of generation {}", m.n, m.generation),
            None => "no checkpoint, empty state".to_string(),
        };
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(task = %task.id, generation = %task.generation, start = ?start, restore_ms = ms,
            "task {} opened: {restored}, reading from {start:?} ({ms} ms)", task.id);
        job.metrics.event(
            "info",
            format!("task {} opened in {ms} ms: {restored}", task.id),
        );
        Ok((task, start))
    }

    /// Pushes the pending messages through the chain and produces what comes out.
    pub(crate) fn process_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let next = self.pending.next_offset();
        let decoded = self.decoder.decode(&self.pending);
        // The buffers are kept (cleared) for the next messages.
        self.pending.clear();
        if let Some(batch) = decoded? {
            let outputs = self.chain.push_batch(batch)?;
            self.produce(&outputs)?;
        }
        self.next_offset = next.or(self.next_offset);
        Ok(())
    }

    fn headers(&self) -> OwnedHeaders {
        let n = (self.epoch + 1).to_string();
        let from = from_header(self.from.as_ref());
        OwnedHeaders::new()
            .insert(Header {
                key: H_TASK,
                value: Some(self.id.as_str()),
            })
            .insert(Header {
                key: H_GEN,
                value: Some(self.generation.as_str()),
            })
            .insert(Header {
                key: H_CHECKPOINT,
                value: Some(n.as_str()),
            })
            .insert(Header {
                key: H_FROM,
                value: Some(from.as_str()),
            })
    }

    fn produce(&mut self, outputs: &[arrow::record_batch::RecordBatch]) -> Result<()> {
        let headers = self.headers();
        let Some(target) = self.output.as_mut() else {
            return Ok(());
        };
        for b in outputs {
            let records = target.encoder.encode(b)?;
            for record in records.iter() {
                target.send(&self.producer, record, Some(headers.clone()), 0)?;
            }
            JobMetrics::add(&self.metrics.records_out, records.len() as u64);
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Commits checkpoint `epoch + 1` if anything was read since the last one: the
    /// snapshot goes to the changelog, the offset and the mark to the group, all in the
    /// open transaction with the output; then the next transaction begins.
    pub(crate) fn checkpoint<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> std::result::Result<bool, CheckpointError> {
        self.process_pending()?;
        let Some(next_offset) = self.next_offset else {
            return Ok(false);
        };
        let started = Instant::now();
        let n = self.epoch + 1;
        let states = self.chain.snapshot(n)?;
        let records = snapshot_records(&states)?;
        let headers = self.headers();
        let mut bytes = 0;
        for (i, r) in records.iter().enumerate() {
            let mut h = headers.clone();
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_str()),
                });
            }
            bytes += r.value.len();
            let tag = if i == 0 { MANIFEST } else { 0 };
            produce(
                &self.producer,
                &self.changelog,
                Some(self.partition),
                Some(r.key.as_bytes()),
                &r.value,
                Some(h),
                tag,
            )?;
        }
        self.producer
            .flush(TXN_TIMEOUT)
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
        // The input position, and where the snapshot's manifest is: committed together.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(next_offset))
            .and_then(|()| {
                tpl.add_partition_offset(&self.changelog, self.partition, Offset::Offset(first))
            })
            .map_err(|e| txn_error("offset", &e))?;
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
        self.next_offset = None;
        self.chain.commit(n)?;
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
        Ok(true)
    }

    /// Gives the task up after a failed checkpoint: the open transaction is aborted
    /// (if the producer still may), so nothing of it becomes visible to read_committed.
    pub(crate) fn abort(self) {
        if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
            tracing::debug!(task = %self.id, "abort: {e}");
        }
    }

    /// True when the task started from a checkpoint.
    pub(crate) fn restored(&self) -> bool {
        self.from.is_some()
    }

    /// The task's id, `topic/partition`.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}
