//! `kafka`: topics as sources and sinks, with Flink's option names, and the runtime that
//! scales a Kafka job out over a consumer group (the Kafka Streams model).
//!
//! Layout:
//! - [`options`](self::options): the table options, checked before the job starts, and
//!   the librdkafka configurations they become (secrets never reach a log).
//! - `fetch` / `produce`: a member's assigned partitions read in batches from a
//!   librdkafka queue of its own, and records without headers produced many per call
//!   (the crate's only `unsafe`, each behind a safe API).
//! - `codec`: messages to Arrow batches (bad ones become dead letters with topic,
//!   partition and offset); `encode`: batches to messages, one record per row.
//! - [`tasks`]: the partition-task runtime. Each instance's members join the group;
//!   every assigned input partition becomes a task with its own watermark, window state
//!   and transactional producer; a task checkpoints into one Kafka transaction (output,
//!   state snapshot on the changelog topic, input offset).
//! - `client_defaults`: the librdkafka settings a job changes (fetch backoff and queue,
//!   producer linger), each with the measurement behind it.
//! - `task` / `txn`: an input partition's task, and the transactional side every task
//!   shares (fencing, the commit of one checkpoint).
//! - `topics`: the broker and the input checked at start; changelogs and repartition
//!   topics created on first use.
//! - `repartition` / `window_task`: input not keyed by the grouping key — input tasks
//!   write rows and watermarks to an internal topic, window tasks aggregate them and
//!   apply only records of committed transactions.
//! - `changelog`: a task's snapshot as changelog records, the commit mark (a committed
//!   offset pointing at the snapshot's manifest), and restore.
//! - `source` / `sink`: the registry's factories. A Kafka source is never run by the
//!   threaded executor; a Kafka sink behind another source writes at-least-once.

mod changelog;
mod client_defaults;
mod codec;
mod encode;
mod fetch;
pub mod options;
mod produce;
mod repartition;
mod sink;
mod source;
mod task;
pub mod tasks;
mod topics;
mod txn;
mod window_task;

pub use options::{KafkaSinkOptions, KafkaSourceOptions};
pub use tasks::{KafkaJob, KafkaReport, Repartition, TaskSink};

use crate::registry::Connector;

/// Registry entry.
pub const CONNECTOR: Connector = Connector {
    name: "kafka",
    description: "Kafka topics: a consumer group of partition tasks, exactly-once sink",
    options: options::OPTIONS,
    prefixes: &["properties."],
    source: Some(source::create),
    sink: Some(sink::create),
};

/// Blocks on a future on the current thread (the admin client's calls are futures; the
/// runtime has no async executor of its own).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
