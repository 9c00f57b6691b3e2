//! # tidewater-window — event-time windows over keyed streams
//!
//! Layout:
//! - [`spec`]: the window kinds (tumble, hop, cumulate, session) and how each is sliced.
//! - [`agg`]: aggregate functions as mergeable partial states (COUNT, SUM, MIN, MAX, AVG,
//!   COUNT DISTINCT) and their output columns.
//! - [`keys`]: the key table — interns grouping keys as Arrow rows, frees them when no
//!   window needs them.
//! - [`sliced`]: the operator for tumble, hop and cumulate windows. Each event updates
//!   exactly one slice of width gcd(size, slide); a window result merges its slices when
//!   the watermark passes its end, and slices no window needs are freed at once.
//! - [`session`]: the operator for session windows, merged per key on the gap.
//!
//! Both operators take batches laid out as `[key columns.., event time, aggregate
//! arguments..]` (see [`WindowInput`]) and emit `[window_start, window_end, keys..,
//! aggregates..]`. Late events — for sliced windows, those whose *last* window has fired
//! (Flink's rule); for sessions, those at or behind the watermark — are counted and
//! dropped, never folded into an emitted result.

pub mod agg;
pub mod keys;
mod parts;
pub mod session;
pub mod sliced;
pub mod spec;
mod state;

pub use agg::{AggKind, AggSpec};
pub use session::SessionWindowOperator;
pub use sliced::SlicedWindowOperator;
pub use spec::WindowSpec;

use std::sync::Arc;

use arrow::array::{AsArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};

use crate::agg::ArgView;
use crate::keys::{BatchKeys, KeyTable};

/// What a window operator needs to know about its input and output.
#[derive(Debug, Clone)]
pub struct WindowInput {
    /// Number of leading key columns.
    pub key_columns: usize,
    /// Names and types of the key columns (for the output schema).
    pub key_fields: Vec<Field>,
    /// Index of the event-time column (TIMESTAMP(3)); always `key_columns`.
    pub time_column: usize,
    /// The aggregates, each reading its argument column (if any) by index.
    pub aggs: Vec<AggSpec>,
    /// Job counters (late events).
    pub metrics: Arc<JobMetrics>,
}

/// `" by k1, k2: SUM(#3), COUNT(*)"`: what the state of a window operator holds, for
/// `explain` and for telling whether a checkpoint fits the plan.
pub(crate) fn describe_aggs(input: &WindowInput) -> String {
    let keys: Vec<&str> = input.key_fields.iter().map(|f| f.name().as_str()).collect();
    let aggs: Vec<String> = input
        .aggs
        .iter()
        .map(|a| match a.arg {
            None => format!("{:?}", a.kind).to_uppercase(),
            Some(i) => format!(
                "{}(#{i} {})",
                format!("{:?}", a.kind).to_uppercase(),
                a.arg_type
            ),
        })
        .collect();
    format!(" by [{}]: {}", keys.join(", "), aggs.join(", "))
}

/// One input batch as the operators read it, row by row.
pub(crate) struct BatchView<'a> {
    pub rows: BatchKeys,
    pub ts: &'a TimestampMillisecondArray,
    pub args: Vec<ArgView>,
}

impl WindowInput {
    /// Key rows, event times and aggregate arguments of `batch`.
    pub(crate) fn view<'a>(
        &self,
        keys: &KeyTable,
        batch: &'a RecordBatch,
    ) -> Result<BatchView<'a>> {
        let cols = batch.columns();
        let rows = keys.rows(&cols[..self.key_columns])?;
        let time = &cols[self.time_column];
        let ts = time
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| {
                Error::runtime(format!(
                    "event-time column has type {}; expected TIMESTAMP(3)",
                    time.data_type()
                ))
            })?;
        let args = self
            .aggs
            .iter()
            .map(|a| a.arg_view(cols))
            .collect::<Result<_>>()?;
        Ok(BatchView { rows, ts, args })
    }

    /// `[window_start, window_end, keys.., aggregates..]`.
    pub fn output_schema(&self) -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let mut fields = vec![
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
        ];
        fields.extend(self.key_fields.iter().cloned());
        for (i, a) in self.aggs.iter().enumerate() {
            fields.push(Field::new(format!("__agg{i}"), a.output_type(), true));
        }
        Arc::new(Schema::new(fields))
    }
}
