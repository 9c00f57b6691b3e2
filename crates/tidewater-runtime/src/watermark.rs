//! Turns an event-time column into watermarks: `max(ts seen) - delay`, emitted after
//! each batch when it advances (Flink's bounded-out-of-orderness strategy, evaluated
//! per batch).

use arrow::array::{Array, AsArray};
use arrow::compute::max;
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use tidewater_core::{Error, Result, Watermark};

use crate::{Operator, Output};

/// Emits `max(event time) - delay` after every batch that raises it.
#[derive(Debug)]
pub struct WatermarkGenerator {
    column: usize,
    delay_ms: i64,
    max_seen: Option<i64>,
}

impl WatermarkGenerator {
    /// Watermarks from column `column` (TIMESTAMP(3) or BIGINT millis), `delay_ms` behind.
    pub fn new(column: usize, delay_ms: i64) -> Self {
        Self {
            column,
            delay_ms,
            max_seen: None,
        }
    }
}

/// The maximum of an event-time column (nulls ignored).
pub fn max_event_time(col: &dyn Array) -> Result<Option<i64>> {
    Ok(match col.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            max(col.as_primitive::<TimestampMillisecondType>())
        }
        DataType::Int64 => max(col.as_primitive::<Int64Type>()),
        other => {
            return Err(Error::runtime(format!(
                "event-time column has type {other}; expected TIMESTAMP(3)"
            )));
        }
    })
}

impl Operator for WatermarkGenerator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let m = max_event_time(batch.column(self.column).as_ref())?;
        out.emit(batch);
        if let Some(m) = m
            && self.max_seen.is_none_or(|s| m > s)
        {
            self.max_seen = Some(m);
            out.emit_watermark(Watermark(m.saturating_sub(self.delay_ms)));
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("Watermark(max - {} ms)", self.delay_ms)
    }
}
