//! Writing part files, exactly once.
//!
//! Each subtask writes `part-<run>-<subtask>-<epoch>.<ext>` under the hidden name
//! `.<name>.inprogress`; readers never see a part before it is committed:
//! - with checkpointing, a barrier closes the open part (pre-commit) and the part is
//!   renamed into place when that checkpoint's manifest is durable (`on_commit`). On a
//!   restore to checkpoint *r*, parts that *r* covers are committed if they were not yet,
//!   and every other part of the run — in-progress or committed after *r* — is removed,
//!   because the resumed job writes that output again.
//! - without checkpointing, the part is committed when the input ends.
//!
//! One job per sink directory: another job's hidden in-progress parts would be removed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Barrier, Operator, Output, RestoredState, StateWriter};

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
    /// Names this job's parts apart from other runs' in the same directory; kept across
    /// restores.
    run: String,
    subtask: usize,
    format: Format,
    checkpointing: bool,
    /// The checkpoint the open part will belong to.
    epoch: u64,
    /// The open part: its final name and writer.
    open: Option<(String, Writer)>,
    /// Closed parts waiting for their checkpoint: (epoch, final name).
    pending: Vec<(u64, String)>,
    metrics: Arc<JobMetrics>,
}

fn in_progress(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.inprogress"))
}

impl FileSink {
    fn writer(&mut self) -> Result<&mut Writer> {
        if self.open.is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| Error::io("cannot create sink directory", &self.dir, e))?;
            let name = format!(
                "part-{}-{}-{}.{}",
                self.run,
                self.subtask,
                self.epoch,
                self.format.extension()
            );
            let path = in_progress(&self.dir, &name);
            let f =
                File::create(&path).map_err(|e| Error::io("cannot create part file", &path, e))?;
            let w = BufWriter::with_capacity(1 << 20, f);
            let writer = match self.format {
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
            };
            self.open = Some((name, writer));
        }
        match self.open.as_mut() {
            Some((_, w)) => Ok(w),
            None => Err(Error::runtime("part file writer missing")),
        }
    }

    /// Flushes and syncs the open part; returns its final name.
    fn close(&mut self) -> Result<Option<String>> {
        let Some((name, w)) = self.open.take() else {
            return Ok(None);
        };
        let path = in_progress(&self.dir, &name);
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
        Ok(Some(name))
    }

    /// Makes part `name` visible (idempotent: a part already in place stays).
    fn commit(&self, name: &str) -> Result<()> {
        let from = in_progress(&self.dir, name);
        let target = self.dir.join(name);
        match std::fs::rename(&from, &target) {
            Ok(()) => Ok(()),
            Err(_) if target.exists() => Ok(()),
            Err(e) => Err(Error::io("cannot commit part file", &target, e)),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("cannot sync sink directory", &self.dir, e))
    }
}

impl Operator for FileSink {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let rows = batch.num_rows() as u64;
        let batch = stringify_timestamps(&batch)?;
        match self.writer()? {
            Writer::Csv(w) => w.write(&batch)?,
            Writer::Json(w) => w.write(&batch)?,
        }
        JobMetrics::add(&self.metrics.records_out, rows);
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> Result<()> {
        if self.checkpointing {
            // The checkpoint taken after the end closes and commits the last part.
            return Ok(());
        }
        if let Some(name) = self.close()? {
            self.commit(&name)?;
        }
        Ok(())
    }

    /// Pre-commit: close the open part; the state lists the parts not yet committed.
    fn on_barrier(&mut self, barrier: &Barrier, state: &mut StateWriter) -> Result<()> {
        if let Some(name) = self.close()? {
            self.pending.push((barrier.epoch(), name));
        }
        self.epoch = barrier.epoch() + 1;
        // One row even with nothing pending: the run id must survive.
        let rows = self.pending.len().max(1);
        let epochs: UInt64Array = (0..rows)
            .map(|i| self.pending.get(i).map(|p| p.0))
            .collect();
        let names: StringArray = (0..rows)
            .map(|i| self.pending.get(i).map(|p| p.1.as_str()))
            .collect();
        let schema = Schema::new(vec![
            Field::new("run", DataType::Utf8, false),
            Field::new("epoch", DataType::UInt64, true),
            Field::new("part", DataType::Utf8, true),
        ]);
        state.write(RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![self.run.as_str(); rows])),
                Arc::new(epochs),
                Arc::new(names),
            ],
        )?);
        Ok(())
    }

    fn on_commit(&mut self, epoch: u64) -> Result<()> {
        let (done, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|p| p.0 <= epoch);
        self.pending = keep;
        for (_, name) in &done {
            self.commit(name)?;
        }
        if !done.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn restore(&mut self, state: RestoredState) -> Result<()> {
        let mut pending = Vec::new();
        for b in &state.batches {
            let bad = || Error::runtime("filesystem sink state has an unexpected layout");
            let run = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
            let epochs = b
                .column(1)
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(bad)?;
            let names = b.column(2).as_string_opt::<i32>().ok_or_else(bad)?;
            for i in 0..b.num_rows() {
                self.run = run.value(i).to_string();
                if epochs.is_valid(i) && names.is_valid(i) {
                    pending.push((epochs.value(i), names.value(i).to_string()));
                }
            }
        }
        self.epoch = state.epoch + 1;
        if state.subtask != 0 || !self.dir.exists() {
            return Ok(());
        }
        // Subtask 0 settles the directory for all: check first, then change.
        let existing = list_dir(&self.dir)?;
        let plan = recovery_plan(&pending, state.epoch, &self.run, &existing)
            .map_err(|missing| Error::damaged(state.epoch, format!(
                "part file '{}' of sink directory '{}' is missing (neither in progress nor committed)",
                missing,
                self.dir.display()
            )))?;
        for name in &plan.commit {
            self.commit(name)?;
        }
        for name in &plan.delete {
            let path = self.dir.join(name);
            std::fs::remove_file(&path)
                .map_err(|e| Error::io("cannot remove part file", &path, e))?;
        }
        if !plan.commit.is_empty() || !plan.delete.is_empty() {
            tracing::info!(
                committed = plan.commit.len(),
                removed = plan.delete.len(),
                dir = %self.dir.display(),
                "sink recovered to checkpoint {}",
                state.epoch
            );
            self.sync_dir()?;
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("FileSink({})", self.dir.display())
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("cannot list directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("cannot list directory", dir, e))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// What a restore to checkpoint `restored` does in the sink directory.
#[derive(Debug, Default, PartialEq, Eq)]
struct RecoveryPlan {
    /// Parts the checkpoint covers that are still in progress.
    commit: Vec<String>,
    /// Files to remove: in-progress parts the checkpoint does not cover (any run), and
    /// this run's parts of later checkpoints.
    delete: Vec<String>,
}

/// Decides a sink recovery from the checkpoint's pending parts and the directory
/// listing. `Err(name)`: a pending part is gone entirely.
fn recovery_plan(
    pending: &[(u64, String)],
    restored: u64,
    run: &str,
    existing: &[String],
) -> std::result::Result<RecoveryPlan, String> {
    let mut plan = RecoveryPlan::default();
    for (_, name) in pending {
        let hidden = format!(".{name}.inprogress");
        if existing.contains(&hidden) {
            plan.commit.push(name.clone());
        } else if !existing.contains(name) {
            return Err(name.clone());
        }
    }
    let prefix = format!("part-{run}-");
    for f in existing {
        if let Some(part) = f
            .strip_prefix('.')
            .and_then(|f| f.strip_suffix(".inprogress"))
        {
            if part.starts_with("part-") && !pending.iter().any(|(_, n)| n == part) {
                plan.delete.push(f.clone());
            }
        } else if let Some(rest) = f.strip_prefix(&prefix) {
            // part-<run>-<subtask>-<epoch>.<ext>
            let epoch = rest
                .split('.')
                .next()
                .and_then(|s| s.rsplit('-').next())
                .and_then(|e| e.parse::<u64>().ok());
            if epoch.is_some_and(|e| e > restored) {
                plan.delete.push(f.clone());
            }
        }
    }
    plan.commit.sort();
    plan.delete.sort();
    Ok(plan)
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
                run: run.clone(),
                subtask: i,
                format: format.clone(),
                checkpointing: ctx.checkpointing,
                epoch: if ctx.checkpointing { 1 } else { 0 },
                open: None,
                pending: Vec::new(),
                metrics: ctx.metrics.clone(),
            }) as Box<dyn Operator>
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recovery_commits_covered_parts_and_removes_the_rest() {
        let pending = vec![
            (4, "part-r-0-4.csv".to_string()),
            (4, "part-r-1-4.csv".to_string()),
        ];
        let existing = names(&[
            "part-r-0-3.csv",               // committed earlier: stays
            ".part-r-0-4.csv.inprogress",   // covered, not yet renamed: commit
            "part-r-1-4.csv",               // covered, already renamed: stays
            ".part-r-0-5.csv.inprogress",   // after the checkpoint: remove
            "part-r-1-5.csv",               // committed by a checkpoint we fell back from: remove
            ".part-old-0-1.csv.inprogress", // a crashed run's leftover: remove
            "part-other-0-9.csv",           // another run's committed output: stays
            "notes.txt",
        ]);
        let plan = recovery_plan(&pending, 4, "r", &existing).unwrap();
        assert_eq!(plan.commit, names(&["part-r-0-4.csv"]));
        assert_eq!(
            plan.delete,
            names(&[
                ".part-old-0-1.csv.inprogress",
                ".part-r-0-5.csv.inprogress",
                "part-r-1-5.csv"
            ])
        );
    }

    #[test]
    fn a_missing_covered_part_is_reported() {
        let pending = vec![(2, "part-r-0-2.csv".to_string())];
        assert_eq!(
            recovery_plan(&pending, 2, "r", &names(&["part-r-0-1.csv"])),
            Err("part-r-0-2.csv".to_string())
        );
    }
}
