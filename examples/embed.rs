//! Embedding Tidewater: the same windowed job from SQL and built in code.
//!
//!     cargo run --release --example embed

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::print_batches;
use tidewater::window::{AggKind, WindowSpec};
use tidewater::{Job, JobBuilder, JobOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A job file, planned and run in-process.
    let job = Job::from_file(
        "examples/tumbling_count.sql",
        &JobOptions {
            parallelism: Some(2),
            ..Default::default()
        },
    )?;
    println!("{}", job.explain());
    let report = job.run()?;
    println!(
        "SQL job: {} events in, {} results out\n",
        report.metrics.records_in, report.metrics.records_out
    );

    // 2. The same kind of plan built in code, over in-memory Arrow batches.
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, true),
        Field::new("clicks", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["ann", "bob", "ann", "ann", "bob"])),
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(TimestampMillisecondArray::from(vec![
                0, 900, 1_500, 2_500, 4_000,
            ])),
        ],
    )?;
    let results = tidewater::connectors::memory::Collected::default();
    let plan = JobBuilder::new()
        .parallelism(2)
        .source_batches(schema, vec![batch])
        .event_time("ts", 500)
        .key("user")
        .window(WindowSpec::Hop {
            size: 2_000,
            slide: 1_000,
        })
        .aggregate(AggKind::Sum, Some("clicks"))
        .aggregate(AggKind::CountStar, None)
        .collect_into(&results)
        .build()?;
    let report = Job::from_plan(plan).run()?;
    println!("built in code: {} results", report.metrics.records_out);
    let batches = results.lock().map_err(|_| "poisoned")?.clone();
    print_batches(&batches)?;
    Ok(())
}
