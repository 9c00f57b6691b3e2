//! The checkpoint protocol's decisions, as pure functions over data.
//!
//! The runtime's coordinator feeds [`Coordinator`] with triggers and acknowledgements
//! and carries out the [`Step`]s it returns, in order; on start it asks
//! [`restore_candidates`] which epochs to try and [`cleanup_after_restore`] what to
//! remove. Nothing here does I/O, so every interleaving of a crash with these steps
//! can be tested against [`crate::MemoryStore`].

use std::collections::BTreeMap;

use crate::manifest::{FileEntry, Manifest, VERSION};

/// One subtask of one stage (stage 0 is the source stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    /// Stage index.
    pub stage: usize,
    /// Subtask within the stage.
    pub subtask: usize,
}

/// A subtask has snapshotted epoch `epoch`: its state files are durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The checkpoint.
    pub epoch: u64,
    /// Who acknowledges.
    pub task: TaskId,
    /// The files it wrote.
    pub files: Vec<FileEntry>,
    /// A source subtask's position (stage 0 only).
    pub source: Option<serde_json::Value>,
}

/// What the job looks like, written into every manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobShape {
    /// The job's name.
    pub job: String,
    /// One line per stage (see [`Manifest::plan`]).
    pub plan: Vec<String>,
    /// Subtasks per stage.
    pub parallelism: Vec<usize>,
}

/// I/O the coordinator must perform, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Write this manifest atomically: the checkpoint is complete once it is durable.
    WriteManifest(Box<Manifest>),
    /// Tell the sinks that `epoch` is complete: they make its output visible.
    Commit(u64),
    /// Remove checkpoint `epoch` (retention).
    Delete(u64),
}

#[derive(Debug)]
struct InFlight {
    epoch: u64,
    started_ms: i64,
    finished: bool,
    acks: BTreeMap<TaskId, Ack>,
}

/// The coordinator's bookkeeping: at most one checkpoint in flight, retention of the
/// newest `keep` complete ones.
#[derive(Debug)]
pub struct Coordinator {
    shape: JobShape,
    keep: usize,
    next_epoch: u64,
    in_flight: Option<InFlight>,
    /// Complete checkpoints in the store, ascending.
    retained: Vec<u64>,
}

impl Coordinator {
    /// A coordinator that continues after `last_epoch` (0 for a fresh job), with the
    /// complete checkpoints `retained` already in the store.
    pub fn new(shape: JobShape, keep: usize, last_epoch: u64, retained: Vec<u64>) -> Self {
        Self {
            shape,
            keep: keep.max(1),
            next_epoch: last_epoch + 1,
            in_flight: None,
            retained,
        }
    }

    /// The epoch in flight, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.epoch)
    }

    /// Starts the next checkpoint unless one is in flight. `finished`: every source has
    /// ended, so this is the last one.
    pub fn trigger(&mut self, now_ms: i64, finished: bool) -> Option<u64> {
        if self.in_flight.is_some() {
            return None;
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.in_flight = Some(InFlight {
            epoch,
            started_ms: now_ms,
            finished,
            acks: BTreeMap::new(),
        });
        Some(epoch)
    }

    fn tasks(&self) -> usize {
        self.shape.parallelism.iter().sum()
    }

    /// Records an acknowledgement. When the last one arrives, returns the step that
    /// writes the manifest. Acks for another epoch, of unknown tasks, or repeated are
    /// errors (a bug in the runtime, never silently accepted).
    pub fn ack(&mut self, ack: Ack, now_ms: i64) -> Result<Option<Step>, String> {
        let tasks = self.tasks();
        let Some(f) = self.in_flight.as_mut() else {
            return Err(format!("ack for epoch {} with none in flight", ack.epoch));
        };
        if ack.epoch != f.epoch {
            return Err(format!(
                "ack for epoch {}, {} is in flight",
                ack.epoch, f.epoch
            ));
        }
        let TaskId { stage, subtask } = ack.task;
        if self
            .shape
            .parallelism
            .get(stage)
            .is_none_or(|p| subtask >= *p)
        {
            return Err(format!("ack from unknown task {stage}/{subtask}"));
        }
        if f.acks.contains_key(&ack.task) {
            // The first ack stays in force.
            return Err(format!("second ack from task {stage}/{subtask}"));
        }
        f.acks.insert(ack.task, ack);
        if f.acks.len() < tasks {
            return Ok(None);
        }
        let mut files = Vec::new();
        let mut sources = Vec::new();
        for (task, a) in &f.acks {
            files.extend(a.files.iter().cloned());
            if task.stage == 0 {
                sources.push(a.source.clone().unwrap_or(serde_json::Value::Null));
            }
        }
        Ok(Some(Step::WriteManifest(Box::new(Manifest {
            version: VERSION,
            job: self.shape.job.clone(),
            epoch: f.epoch,
            started_ms: f.started_ms,
            duration_ms: u64::try_from(now_ms.saturating_sub(f.started_ms)).unwrap_or(0),
            finished: f.finished,
            plan: self.shape.plan.clone(),
            parallelism: self.shape.parallelism.clone(),
            sources,
            files,
        }))))
    }

    /// The manifest of the checkpoint in flight is durable: commit it, then drop the
    /// checkpoints retention no longer keeps.
    pub fn manifest_written(&mut self) -> Vec<Step> {
        let Some(f) = self.in_flight.take() else {
            return Vec::new();
        };
        self.retained.push(f.epoch);
        let mut steps = vec![Step::Commit(f.epoch)];
        let excess = self.retained.len().saturating_sub(self.keep);
        steps.extend(self.retained.drain(..excess).map(Step::Delete));
        steps
    }
}

/// What an epoch in the store holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Listing {
    /// A manifest that decodes.
    Complete(Box<Manifest>),
    /// No manifest (the checkpoint was interrupted).
    Incomplete,
    /// A manifest that does not decode: why.
    Damaged(String),
}

/// The epochs worth trying to restore, newest first.
pub fn restore_candidates(listing: &BTreeMap<u64, Listing>) -> Vec<u64> {
    listing
        .iter()
        .rev()
        .filter(|(_, l)| matches!(l, Listing::Complete(_)))
        .map(|(e, _)| *e)
        .collect()
}

/// What to remove once `restored` (or nothing) has been restored: every epoch after it
/// (interrupted or unusable; the job will write those epochs again), incomplete ones
/// before it, and complete ones beyond the newest `keep`.
pub fn cleanup_after_restore(
    listing: &BTreeMap<u64, Listing>,
    restored: Option<u64>,
    keep: usize,
) -> Vec<u64> {
    let restored_or_zero = restored.unwrap_or(0);
    let mut delete: Vec<u64> = listing
        .iter()
        .filter(|(e, l)| **e > restored_or_zero || !matches!(l, Listing::Complete(_)))
        .map(|(e, _)| *e)
        .filter(|e| Some(*e) != restored)
        .collect();
    let complete: Vec<u64> = listing
        .iter()
        .filter(|(e, l)| **e <= restored_or_zero && matches!(l, Listing::Complete(_)))
        .map(|(e, _)| *e)
        .collect();
    let excess = complete.len().saturating_sub(keep.max(1));
    delete.extend(&complete[..excess]);
    delete.sort_unstable();
    delete.dedup();
    delete
}

/// Complete checkpoints that [`cleanup_after_restore`] keeps, ascending.
pub fn retained_after_restore(
    listing: &BTreeMap<u64, Listing>,
    restored: Option<u64>,
    keep: usize,
) -> Vec<u64> {
    let gone = cleanup_after_restore(listing, restored, keep);
    listing
        .iter()
        .filter(|(e, l)| matches!(l, Listing::Complete(_)) && !gone.contains(e))
        .map(|(e, _)| *e)
        .collect()
}

/// Why a checkpoint of plan `old` cannot be restored into `new`, or `None` if it can.
/// Parallelism may change (keyed state is redistributed by key group); the operators
/// may not.
pub fn plan_change(old: &[String], new: &[String]) -> Option<String> {
    if old.len() != new.len() {
        return Some(format!(
            "the checkpoint has {} stages, the job now has {}:\n  was: {}\n  now: {}",
            old.len(),
            new.len(),
            old.join(" | "),
            new.join(" | ")
        ));
    }
    old.iter()
        .zip(new)
        .enumerate()
        .find(|(_, (o, n))| o != n)
        .map(|(i, (o, n))| format!("stage {i} changed:\n  was: {o}\n  now: {n}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shape() -> JobShape {
        JobShape {
            job: "j".into(),
            plan: vec!["src".into(), "win".into()],
            parallelism: vec![1, 2],
        }
    }

    fn ack(epoch: u64, stage: usize, subtask: usize) -> Ack {
        Ack {
            epoch,
            task: TaskId { stage, subtask },
            files: vec![],
            source: (stage == 0).then(|| serde_json::json!(epoch)),
        }
    }

    #[test]
    fn completes_after_every_ack_then_commits_and_retains() {
        let mut c = Coordinator::new(shape(), 2, 0, vec![]);
        for e in 1..=3u64 {
            assert_eq!(c.trigger(0, false), Some(e));
            assert_eq!(c.trigger(0, false), None, "one in flight at a time");
            assert_eq!(c.ack(ack(e, 1, 1), 5).unwrap(), None);
            assert_eq!(c.ack(ack(e, 0, 0), 5).unwrap(), None);
            assert!(c.ack(ack(e, 0, 0), 5).is_err(), "duplicate");
            let Some(Step::WriteManifest(m)) = c.ack(ack(e, 1, 0), 7).unwrap() else {
                panic!("expected a manifest")
            };
            assert_eq!((m.epoch, m.duration_ms), (e, 7));
            assert_eq!(m.sources, vec![serde_json::json!(e)]);
            let steps = c.manifest_written();
            let mut want = vec![Step::Commit(e)];
            if e == 3 {
                want.push(Step::Delete(1));
            }
            assert_eq!(steps, want);
        }
        assert!(c.ack(ack(9, 0, 0), 0).is_err());
        c.trigger(0, false);
        assert!(c.ack(ack(4, 2, 0), 0).is_err(), "unknown stage");
        assert!(c.ack(ack(4, 1, 2), 0).is_err(), "unknown subtask");
    }

    #[test]
    fn restore_and_cleanup_decisions() {
        let m = |e| {
            Listing::Complete(Box::new(Manifest {
                version: VERSION,
                job: "j".into(),
                epoch: e,
                started_ms: 0,
                duration_ms: 0,
                finished: false,
                plan: vec![],
                parallelism: vec![],
                sources: vec![],
                files: vec![],
            }))
        };
        let listing: BTreeMap<u64, Listing> = [
            (1, m(1)),
            (2, Listing::Incomplete),
            (3, m(3)),
            (4, m(4)),
            (5, Listing::Damaged("x".into())),
            (6, Listing::Incomplete),
        ]
        .into();
        assert_eq!(restore_candidates(&listing), vec![4, 3, 1]);
        assert_eq!(cleanup_after_restore(&listing, Some(4), 3), vec![2, 5, 6]);
        assert_eq!(
            cleanup_after_restore(&listing, Some(4), 2),
            vec![1, 2, 5, 6]
        );
        // fell back past a checkpoint: the newer one goes (its epoch will be rewritten)
        assert_eq!(
            cleanup_after_restore(&listing, Some(3), 3),
            vec![2, 4, 5, 6]
        );
        assert_eq!(retained_after_restore(&listing, Some(3), 3), vec![1, 3]);
        assert_eq!(
            cleanup_after_restore(&listing, None, 3),
            vec![1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn plan_changes_are_named() {
        let a = vec!["src".to_string(), "HOP 2s/10s".to_string()];
        let b = vec!["src".to_string(), "HOP 1s/60s".to_string()];
        assert_eq!(plan_change(&a, &a), None);
        let msg = plan_change(&a, &b).unwrap();
        assert!(
            msg.contains("stage 1") && msg.contains("HOP 2s/10s") && msg.contains("HOP 1s/60s")
        );
        assert!(plan_change(&a, &a[..1]).unwrap().contains("2 stages"));
    }
}
