//! The checkpoint coordinator and restore: the I/O around the pure decisions of
//! [`tidewater_state::protocol`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::UInt16Type;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tidewater_core::key::subtask_for_key_group;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_state::protocol::{
    JobShape, Listing, cleanup_after_restore, plan_change, restore_candidates,
    retained_after_restore,
};
use tidewater_state::recovery::{self, StateKey};
use tidewater_state::{CheckpointStore, Coordinator, Manifest, Step};

use crate::dataflow::{Chain, Dataflow};
use crate::operator::{KEY_GROUP_COLUMN, RestoredState};
use crate::task::{Control, Event, Shared};

/// Checkpointing settings of a run.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Where checkpoints go.
    pub store: Arc<dyn CheckpointStore>,
    /// Time between the end of one checkpoint and the start of the next.
    pub interval: Duration,
    /// Complete checkpoints kept (Flink's 'state.checkpoints.num-retained', default 3).
    pub retained: usize,
    /// The job's name, written into manifests.
    pub job: String,
    /// Ignore (and delete) existing checkpoints instead of resuming.
    pub from_scratch: bool,
}

/// What was restored before the run.
#[derive(Debug)]
pub(crate) struct Resume {
    pub restored: Option<u64>,
    /// The restored checkpoint was taken after every source had ended.
    pub finished: bool,
    pub retained: Vec<u64>,
}

/// Restores the newest usable checkpoint into `flow` (or prepares a fresh start) and
/// removes what retention and the restore leave behind.
pub(crate) fn prepare(
    flow: &mut Dataflow,
    cfg: &CheckpointConfig,
    plan: &[String],
    metrics: &JobMetrics,
) -> Result<Resume> {
    if let Some(r) = flow.source.readers.iter().find(|r| !r.replayable()) {
        return Err(Error::config(
            format!("source '{}'", flow.source.name),
            format!(
                "{r:?} cannot be replayed after a crash, so checkpoints cannot protect this \
                 job; turn checkpointing off for it"
            ),
        ));
    }
    let store = cfg.store.as_ref();
    let listing = if cfg.from_scratch {
        BTreeMap::new()
    } else {
        recovery::list(store)?
    };
    for (epoch, l) in &listing {
        if let Listing::Damaged(why) = l {
            tracing::warn!(epoch, location = %store.location(), "checkpoint {epoch} ignored: {why}");
            metrics.event("warn", format!("checkpoint {epoch} ignored: {why}"));
        }
    }
    let candidates = restore_candidates(&listing);
    let mut restored = None;
    for &epoch in &candidates {
        let Some(Listing::Complete(m)) = listing.get(&epoch) else {
            continue;
        };
        if let Some(change) = plan_change(&m.plan, plan) {
            return Err(Error::Checkpoint(format!(
                "cannot resume from checkpoint {epoch} in {}: the job's plan changed since: \
                 {change}\nrun the job it was taken for, or start over with --from-scratch",
                store.location()
            )));
        }
        let started = Instant::now();
        match recovery::load(store, m).and_then(|state| restore_into(flow, m, state)) {
            Ok(()) => {
                let ms = started.elapsed().as_millis() as u64;
                metrics.checkpoints.restore_ms.store(ms, Ordering::Relaxed);
                metrics
                    .checkpoints
                    .restored_epoch
                    .store(epoch, Ordering::Relaxed);
                metrics.event("info", format!("restored checkpoint {epoch} in {ms} ms"));
                tracing::info!(
                    epoch,
                    ms = started.elapsed().as_millis() as u64,
                    state_bytes = m.state_bytes(),
                    "restored checkpoint {epoch} in {} ms",
                    started.elapsed().as_millis()
                );
                restored = Some((epoch, m.finished));
                break;
            }
            Err(Error::Damaged { epoch, reason }) => {
                tracing::warn!(
                    epoch,
                    "checkpoint {epoch} cannot be used: {reason}; trying an older one"
                );
            }
            Err(e) => return Err(e),
        }
    }
    if restored.is_none() {
        if !candidates.is_empty() {
            return Err(Error::Checkpoint(format!(
                "none of the checkpoints in {} can be used (see the warnings above); \
                 start over with --from-scratch",
                store.location()
            )));
        }
        // A fresh start: sinks clean up what crashed runs left uncommitted.
        restore_fresh(flow)?;
    }
    let keep = cfg.retained;
    let all: BTreeMap<u64, Listing> = if cfg.from_scratch {
        store
            .epochs()?
            .into_iter()
            .map(|e| (e, Listing::Incomplete))
            .collect()
    } else {
        listing
    };
    let epoch = restored.map(|(e, _)| e);
    for e in cleanup_after_restore(&all, epoch, keep) {
        store.delete(e)?;
    }
    Ok(Resume {
        restored: epoch,
        finished: restored.is_some_and(|(_, f)| f),
        retained: retained_after_restore(&all, epoch, keep),
    })
}

/// Hands every operator (sinks first) and every source reader its state.
fn restore_into(
    flow: &mut Dataflow,
    m: &Manifest,
    mut state: BTreeMap<StateKey, Vec<RecordBatch>>,
) -> Result<()> {
    for (s, stage) in flow.stages.iter_mut().enumerate().rev() {
        restore_chains(&mut stage.chains, s + 1, m.epoch, &mut state)?;
    }
    restore_chains(&mut flow.source.chains, 0, m.epoch, &mut state)?;
    for r in flow.source.readers.iter_mut() {
        r.restore(&m.sources)?;
    }
    Ok(())
}

fn restore_chains(
    chains: &mut [Chain],
    stage: usize,
    epoch: u64,
    state: &mut BTreeMap<StateKey, Vec<RecordBatch>>,
) -> Result<()> {
    let n = chains.len();
    for (i, chain) in chains.iter_mut().enumerate() {
        // Last operator first: a sink that finds the checkpoint's output damaged says so
        // before any operator has taken state from it.
        for (k, op) in chain.iter_mut().enumerate().rev() {
            let mut batches = Vec::new();
            for ((st, _, opk), bs) in state.iter() {
                if *st == stage && *opk == k {
                    for b in bs {
                        if let Some(b) = owned_rows(b, i, n)? {
                            batches.push(b);
                        }
                    }
                }
            }
            op.restore(RestoredState {
                epoch,
                subtask: i,
                parallelism: n,
                batches,
            })?;
        }
    }
    state.retain(|(st, _, _), _| *st != stage);
    Ok(())
}

/// The rows of keyed state `b` that subtask `i` of `n` owns: rows of its key groups and
/// rows without a key group (operator-wide, e.g. a clock). All rows of unkeyed state.
fn owned_rows(b: &RecordBatch, i: usize, n: usize) -> Result<Option<RecordBatch>> {
    let Some(col) = b.column_by_name(KEY_GROUP_COLUMN) else {
        return Ok(Some(b.clone()));
    };
    let kg = col
        .as_primitive_opt::<UInt16Type>()
        .ok_or_else(|| Error::runtime(format!("{KEY_GROUP_COLUMN} is not UInt16")))?;
    let mask: BooleanArray = kg
        .iter()
        .map(|g| Some(g.is_none_or(|g| subtask_for_key_group(u32::from(g), n) == i)))
        .collect();
    let out = filter_record_batch(b, &mask)?;
    Ok((out.num_rows() > 0).then_some(out))
}

fn restore_fresh(flow: &mut Dataflow) -> Result<()> {
    let stages = flow
        .stages
        .iter_mut()
        .map(|s| &mut s.chains)
        .chain(std::iter::once(&mut flow.source.chains));
    for chains in stages {
        let n = chains.len();
        for (i, chain) in chains.iter_mut().enumerate() {
            for op in chain.iter_mut() {
                op.restore(RestoredState {
                    epoch: 0,
                    subtask: i,
                    parallelism: n,
                    batches: Vec::new(),
                })?;
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The coordinator loop, on the calling thread. Returns the number of checkpoints
/// completed, after every source has ended and (with checkpoints) the last checkpoint
/// is complete, or as soon as a subtask failed (that subtask reports the error).
pub(crate) fn coordinate(
    shared: &Shared,
    events: &Receiver<Event>,
    sources: &[Sender<Control>],
    stages: &[Sender<Control>],
    checkpointing: Option<(&CheckpointConfig, &Resume)>,
    shape: JobShape,
    metrics: &JobMetrics,
) -> Result<u64> {
    let n_sources = sources.len();
    let mut ended = 0;
    let Some((cfg, resume)) = checkpointing else {
        while ended < n_sources {
            match events.recv() {
                Ok(Event::SourceEnded) => ended += 1,
                Ok(Event::Ack(_)) => {
                    return Err(Error::runtime("an ack without checkpoints (a bug)"));
                }
                Ok(Event::Failed) | Err(_) => return Ok(0),
            }
        }
        return Ok(0);
    };
    let store = cfg.store.as_ref();
    let mut coord = Coordinator::new(
        shape,
        cfg.retained,
        resume.restored.unwrap_or(0),
        resume.retained.clone(),
    );
    let request = |epoch: u64| {
        shared.requested.store(epoch, Ordering::Release);
        for tx in sources {
            let _ = tx.send(Control::Wake);
        }
    };
    let mut next = Instant::now() + cfg.interval;
    let mut completed = 0;
    // The checkpoint taken after a stop request; the job ends once it is committed.
    let mut last: Option<u64> = None;
    loop {
        if shared.cancel.load(Ordering::Relaxed) {
            return Ok(completed);
        }
        let all_ended = ended == n_sources;
        let stopping = shared.stop.load(Ordering::Acquire);
        if coord.in_flight().is_none()
            && last.is_none()
            && (all_ended || stopping || Instant::now() >= next)
            && let Some(epoch) = coord.trigger(now_ms(), all_ended)
        {
            tracing::debug!(epoch, "checkpoint triggered");
            if stopping && !all_ended {
                tracing::info!(epoch, "stop requested: taking a last checkpoint ({epoch})");
                metrics.event("info", format!("stop requested: last checkpoint {epoch}"));
                last = Some(epoch);
            }
            request(epoch);
        }
        // A stop request is noticed within 100 ms.
        let wait = if coord.in_flight().is_some() {
            Duration::from_millis(100)
        } else {
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        };
        match events.recv_timeout(wait) {
            Ok(Event::Ack(ack)) => {
                let step = coord.ack(ack, now_ms()).map_err(Error::runtime)?;
                let Some(Step::WriteManifest(m)) = step else {
                    continue;
                };
                if let Err(e) = store.put_manifest(m.epoch, &m.encode()) {
                    JobMetrics::add(&metrics.checkpoints.failed, 1);
                    metrics.event("error", format!("checkpoint {} failed: {e}", m.epoch));
                    return Err(e);
                }
                completed += 1;
                let stats = &metrics.checkpoints;
                JobMetrics::add(&stats.completed, 1);
                stats.last_epoch.store(m.epoch, Ordering::Relaxed);
                stats
                    .last_duration_ms
                    .store(m.duration_ms, Ordering::Relaxed);
                stats.last_bytes.store(m.state_bytes(), Ordering::Relaxed);
                metrics.event(
                    "info",
                    format!(
                        "checkpoint {} complete in {} ms, {} bytes{}",
                        m.epoch,
                        m.duration_ms,
                        m.state_bytes(),
                        if m.finished { " (input finished)" } else { "" }
                    ),
                );
                tracing::info!(
                    epoch = m.epoch,
                    duration_ms = m.duration_ms,
                    state_bytes = m.state_bytes(),
                    finished = m.finished,
                    "checkpoint {} complete",
                    m.epoch
                );
                for step in coord.manifest_written() {
                    match step {
                        Step::Commit(e) => {
                            for tx in stages {
                                let _ = tx.send(Control::Commit(e));
                            }
                        }
                        Step::Delete(e) => {
                            if let Err(err) = store.delete(e) {
                                tracing::warn!(epoch = e, "cannot delete an old checkpoint: {err}");
                            }
                        }
                        Step::WriteManifest(_) => {}
                    }
                }
                if m.finished || last == Some(m.epoch) {
                    return Ok(completed);
                }
                next = Instant::now() + cfg.interval;
            }
            Ok(Event::SourceEnded) => ended += 1,
            Ok(Event::Failed) | Err(RecvTimeoutError::Disconnected) => return Ok(completed),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
