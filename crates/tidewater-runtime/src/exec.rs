//! The executor: one thread per subtask, bounded channels between stages.
//!
//! Each downstream subtask owns one bounded channel that all upstream subtasks send
//! into, tagging messages with their index; a full channel blocks the sender, which is
//! the backpressure that keeps memory bounded. A subtask's watermark is the minimum of
//! the last watermark of each input that has not ended.
//!
//! Failure: the first error is the job's error. A thread that finds its channel
//! disconnected stops quietly — the thread that failed reports.
//!
//! The calling thread is the checkpoint coordinator (see [`crate::checkpoint`]): it
//! triggers checkpoints, collects acknowledgements, writes manifests, tells the sinks to
//! commit and, once every source has ended (and the last checkpoint is complete), tells
//! the sources to stop. The subtask loops are in [`crate::task`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use tidewater_core::key::{hash_columns, key_group, subtask_for_key_group};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_state::TaskId;
use tidewater_state::protocol::JobShape;

use crate::checkpoint::{self, CheckpointConfig};
use crate::dataflow::{Dataflow, Partitioning};
use crate::message::Message;
use crate::task::{Chained, Control, Shared, SourceTask, StageTask};

pub(crate) type Envelope = (usize, Message);

/// Where a subtask sends what leaves its chain.
pub(crate) enum Router {
    /// Last stage: nothing leaves.
    None,
    Forward {
        index: usize,
        tx: Sender<Envelope>,
    },
    Hash {
        index: usize,
        columns: Vec<usize>,
        txs: Vec<Sender<Envelope>>,
        hashes: Vec<u64>,
    },
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Router::None => "None",
            Router::Forward { .. } => "Forward",
            Router::Hash { .. } => "Hash",
        })
    }
}

/// Signals that downstream is gone; the subtask stops without an error of its own.
pub(crate) struct Disconnected;

impl Router {
    pub(crate) fn route(&mut self, msg: Message) -> std::result::Result<Result<()>, Disconnected> {
        match self {
            Router::None => Ok(Ok(())),
            Router::Forward { index, tx } => {
                tx.send((*index, msg)).map(Ok).map_err(|_| Disconnected)
            }
            Router::Hash {
                index,
                columns,
                txs,
                hashes,
            } => match msg {
                Message::Data(batch) => {
                    let parts = match split_by_key(&batch, columns, txs.len(), hashes) {
                        Ok(p) => p,
                        Err(e) => return Ok(Err(e)),
                    };
                    for (tx, part) in txs.iter().zip(parts) {
                        if let Some(part) = part {
                            tx.send((*index, Message::Data(part)))
                                .map_err(|_| Disconnected)?;
                        }
                    }
                    Ok(Ok(()))
                }
                other => {
                    for tx in txs.iter() {
                        tx.send((*index, other.clone())).map_err(|_| Disconnected)?;
                    }
                    Ok(Ok(()))
                }
            },
        }
    }
}

/// Splits `batch` into one part per downstream subtask by key group.
fn split_by_key(
    batch: &RecordBatch,
    columns: &[usize],
    n: usize,
    hashes: &mut Vec<u64>,
) -> Result<Vec<Option<RecordBatch>>> {
    if n == 1 {
        return Ok(vec![Some(batch.clone())]);
    }
    let keys: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
    hash_columns(&keys, batch.num_rows(), hashes)?;
    let mut idx: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, h) in hashes.iter().enumerate() {
        idx[subtask_for_key_group(key_group(*h), n)].push(row as u32);
    }
    idx.into_iter()
        .map(|rows| {
            if rows.is_empty() {
                Ok(None)
            } else {
                Ok(Some(take_record_batch(batch, &UInt32Array::from(rows))?))
            }
        })
        .collect()
}

/// How a dataflow runs besides its graph.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Checkpointing; `None` turns it off (sinks then commit at the end of input).
    pub checkpoint: Option<CheckpointConfig>,
    /// Where per-subtask counters and checkpoint figures are registered (the job's
    /// counters, so that the summary and the status page see them).
    pub metrics: Arc<JobMetrics>,
    /// Set to stop the job gracefully: sources stop reading; with checkpoints a last
    /// checkpoint is taken and committed, without them the input ends where it is.
    pub stop: Arc<AtomicBool>,
}

/// What a run did besides moving data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecReport {
    /// The checkpoint the run resumed from.
    pub restored: Option<u64>,
    /// Checkpoints completed during the run.
    pub checkpoints: u64,
    /// True when the restored checkpoint was taken after the input had ended: there was
    /// nothing left to do.
    pub already_finished: bool,
    /// The run was stopped on request before its input ended.
    pub stopped: bool,
}

/// Runs the dataflow to completion (bounded input) or failure, without checkpoints.
pub fn execute(flow: Dataflow) -> Result<()> {
    execute_with(flow, &ExecOptions::default()).map(|_| ())
}

/// Runs the dataflow, resuming from and taking checkpoints as `options` say.
pub fn execute_with(mut flow: Dataflow, options: &ExecOptions) -> Result<ExecReport> {
    let plan = flow.plan_lines();
    let shape = JobShape {
        job: options
            .checkpoint
            .as_ref()
            .map(|c| c.job.clone())
            .unwrap_or_default(),
        plan: plan.clone(),
        parallelism: std::iter::once(flow.source.readers.len())
            .chain(flow.stages.iter().map(|s| s.chains.len()))
            .collect(),
    };
    let resume = match &options.checkpoint {
        Some(cfg) => Some(checkpoint::prepare(
            &mut flow,
            cfg,
            &plan,
            &options.metrics,
        )?),
        None => None,
    };
    if let Some(r) = &resume
        && r.finished
    {
        return Ok(ExecReport {
            restored: r.restored,
            checkpoints: 0,
            already_finished: true,
            stopped: false,
        });
    }
    let cap = flow.channel_capacity.max(1);
    // Channels into each downstream stage, one per subtask.
    let mut inboxes: Vec<Vec<(Sender<Envelope>, Receiver<Envelope>)>> = flow
        .stages
        .iter()
        .map(|s| (0..s.chains.len()).map(|_| bounded(cap)).collect())
        .collect();

    let edges: Vec<(String, Partitioning)> = flow
        .stages
        .iter()
        .map(|s| (s.name.clone(), s.input.clone()))
        .collect();
    let make_router = |stage_idx: usize,
                       subtask: usize,
                       inboxes: &[Vec<(Sender<Envelope>, Receiver<Envelope>)>]|
     -> Result<Router> {
        let Some((name, input)) = edges.get(stage_idx) else {
            return Ok(Router::None);
        };
        let targets = &inboxes[stage_idx];
        Ok(match input {
            Partitioning::Forward => {
                let (tx, _) = targets.get(subtask).ok_or_else(|| {
                    Error::runtime(format!(
                        "forward edge into '{name}' needs equal parallelism"
                    ))
                })?;
                Router::Forward {
                    // the downstream subtask has exactly this one input
                    index: 0,
                    tx: tx.clone(),
                }
            }
            Partitioning::Hash { columns, .. } => Router::Hash {
                index: subtask,
                columns: columns.clone(),
                txs: targets.iter().map(|(tx, _)| tx.clone()).collect(),
                hashes: Vec::new(),
            },
        })
    };

    let (events_tx, events_rx) = unbounded();
    let first_epoch = resume.as_ref().and_then(|r| r.restored).unwrap_or(0);
    let shared = Shared {
        cancel: Arc::new(AtomicBool::new(false)),
        requested: Arc::new(AtomicU64::new(first_epoch)),
        events: events_tx,
        store: options.checkpoint.as_ref().map(|c| c.store.clone()),
        stop: options.stop.clone(),
    };
    let mut handles = Vec::new();
    let mut source_ctl = Vec::new();
    let mut stage_ctl = Vec::new();
    let Dataflow { source, stages, .. } = flow;
    let source_n = source.readers.len();
    let source_label = format!("source {}", source.name);
    for (i, (reader, chain)) in source.readers.into_iter().zip(source.chains).enumerate() {
        let (ctl_tx, ctl_rx) = unbounded();
        source_ctl.push(ctl_tx);
        let task = SourceTask {
            reader,
            out: Chained {
                chain,
                router: make_router(0, i, &inboxes)?,
                metrics: options.metrics.task(&source_label, i),
            },
            id: TaskId {
                stage: 0,
                subtask: i,
            },
            ctl: ctl_rx,
            injected: first_epoch,
        };
        let shared = shared.clone();
        handles.push(spawn(format!("src-{i}"), move || task.run(&shared))?);
    }
    let mut upstream_n = source_n;
    for (s, stage) in stages.into_iter().enumerate() {
        let n = stage.chains.len();
        let receivers: Vec<Receiver<Envelope>> =
            inboxes[s].iter().map(|(_, rx)| rx.clone()).collect();
        let mut routers = Vec::with_capacity(n);
        for i in 0..n {
            routers.push(make_router(s + 1, i, &inboxes)?);
        }
        let inputs = match stage.input {
            Partitioning::Forward => 1,
            Partitioning::Hash { .. } => upstream_n,
        };
        for (i, ((chain, router), rx)) in stage
            .chains
            .into_iter()
            .zip(routers)
            .zip(receivers)
            .enumerate()
        {
            let (ctl_tx, ctl_rx) = unbounded();
            stage_ctl.push(ctl_tx);
            let task = StageTask::new(
                rx,
                inputs,
                Chained {
                    chain,
                    router,
                    metrics: options.metrics.task(&stage.name, i),
                },
                TaskId {
                    stage: s + 1,
                    subtask: i,
                },
                ctl_rx,
            );
            let shared = shared.clone();
            handles.push(spawn(format!("s{}-{i}", s + 1), move || task.run(&shared))?);
        }
        upstream_n = n;
    }
    // Only the threads hold senders now, so a dead stage disconnects its neighbours.
    inboxes.clear();

    let coordinated = checkpoint::coordinate(
        &shared,
        &events_rx,
        &source_ctl,
        &stage_ctl,
        options.checkpoint.as_ref().zip(resume.as_ref()),
        shape,
        &options.metrics,
    );
    let mut first_err = None;
    let checkpoints = match coordinated {
        Ok(n) => n,
        Err(e) => {
            shared.cancel();
            first_err = Some(e);
            0
        }
    };
    for tx in &source_ctl {
        let _ = tx.send(Control::Stop);
    }
    drop(source_ctl);
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(Error::runtime("a worker thread panicked (this is a bug)"));
            }
        }
    }
    drop(stage_ctl);
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(ExecReport {
        restored: resume.and_then(|r| r.restored),
        checkpoints,
        already_finished: false,
        stopped: options.stop.load(std::sync::atomic::Ordering::Acquire),
    })
}

fn spawn(
    name: String,
    f: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<thread::JoinHandle<Result<()>>> {
    thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| Error::runtime(format!("cannot start a thread: {e}")))
}
