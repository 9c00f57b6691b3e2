//! Messages to batches and back.
//!
//! Decoding reuses the line decoders of the files: a task's messages are joined into one
//! chunk (one record per line) and decoded in one Arrow call; a bad message becomes a
//! dead letter whose position is mapped back to its topic, partition and offset.

use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StringArray, StringBuilder, StructArray,
    TimestampMillisecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder, make_encoder};
use arrow::record_batch::RecordBatch;
use tidewater_core::dead_letter::{DeadLetter, DeadLetterSink, Position};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::time::write_millis;
use tidewater_core::{Error, Result};

use super::options::{KafkaSourceOptions, RecordFormat};
use crate::format::{Chunk, ChunkDecoder, Format, stringify_timestamps};

/// Byte strings (or absent ones) stored back to back: one growing buffer instead of an
/// allocation per message.
#[derive(Debug, Default)]
struct Slab {
    bytes: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
}

impl Slab {
    fn push(&mut self, b: Option<&[u8]>) {
        self.spans.push(b.map(|b| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(b);
            (start, self.bytes.len())
        }));
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let (a, b) = self.spans.get(i).copied().flatten()?;
        self.bytes.get(a..b)
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

/// The messages a task has polled and not yet pushed through its chain.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    offsets: Vec<i64>,
    keys: Slab,
    values: Slab,
}

impl Pending {
    pub(crate) fn push(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.offsets.push(offset);
        self.keys.push(key);
        self.values.push(value);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The offset after the last message.
    pub(crate) fn next_offset(&self) -> Option<i64> {
        self.offsets.last().map(|o| o + 1)
    }

    pub(crate) fn clear(&mut self) {
        self.offsets.clear();
        self.keys.clear();
        self.values.clear();
    }

    fn column<'a>(&'a self, slab: &'a Slab) -> Vec<(i64, Option<&'a [u8]>)> {
        self.offsets
            .iter()
            .enumerate()
            .map(|(i, o)| (*o, slab.get(i)))
            .collect()
    }
}

/// Maps the line positions of the chunk decoder to Kafka coordinates and remembers which
/// lines failed.
#[derive(Debug)]
struct KafkaPositions {
    inner: Arc<dyn DeadLetterSink>,
    topic: String,
    partition: i32,
    /// Offsets of the chunk's lines, and the indices of the lines that failed.
    lines: Mutex<(Vec<i64>, Vec<usize>)>,
}

impl DeadLetterSink for KafkaPositions {
    fn write(&self, mut letter: DeadLetter) -> Result<()> {
        let mut lines = self
            .lines
            .lock()
            .map_err(|_| Error::runtime("dead-letter positions poisoned"))?;
        if let Position::Offset { line, .. } = letter.position
            && let Some(i) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1))
        {
            lines.1.push(i);
            if let Some(&offset) = lines.0.get(i) {
                letter.position = self.position(offset);
            }
        }
        drop(lines);
        self.inner.write(letter)
    }
}

impl KafkaPositions {
    fn position(&self, offset: i64) -> Position {
        Position::Kafka {
            topic: self.topic.clone(),
            partition: self.partition,
            offset,
        }
    }
}

/// One side of a message (value, or key) as columns.
#[derive(Debug)]
struct Part {
    format: RecordFormat,
    schema: SchemaRef,
    decoder: Option<ChunkDecoder>,
    positions: Arc<KafkaPositions>,
    /// Job counters when this part counts records in (the value); the key's counts
    /// would be a second count of the same messages.
    metrics: Arc<JobMetrics>,
}

impl Part {
    fn new(
        format: RecordFormat,
        schema: SchemaRef,
        positions: Arc<KafkaPositions>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        let decoder = match &format {
            RecordFormat::Lines(f) => Some(ChunkDecoder::new(
                f.clone(),
                schema.clone(),
                positions.clone(),
                metrics.clone(),
            )),
            RecordFormat::Raw => None,
        };
        Self {
            format,
            schema,
            decoder,
            positions,
            metrics,
        }
    }

    fn dead(&self, raw: &[u8], offset: i64, reason: &str) -> Result<()> {
        JobMetrics::add(&self.metrics.dead_letters, 1);
        self.positions.inner.write(DeadLetter {
            raw: raw.to_vec(),
            reason: reason.to_string(),
            position: self.positions.position(offset),
        })
    }

    /// Decodes `payloads`; returns the rows of the good ones and, per payload, whether
    /// it was good.
    fn decode(
        &self,
        payloads: &[(i64, Option<&[u8]>)],
    ) -> Result<(Option<RecordBatch>, Vec<bool>)> {
        let mut ok = vec![false; payloads.len()];
        let mut included = Vec::with_capacity(payloads.len());
        let mut data = Vec::new();
        let mut raw_values: Vec<&str> = Vec::new();
        for (i, (offset, payload)) in payloads.iter().enumerate() {
            let Some(p) = payload else {
                self.dead(b"", *offset, "the message has no value (a tombstone)")?;
                continue;
            };
            match &self.format {
                RecordFormat::Raw => match std::str::from_utf8(p) {
                    Ok(s) => {
                        raw_values.push(s);
                        ok[i] = true;
                    }
                    Err(e) => self.dead(p, *offset, &format!("invalid UTF-8: {e}"))?,
                },
                RecordFormat::Lines(Format::Csv { .. }) if memchr::memchr(b'\n', p).is_some() => {
                    self.dead(p, *offset, "a CSV record must be one line")?;
                }
                RecordFormat::Lines(_) => {
                    // A JSON value's raw newlines are whitespace between tokens.
                    if memchr::memchr2(b'\n', b'\r', p).is_none() {
                        data.extend_from_slice(p);
                    } else {
                        data.extend(
                            p.iter()
                                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                        );
                    }
                    data.push(b'\n');
                    included.push((i, *offset));
                }
            }
        }
        if let RecordFormat::Raw = self.format {
            JobMetrics::add(&self.metrics.records_in, payloads.len() as u64);
            if raw_values.is_empty() {
                return Ok((None, ok));
            }
            let col: ArrayRef = Arc::new(StringArray::from(raw_values));
            return Ok((
                Some(RecordBatch::try_new(self.schema.clone(), vec![col])?),
                ok,
            ));
        }
        let Some(decoder) = &self.decoder else {
            return Ok((None, ok));
        };
        if included.is_empty() {
            return Ok((None, ok));
        }
        *self
            .positions
            .lines
            .lock()
            .map_err(|_| Error::runtime("dead-letter positions poisoned"))? =
            (included.iter().map(|(_, o)| *o).collect(), Vec::new());
        let chunk = Chunk {
            origin: Arc::from(self.positions.topic.as_str()),
            is_file: false,
            first_line: 1,
            data,
        };
        let batch = decoder.decode(&chunk)?;
        let failed = std::mem::take(
            &mut self
                .positions
                .lines
                .lock()
                .map_err(|_| Error::runtime("dead-letter positions poisoned"))?
                .1,
        );
        for (line, (i, _)) in included.iter().enumerate() {
            ok[*i] = !failed.contains(&line);
        }
        Ok((batch, ok))
    }
}

/// Decodes one partition's messages into batches of the table's physical columns.
#[derive(Debug)]
pub(crate) struct MessageDecoder {
    schema: SchemaRef,
    value: Part,
    /// The key part and, per physical column, where it comes from: `(true, i)` is
    /// column i of the key, `(false, i)` of the value.
    key: Option<(Part, Vec<(bool, usize)>)>,
}

impl MessageDecoder {
    pub(crate) fn new(
        options: &KafkaSourceOptions,
        schema: SchemaRef,
        topic: &str,
        partition: i32,
        dead_letters: Arc<dyn DeadLetterSink>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        let positions = |inner: Arc<dyn DeadLetterSink>| {
            Arc::new(KafkaPositions {
                inner,
                topic: topic.to_string(),
                partition,
                lines: Mutex::default(),
            })
        };
        let key_fields = match (&options.key, options.except_key) {
            (Some(k), true) => Some(k),
            _ => None,
        };
        let Some(k) = key_fields else {
            return Self {
                value: Part::new(
                    options.format.clone(),
                    schema.clone(),
                    positions(dead_letters),
                    metrics,
                ),
                schema,
                key: None,
            };
        };
        let project = |cols: Vec<usize>| -> SchemaRef {
            Arc::new(Schema::new(
                cols.iter()
                    .map(|&i| schema.field(i).clone())
                    .collect::<Vec<_>>(),
            ))
        };
        let value_cols: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !k.fields.contains(i))
            .collect();
        let sources = (0..schema.fields().len())
            .map(|i| match k.fields.iter().position(|f| *f == i) {
                Some(j) => (true, j),
                None => (false, value_cols.iter().position(|v| *v == i).unwrap_or(0)),
            })
            .collect();
        let value = Part::new(
            options.format.clone(),
            project(value_cols),
            positions(dead_letters.clone()),
            metrics.clone(),
        );
        let key = Part::new(
            k.format.clone(),
            project(k.fields.clone()),
            positions(dead_letters),
            // Counted by the value already; key dead letters are added to `metrics`.
            Arc::default(),
        );
        Self {
            schema,
            value,
            key: Some((key, sources)),
        }
    }

    /// The good messages as one batch (`None` when none was good).
    pub(crate) fn decode(&self, messages: &Pending) -> Result<Option<RecordBatch>> {
        let values = messages.column(&messages.values);
        let (vbatch, vok) = self.value.decode(&values)?;
        let Some((key_part, sources)) = &self.key else {
            return Ok(vbatch);
        };
        let keys = messages.column(&messages.keys);
        let dead_before = key_part
            .metrics
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed);
        let (kbatch, kok) = key_part.decode(&keys)?;
        JobMetrics::add(
            &self.value.metrics.dead_letters,
            key_part
                .metrics
                .dead_letters
                .load(std::sync::atomic::Ordering::Relaxed)
                - dead_before,
        );
        let (Some(vbatch), Some(kbatch)) = (vbatch, kbatch) else {
            return Ok(None);
        };
        // Rows of each part belong to the messages that part decoded; keep the messages
        // both decoded.
        let keep = |ok: &[bool], other: &[bool]| -> BooleanArray {
            ok.iter()
                .zip(other)
                .filter(|(o, _)| **o)
                .map(|(_, b)| Some(*b))
                .collect()
        };
        let vbatch = filter_record_batch(&vbatch, &keep(&vok, &kok))?;
        let kbatch = filter_record_batch(&kbatch, &keep(&kok, &vok))?;
        if vbatch.num_rows() == 0 {
            return Ok(None);
        }
        let columns = sources
            .iter()
            .map(|&(from_key, i)| {
                if from_key {
                    kbatch.column(i).clone()
                } else {
                    vbatch.column(i).clone()
                }
            })
            .collect();
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

/// Turns output rows into message keys and values.
#[derive(Debug, Clone)]
pub(crate) struct RecordEncoder {
    value: RecordFormat,
    key: Option<(RecordFormat, Vec<usize>)>,
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
        Self { value, key }
    }

    /// One record per row.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Encoded> {
        let json = |f: &RecordFormat| matches!(f, RecordFormat::Lines(Format::Json));
        // The JSON writer formats millisecond timestamps itself (`MillisAsText`).
        let batch = if json(&self.value)
            && self.key.as_ref().is_none_or(|(f, _)| json(f))
            && !batch.schema().fields().iter().any(|f| {
                matches!(f.data_type(), DataType::Timestamp(u, _) if *u != TimeUnit::Millisecond)
            }) {
            batch.clone()
        } else {
            timestamps_as_text(batch)?
        };
        let values = encode_rows(&self.value, &batch)?;
        let keys = match &self.key {
            Some((format, cols)) => Some(encode_rows(format, &batch.project(cols)?)?),
            None => None,
        };
        Ok(Encoded { values, keys })
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

/// Millisecond timestamps in JSON as Flink writes them, `"YYYY-MM-DD HH:MM:SS.sss"`,
/// straight into the record: no column of text in between and no escaping (the text
/// needs none). Window results carry two each, in runs of equal values.
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
        let encoder = MillisEncoder {
            ts,
            last: None,
            text: String::with_capacity(25),
        };
        Ok(Some(NullableEncoder::new(
            Box::new(encoder),
            ts.nulls().cloned(),
        )))
    }
}

struct MillisEncoder<'a> {
    ts: &'a TimestampMillisecondArray,
    /// The value `text` holds, quoted.
    last: Option<i64>,
    text: String,
}

impl Encoder for MillisEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let ms = self.ts.value(idx);
        if self.last != Some(ms) {
            self.text.clear();
            self.text.push('"');
            write_millis(ms, &mut self.text);
            self.text.push('"');
            self.last = Some(ms);
        }
        out.extend_from_slice(self.text.as_bytes());
    }
}

fn encode_rows(format: &RecordFormat, batch: &RecordBatch) -> Result<Slab> {
    let rows = batch.num_rows();
    let mut out = Slab::default();
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
            // arrow-json's encoder straight into the slab, one record per row: its
            // line writer would copy every 8 KiB through a buffer of its own, and the
            // records would have to be found again by their newlines.
            let array = StructArray::from(batch.clone());
            let field: FieldRef = Arc::new(Field::new_struct(
                "",
                batch.schema().fields().clone(),
                false,
            ));
            let options = EncoderOptions::default().with_encoder_factory(Arc::new(MillisAsText));
            let mut encoder = make_encoder(&field, &array, &options)?;
            out.bytes.reserve(rows * 96);
            out.spans.reserve(rows);
            for i in 0..rows {
                let start = out.bytes.len();
                encoder.encode(i, &mut out.bytes);
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
                // One writer for the batch: every row is then one line.
                let mut w = writer(rows * 64);
                w.write(batch)?;
                out.bytes = w.into_inner();
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', &out.bytes) {
                    out.spans.push(Some((start, end)));
                    start = end + 1;
                }
                if out.spans.len() == rows {
                    return Ok(out);
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
    Ok(out)
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
    use crate::TableOptions;
    use arrow::array::Int64Array;

    use tidewater_core::dead_letter::MemoryDeadLetters as Letters;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("value", DataType::Int64, true),
        ]))
    }

    fn source(extra: &[(&str, &str)]) -> KafkaSourceOptions {
        let mut o: std::collections::BTreeMap<String, String> = [
            ("connector", "kafka"),
            ("topic", "t"),
            ("format", "json"),
            ("properties.bootstrap.servers", "x:1"),
            ("properties.group.id", "g"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        o.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        KafkaSourceOptions::parse(&TableOptions::new("events", o), &schema()).expect("options")
    }

    /// Offset, key, value.
    type Msg<'a> = (i64, Option<&'a str>, Option<&'a [u8]>);

    fn msgs(list: &[Msg<'_>]) -> Pending {
        let mut p = Pending::default();
        for (offset, key, value) in list {
            p.push(*offset, key.map(str::as_bytes), *value);
        }
        p
    }

    #[test]
    fn bad_messages_become_dead_letters_at_their_offsets_and_the_rest_decodes() {
        let letters = Arc::new(Letters::default());
        let metrics = Arc::new(JobMetrics::default());
        let d = MessageDecoder::new(
            &source(&[]),
            schema(),
            "t",
            3,
            letters.clone(),
            metrics.clone(),
        );
        let batch = d
            .decode(&msgs(&[
                (10, None, Some(br#"{"key":"a","value":1}"#)),
                (11, None, Some(b"not json")),
                (12, None, None),
                (13, None, Some(b"{\"key\":\"b\",\n\"value\":2}")),
                (14, None, Some(br#"{"key":"c","value":"x"}"#)),
            ]))
            .expect("decode")
            .expect("rows");
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(values.values(), &[1, 2]);
        let letters = letters.letters();
        let at: Vec<Position> = letters.iter().map(|l| l.position.clone()).collect();
        let kafka = |offset| Position::Kafka {
            topic: "t".into(),
            partition: 3,
            offset,
        };
        assert_eq!(at, vec![kafka(12), kafka(11), kafka(14)]);
        assert_eq!(
            metrics
                .dead_letters
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }

    #[test]
    fn except_key_reads_key_columns_from_the_message_key() {
        let letters = Arc::new(Letters::default());
        let o = source(&[
            ("key.format", "raw"),
            ("key.fields", "key"),
            ("value.fields-include", "EXCEPT_KEY"),
        ]);
        let d = MessageDecoder::new(&o, schema(), "t", 0, letters.clone(), Arc::default());
        let batch = d
            .decode(&msgs(&[
                (0, Some("a"), Some(br#"{"value":1}"#)),
                (1, Some("b"), Some(b"{oops")),
                (2, Some("c"), Some(br#"{"value":3}"#)),
            ]))
            .expect("decode")
            .expect("rows");
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("str");
        assert_eq!(keys.iter().flatten().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(letters.letters().len(), 1);
    }

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
        let e = RecordEncoder::new(
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
        let e = RecordEncoder::new(
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
        let e = RecordEncoder::new(csv, None);
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
}
