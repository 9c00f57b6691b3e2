//! Reading files. All subtasks share one reader that hands out chunks of whole lines in
//! file order, so every subtask's event time advances together (each subtask keeps its
//! own watermark) and decoding runs on every core.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
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

/// The shared reader: the files, the one being read, and the position of the newest
/// checkpoint any subtask has taken.
#[derive(Debug)]
struct Shared {
    files: Vec<PathBuf>,
    /// Index of the file to open next.
    next_file: usize,
    current: Option<LineReader<File>>,
    /// Where to start `files[next_file]` (a restored position), else its beginning.
    resume: Option<(u64, u64)>,
    skip_header: bool,
    chunk_size: usize,
    /// The newest checkpoint a subtask has snapshotted, and the position it recorded:
    /// every chunk handed out before belongs to it, so a subtask that has not yet
    /// snapshotted it gets no more chunks until it has.
    barrier: (u64, serde_json::Value),
}

impl Shared {
    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        loop {
            if let Some(r) = self.current.as_mut() {
                if let Some(c) = r.next_chunk()? {
                    return Ok(Some(c));
                }
                self.current = None;
                self.next_file += 1;
            }
            let Some(path) = self.files.get(self.next_file) else {
                return Ok(None);
            };
            let mut f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
            let origin = path.display().to_string().into();
            let mut r = match self.resume.take() {
                Some((offset, line)) if offset > 0 => {
                    f.seek(SeekFrom::Start(offset))
                        .map_err(|e| Error::io("cannot seek in", path, e))?;
                    LineReader::new(f, origin, true, self.chunk_size).resumed_at(offset, line)
                }
                _ => LineReader::new(f, origin, true, self.chunk_size),
            };
            if self.skip_header && r.position().0 == 0 {
                r.skip_line()?;
            }
            self.current = Some(r);
        }
    }

    /// The position after every chunk handed out so far.
    fn position(&self) -> serde_json::Value {
        let (offset, line) = match (&self.current, self.resume) {
            (Some(r), _) => r.position(),
            (None, Some(p)) => p,
            (None, None) => (0, 1),
        };
        serde_json::json!({
            "file": self.next_file,
            "path": self.files.get(self.next_file).map(|p| p.display().to_string()),
            "offset": offset,
            "line": line,
        })
    }

    /// Continues from a position written by [`Shared::position`].
    fn restore(&mut self, pos: &serde_json::Value) -> Result<()> {
        let bad = || Error::Checkpoint(format!("filesystem source: unreadable position {pos}"));
        let file = pos["file"].as_u64().ok_or_else(bad)? as usize;
        let offset = pos["offset"].as_u64().ok_or_else(bad)?;
        let line = pos["line"].as_u64().ok_or_else(bad)?;
        if let Some(path) = pos["path"].as_str() {
            let now = self.files.get(file).map(|p| p.display().to_string());
            if now.as_deref() != Some(path) {
                return Err(Error::Checkpoint(format!(
                    "the input files changed since the checkpoint: it was reading '{path}' \
                     (file {} of {}), which is now {}; start over with --from-scratch",
                    file + 1,
                    self.files.len().max(file + 1),
                    now.map_or("gone".into(), |p| format!("'{p}'"))
                )));
            }
        }
        self.next_file = file;
        self.current = None;
        self.resume = Some((offset, line));
        Ok(())
    }
}

/// One subtask's view of the shared file reader.
#[derive(Debug)]
pub struct FileSource {
    shared: Arc<Mutex<Shared>>,
    decoder: ChunkDecoder,
    schema: SchemaRef,
    /// The newest checkpoint this subtask has snapshotted.
    epoch: u64,
}

impl FileSource {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Shared>> {
        self.shared
            .lock()
            .map_err(|_| Error::runtime("file reader poisoned"))
    }
}

impl SourceReader for FileSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let chunk = {
                let mut s = self.lock()?;
                if s.barrier.0 > self.epoch {
                    // Another subtask has started a checkpoint this one has not taken.
                    return Ok(Some(RecordBatch::new_empty(self.schema.clone())));
                }
                s.next_chunk()?
            };
            let Some(chunk) = chunk else { return Ok(None) };
            if let Some(b) = self.decoder.decode(&chunk)? {
                return Ok(Some(b));
            }
        }
    }

    fn replayable(&self) -> bool {
        true
    }

    fn snapshot(&mut self, epoch: u64) -> Result<serde_json::Value> {
        let position = {
            let mut s = self.lock()?;
            if s.barrier.0 < epoch {
                s.barrier = (epoch, s.position());
            }
            s.barrier.1.clone()
        };
        self.epoch = epoch;
        Ok(position)
    }

    fn restore(&mut self, positions: &[serde_json::Value]) -> Result<()> {
        // Every subtask recorded the same shared position.
        let Some(pos) = positions.first() else {
            return Ok(());
        };
        self.lock()?.restore(pos)
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
        files,
        next_file: 0,
        current: None,
        resume: None,
        barrier: (0, serde_json::Value::Null),
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
                schema: ctx.schema.clone(),
                epoch: 0,
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
