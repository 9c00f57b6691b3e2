//! Repartitioning: input not keyed by the grouping key reaches the window tasks through
//! an internal topic — pure parts (names, layout, record format, the commit test).
//!
//! Two kinds of task run then. An *input task* per input partition `i` decodes, runs the
//! source stage (computed columns, watermark, filter, projection) and writes each row to
//! the window task `q` its grouping key hashes to; a *window task* per `q` runs the window
//! stage. The data topic `<group>-<topic>-repartition` has one partition per (input
//! task, window task) pair, `q * inputs + i`, so that no two input tasks' transactions
//! ever write one partition (the test broker loses committed offsets when they do, see
//! docs/kafka-testing.md) and a window task can hold back one input task's records
//! without holding the others. Window task `q` is owned by whoever the group assigns
//! partition `q` of the never-written `<group>-<topic>-repartition-tasks`.
//!
//! Records carry their writer's generation and checkpoint in the key; the value is
//! Arrow IPC (rows) or a watermark. A window task applies a record only once the
//! input task's transaction holding it is known committed — read from the group's
//! committed offsets, the same commit chain restore uses — because some brokers show
//! records of aborted transactions even to read_committed consumers. See [`status`].

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use tidewater_core::key::{hash_columns, key_group, subtask_for_key_group};
use tidewater_core::{Error, Result};
use tidewater_state::encode::{decode_batches, encode_batches};

use super::changelog::Mark as Head;

/// Generations a manifest lists before its own (`Mark::lineage`).
pub(crate) const LINEAGE: usize = 64;

/// The data topic of input topic `topic` in group `group`.
pub(crate) fn data_topic(group: &str, topic: &str) -> String {
    format!("{group}-{topic}-repartition")
}

/// The topic whose assignment decides who runs which window task.
pub(crate) fn tasks_topic(group: &str, topic: &str) -> String {
    format!("{}-tasks", data_topic(group, topic))
}

/// The changelog of the window tasks.
pub(crate) fn window_changelog(group: &str, topic: &str) -> String {
    format!("{}-changelog", data_topic(group, topic))
}

/// How many input and window tasks there are, and where their records meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Input partitions.
    pub inputs: i32,
    /// Window tasks: as many as input partitions, at most the key groups.
    pub windows: i32,
}

impl Layout {
    pub(crate) fn new(inputs: i32) -> Self {
        let cap = tidewater_core::key::KEY_GROUPS as i32;
        Self {
            inputs,
            windows: inputs.clamp(1, cap),
        }
    }

    /// Partitions of the data topic.
    pub(crate) fn data_partitions(&self) -> i32 {
        self.inputs * self.windows
    }

    /// The data partition input task `input` writes for window task `window`.
    pub(crate) fn data_partition(&self, input: i32, window: i32) -> i32 {
        window * self.inputs + input
    }
}

/// What a data-topic record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Rows, as Arrow IPC with this CRC-32.
    Rows { crc: u32 },
    /// The input task's watermark at a commit.
    Watermark,
}

/// A data-topic record's key: `r|<generation>|<checkpoint>|<crc>` or
/// `w|<generation>|<checkpoint>`.
pub(crate) fn record_key(kind: Kind, generation: &str, checkpoint: u64) -> String {
    match kind {
        Kind::Rows { crc } => format!("r|{generation}|{checkpoint}|{crc}"),
        Kind::Watermark => format!("w|{generation}|{checkpoint}"),
    }
}

/// Parses [`record_key`].
pub(crate) fn parse_key(key: &[u8]) -> Option<(Kind, &str, u64)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.split('|');
    let kind = parts.next()?;
    let generation = parts.next()?;
    let checkpoint = parts.next()?.parse().ok()?;
    let kind = match kind {
        "r" => Kind::Rows {
            crc: parts.next()?.parse().ok()?,
        },
        "w" => Kind::Watermark,
        _ => return None,
    };
    parts
        .next()
        .is_none()
        .then_some((kind, generation, checkpoint))
}

/// An input task's watermark as a window task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputWatermark {
    /// Epoch milliseconds (`i64::MIN`: none yet).
    pub millis: i64,
    /// No input for 'scan.watermark.idle-timeout': the input holds nothing back.
    pub idle: bool,
}

impl InputWatermark {
    pub(crate) fn encode(&self) -> String {
        format!("{}|{}", self.millis, u8::from(self.idle))
    }

    pub(crate) fn decode(value: &[u8]) -> Option<Self> {
        let (millis, idle) = std::str::from_utf8(value).ok()?.split_once('|')?;
        Some(Self {
            millis: millis.parse().ok()?,
            idle: match idle {
                "0" => false,
                "1" => true,
                _ => return None,
            },
        })
    }
}

/// The watermark of a window task: the minimum over the inputs that are not idle; `None`
/// while an input has said nothing yet or when every one is idle (nothing advances).
pub(crate) fn combined_watermark(inputs: &[Option<InputWatermark>]) -> Option<i64> {
    let mut min: Option<i64> = None;
    for w in inputs {
        let w = (*w)?;
        if !w.idle {
            min = Some(min.map_or(w.millis, |m| m.min(w.millis)));
        }
    }
    min
}

/// Splits an input task's output rows by the window task their grouping key (columns
/// `keys`) belongs to, encoded as Arrow IPC: `(window task, crc, bytes)`.
pub(crate) fn split_rows(
    batch: &RecordBatch,
    keys: &[usize],
    layout: Layout,
    hashes: &mut Vec<u64>,
) -> Result<Vec<(i32, u32, Vec<u8>)>> {
    let rows = batch.num_rows();
    let columns = keys
        .iter()
        .map(|k| {
            batch.columns().get(*k).cloned().ok_or_else(|| {
                Error::runtime(format!("repartition: no key column {k} in the rows"))
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    hash_columns(&columns, rows, hashes)?;
    let windows = layout.windows as usize;
    let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); windows];
    for (row, h) in hashes.iter().enumerate() {
        let q = subtask_for_key_group(key_group(*h), windows);
        if let Some(v) = rows_of.get_mut(q) {
            v.push(row as u32);
        }
    }
    let mut out = Vec::new();
    for (q, rows) in rows_of.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let part = if rows.len() == batch.num_rows() {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(rows))?
        };
        if let Some((bytes, crc)) = encode_batches(&[part])? {
            out.push((q as i32, crc, bytes));
        }
    }
    Ok(out)
}

/// Decodes a rows record.
pub(crate) fn decode_rows(value: &[u8], crc: u32) -> Result<Vec<RecordBatch>> {
    decode_batches(value, value.len() as u64, crc)
        .map_err(|e| Error::runtime(format!("repartition record: {e}")))
}

/// Whether a record of an input task's transaction may be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Its transaction committed.
    Committed,
    /// Its transaction was aborted (or its attempt was replaced): skip it.
    Aborted,
    /// Not decided yet: its transaction may still commit. Hold the partition here.
    Open,
}

/// The generation counter: a generation is `<counter>.<unique>`, the counter one more
/// than that of the generation it restored from, so along a commit chain the counters
/// are 1, 2, 3, ... and an attempt that never committed has a counter no larger than
/// the next committed one.
pub(crate) fn counter(generation: &str) -> u64 {
    generation
        .split_once('.')
        .and_then(|(c, _)| c.parse().ok())
        .unwrap_or(0)
}

/// Decides a record of (`generation`, `checkpoint`) given the input task's committed
/// head (`None`: it never committed).
///
/// Within a generation checkpoints commit in order, and a failed commit ends the
/// generation; the next attempt restores the head and gets the next counter. So a
/// record is committed iff its generation is on the chain and its checkpoint is at
/// most the last one that generation committed; a generation off the chain whose
/// counter the chain has reached can never commit; a newer one may.
pub(crate) fn status(head: Option<&Head>, generation: &str, checkpoint: u64) -> Result<Status> {
    let Some(head) = head else {
        return Ok(Status::Open);
    };
    let decide = |last: u64| {
        if checkpoint <= last {
            Status::Committed
        } else {
            Status::Aborted
        }
    };
    if generation == head.generation {
        return Ok(if checkpoint <= head.n {
            Status::Committed
        } else {
            Status::Open
        });
    }
    if let Some((_, last)) = head.lineage.iter().find(|(g, _)| g == generation) {
        return Ok(decide(*last));
    }
    let (c, head_c) = (counter(generation), counter(&head.generation));
    if c > head_c {
        return Ok(Status::Open);
    }
    let oldest = head.lineage.first().map_or(head_c, |(g, _)| counter(g));
    if c < oldest && head.lineage.len() >= LINEAGE {
        return Err(Error::runtime(format!(
            "a record of generation {generation} is older than the {LINEAGE} generations \
             the input task's manifest lists: cannot tell whether it committed"
        )));
    }
    Ok(Status::Aborted)
}

/// The lineage a new generation writes: its head's, plus the head, the oldest dropped.
pub(crate) fn next_lineage(head: &Head) -> Vec<(String, u64)> {
    let mut l = head.lineage.clone();
    l.push((head.generation.clone(), head.n));
    let excess = l.len().saturating_sub(LINEAGE);
    l.drain(..excess);
    l
}

/// `g/n;g/n;...`
pub(crate) fn lineage_header(lineage: &[(String, u64)]) -> String {
    lineage
        .iter()
        .map(|(g, n)| format!("{g}/{n}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses [`lineage_header`] (garbage entries are dropped).
pub(crate) fn parse_lineage(v: &str) -> Vec<(String, u64)> {
    v.split(';')
        .filter_map(|e| {
            let (g, n) = e.rsplit_once('/')?;
            Some((g.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn head(g: &str, n: u64, lineage: &[(&str, u64)]) -> Head {
        Head {
            generation: g.into(),
            n,
            from: None,
            lineage: lineage.iter().map(|(g, n)| (g.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn keys_round_trip_and_garbage_is_refused() {
        let k = record_key(Kind::Rows { crc: 7 }, "3.ab", 12);
        assert_eq!(
            parse_key(k.as_bytes()),
            Some((Kind::Rows { crc: 7 }, "3.ab", 12))
        );
        let k = record_key(Kind::Watermark, "1.x", 2);
        assert_eq!(parse_key(k.as_bytes()), Some((Kind::Watermark, "1.x", 2)));
        for bad in ["", "r|g", "r|g|1", "x|g|1", "w|g|n", "w|g|1|2", "r|g|1|c"] {
            assert_eq!(parse_key(bad.as_bytes()), None, "{bad}");
        }
        let w = InputWatermark {
            millis: -5,
            idle: true,
        };
        assert_eq!(InputWatermark::decode(w.encode().as_bytes()), Some(w));
        assert_eq!(InputWatermark::decode(b"12|2"), None);
    }

    #[test]
    fn combined_watermark_waits_for_every_input_and_skips_idle_ones() {
        let w = |millis, idle| Some(InputWatermark { millis, idle });
        assert_eq!(combined_watermark(&[w(5, false), None]), None);
        assert_eq!(combined_watermark(&[w(5, false), w(3, false)]), Some(3));
        assert_eq!(combined_watermark(&[w(5, false), w(3, true)]), Some(5));
        assert_eq!(combined_watermark(&[w(5, true), w(3, true)]), None);
    }

    #[test]
    fn status_follows_the_commit_chain() {
        // Chain: 1.a committed up to 4, then 2.c (1.b died uncommitted) up to 6 (head).
        let h = head("2.c", 6, &[("1.a", 4)]);
        let s = |g, n| status(Some(&h), g, n).expect("decided");
        assert_eq!(s("2.c", 6), Status::Committed);
        assert_eq!(s("2.c", 7), Status::Open, "the head's open transaction");
        assert_eq!(s("1.a", 4), Status::Committed);
        assert_eq!(s("1.a", 5), Status::Aborted, "after the last commit of 1.a");
        assert_eq!(
            s("1.b", 1),
            Status::Aborted,
            "an attempt the chain passed by"
        );
        assert_eq!(s("3.d", 1), Status::Open, "a newer attempt may commit");
        assert_eq!(status(None, "1.a", 1).expect("open"), Status::Open);
    }

    #[test]
    fn lineage_is_bounded_and_an_older_generation_is_an_error() {
        let mut h = head("1.a", 1, &[]);
        for c in 2..=(LINEAGE as u64 + 10) {
            h = Head {
                lineage: next_lineage(&h),
                generation: format!("{c}.g"),
                n: 1,
                from: None,
            };
        }
        assert_eq!(h.lineage.len(), LINEAGE);
        assert_eq!(parse_lineage(&lineage_header(&h.lineage)), h.lineage);
        assert!(status(Some(&h), "1.a", 1).is_err());
        assert_eq!(
            status(Some(&h), &format!("{}.g", LINEAGE), 1).expect("listed"),
            Status::Committed
        );
    }

    #[test]
    fn rows_split_by_key_and_every_key_goes_to_one_window_task() {
        let keys: Vec<String> = (0..500).map(|i| format!("k{}", i % 50)).collect();
        let b = RecordBatch::try_from_iter([
            ("key", Arc::new(StringArray::from(keys.clone())) as ArrayRef),
            (
                "v",
                Arc::new(Int64Array::from_iter_values(0..500)) as ArrayRef,
            ),
        ])
        .expect("batch");
        let layout = Layout::new(4);
        let mut hashes = Vec::new();
        let parts = split_rows(&b, &[0], layout, &mut hashes).expect("split");
        let mut seen: std::collections::HashMap<String, i32> = Default::default();
        let mut rows = 0;
        for (q, crc, bytes) in parts {
            for batch in decode_rows(&bytes, crc).expect("decode") {
                rows += batch.num_rows();
                let k = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("s");
                for key in k.iter().flatten() {
                    assert_eq!(*seen.entry(key.to_string()).or_insert(q), q, "{key}");
                }
            }
        }
        assert_eq!(rows, 500);
        assert!(
            seen.values()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1
        );
        assert_eq!(layout.data_partition(3, 2), 11);
    }
}
