//! Messages to batches.
//!
//! Decoding reuses the line decoders of the files: a task's messages are joined into one
//! chunk (one record per line) and decoded in one Arrow call; a bad message becomes a
//! dead letter whose position is mapped back to its topic, partition and offset.

use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, BooleanArray, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use tidewater_core::dead_letter::{DeadLetter, DeadLetterSink, Position};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};

use super::options::{KafkaSourceOptions, RecordFormat};
use crate::format::{Chunk, ChunkDecoder, Format};

/// Byte strings (or absent ones) stored back to back: one growing buffer instead of an
/// allocation per message.
#[derive(Debug, Default)]
pub(super) struct Slab {
    pub(super) bytes: Vec<u8>,
    pub(super) spans: Vec<Option<(usize, usize)>>,
}

impl Slab {
    pub(super) fn push(&mut self, b: Option<&[u8]>) {
        self.spans.push(b.map(|b| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(b);
            (start, self.bytes.len())
        }));
    }

    pub(super) fn get(&self, i: usize) -> Option<&[u8]> {
        let (a, b) = self.spans.get(i).copied().flatten()?;
        self.bytes.get(a..b)
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

/// The messages a task has polled and not yet pushed through its chain.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    offsets: Vec<i64>,
    keys: Slab,
    /// Each value is followed by a newline outside its span, so that the values are
    /// already the chunk of lines the decoder reads ([`Pending::take_lines`]).
    values: Slab,
}

impl Pending {
    pub(crate) fn push(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.offsets.push(offset);
        self.keys.push(key);
        self.values.push(value);
        if value.is_some() {
            self.values.bytes.push(b'\n');
        }
    }

    /// The values as one chunk of lines, taken without a copy, when every message has a
    /// value and none holds a line break: then the slab is byte for byte the chunk that
    /// [`Part::decode`] would build. Give the buffer back with [`Pending::give_back`].
    fn take_lines(&mut self) -> Option<Vec<u8>> {
        let n = self.values.spans.len();
        let whole = self.values.spans.iter().all(Option::is_some)
            && memchr::memchr2_iter(b'\n', b'\r', &self.values.bytes).count() == n;
        whole.then(|| std::mem::take(&mut self.values.bytes))
    }

    /// Returns the buffer of [`Pending::take_lines`], to be reused.
    fn give_back(&mut self, lines: Vec<u8>) {
        self.values.bytes = lines;
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
        if included.is_empty() {
            return Ok((None, ok));
        }
        let (batch, _) = self.decode_lines(&included, data, &mut ok)?;
        Ok((batch, ok))
    }

    /// Decodes `data`, whose line `j` is message `included[j]` = (index, offset), and
    /// marks the messages that decoded in `ok`; gives `data` back.
    fn decode_lines(
        &self,
        included: &[(usize, i64)],
        data: Vec<u8>,
        ok: &mut [bool],
    ) -> Result<(Option<RecordBatch>, Vec<u8>)> {
        let Some(decoder) = &self.decoder else {
            return Ok((None, data));
        };
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
            if let Some(ok) = ok.get_mut(*i) {
                *ok = !failed.contains(&line);
            }
        }
        Ok((batch, chunk.data))
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
    pub(crate) fn decode(&self, messages: &mut Pending) -> Result<Option<RecordBatch>> {
        let lines = match self.value.format {
            RecordFormat::Lines(_) => messages.take_lines(),
            RecordFormat::Raw => None,
        };
        let (vbatch, vok) = match lines {
            Some(lines) => {
                // Every message is one line of the chunk: no second copy.
                let included: Vec<(usize, i64)> =
                    messages.offsets.iter().copied().enumerate().collect();
                let mut ok = vec![false; included.len()];
                let (batch, lines) = self.value.decode_lines(&included, lines, &mut ok)?;
                messages.give_back(lines);
                (batch, ok)
            }
            None => self.value.decode(&messages.column(&messages.values))?,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TableOptions;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};

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
            .decode(&mut msgs(&[
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
    fn one_line_messages_decode_in_place_and_bad_ones_keep_their_offsets() {
        let letters = Arc::new(Letters::default());
        let d = MessageDecoder::new(
            &source(&[]),
            schema(),
            "t",
            1,
            letters.clone(),
            Arc::default(),
        );
        let mut pending = Pending::default();
        let mut decode = |list: &[Msg<'_>]| {
            for (offset, key, value) in list {
                pending.push(*offset, key.map(str::as_bytes), *value);
            }
            let batch = d.decode(&mut pending).expect("decode").expect("rows");
            // The buffer taken for the chunk comes back and is reused.
            pending.clear();
            let values = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("i64");
            values.values().to_vec()
        };
        let first = decode(&[
            (20, None, Some(br#"{"key":"a","value":1}"#)),
            (21, None, Some(b"{oops")),
            (22, None, Some(br#"{"key":"b","value":2}"#)),
        ]);
        // Fewer and shorter messages next: nothing of the first batch is read again.
        let second = decode(&[(23, None, Some(br#"{"value":3}"#)), (24, None, Some(b"]"))]);
        assert_eq!((first, second), (vec![1, 2], vec![3]));
        let at: Vec<Position> = letters
            .letters()
            .iter()
            .map(|l| l.position.clone())
            .collect();
        let kafka = |offset| Position::Kafka {
            topic: "t".into(),
            partition: 1,
            offset,
        };
        assert_eq!(at, vec![kafka(21), kafka(24)]);
        assert_eq!(letters.letters()[0].raw, b"{oops");
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
            .decode(&mut msgs(&[
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
}
