//! Tumble, hop and cumulate windows by slicing.
//!
//! Time is cut into slices of width `g` (gcd of size and slide, the step for cumulate).
//! Each event updates exactly one partial — its key's partial of its slice — so the cost
//! per event does not depend on how many windows overlap. When the watermark reaches
//! `end - 1` of a window, the partials of its slices are merged per key and emitted;
//! slices that no later window covers are freed at once, so state is
//! O(keys × slices per window), never O(events).
//!
//! A slice holds its keys' partials column-wise (one vector per aggregate, indexed by
//! the key's position in the slice). Window results come from one running result per
//! key, also column-wise (indexed by key id): firing the next hop window merges the
//! slices that entered it and retracts the ones that left, so a result costs O(1) per
//! key, not O(slices per window), for invertible aggregates (counts, integer sums,
//! distinct counts). Float sums, MIN and MAX cannot retract: each of their windows
//! re-merges its slices.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, TimestampMillisecondArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::time::floor_div;
use tidewater_core::{Error, Result, Watermark};
use tidewater_runtime::{Barrier, Operator, Output, RestoredState, StateSize, StateWriter};

use crate::agg::Acc;
use crate::keys::KeyTable;
use crate::parts::Parts;
use crate::state::{self, StateBuilder};
use crate::{BatchView, WindowInput, WindowSpec, describe_aggs};

/// Hashes key ids (dense small integers) by one multiplication.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.0 = u64::from(x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Key id → position in a slice.
type IdMap = HashMap<u32, u32, BuildHasherDefault<IdHasher>>;

/// The partials of one slice: the keys that have data in it, in arrival order, and per
/// aggregate their partials at the same positions.
#[derive(Debug)]
struct Slice {
    keys: Vec<u32>,
    /// Key id → position, built only when an event needs it (see [`Recent`]).
    pos: IdMap,
    indexed: bool,
    parts: Vec<Parts>,
}

/// Per key: its newest slices (by slice index) and its position in each, so that an
/// event finds its partial without a lookup. A slice newer than the oldest entry that
/// is not listed does not hold the key; only an event older than every entry (more out
/// of order than `RECENT` slices) looks in the slice's map.
type Recent = [(i64, u32); RECENT];
const RECENT: usize = 4;
const NO_RECENT: Recent = [(i64::MIN, 0); RECENT];

impl Slice {
    fn clear(&mut self) {
        self.keys.clear();
        self.pos.clear();
        self.indexed = false;
        for p in &mut self.parts {
            p.clear();
        }
    }
}

/// The sliced window operator (see the module docs).
#[derive(Debug)]
pub struct SlicedWindowOperator {
    spec: WindowSpec,
    width: i64,
    input: WindowInput,
    schema: SchemaRef,
    /// Boxed: the operator is moved around by value and is large enough.
    keys: Box<KeyTable>,
    /// Slices that hold data: slice index → index in `pool`.
    slices: BTreeMap<i64, usize>,
    /// Slice storage, reused through `free_slices`.
    pool: Vec<Slice>,
    free_slices: Vec<usize>,
    /// Per key id: how many slices hold the key (0: the id is not live).
    key_slices: Vec<u32>,
    /// Per key id: its newest slices and positions there.
    recent: Vec<Recent>,
    /// Number of live keys.
    live: usize,
    /// Running results, one column per aggregate indexed by key id: the merge of the
    /// key's partials of slices `run_range`.
    run: Vec<Parts>,
    /// The slices merged into `run`, `None` when `run` holds nothing.
    run_range: Option<(i64, i64)>,
    /// Per key id: how many slices in `run_range` hold the key.
    run_count: Vec<u32>,
    /// Keys with a non-zero `run_count`: the keys of the current window, and each key
    /// id's position in this list.
    members: Vec<u32>,
    member_at: Vec<u32>,
    invertible: bool,
    /// Per-batch scratch: (row, position) and pool slot of each event, and (row, key id)
    /// of events whose slice is merged into the running results.
    hits: Vec<(u32, u32)>,
    hit_slots: Vec<u32>,
    run_hits: Vec<(u32, u32)>,
    watermark: Watermark,
    /// Every window ending at or before this has fired.
    fired_end: i64,
    metrics: Arc<JobMetrics>,
}

const NOT_MEMBER: u32 = u32::MAX;

/// What the events of one slice are, given the watermark.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SliceClass {
    /// In some open window.
    Open,
    /// Their last window has fired.
    Late,
    /// In no window (hop with size < slide).
    NoWindow,
    /// Windows beyond the representable range.
    Absurd,
}

impl SlicedWindowOperator {
    /// An operator for `spec` (not a session window) over `input`.
    pub fn new(spec: WindowSpec, input: WindowInput) -> Result<Self> {
        spec.validate()?;
        let width = spec.slice_width().ok_or_else(|| {
            Error::runtime("session windows are not sliced; use SessionWindowOperator")
        })?;
        let invertible = input.aggs.iter().all(|a| a.empty().invertible());
        Ok(Self {
            spec,
            width,
            schema: input.output_schema(),
            keys: Box::new(KeyTable::new(&input.key_fields)?),
            metrics: input.metrics.clone(),
            run: input.aggs.iter().map(Parts::new).collect(),
            input,
            slices: BTreeMap::new(),
            pool: Vec::new(),
            free_slices: Vec::new(),
            key_slices: Vec::new(),
            recent: Vec::new(),
            live: 0,
            run_range: None,
            run_count: Vec::new(),
            members: Vec::new(),
            member_at: Vec::new(),
            invertible,
            hits: Vec::new(),
            hit_slots: Vec::new(),
            run_hits: Vec::new(),
            watermark: Watermark::MIN,
            fired_end: i64::MIN,
        })
    }

    /// Number of keys with state.
    pub fn live_keys(&self) -> usize {
        self.keys.len()
    }

    /// Number of slices with state.
    pub fn live_slices(&self) -> usize {
        self.slices.len()
    }

    /// The end of the first window that contains slice `s`.
    fn first_end_containing(&self, s: i64) -> i64 {
        let (step, offset) = (self.spec.end_step(), self.spec.end_offset());
        let slice_end = (s + 1).saturating_mul(self.width);
        // Smallest window end (offset + k * step) at or after the slice's end.
        let k = floor_div(
            slice_end.saturating_sub(offset).saturating_add(step - 1),
            step,
        );
        offset.saturating_add(k.saturating_mul(step))
    }

    fn classify(&self, s: i64) -> SliceClass {
        let slice_start = s.saturating_mul(self.width);
        match self.spec.last_end_containing(slice_start) {
            None => SliceClass::Absurd,
            Some(last_end) if last_end <= slice_start => SliceClass::NoWindow,
            Some(last_end) if last_end.saturating_sub(1) <= self.watermark.0 => SliceClass::Late,
            Some(_) => SliceClass::Open,
        }
    }

    /// Makes room for key id `id` in the per-key vectors.
    fn ensure_key(&mut self, id: usize) {
        if id >= self.key_slices.len() {
            let n = id + 1;
            self.key_slices.resize(n, 0);
            self.recent.resize(n, NO_RECENT);
            self.run_count.resize(n, 0);
            self.member_at.resize(n, NOT_MEMBER);
            for (p, spec) in self.run.iter_mut().zip(&self.input.aggs) {
                while p.len() < n {
                    p.push_empty(spec);
                }
            }
        }
    }

    /// The pool index of slice `s`, created empty if it holds no data yet.
    fn slice_slot(&mut self, s: i64) -> usize {
        if let Some(&slot) = self.slices.get(&s) {
            return slot;
        }
        let slot = match self.free_slices.pop() {
            Some(slot) => slot,
            None => {
                self.pool.push(Slice {
                    keys: Vec::new(),
                    pos: IdMap::default(),
                    indexed: false,
                    parts: self.input.aggs.iter().map(Parts::new).collect(),
                });
                self.pool.len() - 1
            }
        };
        self.slices.insert(s, slot);
        slot
    }

    /// The position of key `id` in slice `s` (at pool index `slot`), adding it empty if
    /// new. The key's id must have room ([`Self::ensure_key`]).
    #[inline]
    fn entry(&mut self, id: u32, s: i64, slot: usize) -> u32 {
        let i = id as usize;
        let recent = &mut self.recent[i];
        let mut oldest = 0;
        for (k, &(rs, rp)) in recent.iter().enumerate() {
            if rs == s {
                debug_assert_eq!(self.pool[slot].keys.get(rp as usize), Some(&id));
                return rp;
            }
            if rs < recent[oldest].0 {
                oldest = k;
            }
        }
        let slice = &mut self.pool[slot];
        if s < recent[oldest].0 {
            if !slice.indexed {
                slice.pos.clear();
                slice
                    .pos
                    .extend(slice.keys.iter().enumerate().map(|(p, &k)| (k, p as u32)));
                slice.indexed = true;
            }
            if let Some(&p) = slice.pos.get(&id) {
                return p;
            }
        }
        let p = slice.keys.len() as u32;
        slice.keys.push(id);
        if slice.indexed {
            slice.pos.insert(id, p);
        }
        for (part, spec) in slice.parts.iter_mut().zip(&self.input.aggs) {
            part.push_empty(spec);
        }
        if s > recent[oldest].0 {
            recent[oldest] = (s, p);
        }
        if self.key_slices[i] == 0 {
            self.live += 1;
        }
        self.key_slices[i] += 1;
        if matches!(self.run_range, Some((a, b)) if a <= s && s <= b) {
            self.count_in_run(id);
        }
        p
    }

    /// One more slice of the running range holds key `id`.
    #[inline]
    fn count_in_run(&mut self, id: u32) {
        let i = id as usize;
        if self.run_count[i] == 0 {
            self.member_at[i] = self.members.len() as u32;
            self.members.push(id);
        }
        self.run_count[i] += 1;
    }

    /// One slice fewer of the running range holds key `id`.
    #[inline]
    fn uncount_in_run(&mut self, id: u32) {
        let i = id as usize;
        self.run_count[i] -= 1;
        if self.run_count[i] == 0 {
            let at = self.member_at[i] as usize;
            self.members.swap_remove(at);
            if let Some(&moved) = self.members.get(at) {
                self.member_at[moved as usize] = at as u32;
            }
            self.member_at[i] = NOT_MEMBER;
        }
    }

    /// Empties the running results.
    fn reset_run(&mut self) {
        for &id in &self.members {
            let i = id as usize;
            for (p, spec) in self.run.iter_mut().zip(&self.input.aggs) {
                p.reset(i, spec);
            }
            self.run_count[i] = 0;
            self.member_at[i] = NOT_MEMBER;
        }
        self.members.clear();
        self.run_range = None;
    }

    /// Merges slice `slot` into the running results.
    fn add_to_run(&mut self, slot: usize) {
        let slice = &self.pool[slot];
        for ((dst, src), spec) in self.run.iter_mut().zip(&slice.parts).zip(&self.input.aggs) {
            dst.merge_many(spec.kind, src, &slice.keys);
        }
        for k in 0..self.pool[slot].keys.len() {
            let id = self.pool[slot].keys[k];
            self.count_in_run(id);
        }
    }

    /// Retracts slice `slot` from the running results (invertible aggregates only).
    fn retract_from_run(&mut self, slot: usize) {
        let slice = &self.pool[slot];
        for (dst, src) in self.run.iter_mut().zip(&slice.parts) {
            dst.retract_many(src, &slice.keys);
        }
        for k in 0..self.pool[slot].keys.len() {
            let id = self.pool[slot].keys[k];
            self.uncount_in_run(id);
        }
    }

    /// Brings the running results to slices `lo..=hi`.
    fn run_to(&mut self, lo: i64, hi: i64) {
        let (from_lo, add_from) = match self.run_range {
            Some((a, b)) if self.invertible && a <= lo && lo <= b.saturating_add(1) && b <= hi => {
                (a, b.saturating_add(1))
            }
            _ => {
                self.reset_run();
                (lo, lo)
            }
        };
        if from_lo < lo {
            let gone: Vec<usize> = self.slices.range(from_lo..lo).map(|(_, &v)| v).collect();
            for slot in gone {
                self.retract_from_run(slot);
            }
        }
        if add_from <= hi {
            let new: Vec<usize> = self.slices.range(add_from..=hi).map(|(_, &v)| v).collect();
            for slot in new {
                self.add_to_run(slot);
            }
        }
        self.run_range = Some((lo, hi));
    }

    fn fire_until(&mut self, wm: Watermark, out: &mut Output) -> Result<()> {
        let step = self.spec.end_step();
        while let Some((&min_slice, _)) = self.slices.first_key_value() {
            let mut end = self.first_end_containing(min_slice);
            if self.fired_end != i64::MIN {
                end = end.max(self.fired_end.saturating_add(step));
            }
            if end.saturating_sub(1) > wm.0 {
                break;
            }
            self.fire_window(end, out)?;
            self.fired_end = end;
        }
        Ok(())
    }

    /// Emits the window ending at `end` and frees the slices the next window does not
    /// need.
    fn fire_window(&mut self, end: i64, out: &mut Output) -> Result<()> {
        let start = self.spec.start_of(end);
        let lo = floor_div(start, self.width);
        let hi = floor_div(end, self.width) - 1;
        let next_lo = floor_div(
            self.spec.start_of(end.saturating_add(self.spec.end_step())),
            self.width,
        );
        self.run_to(lo, hi);
        if !self.members.is_empty() {
            let n = self.members.len();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(TimestampMillisecondArray::from(vec![start; n])),
                Arc::new(TimestampMillisecondArray::from(vec![end; n])),
            ];
            columns.extend(self.keys.columns(&self.members)?);
            for (part, spec) in self.run.iter().zip(&self.input.aggs) {
                columns.push(part.column(spec, &self.members)?);
            }
            out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        if !self.invertible {
            self.reset_run();
        }
        // Free the slices before the next window, retracting those merged.
        let keep = self.slices.split_off(&next_lo);
        let gone = std::mem::replace(&mut self.slices, keep);
        for (s, slot) in gone {
            if matches!(self.run_range, Some((a, b)) if a <= s && s <= b) {
                self.retract_from_run(slot);
            }
            for k in 0..self.pool[slot].keys.len() {
                let id = self.pool[slot].keys[k] as usize;
                self.key_slices[id] -= 1;
                if self.key_slices[id] == 0 {
                    self.live -= 1;
                    self.recent[id] = NO_RECENT;
                    self.keys.release(id as u32);
                }
            }
            self.pool[slot].clear();
            self.free_slices.push(slot);
        }
        if let Some((a, b)) = self.run_range {
            let a = a.max(next_lo);
            if a > b {
                self.reset_run();
            } else {
                self.run_range = Some((a, b));
            }
        }
        Ok(())
    }

    /// Partial entries held, over all slices.
    fn entries(&self) -> usize {
        self.slices.values().map(|&s| self.pool[s].keys.len()).sum()
    }
}

impl Operator for SlicedWindowOperator {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let BatchView { rows, ts, args } = self.input.view(&self.keys, &batch)?;
        let (mut late, mut no_time) = (0u64, 0u64);
        let mut hits = std::mem::take(&mut self.hits);
        let mut hit_slots = std::mem::take(&mut self.hit_slots);
        let mut run_hits = std::mem::take(&mut self.run_hits);
        hits.clear();
        hit_slots.clear();
        run_hits.clear();
        // The slice of the previous row: index, class, pool index, merged into `run`.
        let mut cur: (i64, SliceClass, usize, bool) = (i64::MIN, SliceClass::Absurd, 0, false);
        for row in 0..batch.num_rows() {
            if ts.is_null(row) {
                no_time += 1;
                continue;
            }
            let s = floor_div(ts.value(row), self.width);
            if s != cur.0 || cur.0 == i64::MIN {
                let class = self.classify(s);
                let slot = if class == SliceClass::Open {
                    self.slice_slot(s)
                } else {
                    0
                };
                let in_run = matches!(self.run_range, Some((a, b)) if a <= s && s <= b);
                cur = (s, class, slot, in_run);
            }
            match cur.1 {
                SliceClass::Open => {}
                SliceClass::Late => {
                    late += 1;
                    continue;
                }
                SliceClass::NoWindow => continue,
                SliceClass::Absurd => {
                    no_time += 1;
                    continue;
                }
            }
            let id = self.keys.intern(KeyTable::key_of(&rows, row));
            self.ensure_key(id as usize);
            let pos = self.entry(id, s, cur.2);
            hits.push((row as u32, pos));
            hit_slots.push(cur.2 as u32);
            // A slice that earlier results already merged (some of its windows fired,
            // later ones are open): keep the running result in step with it.
            if cur.3 {
                run_hits.push((row as u32, id));
            }
        }
        // Runs of events in the same slice, updated column by column.
        let mut from = 0;
        while from < hits.len() {
            let slot = hit_slots[from];
            let to = hit_slots[from..]
                .iter()
                .position(|s| *s != slot)
                .map_or(hits.len(), |n| from + n);
            let parts = &mut self.pool[slot as usize].parts;
            for ((part, spec), arg) in parts.iter_mut().zip(&self.input.aggs).zip(&args) {
                part.update_many(spec.kind, arg, &hits[from..to]);
            }
            from = to;
        }
        for ((part, spec), arg) in self.run.iter_mut().zip(&self.input.aggs).zip(&args) {
            part.update_many(spec.kind, arg, &run_hits);
        }
        self.hits = hits;
        self.hit_slots = hit_slots;
        self.run_hits = run_hits;
        JobMetrics::add(&self.metrics.late_events, late);
        JobMetrics::add(&self.metrics.dead_letters, no_time);
        Ok(())
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(wm);
        self.fire_until(wm, out)?;
        // Windows the watermark passed while this subtask held no data for them have
        // fired too (empty): a partly late event must not reopen them.
        let (step, offset) = (self.spec.end_step(), self.spec.end_offset());
        let k = floor_div(wm.0.saturating_add(1).saturating_sub(offset), step);
        let passed = offset.saturating_add(k.saturating_mul(step));
        if passed > self.fired_end {
            self.fired_end = passed;
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = Watermark::MAX;
        self.fire_until(Watermark::MAX, out)
    }

    fn state_size(&self) -> Option<StateSize> {
        let entries = self.entries();
        let per_entry: usize = 8 + self
            .pool
            .first()
            .map_or(0, |s| s.parts.iter().map(Parts::entry_bytes).sum::<usize>());
        let per_key = 24 + self.run.iter().map(Parts::entry_bytes).sum::<usize>();
        Some(StateSize {
            keys: self.live as u64,
            slices: entries as u64,
            bytes: (entries * per_entry + self.keys.bytes() + self.key_slices.len() * per_key)
                as u64,
        })
    }

    /// State: every key's slice partials (keyed) and the clock. Running results are
    /// not stored; after a restore the first window re-merges its slices.
    fn on_barrier(&mut self, _barrier: &Barrier, state: &mut StateWriter) -> Result<()> {
        let mut b = StateBuilder::default();
        let mut accs: Vec<Acc> = Vec::with_capacity(self.input.aggs.len());
        for (&s, &slot) in &self.slices {
            let slice = &self.pool[slot];
            for (pos, &id) in slice.keys.iter().enumerate() {
                accs.clear();
                accs.extend(slice.parts.iter().map(|p| p.get(pos)));
                b.push(id, s, s, &accs);
            }
        }
        state.write(b.finish(
            &self.keys,
            &self.input.key_fields,
            (self.watermark.0, self.fired_end),
        )?);
        Ok(())
    }

    fn restore(&mut self, restored: RestoredState) -> Result<()> {
        let n = self.input.aggs.len();
        let state = state::decode(&restored.batches, self.input.key_columns, &self.keys, n)?;
        if let Some((wm, fired)) = state.clock {
            self.watermark = self.watermark.max(Watermark(wm));
            self.fired_end = self.fired_end.max(fired);
        }
        self.reset_run();
        for row in state.rows {
            let id = self.keys.intern(row.key.as_ref());
            self.ensure_key(id as usize);
            let slot = self.slice_slot(row.a);
            let pos = self.entry(id, row.a, slot) as usize;
            for (part, acc) in self.pool[slot].parts.iter_mut().zip(row.accs) {
                part.set(pos, acc);
            }
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!(
            "Window[{}]{}",
            self.spec.describe(),
            describe_aggs(&self.input)
        )
    }
}
