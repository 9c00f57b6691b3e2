//! The partition-task runtime: how a Kafka job scales out (the Kafka Streams model).
//!
//! Every instance runs `members` threads; each is a member of the job's consumer group
//! with its own consumer, so Kafka splits the input partitions over all threads of all
//! instances and its group membership is the failure detector. Each assigned partition
//! becomes a [`Task`](super::task): the job's operator chain over that partition alone,
//! with its own watermark and state (every key lives in one partition), and a producer
//! whose `transactional.id` names the partition, so that whoever opens the task next
//! fences this one.
//!
//! A task opens inside the rebalance callback, before the partition is handed to the
//! fetcher: it fences earlier owners, reads the committed offset and its mark, restores
//! the snapshot the mark names, and the partition is assigned at exactly that offset.
//! Every checkpoint interval each task commits one transaction (output, snapshot, input
//! offset with the mark). On revocation it commits and drops its state. A failed commit
//! aborts and reopens the task from its last committed checkpoint; a fenced task is let
//! go (another member owns it).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tidewater_core::dead_letter::DeadLetterSink;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::Chain;

use super::client_defaults::{
    CONSUMER_ONLY, FETCH_QUEUE_BACKOFF_MS, batch_defaults, consumer_defaults,
};
use super::fetch::{Batch, FetchQueue, Fetched};
use super::options::{KafkaSinkOptions, KafkaSourceOptions, StartupMode};
use super::task::Task;
pub use super::topics::Repartition;
pub(crate) use super::topics::RepartitionShared;
use super::txn::{CheckpointError, TXN_TIMEOUT};

/// Messages buffered before they are pushed through the tasks' chains.
const BATCH_MESSAGES: usize = 4096;
/// Messages read at a time when the member also runs window tasks, which are served
/// between reads: a window task's record is a batch of rows, and serving them per input
/// message would cost more than the message.
const WINDOW_READ: usize = 256;
/// Longest wait between two attempts to reopen a failed task.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Where a Kafka job's output goes.
#[derive(Debug)]
pub enum TaskSink {
    /// A Kafka topic: the output joins each task's transaction.
    Kafka(KafkaSinkOptions),
    /// The chain ends in its own sink operator (print, blackhole): at-least-once.
    InChain,
}

/// A Kafka job as the planner hands it over.
pub struct KafkaJob {
    /// The job's name.
    pub name: String,
    /// The source table.
    pub source: KafkaSourceOptions,
    /// Its physical columns.
    pub schema: SchemaRef,
    /// The sink.
    pub sink: TaskSink,
    /// Builds a fresh operator chain for an input partition's task (from after decoding
    /// to the sink; with `repartition`, the source stage only).
    pub make_chain: Box<dyn Fn() -> Result<Chain> + Send + Sync>,
    /// Set when the input is not keyed by the grouping key: the window stage runs in
    /// window tasks behind a repartition topic.
    pub repartition: Option<Repartition>,
    /// Group members (threads) in this instance.
    pub members: usize,
    /// How often every task commits.
    pub checkpoint_interval: Duration,
    /// Job counters.
    pub metrics: Arc<JobMetrics>,
    /// The source table's dead letters.
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// Set to stop: every task commits and the members leave the group.
    pub stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaJob")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("sink", &self.sink)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// What a Kafka job did.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaReport {
    /// Tasks opened (assignments and reopenings).
    pub tasks_opened: u64,
    /// Of those, tasks that restored a checkpoint.
    pub tasks_restored: u64,
    /// Rebalances that assigned partitions to this instance.
    pub assignments: u64,
    /// Partitions revoked from (or lost by) this instance.
    pub revocations: u64,
}

/// What every member shares.
pub(crate) struct Shared {
    pub(crate) job: KafkaJob,
    pub(crate) output: Option<KafkaSinkOptions>,
    pub(crate) transactional_prefix: String,
    pub(crate) producer_config: ClientConfig,
    consumer_config: ClientConfig,
    pub(super) restorer_config: ClientConfig,
    /// Window tasks' readers of the repartition topic (assigned, never in the group).
    pub(crate) reader_config: ClientConfig,
    /// Set once the repartition topics exist (repartitioning jobs).
    pub(crate) repartition: Option<RepartitionShared>,
    /// Changelog topics known to exist.
    pub(super) changelogs: Mutex<HashSet<String>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn new(job: KafkaJob) -> Result<Self> {
        let props = &job.source.properties;
        let mut consumer_config = props.client_config();
        consumer_defaults(&mut consumer_config);
        let mut producer_config = props.client_config();
        let mut restorer_config = props.client_config();
        for k in CONSUMER_ONLY {
            producer_config.remove(k);
            restorer_config.remove(k);
        }
        restorer_config
            .set(
                "group.id",
                format!("{}-tidewater-restore", job.source.group),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            // A restore knows what it waits for: no 500 ms fetch waits at the end.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        let mut reader_config = consumer_config.clone();
        reader_config
            .set("group.id", format!("{}-tidewater-window", job.source.group))
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100");
        let output = match &job.sink {
            TaskSink::Kafka(o) => Some(o.clone()),
            TaskSink::InChain => None,
        };
        let mut transactional_prefix = format!("{}-tidewater", job.source.group);
        if let Some(o) = &output {
            if o.properties.get("bootstrap.servers") != props.get("bootstrap.servers") {
                return Err(Error::config(
                    format!("table '{}', option 'properties.bootstrap.servers'", o.table),
                    "a Kafka job's output shares a transaction with its input offsets, so it \
                     must go to the cluster the source reads",
                ));
            }
            let sink_config = o.properties.client_config();
            for (k, v) in sink_config.config_map() {
                producer_config.set(k, v);
            }
            if o.partitioner == super::options::Partitioner::Default {
                producer_config.set("partitioner", "murmur2_random");
            }
            if let Some(p) = &o.transactional_id_prefix {
                transactional_prefix = p.clone();
            }
        }
        batch_defaults(&mut producer_config, job.checkpoint_interval);
        Ok(Self {
            job,
            output,
            transactional_prefix,
            producer_config,
            consumer_config,
            restorer_config,
            reader_config,
            repartition: None,
            changelogs: Mutex::default(),
        })
    }

    /// Where a partition without a committed offset starts.
    pub(crate) fn startup_offset<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> Result<Offset> {
        Ok(match self.job.source.startup {
            StartupMode::Earliest => Offset::Beginning,
            StartupMode::Latest => Offset::End,
            StartupMode::GroupOffsets => {
                match self.job.source.properties.get("auto.offset.reset") {
                    Some("earliest" | "smallest" | "beginning") => Offset::Beginning,
                    _ => Offset::End,
                }
            }
            StartupMode::Timestamp(ts) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(ts))
                    .map_err(|e| Error::runtime(e.to_string()))?;
                let found = consumer.offsets_for_times(tpl, TXN_TIMEOUT).map_err(|e| {
                    Error::runtime(format!(
                        "{topic}/{partition}: offset for timestamp {ts}: {e}"
                    ))
                })?;
                found
                    .find_partition(topic, partition)
                    .map_or(Offset::End, |e| match e.offset() {
                        Offset::Offset(o) => Offset::Offset(o),
                        _ => Offset::End,
                    })
            }
        })
    }
}

type Key = (String, i32);

/// One group member: its tasks, and what went wrong in callbacks.
struct Member {
    shared: Arc<Shared>,
    tasks: Mutex<BTreeMap<Key, Task>>,
    /// Assigned partitions whose task failed to open, with the time of the next try
    /// and the current backoff.
    broken: Mutex<BTreeMap<Key, (Instant, Duration)>>,
    /// Partitions fenced by another owner: their messages are dropped until revoked.
    lost: Mutex<BTreeSet<Key>>,
    /// Reads changelogs on restore.
    restorer: BaseConsumer,
    /// An error of a callback, for the member loop to return.
    error: Mutex<Option<Error>>,
    /// Where assigned partitions' messages go (set once the consumer exists; weak, as
    /// the queue holds the consumer, which holds this context).
    fetch: OnceLock<Weak<FetchQueue<Member>>>,
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let keys: Vec<Key> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                JobMetrics::add(&self.shared.job.metrics.partitions.assignments, 1);
                for (topic, p) in &keys {
                    self.route(topic, *p);
                    if let Some(start) = self.open(consumer, topic, *p)
                        && let Err(e) = tpl.set_partition_offset(topic, *p, start)
                    {
                        tracing::warn!("{topic}/{p}: cannot set the start offset: {e}");
                    }
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                for key in &keys {
                    self.close(consumer, key, lost);
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!("kafka rebalance error: {other:?}");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.fail(Error::runtime(format!("kafka rebalance: {e}")));
        }
    }
}

impl Member {
    /// Removes a task from the open ones.
    fn take(&self, key: &Key) -> Option<Task> {
        let task = lock(&self.tasks).remove(key);
        if task.is_some() {
            self.shared
                .job
                .metrics
                .partitions
                .assigned
                .fetch_sub(1, Ordering::Relaxed);
        }
        task
    }

    fn fail(&self, e: Error) {
        lock(&self.error).get_or_insert(e);
    }

    /// Routes a partition about to be assigned into the member's fetch queue. Should
    /// that fail, its messages come through the consumer's queue, one poll each.
    fn route(&self, topic: &str, partition: i32) {
        let Some(fetch) = self.fetch.get().and_then(Weak::upgrade) else {
            return;
        };
        if let Err(e) = fetch.route(topic, partition) {
            tracing::warn!("{topic}/{partition}: {e}; reading it one message at a time");
        }
    }

    /// Opens the task of a partition; on failure the partition is retried later and
    /// `None` is returned (it is assigned without a start offset and its messages are
    /// dropped until the task opens, which seeks to the right place).
    fn open<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> Option<Offset> {
        let key = (topic.to_string(), partition);
        lock(&self.lost).remove(&key);
        let window = self
            .shared
            .repartition
            .as_ref()
            .is_some_and(|r| r.tasks_topic == topic);
        let opened = if window {
            Ok(())
        } else {
            self.shared.ensure_changelog(&self.restorer, topic)
        }
        .and_then(|()| Task::open(&self.shared, consumer, &self.restorer, topic, partition));
        match opened {
            Ok((task, start)) => {
                let stats = &self.shared.job.metrics.partitions;
                JobMetrics::add(&stats.opened, 1);
                if task.restored() {
                    JobMetrics::add(&stats.restored, 1);
                }
                lock(&self.broken).remove(&key);
                if lock(&self.tasks).insert(key, task).is_none() {
                    JobMetrics::add(&stats.assigned, 1);
                }
                Some(start)
            }
            Err(e) => {
                let backoff = lock(&self.broken)
                    .get(&key)
                    .map_or(Duration::from_millis(500), |(_, b)| {
                        (*b * 2).min(MAX_BACKOFF)
                    });
                tracing::warn!(
                    "task {topic}/{partition} cannot open: {e}; retrying in {} ms",
                    backoff.as_millis()
                );
                lock(&self.broken).insert(key, (Instant::now() + backoff, backoff));
                None
            }
        }
    }

    /// Revocation: commit what was done (unless the assignment is already lost to
    /// another member) and drop the state.
    fn close<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, key: &Key, lost: bool) {
        lock(&self.broken).remove(key);
        lock(&self.lost).remove(key);
        JobMetrics::add(&self.shared.job.metrics.partitions.revocations, 1);
        let Some(mut task) = self.take(key) else {
            return;
        };
        if lost {
            tracing::info!(
                "task {} lost its partition; its open transaction is abandoned",
                task.id()
            );
            task.abort();
            return;
        }
        match task.checkpoint(consumer) {
            Ok(_) => tracing::info!("task {} revoked after its last checkpoint", task.id()),
            Err(CheckpointError::Fenced(e)) => {
                tracing::info!("task {} revoked, fenced: {e}", task.id())
            }
            Err(CheckpointError::Failed(e)) => {
                tracing::warn!(
                    "task {} revoked; its last checkpoint failed: {e}",
                    task.id()
                );
                task.abort();
            }
        }
    }

    /// Adds a polled message to its task's pending messages (or drops it when the
    /// partition has no open task: it is read again once the task opens).
    fn buffer(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> bool {
        let message = Fetched {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
        };
        buffer_into(&mut lock(&self.tasks), &message)
    }

    /// [`buffer`](Self::buffer) for a batch from the fetch queue, under one lock.
    /// Returns how many messages were buffered, and the batch's errors other than
    /// partition ends.
    fn buffer_batch(&self, batch: &Batch<'_>) -> (usize, Vec<KafkaError>) {
        let mut tasks = lock(&self.tasks);
        let mut buffered = 0;
        let mut errors = Vec::new();
        for m in batch.iter() {
            match m {
                Ok(m) => buffered += usize::from(buffer_into(&mut tasks, &m)),
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => errors.push(e),
            }
        }
        (buffered, errors)
    }

    /// The consumer had nothing: every input task without a message since is quiet.
    fn note_quiet(&self) {
        let now = Instant::now();
        for t in lock(&self.tasks).values_mut() {
            t.note_quiet(now);
        }
    }

    /// Pushes what the tasks have read through their chains: the input tasks', or
    /// (`windows`) what the window tasks read from the repartition topic.
    fn process_all<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, windows: bool) {
        let failed: Vec<(Key, Error)> = lock(&self.tasks)
            .iter_mut()
            .filter(|(_, t)| matches!(t, Task::Window(_)) == windows)
            .filter_map(|(k, t)| {
                t.process(consumer, &self.restorer)
                    .err()
                    .map(|e| (k.clone(), e))
            })
            .collect();
        for (key, e) in failed {
            self.restart(key, e);
        }
    }

    /// A task failed: abort it and reopen it from its last committed checkpoint.
    fn restart(&self, key: Key, e: Error) {
        tracing::warn!(
            "task {}/{} failed: {e}; restarting from its last checkpoint",
            key.0,
            key.1
        );
        self.shared
            .job
            .metrics
            .event("warn", format!("task {}/{} failed: {e}", key.0, key.1));
        if let Some(t) = self.take(&key) {
            t.abort();
        }
        lock(&self.broken).insert(key, (Instant::now(), Duration::from_millis(250)));
    }

    fn checkpoint_all<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let keys: Vec<Key> = lock(&self.tasks).keys().cloned().collect();
        for key in keys {
            let result = match lock(&self.tasks).get_mut(&key) {
                Some(t) => t.checkpoint(consumer),
                None => continue,
            };
            match result {
                Ok(_) => {}
                Err(CheckpointError::Fenced(e)) => {
                    tracing::warn!("task {}/{} was fenced by a newer owner: {e}", key.0, key.1);
                    self.take(&key);
                    lock(&self.lost).insert(key);
                }
                Err(CheckpointError::Failed(e)) => self.restart(key, e),
            }
        }
    }

    /// Reopens the failed tasks that are due, at their committed offsets.
    fn retry_broken<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let now = Instant::now();
        let due: Vec<Key> = lock(&self.broken)
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, p) in due {
            if let Some(start) = self.open(consumer, &topic, p)
                && let Err(e) = consumer.seek(&topic, p, start, TXN_TIMEOUT)
            {
                self.restart((topic, p), Error::runtime(format!("cannot seek: {e}")));
            }
        }
    }
}

/// Copies a message into its task's buffers (no allocation per message); false when
/// its partition has no open task.
fn buffer_into(tasks: &mut BTreeMap<Key, Task>, m: &Fetched<'_>) -> bool {
    // A member has a handful of tasks: a scan beats building an owned key.
    match tasks
        .iter_mut()
        .find(|((t, p), _)| *p == m.partition && t == m.topic)
    {
        Some((_, t)) => {
            t.buffer(m.offset, m.key, m.payload);
            true
        }
        None => false,
    }
}

/// Logs a consumer error, but the same one at most every ten seconds: librdkafka
/// reconnects by itself and says so at every attempt.
fn warn_now_and_then(last: &mut Option<(String, Instant)>, e: &KafkaError) {
    let text = e.to_string();
    let repeat = last
        .as_ref()
        .is_some_and(|(t, at)| *t == text && at.elapsed() < Duration::from_secs(10));
    if !repeat {
        tracing::warn!("kafka consumer: {text}");
        *last = Some((text, Instant::now()));
    }
}

/// Runs the job until `stop` is set (or a member fails).
pub fn run(job: KafkaJob) -> Result<KafkaReport> {
    let members = job.members.max(1);
    let mut job = job;
    let repartition = job.repartition.take();
    let mut shared = Shared::new(job)?;
    shared.wait_for_broker()?;
    if let Some(r) = repartition {
        shared.prepare_repartition(r)?;
    }
    let shared = Arc::new(shared);
    tracing::info!(
        job = %shared.job.name,
        group = %shared.job.source.group,
        members,
        "kafka job '{}' joining group '{}' with {members} member(s)",
        shared.job.name,
        shared.job.source.group
    );
    let handles: Vec<_> = (0..members)
        .map(|i| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("kafka-member-{i}"))
                .spawn(move || {
                    let r = member(&shared);
                    if r.is_err() {
                        // One member failing stops the instance: its partitions move on.
                        shared.job.stop.store(true, Ordering::SeqCst);
                    }
                    r
                })
                .map_err(|e| Error::runtime(format!("cannot start a member thread: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut first_error = None;
    for h in handles {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(Error::runtime("a member thread panicked")));
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            let stats = &shared.job.metrics.partitions;
            Ok(KafkaReport {
                tasks_opened: stats.opened.load(Ordering::Relaxed),
                tasks_restored: stats.restored.load(Ordering::Relaxed),
                assignments: stats.assignments.load(Ordering::Relaxed),
                revocations: stats.revocations.load(Ordering::Relaxed),
            })
        }
    }
}

fn member(shared: &Arc<Shared>) -> Result<()> {
    let restorer: BaseConsumer = shared
        .restorer_config
        .create()
        .map_err(|e| Error::runtime(format!("kafka consumer: {e}")))?;
    let ctx = Member {
        shared: shared.clone(),
        tasks: Mutex::default(),
        broken: Mutex::default(),
        lost: Mutex::default(),
        restorer,
        error: Mutex::default(),
        fetch: OnceLock::new(),
    };
    let consumer: Arc<BaseConsumer<Member>> = Arc::new(
        shared
            .consumer_config
            .create_with_context(ctx)
            .map_err(|e| Error::runtime(format!("kafka consumer: {e}")))?,
    );
    // Declared after the consumer, so dropped before this function's reference to it:
    // the consumer closes (revoking every task) once the queue is gone.
    let fetch = Arc::new(FetchQueue::new(consumer.clone())?);
    // A fresh context: nothing was set before.
    let _ = consumer.context().fetch.set(Arc::downgrade(&fetch));
    let consumer: &BaseConsumer<Member> = &consumer;
    let mut subscription = shared.job.source.topics.subscription();
    subscription.extend(shared.repartition.as_ref().map(|r| r.tasks_topic.clone()));
    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| Error::runtime(format!("cannot subscribe to {topics:?}: {e}")))?;
    let interval = shared.job.checkpoint_interval;
    let mut last_checkpoint = Instant::now();
    let mut buffered = 0;
    let mut last_warning: Option<(String, Instant)> = None;
    // Set while messages come: the next read does not wait.
    let mut flowing = false;
    while !shared.job.stop.load(Ordering::SeqCst) {
        if let Some(e) = lock(&consumer.context().error).take() {
            return Err(e);
        }
        // Rebalances (the tasks open and close inside this poll) and errors; and the
        // messages of a partition that could not be routed to the fetch queue.
        let mut got = 0;
        match consumer.poll(Duration::ZERO) {
            Some(Ok(m)) => {
                buffered += usize::from(consumer.context().buffer(&m));
                got += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => warn_now_and_then(&mut last_warning, &e),
        }
        // Window tasks read partitions of their own: the loop comes round often for them.
        let has_windows = shared.repartition.is_some();
        let wait = match (flowing || got > 0, has_windows) {
            (true, _) => Duration::ZERO,
            (false, true) => Duration::from_millis(5),
            (false, false) => Duration::from_millis(50),
        };
        let max = if has_windows {
            WINDOW_READ
        } else {
            BATCH_MESSAGES.saturating_sub(buffered).max(1)
        };
        let batch = fetch.read(wait, max);
        let (read, errors) = consumer.context().buffer_batch(&batch);
        buffered += read;
        got += batch.len();
        // Fewer than asked for: the queue is empty for now.
        let drained = batch.len() < max;
        drop(batch);
        for e in &errors {
            warn_now_and_then(&mut last_warning, e);
        }
        flowing = got > 0;
        if drained {
            consumer.context().note_quiet();
        }
        if buffered >= BATCH_MESSAGES || (drained && buffered > 0) {
            consumer.context().process_all(consumer, false);
            buffered = 0;
        }
        if has_windows {
            consumer.context().process_all(consumer, true);
        }
        if last_checkpoint.elapsed() >= interval {
            consumer.context().checkpoint_all(consumer);
            consumer.context().retry_broken(consumer);
            last_checkpoint = Instant::now();
        }
    }
    // Stop: every task commits what it did; closing the consumer revokes the (then
    // clean) tasks and leaves the group, so the partitions move on at once.
    consumer.context().checkpoint_all(consumer);
    consumer.unsubscribe();
    if let Some(e) = lock(&consumer.context().error).take() {
        return Err(e);
    }
    Ok(())
}
