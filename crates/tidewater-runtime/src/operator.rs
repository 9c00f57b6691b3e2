//! The operator trait.
//!
//! An operator subtask is a value that receives batches and watermarks in order and
//! emits batches (and, rarely, watermarks) through [`Output`]. Operators of one subtask
//! are chained and run on the same thread; see [`crate::exec`].

use std::fmt::Debug;

use arrow::record_batch::RecordBatch;
use tidewater_core::{Message, Result, Watermark};

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
        self.items.push(Message::Watermark(wm));
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
/// the runtime itself forwards every watermark and the end of stream downstream *after*
/// the hook returns, so results emitted in a hook always precede the watermark that
/// caused them.
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

    /// A short name for `explain` and logs.
    fn name(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }
}

/// Pushes `msg` through `chain`, handing whatever leaves the last operator to `sink`.
pub(crate) fn push_through(
    chain: &mut [Box<dyn Operator>],
    msg: Message,
    sink: &mut dyn FnMut(Message) -> Result<()>,
) -> Result<()> {
    let Some((op, rest)) = chain.split_first_mut() else {
        return sink(msg);
    };
    let mut out = Output::default();
    match msg {
        Message::Data(b) => op.process_batch(b, &mut out)?,
        Message::Watermark(w) => {
            op.on_watermark(w, &mut out)?;
            out.push(Message::Watermark(w));
        }
        Message::EndOfStream => {
            op.on_end(&mut out)?;
            out.push(Message::EndOfStream);
        }
    }
    for m in out.drain() {
        push_through(rest, m, sink)?;
    }
    Ok(())
}
