//! The key table: grouping keys interned as Arrow rows (any key types, compared as bytes)
//! and mapped to dense ids, with ids recycled when a key has no state left.

use std::collections::HashMap;

use arrow::array::ArrayRef;
use arrow::datatypes::Field;
use arrow::row::{RowConverter, Rows, SortField};
use tidewater_core::Result;

/// Interned grouping keys.
#[derive(Debug)]
pub struct KeyTable {
    converter: RowConverter,
    // aHash: the key map is probed once per event; SipHash costs twice as much.
    ids: HashMap<Box<[u8]>, u32, ahash::RandomState>,
    rows: Vec<Box<[u8]>>,
    free: Vec<u32>,
    /// Bytes of the live keys' rows.
    bytes: usize,
}

impl KeyTable {
    /// A table for keys with these fields.
    pub fn new(fields: &[Field]) -> Result<Self> {
        let sort: Vec<SortField> = fields
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            converter: RowConverter::new(sort)?,
            ids: HashMap::default(),
            rows: Vec::new(),
            free: Vec::new(),
            bytes: 0,
        })
    }

    /// Converts a batch's key columns to rows. Without key columns (a global window
    /// aggregate) there are no rows; use [`KeyTable::key_of`] to read them either way.
    pub fn rows(&self, columns: &[ArrayRef]) -> Result<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }

    /// The key of row `i`: its row bytes, or the empty key when there are no key columns.
    #[inline]
    pub fn key_of(rows: &Rows, i: usize) -> &[u8] {
        if rows.num_rows() == 0 {
            &[]
        } else {
            rows.row(i).data()
        }
    }

    /// The id of `row`, interning it if new.
    #[inline]
    pub fn intern(&mut self, row: &[u8]) -> u32 {
        if let Some(id) = self.ids.get(row) {
            return *id;
        }
        let boxed: Box<[u8]> = row.into();
        self.bytes += row.len();
        let id = match self.free.pop() {
            Some(id) => {
                self.rows[id as usize] = boxed.clone();
                id
            }
            None => {
                self.rows.push(boxed.clone());
                (self.rows.len() - 1) as u32
            }
        };
        self.ids.insert(boxed, id);
        id
    }

    /// Forgets `id`; it may be handed out again.
    pub fn release(&mut self, id: u32) {
        if let Some(row) = self.rows.get_mut(id as usize) {
            let row = std::mem::take(row);
            self.bytes -= row.len();
            self.ids.remove(&row);
            self.free.push(id);
        }
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Approximate bytes held for the live keys (their rows, twice: map and list).
    pub fn bytes(&self) -> usize {
        self.bytes * 2 + self.ids.len() * 48
    }

    /// True when no key is live.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The key columns for `ids`, in order.
    pub fn columns(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let rows = ids.iter().map(|id| parser.parse(&self.rows[*id as usize]));
        Ok(self.converter.convert_rows(rows)?)
    }
}
