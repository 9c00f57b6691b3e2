//! The job's topics: the broker and the input checked at start, changelogs and the
//! repartition topics created on first use.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};
use tidewater_core::{Error, Result};
use tidewater_runtime::Chain;

use super::block_on;
use super::changelog::changelog_topic;
use super::options::Topics;
use super::repartition::{Layout, data_topic, tasks_topic, window_changelog};
use super::tasks::{Shared, lock};
use super::txn::TXN_TIMEOUT;

/// The window stage of a repartitioning job.
pub struct Repartition {
    /// Builds a window task's chain (the window stage to the sink).
    pub make_window_chain: Box<dyn Fn() -> Result<Chain> + Send + Sync>,
    /// The grouping key: these columns of the source stage's output.
    pub key_columns: Vec<usize>,
}

impl std::fmt::Debug for Repartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repartition")
            .field("key_columns", &self.key_columns)
            .finish_non_exhaustive()
    }
}

/// What every member knows of the repartition topics.
pub(crate) struct RepartitionShared {
    pub(crate) layout: Layout,
    pub(crate) keys: Vec<usize>,
    pub(crate) data_topic: String,
    pub(crate) tasks_topic: String,
    pub(crate) window_changelog: String,
    pub(crate) input_changelog: String,
    pub(crate) make_window_chain: Box<dyn Fn() -> Result<Chain> + Send + Sync>,
}

impl Shared {
    fn bootstrap(&self) -> &str {
        self.job
            .source
            .properties
            .get("bootstrap.servers")
            .unwrap_or("?")
    }

    /// Waits for the first metadata answer, retrying with backoff for at most
    /// 'properties.socket.connection.setup.timeout.ms' (default 30 s) in all, and checks
    /// that the named topics exist.
    pub(super) fn wait_for_broker(&self) -> Result<()> {
        let limit = Duration::from_millis(
            self.job
                .source
                .properties
                .get("socket.connection.setup.timeout.ms")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(30_000),
        );
        let probe: BaseConsumer = self.restorer_config.create().map_err(|e| {
            Error::config(format!("table '{}'", self.job.source.table), e.to_string())
        })?;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(250);
        let topic = match &self.job.source.topics {
            Topics::Names(n) => n.first().cloned(),
            Topics::Pattern(_) => None,
        };
        loop {
            let left = limit.saturating_sub(started.elapsed());
            match probe.fetch_metadata(topic.as_deref(), left.min(Duration::from_secs(5))) {
                Ok(md) => {
                    if let Topics::Names(names) = &self.job.source.topics {
                        for name in names {
                            self.check_topic(&probe, name)?;
                        }
                    }
                    drop(md);
                    return Ok(());
                }
                Err(e) if started.elapsed() + backoff < limit => {
                    tracing::warn!(
                        "kafka at {} does not answer ({e}); retrying in {} ms",
                        self.bootstrap(),
                        backoff.as_millis()
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(Error::runtime(format!(
                        "cannot reach kafka at {} within {} ms \
                         ('properties.socket.connection.setup.timeout.ms'): {e}",
                        self.bootstrap(),
                        limit.as_millis()
                    )));
                }
            }
        }
    }

    fn check_topic(&self, probe: &BaseConsumer, name: &str) -> Result<()> {
        let md = probe
            .fetch_metadata(Some(name), TXN_TIMEOUT)
            .map_err(|e| Error::runtime(format!("kafka topic '{name}': {e}")))?;
        let ok = md
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty());
        if ok {
            Ok(())
        } else {
            Err(Error::config(
                format!("table '{}', option 'topic'", self.job.source.table),
                format!(
                    "kafka topic '{name}' does not exist at {}",
                    self.bootstrap()
                ),
            ))
        }
    }

    /// Creates the changelog topic of `topic` (compacted, one partition per input
    /// partition) unless it exists.
    pub(super) fn ensure_changelog(&self, probe: &BaseConsumer, topic: &str) -> Result<()> {
        let name = changelog_topic(&self.job.source.group, topic);
        if lock(&self.changelogs).contains(&name) {
            return Ok(());
        }
        let partitions = partition_count(probe, topic)?;
        self.ensure_topic(probe, &name, partitions, true)?;
        lock(&self.changelogs).insert(name);
        Ok(())
    }

    /// Creates `name` with `partitions` partitions unless it exists with as many.
    fn ensure_topic(
        &self,
        probe: &BaseConsumer,
        name: &str,
        partitions: usize,
        compact: bool,
    ) -> Result<()> {
        let have = partition_count(probe, name)?;
        if have >= partitions {
            return Ok(());
        }
        if have > 0 {
            return Err(Error::runtime(format!(
                "kafka topic '{name}' has {have} partitions, the job needs {partitions} \
                 (did the input topic grow? a job's internal topics are sized at its first run)"
            )));
        }
        let admin: AdminClient<DefaultClientContext> = self
            .restorer_config
            .create()
            .map_err(|e| Error::runtime(format!("kafka admin client: {e}")))?;
        let mut new = NewTopic::new(name, partitions as i32, TopicReplication::Fixed(1));
        if compact {
            new = new.set("cleanup.policy", "compact");
        }
        let opts = AdminOptions::new().operation_timeout(Some(TXN_TIMEOUT));
        let results = block_on(admin.create_topics([&new], &opts))
            .map_err(|e| Error::runtime(format!("cannot create topic '{name}': {e}")))?;
        for r in results {
            if let Err((t, code)) = r
                && code != RDKafkaErrorCode::TopicAlreadyExists
            {
                return Err(Error::runtime(format!("cannot create topic '{t}': {code}")));
            }
        }
        tracing::info!("created topic '{name}' with {partitions} partitions");
        Ok(())
    }

    /// Creates the repartition topics of a repartitioning job, sized by its input topic.
    pub(super) fn prepare_repartition(&mut self, repartition: Repartition) -> Result<()> {
        let probe: BaseConsumer = self
            .restorer_config
            .create()
            .map_err(|e| Error::runtime(format!("kafka consumer: {e}")))?;
        let Topics::Names(names) = &self.job.source.topics else {
            return Err(Error::config(
                format!("table '{}', option 'topic-pattern'", self.job.source.table),
                "a repartitioning job reads one named 'topic'",
            ));
        };
        let [topic] = names.as_slice() else {
            return Err(Error::config(
                format!("table '{}', option 'topic'", self.job.source.table),
                "a repartitioning job reads one topic",
            ));
        };
        let group = &self.job.source.group;
        let layout = Layout::new(partition_count(&probe, topic)? as i32);
        let shared = RepartitionShared {
            layout,
            keys: repartition.key_columns,
            data_topic: data_topic(group, topic),
            tasks_topic: tasks_topic(group, topic),
            window_changelog: window_changelog(group, topic),
            input_changelog: changelog_topic(group, topic),
            make_window_chain: repartition.make_window_chain,
        };
        let windows = layout.windows as usize;
        self.ensure_topic(
            &probe,
            &shared.data_topic,
            layout.data_partitions() as usize,
            false,
        )?;
        self.ensure_topic(&probe, &shared.tasks_topic, windows, false)?;
        self.ensure_topic(&probe, &shared.window_changelog, windows, true)?;
        self.ensure_changelog(&probe, topic)?;
        tracing::info!(
            "repartitioning '{topic}' by the grouping key: {} input tasks, {windows} window \
             tasks, through '{}'",
            layout.inputs,
            shared.data_topic
        );
        self.repartition = Some(shared);
        Ok(())
    }
}

/// Partitions of `topic` (0: it does not exist).
fn partition_count(probe: &BaseConsumer, topic: &str) -> Result<usize> {
    let md = probe
        .fetch_metadata(Some(topic), TXN_TIMEOUT)
        .map_err(|e| Error::runtime(format!("kafka topic '{topic}': {e}")))?;
    Ok(md
        .topics()
        .iter()
        .find(|m| m.name() == topic && m.error().is_none())
        .map_or(0, |m| m.partitions().len()))
}
