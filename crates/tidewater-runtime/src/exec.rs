//! The executor: one thread per subtask, bounded channels between stages.
//!
//! Each downstream subtask owns one bounded channel that all upstream subtasks send
//! into, tagging messages with their index; a full channel blocks the sender, which is
//! the backpressure that keeps memory bounded. A subtask's watermark is the minimum of
//! the last watermark of each input that has not ended.
//!
//! Failure: the first error is the job's error. A thread that finds its channel
//! disconnected stops quietly — the thread that failed reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Sender, bounded};
use tidewater_core::key::{hash_columns, key_group, subtask_for_key_group};
use tidewater_core::{Error, Message, Result, Watermark};

use crate::dataflow::{Chain, Dataflow, Partitioning};
use crate::operator::push_through;
use crate::source::SourceReader;

type Envelope = (usize, Message);

/// Where a subtask sends what leaves its chain.
enum Router {
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

/// Signals that downstream is gone; the subtask stops without an error of its own.
struct Disconnected;

impl Router {
    fn route(&mut self, msg: Message) -> std::result::Result<Result<()>, Disconnected> {
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

/// Runs the dataflow to completion (bounded input) or failure.
pub fn execute(flow: Dataflow) -> Result<()> {
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

    let mut handles = Vec::new();
    let Dataflow { source, stages, .. } = flow;
    let source_n = source.readers.len();
    let cancel = Arc::new(AtomicBool::new(false));
    for (i, (reader, chain)) in source.readers.into_iter().zip(source.chains).enumerate() {
        let cancel = cancel.clone();
        let router = make_router(0, i, &inboxes)?;
        handles.push(
            thread::Builder::new()
                .name(format!("src-{i}"))
                .spawn(move || cancel_on_error(&cancel, run_source(reader, chain, router, &cancel)))
                .map_err(|e| Error::runtime(format!("cannot start a thread: {e}")))?,
        );
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
            let cancel = cancel.clone();
            handles.push(
                thread::Builder::new()
                    .name(format!("s{}-{i}", s + 1))
                    .spawn(move || {
                        cancel_on_error(&cancel, run_stage(rx, inputs, chain, router, &cancel))
                    })
                    .map_err(|e| Error::runtime(format!("cannot start a thread: {e}")))?,
            );
        }
        upstream_n = n;
    }
    // Only the threads hold senders now, so a dead stage disconnects its neighbours.
    inboxes.clear();

    let mut first_err = None;
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
    first_err.map_or(Ok(()), Err)
}

fn forward(router: &mut Router) -> impl FnMut(Message) -> Result<()> + '_ {
    move |m| match router.route(m) {
        Ok(r) => r,
        Err(Disconnected) => Err(Error::Runtime(DISCONNECTED.into())),
    }
}

const DISCONNECTED: &str = "downstream disconnected";

/// Downstream failures surface as this marker; the failing thread reports the cause.
fn quiet(r: Result<()>) -> Result<()> {
    match r {
        Err(Error::Runtime(m)) if m == DISCONNECTED => Ok(()),
        other => other,
    }
}

/// Records that a subtask failed, so that the others stop (an unbounded source would
/// otherwise run on with nobody reporting the error).
fn cancel_on_error(cancel: &AtomicBool, r: Result<()>) -> Result<()> {
    if r.is_err() {
        cancel.store(true, Ordering::Relaxed);
    }
    r
}

fn run_source(
    mut reader: Box<dyn SourceReader>,
    mut chain: Chain,
    mut router: Router,
    cancel: &AtomicBool,
) -> Result<()> {
    let mut send = forward(&mut router);
    let r = (|| {
        while let Some(batch) = reader.next_batch()? {
            if cancel.load(Ordering::Relaxed) {
                // Another subtask failed: stop without an end of stream.
                return Ok(());
            }
            push_through(&mut chain, Message::Data(batch), &mut send)?;
        }
        push_through(&mut chain, Message::EndOfStream, &mut send)
    })();
    quiet(r)
}

fn run_stage(
    rx: Receiver<Envelope>,
    inputs: usize,
    mut chain: Chain,
    mut router: Router,
    cancel: &AtomicBool,
) -> Result<()> {
    let mut send = forward(&mut router);
    let mut wms = vec![Watermark::MIN; inputs];
    let mut ended = vec![false; inputs];
    let mut current = Watermark::MIN;
    let r = (|| {
        while let Ok((from, msg)) = rx.recv() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            match msg {
                Message::Data(b) => push_through(&mut chain, Message::Data(b), &mut send)?,
                Message::Watermark(w) => {
                    if w > wms[from] {
                        wms[from] = w;
                    }
                    advance(&mut chain, &wms, &ended, &mut current, &mut send)?;
                }
                Message::EndOfStream => {
                    ended[from] = true;
                    if ended.iter().all(|e| *e) {
                        return push_through(&mut chain, Message::EndOfStream, &mut send);
                    }
                    advance(&mut chain, &wms, &ended, &mut current, &mut send)?;
                }
            }
        }
        // Every sender is gone without an end of stream: upstream failed and reports.
        Ok(())
    })();
    quiet(r)
}

/// Pushes the combined watermark through the chain if it advanced.
fn advance(
    chain: &mut Chain,
    wms: &[Watermark],
    ended: &[bool],
    current: &mut Watermark,
    send: &mut dyn FnMut(Message) -> Result<()>,
) -> Result<()> {
    let combined = wms
        .iter()
        .zip(ended)
        .filter(|(_, e)| !**e)
        .map(|(w, _)| *w)
        .min()
        .unwrap_or(Watermark::MAX);
    if combined > *current {
        *current = combined;
        push_through(chain, Message::Watermark(combined), send)?;
    }
    Ok(())
}
