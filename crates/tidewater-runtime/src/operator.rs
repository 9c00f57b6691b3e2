//! The operator trait.
//!
//! An operator subtask is a value that receives batches and watermarks in order and
//! emits batches (and, rarely, watermarks) through [`Output`]. Operators of one subtask
//! are chained and run on the same thread; see [`crate::exec`].

use std::fmt::Debug;

use arrow::record_batch::RecordBatch;
use tidewater_core::{Error, Result, Watermark};

use crate::message::{Barrier, Message};

/// Name of the column that marks state as keyed: a `UInt16` key group per row. On
/// restore the runtime hands each subtask only the rows of the key groups it owns, so
/// keyed state survives a change of parallelism. Rows with a NULL key group go to every
/// subtask (operator-wide values such as the watermark).
pub const KEY_GROUP_COLUMN: &str = "__key_group";

/// Where an operator writes its state at a barrier: Arrow batches, stored as one
/// checksummed IPC file per operator and subtask.
#[derive(Debug, Default)]
pub struct StateWriter {
    pub(crate) batches: Vec<RecordBatch>,
}

impl StateWriter {
    /// Adds a batch of state. All batches of one operator share a schema. Keyed state
    /// carries a [`KEY_GROUP_COLUMN`].
    pub fn write(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
    }

    /// What was written (for tests of operators outside the runtime).
    pub fn into_batches(self) -> Vec<RecordBatch> {
        self.batches
    }
}

/// The size of an operator's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Keys with state.
    pub keys: u64,
    /// Slices (or sessions) with state.
    pub slices: u64,
    /// Approximate bytes.
    pub bytes: u64,
}

/// The state an operator gets back on restore.
#[derive(Debug)]
pub struct RestoredState {
    /// The checkpoint restored.
    pub epoch: u64,
    /// This subtask's index and the stage's parallelism now.
    pub subtask: usize,
    /// Subtasks of the stage now.
    pub parallelism: usize,
    /// The state of every subtask of the checkpoint, keyed state already filtered to
    /// the key groups this subtask owns.
    pub batches: Vec<RecordBatch>,
}

/// Where an operator puts what it produces during one call.
#[derive(Debug, Default)]
pub struct Output {
    items: Vec<Message>,
}

impl Output {
    /// Emits a batch downstream. Empty batches are dropped here.
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.items.push(Message::Data(batch));
        }
    }

    /// Emits a watermark downstream. Only operators that *create* event time (the
    /// watermark generator) call this; input watermarks are forwarded by the runtime.
    pub fn emit_watermark(&mut self, wm: Watermark) {
        self.items
            .push(Message::Watermark(wm, std::time::Instant::now()));
    }

    pub(crate) fn push(&mut self, m: Message) {
        self.items.push(m);
    }

    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Message> {
        self.items.drain(..)
    }
}

/// A step of the dataflow.
///
/// Only [`Operator::process_batch`] is required. The hooks default to doing nothing;
/// the runtime itself forwards every watermark, barrier and the end of stream
/// downstream *after* the hook returns, so results emitted in a hook always precede the
/// watermark that caused them.
///
/// Checkpoints: when barrier *n* has arrived on every input, the runtime calls
/// [`Operator::on_barrier`] on each operator of the chain; what they write is state of
/// checkpoint *n*. Once every subtask has acknowledged *n* and its manifest is durable,
/// [`Operator::on_commit`] tells them so (sinks make output visible only then). On a
/// resume, [`Operator::restore`] runs before the first batch, sinks first.
pub trait Operator: Send + Debug {
    /// Handles one batch of rows.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()>;

    /// Event time on this subtask's inputs has advanced to `wm` (the minimum over all
    /// inputs). Windowed operators fire here. Default: nothing.
    fn on_watermark(&mut self, wm: Watermark, out: &mut Output) -> Result<()> {
        let _ = (wm, out);
        Ok(())
    }

    /// All inputs have ended (bounded input). Flush what is left; sinks commit here when
    /// checkpointing is off. Default: nothing.
    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// Barrier `barrier` has arrived on every input: write the state that the rows
    /// before it produced into `state`; a sink pre-commits here (closes what it wrote
    /// since the last barrier, to be made visible by [`Operator::on_commit`]).
    /// Default: no state.
    fn on_barrier(&mut self, barrier: &Barrier, state: &mut StateWriter) -> Result<()> {
        let _ = (barrier, state);
        Ok(())
    }

    /// Checkpoint `epoch` is complete (its manifest is durable). Default: nothing.
    fn on_commit(&mut self, epoch: u64) -> Result<()> {
        let _ = epoch;
        Ok(())
    }

    /// Resumes from the state written by `on_barrier`, before any input. A sink that
    /// finds output of the checkpoint missing returns [`Error::Damaged`] *before*
    /// changing anything, and the runtime tries the previous checkpoint.
    /// Default: accepts no state.
    fn restore(&mut self, state: RestoredState) -> Result<()> {
        if state.batches.is_empty() {
            Ok(())
        } else {
            Err(Error::Checkpoint(format!(
                "checkpoint {} holds state for '{}', which keeps none",
                state.epoch,
                self.name()
            )))
        }
    }

    /// How much state the operator holds, for metrics (sampled after watermarks).
    /// Default: none.
    fn state_size(&self) -> Option<StateSize> {
        None
    }

    /// A short name for `explain` and logs.
    fn name(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }
}

/// Pushes `msg` through `chain`, handing whatever leaves the last operator to `sink`.
/// Rows handed to the chain's last operator are added to `into_last` (for a chain that
/// ends in a sink: the rows written).
pub(crate) fn push_through(
    chain: &mut [Box<dyn Operator>],
    msg: Message,
    sink: &mut dyn FnMut(Message) -> Result<()>,
    into_last: &mut u64,
) -> Result<()> {
    let Some((op, rest)) = chain.split_first_mut() else {
        return sink(msg);
    };
    let mut out = Output::default();
    match msg {
        Message::Data(b) => {
            if rest.is_empty() {
                *into_last += b.num_rows() as u64;
            }
            op.process_batch(b, &mut out)?
        }
        Message::Watermark(w, at) => {
            op.on_watermark(w, &mut out)?;
            out.push(Message::Watermark(w, at));
        }
        Message::EndOfStream => {
            op.on_end(&mut out)?;
            out.push(Message::EndOfStream);
        }
        // The chain was snapshotted as a whole before the barrier is pushed.
        Message::Barrier(b) => out.push(Message::Barrier(b)),
    }
    for m in out.drain() {
        push_through(rest, m, sink, into_last)?;
    }
    Ok(())
}
