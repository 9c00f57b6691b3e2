//! Window state in checkpoints. One row per (key, slice) or (key, session): the key
//! columns, the key's group (so that a restore at another parallelism hands each key to
//! its new owner), a time range and the encoded partials. One more row without a key
//! group carries the operator's clock (watermark, last fired window end); the runtime
//! gives rows without a key group to every subtask.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, Int64Array, UInt16Array, new_null_array,
};
use arrow::compute::concat;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt16Type};
use arrow::record_batch::RecordBatch;
use tidewater_core::key::{hash_columns, key_group};
use tidewater_core::{Error, Result};
use tidewater_runtime::KEY_GROUP_COLUMN;

use crate::agg::Acc;
use crate::keys::{KeyTable, OwnedKey};

/// Collects state rows, then builds the batch.
#[derive(Debug, Default)]
pub(crate) struct StateBuilder {
    ids: Vec<u32>,
    a: Vec<i64>,
    b: Vec<i64>,
    partials: BinaryBuilder,
    buf: Vec<u8>,
}

impl StateBuilder {
    /// A row for key `id` with range `(a, b)` (slice index twice, or session start/end).
    pub(crate) fn push(&mut self, id: u32, a: i64, b: i64, accs: &[Acc]) {
        self.buf.clear();
        for acc in accs {
            acc.encode(&mut self.buf);
        }
        self.ids.push(id);
        self.a.push(a);
        self.b.push(b);
        self.partials.append_value(&self.buf);
    }

    /// The state batch; `clock` is the (watermark, fired end) row.
    pub(crate) fn finish(
        mut self,
        keys: &KeyTable,
        key_fields: &[Field],
        clock: (i64, i64),
    ) -> Result<RecordBatch> {
        let n = self.ids.len();
        let key_cols = keys.columns(&self.ids)?;
        let mut hashes = Vec::new();
        hash_columns(&key_cols, n, &mut hashes)?;
        let groups: UInt16Array = std::iter::once(None)
            .chain(hashes.iter().map(|h| Some(key_group(*h) as u16)))
            .collect();
        let mut fields = vec![Field::new(KEY_GROUP_COLUMN, DataType::UInt16, true)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(groups)];
        for (f, col) in key_fields.iter().zip(key_cols) {
            fields.push(f.clone().with_nullable(true));
            let null = new_null_array(f.data_type(), 1);
            columns.push(concat(&[null.as_ref(), col.as_ref()])?);
        }
        fields.push(Field::new("a", DataType::Int64, false));
        fields.push(Field::new("b", DataType::Int64, false));
        fields.push(Field::new("partials", DataType::Binary, true));
        columns.push(Arc::new(Int64Array::from_iter_values(
            std::iter::once(clock.0).chain(self.a),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            std::iter::once(clock.1).chain(self.b),
        )));
        let partials = self.partials.finish();
        let null = new_null_array(&DataType::Binary, 1);
        columns.push(concat(&[null.as_ref(), &partials])?);
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// One keyed row of restored state.
pub(crate) struct RestoredRow {
    /// The key, as the key table holds it.
    pub key: OwnedKey,
    /// The range: slice index twice, or session start and end.
    pub a: i64,
    pub b: i64,
    pub accs: Vec<Acc>,
}

/// Restored state: the newest clock (watermark, fired end) and every keyed row.
pub(crate) struct Restored {
    pub clock: Option<(i64, i64)>,
    pub rows: Vec<RestoredRow>,
}

/// Decodes state batches written by [`StateBuilder::finish`] (several old subtasks'
/// worth) for an operator with `key_columns` key columns and `n` aggregates.
pub(crate) fn decode(
    batches: &[RecordBatch],
    key_columns: usize,
    keys: &KeyTable,
    n: usize,
) -> Result<Restored> {
    let mut out = Restored {
        clock: None,
        rows: Vec::new(),
    };
    for batch in batches {
        let rows = read(batch, key_columns)?;
        let key_rows = keys.rows(&rows.key_columns)?;
        for r in 0..batch.num_rows() {
            if let Some((a, b)) = rows.clock(r) {
                out.clock = Some(out.clock.map_or((a, b), |(x, y)| (x.max(a), y.max(b))));
                continue;
            }
            out.rows.push(RestoredRow {
                key: KeyTable::key_of(&key_rows, r).into(),
                a: rows.a.value(r),
                b: rows.b.value(r),
                accs: rows.accs(r, n)?,
            });
        }
    }
    Ok(out)
}

/// A state batch taken apart.
struct StateRows<'a> {
    /// The key columns (row 0 may be the clock row's nulls).
    pub key_columns: Vec<ArrayRef>,
    pub group: &'a UInt16Array,
    pub a: &'a Int64Array,
    pub b: &'a Int64Array,
    pub partials: &'a BinaryArray,
}

impl StateRows<'_> {
    /// The clock row's (watermark, fired end), if this row is it.
    fn clock(&self, row: usize) -> Option<(i64, i64)> {
        self.group
            .is_null(row)
            .then(|| (self.a.value(row), self.b.value(row)))
    }

    /// The partials of row `row`, `n` of them.
    fn accs(&self, row: usize, n: usize) -> Result<Vec<Acc>> {
        let mut bytes = self.partials.value(row);
        (0..n).map(|_| Acc::decode(&mut bytes)).collect()
    }
}

/// Reads a batch written by [`StateBuilder::finish`] with `keys` key columns.
fn read(batch: &RecordBatch, keys: usize) -> Result<StateRows<'_>> {
    let bad =
        || Error::runtime("window state has an unexpected layout (written by another version?)");
    let cols = batch.columns();
    if cols.len() != keys + 4 {
        return Err(bad());
    }
    Ok(StateRows {
        key_columns: cols[1..=keys].to_vec(),
        group: cols[0].as_primitive_opt::<UInt16Type>().ok_or_else(bad)?,
        a: cols[keys + 1]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(bad)?,
        b: cols[keys + 2]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(bad)?,
        partials: cols[keys + 3].as_binary_opt::<i32>().ok_or_else(bad)?,
    })
}
