//! The Kafka sink behind a source that is not Kafka: at-least-once (flushed at every
//! checkpoint barrier and at the end) or 'none'. Exactly-once output needs the output to
//! share a transaction with the input offsets, which only the partition tasks of a
//! Kafka source have.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::{Barrier, Operator, Output, StateWriter};

use super::options::{DeliveryGuarantee, KafkaSinkOptions, Partitioner};
use super::txn::OutputTarget;
use crate::registry::SinkContext;

/// How long a flush may wait for the broker before the job fails.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Remembers the first failed delivery.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    pub(crate) failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut f) = self.failed.lock()
        {
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

impl Deliveries {
    pub(crate) fn check(&self, topic: &str) -> Result<()> {
        match self.failed.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(Error::runtime(format!(
                "cannot write to kafka topic '{topic}': {e}"
            ))),
            None => Ok(()),
        }
    }
}

/// One sink subtask.
struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    target: OutputTarget,
    guarantee: DeliveryGuarantee,
    metrics: Arc<JobMetrics>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.target.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    fn flush(&mut self) -> Result<()> {
        super::txn::flush(&self.producer, FLUSH_TIMEOUT).map_err(|e| {
            Error::runtime(format!(
                "cannot flush kafka topic '{}': {e}",
                self.target.topic
            ))
        })?;
        self.producer.context().check(&self.target.topic)
    }
}

impl Operator for KafkaSink {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let n = self.target.send_batch(&self.producer, &batch, None)?;
        self.producer.poll(Duration::ZERO);
        JobMetrics::add(&self.metrics.records_out, n as u64);
        self.producer.context().check(&self.target.topic)
    }

    fn on_barrier(&mut self, _barrier: &Barrier, _state: &mut StateWriter) -> Result<()> {
        if self.guarantee == DeliveryGuarantee::AtLeastOnce {
            self.flush()?;
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> Result<()> {
        self.flush()
    }

    fn name(&self) -> String {
        format!("KafkaSink({})", self.target.topic)
    }
}

pub(super) fn create(ctx: &SinkContext<'_>) -> Result<Vec<Box<dyn Operator>>> {
    let o = KafkaSinkOptions::parse(ctx.options, &ctx.schema)?;
    if o.guarantee == DeliveryGuarantee::ExactlyOnce {
        return Err(ctx.options.error(
            "sink.delivery-guarantee",
            "'exactly-once' into Kafka needs a Kafka source (the output joins the \
             transaction of the input offsets); use 'at-least-once' here",
        ));
    }
    (0..ctx.parallelism.max(1))
        .map(|subtask| {
            let mut config = o.properties.client_config();
            if o.partitioner == Partitioner::Default {
                config.set("partitioner", "murmur2_random");
            }
            if o.guarantee == DeliveryGuarantee::AtLeastOnce {
                config.set("enable.idempotence", "true");
            }
            let producer: BaseProducer<Deliveries> = config
                .create_with_context(Deliveries::default())
                .map_err(|e| {
                    ctx.options
                        .error("properties.bootstrap.servers", e.to_string())
                })?;
            let target = OutputTarget::new(&o, &producer, subtask as i32)?;
            Ok(Box::new(KafkaSink {
                producer,
                target,
                guarantee: o.guarantee,
                metrics: ctx.metrics.clone(),
            }) as Box<dyn Operator>)
        })
        .collect()
}
