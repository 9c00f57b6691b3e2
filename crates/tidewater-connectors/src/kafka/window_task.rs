//! A window task of a repartitioning job: the window stage over what every input task
//! wrote for it, read from its own partitions of the repartition topic.
//!
//! Window task `q` reads data partition `q * inputs + i` of every input task `i` with a
//! consumer of its own (assigned, not subscribed: the group's assignment of the tasks
//! topic's partition `q` decides who runs the task). A record is applied only once the
//! input task's transaction that wrote it is known committed ([`status`]); a record
//! whose transaction is still open holds that input's partition (paused) until the
//! input task's committed mark moves, then it is read again. Its watermark is the
//! minimum over the input tasks' committed watermarks, idle ones left out.
//!
//! A checkpoint commits, in the task's transaction, its output, a snapshot (the window
//! chain's state plus each input's watermark) and the next offset of each data
//! partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array};
use arrow::datatypes::{Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result, Watermark};
use tidewater_runtime::InlineChain;

use super::changelog::{Mark, read_mark};
use super::repartition::{
    InputWatermark, Kind, Layout, Status, combined_watermark, decode_rows, parse_key, status,
};
use super::task::{committed_offsets, offset_in, restore};
use super::tasks::{RepartitionShared, Shared};
use super::txn::{CheckpointError, OutputTarget, TXN_TIMEOUT, TaskTxn};

/// Messages read per call of [`WindowTask::poll`].
const POLL_MESSAGES: usize = 256;
/// How often a held input's committed mark is read again.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// What a window task knows of one input task.
#[derive(Debug, Default)]
struct Input {
    /// Next offset to apply on its data partition (`None`: from the start).
    next: Option<i64>,
    /// The offset of a record whose transaction is not decided: the partition is paused
    /// and read again from here once the input task's mark moves.
    held: Option<i64>,
    /// The input task's committed mark and the changelog offset it was read at.
    head: Option<(i64, Mark)>,
    watermark: Option<InputWatermark>,
}

/// One window task.
pub(crate) struct WindowTask {
    q: i32,
    txn: TaskTxn,
    chain: InlineChain,
    output: Option<OutputTarget>,
    /// Reads this task's data partitions.
    reader: BaseConsumer,
    data_topic: String,
    input_changelog: String,
    layout: Layout,
    inputs: Vec<Input>,
    /// The last watermark pushed into the chain.
    watermark: Option<i64>,
    restored: Option<(String, u64)>,
    /// Something was applied since the last commit.
    dirty: bool,
    last_refresh: Instant,
    metrics: Arc<JobMetrics>,
}

impl std::fmt::Debug for WindowTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowTask")
            .field("txn", &self.txn)
            .field("inputs", &self.inputs)
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

impl WindowTask {
    pub(crate) fn open<C: ConsumerContext>(
        shared: &Shared,
        consumer: &BaseConsumer<C>,
        restorer: &BaseConsumer,
        q: i32,
    ) -> Result<WindowTask> {
        let job = &shared.job;
        let r: &RepartitionShared = shared
            .repartition
            .as_ref()
            .ok_or_else(|| Error::runtime("a window task in a job that does not repartition"))?;
        let id = format!("{}/{q}", r.data_topic);
        let tid = format!("{}-{}-{q}", shared.transactional_prefix, r.tasks_topic);
        let mut txn = TaskTxn::fence(shared, &tid, id.clone(), r.window_changelog.clone(), q)?;
        let layout = r.layout;
        let data: Vec<i32> = (0..layout.inputs)
            .map(|i| layout.data_partition(i, q))
            .collect();
        let mut wanted: Vec<(&str, i32)> = vec![(&r.window_changelog, q)];
        wanted.extend(data.iter().map(|p| (r.data_topic.as_str(), *p)));
        let committed = committed_offsets(consumer, &wanted, &id)?;
        let mut chain = InlineChain::new((r.make_window_chain)()?);
        let ops = chain.len();
        let restored = restore(
            restorer,
            &r.window_changelog,
            q,
            offset_in(&committed, &r.window_changelog, q),
            ops + 1,
        )?;
        let mut inputs: Vec<Input> = (0..layout.inputs).map(|_| Input::default()).collect();
        let mut mark = None;
        if let Some((m, mut states)) = restored {
            let watermarks = states.pop().unwrap_or_default();
            chain.restore(m.n, states)?;
            restore_watermarks(&watermarks, &mut inputs)?;
            mark = Some(m);
        }
        let mut assignment = TopicPartitionList::new();
        for (i, p) in data.iter().enumerate() {
            let next = offset_in(&committed, &r.data_topic, *p);
            if let Some(input) = inputs.get_mut(i) {
                input.next = next;
            }
            assignment
                .add_partition_offset(
                    &r.data_topic,
                    *p,
                    next.map_or(Offset::Beginning, Offset::Offset),
                )
                .map_err(|e| Error::runtime(format!("task {id}: {e}")))?;
        }
        let reader: BaseConsumer = shared
            .reader_config
            .create()
            .map_err(|e| Error::runtime(format!("task {id}: kafka consumer: {e}")))?;
        reader
            .assign(&assignment)
            .map_err(|e| Error::runtime(format!("task {id}: cannot read {}: {e}", r.data_topic)))?;
        txn.start(mark.as_ref())?;
        let output = match &shared.output {
            Some(o) => Some(OutputTarget::new(o, txn.producer(), q)?),
            None => None,
        };
        let mut task = WindowTask {
            q,
            txn,
            chain,
            output,
            reader,
            data_topic: r.data_topic.clone(),
            input_changelog: r.input_changelog.clone(),
            layout,
            inputs,
            watermark: None,
            restored: mark.map(|m| (m.generation, m.n)),
            dirty: false,
            last_refresh: Instant::now(),
            metrics: job.metrics.clone(),
        };
        // The restored watermark is where the windows already fired: nothing to emit,
        // but the chain's operators learn it.
        task.advance_watermark()?;
        Ok(task)
    }

    pub(crate) fn txn(&self) -> &TaskTxn {
        &self.txn
    }

    pub(crate) fn restored(&self) -> Option<(String, u64)> {
        self.restored.clone()
    }

    /// Reads and applies what has arrived, and re-reads held inputs whose mark moved.
    pub(crate) fn poll<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        restorer: &BaseConsumer,
    ) -> Result<()> {
        for _ in 0..POLL_MESSAGES {
            let Some(m) = self.reader.poll(Duration::ZERO) else {
                break;
            };
            match m {
                Ok(m) => {
                    // Copied so that the message no longer borrows the reader; a record
                    // is a whole batch of rows, so this is no per-row cost.
                    let (key, value) =
                        (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec));
                    let (partition, offset) = (m.partition(), m.offset());
                    drop(m);
                    self.handle(partition, offset, key.as_deref(), value.as_deref())?;
                }
                Err(e) => {
                    tracing::debug!(task = %self.txn.id, "reading {}: {e}", self.data_topic);
                    break;
                }
            }
        }
        if self.inputs.iter().any(|i| i.held.is_some())
            && self.last_refresh.elapsed() >= REFRESH_EVERY
        {
            self.refresh(consumer, restorer)?;
            self.last_refresh = Instant::now();
        }
        Ok(())
    }

    fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let i = partition - self.q * self.layout.inputs;
        let Some(input) = usize::try_from(i).ok().and_then(|i| self.inputs.get_mut(i)) else {
            return Err(self.damaged(partition, offset, "a partition this task does not read"));
        };
        // Held: it is read again from the held record on. Older: delivered before a seek.
        if input.held.is_some() || input.next.is_some_and(|n| offset < n) {
            return Ok(());
        }
        let Some((kind, generation, checkpoint)) = key.and_then(parse_key) else {
            return Err(self.damaged(partition, offset, "a record without a repartition key"));
        };
        match status(input.head.as_ref().map(|(_, m)| m), generation, checkpoint)? {
            Status::Open => {
                input.held = Some(offset);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.data_topic, partition);
                self.reader
                    .pause(&tpl)
                    .map_err(|e| Error::runtime(format!("task {}: pause: {e}", self.txn.id)))?;
                return Ok(());
            }
            Status::Aborted => {}
            Status::Committed => {
                let value = value.unwrap_or_default();
                match kind {
                    Kind::Rows { crc } => {
                        for batch in decode_rows(value, crc)? {
                            let out = self.chain.push_batch(batch)?;
                            self.produce(&out)?;
                        }
                    }
                    Kind::Watermark => {
                        let Some(w) = InputWatermark::decode(value) else {
                            return Err(self.damaged(partition, offset, "a bad watermark"));
                        };
                        let input = &mut self.inputs[i as usize];
                        // An input's watermark never goes back (a restored input task
                        // may say less until it has read again).
                        let millis = input.watermark.map_or(w.millis, |o| o.millis.max(w.millis));
                        input.watermark = Some(InputWatermark {
                            millis,
                            idle: w.idle,
                        });
                        self.advance_watermark()?;
                    }
                }
            }
        }
        if let Some(input) = self.inputs.get_mut(i as usize) {
            input.next = Some(offset + 1);
        }
        self.dirty = true;
        Ok(())
    }

    fn damaged(&self, partition: i32, offset: i64, what: &str) -> Error {
        Error::runtime(format!(
            "task {}: {}/{partition} offset {offset} holds {what}",
            self.txn.id, self.data_topic
        ))
    }

    /// Pushes the combined watermark into the chain when it advanced.
    fn advance_watermark(&mut self) -> Result<()> {
        let inputs: Vec<Option<InputWatermark>> = self.inputs.iter().map(|i| i.watermark).collect();
        let Some(w) = combined_watermark(&inputs) else {
            return Ok(());
        };
        if self.watermark.is_some_and(|old| old >= w) || w == i64::MIN {
            return Ok(());
        }
        self.watermark = Some(w);
        let out = self.chain.push_watermark(Watermark(w))?;
        self.produce(&out)
    }

    fn produce(&mut self, outputs: &[RecordBatch]) -> Result<()> {
        let Some(target) = self.output.as_mut() else {
            return Ok(());
        };
        target.write(&self.txn, outputs, &self.metrics)?;
        self.txn.producer().poll(Duration::ZERO);
        Ok(())
    }

    /// Reads the committed marks of the held inputs' tasks; an input whose mark moved is
    /// read again from its held record.
    fn refresh<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        restorer: &BaseConsumer,
    ) -> Result<()> {
        let held: Vec<i32> = (0..self.layout.inputs)
            .filter(|i| self.inputs[*i as usize].held.is_some())
            .collect();
        let wanted: Vec<(&str, i32)> = held
            .iter()
            .map(|i| (self.input_changelog.as_str(), *i))
            .collect();
        let committed = committed_offsets(consumer, &wanted, &self.txn.id)?;
        for i in held {
            let Some(at) = offset_in(&committed, &self.input_changelog, i) else {
                continue;
            };
            let input = &mut self.inputs[i as usize];
            if input.head.as_ref().is_some_and(|(o, _)| *o == at) {
                continue;
            }
            let mark = read_mark(restorer, &self.input_changelog, i, at, TXN_TIMEOUT)?;
            input.head = Some((at, mark));
            let Some(from) = input.held.take() else {
                continue;
            };
            input.next = Some(from);
            let p = self.layout.data_partition(i, self.q);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.data_topic, p);
            self.reader
                .seek(&self.data_topic, p, Offset::Offset(from), TXN_TIMEOUT)
                .and_then(|()| self.reader.resume(&tpl))
                .map_err(|e| Error::runtime(format!("task {}: re-read: {e}", self.txn.id)))?;
        }
        Ok(())
    }

    /// Commits a checkpoint if anything was applied since the last one.
    pub(crate) fn checkpoint<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> std::result::Result<bool, CheckpointError> {
        if !self.dirty {
            return Ok(false);
        }
        let n = self.txn.checkpoint();
        let mut states = self.chain.snapshot(n)?;
        states.push(vec![watermark_state(&self.inputs)?]);
        let offsets: Vec<(&str, i32, i64)> = self
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, input)| {
                let p = self.layout.data_partition(i as i32, self.q);
                Some((self.data_topic.as_str(), p, input.next?))
            })
            .collect();
        self.txn.commit(consumer, &states, &offsets)?;
        self.dirty = false;
        self.chain.commit(n)?;
        Ok(true)
    }

    pub(crate) fn abort(self) {
        self.txn.abort();
    }
}

/// Each input's watermark as state: `input`, `millis`, `idle`.
fn watermark_state(inputs: &[Input]) -> Result<RecordBatch> {
    let known: Vec<(i32, InputWatermark)> = inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| Some((i as i32, input.watermark?)))
        .collect();
    RecordBatch::try_from_iter([
        (
            "input",
            Arc::new(Int32Array::from_iter_values(known.iter().map(|k| k.0))) as ArrayRef,
        ),
        (
            "millis",
            Arc::new(Int64Array::from_iter_values(
                known.iter().map(|k| k.1.millis),
            )) as ArrayRef,
        ),
        (
            "idle",
            Arc::new(BooleanArray::from_iter(
                known.iter().map(|k| Some(k.1.idle)),
            )) as ArrayRef,
        ),
    ])
    .map_err(Error::from)
}

fn restore_watermarks(batches: &[RecordBatch], inputs: &mut [Input]) -> Result<()> {
    for b in batches {
        let bad = || Error::runtime("window task state: bad input watermarks");
        let input = b.column_by_name("input").ok_or_else(bad)?;
        let millis = b.column_by_name("millis").ok_or_else(bad)?;
        let idle = b.column_by_name("idle").ok_or_else(bad)?;
        let (Some(input), Some(millis), Some(idle)) = (
            input.as_primitive_opt::<Int32Type>(),
            millis.as_primitive_opt::<Int64Type>(),
            idle.as_boolean_opt(),
        ) else {
            return Err(bad());
        };
        for row in 0..b.num_rows() {
            if let Some(slot) = usize::try_from(input.value(row))
                .ok()
                .and_then(|i| inputs.get_mut(i))
            {
                slot.watermark = Some(InputWatermark {
                    millis: millis.value(row),
                    idle: idle.value(row) && idle.is_valid(row),
                });
            }
        }
    }
    Ok(())
}
