//! Helpers for sinks: timestamps as `YYYY-MM-DD HH:MM:SS.sss`, rows as text.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tidewater_core::Result;

const TS_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

fn options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_timestamp_format(Some(TS_FORMAT))
        .with_null("NULL")
}

/// Replaces timestamp columns by their text in UTC, the format every sink writes.
pub fn stringify_timestamps(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(..)))
    {
        return Ok(batch.clone());
    }
    let opts = FormatOptions::default().with_timestamp_format(Some(TS_FORMAT));
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(f.data_type(), DataType::Timestamp(..)) {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
            let s: StringArray = (0..c.len())
                .map(|i| {
                    if c.is_null(i) {
                        None
                    } else {
                        Some(fmt.value(i).to_string())
                    }
                })
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            cols.push(Arc::new(s));
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// Formats rows as Flink's print sink does: `+I[a, b, c]`.
#[derive(Debug, Default)]
pub struct RowFormatter;

impl RowFormatter {
    /// Appends one line per row of `batch` to `out`, each prefixed by `prefix`.
    pub fn write_rows(&self, batch: &RecordBatch, prefix: &str, out: &mut String) -> Result<()> {
        let opts = options();
        let fmts = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push_str(prefix);
            out.push_str("+I[");
            for (i, f) in fmts.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                use std::fmt::Write as _;
                let _ = write!(out, "{}", f.value(row));
            }
            out.push_str("]\n");
        }
        Ok(())
    }
}
