//! Judging a Kafka job's output from broker state alone: the commit chain.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::NaiveDateTime;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::broker::{Broker, REQUEST_TIMEOUT, unique_name};
use super::*;

// ---------------------------------------------------------------------------------------
// Reading the broker
// ---------------------------------------------------------------------------------------

/// The tasks that write a job's output and keep their snapshots on one changelog topic:
/// what the [`Watcher`] judges. Marks, chains and committed offsets of a [`Verdict`] are
/// keyed by a task's changelog partition.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The changelog topic of the tasks.
    pub changelog: String,
    /// Task name (header `tidewater.task`) -> its changelog partition.
    pub tasks: BTreeMap<String, i32>,
    /// Whole-partition tasks: the task on changelog partition `p` reads input partition
    /// `p` alone and commits its input offset along with its snapshot. When false
    /// (window tasks of a repartitioned job), no task commits an input offset, and every
    /// key must be emitted by one task only.
    pub whole_partition: bool,
}

impl Judged {
    /// The task on changelog partition `k`, if any.
    pub fn task_on(&self, k: i32) -> Option<&str> {
        self.tasks
            .iter()
            .find(|(_, p)| **p == k)
            .map(|(t, _)| t.as_str())
    }
}

/// The commit mark of one task: the manifest the group's committed offset of
/// `(changelog, p)` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub g: String,
    pub n: u64,
    /// Changelog offset of snapshot `n`'s manifest, and how many records the snapshot
    /// has (manifest included).
    pub offset: i64,
    pub count: u64,
    /// The mark generation `g` restored from; `None`: a fresh start.
    pub from: Option<(String, u64)>,
    /// The committed input offset, if any (whole-partition tasks only).
    pub input_offset: Option<i64>,
}

/// Parses `"<g>/<n>"` (or `""`: none).
pub fn parse_from_header(s: &str) -> Result<Option<(String, u64)>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let (g, n) = s
        .rsplit_once('/')
        .ok_or_else(|| format!("'{s}' is not '<generation>/<checkpoint>'"))?;
    let n = n
        .parse()
        .map_err(|_| format!("'{s}': checkpoint '{n}' is not a number"))?;
    Ok(Some((g.to_string(), n)))
}

/// The four contract headers of a record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub task: String,
    pub generation: String,
    pub checkpoint: u64,
    pub from: String,
}

pub(crate) fn tag_of<M: Message>(m: &M) -> Result<Tag, String> {
    tag_and_records(m).map(|(tag, _)| tag)
}

/// The four contract headers, and `tidewater.records` if present.
fn tag_and_records<M: Message>(m: &M) -> Result<(Tag, Option<u64>), String> {
    let mut found: HashMap<&str, String> = HashMap::new();
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let value = h
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            found.insert(h.key, value);
        }
    }
    let get = |k: &str| {
        found
            .get(k)
            .cloned()
            .ok_or_else(|| format!("no header {k} (headers: {found:?})"))
    };
    let checkpoint = get(H_CHECKPOINT)?;
    let records = match found.get(H_RECORDS) {
        None => None,
        Some(r) => Some(
            r.parse()
                .map_err(|_| format!("header {H_RECORDS} = {r:?} is not a number"))?,
        ),
    };
    let tag = Tag {
        task: get(H_TASK)?,
        generation: get(H_GEN)?,
        checkpoint: checkpoint
            .parse()
            .map_err(|_| format!("header {H_CHECKPOINT} = {checkpoint:?} is not a number"))?,
        from: get(H_FROM)?,
    };
    Ok((tag, records))
}

fn parse_ts(s: &str) -> Result<i64, String> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|e| format!("timestamp {s:?}: {e}"))
}

/// An output record's JSON as a row.
pub fn parse_row(payload: &str) -> Result<Row, String> {
    let v: Value = serde_json::from_str(payload).map_err(|e| format!("not JSON ({e})"))?;
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no string \"{k}\""))
    };
    let i = |k: &str| v[k].as_i64().ok_or_else(|| format!("no integer \"{k}\""));
    Ok((
        s("key")?,
        parse_ts(&s("window_start")?)?,
        parse_ts(&s("window_end")?)?,
        i("total")?,
        i("cnt")?,
    ))
}

/// One visible output record.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub partition: i32,
    pub offset: i64,
    pub tag: Tag,
    pub row: Row,
}

/// One visible changelog record.
#[derive(Debug, Clone)]
pub struct ChangeRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub tag: Tag,
    /// The header `tidewater.records` (manifests have it).
    pub records: Option<u64>,
}

/// The generations of one task, as one link of the chain: `generation` committed the
/// checkpoints in `(lo, hi]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub generation: String,
    pub lo: u64,
    pub hi: u64,
    /// The mark it restored from (`None`: a fresh start).
    pub from: Option<(String, u64)>,
}

/// `"<g>/<n>"`, or `""` for a fresh start: the form of the header `tidewater.from`.
pub fn from_header(from: &Option<(String, u64)>) -> String {
    from.as_ref()
        .map_or(String::new(), |(g, n)| format!("{g}/{n}"))
}

/// Per judged task `p`: the group's committed offsets of (changelog, p) and, for
/// whole-partition tasks, of (input, p).
pub type TaskOffsets = BTreeMap<i32, (Option<i64>, Option<i64>)>;

/// What the broker says at one moment.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Committed output rows, sentinel keys left out.
    pub committed: Vec<Row>,
    /// Committed output records, sentinel keys included, with their tags.
    pub committed_records: Vec<(Tag, Row)>,
    /// Committed rows of sentinel keys.
    pub committed_sentinel: usize,
    /// Visible output records not on the chain, by (task, generation, checkpoint):
    /// aborted attempts (or transactions still open).
    pub others: BTreeMap<(String, String, u64), usize>,
    /// Per judged task (by changelog partition; for whole-partition tasks, the input
    /// partition): checkpoints of the chain's newest generation whose snapshots are on
    /// the changelog beyond its committed mark (transactions aborted, still open, or
    /// whose offsets the broker lost).
    pub beyond_marks: BTreeMap<i32, Vec<u64>>,
    /// Per judged task: the committed mark, if any.
    pub marks: BTreeMap<i32, Mark>,
    /// Per judged task `p`: the group's committed offsets of (changelog, p) and, for
    /// whole-partition tasks, of (input, p).
    pub committed_offsets: TaskOffsets,
    /// Per input partition: the group's committed input offset, whichever tasks read
    /// the input.
    pub input_offsets: BTreeMap<i32, i64>,
    /// Per judged task: the chain, newest generation first.
    pub chains: BTreeMap<i32, Vec<Link>>,
    /// Why a partition's chain cannot be decided yet (records not read yet, or
    /// missing).
    pub pending: Vec<String>,
    /// Contract violations seen.
    pub problems: Vec<String>,
    /// Records read so far.
    pub output_records: usize,
    pub changelog_records: usize,
}

impl Verdict {
    /// One line: committed rows, chain lengths, others, pending.
    pub fn summary(&self) -> String {
        let chains: Vec<String> = self
            .chains
            .iter()
            .map(|(p, c)| {
                let links: Vec<String> = c
                    .iter()
                    .map(|l| format!("{}({},{}]", short(&l.generation), l.lo, l.hi))
                    .collect();
                format!("p{p}: {}", links.join(" <- "))
            })
            .collect();
        format!(
            "{} committed rows (+{} of sentinels), {} other visible records; {} output and {} \
             changelog records read; chains [{}]; pending {:?}; problems {}",
            self.committed.len(),
            self.committed_sentinel,
            self.others.values().sum::<usize>(),
            self.output_records,
            self.changelog_records,
            chains.join("; "),
            self.pending,
            self.problems.len()
        )
    }
}

/// A generation id, shortened for progress lines: its last 8 characters.
pub fn short(g: &str) -> String {
    let chars: Vec<char> = g.chars().collect();
    if chars.len() > 10 {
        format!("..{}", chars[chars.len() - 8..].iter().collect::<String>())
    } else {
        g.to_string()
    }
}

/// Reads the output topic (read_uncommitted: every record written, committed or not),
/// the judged tasks' changelog topic once it exists, and the group's committed offsets.
pub struct Watcher {
    bootstrap: String,
    input: String,
    output: String,
    changelog: String,
    judged: Judged,
    input_partitions: i32,
    output_consumer: BaseConsumer,
    changelog_consumer: Option<BaseConsumer>,
    group_reader: BaseConsumer,
    pub outputs: Vec<OutRecord>,
    pub changes: Vec<ChangeRecord>,
    /// Records that do not follow the contract (bad headers, bad JSON).
    pub malformed: Vec<String>,
    /// Errors the consumers reported.
    pub errors: Vec<String>,
}

impl Watcher {
    pub fn new(broker: &Broker, s: &Scenario) -> Watcher {
        let reader_settings = [
            ("group.id", unique_name("tidewater-test-reader")),
            ("enable.auto.commit", "false".to_string()),
            ("isolation.level", "read_uncommitted".to_string()),
        ];
        let settings: Vec<(&str, &str)> = reader_settings
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let output_consumer = broker.consumer(&settings);
        let mut tpl = TopicPartitionList::new();
        for p in 0..s.output_partitions {
            tpl.add_partition_offset(&s.output, p, Offset::Beginning)
                .unwrap_or_else(|e| panic!("assign output: {e}"));
        }
        output_consumer
            .assign(&tpl)
            .unwrap_or_else(|e| panic!("assign output: {e}"));
        // Never subscribes: it only asks for the group's committed offsets.
        let group_reader =
            broker.consumer(&[("group.id", &s.group), ("enable.auto.commit", "false")]);
        Watcher {
            bootstrap: s.bootstrap.clone(),
            input: s.input.clone(),
            output: s.output.clone(),
            changelog: s.judged().changelog,
            judged: s.judged(),
            input_partitions: s.input_partitions,
            output_consumer,
            changelog_consumer: None,
            group_reader,
            outputs: Vec::new(),
            changes: Vec::new(),
            malformed: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Reads whatever has arrived on the output and changelog topics.
    pub fn poll(&mut self) {
        if self.changelog_consumer.is_none() {
            self.changelog_consumer = self.open_changelog();
        }
        let mut errors = Vec::new();
        for _ in 0..200_000 {
            match self.output_consumer.poll(Duration::from_millis(20)) {
                None => break,
                Some(Err(e)) => errors.push(format!("output: {e}")),
                Some(Ok(m)) => {
                    let payload = String::from_utf8_lossy(m.payload().unwrap_or_default());
                    let at = format!("output {}/{}@{}", self.output, m.partition(), m.offset());
                    match (tag_of(&m), parse_row(&payload)) {
                        (Ok(tag), Ok(row)) => self.outputs.push(OutRecord {
                            partition: m.partition(),
                            offset: m.offset(),
                            tag,
                            row,
                        }),
                        (Err(e), _) | (_, Err(e)) => {
                            self.malformed.push(format!("{at}: {e}; payload {payload}"));
                        }
                    }
                }
            }
        }
        if let Some(c) = &self.changelog_consumer {
            let mut read = Vec::new();
            for _ in 0..200_000 {
                match c.poll(Duration::from_millis(20)) {
                    None => break,
                    Some(Err(e)) => errors.push(format!("changelog: {e}")),
                    Some(Ok(m)) => {
                        let at = format!(
                            "changelog {}/{}@{}",
                            self.changelog,
                            m.partition(),
                            m.offset()
                        );
                        match tag_and_records(&m) {
                            Ok((tag, records)) => read.push(ChangeRecord {
                                partition: m.partition(),
                                offset: m.offset(),
                                key: String::from_utf8_lossy(m.key().unwrap_or_default())
                                    .into_owned(),
                                tag,
                                records,
                            }),
                            Err(e) => self.malformed.push(format!("{at}: {e}")),
                        }
                    }
                }
            }
            self.changes.extend(read);
        }
        for e in errors {
            self.note_error(e);
        }
    }

    fn note_error(&mut self, e: String) {
        if self.errors.len() < 20 {
            eprintln!("consumer error: {e}");
            self.errors.push(e);
        }
    }

    /// A consumer of every partition of the changelog topic, once the topic is listed
    /// (listing all topics, so that asking never creates it).
    fn open_changelog(&self) -> Option<BaseConsumer> {
        let metadata = self
            .output_consumer
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .ok()?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.changelog && t.error().is_none())?;
        let partitions = topic.partitions().len();
        if partitions == 0 {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let p = i32::try_from(p).ok()?;
            tpl.add_partition_offset(&self.changelog, p, Offset::Beginning)
                .ok()?;
        }
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique_name("tidewater-test-changelog"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create()
            .ok()?;
        consumer.assign(&tpl).ok()?;
        eprintln!(
            "changelog topic {} has {partitions} partitions",
            self.changelog
        );
        Some(consumer)
    }

    /// The group's committed offsets per judged task `p`: of `(changelog, p)` (the
    /// committed snapshot's manifest) and, for whole-partition tasks, of `(input, p)`.
    pub fn committed(&self) -> TaskOffsets {
        let (by_task, _) = self.committed_all();
        by_task
    }

    /// [`Watcher::committed`], and the group's committed offset of every input
    /// partition.
    fn committed_all(&self) -> (TaskOffsets, BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.input_partitions {
            tpl.add_partition(&self.input, p);
        }
        for p in self.judged.tasks.values() {
            tpl.add_partition(&self.changelog, *p);
        }
        let committed = match self.group_reader.committed_offsets(tpl, REQUEST_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("committed offsets: {e}");
                return (BTreeMap::new(), BTreeMap::new());
            }
        };
        let mut out: BTreeMap<i32, (Option<i64>, Option<i64>)> = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        for e in committed.elements() {
            let Offset::Offset(o) = e.offset() else {
                continue; // nothing committed yet
            };
            if e.topic() == self.changelog {
                out.entry(e.partition()).or_default().0 = Some(o);
            } else {
                inputs.insert(e.partition(), o);
                if self.judged.whole_partition {
                    out.entry(e.partition()).or_default().1 = Some(o);
                }
            }
        }
        (out, inputs)
    }

    /// Decides, from the marks and the records read so far, which output records are
    /// committed. `key_partitions` (the input partition of every key), when given, is
    /// checked against the output records' tasks (whole-partition tasks); with window
    /// tasks, every key's committed records must come from one task.
    pub fn verdict(&self, key_partitions: Option<&BTreeMap<String, i32>>) -> Verdict {
        let (committed, input_offsets) = self.committed_all();
        let mut v = Verdict {
            committed_offsets: committed.clone(),
            input_offsets,
            output_records: self.outputs.len(),
            changelog_records: self.changes.len(),
            ..Verdict::default()
        };
        v.problems.extend(self.malformed.iter().cloned());
        let tasks = &self.judged.tasks;
        let task_on = |p: i32| self.judged.task_on(p).unwrap_or("(none)").to_string();

        // The changelog: per (partition, generation), its `from` and its snapshots.
        let mut gen_from: HashMap<(i32, &str), &str> = HashMap::new();
        let mut snapshots: HashMap<(i32, &str, u64), (i64, u64)> = HashMap::new();
        let mut manifests: BTreeSet<(i32, &str, u64)> = BTreeSet::new();
        for r in &self.changes {
            match tasks.get(&r.tag.task) {
                Some(&p) if p == r.partition => {}
                _ => v.problems.push(format!(
                    "changelog {} record {}@{} (key {:?}) has task {:?}, not {}",
                    self.changelog,
                    r.partition,
                    r.offset,
                    r.key,
                    r.tag.task,
                    task_on(r.partition)
                )),
            }
            let from = *gen_from
                .entry((r.partition, r.tag.generation.as_str()))
                .or_insert(r.tag.from.as_str());
            if from != r.tag.from {
                v.problems.push(format!(
                    "changelog partition {}: generation {} has records from {from:?} and from \
                     {:?}",
                    r.partition, r.tag.generation, r.tag.from
                ));
            }
            let s = snapshots
                .entry((r.partition, r.tag.generation.as_str(), r.tag.checkpoint))
                .or_insert((r.offset, 0));
            s.0 = s.0.min(r.offset);
            s.1 += 1;
            if r.key == "manifest" {
                manifests.insert((r.partition, r.tag.generation.as_str(), r.tag.checkpoint));
            }
        }
        // The marks: the manifests the committed changelog offsets point at.
        let at: HashMap<(i32, i64), &ChangeRecord> = self
            .changes
            .iter()
            .map(|r| ((r.partition, r.offset), r))
            .collect();
        for (&p, &(manifest, input_offset)) in &committed {
            let Some(offset) = manifest else {
                if input_offset.is_some() {
                    v.pending.push(format!(
                        "p{p}: the input offset is committed, (changelog, {p}) is not"
                    ));
                }
                continue;
            };
            let Some(r) = at.get(&(p, offset)) else {
                v.pending.push(format!(
                    "p{p}: the committed manifest at changelog offset {offset} is not read yet"
                ));
                continue;
            };
            let (Some(count), "manifest") = (r.records, r.key.as_str()) else {
                v.problems.push(format!(
                    "p{p}: the committed changelog offset {offset} is not a manifest with \
                     {H_RECORDS}: key {:?}, tag {:?}, records {:?}",
                    r.key, r.tag, r.records
                ));
                continue;
            };
            match parse_from_header(&r.tag.from) {
                Ok(from) => {
                    v.marks.insert(
                        p,
                        Mark {
                            g: r.tag.generation.clone(),
                            n: r.tag.checkpoint,
                            offset,
                            count,
                            from,
                            input_offset,
                        },
                    );
                }
                Err(e) => v
                    .problems
                    .push(format!("p{p}: manifest at {offset}: {H_FROM}: {e}")),
            }
        }

        // The chains.
        for &p in tasks.values() {
            let Some(mark) = v.marks.get(&p).cloned() else {
                continue;
            };
            let pending_before = v.pending.len();
            // The final mark's snapshot is on the changelog, where the mark says.
            match snapshots.get(&(p, mark.g.as_str(), mark.n)) {
                Some(&(first, count)) if count >= mark.count => {
                    if first != mark.offset || count != mark.count {
                        v.problems.push(format!(
                            "p{p}: mark {mark:?} says its snapshot is {} records from changelog \
                             offset {}; the changelog holds {count} records of it from offset \
                             {first}",
                            mark.count, mark.offset
                        ));
                    }
                }
                seen => v.pending.push(format!(
                    "p{p}: snapshot {} of {} not (completely) read: (first offset, records) \
                     {seen:?}, mark says {} records",
                    mark.n,
                    short(&mark.g),
                    mark.count
                )),
            }
            let mut chain: Vec<Link> = Vec::new();
            let (mut generation, mut hi, mut from) = (mark.g.clone(), mark.n, mark.from.clone());
            loop {
                if chain.iter().any(|l| l.generation == generation) {
                    v.problems
                        .push(format!("p{p}: the chain loops at {generation}: {chain:?}"));
                    break;
                }
                let lo = from.as_ref().map_or(0, |f| f.1);
                if lo >= hi {
                    v.problems.push(format!(
                        "p{p}: generation {generation} committed checkpoint {hi} but restored from \
                         checkpoint {lo}"
                    ));
                }
                // Its changelog records say where it restored from: the same place.
                if let Some(&have) = gen_from.get(&(p, generation.as_str()))
                    && have != from_header(&from)
                {
                    v.problems.push(format!(
                        "p{p}: generation {generation}: its changelog says {H_FROM} = {have:?}, \
                         its commit chain says {:?}",
                        from_header(&from)
                    ));
                }
                chain.push(Link {
                    generation: generation.clone(),
                    lo,
                    hi,
                    from: from.clone(),
                });
                let Some((fg, fnum)) = from else { break };
                // The snapshot restored from is a committed one: it is on the changelog,
                // with a manifest, and its generation's records name its own `from`.
                if !snapshots.contains_key(&(p, fg.as_str(), fnum)) {
                    v.pending.push(format!(
                        "p{p}: generation {} restored from {}/{fnum}, which is not on the \
                         changelog (yet)",
                        short(&generation),
                        short(&fg)
                    ));
                    break;
                }
                if !manifests.contains(&(p, fg.as_str(), fnum)) {
                    v.pending.push(format!(
                        "p{p}: snapshot {}/{fnum} has no manifest record (yet)",
                        short(&fg)
                    ));
                }
                let its_from = gen_from.get(&(p, fg.as_str())).copied().unwrap_or("");
                match parse_from_header(its_from) {
                    Ok(f) => from = f,
                    Err(e) => {
                        v.problems
                            .push(format!("p{p}: changelog of {fg}: {H_FROM}: {e}"));
                        break;
                    }
                }
                generation = fg;
                hi = fnum;
            }
            let beyond: Vec<u64> = snapshots
                .keys()
                .filter(|(sp, g, n)| *sp == p && *g == mark.g.as_str() && *n > mark.n)
                .map(|(_, _, n)| *n)
                .collect::<BTreeSet<u64>>()
                .into_iter()
                .collect();
            if !beyond.is_empty() {
                v.beyond_marks.insert(p, beyond);
            }
            if v.pending.len() == pending_before
                && !manifests.contains(&(p, mark.g.as_str(), mark.n))
            {
                v.problems.push(format!(
                    "p{p}: the committed snapshot {}/{} has no record with key \"manifest\"",
                    mark.g, mark.n
                ));
            }
            v.chains.insert(p, chain);
        }

        // The output records.
        let mut key_tasks: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for r in &self.outputs {
            let Some(&p) = tasks.get(&r.tag.task) else {
                v.problems.push(format!(
                    "output {}@{}: task {:?} is not one of the tasks that write output: {:?}",
                    r.partition,
                    r.offset,
                    r.tag.task,
                    tasks.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            if self.judged.whole_partition
                && let Some(kp) = key_partitions
                && let Some(&key_p) = kp.get(&r.row.0)
                && key_p != p
            {
                v.problems.push(format!(
                    "output {}@{}: key {} is in input partition {key_p}, but task {} emitted it",
                    r.partition, r.offset, r.row.0, r.tag.task
                ));
            }
            let chain = v.chains.get(&p).map(Vec::as_slice).unwrap_or_default();
            let link = chain.iter().position(|l| l.generation == r.tag.generation);
            if let Some(i) = link {
                let l = &chain[i];
                if r.tag.from != from_header(&l.from) {
                    v.problems.push(format!(
                        "output {}@{}: {H_FROM} {:?}, but generation {} restored from {:?}",
                        r.partition,
                        r.offset,
                        r.tag.from,
                        l.generation,
                        from_header(&l.from)
                    ));
                }
                if r.tag.checkpoint <= l.lo {
                    v.problems.push(format!(
                        "output {}@{}: generation {} wrote checkpoint {}, but it restored from \
                         checkpoint {}",
                        r.partition, r.offset, l.generation, r.tag.checkpoint, l.lo
                    ));
                }
                if r.tag.checkpoint <= l.hi && r.tag.checkpoint > l.lo {
                    key_tasks
                        .entry(r.row.0.as_str())
                        .or_default()
                        .insert(r.tag.task.as_str());
                    if is_sentinel(&r.row.0) {
                        v.committed_sentinel += 1;
                    } else {
                        v.committed.push(r.row.clone());
                    }
                    v.committed_records.push((r.tag.clone(), r.row.clone()));
                    continue;
                }
            }
            *v.others
                .entry((
                    r.tag.task.clone(),
                    r.tag.generation.clone(),
                    r.tag.checkpoint,
                ))
                .or_default() += 1;
        }
        if !self.judged.whole_partition {
            for (key, by) in &key_tasks {
                if by.len() > 1 {
                    v.problems.push(format!(
                        "key {key}: committed results from {} window tasks {by:?}; a key's \
                         events must all go to one window task",
                        by.len()
                    ));
                }
            }
        }
        v.committed.sort_unstable();
        v
    }
}
