//! A task's state on its changelog partition, and how the committed snapshot is found.
//!
//! Every checkpoint writes a whole snapshot of the task (a `manifest` record, then each
//! operator's Arrow IPC state in chunks) inside the task's transaction, next to its
//! output and its input offset. The same transaction commits, besides the input offset,
//! an offset for the task's *changelog* partition: the offset of that manifest. Restore
//! reads the manifest there and exactly the records of its generation and checkpoint,
//! ignoring everything else — in particular records of aborted transactions, which some
//! brokers show even to read_committed consumers. A generation is unique per task
//! attempt, so a zombie's records never mix with the committed snapshot. (Offset
//! metadata would be the natural place for such a pointer, but not every
//! Kafka-compatible broker keeps it; a committed offset every broker keeps.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tidewater_core::{Error, Result};
use tidewater_state::encode::{decode_batches, encode_batches};

/// Header names on output and changelog records.
pub(crate) const H_TASK: &str = "tidewater.task";
pub(crate) const H_GEN: &str = "tidewater.generation";
pub(crate) const H_CHECKPOINT: &str = "tidewater.checkpoint";
pub(crate) const H_FROM: &str = "tidewater.from";
const H_OP: &str = "tidewater.op";
const H_CHUNK: &str = "tidewater.chunk";
const H_CHUNKS: &str = "tidewater.chunks";
const H_LEN: &str = "tidewater.len";
const H_CRC: &str = "tidewater.crc";
const H_RECORDS: &str = "tidewater.records";
/// On manifests: `Mark::lineage`.
pub(crate) const H_LINEAGE: &str = "tidewater.lineage";

/// Chunks stay well under the default 1 MiB message limit.
const CHUNK_BYTES: usize = 512 << 10;

/// The changelog topic of input topic `topic` for consumer group `group`.
pub(crate) fn changelog_topic(group: &str, topic: &str) -> String {
    format!("{group}-{topic}-changelog")
}

/// Which snapshot a task restored, as its manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The generation that wrote (and committed) it.
    pub generation: String,
    /// The checkpoint.
    pub n: u64,
    /// The snapshot that generation had restored (`None`: it started empty).
    pub from: Option<(String, u64)>,
    /// The generations of the commit chain before this one, oldest first, each with the
    /// last checkpoint it committed (at most `repartition::LINEAGE`).
    pub lineage: Vec<(String, u64)>,
}

/// Parses a `tidewater.from` header value.
fn parse_from(v: &str) -> Option<(String, u64)> {
    let (g, n) = v.rsplit_once('/')?;
    Some((g.to_string(), n.parse().ok()?))
}

/// The `tidewater.from` header value.
pub(crate) fn from_header(from: Option<&(String, u64)>) -> String {
    from.map(|(g, n)| format!("{g}/{n}")).unwrap_or_default()
}

/// One changelog record to produce.
#[derive(Debug)]
pub(crate) struct SnapshotRecord {
    pub key: String,
    pub value: Vec<u8>,
    /// Headers besides the task's four (task, generation, checkpoint, from).
    pub headers: Vec<(&'static str, String)>,
}

/// The records of one snapshot: the manifest first, then each operator's state in
/// chunks.
pub(crate) fn snapshot_records(states: &[Vec<RecordBatch>]) -> Result<Vec<SnapshotRecord>> {
    let mut records = Vec::new();
    for (op, batches) in states.iter().enumerate() {
        let Some((bytes, crc)) = encode_batches(batches)? else {
            continue;
        };
        let chunks = bytes.len().div_ceil(CHUNK_BYTES);
        for (c, piece) in bytes.chunks(CHUNK_BYTES).enumerate() {
            records.push(SnapshotRecord {
                key: format!("op{op}/{c}"),
                value: piece.to_vec(),
                headers: vec![
                    (H_OP, op.to_string()),
                    (H_CHUNK, c.to_string()),
                    (H_CHUNKS, chunks.to_string()),
                    (H_LEN, bytes.len().to_string()),
                    (H_CRC, crc.to_string()),
                ],
            });
        }
    }
    let total = records.len() + 1;
    let manifest = SnapshotRecord {
        key: "manifest".into(),
        value: json!({ "operators": states.len(), "records": total })
            .to_string()
            .into_bytes(),
        headers: vec![(H_RECORDS, total.to_string())],
    };
    records.insert(0, manifest);
    Ok(records)
}

/// A changelog record as read back: its headers and value.
#[derive(Debug)]
struct ReadRecord {
    headers: BTreeMap<String, String>,
    value: Vec<u8>,
}

fn headers_of(m: &rdkafka::message::BorrowedMessage<'_>) -> BTreeMap<String, String> {
    m.headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| {
                    Some((
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value?).into_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A manifest's mark and record count.
fn parse_manifest(headers: &BTreeMap<String, String>) -> Option<(Mark, u64)> {
    let num = |h: &str| headers.get(h).and_then(|v| v.parse::<u64>().ok());
    let (generation, n, count) = (headers.get(H_GEN)?, num(H_CHECKPOINT)?, num(H_RECORDS)?);
    let mark = Mark {
        generation: generation.clone(),
        n,
        from: headers.get(H_FROM).and_then(|v| parse_from(v)),
        lineage: headers
            .get(H_LINEAGE)
            .map(|v| super::repartition::parse_lineage(v))
            .unwrap_or_default(),
    };
    Some((mark, count))
}

/// Points `reader` at `offset` of `topic`/`partition` (and nothing else).
fn read_from(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> std::result::Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| e.to_string())?;
    reader.assign(&tpl).map_err(|e| format!("cannot read: {e}"))
}

/// Reads only the mark of the manifest at `manifest` (what a window task needs to know
/// which of an input task's records committed).
pub(crate) fn read_mark(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    manifest: i64,
    timeout: Duration,
) -> Result<Mark> {
    let damaged = |why: String| Error::runtime(format!("changelog {topic}/{partition}: {why}"));
    read_from(reader, topic, partition, manifest).map_err(damaged)?;
    let deadline = Instant::now() + timeout;
    let found = loop {
        if Instant::now() > deadline {
            break Err(damaged(format!(
                "no manifest at offset {manifest} after {timeout:?}"
            )));
        }
        let Some(m) = reader.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(|e| damaged(format!("cannot read: {e}")))?;
        if m.offset() != manifest || m.key() != Some(b"manifest".as_slice()) {
            break Err(damaged(format!(
                "offset {manifest} holds no snapshot manifest (found offset {})",
                m.offset()
            )));
        }
        break parse_manifest(&headers_of(&m))
            .map(|(mark, _)| mark)
            .ok_or_else(|| damaged(format!("the manifest at {manifest} lacks headers")));
    };
    let _ = reader.unassign();
    found
}

/// Reads the snapshot whose manifest is at `manifest` on partition `partition` of
/// `topic` and returns what it is and the state of each of `operators` operators.
pub(crate) fn read_snapshot(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    manifest: i64,
    operators: usize,
    timeout: Duration,
) -> Result<(Mark, Vec<Vec<RecordBatch>>)> {
    let damaged = |why: String| Error::runtime(format!("changelog {topic}/{partition}: {why}"));
    read_from(reader, topic, partition, manifest).map_err(damaged)?;
    let deadline = Instant::now() + timeout;
    let mut mark: Option<(Mark, u64)> = None;
    let mut found = Vec::new();
    loop {
        if let Some((_, count)) = &mark
            && found.len() as u64 + 1 >= *count
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(damaged(format!(
                "the snapshot at offset {manifest} is incomplete after {timeout:?}: {} state \
                 records found{}",
                found.len(),
                mark.as_ref()
                    .map(|(_, c)| format!(" of {}", c.saturating_sub(1)))
                    .unwrap_or_default()
            )));
        }
        let Some(m) = reader.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(|e| damaged(format!("cannot read: {e}")))?;
        let headers = headers_of(&m);
        match &mark {
            None => {
                if m.offset() != manifest || m.key() != Some(b"manifest".as_slice()) {
                    return Err(damaged(format!(
                        "offset {manifest} holds no snapshot manifest (found offset {})",
                        m.offset()
                    )));
                }
                mark =
                    Some(parse_manifest(&headers).ok_or_else(|| {
                        damaged(format!("the manifest at {manifest} lacks headers"))
                    })?);
            }
            Some((mk, _)) => {
                if headers.get(H_GEN) == Some(&mk.generation)
                    && headers.get(H_CHECKPOINT) == Some(&mk.n.to_string())
                {
                    found.push(ReadRecord {
                        headers,
                        value: m.payload().unwrap_or_default().to_vec(),
                    });
                }
            }
        }
    }
    let _ = reader.unassign();
    let Some((mark, _)) = mark else {
        return Err(damaged(format!("no manifest at offset {manifest}")));
    };
    Ok((mark, assemble(found, operators, topic, partition)?))
}

/// Joins each operator's chunks and decodes them, checking length and CRC.
fn assemble(
    records: Vec<ReadRecord>,
    operators: usize,
    topic: &str,
    partition: i32,
) -> Result<Vec<Vec<RecordBatch>>> {
    let damaged = |why: String| Error::runtime(format!("changelog {topic}/{partition}: {why}"));
    let num = |r: &ReadRecord, h: &str| -> Result<u64> {
        r.headers
            .get(h)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| damaged(format!("a state record lacks header {h}")))
    };
    let mut pieces: BTreeMap<usize, BTreeMap<u64, ReadRecord>> = BTreeMap::new();
    for r in records {
        if r.headers.contains_key(H_OP) {
            let op = usize::try_from(num(&r, H_OP)?).map_err(|e| damaged(e.to_string()))?;
            let chunk = num(&r, H_CHUNK)?;
            pieces.entry(op).or_default().insert(chunk, r);
        }
    }
    let mut states = vec![Vec::new(); operators];
    for (op, chunks) in pieces {
        let slot = states
            .get_mut(op)
            .ok_or_else(|| damaged(format!("state of operator {op}, the chain has {operators}")))?;
        let Some(first) = chunks.values().next() else {
            continue;
        };
        let (expected, len, crc) = (
            num(first, H_CHUNKS)?,
            num(first, H_LEN)?,
            num(first, H_CRC)?,
        );
        if chunks.len() as u64 != expected {
            return Err(damaged(format!(
                "operator {op}: {} of {expected} chunks",
                chunks.len()
            )));
        }
        let bytes: Vec<u8> = chunks.into_values().flat_map(|r| r.value).collect();
        let crc = u32::try_from(crc).map_err(|e| damaged(e.to_string()))?;
        *slot =
            decode_batches(&bytes, len, crc).map_err(|e| damaged(format!("operator {op}: {e}")))?;
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_headers_round_trip_and_garbage_is_no_from() {
        let f = ("18eb-1011-7b86".to_string(), 12);
        assert_eq!(parse_from(&from_header(Some(&f))), Some(f));
        assert_eq!(parse_from(&from_header(None)), None);
        assert_eq!(parse_from("x/y"), None);
    }

    #[test]
    fn a_snapshot_starts_with_its_manifest_counting_every_record() {
        use arrow::array::Int64Array;
        use std::sync::Arc;
        let big: Vec<i64> = (0..200_000).collect();
        let b = RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from(big)) as arrow::array::ArrayRef,
        )])
        .expect("batch");
        let records = snapshot_records(&[vec![], vec![b.clone()]]).expect("encode");
        assert_eq!(records[0].key, "manifest");
        assert_eq!(
            records[0].headers,
            vec![(H_RECORDS, records.len().to_string())]
        );
        assert!(records.len() > 2, "1.6 MB of state is chunked");
        let read: Vec<ReadRecord> = records[1..]
            .iter()
            .map(|r| ReadRecord {
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                value: r.value.clone(),
            })
            .rev()
            .collect();
        let states = assemble(read, 2, "t", 0).expect("assemble");
        assert!(states[0].is_empty());
        assert_eq!(states[1], vec![b]);
    }
}
