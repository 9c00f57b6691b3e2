//! The datagen reader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Error, Result};
use tidewater_runtime::SourceReader;

use crate::TableOptions;
use crate::registry::SourceContext;

#[derive(Debug, Clone)]
enum Gen {
    Sequence { start: i64 },
    Int { min: i64, max: i64 },
    Float { min: f64, max: f64 },
    Str { length: usize },
    Bool,
}

/// One subtask of the datagen source.
#[derive(Debug)]
pub struct DatagenSource {
    schema: SchemaRef,
    gens: Vec<Gen>,
    rng: SmallRng,
    subtask: u64,
    parallelism: u64,
    block: u64,
    next_block: u64,
    total: Option<u64>,
    rate_per_subtask: f64,
    started: Option<Instant>,
    emitted: u64,
    metrics: Arc<JobMetrics>,
}

impl DatagenSource {
    fn column(&mut self, g: &Gen, first: u64, n: usize, target: &DataType) -> Result<ArrayRef> {
        let rng = &mut self.rng;
        let arr: ArrayRef = match g {
            Gen::Sequence { start } => {
                let v: Int64Array = (0..n as i64)
                    .map(|i| start.wrapping_add(first as i64 + i))
                    .collect();
                if target == &DataType::Utf8 {
                    Arc::new(
                        v.iter()
                            .map(|x| x.map(|x| x.to_string()))
                            .collect::<StringArray>(),
                    )
                } else {
                    Arc::new(v)
                }
            }
            Gen::Int { min, max } => Arc::new(
                (0..n)
                    .map(|_| rng.random_range(*min..=*max))
                    .collect::<Int64Array>(),
            ),
            Gen::Float { min, max } => Arc::new(
                (0..n)
                    .map(|_| min + rng.random::<f64>() * (max - min))
                    .collect::<Float64Array>(),
            ),
            Gen::Str { length } => Arc::new(
                (0..n)
                    .map(|_| {
                        (0..*length)
                            .map(|_| {
                                char::from(
                                    b"abcdefghijklmnopqrstuvwxyz0123456789"
                                        [rng.random_range(0..36)],
                                )
                            })
                            .collect::<String>()
                    })
                    .map(Some)
                    .collect::<StringArray>(),
            ),
            Gen::Bool => Arc::new(
                (0..n)
                    .map(|_| Some(rng.random::<bool>()))
                    .collect::<BooleanArray>(),
            ),
        };
        Ok(if arr.data_type() == target {
            arr
        } else {
            cast(&arr, target)?
        })
    }
}

impl SourceReader for DatagenSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let first = (self.next_block * self.parallelism + self.subtask) * self.block;
        let n = match self.total {
            Some(t) if first >= t => return Ok(None),
            Some(t) => (t - first).min(self.block),
            None => self.block,
        } as usize;
        // Each block draws from its own seed, so a resumed run regenerates exactly the
        // rows an uninterrupted one would have.
        let global_block = self.next_block * self.parallelism + self.subtask;
        self.rng = SmallRng::seed_from_u64(
            0x7469_6465_u64 ^ global_block.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        self.next_block += 1;
        let started = *self.started.get_or_insert_with(Instant::now);
        let gens = self.gens.clone();
        let schema = self.schema.clone();
        let cols = gens
            .iter()
            .zip(schema.fields())
            .map(|(g, f)| self.column(g, first, n, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        self.emitted += n as u64;
        JobMetrics::add(&self.metrics.records_in, n as u64);
        // Pace to the configured rate (a rate limit, not synchronisation).
        let due = started + Duration::from_secs_f64(self.emitted as f64 / self.rate_per_subtask);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Ok(Some(RecordBatch::try_new(schema, cols)?))
    }

    fn replayable(&self) -> bool {
        true
    }

    fn snapshot(&mut self, _epoch: u64) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "next_block": self.next_block, "rows_per_block": self.block }))
    }

    fn restore(&mut self, positions: &[serde_json::Value]) -> Result<()> {
        if positions.len() as u64 != self.parallelism {
            return Err(Error::Checkpoint(format!(
                "the datagen source ran with parallelism {} in the checkpoint and has {} now; \
                 its positions cannot be split differently: use the old parallelism or \
                 --from-scratch",
                positions.len(),
                self.parallelism
            )));
        }
        let pos = &positions[self.subtask as usize];
        let (Some(next), Some(block)) =
            (pos["next_block"].as_u64(), pos["rows_per_block"].as_u64())
        else {
            return Err(Error::Checkpoint(format!(
                "datagen: unreadable position {pos}"
            )));
        };
        if block != self.block {
            return Err(Error::Checkpoint(format!(
                "datagen: 'rows-per-second' changed since the checkpoint (blocks of {block} rows, now {}); use the old rate or --from-scratch",
                self.block
            )));
        }
        self.next_block = next;
        Ok(())
    }
}

fn field_gen(o: &TableOptions, name: &str, ty: &DataType) -> Result<(Gen, Option<u64>)> {
    let key = |s: &str| format!("fields.{name}.{s}");
    let kind = o.choice_or(&key("kind"), &["random", "sequence"], "random")?;
    if kind == "sequence" {
        let start: i64 = o.parse_or(&key("start"), 0)?;
        let end: Option<i64> = match o.get(&key("end")) {
            Some(_) => Some(o.parse_or(&key("end"), 0)?),
            None => None,
        };
        if let Some(end) = end.filter(|e| *e < start) {
            return Err(o.error(&key("end"), format!("end {end} is before start {start}")));
        }
        let rows = match end {
            None => None,
            Some(e) => Some(
                u64::try_from(i128::from(e) - i128::from(start) + 1)
                    .map_err(|_| o.error(&key("end"), "the sequence is longer than 2^64 rows"))?,
            ),
        };
        return Ok((Gen::Sequence { start }, rows));
    }
    let g = match ty {
        DataType::Utf8 => Gen::Str {
            length: o.parse_or(&key("length"), 100)?,
        },
        DataType::Boolean => Gen::Bool,
        DataType::Float32 | DataType::Float64 => {
            let (min, max) = (
                o.parse_or(&key("min"), 0.0)?,
                o.parse_or(&key("max"), 1000.0)?,
            );
            if max < min {
                return Err(o.error(&key("max"), format!("max {max} is below min {min}")));
            }
            Gen::Float { min, max }
        }
        _ => {
            let (min, max) = (
                o.parse_or(&key("min"), 0i64)?,
                o.parse_or(&key("max"), 1000i64)?,
            );
            if max < min {
                return Err(o.error(&key("max"), format!("max {max} is below min {min}")));
            }
            Gen::Int { min, max }
        }
    };
    Ok((g, None))
}

pub(super) fn create(ctx: &SourceContext<'_>) -> Result<Vec<Box<dyn SourceReader>>> {
    let o = ctx.options;
    let names: Vec<&str> = ctx
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    for key in o.keys().filter(|k| k.starts_with("fields.")) {
        let field = key["fields.".len()..].split('.').next().unwrap_or("");
        if !names.contains(&field) {
            return Err(o.error(
                key,
                format!(
                    "the table has no column '{field}'; columns: {}",
                    names.join(", ")
                ),
            ));
        }
    }
    let mut gens = Vec::new();
    let mut total: Option<u64> = match o.get("number-of-rows") {
        Some(_) => Some(o.parse_or("number-of-rows", 0u64)?),
        None => None,
    };
    for f in ctx.schema.fields() {
        let (g, bound) = field_gen(o, f.name(), f.data_type())?;
        if let Some(b) = bound {
            total = Some(total.map_or(b, |t| t.min(b)));
        }
        gens.push(g);
    }
    let rate: f64 = o.parse_or("rows-per-second", 10_000.0)?;
    if !rate.is_finite() || rate < 0.001 {
        return Err(o.error(
            "rows-per-second",
            format!(
                "must be a number of at least 0.001, got '{}'",
                o.get("rows-per-second").unwrap_or_default()
            ),
        ));
    }
    let p = ctx.parallelism.max(1) as u64;
    let per = rate / p as f64;
    let block = ((per / 20.0) as u64).clamp(1, 8192);
    Ok((0..p)
        .map(|i| {
            Box::new(DatagenSource {
                schema: ctx.schema.clone(),
                gens: gens.clone(),
                rng: SmallRng::seed_from_u64(0x7469_6465 ^ i),
                subtask: i,
                parallelism: p,
                block,
                next_block: 0,
                total,
                rate_per_subtask: per,
                started: None,
                emitted: 0,
                metrics: ctx.metrics.clone(),
            }) as Box<dyn SourceReader>
        })
        .collect())
}
