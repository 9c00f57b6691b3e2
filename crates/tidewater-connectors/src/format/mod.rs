//! Record formats: CSV and JSON lines, decoded with Arrow.
//!
//! Input arrives as chunks of whole lines. A chunk is decoded in one Arrow call (the fast
//! path); only when that fails is it decoded line by line, so that each bad line becomes
//! a dead letter with its reason and line number and the good lines still count.

mod lines;
mod writer;

pub use lines::{Chunk, LineReader};
pub use writer::{RowFormatter, stringify_timestamps};

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use tidewater_core::Result;
use tidewater_core::dead_letter::{DeadLetter, DeadLetterSink, Position};
use tidewater_core::metrics::JobMetrics;

use crate::TableOptions;

/// A record format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Comma (or `delimiter`) separated values; `header` skips/writes a first line.
    Csv {
        /// Field delimiter ('csv.field-delimiter', default `,`).
        delimiter: u8,
        /// 'csv.header' (default false).
        header: bool,
    },
    /// One JSON object per line.
    Json,
}

/// Option names every format understands.
pub const FORMAT_OPTIONS: &[&str] = &["format", "csv.field-delimiter", "csv.header"];

impl Format {
    /// Reads 'format' (required) and its sub-options.
    pub fn from_options(o: &TableOptions) -> Result<Self> {
        let name = o.required("format")?;
        match name.trim().to_ascii_lowercase().as_str() {
            "csv" => {
                let d = o.get("csv.field-delimiter").unwrap_or(",");
                let d = match d {
                    "\\t" => "\t",
                    other => other,
                };
                if d.len() != 1 {
                    return Err(o.error(
                        "csv.field-delimiter",
                        format!("must be a single character, got '{d}'"),
                    ));
                }
                Ok(Format::Csv {
                    delimiter: d.as_bytes()[0],
                    header: o.bool_or("csv.header", false)?,
                })
            }
            "json" => Ok(Format::Json),
            other => Err(o.error(
                "format",
                format!("'{other}' is not supported; use 'csv' or 'json'"),
            )),
        }
    }

    /// File extension for part files.
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Csv { .. } => "csv",
            Format::Json => "json",
        }
    }

    /// True when each file starts with a header line to skip.
    pub fn skips_header(&self) -> bool {
        matches!(self, Format::Csv { header: true, .. })
    }

    fn decode_bytes(
        &self,
        schema: &SchemaRef,
        data: &[u8],
        rows: usize,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        // A record is complete only at its newline: give the last line one.
        let owned;
        let data = if data.ends_with(b"\n") {
            data
        } else {
            owned = [data, b"\n"].concat();
            &owned
        };
        let rows = rows.max(1);
        match self {
            Format::Csv { delimiter, .. } => {
                let mut d = arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_delimiter(*delimiter)
                    .with_header(false)
                    .with_batch_size(rows + 1)
                    .build_decoder();
                let mut rest = data;
                while !rest.is_empty() {
                    let n = d.decode(rest)?;
                    if n == 0 {
                        break;
                    }
                    rest = &rest[n..];
                }
                d.flush()
            }
            Format::Json => {
                let mut d = arrow::json::ReaderBuilder::new(schema.clone())
                    .with_batch_size(rows + 1)
                    .build_decoder()?;
                let mut rest = data;
                while !rest.is_empty() {
                    let n = d.decode(rest)?;
                    if n == 0 {
                        break;
                    }
                    rest = &rest[n..];
                }
                d.flush()
            }
        }
    }
}

/// Turns chunks of lines into batches of the table's physical schema.
#[derive(Debug)]
pub struct ChunkDecoder {
    format: Format,
    schema: SchemaRef,
    dead_letters: Arc<dyn DeadLetterSink>,
    metrics: Arc<JobMetrics>,
}

impl ChunkDecoder {
    /// A decoder for `format` into `schema`.
    pub fn new(
        format: Format,
        schema: SchemaRef,
        dead_letters: Arc<dyn DeadLetterSink>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        Self {
            format,
            schema,
            dead_letters,
            metrics,
        }
    }

    /// Decodes a chunk; bad lines become dead letters.
    pub fn decode(&self, chunk: &Chunk) -> Result<Option<RecordBatch>> {
        let lines = chunk.line_count();
        JobMetrics::add(&self.metrics.records_in, lines as u64);
        JobMetrics::add(&self.metrics.bytes_in, chunk.data.len() as u64);
        if !chunk.has_empty_line()
            && let Ok(Some(b)) = self.format.decode_bytes(&self.schema, &chunk.data, lines)
            && b.num_rows() == lines
        {
            return Ok(Some(b));
        }
        self.decode_line_by_line(chunk)
    }

    /// Finds the bad lines of a chunk that failed to decode as a whole: halves that
    /// decode are kept in one piece, halves that fail are split again, down to single
    /// lines, which become dead letters. A few bad lines cost O(log lines) bulk decodes
    /// instead of one decode per line.
    fn decode_line_by_line(&self, chunk: &Chunk) -> Result<Option<RecordBatch>> {
        // Byte offsets of line starts (lines are contiguous in the chunk).
        let mut starts = vec![0usize];
        starts.extend(memchr::memchr_iter(b'\n', &chunk.data).map(|i| i + 1));
        if starts.last() != Some(&chunk.data.len()) {
            starts.push(chunk.data.len());
        }
        let mut good = Vec::new();
        self.bisect(chunk, &starts, 0, starts.len() - 1, &mut good)?;
        if good.is_empty() {
            return Ok(None);
        }
        Ok(Some(concat_batches(&self.schema, &good)?))
    }

    /// Decodes lines `a..b` of `chunk` (see [`ChunkDecoder::decode_line_by_line`]).
    fn bisect(
        &self,
        chunk: &Chunk,
        starts: &[usize],
        a: usize,
        b: usize,
        good: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        if a >= b {
            return Ok(());
        }
        let bytes = &chunk.data[starts[a]..starts[b]];
        let lines = b - a;
        let blank = |l: &[u8]| l.iter().all(|c| c.is_ascii_whitespace());
        if lines > 1 {
            let has_blank = bytes.split(|c| *c == b'\n').take(lines).any(blank);
            if !has_blank
                && let Ok(Some(batch)) = self.format.decode_bytes(&self.schema, bytes, lines)
                && batch.num_rows() == lines
            {
                good.push(batch);
                return Ok(());
            }
            let mid = a + lines / 2;
            self.bisect(chunk, starts, a, mid, good)?;
            return self.bisect(chunk, starts, mid, b, good);
        }
        let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let reason = if blank(line) {
            "empty line".to_string()
        } else {
            match self.format.decode_bytes(&self.schema, line, 1) {
                Ok(Some(batch)) if batch.num_rows() == 1 => {
                    good.push(batch);
                    return Ok(());
                }
                Ok(Some(batch)) => {
                    format!("expected one record, the line holds {}", batch.num_rows())
                }
                Ok(None) => "no record in line".to_string(),
                Err(e) => self.clean_reason(&e),
            }
        };
        JobMetrics::add(&self.metrics.dead_letters, 1);
        self.dead_letters.write(DeadLetter {
            raw: line.to_vec(),
            reason,
            position: chunk.position(a as u64),
        })
    }

    /// Arrow's messages, without positions that refer to the one-line retry.
    fn clean_reason(&self, e: &ArrowError) -> String {
        let mut m = match e {
            ArrowError::ParseError(m) | ArrowError::CsvError(m) | ArrowError::JsonError(m) => {
                m.clone()
            }
            ArrowError::InvalidArgumentError(m) => m.clone(),
            other => other.to_string(),
        };
        if let Some(i) = m.find(" at line ") {
            m.truncate(i);
        }
        if let Some(i) = m.find("for column ") {
            let tail = &m[i + "for column ".len()..];
            let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Some(f) = digits
                .parse::<usize>()
                .ok()
                .and_then(|n| self.schema.fields().get(n))
            {
                m = format!(
                    "{}for column '{}'{}",
                    &m[..i],
                    f.name(),
                    &tail[digits.len()..]
                );
            }
        }
        let m = shorten_quoted(&m, 64);
        let lower = m.to_ascii_lowercase();
        if (lower.contains("utf-8") || lower.contains("utf8"))
            && !lower.starts_with("invalid utf-8")
        {
            return format!("invalid UTF-8: {m}");
        }
        m
    }
}

/// Position helper for chunk lines.
impl Chunk {
    fn position(&self, index: u64) -> Position {
        let line = self.first_line + index;
        if self.is_file {
            Position::Line {
                file: self.origin.to_string(),
                line,
            }
        } else {
            Position::Offset {
                stream: self.origin.to_string(),
                line,
            }
        }
    }
}

/// Shortens every `'quoted'` part of `msg` longer than `max` characters: the raw record
/// is in the dead letter already, the reason stays readable.
fn shorten_quoted(msg: &str, max: usize) -> String {
    let mut out = String::with_capacity(msg.len().min(512));
    let mut parts = msg.split('\'');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('\'');
        if i % 2 == 0 && part.chars().count() > max {
            out.extend(part.chars().take(max));
            out.push_str(&format!("...({} bytes)", part.len()));
        } else {
            out.push_str(part);
        }
    }
    out
}
