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
pub mod session;
pub mod sliced;
pub mod spec;

pub use agg::{AggKind, AggSpec};
pub use session::SessionWindowOperator;
pub use sliced::SlicedWindowOperator;
pub use spec::WindowSpec;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tidewater_core::metrics::JobMetrics;

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

impl WindowInput {
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
