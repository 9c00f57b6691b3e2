//! Writing part files. Each subtask writes `part-<run>-<subtask>-0.<ext>` under a hidden
//! in-progress name and renames it into place when the input ends, so readers never see
//! a half-written part. (Checkpointed commits come with the checkpoint protocol.)

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Operator, Output};

use crate::format::{Format, stringify_timestamps};
use crate::registry::SinkContext;

enum Writer {
    Csv(Box<arrow::csv::Writer<BufWriter<File>>>),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Writer::Csv(_) => "Csv",
            Writer::Json(_) => "Json",
        })
    }
}

/// One subtask of the filesystem sink.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    final_name: String,
    format: Format,
    writer: Option<Writer>,
    metrics: Arc<JobMetrics>,
}

impl FileSink {
    fn in_progress(&self) -> PathBuf {
        self.dir.join(format!(".{}.inprogress", self.final_name))
    }

    fn open(&mut self) -> Result<&mut Writer> {
        if self.writer.is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| Error::io("cannot create sink directory", &self.dir, e))?;
            let path = self.in_progress();
            let f =
                File::create(&path).map_err(|e| Error::io("cannot create part file", &path, e))?;
            let w = BufWriter::with_capacity(1 << 20, f);
            self.writer = Some(match self.format {
                Format::Csv { delimiter, header } => Writer::Csv(Box::new(
                    arrow::csv::WriterBuilder::new()
                        .with_header(header)
                        .with_delimiter(delimiter)
                        .build(w),
                )),
                Format::Json => Writer::Json(
                    arrow::json::WriterBuilder::new()
                        .with_explicit_nulls(true)
                        .build::<_, arrow::json::writer::LineDelimited>(w),
                ),
            });
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Error::runtime("part file writer missing"))
    }
}

impl Operator for FileSink {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let rows = batch.num_rows() as u64;
        let batch = stringify_timestamps(&batch)?;
        match self.open()? {
            Writer::Csv(w) => w.write(&batch)?,
            Writer::Json(w) => w.write(&batch)?,
        }
        JobMetrics::add(&self.metrics.records_out, rows);
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let path = self.in_progress();
        let mut inner = match w {
            Writer::Csv(w) => (*w).into_inner(),
            Writer::Json(mut w) => {
                w.finish()?;
                w.into_inner()
            }
        };
        inner
            .flush()
            .map_err(|e| Error::io("cannot write part file", &path, e))?;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io("cannot write part file", &path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("cannot sync part file", &path, e))?;
        let target = self.dir.join(&self.final_name);
        std::fs::rename(&path, &target)
            .map_err(|e| Error::io("cannot commit part file", &target, e))
    }

    fn name(&self) -> String {
        format!("FileSink({})", self.dir.display())
    }
}

pub(super) fn create(ctx: &SinkContext<'_>) -> Result<Vec<Box<dyn Operator>>> {
    let o = ctx.options;
    let dir = PathBuf::from(o.required("path")?);
    let format = Format::from_options(o)?;
    // The directory is created on the first write, so `explain` leaves no trace.
    if dir.exists() && !dir.is_dir() {
        return Err(o.error(
            "path",
            format!(
                "'{}' is not a directory (a sink writes part files into a directory)",
                dir.display()
            ),
        ));
    }
    let run = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        std::process::id()
    );
    Ok((0..ctx.parallelism.max(1))
        .map(|i| {
            Box::new(FileSink {
                dir: dir.clone(),
                final_name: format!("part-{run}-{i}-0.{}", format.extension()),
                format: format.clone(),
                writer: None,
                metrics: ctx.metrics.clone(),
            }) as Box<dyn Operator>
        })
        .collect())
}
