//! A deliberately naive reference implementation ("oracle") of event-time windowed
//! aggregation, for differential tests against the real engine.
//!
//! It knows nothing about slicing, watermarks, partitioning or Arrow: every event is
//! copied into **every** window it belongs to (a `BTreeMap` keyed by `(window_start,
//! window_end, key)`), and each aggregate is computed from scratch from the complete
//! list of values of its window. Only `std` is used, so other crates' tests can pull the
//! file in with
//!
//! ```ignore
//! #[path = "../crates/tidewater-window/tests/common/oracle.rs"]
//! mod oracle;
//! ```
//!
//! Semantics (ARCHITECTURE.md, "Time" and "Windows"; Flink SQL window TVFs):
//! - `TUMBLE(size)`: `[floor(ts/size)*size, +size)`.
//! - `HOP(slide, size)`: every `[s, s+size)` with `s` a multiple of `slide` and
//!   `s <= ts < s+size` (so an event may be in no window when `size < slide`).
//! - `CUMULATE(step, max)`: with `p = floor(ts/max)*max`, every `[p, p+k*step)` with
//!   `p+k*step > ts` and `k*step <= max`.
//! - `SESSION(gap)`: per key, events sorted by time; an event joins the current session
//!   when its `[ts, ts+gap)` overlaps the session's `[start, end)` (half-open, so events
//!   exactly `gap` apart start a new session); a session is `[first_ts, last_ts+gap)`.
//! - All divisions of timestamps are floor divisions (correct for negative times).
//! - Aggregates: `COUNT(*)`, `COUNT(x)` (non-null), `COUNT(DISTINCT x)`, `SUM` (wrapping
//!   for integers, NULL when there is no non-null value), `MIN`, `MAX`, `AVG` (integer
//!   input: integer result truncated toward zero; float input: float).
//!
//! `evaluate` assumes no event is late. `evaluate_with_watermarks` replays a stream batch
//! by batch against the watermark one source subtask would produce and applies the
//! lateness rules (Flink's):
//! - Watermark: after each batch, `max(ts seen so far) - delay` (never decreasing); an
//!   event sees the watermark left by the batches before its own. A window `[s, e)` has
//!   fired once the watermark is `>= e - 1`.
//! - TUMBLE, HOP, CUMULATE: an event is late (dropped and counted) when every window
//!   containing it has fired. Otherwise it is added to exactly those of its windows that
//!   have not fired yet; fired windows are never changed. An event in no window at all
//!   (a HOP gap, size < slide) is dropped without being counted as late.
//! - SESSION: an event is late when `ts <= watermark`.

#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One value of a grouping key column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    /// SQL NULL.
    Null,
    /// A BIGINT key.
    Int(i64),
    /// A STRING key.
    Str(String),
}

/// One input event: its grouping key, event time (epoch ms) and aggregate argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The grouping key columns, in order.
    pub keys: Vec<KeyValue>,
    /// Event time, epoch milliseconds.
    pub ts: i64,
    /// The argument of the aggregates (NULL = `None`).
    pub value: Option<i64>,
}

impl From<(Vec<KeyValue>, i64, Option<i64>)> for Event {
    fn from((keys, ts, value): (Vec<KeyValue>, i64, Option<i64>)) -> Self {
        Event { keys, ts, value }
    }
}

/// A window table-valued function; all lengths in milliseconds and positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `TUMBLE(size)`.
    Tumble {
        /// Window length.
        size: i64,
    },
    /// `HOP(slide, size)`.
    Hop {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// `CUMULATE(step, max_size)`.
    Cumulate {
        /// Growth step.
        step: i64,
        /// Period (largest window).
        max_size: i64,
    },
    /// `SESSION(gap)`.
    Session {
        /// Inactivity gap.
        gap: i64,
    },
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AggFn {
    /// `COUNT(*)`.
    CountStar,
    /// `COUNT(x)`.
    Count,
    /// `COUNT(DISTINCT x)`.
    CountDistinct,
    /// `SUM(x)`.
    Sum,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// `AVG(x)`.
    Avg,
}

/// How the event's value is presented to the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArgType {
    /// As BIGINT (`i64`).
    Int,
    /// As DOUBLE: the value converted with `as f64`.
    Float,
}

/// One aggregate of the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Agg {
    /// The function.
    pub func: AggFn,
    /// The argument's type (ignored by `COUNT(*)`).
    pub arg: ArgType,
}

/// One aggregate result.
#[derive(Debug, Clone, Copy)]
pub enum AggValue {
    /// SQL NULL.
    Null,
    /// A BIGINT result.
    Int(i64),
    /// A DOUBLE result.
    Float(f64),
}

impl AggValue {
    fn rank(&self) -> u8 {
        match self {
            AggValue::Null => 0,
            AggValue::Int(_) => 1,
            AggValue::Float(_) => 2,
        }
    }
}

impl PartialEq for AggValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for AggValue {}

impl PartialOrd for AggValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AggValue {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (AggValue::Int(a), AggValue::Int(b)) => a.cmp(b),
            (AggValue::Float(a), AggValue::Float(b)) => a.total_cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl fmt::Display for AggValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggValue::Null => write!(f, "NULL"),
            AggValue::Int(v) => write!(f, "{v}"),
            AggValue::Float(v) => write!(f, "{v:?}"),
        }
    }
}

/// One output row: `[window_start, window_end, keys.., aggregates..]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResultRow {
    /// Inclusive start, epoch ms.
    pub window_start: i64,
    /// Exclusive end, epoch ms.
    pub window_end: i64,
    /// The grouping key.
    pub keys: Vec<KeyValue>,
    /// One value per aggregate, in query order.
    pub aggs: Vec<AggValue>,
}

impl fmt::Display for ResultRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}, {}) {:?} (",
            self.window_start, self.window_end, self.keys
        )?;
        for (i, a) in self.aggs.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{a}")?;
        }
        write!(f, ")")
    }
}

/// Floor division for a positive divisor, written out (not shared with the engine).
pub fn floor_div(a: i64, b: i64) -> i64 {
    assert!(b > 0, "divisor must be positive, got {b}");
    let q = a / b;
    if a % b < 0 { q - 1 } else { q }
}

/// Every `[start, end)` window (not session) that contains `ts`, enumerated naively.
pub fn windows_of(window: &Window, ts: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    match *window {
        Window::Tumble { size } => {
            assert!(size > 0, "TUMBLE size must be positive");
            let start = floor_div(ts, size) * size;
            out.push((start, start + size));
        }
        Window::Hop { size, slide } => {
            assert!(size > 0 && slide > 0, "HOP size and slide must be positive");
            // The latest start <= ts, then walk back while the window still covers ts.
            let mut s = floor_div(ts, slide) * slide;
            while s + size > ts {
                out.push((s, s + size));
                s -= slide;
            }
            out.reverse();
        }
        Window::Cumulate { step, max_size } => {
            assert!(
                step > 0 && max_size > 0,
                "CUMULATE step and max size must be positive"
            );
            let p = floor_div(ts, max_size) * max_size;
            let mut k = 1;
            while k * step <= max_size {
                let end = p + k * step;
                if end > ts {
                    out.push((p, end));
                }
                k += 1;
            }
        }
        Window::Session { .. } => panic!("session windows depend on other events; use evaluate()"),
    }
    out
}

/// Session windows of one key's event times: `(start, end)` per event, same order as given.
fn sessionize(times: &[i64], gap: i64) -> Vec<(i64, i64)> {
    assert!(gap > 0, "SESSION gap must be positive");
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by_key(|&i| times[i]);
    // Group consecutive (sorted) events while each one's [ts, ts+gap) overlaps the session.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut cur_end = i64::MIN;
    for i in order {
        let t = times[i];
        match groups.last_mut() {
            Some(g) if t < cur_end => {
                g.push(i);
                cur_end = cur_end.max(t + gap);
            }
            _ => {
                groups.push(vec![i]);
                cur_end = t + gap;
            }
        }
    }
    let mut out = vec![(0, 0); times.len()];
    for g in groups {
        let first = g.iter().map(|&i| times[i]).min().unwrap_or(0);
        let last = g.iter().map(|&i| times[i]).max().unwrap_or(0);
        for i in g {
            out[i] = (first, last + gap);
        }
    }
    out
}

/// Computes one aggregate from the complete list of its window's values.
pub fn aggregate(agg: &Agg, values: &[Option<i64>]) -> AggValue {
    let ints: Vec<i64> = values.iter().flatten().copied().collect();
    let floats: Vec<f64> = ints.iter().map(|&v| v as f64).collect();
    let n = ints.len() as i64;
    match (agg.func, agg.arg) {
        (AggFn::CountStar, _) => AggValue::Int(values.len() as i64),
        (AggFn::Count, _) => AggValue::Int(n),
        (AggFn::CountDistinct, ArgType::Int) => {
            AggValue::Int(ints.iter().collect::<BTreeSet<_>>().len() as i64)
        }
        (AggFn::CountDistinct, ArgType::Float) => AggValue::Int(
            floats
                .iter()
                .map(|f| f.to_bits())
                .collect::<BTreeSet<_>>()
                .len() as i64,
        ),
        _ if n == 0 => AggValue::Null,
        (AggFn::Sum, ArgType::Int) => {
            AggValue::Int(ints.iter().fold(0i64, |a, v| a.wrapping_add(*v)))
        }
        (AggFn::Sum, ArgType::Float) => AggValue::Float(floats.iter().sum()),
        (AggFn::Avg, ArgType::Int) => {
            // Truncation toward zero, like Rust's `/` (n > 0, so this cannot overflow).
            AggValue::Int(ints.iter().fold(0i64, |a, v| a.wrapping_add(*v)) / n)
        }
        (AggFn::Avg, ArgType::Float) => AggValue::Float(floats.iter().sum::<f64>() / n as f64),
        (AggFn::Min, ArgType::Int) => ints
            .iter()
            .min()
            .map_or(AggValue::Null, |v| AggValue::Int(*v)),
        (AggFn::Max, ArgType::Int) => ints
            .iter()
            .max()
            .map_or(AggValue::Null, |v| AggValue::Int(*v)),
        (AggFn::Min, ArgType::Float) => floats
            .iter()
            .copied()
            .reduce(f64::min)
            .map_or(AggValue::Null, AggValue::Float),
        (AggFn::Max, ArgType::Float) => floats
            .iter()
            .copied()
            .reduce(f64::max)
            .map_or(AggValue::Null, AggValue::Float),
    }
}

/// (start, end, key) -> every value that fell into that window, in input order.
type WindowValues = BTreeMap<(i64, i64, Vec<KeyValue>), Vec<Option<i64>>>;

/// One result row per window and key, each aggregate computed from all its values, sorted.
fn rows_of(windows: WindowValues, aggs: &[Agg]) -> Vec<ResultRow> {
    let mut rows: Vec<ResultRow> = windows
        .into_iter()
        .map(|((window_start, window_end, keys), values)| ResultRow {
            window_start,
            window_end,
            keys,
            aggs: aggs.iter().map(|a| aggregate(a, &values)).collect(),
        })
        .collect();
    rows.sort();
    rows
}

/// The window results of `events` (none of them late), sorted.
pub fn evaluate(events: &[Event], window: &Window, aggs: &[Agg]) -> Vec<ResultRow> {
    let mut windows = WindowValues::new();
    match *window {
        Window::Session { gap } => {
            let mut per_key: BTreeMap<Vec<KeyValue>, Vec<&Event>> = BTreeMap::new();
            for e in events {
                per_key.entry(e.keys.clone()).or_default().push(e);
            }
            for (key, evs) in per_key {
                let times: Vec<i64> = evs.iter().map(|e| e.ts).collect();
                for (e, (start, end)) in evs.iter().zip(sessionize(&times, gap)) {
                    windows
                        .entry((start, end, key.clone()))
                        .or_default()
                        .push(e.value);
                }
            }
        }
        _ => {
            for e in events {
                for (start, end) in windows_of(window, e.ts) {
                    windows
                        .entry((start, end, e.keys.clone()))
                        .or_default()
                        .push(e.value);
                }
            }
        }
    }
    rows_of(windows, aggs)
}

/// What `evaluate_with_watermarks` decided for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateOutcome {
    /// The emitted rows, sorted.
    pub rows: Vec<ResultRow>,
    /// Events dropped as late (and counted as such).
    pub late: u64,
    /// Events dropped silently because they are in no window (HOP with size < slide).
    pub in_no_window: u64,
    /// Accepted events that missed at least one of their windows because it had fired.
    pub partially_late: u64,
}

/// The results of replaying `batches` in order, with the watermark `max(ts) - delay`
/// emitted after each batch, under the lateness rules in the module docs.
pub fn evaluate_with_watermarks(
    batches: &[&[Event]],
    window: &Window,
    aggs: &[Agg],
    delay: i64,
) -> LateOutcome {
    // No watermark yet: nothing has fired.
    let mut wm = i64::MIN;
    let mut max_ts: Option<i64> = None;
    let mut out = LateOutcome {
        rows: Vec::new(),
        late: 0,
        in_no_window: 0,
        partially_late: 0,
    };
    let fired = |end: i64, wm: i64| end - 1 <= wm;
    let mut session_kept = Vec::new();
    let mut windows = WindowValues::new();
    for batch in batches {
        for e in *batch {
            if let Window::Session { .. } = window {
                if e.ts <= wm {
                    out.late += 1;
                } else {
                    session_kept.push(e.clone());
                }
                continue;
            }
            let all = windows_of(window, e.ts);
            let open: Vec<(i64, i64)> = all
                .iter()
                .copied()
                .filter(|&(_, end)| !fired(end, wm))
                .collect();
            if all.is_empty() {
                out.in_no_window += 1;
            } else if open.is_empty() {
                out.late += 1;
            } else {
                if open.len() < all.len() {
                    out.partially_late += 1;
                }
                for (start, end) in open {
                    windows
                        .entry((start, end, e.keys.clone()))
                        .or_default()
                        .push(e.value);
                }
            }
        }
        for e in *batch {
            max_ts = Some(max_ts.map_or(e.ts, |m| m.max(e.ts)));
        }
        if let Some(m) = max_ts {
            wm = wm.max(m.saturating_sub(delay));
        }
    }
    out.rows = if let Window::Session { .. } = window {
        evaluate(&session_kept, window, aggs)
    } else {
        rows_of(windows, aggs)
    };
    out
}

fn values_match(a: &AggValue, b: &AggValue, rel_tol: f64) -> bool {
    match (a, b) {
        (AggValue::Float(x), AggValue::Float(y)) => {
            x == y || (x - y).abs() <= rel_tol * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// Compares two result multisets (order does not matter); floats are equal within the
/// relative tolerance `rel_tol`. On a difference, explains the first few.
pub fn compare(expected: &[ResultRow], actual: &[ResultRow], rel_tol: f64) -> Result<(), String> {
    let mut exp = expected.to_vec();
    let mut act = actual.to_vec();
    exp.sort();
    act.sort();
    let head = |r: &ResultRow| (r.window_start, r.window_end, r.keys.clone());
    let (mut i, mut j) = (0, 0);
    let mut diffs = Vec::new();
    while i < exp.len() || j < act.len() {
        let ord = match (exp.get(i), act.get(j)) {
            (Some(e), Some(a)) => head(e).cmp(&head(a)),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                diffs.push(format!("missing    {}", exp[i]));
                i += 1;
            }
            Ordering::Greater => {
                diffs.push(format!("unexpected {}", act[j]));
                j += 1;
            }
            Ordering::Equal => {
                let (e, a) = (&exp[i], &act[j]);
                let same = e.aggs.len() == a.aggs.len()
                    && e.aggs
                        .iter()
                        .zip(&a.aggs)
                        .all(|(x, y)| values_match(x, y, rel_tol));
                if !same {
                    diffs.push(format!("expected   {e}\n    got    {a}"));
                }
                i += 1;
                j += 1;
            }
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = diffs.iter().take(12).cloned().collect();
    Err(format!(
        "{} difference(s) between {} expected and {} actual rows:\n  {}{}",
        diffs.len(),
        exp.len(),
        act.len(),
        shown.join("\n  "),
        if diffs.len() > shown.len() {
            "\n  ..."
        } else {
            ""
        }
    ))
}
