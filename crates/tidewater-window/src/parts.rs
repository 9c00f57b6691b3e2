//! Partial aggregates held column-wise: one [`Parts`] holds one aggregate's partials
//! for many entries (the keys of a slice, or every key's running window result), as
//! plain vectors for counts and sums and as [`Acc`] values for the rest. Updating,
//! merging and retracting a count or sum is then an add on a vector element, with no
//! enum to match per element and no per-entry allocation.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array};
use arrow::buffer::NullBuffer;
use tidewater_core::Result;

use crate::agg::{Acc, AggKind, AggSpec, ArgView, OutColumn};

/// One aggregate's partials, indexed by entry.
#[derive(Debug)]
pub(crate) enum Parts {
    /// `COUNT(*)` and `COUNT(x)`.
    Count(Vec<i64>),
    /// Integer `SUM`/`AVG`: the sum and the number of non-null values.
    SumI { sum: Vec<i64>, n: Vec<i64> },
    /// Float `SUM`/`AVG`.
    SumF { sum: Vec<f64>, n: Vec<i64> },
    /// MIN, MAX, COUNT(DISTINCT): general partials.
    Acc(Vec<Acc>),
}

impl Parts {
    /// No entries, for `spec`.
    pub(crate) fn new(spec: &AggSpec) -> Self {
        match spec.empty() {
            Acc::Count(_) => Parts::Count(Vec::new()),
            Acc::SumI { .. } => Parts::SumI {
                sum: Vec::new(),
                n: Vec::new(),
            },
            Acc::SumF { .. } => Parts::SumF {
                sum: Vec::new(),
                n: Vec::new(),
            },
            _ => Parts::Acc(Vec::new()),
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            Parts::Count(c) => c.len(),
            Parts::SumI { n, .. } | Parts::SumF { n, .. } => n.len(),
            Parts::Acc(a) => a.len(),
        }
    }

    /// Appends an empty entry.
    #[inline]
    pub(crate) fn push_empty(&mut self, spec: &AggSpec) {
        match self {
            Parts::Count(c) => c.push(0),
            Parts::SumI { sum, n } => {
                sum.push(0);
                n.push(0);
            }
            Parts::SumF { sum, n } => {
                sum.push(0.0);
                n.push(0);
            }
            Parts::Acc(a) => a.push(spec.empty()),
        }
    }

    /// Empties entry `i`.
    #[inline]
    pub(crate) fn reset(&mut self, i: usize, spec: &AggSpec) {
        match self {
            Parts::Count(c) => c[i] = 0,
            Parts::SumI { sum, n } => {
                sum[i] = 0;
                n[i] = 0;
            }
            Parts::SumF { sum, n } => {
                sum[i] = 0.0;
                n[i] = 0;
            }
            Parts::Acc(a) => a[i] = spec.empty(),
        }
    }

    /// Removes every entry, keeping the allocation.
    pub(crate) fn clear(&mut self) {
        match self {
            Parts::Count(c) => c.clear(),
            Parts::SumI { sum, n } => {
                sum.clear();
                n.clear();
            }
            Parts::SumF { sum, n } => {
                sum.clear();
                n.clear();
            }
            Parts::Acc(a) => a.clear(),
        }
    }

    /// Adds row `row` of `arg` to entry `i`.
    #[inline]
    pub(crate) fn update(&mut self, i: usize, kind: AggKind, arg: &ArgView, row: usize) {
        match (self, arg) {
            (Parts::Count(c), ArgView::None) => c[i] += 1,
            (Parts::Count(c), ArgView::Any(a)) => c[i] += i64::from(a.is_valid(row)),
            (Parts::SumI { sum, n }, ArgView::Int(a)) if a.is_valid(row) => {
                sum[i] = sum[i].wrapping_add(a.value(row));
                n[i] += 1;
            }
            (Parts::SumF { sum, n }, ArgView::Float(a)) if a.is_valid(row) => {
                sum[i] += a.value(row);
                n[i] += 1;
            }
            (Parts::Acc(accs), arg) => accs[i].update(kind, arg, row),
            _ => {}
        }
    }

    /// Merges entry `j` of `other` into entry `i`.
    #[inline]
    pub(crate) fn merge(&mut self, i: usize, kind: AggKind, other: &Parts, j: usize) {
        match (self, other) {
            (Parts::Count(a), Parts::Count(b)) => a[i] += b[j],
            (Parts::SumI { sum, n }, Parts::SumI { sum: s2, n: n2 }) => {
                sum[i] = sum[i].wrapping_add(s2[j]);
                n[i] += n2[j];
            }
            (Parts::SumF { sum, n }, Parts::SumF { sum: s2, n: n2 }) => {
                sum[i] += s2[j];
                n[i] += n2[j];
            }
            (Parts::Acc(a), Parts::Acc(b)) => a[i].merge(kind, &b[j]),
            _ => {}
        }
    }

    /// Undoes `merge(i, other, j)`; only for invertible aggregates.
    #[inline]
    pub(crate) fn retract(&mut self, i: usize, other: &Parts, j: usize) {
        match (self, other) {
            (Parts::Count(a), Parts::Count(b)) => a[i] -= b[j],
            (Parts::SumI { sum, n }, Parts::SumI { sum: s2, n: n2 }) => {
                sum[i] = sum[i].wrapping_sub(s2[j]);
                n[i] -= n2[j];
            }
            (Parts::Acc(a), Parts::Acc(b)) => a[i].retract(&b[j]),
            _ => {}
        }
    }

    /// Adds row `row` of `arg` to entry `i`, for each `(row, i)` in `hits`: the loop
    /// of [`Parts::update`] with the match taken once.
    pub(crate) fn update_many(&mut self, kind: AggKind, arg: &ArgView, hits: &[(u32, u32)]) {
        match (self, arg) {
            (Parts::Count(c), ArgView::None) => {
                for &(_, i) in hits {
                    c[i as usize] += 1;
                }
            }
            (Parts::SumI { sum, n }, ArgView::Int(a)) if a.null_count() == 0 => {
                let v = a.values();
                for &(row, i) in hits {
                    let i = i as usize;
                    sum[i] = sum[i].wrapping_add(v[row as usize]);
                    n[i] += 1;
                }
            }
            (Parts::SumF { sum, n }, ArgView::Float(a)) if a.null_count() == 0 => {
                let v = a.values();
                for &(row, i) in hits {
                    let i = i as usize;
                    sum[i] += v[row as usize];
                    n[i] += 1;
                }
            }
            (parts, arg) => {
                for &(row, i) in hits {
                    parts.update(i as usize, kind, arg, row as usize);
                }
            }
        }
    }

    /// Merges entry `p` of `other` into entry `ids[p]`, for every entry of `other`.
    pub(crate) fn merge_many(&mut self, kind: AggKind, other: &Parts, ids: &[u32]) {
        match (self, other) {
            (Parts::Count(a), Parts::Count(b)) => {
                for (&id, v) in ids.iter().zip(b) {
                    a[id as usize] += v;
                }
            }
            (Parts::SumI { sum, n }, Parts::SumI { sum: s2, n: n2 }) => {
                for ((&id, s), k) in ids.iter().zip(s2).zip(n2) {
                    let i = id as usize;
                    sum[i] = sum[i].wrapping_add(*s);
                    n[i] += k;
                }
            }
            (Parts::SumF { sum, n }, Parts::SumF { sum: s2, n: n2 }) => {
                for ((&id, s), k) in ids.iter().zip(s2).zip(n2) {
                    let i = id as usize;
                    sum[i] += s;
                    n[i] += k;
                }
            }
            (me, other) => {
                for (p, &id) in ids.iter().enumerate() {
                    me.merge(id as usize, kind, other, p);
                }
            }
        }
    }

    /// Undoes [`Parts::merge_many`]; only for invertible aggregates.
    pub(crate) fn retract_many(&mut self, other: &Parts, ids: &[u32]) {
        match (self, other) {
            (Parts::Count(a), Parts::Count(b)) => {
                for (&id, v) in ids.iter().zip(b) {
                    a[id as usize] -= v;
                }
            }
            (Parts::SumI { sum, n }, Parts::SumI { sum: s2, n: n2 }) => {
                for ((&id, s), k) in ids.iter().zip(s2).zip(n2) {
                    let i = id as usize;
                    sum[i] = sum[i].wrapping_sub(*s);
                    n[i] -= k;
                }
            }
            (me, other) => {
                for (p, &id) in ids.iter().enumerate() {
                    me.retract(id as usize, other, p);
                }
            }
        }
    }

    /// The results of entries `ids`, as the aggregate's output column.
    pub(crate) fn column(&self, spec: &AggSpec, ids: &[u32]) -> Result<ArrayRef> {
        // NULL where no value was aggregated (SUM and AVG of nothing).
        let nulls = |n: &[i64]| {
            ids.iter()
                .any(|&id| n[id as usize] == 0)
                .then(|| NullBuffer::from_iter(ids.iter().map(|&id| n[id as usize] != 0)))
        };
        let avg = spec.kind == AggKind::Avg;
        Ok(match self {
            Parts::Count(c) => Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&id| c[id as usize]),
            )),
            Parts::SumI { sum, n } => {
                let values = ids
                    .iter()
                    .map(|&id| {
                        let (s, k) = (sum[id as usize], n[id as usize]);
                        if avg && k != 0 { s.wrapping_div(k) } else { s }
                    })
                    .collect();
                Arc::new(Int64Array::new(values, nulls(n)))
            }
            Parts::SumF { sum, n } => {
                let values = ids
                    .iter()
                    .map(|&id| {
                        let (s, k) = (sum[id as usize], n[id as usize]);
                        if avg && k != 0 { s / k as f64 } else { s }
                    })
                    .collect();
                Arc::new(Float64Array::new(values, nulls(n)))
            }
            Parts::Acc(_) => {
                let mut col = OutColumn::with_capacity(spec, ids.len());
                for &id in ids {
                    self.append(id as usize, spec.kind, &mut col);
                }
                return col.finish(spec);
            }
        })
    }

    /// Entry `i` as a standalone partial (for checkpoints).
    pub(crate) fn get(&self, i: usize) -> Acc {
        match self {
            Parts::Count(c) => Acc::Count(c[i]),
            Parts::SumI { sum, n } => Acc::SumI {
                sum: sum[i],
                n: n[i],
            },
            Parts::SumF { sum, n } => Acc::SumF {
                sum: sum[i],
                n: n[i],
            },
            Parts::Acc(a) => a[i].clone(),
        }
    }

    /// Overwrites entry `i` with `acc` (from a checkpoint); a partial of another kind
    /// is ignored.
    pub(crate) fn set(&mut self, i: usize, acc: Acc) {
        match (self, acc) {
            (Parts::Count(c), Acc::Count(v)) => c[i] = v,
            (Parts::SumI { sum, n }, Acc::SumI { sum: s, n: k }) => {
                sum[i] = s;
                n[i] = k;
            }
            (Parts::SumF { sum, n }, Acc::SumF { sum: s, n: k }) => {
                sum[i] = s;
                n[i] = k;
            }
            (Parts::Acc(a), acc) => a[i] = acc,
            _ => {}
        }
    }

    /// Appends the final value of entry `i` to `col`.
    #[inline]
    pub(crate) fn append(&self, i: usize, kind: AggKind, col: &mut OutColumn) {
        match (self, col) {
            (Parts::Count(c), OutColumn::Int(b)) => b.append_value(c[i]),
            (Parts::SumI { sum, n }, OutColumn::Int(b)) => match (kind, n[i]) {
                (_, 0) => b.append_null(),
                (AggKind::Avg, k) => b.append_value(sum[i].wrapping_div(k)),
                _ => b.append_value(sum[i]),
            },
            (Parts::SumF { sum, n }, OutColumn::Float(b)) => match (kind, n[i]) {
                (_, 0) => b.append_null(),
                (AggKind::Avg, k) => b.append_value(sum[i] / k as f64),
                _ => b.append_value(sum[i]),
            },
            (Parts::Acc(a), col) => col.append(kind, &a[i]),
            // Unreachable by construction (`OutColumn::for_spec` matches `Parts::new`).
            (_, OutColumn::Int(b)) => b.append_null(),
            (_, OutColumn::Float(b)) => b.append_null(),
            (_, OutColumn::Str(b)) => b.append_null(),
        }
    }

    /// Approximate bytes per entry.
    pub(crate) fn entry_bytes(&self) -> usize {
        match self {
            Parts::Count(_) => 8,
            Parts::SumI { .. } | Parts::SumF { .. } => 16,
            Parts::Acc(_) => std::mem::size_of::<Acc>(),
        }
    }
}
