//! Reading files. All subtasks share one reader that hands out chunks of whole lines in
//! file order, so every subtask's event time advances together (each subtask keeps its
//! own watermark) and decoding runs on every core.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::SourceReader;

use crate::format::{Chunk, ChunkDecoder, Format, LineReader};
use crate::registry::SourceContext;

/// Files in the order they are read.
fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot read input path", path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io("cannot list directory", path, e))? {
        let entry = entry.map_err(|e| Error::io("cannot list directory", path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The shared reader: a queue of files and the one being read.
#[derive(Debug)]
struct Shared {
    pending: VecDeque<PathBuf>,
    current: Option<LineReader<File>>,
    skip_header: bool,
    chunk_size: usize,
}

impl Shared {
    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        loop {
            if let Some(r) = self.current.as_mut() {
                if let Some(c) = r.next_chunk()? {
                    return Ok(Some(c));
                }
                self.current = None;
            }
            let Some(path) = self.pending.pop_front() else {
                return Ok(None);
            };
            let f = File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
            let mut r =
                LineReader::new(f, path.display().to_string().into(), true, self.chunk_size);
            if self.skip_header {
                r.skip_line()?;
            }
            self.current = Some(r);
        }
    }
}

/// One subtask's view of the shared file reader.
#[derive(Debug)]
pub struct FileSource {
    shared: Arc<Mutex<Shared>>,
    decoder: ChunkDecoder,
}

impl SourceReader for FileSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let chunk = {
                let mut s = self
                    .shared
                    .lock()
                    .map_err(|_| Error::runtime("file reader poisoned"))?;
                s.next_chunk()?
            };
            let Some(chunk) = chunk else { return Ok(None) };
            if let Some(b) = self.decoder.decode(&chunk)? {
                return Ok(Some(b));
            }
        }
    }
}

pub(super) fn create(ctx: &SourceContext<'_>) -> Result<Vec<Box<dyn SourceReader>>> {
    let o = ctx.options;
    let path = PathBuf::from(o.required("path")?);
    if !path.exists() {
        return Err(o.error("path", format!("'{}' does not exist", path.display())));
    }
    let format = Format::from_options(o)?;
    let files = list_files(&path)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    JobMetrics::add(&ctx.metrics.bytes_total, total);
    let shared = Arc::new(Mutex::new(Shared {
        pending: files.into(),
        current: None,
        skip_header: format.skips_header(),
        chunk_size: match o.parse_or("source.chunk-size", 1usize << 20)? {
            n @ 64..=268_435_456 => n,
            n => {
                return Err(o.error(
                    "source.chunk-size",
                    format!("{n} is out of range (64 bytes to 256 MiB)"),
                ));
            }
        },
    }));
    Ok((0..ctx.parallelism.max(1))
        .map(|_| {
            Box::new(FileSource {
                shared: shared.clone(),
                decoder: ChunkDecoder::new(
                    format.clone(),
                    ctx.schema.clone(),
                    ctx.dead_letters.clone(),
                    ctx.metrics.clone(),
                ),
            }) as Box<dyn SourceReader>
        })
        .collect())
}
