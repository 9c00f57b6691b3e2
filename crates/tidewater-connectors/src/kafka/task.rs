//! The tasks of a Kafka job, and the input partition's task: the chain over one input
//! partition and its checkpoint — what it wrote, its state snapshot and its input offset
//! in one transaction ([`TaskTxn`]).
//!
//! An input task either runs the whole job (input keyed by the grouping key) and writes
//! the output, or runs the source stage and writes its rows, and at each checkpoint its
//! watermark, to the window tasks through the repartition topic
//! ([`super::repartition`], [`super::window_task`]).

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::InlineChain;

use super::changelog::{Mark, changelog_topic, read_snapshot};
use super::codec::{MessageDecoder, Pending};
use super::repartition::{InputWatermark, Kind, Layout, record_key, split_rows};
use super::tasks::Shared;
use super::txn::{CheckpointError, Extra, OutputTarget, TXN_TIMEOUT, TaskTxn, produce};
use super::window_task::WindowTask;

/// A task: an input partition's, or a window task's when the job repartitions.
#[derive(Debug)]
pub(crate) enum Task {
    Input(Box<InputTask>),
    Window(Box<WindowTask>),
}

impl Task {
    /// Opens the task of `topic`/`partition` (a partition of the repartition job's tasks
    /// topic is a window task): fences earlier owners, restores the committed snapshot,
    /// and says where the group consumer starts reading.
    pub(crate) fn open<C: ConsumerContext>(
        shared: &Shared,
        consumer: &BaseConsumer<C>,
        restorer: &BaseConsumer,
        topic: &str,
        partition: i32,
    ) -> Result<(Task, Offset)> {
        let started = Instant::now();
        let (task, start) = match &shared.repartition {
            Some(r) if r.tasks_topic == topic => {
                let t = WindowTask::open(shared, consumer, restorer, partition)?;
                (Task::Window(Box::new(t)), Offset::Beginning)
            }
            _ => {
                let (t, start) = InputTask::open(shared, consumer, restorer, topic, partition)?;
                (Task::Input(Box::new(t)), start)
            }
        };
        let txn = task.txn();
        let ms = started.elapsed().as_millis() as u64;
        let reading = match &task {
            Task::Input(_) => format!("{start:?}"),
            Task::Window(_) => "its committed repartition offsets".to_string(),
        };
        tracing::info!(task = %txn.id, generation = %txn.generation(), start = ?start,
            restore_ms = ms, "task {} opened: {}, reading from {reading} ({ms} ms)",
            txn.id, task.restored_text());
        shared.job.metrics.event(
            "info",
            format!(
                "task {} opened in {ms} ms: {}",
                txn.id,
                task.restored_text()
            ),
        );
        Ok((task, start))
    }

    fn txn(&self) -> &TaskTxn {
        match self {
            Task::Input(t) => &t.txn,
            Task::Window(t) => t.txn(),
        }
    }

    fn restored_text(&self) -> String {
        match self.restored_mark() {
            Some((g, n)) => format!("restored checkpoint {n} of generation {g}"),
            None => "no checkpoint, empty state".to_string(),
        }
    }

    fn restored_mark(&self) -> Option<(String, u64)> {
        match self {
            Task::Input(t) => t.restored.clone(),
            Task::Window(t) => t.restored(),
        }
    }

    /// The task's name: `topic/partition`, or `<repartition topic>/q`.
    pub(crate) fn id(&self) -> &str {
        &self.txn().id
    }

    /// True when the task started from a checkpoint.
    pub(crate) fn restored(&self) -> bool {
        self.txn().restored()
    }

    /// Keeps a message the group consumer polled for this task (window tasks read
    /// their own partitions: false).
    pub(crate) fn buffer(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        if let Task::Input(t) = self {
            t.pending.push(offset, key, value);
            t.quiet_since = None;
        }
    }

    /// The member's consumer had nothing to deliver: an input task that has had no
    /// message since starts (or keeps) counting its quiet time. Counting from empty
    /// polls, not from the last message, means time spent busy or before the first
    /// fetch never makes a partition idle.
    pub(crate) fn note_quiet(&mut self, now: Instant) {
        if let Task::Input(t) = self {
            t.quiet_since.get_or_insert(now);
        }
    }

    /// Pushes what the task has read through its chain.
    pub(crate) fn process<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        restorer: &BaseConsumer,
    ) -> Result<()> {
        match self {
            Task::Input(t) => t.process_pending(),
            Task::Window(t) => t.poll(consumer, restorer),
        }
    }

    /// Commits a checkpoint if there is anything to commit.
    pub(crate) fn checkpoint<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> std::result::Result<bool, CheckpointError> {
        match self {
            Task::Input(t) => t.checkpoint(consumer),
            Task::Window(t) => t.checkpoint(consumer),
        }
    }

    /// Gives the task up after a failure: its open transaction is aborted.
    pub(crate) fn abort(self) {
        match self {
            Task::Input(t) => t.txn.abort(),
            Task::Window(t) => t.abort(),
        }
    }
}

/// Reads the group's committed offsets of `partitions` (topic, partition).
pub(crate) fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &[(&str, i32)],
    task: &str,
) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    consumer.committed_offsets(tpl, TXN_TIMEOUT).map_err(|e| {
        Error::runtime(format!(
            "task {task}: cannot read the committed offsets: {e}"
        ))
    })
}

/// The committed offset of (`topic`, `partition`) in `committed`, if there is one.
pub(crate) fn offset_in(
    committed: &TopicPartitionList,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    match committed
        .find_partition(topic, partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    }
}

/// Restores the snapshot the group's committed changelog offset points at, if any.
pub(crate) fn restore(
    restorer: &BaseConsumer,
    changelog: &str,
    partition: i32,
    manifest: Option<i64>,
    operators: usize,
) -> Result<Option<(Mark, Vec<Vec<RecordBatch>>)>> {
    manifest
        .map(|m| read_snapshot(restorer, changelog, partition, m, operators, TXN_TIMEOUT))
        .transpose()
}

/// Where an input task's rows go.
#[derive(Debug)]
enum Downstream {
    /// The job's output (none: the chain ends in its own sink).
    Output(Option<OutputTarget>),
    /// The window tasks, through the repartition topic.
    Shuffle(Shuffle),
}

/// An input task's side of the repartition topic.
#[derive(Debug)]
struct Shuffle {
    topic: String,
    layout: Layout,
    /// The grouping key's columns in the chain's output.
    keys: Vec<usize>,
    idle_timeout: Option<Duration>,
    /// The watermark last committed to every window task.
    sent: Option<InputWatermark>,
    hashes: Vec<u64>,
}

/// One input partition's task.
#[derive(Debug)]
pub(crate) struct InputTask {
    topic: String,
    partition: i32,
    txn: TaskTxn,
    chain: InlineChain,
    decoder: MessageDecoder,
    downstream: Downstream,
    restored: Option<(String, u64)>,
    /// Messages polled but not yet pushed through the chain.
    pending: Pending,
    /// Since when the consumer has had nothing for this partition (see
    /// [`Task::note_quiet`]); `None` while messages arrive.
    quiet_since: Option<Instant>,
    /// Offset after the last message processed, once one was.
    next_offset: Option<i64>,
    metrics: std::sync::Arc<JobMetrics>,
}

impl InputTask {
    fn open<C: ConsumerContext>(
        shared: &Shared,
        consumer: &BaseConsumer<C>,
        restorer: &BaseConsumer,
        topic: &str,
        partition: i32,
    ) -> Result<(InputTask, Offset)> {
        let job = &shared.job;
        let id = format!("{topic}/{partition}");
        let tid = format!("{}-{topic}-{partition}", shared.transactional_prefix);
        let changelog = changelog_topic(&job.source.group, topic);
        let mut txn = TaskTxn::fence(shared, &tid, id.clone(), changelog.clone(), partition)?;
        let committed = committed_offsets(
            consumer,
            &[(topic, partition), (&changelog, partition)],
            &id,
        )?;
        let mut chain = InlineChain::new((job.make_chain)()?);
        let restored = restore(
            restorer,
            &changelog,
            partition,
            offset_in(&committed, &changelog, partition),
            chain.len(),
        )?;
        let mark = match restored {
            Some((mark, states)) => {
                chain.restore(mark.n, states)?;
                Some(mark)
            }
            None => None,
        };
        let start = match offset_in(&committed, topic, partition) {
            Some(o) => Offset::Offset(o),
            None => shared.startup_offset(consumer, topic, partition)?,
        };
        txn.start(mark.as_ref())?;
        let downstream = match &shared.repartition {
            Some(r) => Downstream::Shuffle(Shuffle {
                topic: r.data_topic.clone(),
                layout: r.layout,
                keys: r.keys.clone(),
                idle_timeout: job.source.idle_timeout,
                sent: None,
                hashes: Vec::new(),
            }),
            None => Downstream::Output(match &shared.output {
                Some(o) => Some(OutputTarget::new(o, txn.producer(), partition)?),
                None => None,
            }),
        };
        let decoder = MessageDecoder::new(
            &job.source,
            job.schema.clone(),
            topic,
            partition,
            job.dead_letters.clone(),
            job.metrics.clone(),
        );
        let task = InputTask {
            topic: topic.to_string(),
            partition,
            txn,
            chain,
            decoder,
            downstream,
            restored: mark.map(|m| (m.generation, m.n)),
            pending: Pending::default(),
            quiet_since: None,
            next_offset: None,
            metrics: job.metrics.clone(),
        };
        Ok((task, start))
    }

    /// Pushes the pending messages through the chain and produces what comes out.
    fn process_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let next = self.pending.next_offset();
        let decoded = self.decoder.decode(&mut self.pending);
        // The buffers are kept (cleared) for the next messages.
        self.pending.clear();
        if let Some(batch) = decoded? {
            let outputs = self.chain.push_batch(batch)?;
            self.produce(&outputs)?;
        }
        self.next_offset = next.or(self.next_offset);
        Ok(())
    }

    fn produce(&mut self, outputs: &[RecordBatch]) -> Result<()> {
        match &mut self.downstream {
            Downstream::Output(None) => {}
            Downstream::Output(Some(target)) => {
                target.write(&self.txn, outputs, &self.metrics)?;
            }
            Downstream::Shuffle(s) => {
                let (generation, n) = (self.txn.generation(), self.txn.checkpoint());
                for b in outputs {
                    for (q, crc, bytes) in split_rows(b, &s.keys, s.layout, &mut s.hashes)? {
                        let key = record_key(Kind::Rows { crc }, generation, n);
                        let p = s.layout.data_partition(self.partition, q);
                        produce(
                            self.txn.producer(),
                            &s.topic,
                            Some(p),
                            Some(key.as_bytes()),
                            &bytes,
                            Extra::default(),
                            0,
                        )?;
                    }
                }
            }
        }
        self.txn.producer().poll(Duration::ZERO);
        Ok(())
    }

    /// Writes the task's watermark to every window task when it changed since the last
    /// commit; true when it did.
    fn send_watermark(&mut self) -> Result<Option<InputWatermark>> {
        let Downstream::Shuffle(s) = &self.downstream else {
            return Ok(None);
        };
        let now = InputWatermark {
            millis: self.chain.watermark().map_or(i64::MIN, |w| w.0),
            idle: s
                .idle_timeout
                .is_some_and(|t| self.quiet_since.is_some_and(|since| since.elapsed() >= t)),
        };
        if s.sent == Some(now) {
            return Ok(None);
        }
        let key = record_key(
            Kind::Watermark,
            self.txn.generation(),
            self.txn.checkpoint(),
        );
        let value = now.encode();
        for q in 0..s.layout.windows {
            let p = s.layout.data_partition(self.partition, q);
            produce(
                self.txn.producer(),
                &s.topic,
                Some(p),
                Some(key.as_bytes()),
                value.as_bytes(),
                Extra::default(),
                0,
            )?;
        }
        Ok(Some(now))
    }

    /// Commits checkpoint `n` if anything was read (or, repartitioning, the watermark
    /// changed) since the last one: the snapshot goes to the changelog, the offset and
    /// the mark to the group, all in the open transaction with what the task wrote; then
    /// the next transaction begins.
    fn checkpoint<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> std::result::Result<bool, CheckpointError> {
        self.process_pending()?;
        let sent = self.send_watermark()?;
        if self.next_offset.is_none() && sent.is_none() {
            return Ok(false);
        }
        let n = self.txn.checkpoint();
        let states = self.chain.snapshot(n)?;
        let offsets: Vec<(&str, i32, i64)> = self
            .next_offset
            .map(|o| (self.topic.as_str(), self.partition, o))
            .into_iter()
            .collect();
        self.txn.commit(consumer, &states, &offsets)?;
        self.next_offset = None;
        if let (Downstream::Shuffle(s), Some(w)) = (&mut self.downstream, sent) {
            s.sent = Some(w);
        }
        self.chain.commit(n)?;
        Ok(true)
    }
}
