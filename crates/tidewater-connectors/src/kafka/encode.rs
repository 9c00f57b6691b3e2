//! Output rows to message keys and values, one record per row.
//!
//! JSON records are the bytes arrow-json's writer gives (nulls left out), with
//! millisecond timestamps as Flink writes them. The kinds window results are made of —
//! text, 64-bit integers, millisecond timestamps — are written here by [`JsonRows`] in
//! one pass per row; every other kind goes through arrow-json's own encoder. Window
//! results are most of what a Kafka job writes, and arrow-json's struct encoder spent
//! about 70 ns on each (a dynamic call, a name copy and a serde call per field).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, StringBuilder, TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder, make_encoder};
use arrow::record_batch::RecordBatch;
use tidewater_core::time::write_millis;
use tidewater_core::{Error, Result};

use super::codec::Slab;
use super::options::RecordFormat;
use crate::format::{Format, stringify_timestamps};

/// Turns output rows into message keys and values.
#[derive(Debug)]
pub(crate) struct RecordEncoder {
    value: RecordFormat,
    key: Option<(RecordFormat, Vec<usize>)>,
    /// The last batch's records; its buffers are reused for the next batch.
    records: Encoded,
}

/// The records of a batch: values (and keys) back to back in one buffer each.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    values: Slab,
    keys: Option<Slab>,
}

impl Encoded {
    /// Records.
    pub(crate) fn len(&self) -> usize {
        self.values.spans.len()
    }

    /// Each record's key and value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Option<&[u8]>, &[u8])> {
        (0..self.len()).map(|i| {
            (
                self.keys.as_ref().and_then(|k| k.get(i)),
                self.values.get(i).unwrap_or_default(),
            )
        })
    }
}

impl RecordEncoder {
    pub(crate) fn new(value: RecordFormat, key: Option<(RecordFormat, Vec<usize>)>) -> Self {
        Self {
            value,
            key,
            records: Encoded::default(),
        }
    }

    /// One record per row (valid until the next call).
    pub(crate) fn encode(&mut self, batch: &RecordBatch) -> Result<&Encoded> {
        // JSON writes millisecond timestamps itself; a raw part is a STRING column.
        let direct =
            |f: &RecordFormat| matches!(f, RecordFormat::Lines(Format::Json) | RecordFormat::Raw);
        let batch = if direct(&self.value)
            && self.key.as_ref().is_none_or(|(f, _)| direct(f))
            && !batch.schema().fields().iter().any(|f| {
                matches!(f.data_type(), DataType::Timestamp(u, _) if *u != TimeUnit::Millisecond)
            }) {
            batch.clone()
        } else {
            timestamps_as_text(batch)?
        };
        encode_rows(&self.value, &batch, &mut self.records.values)?;
        match &self.key {
            Some((format, cols)) => {
                let keys = self.records.keys.get_or_insert_with(Slab::default);
                encode_rows(format, &batch.project(cols)?, keys)?;
            }
            None => self.records.keys = None,
        }
        Ok(&self.records)
    }
}

/// Millisecond timestamps as `YYYY-MM-DD HH:MM:SS.sss` text by the fast formatter (window
/// results carry two each); other timestamp columns the general way.
fn timestamps_as_text(batch: &RecordBatch) -> Result<RecordBatch> {
    let millis = |f: &arrow::datatypes::Field| {
        matches!(f.data_type(), DataType::Timestamp(TimeUnit::Millisecond, _))
    };
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| millis(f)) {
        return stringify_timestamps(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    let mut text = String::with_capacity(23);
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let Some(ts) = c.as_any().downcast_ref::<TimestampMillisecondArray>() else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
            continue;
        };
        let mut b = StringBuilder::with_capacity(ts.len(), ts.len() * 23);
        // Window results come grouped by window: a run of rows shares each bound.
        let mut last = None;
        for v in ts {
            match v {
                Some(ms) => {
                    if last != Some(ms) {
                        text.clear();
                        write_millis(ms, &mut text);
                        last = Some(ms);
                    }
                    b.append_value(&text);
                }
                None => b.append_null(),
            }
        }
        fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
        columns.push(Arc::new(b.finish()) as ArrayRef);
    }
    stringify_timestamps(&RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Millisecond timestamps in JSON as Flink writes them, `"YYYY-MM-DD HH:MM:SS.sss"`, for
/// arrow-json's encoder of a column nested in another (a struct or list of them).
#[derive(Debug)]
struct MillisAsText;

impl EncoderFactory for MillisAsText {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> std::result::Result<Option<NullableEncoder<'a>>, ArrowError> {
        let Some(ts) = array.as_any().downcast_ref::<TimestampMillisecondArray>() else {
            return Ok(None);
        };
        let encoder = MillisText::new(ts, b"");
        Ok(Some(NullableEncoder::new(
            Box::new(encoder),
            ts.nulls().cloned(),
        )))
    }
}

/// A timestamp column's values as quoted text, after a fixed prefix. Window results
/// carry two bounds per row, in runs of equal values: the text is formatted once per
/// run, straight into the record, with no escaping (it needs none).
struct MillisText<'a> {
    ts: &'a TimestampMillisecondArray,
    /// The value `text` holds.
    last: Option<i64>,
    /// The prefix, then the quoted text of `last`.
    text: Vec<u8>,
    prefix: usize,
    scratch: String,
}

impl<'a> MillisText<'a> {
    fn new(ts: &'a TimestampMillisecondArray, prefix: &[u8]) -> Self {
        let mut text = Vec::with_capacity(prefix.len() + 25);
        text.extend_from_slice(prefix);
        Self {
            ts,
            last: None,
            text,
            prefix: prefix.len(),
            scratch: String::with_capacity(23),
        }
    }

    /// The prefix and row `idx`'s quoted text.
    fn text(&mut self, idx: usize) -> &[u8] {
        let ms = self.ts.value(idx);
        if self.last != Some(ms) {
            self.scratch.clear();
            write_millis(ms, &mut self.scratch);
            self.text.truncate(self.prefix);
            self.text.push(b'"');
            self.text.extend_from_slice(self.scratch.as_bytes());
            self.text.push(b'"');
            self.last = Some(ms);
        }
        &self.text
    }
}

impl Encoder for MillisText<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text(idx));
    }
}

/// One JSON object per row of a batch, as arrow-json writes it (see the module docs).
struct JsonRows<'a> {
    fields: Vec<JsonField<'a>>,
}

struct JsonField<'a> {
    /// `,"name":` with the name escaped as arrow-json escapes it; the first field written
    /// in a row leaves out the comma.
    name: Vec<u8>,
    nulls: Option<&'a NullBuffer>,
    value: JsonValue<'a>,
}

enum JsonValue<'a> {
    Text(&'a StringArray),
    Int(&'a Int64Array),
    /// Holds the field's `,"name":` itself, for one copy per value.
    Millis(MillisText<'a>),
    Other(NullableEncoder<'a>),
}

impl<'a> JsonRows<'a> {
    fn new(
        fields: &'a [FieldRef],
        columns: &'a [ArrayRef],
        options: &'a EncoderOptions,
    ) -> Result<Self> {
        let mut out = Vec::with_capacity(fields.len());
        for (field, column) in fields.iter().zip(columns) {
            let mut name = vec![b','];
            serde_json::to_writer(&mut name, field.name())
                .map_err(|e| Error::runtime(format!("JSON field name: {e}")))?;
            name.push(b':');
            let any = column.as_any();
            let value = if let Some(a) = any.downcast_ref::<StringArray>() {
                JsonValue::Text(a)
            } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                JsonValue::Int(a)
            } else if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
                JsonValue::Millis(MillisText::new(a, &name))
            } else {
                JsonValue::Other(make_encoder(field, column.as_ref(), options)?)
            };
            let nulls = match &value {
                // Arrow's own null rule for the kinds it encodes (e.g. a NULL column).
                JsonValue::Other(_) => None,
                _ => column.nulls(),
            };
            out.push(JsonField { name, nulls, value });
        }
        Ok(Self { fields: out })
    }

    /// Appends row `idx` as one JSON object.
    fn write(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.push(b'{');
        // The first field written skips its comma.
        let mut skip = 1;
        for f in &mut self.fields {
            let null = match &f.value {
                JsonValue::Other(e) => e.is_null(idx),
                _ => f.nulls.is_some_and(|n| n.is_null(idx)),
            };
            if null {
                continue;
            }
            match &mut f.value {
                JsonValue::Millis(m) => out.extend_from_slice(&m.text(idx)[skip..]),
                JsonValue::Text(a) => {
                    out.extend_from_slice(&f.name[skip..]);
                    write_text(a.value(idx), out);
                }
                JsonValue::Int(a) => {
                    out.extend_from_slice(&f.name[skip..]);
                    out.extend_from_slice(itoa::Buffer::new().format(a.value(idx)).as_bytes());
                }
                JsonValue::Other(e) => {
                    out.extend_from_slice(&f.name[skip..]);
                    e.encode(idx, out);
                }
            }
            skip = 0;
        }
        out.push(b'}');
    }
}

/// A JSON string as serde_json (and so arrow-json) writes it; text that needs no escape
/// is copied between quotes without serde's byte-by-byte writer.
fn write_text(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Unreachable: a Vec takes every write and a &str is always valid JSON text.
        out.extend_from_slice(b"null");
    }
}

fn encode_rows(format: &RecordFormat, batch: &RecordBatch, out: &mut Slab) -> Result<()> {
    let rows = batch.num_rows();
    out.clear();
    match format {
        RecordFormat::Raw => {
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::runtime("'raw' format needs a STRING column"))?;
            for v in col {
                out.push(Some(v.unwrap_or_default().as_bytes()));
            }
        }
        RecordFormat::Lines(Format::Json) => {
            // Straight into the slab, one record per row: arrow-json's line writer would
            // copy every 8 KiB through a buffer of its own, and the records would have to
            // be found again by their newlines.
            let schema = batch.schema();
            let options = EncoderOptions::default().with_encoder_factory(Arc::new(MillisAsText));
            let mut rows_writer = JsonRows::new(schema.fields(), batch.columns(), &options)?;
            out.spans.reserve(rows);
            for i in 0..rows {
                let start = out.bytes.len();
                rows_writer.write(i, &mut out.bytes);
                out.spans.push(Some((start, out.bytes.len())));
            }
        }
        RecordFormat::Lines(Format::Csv { delimiter, .. }) => {
            let writer = |capacity| {
                arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(*delimiter)
                    .build(Vec::with_capacity(capacity))
            };
            if !may_hold_newline(batch) {
                // One writer for the batch (into the slab's buffer): every row is then
                // one line.
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(*delimiter)
                    .build(std::mem::take(&mut out.bytes));
                w.write(batch)?;
                out.bytes = w.into_inner();
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', &out.bytes) {
                    out.spans.push(Some((start, end)));
                    start = end + 1;
                }
                if out.spans.len() == rows {
                    return Ok(());
                }
                out.clear();
            }
            for i in 0..rows {
                // Row by row: a quoted field holds a newline.
                let mut w = writer(64);
                w.write(&batch.slice(i, 1))?;
                let v = w.into_inner();
                out.push(Some(v.strip_suffix(b"\n").unwrap_or(&v)));
            }
        }
    }
    Ok(())
}

/// Whether a CSV field of `batch` might hold a line break: a string column whose bytes
/// hold one (or a column of a kind not checked here).
fn may_hold_newline(batch: &RecordBatch) -> bool {
    batch.columns().iter().any(|c| {
        let breaks = |b: &[u8]| memchr::memchr2(b'\n', b'\r', b).is_some();
        match c.data_type() {
            DataType::Utf8 => breaks(c.as_string::<i32>().values()),
            DataType::LargeUtf8 => breaks(c.as_string::<i64>().values()),
            t => !(t.is_primitive() || matches!(t, DataType::Boolean | DataType::Null)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array};
    use proptest::prelude::*;

    #[test]
    fn records_carry_timestamps_as_text_and_the_declared_key() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        // A run of equal bounds, a null (left out, as arrow-json leaves out nulls) and
        // another value: the JSON writer's own formatting of them keeps no stale text.
        let ends = [
            Some(1_700_000_010_000),
            Some(1_700_000_010_000),
            None,
            Some(1_700_000_012_345),
        ];
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["k1", "k2", "k3", "k4"])),
                Arc::new(TimestampMillisecondArray::from(ends.to_vec())),
            ],
        )
        .expect("batch");
        let mut e = RecordEncoder::new(
            RecordFormat::Lines(Format::Json),
            Some((RecordFormat::Raw, vec![0])),
        );
        let records = e.encode(&batch).expect("encode");
        let expected: Vec<(Option<&[u8]>, &[u8])> = vec![
            (
                Some(b"k1"),
                br#"{"key":"k1","window_end":"2023-11-14 22:13:30.000"}"#,
            ),
            (
                Some(b"k2"),
                br#"{"key":"k2","window_end":"2023-11-14 22:13:30.000"}"#,
            ),
            (Some(b"k3"), br#"{"key":"k3"}"#),
            (
                Some(b"k4"),
                br#"{"key":"k4","window_end":"2023-11-14 22:13:32.345"}"#,
            ),
        ];
        assert_eq!(records.iter().collect::<Vec<_>>(), expected);
        // A JSON key: the same text there.
        let mut e = RecordEncoder::new(
            RecordFormat::Lines(Format::Json),
            Some((RecordFormat::Lines(Format::Json), vec![1])),
        );
        let records = e.encode(&batch).expect("encode");
        assert_eq!(
            records.iter().next().and_then(|(k, _)| k),
            Some(br#"{"window_end":"2023-11-14 22:13:30.000"}"#.as_slice())
        );
    }

    #[test]
    fn csv_records_are_the_rows_each_written_alone() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("total", DataType::Int64, true),
        ]));
        let batch = |keys: Vec<Option<&str>>| {
            let n = keys.len() as i64;
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(keys)),
                    Arc::new(Int64Array::from_iter_values(0..n)),
                ],
            )
            .expect("batch")
        };
        let alone = |b: &RecordBatch, i: usize| {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(false)
                .build(Vec::new());
            w.write(&b.slice(i, 1)).expect("write");
            let mut v = w.into_inner();
            assert_eq!(v.pop(), Some(b'\n'));
            v
        };
        let csv = RecordFormat::Lines(Format::Csv {
            delimiter: b',',
            header: false,
        });
        let mut e = RecordEncoder::new(csv, None);
        for b in [
            batch(vec![
                Some("a"),
                None,
                Some("with, comma"),
                Some("q\"uote"),
                Some(""),
            ]),
            batch(vec![Some("a"), Some("two\nlines"), Some("b"), Some("cr\r")]),
            batch(vec![Some("a"), Some("b")]).slice(1, 1),
        ] {
            let records = e.encode(&b).expect("encode");
            let want: Vec<Vec<u8>> = (0..b.num_rows()).map(|i| alone(&b, i)).collect();
            let got: Vec<Vec<u8>> = records.iter().map(|(_, v)| v.to_vec()).collect();
            assert_eq!(got, want);
        }
    }
    /// Optional text with what JSON must escape: quotes, backslashes, control characters.
    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("([a-z0-9]|\"|\\\\|[\\x00-\\x1f]|\\x7f|é|😀){0,12}")
    }

    proptest! {
        /// Every record is the line arrow-json's own writer gives for the row once its
        /// millisecond timestamps are text: the same escaping, numbers and left-out nulls.
        #[test]
        fn json_records_are_the_lines_of_arrow_json(
            rows in proptest::collection::vec(
                (
                    text(),
                    proptest::option::of(any::<i64>()),
                    proptest::option::of(-100_000_000_000_000i64..300_000_000_000_000),
                    proptest::option::of(any::<f64>()),
                    proptest::option::of(any::<bool>()),
                    any::<i64>(),
                ),
                0..40,
            ),
            slice in (0usize..40, 0usize..40),
        ) {
            let schema = Arc::new(Schema::new(vec![
                Field::new("key", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
                Field::new(
                    "window \"end\"",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ),
                Field::new("x", DataType::Float64, true),
                Field::new("b", DataType::Boolean, true),
                Field::new("cnt", DataType::Int64, false),
            ]));
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                    Arc::new(TimestampMillisecondArray::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )),
                    Arc::new(Float64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
                    Arc::new(BooleanArray::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.5))),
                ],
            )
            .expect("batch");
            let start = slice.0.min(rows.len());
            let batch = batch.slice(start, slice.1.min(rows.len() - start));
            let mut e = RecordEncoder::new(RecordFormat::Lines(Format::Json), None);
            let got: Vec<Vec<u8>> = e.encode(&batch).expect("encode").iter().map(|(_, v)| v.to_vec()).collect();
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            w.write(&timestamps_as_text(&batch).expect("text")).expect("write");
            w.finish().expect("finish");
            let lines = w.into_inner();
            let want: Vec<Vec<u8>> = lines
                .split(|b| *b == b'\n')
                .take(batch.num_rows())
                .map(<[u8]>::to_vec)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
