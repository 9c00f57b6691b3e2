//! A chain run inline, on the caller's thread, with no channels: what a partition task
//! of the Kafka runtime executes (the Kafka Streams model, where one task owns one input
//! partition, its watermark and its state, and checkpoints on its own).
//!
//! The caller decides when a checkpoint is taken; barriers are still minted here, so an
//! operator's `on_barrier` cannot be called with a forged one.

use std::time::Instant;

use arrow::record_batch::RecordBatch;
use tidewater_core::{Result, Watermark};

use crate::dataflow::Chain;
use crate::message::{Barrier, Message};
use crate::operator::{RestoredState, StateSize, StateWriter, push_through};

/// A chain of operators driven batch by batch.
#[derive(Debug)]
pub struct InlineChain {
    ops: Chain,
    /// The last watermark that left the last operator.
    watermark: Option<Watermark>,
}

impl InlineChain {
    /// Wraps `ops`, run first to last.
    pub fn new(ops: Chain) -> Self {
        Self {
            ops,
            watermark: None,
        }
    }

    /// Pushes one batch through the chain. Returns what leaves the last operator;
    /// watermarks the chain creates are applied inside it, and the last one to leave it
    /// is kept ([`InlineChain::watermark`]).
    pub fn push_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.push(Message::Data(batch))
    }

    /// Pushes a watermark from outside (a chain whose event time comes from upstream
    /// tasks). Returns the batches it makes leave the last operator (fired windows).
    pub fn push_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        self.push(Message::Watermark(watermark, Instant::now()))
    }

    /// The last watermark that left the last operator (none yet: `None`).
    pub fn watermark(&self) -> Option<Watermark> {
        self.watermark
    }

    fn push(&mut self, message: Message) -> Result<Vec<RecordBatch>> {
        let mut outputs = Vec::new();
        let mut into_last = 0;
        let watermark = &mut self.watermark;
        push_through(
            &mut self.ops,
            message,
            &mut |m| {
                match m {
                    Message::Data(b) => outputs.push(b),
                    Message::Watermark(w, _) => *watermark = Some(w),
                    _ => {}
                }
                Ok(())
            },
            &mut into_last,
        )?;
        Ok(outputs)
    }

    /// The state of every operator for checkpoint `epoch`, one list of batches per
    /// operator in chain order.
    pub fn snapshot(&mut self, epoch: u64) -> Result<Vec<Vec<RecordBatch>>> {
        let barrier = Barrier::new(epoch);
        self.ops
            .iter_mut()
            .map(|op| {
                let mut w = StateWriter::default();
                op.on_barrier(&barrier, &mut w)?;
                Ok(w.batches)
            })
            .collect()
    }

    /// Tells every operator that checkpoint `epoch` is durable.
    pub fn commit(&mut self, epoch: u64) -> Result<()> {
        self.ops.iter_mut().try_for_each(|op| op.on_commit(epoch))
    }

    /// Restores state taken by [`InlineChain::snapshot`] of the same chain, last
    /// operator first (as the threaded runtime does). The chain is one subtask of one.
    pub fn restore(&mut self, epoch: u64, mut states: Vec<Vec<RecordBatch>>) -> Result<()> {
        states.resize_with(self.ops.len(), Vec::new);
        for (op, batches) in self.ops.iter_mut().zip(states).rev() {
            op.restore(RestoredState {
                epoch,
                subtask: 0,
                parallelism: 1,
                batches,
            })?;
        }
        Ok(())
    }

    /// Number of operators.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True for a chain without operators.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The summed state size of the operators that report one.
    pub fn state_size(&self) -> StateSize {
        self.ops
            .iter()
            .filter_map(|op| op.state_size())
            .fold(StateSize::default(), |a, s| StateSize {
                keys: a.keys + s.keys,
                slices: a.slices + s.slices,
                bytes: a.bytes + s.bytes,
            })
    }
}
