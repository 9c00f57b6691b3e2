//! Session windows: per key, events less than `gap` apart share a window `[first,
//! last + gap)`. A new event may bridge two sessions, which then merge.
//!
//! Lateness: an event at or behind the watermark is late. That is stricter than a
//! per-window check but guarantees a late event can never merge into a session that has
//! already fired (append semantics: a result is emitted once and never changed).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Result, Watermark};
use tidewater_runtime::{Barrier, Operator, Output, RestoredState, StateSize, StateWriter};

use crate::agg::{Acc, AggSpec, ArgView, OutColumn, result_batch};
use crate::keys::{KeyRef, KeyTable};
use crate::state::{self, StateBuilder};
use crate::{BatchView, WindowInput, WindowSpec, describe_aggs};

#[derive(Debug)]
struct Session {
    start: i64,
    end: i64,
    accs: Box<[Acc]>,
}

#[derive(Debug, Default)]
struct KeySessions {
    sessions: Vec<Session>,
    live: bool,
}

/// The session window operator (see the module docs).
#[derive(Debug)]
pub struct SessionWindowOperator {
    gap: i64,
    input: WindowInput,
    schema: SchemaRef,
    keys: KeyTable,
    states: Vec<KeySessions>,
    /// (session end, key): when to look at a key again. Stale entries are harmless.
    timers: BTreeSet<(i64, u32)>,
    watermark: Watermark,
    metrics: Arc<JobMetrics>,
}

impl SessionWindowOperator {
    /// An operator for session windows with inactivity `gap` (ms).
    pub fn new(gap: i64, input: WindowInput) -> Result<Self> {
        WindowSpec::Session { gap }.validate()?;
        Ok(Self {
            gap,
            schema: input.output_schema(),
            keys: KeyTable::new(&input.key_fields)?,
            metrics: input.metrics.clone(),
            input,
            states: Vec::new(),
            timers: BTreeSet::new(),
            watermark: Watermark::MIN,
        })
    }

    /// The id of `key`, with live (possibly empty) session state.
    fn intern(&mut self, key: KeyRef<'_>) -> usize {
        let id = self.keys.intern(key) as usize;
        if id >= self.states.len() {
            self.states.resize_with(id + 1, KeySessions::default);
        }
        if !self.states[id].live {
            self.states[id] = KeySessions {
                sessions: Vec::new(),
                live: true,
            };
        }
        id
    }

    fn add_event(&mut self, id: usize, ts: i64, args: &[ArgView], row: usize) {
        let (start, end) = (ts, ts.saturating_add(self.gap));
        let aggs = &self.input.aggs;
        let st = &mut self.states[id];
        let overlapping: Vec<usize> = st
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start < end && start < s.end)
            .map(|(i, _)| i)
            .collect();
        let target = match overlapping.first() {
            Some(&i) => i,
            None => {
                st.sessions.push(Session {
                    start,
                    end,
                    accs: aggs.iter().map(AggSpec::empty).collect(),
                });
                st.sessions.len() - 1
            }
        };
        let others = overlapping.get(1..).unwrap_or_default();
        // Merge the other overlapping sessions into the target, last first so indices hold.
        for &i in others.iter().rev() {
            let s = st.sessions.remove(i);
            let t = &mut st.sessions[target];
            t.start = t.start.min(s.start);
            t.end = t.end.max(s.end);
            for ((a, b), spec) in t.accs.iter_mut().zip(s.accs.iter()).zip(aggs) {
                a.merge(spec.kind, b);
            }
        }
        let t = &mut st.sessions[target];
        t.start = t.start.min(start);
        t.end = t.end.max(end);
        for ((acc, spec), arg) in t.accs.iter_mut().zip(aggs).zip(args) {
            acc.update(spec.kind, arg, row);
        }
        self.timers.insert((t.end, id as u32));
    }

    fn fire_until(&mut self, wm: Watermark, out: &mut Output) -> Result<()> {
        let aggs = &self.input.aggs;
        let mut cols: Vec<OutColumn> = aggs.iter().map(OutColumn::for_spec).collect();
        let (mut starts, mut ends, mut ids, mut emptied) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        while let Some(&(end, id)) = self.timers.first() {
            if end.saturating_sub(1) > wm.0 {
                break;
            }
            self.timers.pop_first();
            let st = &mut self.states[id as usize];
            let mut i = 0;
            while i < st.sessions.len() {
                if st.sessions[i].end.saturating_sub(1) <= wm.0 {
                    let s = st.sessions.remove(i);
                    starts.push(s.start);
                    ends.push(s.end);
                    ids.push(id);
                    for ((col, acc), spec) in cols.iter_mut().zip(s.accs.iter()).zip(aggs) {
                        col.append(spec.kind, acc);
                    }
                } else {
                    i += 1;
                }
            }
            if st.sessions.is_empty() && st.live {
                st.live = false;
                emptied.push(id);
            }
        }
        if !ids.is_empty() {
            let keys = self.keys.columns(&ids)?;
            out.emit(result_batch(
                &self.schema,
                starts,
                ends,
                keys,
                &mut cols,
                aggs,
            )?);
        }
        for id in emptied {
            self.keys.release(id);
        }
        Ok(())
    }
}

impl Operator for SessionWindowOperator {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let BatchView { rows, ts, args } = self.input.view(&self.keys, &batch)?;
        let (mut late, mut no_time) = (0u64, 0u64);
        for row in 0..batch.num_rows() {
            if ts.is_null(row) {
                no_time += 1;
                continue;
            }
            let t = ts.value(row);
            if t <= self.watermark.0 {
                late += 1;
                continue;
            }
            let id = self.intern(KeyTable::key_of(&rows, row));
            self.add_event(id, t, &args, row);
        }
        JobMetrics::add(&self.metrics.late_events, late);
        JobMetrics::add(&self.metrics.dead_letters, no_time);
        Ok(())
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(wm);
        self.fire_until(wm, out)
    }

    fn on_end(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = Watermark::MAX;
        self.fire_until(Watermark::MAX, out)
    }

    fn state_size(&self) -> Option<StateSize> {
        // Timers approximate the open sessions (stale entries are few).
        let sessions = self.timers.len();
        Some(StateSize {
            keys: self.keys.len() as u64,
            slices: sessions as u64,
            bytes: (self.keys.bytes()
                + sessions * (16 + self.input.aggs.len() * std::mem::size_of::<Acc>()))
                as u64,
        })
    }

    /// State: every open session of every key (keyed) and the watermark.
    fn on_barrier(&mut self, _barrier: &Barrier, state: &mut StateWriter) -> Result<()> {
        let mut b = StateBuilder::default();
        for (id, st) in self.states.iter().enumerate() {
            if st.live {
                for s in &st.sessions {
                    b.push(id as u32, s.start, s.end, &s.accs);
                }
            }
        }
        state.write(b.finish(&self.keys, &self.input.key_fields, (self.watermark.0, 0))?);
        Ok(())
    }

    fn restore(&mut self, restored: RestoredState) -> Result<()> {
        let n = self.input.aggs.len();
        let state = state::decode(&restored.batches, self.input.key_columns, &self.keys, n)?;
        if let Some((wm, _)) = state.clock {
            self.watermark = self.watermark.max(Watermark(wm));
        }
        for row in state.rows {
            let id = self.intern(row.key.as_ref());
            self.states[id].sessions.push(Session {
                start: row.a,
                end: row.b,
                accs: row.accs.into(),
            });
            self.timers.insert((row.b, id as u32));
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!(
            "Window[SESSION gap {} ms]{}",
            self.gap,
            describe_aggs(&self.input)
        )
    }
}
