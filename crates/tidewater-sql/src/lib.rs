//! # tidewater-sql — Flink SQL job files to dataflows
//!
//! Layout:
//! - [`dialect`]: sqlparser's generic dialect plus Flink's `TABLE t [PARTITION BY ..]`
//!   argument of window table-valued functions.
//! - [`parse`]: a job file → `SET`s, `CREATE TABLE`s and one `INSERT INTO`. Flink's DDL
//!   (computed columns, `WATERMARK FOR`, `WITH ('k' = 'v')`) is assembled from
//!   sqlparser's own parser primitives.
//! - [`types`]: Flink SQL types ↔ Arrow types.
//! - [`exprs`]: scalar expressions through DataFusion (SQL → logical → coerced →
//!   physical), plus Flink's `TO_TIMESTAMP_LTZ`.
//! - [`planner`]: the `INSERT`'s query → a [`Plan`]: stateless filter/project, or a
//!   window TVF aggregation with slicing; and the [`Dataflow`](tidewater_runtime::Dataflow)
//!   that runs it.
//! - [`operators`]: the expression operators (filter, project) the plans chain.
//! - [`builder`]: [`JobBuilder`](builder::JobBuilder), the same windowed plan built in code.
//!
//! Errors carry the line and column in the job file and say what is supported instead.

pub mod builder;
pub mod dialect;
pub mod exprs;
pub mod operators;
pub mod parse;
pub mod planner;
pub mod types;

pub use parse::{JobFile, parse_job};
pub use planner::{CheckpointSettings, Plan, PlanOptions, SourceTable, parse_duration, plan_job};
