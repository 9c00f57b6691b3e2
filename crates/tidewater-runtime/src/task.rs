//! The loops of the subtask threads: a source subtask reads, snapshots and injects
//! barriers; a stage subtask merges its inputs, aligns barriers, and runs its chain.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, never, select};
use tidewater_core::metrics::{JobMetrics, TaskMetrics};
use tidewater_core::{Error, Result, Watermark};
use tidewater_state::encode::encode_batches;
use tidewater_state::{Ack, CheckpointStore, FileEntry, TaskId};

use crate::dataflow::Chain;
use crate::exec::{Disconnected, Envelope, Router};
use crate::message::{Barrier, Message};
use crate::operator::{StateSize, StateWriter, push_through};
use crate::source::SourceReader;

/// From the coordinator to a subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// A checkpoint was requested (wakes a source that has ended).
    Wake,
    /// Checkpoint `n` is complete.
    Commit(u64),
    /// Stop: every source has ended and the last checkpoint is complete, or the job failed.
    Stop,
}

/// From a subtask to the coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    Ack(Ack),
    SourceEnded,
    Failed,
}

/// What every subtask of a job shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub cancel: Arc<AtomicBool>,
    /// The newest checkpoint requested; sources snapshot when it passes theirs.
    pub requested: Arc<AtomicU64>,
    pub events: Sender<Event>,
    pub store: Option<Arc<dyn CheckpointStore>>,
    /// The user asked the job to stop (SIGINT/SIGTERM): sources stop reading.
    pub stop: Arc<AtomicBool>,
}

impl Shared {
    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Records that a subtask failed, so that the others and the coordinator stop (an
    /// unbounded source would otherwise run on with nobody reporting the error).
    fn finish(&self, r: Result<()>) -> Result<()> {
        let r = quiet(r);
        if r.is_err() {
            self.cancel();
            let _ = self.events.send(Event::Failed);
        }
        r
    }

    /// Snapshots every operator of `chain` for `barrier`, writing one file per operator
    /// that has state, and acknowledges.
    fn snapshot(
        &self,
        chain: &mut Chain,
        barrier: &Barrier,
        task: TaskId,
        source: Option<serde_json::Value>,
    ) -> Result<()> {
        let store = self
            .store
            .as_deref()
            .ok_or_else(|| Error::runtime("a barrier without a checkpoint store (a bug)"))?;
        let mut files = Vec::new();
        for (k, op) in chain.iter_mut().enumerate() {
            let mut w = StateWriter::default();
            op.on_barrier(barrier, &mut w)?;
            let rows = w.batches.iter().map(|b| b.num_rows() as u64).sum();
            if let Some((bytes, crc32)) = encode_batches(&w.batches)? {
                let name = format!("s{}-t{}-op{k}.arrow", task.stage, task.subtask);
                store.put(barrier.epoch(), &name, &bytes)?;
                files.push(FileEntry {
                    stage: task.stage,
                    subtask: task.subtask,
                    operator: k,
                    operator_name: op.name(),
                    name,
                    bytes: bytes.len() as u64,
                    rows,
                    crc32,
                });
            }
        }
        let ack = Ack {
            epoch: barrier.epoch(),
            task,
            files,
            source,
        };
        self.events
            .send(Event::Ack(ack))
            .map_err(|_| Error::Runtime(DISCONNECTED.into()))
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

/// A subtask's chain of operators, where its output goes, and its counters.
#[derive(Debug)]
pub(crate) struct Chained {
    pub chain: Chain,
    pub router: Router,
    pub metrics: Arc<TaskMetrics>,
}

impl Chained {
    /// Pushes `msg` through the chain and routes what leaves it, counting rows out (rows
    /// into the next stage, or into the sink that ends the chain) and the watermark that
    /// leaves. Returns the rows that reached the chain's last operator.
    fn push(&mut self, msg: Message) -> Result<u64> {
        let Self {
            chain,
            router,
            metrics,
        } = self;
        let terminal = matches!(router, Router::None);
        let mut send = |m: Message| {
            match &m {
                Message::Data(b) => {
                    JobMetrics::add(&metrics.records_out, b.num_rows() as u64);
                }
                Message::Watermark(w, _) => metrics.watermark.store(w.0, Ordering::Relaxed),
                _ => {}
            }
            match router.route(m) {
                Ok(r) => r,
                Err(Disconnected) => Err(Error::Runtime(DISCONNECTED.into())),
            }
        };
        let mut into_last = 0;
        push_through(chain, msg, &mut send, &mut into_last)?;
        if terminal {
            JobMetrics::add(&metrics.records_out, into_last);
        }
        Ok(into_last)
    }

    /// Samples the state size of the chain's operators into the metrics.
    fn sample_state(&self) {
        let mut total = StateSize::default();
        for op in &self.chain {
            if let Some(s) = op.state_size() {
                total.keys += s.keys;
                total.slices += s.slices;
                total.bytes += s.bytes;
            }
        }
        self.metrics.state_keys.store(total.keys, Ordering::Relaxed);
        self.metrics
            .state_slices
            .store(total.slices, Ordering::Relaxed);
        self.metrics
            .state_bytes
            .store(total.bytes, Ordering::Relaxed);
    }
}

/// A source subtask.
#[derive(Debug)]
pub(crate) struct SourceTask {
    pub reader: Box<dyn SourceReader>,
    pub out: Chained,
    pub id: TaskId,
    pub ctl: Receiver<Control>,
    /// The last checkpoint this subtask injected.
    pub injected: u64,
}

impl SourceTask {
    pub(crate) fn run(mut self, shared: &Shared) -> Result<()> {
        let r = self.run_inner(shared);
        shared.finish(r)
    }

    fn run_inner(&mut self, shared: &Shared) -> Result<()> {
        // Ended: no more input (EndOfStream sent), or stopped: asked to stop reading.
        let mut ended = false;
        loop {
            if shared.cancelled() {
                // Another subtask failed: stop without an end of stream.
                return Ok(());
            }
            let requested = shared.requested.load(Ordering::Acquire);
            if requested > self.injected {
                self.inject(requested, shared)?;
                continue;
            }
            if ended {
                // Nothing to read: wait for a checkpoint request or the stop.
                match self.ctl.recv() {
                    Ok(Control::Stop) | Err(_) => return Ok(()),
                    Ok(_) => continue,
                }
            }
            while let Ok(c) = self.ctl.try_recv() {
                if c == Control::Stop {
                    return Ok(());
                }
            }
            if shared.stop.load(Ordering::Acquire) {
                ended = true;
                if shared.store.is_none() {
                    // Without checkpoints a stop ends the input here: open windows fire
                    // with what they hold and sinks commit, as at the end of a file.
                    self.out.push(Message::EndOfStream)?;
                    let _ = shared.events.send(Event::SourceEnded);
                }
                // With checkpoints the coordinator takes a last checkpoint (no end of
                // stream: open windows stay open in it) and then stops the job.
                continue;
            }
            match self.reader.next_batch()? {
                Some(b) if b.num_rows() == 0 => {}
                Some(b) => {
                    let m = &self.out.metrics;
                    JobMetrics::add(&m.records_in, b.num_rows() as u64);
                    JobMetrics::add(&m.batches_in, 1);
                    self.out.push(Message::Data(b))?;
                }
                None => {
                    self.out.push(Message::EndOfStream)?;
                    ended = true;
                    tracing::info!(
                        subtask = self.id.subtask,
                        records = self.out.metrics.records_in.load(Ordering::Relaxed),
                        "{} subtask {} finished its input",
                        self.out.metrics.operator,
                        self.id.subtask
                    );
                    let _ = shared.events.send(Event::SourceEnded);
                }
            }
        }
    }

    /// Snapshots the reader and the chain for checkpoint `epoch` and emits its barrier.
    fn inject(&mut self, epoch: u64, shared: &Shared) -> Result<()> {
        let barrier = Barrier::new(epoch);
        let position = self.reader.snapshot(epoch)?;
        shared.snapshot(&mut self.out.chain, &barrier, self.id, Some(position))?;
        self.injected = epoch;
        self.out.push(Message::Barrier(barrier)).map(|_| ())
    }
}

/// A subtask of a downstream stage.
#[derive(Debug)]
pub(crate) struct StageTask {
    rx: Receiver<Envelope>,
    out: Chained,
    id: TaskId,
    ctl: Receiver<Control>,
    /// Last watermark of each input.
    wms: Vec<Watermark>,
    ended: Vec<bool>,
    /// The watermark pushed into the chain last.
    current: Watermark,
    /// Inputs whose barrier of the checkpoint being aligned has arrived; their later
    /// messages wait in `stash` until every input's barrier is in.
    blocked: Vec<bool>,
    stash: VecDeque<Envelope>,
    /// The emit-latency histogram in the `metrics` registry (Prometheus).
    latency: metrics::Histogram,
}

impl StageTask {
    pub(crate) fn new(
        rx: Receiver<Envelope>,
        inputs: usize,
        out: Chained,
        id: TaskId,
        ctl: Receiver<Control>,
    ) -> Self {
        out.metrics
            .queue_capacity
            .store(rx.capacity().unwrap_or(0) as u64, Ordering::Relaxed);
        // One handle per subtask: the labels are formatted once, not per firing.
        let latency = metrics::histogram!(
            "tidewater_emit_latency_seconds",
            "operator" => out.metrics.operator.clone(),
            "subtask" => out.metrics.subtask.to_string()
        );
        Self {
            rx,
            latency,
            out,
            id,
            ctl,
            wms: vec![Watermark::MIN; inputs],
            ended: vec![false; inputs],
            current: Watermark::MIN,
            blocked: vec![false; inputs],
            stash: VecDeque::new(),
        }
    }

    pub(crate) fn run(mut self, shared: &Shared) -> Result<()> {
        let r = self.run_inner(shared);
        shared.finish(r)
    }

    fn run_inner(&mut self, shared: &Shared) -> Result<()> {
        let mut ctl = self.ctl.clone();
        loop {
            if shared.cancelled() {
                return Ok(());
            }
            select! {
                recv(self.rx) -> m => match m {
                    Ok(env) => self.handle(env, shared)?,
                    Err(_) => {
                        // Every upstream subtask is gone: after a clean end the
                        // coordinator has already sent the last commit.
                        while let Ok(c) = self.ctl.try_recv() {
                            self.control(c)?;
                        }
                        return Ok(());
                    }
                },
                recv(ctl) -> c => match c {
                    Ok(c) => self.control(c)?,
                    Err(_) => ctl = never(),
                },
            }
        }
    }

    fn control(&mut self, c: Control) -> Result<()> {
        if let Control::Commit(epoch) = c {
            for op in self.out.chain.iter_mut() {
                op.on_commit(epoch)?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, (from, msg): Envelope, shared: &Shared) -> Result<()> {
        if self.blocked[from] {
            self.stash.push_back((from, msg));
            return Ok(());
        }
        match msg {
            Message::Data(b) => {
                let m = &self.out.metrics;
                JobMetrics::add(&m.records_in, b.num_rows() as u64);
                JobMetrics::add(&m.batches_in, 1);
                m.queued.store(self.rx.len() as u64, Ordering::Relaxed);
                self.out.push(Message::Data(b)).map(|_| ())
            }
            Message::Watermark(w, at) => {
                if w > self.wms[from] {
                    self.wms[from] = w;
                }
                self.advance(at)
            }
            Message::EndOfStream => {
                self.ended[from] = true;
                if self.ended.iter().all(|e| *e) {
                    self.out.push(Message::EndOfStream)?;
                    self.out.sample_state();
                    return Ok(());
                }
                self.advance(Instant::now())
            }
            Message::Barrier(b) => {
                // Every input delivers every barrier, even after its end of stream.
                self.blocked[from] = true;
                if self.blocked.iter().all(|b| *b) {
                    self.align_complete(b, shared)?;
                }
                Ok(())
            }
        }
    }

    /// Barrier `b` is in from every input: snapshot, forward it, release the stash.
    fn align_complete(&mut self, b: Barrier, shared: &Shared) -> Result<()> {
        shared.snapshot(&mut self.out.chain, &b, self.id, None)?;
        self.out.push(Message::Barrier(b))?;
        self.blocked.fill(false);
        let stash = std::mem::take(&mut self.stash);
        for env in stash {
            self.handle(env, shared)?;
        }
        Ok(())
    }

    /// Pushes the combined watermark through the chain if it advanced. `at`: when the
    /// watermark that made it advance was generated; results it fires are timed from it.
    fn advance(&mut self, at: Instant) -> Result<()> {
        let combined = self
            .wms
            .iter()
            .zip(&self.ended)
            .filter(|(_, e)| !**e)
            .map(|(w, _)| *w)
            .min()
            .unwrap_or(Watermark::MAX);
        if combined > self.current {
            self.current = combined;
            let fired = self.out.push(Message::Watermark(combined, at))?;
            let m = &self.out.metrics;
            m.watermark.store(combined.0, Ordering::Relaxed);
            if fired > 0 {
                let latency = at.elapsed();
                m.emit_latency.record(latency);
                self.latency.record(latency.as_secs_f64());
            }
            self.out.sample_state();
        }
        Ok(())
    }
}
