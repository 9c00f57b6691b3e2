//! Tumble, hop and cumulate windows by slicing.
//!
//! Time is cut into slices of width `g` (gcd of size and slide, the step for cumulate).
//! Each event updates exactly one partial — its key's partial of its slice — so the cost
//! per event does not depend on how many windows overlap. When the watermark reaches
//! `end - 1` of a window, the partials of its slices are merged per key and emitted;
//! slices that no later window covers are freed at once, so state is
//! O(keys × slices per window), never O(events).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::time::floor_div;
use tidewater_core::{Error, Result, Watermark};
use tidewater_runtime::{Barrier, Operator, Output, RestoredState, StateSize, StateWriter};

use crate::agg::{Acc, AggSpec, OutColumn, result_batch};
use crate::keys::KeyTable;
use crate::state::{self, StateBuilder};
use crate::{BatchView, WindowInput, WindowSpec, describe_aggs};

/// Per key: its slices that hold data, ordered by slice index, and a running window
/// accumulator.
#[derive(Debug, Default)]
struct KeyState {
    /// (slice index, arena slot of its partials).
    slices: VecDeque<(i64, u32)>,
    /// First and last slice index in `slices` (`i64::MAX`/`MIN` when empty), kept here
    /// so that a window can skip a key without touching its deque.
    front: i64,
    back: i64,
    /// The running result (in `runs`) is the merge of every partial in `slices` with
    /// index `<= run_hi` (when `run_valid`).
    run_hi: i64,
    run_valid: bool,
    live: bool,
}

impl KeyState {
    fn sync_ends(&mut self) {
        self.front = self.slices.front().map_or(i64::MAX, |(s, _)| *s);
        self.back = self.slices.back().map_or(i64::MIN, |(s, _)| *s);
    }
}

/// The sliced window operator (see the module docs).
///
/// Window results come from a running accumulator per key: firing the next window adds
/// the slices that entered it, and freeing a slice retracts it (counts, integer sums and
/// distinct counts retract exactly). Aggregates that cannot retract (float sums, MIN,
/// MAX) re-merge the key's slices when a slice has left since the last result. So the
/// cost of a result does not grow with size/slide for invertible aggregates.
#[derive(Debug)]
pub struct SlicedWindowOperator {
    spec: WindowSpec,
    width: i64,
    input: WindowInput,
    schema: SchemaRef,
    keys: KeyTable,
    states: Vec<KeyState>,
    /// Ids of keys that hold state, in no particular order.
    live: Vec<u32>,
    /// Number of key partials per slice index.
    slice_counts: BTreeMap<i64, usize>,
    invertible: bool,
    /// Slice partials of all keys, allocated in arrival order: the partials a window
    /// merges lie close together.
    arena: Arena,
    /// Running results, `aggs.len()` per key id.
    runs: Vec<Acc>,
    watermark: Watermark,
    /// Every window ending at or before this has fired.
    fired_end: i64,
    metrics: Arc<JobMetrics>,
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
            keys: KeyTable::new(&input.key_fields)?,
            metrics: input.metrics.clone(),
            input,
            states: Vec::new(),
            live: Vec::new(),
            slice_counts: BTreeMap::new(),
            invertible,
            arena: Arena::default(),
            runs: Vec::new(),
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
        self.slice_counts.len()
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

    /// The arena slot of key `id`'s partials of slice `s`, creating key state and the
    /// slice as needed.
    fn slot_of(&mut self, id: usize, s: i64) -> u32 {
        let aggs = &self.input.aggs;
        let n = aggs.len();
        if id >= self.states.len() {
            self.states.resize_with(id + 1, KeyState::default);
            while self.runs.len() < (id + 1) * n {
                self.runs.extend(aggs.iter().map(AggSpec::empty));
            }
        }
        let st = &mut self.states[id];
        if !st.live {
            *st = KeyState {
                slices: VecDeque::new(),
                front: i64::MAX,
                back: i64::MIN,
                run_hi: i64::MIN,
                run_valid: false,
                live: true,
            };
            self.live.push(id as u32);
        }
        // Events arrive nearly in order: look for the slice from the back.
        let pos = st.slices.iter().rposition(|(x, _)| *x <= s);
        match pos {
            Some(p) if st.slices[p].0 == s => st.slices[p].1,
            _ => {
                let at = pos.map_or(0, |p| p + 1);
                let slot = self.arena.alloc(aggs);
                st.slices.insert(at, (s, slot));
                st.sync_ends();
                *self.slice_counts.entry(s).or_default() += 1;
                slot
            }
        }
    }

    fn fire_until(&mut self, wm: Watermark, out: &mut Output) -> Result<()> {
        let step = self.spec.end_step();
        while let Some((&min_slice, _)) = self.slice_counts.first_key_value() {
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

    /// Emits the window ending at `end` and frees what the next window does not need,
    /// in one pass over the live keys.
    fn fire_window(&mut self, end: i64, out: &mut Output) -> Result<()> {
        let start = self.spec.start_of(end);
        let lo = floor_div(start, self.width);
        let hi = floor_div(end, self.width) - 1;
        let next_lo = floor_div(
            self.spec.start_of(end.saturating_add(self.spec.end_step())),
            self.width,
        );
        self.slice_counts = self.slice_counts.split_off(&next_lo);
        let aggs = &self.input.aggs;
        let mut cols: Vec<OutColumn> = aggs.iter().map(OutColumn::for_spec).collect();
        let mut ids = Vec::new();
        let mut emptied = Vec::new();
        let mut i = 0;
        while i < self.live.len() {
            let id = self.live[i];
            let st = &mut self.states[id as usize];
            let n = aggs.len();
            let run = &mut self.runs[id as usize * n..(id as usize + 1) * n];
            pop_before(st, run, lo, self.invertible, &mut self.arena);
            // Partials before the window are gone: the key is in the window iff its
            // first partial is not after it.
            if st.front <= hi {
                if !st.run_valid {
                    for (acc, spec) in run.iter_mut().zip(aggs) {
                        *acc = spec.empty();
                    }
                    st.run_hi = i64::MIN;
                    st.run_valid = true;
                }
                // Only partials after `run_hi` are new; they sit at the back of the deque.
                let news = if st.back > st.run_hi {
                    st.slices.len()
                } else {
                    0
                };
                for (s, slot) in st.slices.iter().rev().take(news) {
                    if *s <= st.run_hi {
                        break;
                    }
                    if *s <= hi {
                        let part = self.arena.get(*slot, n);
                        for ((acc, p), spec) in run.iter_mut().zip(part).zip(aggs) {
                            acc.merge(spec.kind, p);
                        }
                    }
                }
                st.run_hi = hi;
                for ((col, acc), spec) in cols.iter_mut().zip(run.iter()).zip(aggs) {
                    col.append(spec.kind, acc);
                }
                ids.push(id);
            }
            pop_before(st, run, next_lo, self.invertible, &mut self.arena);
            if st.slices.is_empty() {
                st.live = false;
                emptied.push(id);
                self.live.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if !ids.is_empty() {
            let n = ids.len();
            let keys = self.keys.columns(&ids)?;
            out.emit(result_batch(
                &self.schema,
                vec![start; n],
                vec![end; n],
                keys,
                &mut cols,
                aggs,
            )?);
        }
        // Released only now: the key columns above still needed their rows.
        for id in emptied {
            self.keys.release(id);
        }
        Ok(())
    }
}

/// Drops a key's partials of slices `< bound`, retracting them from its running result
/// `run` (or marking it for a re-merge when the aggregates cannot retract), and returns
/// their slots to the arena.
fn pop_before(st: &mut KeyState, run: &mut [Acc], bound: i64, invertible: bool, arena: &mut Arena) {
    let n = run.len();
    if st.front >= bound {
        return;
    }
    while let Some((s, slot)) = st.slices.pop_front_if(|(s, _)| *s < bound) {
        if s <= st.run_hi && st.run_valid {
            if invertible {
                for (acc, p) in run.iter_mut().zip(arena.get(slot, n)) {
                    acc.retract(p);
                }
            } else {
                st.run_valid = false;
            }
        }
        arena.release(slot);
    }
    st.sync_ends();
    if st.front > st.run_hi {
        // Nothing merged is left: the running result is empty again.
        st.run_valid = false;
    }
}

/// Fixed-width groups of partials (`aggs.len()` each) with a free list.
#[derive(Debug, Default)]
struct Arena {
    accs: Vec<Acc>,
    free: Vec<u32>,
    slots: u32,
}

impl Arena {
    /// A slot of empty partials.
    fn alloc(&mut self, aggs: &[AggSpec]) -> u32 {
        if let Some(slot) = self.free.pop() {
            for (acc, spec) in self.get_mut(slot, aggs.len()).iter_mut().zip(aggs) {
                *acc = spec.empty();
            }
            return slot;
        }
        self.accs.extend(aggs.iter().map(AggSpec::empty));
        self.slots += 1;
        self.slots - 1
    }

    fn get(&self, slot: u32, n: usize) -> &[Acc] {
        &self.accs[slot as usize * n..(slot as usize + 1) * n]
    }

    fn get_mut(&mut self, slot: u32, n: usize) -> &mut [Acc] {
        &mut self.accs[slot as usize * n..(slot as usize + 1) * n]
    }

    fn release(&mut self, slot: u32) {
        self.free.push(slot);
    }
}

impl Operator for SlicedWindowOperator {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let BatchView { rows, ts, args } = self.input.view(&self.keys, &batch)?;
        let (mut late, mut no_time) = (0u64, 0u64);
        for row in 0..batch.num_rows() {
            if ts.is_null(row) {
                no_time += 1;
                continue;
            }
            let s = floor_div(ts.value(row), self.width);
            let slice_start = s.saturating_mul(self.width);
            let Some(last_end) = self.spec.last_end_containing(slice_start) else {
                // An absurd event time (windows beyond the representable range).
                no_time += 1;
                continue;
            };
            if last_end <= slice_start {
                // Between two hop windows (size < slide): in no window at all.
                continue;
            }
            if last_end.saturating_sub(1) <= self.watermark.0 {
                late += 1;
                continue;
            }
            let id = self.keys.intern(KeyTable::key_of(&rows, row)) as usize;
            let slot = self.slot_of(id, s);
            let aggs = &self.input.aggs;
            let n = aggs.len();
            let st = &self.states[id];
            for ((acc, spec), arg) in self.arena.get_mut(slot, n).iter_mut().zip(aggs).zip(&args) {
                acc.update(spec.kind, arg, row);
            }
            // A slice that earlier results already merged (some of its windows fired,
            // later ones are open): keep the running result in step with it.
            if st.run_valid && s <= st.run_hi {
                let run = &mut self.runs[id * n..(id + 1) * n];
                for ((acc, spec), arg) in run.iter_mut().zip(aggs).zip(&args) {
                    acc.update(spec.kind, arg, row);
                }
            }
        }
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
        let slots = (self.arena.slots as usize).saturating_sub(self.arena.free.len());
        let partials = slots * self.input.aggs.len() * std::mem::size_of::<Acc>();
        let per_key =
            std::mem::size_of::<KeyState>() + self.input.aggs.len() * std::mem::size_of::<Acc>();
        Some(StateSize {
            keys: self.live.len() as u64,
            slices: slots as u64,
            bytes: (partials + self.keys.bytes() + self.live.len() * per_key) as u64,
        })
    }

    /// State: every key's slice partials (keyed) and the clock. Running results are
    /// not stored; a restored key re-merges its slices at its next result.
    fn on_barrier(&mut self, _barrier: &Barrier, state: &mut StateWriter) -> Result<()> {
        let n = self.input.aggs.len();
        let mut b = StateBuilder::default();
        for &id in &self.live {
            for (s, slot) in &self.states[id as usize].slices {
                b.push(id, *s, *s, self.arena.get(*slot, n));
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
        for row in state.rows {
            let id = self.keys.intern(&row.key) as usize;
            let slot = self.slot_of(id, row.a);
            self.arena.get_mut(slot, n).clone_from_slice(&row.accs);
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
