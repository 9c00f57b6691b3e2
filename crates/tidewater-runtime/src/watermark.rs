//! Turns an event-time column into watermarks: `max(ts seen) - delay`, emitted after
//! each batch when it advances (Flink's bounded-out-of-orderness strategy, evaluated
//! per batch).

use std::sync::Arc;

use arrow::array::Int64Array;
use arrow::array::{Array, AsArray};
use arrow::compute::kernels::boolean::not;
use arrow::compute::{filter_record_batch, is_null, max};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use tidewater_core::dead_letter::{DeadLetter, DeadLetterSink, Position};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result, Watermark};

use crate::operator::{RestoredState, StateWriter};
use crate::{Barrier, Operator, Output};

/// Emits `max(event time) - delay` after every batch that raises it. Rows without an
/// event time cannot be placed in any window: with [`WatermarkGenerator::with_dead_letters`]
/// they are removed here and written as dead letters (as JSON, with the reason).
#[derive(Debug)]
pub struct WatermarkGenerator {
    column: usize,
    delay_ms: i64,
    max_seen: Option<i64>,
    dead_letters: Option<(Arc<dyn DeadLetterSink>, Arc<JobMetrics>)>,
}

impl WatermarkGenerator {
    /// Watermarks from column `column` (TIMESTAMP(3) or BIGINT millis), `delay_ms` behind.
    pub fn new(column: usize, delay_ms: i64) -> Self {
        Self {
            column,
            delay_ms,
            max_seen: None,
            dead_letters: None,
        }
    }

    /// Removes rows whose event time is NULL and sends them to `sink`.
    pub fn with_dead_letters(
        mut self,
        sink: Arc<dyn DeadLetterSink>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        self.dead_letters = Some((sink, metrics));
        self
    }

    /// The batch without its NULL-time rows, which become dead letters.
    fn drop_null_times(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some((sink, metrics)) = &self.dead_letters else {
            return Ok(batch);
        };
        let col = batch.column(self.column);
        if col.null_count() == 0 {
            return Ok(batch);
        }
        let nulls = is_null(col.as_ref())?;
        let bad = filter_record_batch(&batch, &nulls)?;
        let mut json = arrow::json::LineDelimitedWriter::new(Vec::new());
        json.write(&bad)?;
        json.finish()?;
        let name = batch.schema().field(self.column).name().clone();
        for line in json
            .into_inner()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            sink.write(DeadLetter {
                raw: line.to_vec(),
                reason: format!("event time '{name}' is NULL"),
                position: Position::Unknown,
            })?;
        }
        JobMetrics::add(&metrics.dead_letters, bad.num_rows() as u64);
        Ok(filter_record_batch(&batch, &not(&nulls)?)?)
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
        let batch = self.drop_null_times(batch)?;
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

    fn on_barrier(&mut self, _barrier: &Barrier, state: &mut StateWriter) -> Result<()> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "max_seen",
            DataType::Int64,
            true,
        )]));
        state.write(RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![self.max_seen]))],
        )?);
        Ok(())
    }

    /// Resumes from the smallest maximum any old subtask had seen: source subtasks share
    /// their input, so a smaller value is safe (the window operators keep what fired),
    /// and a larger one could turn rows of another subtask late.
    fn restore(&mut self, state: RestoredState) -> Result<()> {
        let mut min: Option<Option<i64>> = None;
        for b in &state.batches {
            let col = b
                .column_by_name("max_seen")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| Error::runtime("watermark state lacks 'max_seen'"))?;
            for i in 0..col.len() {
                let v = col.is_valid(i).then(|| col.value(i));
                min = Some(match min {
                    None => v,
                    Some(m) => m.zip(v).map(|(a, b)| a.min(b)),
                });
            }
        }
        self.max_seen = min.flatten();
        Ok(())
    }

    fn name(&self) -> String {
        format!("Watermark(max - {} ms)", self.delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMillisecondArray;

    use super::*;

    use tidewater_core::dead_letter::MemoryDeadLetters as Letters;

    #[test]
    fn null_event_times_become_dead_letters_and_the_rest_flows() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(5_000),
                    None,
                    Some(7_000),
                ])),
            ],
        )?;
        let letters = Arc::new(Letters::default());
        let metrics = Arc::new(JobMetrics::default());
        let mut op =
            WatermarkGenerator::new(1, 1_000).with_dead_letters(letters.clone(), metrics.clone());
        let mut out = Output::default();
        op.process_batch(batch, &mut out)?;
        let items: Vec<_> = out.drain().collect();
        match items.as_slice() {
            [crate::Message::Data(b), crate::Message::Watermark(w, _)] => {
                assert_eq!(b.num_rows(), 2);
                assert_eq!(*w, Watermark(6_000));
            }
            other => panic!("unexpected output {other:?}"),
        }
        let letters = letters.letters();
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0].reason.contains("'ts' is NULL"),
            "{}",
            letters[0].reason
        );
        assert_eq!(String::from_utf8_lossy(&letters[0].raw), r#"{"v":2}"#);
        assert_eq!(metrics.snapshot().dead_letters, 1);
        Ok(())
    }
}
