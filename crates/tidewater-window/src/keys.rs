//! The key table: grouping keys mapped to dense ids, with ids recycled when a key has no
//! state left.
//!
//! A single integer or string key column is hashed and stored as its values (one map
//! probe per event, no conversion of the batch); any other key (several columns, other
//! types) is interned as Arrow rows and compared as bytes.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type};
use arrow::row::{RowConverter, Rows, SortField};
use hashbrown::HashTable;
use tidewater_core::Result;

// aHash: the key map is probed once per event; SipHash costs twice as much.
type Map<K> = HashMap<K, u32, ahash::RandomState>;

/// How keys are held.
#[derive(Debug)]
enum Store {
    /// One integer column (any width up to 64 bits), as i64.
    Int {
        ty: DataType,
        ids: Map<i64>,
        vals: Vec<Option<i64>>,
    },
    /// One UTF-8 string column. Each key is kept once, in `vals`; the table holds ids
    /// and finds a key's id by its hash and `vals`. A rarely seen key is released with
    /// its last slice and interned again at its next event, over and over, so a new
    /// key costs no allocation when it is short and one when it is long.
    Str {
        ids: HashTable<u32>,
        hasher: ahash::RandomState,
        vals: Vec<StrKey>,
    },
    /// Anything else, as Arrow rows.
    Rows {
        converter: RowConverter,
        ids: HashTable<u32>,
        hasher: ahash::RandomState,
        vals: Vec<Box<[u8]>>,
    },
}

const SHORT: usize = 16;

/// One string key: inline up to `SHORT` bytes (result columns copy it as a fixed-size
/// block, not by a `memcpy` call per key), else on the heap.
#[derive(Debug, Clone, Default)]
enum StrKey {
    /// A recycled id, or the NULL key's.
    #[default]
    Free,
    Short {
        len: u8,
        bytes: [u8; SHORT],
    },
    Long(Box<str>),
}

impl StrKey {
    fn new(s: &str) -> Self {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= SHORT => {
                let mut bytes = [0; SHORT];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                StrKey::Short { len, bytes }
            }
            _ => StrKey::Long(s.into()),
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        match self {
            StrKey::Free => None,
            StrKey::Short { len, bytes } => bytes.get(..usize::from(*len)),
            StrKey::Long(s) => Some(s.as_bytes()),
        }
    }
}

/// Interned grouping keys.
#[derive(Debug)]
pub struct KeyTable {
    store: Store,
    /// The id of the NULL key (single-column stores).
    null_id: Option<u32>,
    free: Vec<u32>,
    /// Live ids.
    live: usize,
    /// Bytes of the live keys' values.
    bytes: usize,
}

/// The keys of one batch, ready for [`KeyTable::key_of`].
#[derive(Debug)]
pub enum BatchKeys {
    /// No key columns: every row has the empty key.
    Empty,
    /// One integer column, as i64.
    Int(Int64Array),
    /// One string column.
    Str(StringArray),
    /// Row-encoded keys.
    Rows(Rows),
}

/// One key, borrowed from a batch or owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// NULL key of a single-column table.
    Null,
    /// Integer key.
    Int(i64),
    /// String key.
    Str(&'a str),
    /// Row-encoded key (the empty key when there are no key columns).
    Bytes(&'a [u8]),
}

/// An owned key (restored from a checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedKey {
    /// NULL key of a single-column table.
    Null,
    /// Integer key.
    Int(i64),
    /// String key.
    Str(Box<str>),
    /// Row-encoded key.
    Bytes(Box<[u8]>),
}

impl OwnedKey {
    /// Borrows it.
    pub fn as_ref(&self) -> KeyRef<'_> {
        match self {
            OwnedKey::Null => KeyRef::Null,
            OwnedKey::Int(v) => KeyRef::Int(*v),
            OwnedKey::Str(s) => KeyRef::Str(s),
            OwnedKey::Bytes(b) => KeyRef::Bytes(b),
        }
    }
}

impl From<KeyRef<'_>> for OwnedKey {
    fn from(k: KeyRef<'_>) -> Self {
        match k {
            KeyRef::Null => OwnedKey::Null,
            KeyRef::Int(v) => OwnedKey::Int(v),
            KeyRef::Str(s) => OwnedKey::Str(s.into()),
            KeyRef::Bytes(b) => OwnedKey::Bytes(b.into()),
        }
    }
}

fn is_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

impl KeyTable {
    /// A table for keys with these fields.
    pub fn new(fields: &[Field]) -> Result<Self> {
        let store = match fields {
            [f] if is_int(f.data_type()) => Store::Int {
                ty: f.data_type().clone(),
                ids: Map::default(),
                vals: Vec::new(),
            },
            [f] if f.data_type() == &DataType::Utf8 => Store::Str {
                ids: HashTable::new(),
                hasher: ahash::RandomState::new(),
                vals: Vec::new(),
            },
            _ => {
                let sort: Vec<SortField> = fields
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect();
                Store::Rows {
                    converter: RowConverter::new(sort)?,
                    ids: HashTable::new(),
                    hasher: ahash::RandomState::new(),
                    vals: Vec::new(),
                }
            }
        };
        Ok(Self {
            store,
            null_id: None,
            free: Vec::new(),
            live: 0,
            bytes: 0,
        })
    }

    /// The keys of a batch's key columns. Without key columns (a global window
    /// aggregate) every row has the empty key.
    pub fn rows(&self, columns: &[ArrayRef]) -> Result<BatchKeys> {
        Ok(match &self.store {
            Store::Int { .. } => BatchKeys::Int(
                cast(&columns[0], &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            Store::Str { .. } => BatchKeys::Str(columns[0].as_string::<i32>().clone()),
            Store::Rows { .. } if columns.is_empty() => BatchKeys::Empty,
            Store::Rows { converter, .. } => BatchKeys::Rows(converter.convert_columns(columns)?),
        })
    }

    /// The key of row `i`.
    #[inline]
    pub fn key_of(keys: &BatchKeys, i: usize) -> KeyRef<'_> {
        match keys {
            BatchKeys::Empty => KeyRef::Bytes(&[]),
            BatchKeys::Int(a) if a.is_null(i) => KeyRef::Null,
            BatchKeys::Int(a) => KeyRef::Int(a.value(i)),
            BatchKeys::Str(a) if a.is_null(i) => KeyRef::Null,
            BatchKeys::Str(a) => KeyRef::Str(a.value(i)),
            BatchKeys::Rows(r) => KeyRef::Bytes(r.row(i).data()),
        }
    }

    /// A fresh id (recycled if possible) whose slot in `vals` is then set by the caller.
    fn next_id<T: Default>(free: &mut Vec<u32>, vals: &mut Vec<T>) -> u32 {
        match free.pop() {
            Some(id) => id,
            None => {
                vals.push(T::default());
                (vals.len() - 1) as u32
            }
        }
    }

    /// The id of `key`, interning it if new.
    #[inline]
    pub fn intern(&mut self, key: KeyRef<'_>) -> u32 {
        if key == KeyRef::Null {
            if let Some(id) = self.null_id {
                return id;
            }
            let id = match &mut self.store {
                Store::Int { vals, .. } => Self::next_id(&mut self.free, vals),
                Store::Str { vals, .. } => Self::next_id(&mut self.free, vals),
                Store::Rows { vals, .. } => Self::next_id(&mut self.free, vals),
            };
            self.null_id = Some(id);
            self.live += 1;
            return id;
        }
        match (&mut self.store, key) {
            (Store::Int { ids, vals, .. }, KeyRef::Int(v)) => {
                if let Some(id) = ids.get(&v) {
                    return *id;
                }
                let id = Self::next_id(&mut self.free, vals);
                vals[id as usize] = Some(v);
                ids.insert(v, id);
                self.bytes += 8;
                self.live += 1;
                id
            }
            (Store::Str { ids, hasher, vals }, KeyRef::Str(s)) => {
                let b = s.as_bytes();
                let hash = hasher.hash_one(b);
                if let Some(id) = ids.find(hash, |&id| vals[id as usize].bytes() == Some(b)) {
                    return *id;
                }
                let id = Self::next_id(&mut self.free, vals);
                vals[id as usize] = StrKey::new(s);
                ids.insert_unique(hash, id, |&id| {
                    hasher.hash_one(vals[id as usize].bytes().unwrap_or_default())
                });
                self.bytes += s.len();
                self.live += 1;
                id
            }
            (
                Store::Rows {
                    ids, hasher, vals, ..
                },
                KeyRef::Bytes(b),
            ) => {
                let hash = hasher.hash_one(b);
                if let Some(id) = ids.find(hash, |&id| *vals[id as usize] == *b) {
                    return *id;
                }
                let id = Self::next_id(&mut self.free, vals);
                vals[id as usize] = b.into();
                ids.insert_unique(hash, id, |&id| hasher.hash_one(&*vals[id as usize]));
                self.bytes += b.len();
                self.live += 1;
                id
            }
            // A key of another shape than the table's: cannot happen (keys come from
            // `rows` or from state decoded with it); give it the NULL key's id rather
            // than panic.
            _ => self.intern(KeyRef::Null),
        }
    }

    /// Forgets `id`; it may be handed out again.
    pub fn release(&mut self, id: u32) {
        if self.null_id == Some(id) {
            self.null_id = None;
        } else {
            match &mut self.store {
                Store::Int { ids, vals, .. } => {
                    let Some(v) = vals.get_mut(id as usize).and_then(Option::take) else {
                        return;
                    };
                    ids.remove(&v);
                    self.bytes -= 8;
                }
                Store::Str { ids, hasher, vals } => {
                    let Some(key) = vals.get_mut(id as usize).map(std::mem::take) else {
                        return;
                    };
                    let Some(s) = key.bytes() else {
                        return;
                    };
                    if let Ok(entry) = ids.find_entry(hasher.hash_one(s), |&i| i == id) {
                        entry.remove();
                    }
                    self.bytes -= s.len();
                }
                Store::Rows {
                    ids, hasher, vals, ..
                } => {
                    let Some(row) = vals.get_mut(id as usize).map(std::mem::take) else {
                        return;
                    };
                    // A free slot is empty like the empty key: only a live id is found.
                    let Ok(entry) = ids.find_entry(hasher.hash_one(&*row), |&i| i == id) else {
                        return;
                    };
                    entry.remove();
                    self.bytes -= row.len();
                }
            }
        }
        self.live -= 1;
        self.free.push(id);
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Approximate bytes held for the live keys: their values (integers twice, in map
    /// and list) and a slot each.
    pub fn bytes(&self) -> usize {
        let copies = if matches!(self.store, Store::Int { .. }) {
            2
        } else {
            1
        };
        self.bytes * copies + self.live * 48
    }

    /// True when no key is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The key columns for `ids`, in order.
    pub fn columns(&self, ids: &[u32]) -> Result<Vec<ArrayRef>> {
        let null = self.null_id;
        Ok(match &self.store {
            Store::Int { ty, vals, .. } => {
                let a: Int64Array = ids
                    .iter()
                    .map(|&id| {
                        if Some(id) == null {
                            None
                        } else {
                            vals[id as usize]
                        }
                    })
                    .collect();
                let a: ArrayRef = Arc::new(a);
                vec![if ty == &DataType::Int64 {
                    a
                } else {
                    cast(&a, ty)?
                }]
            }
            Store::Str { vals, .. } => {
                let get = |id: u32| {
                    if Some(id) == null {
                        None
                    } else {
                        vals.get(id as usize)
                    }
                };
                let bytes: usize = ids
                    .iter()
                    .map(|&id| get(id).and_then(StrKey::bytes).map_or(0, <[u8]>::len))
                    .sum();
                let mut values: Vec<u8> = Vec::with_capacity(bytes + SHORT);
                let mut offsets: Vec<i32> = Vec::with_capacity(ids.len() + 1);
                offsets.push(0);
                for &id in ids {
                    match get(id) {
                        None | Some(StrKey::Free) => {}
                        Some(StrKey::Short { len, bytes }) => {
                            // A fixed-size copy, then cut back to the key's length.
                            let at = values.len();
                            values.extend_from_slice(bytes);
                            values.truncate(at + usize::from(*len));
                        }
                        Some(StrKey::Long(s)) => values.extend_from_slice(s.as_bytes()),
                    }
                    offsets.push(i32::try_from(values.len()).map_err(|_| {
                        tidewater_core::Error::runtime("result keys exceed 2 GiB in one batch")
                    })?);
                }
                let nulls = null
                    .filter(|n| ids.contains(n))
                    .map(|n| NullBuffer::from_iter(ids.iter().map(|&id| id != n)));
                // The values are whole keys of valid UTF-8, back to back.
                vec![Arc::new(StringArray::try_new(
                    OffsetBuffer::new(offsets.into()),
                    values.into(),
                    nulls,
                )?)]
            }
            Store::Rows {
                converter, vals, ..
            } => {
                let parser = converter.parser();
                let rows = ids.iter().map(|id| parser.parse(&vals[*id as usize]));
                converter.convert_rows(rows)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray};

    fn ids_of(t: &mut KeyTable, col: ArrayRef) -> Vec<u32> {
        let keys = t.rows(std::slice::from_ref(&col)).expect("rows");
        (0..col.len())
            .map(|i| t.intern(KeyTable::key_of(&keys, i)))
            .collect()
    }

    #[test]
    fn int_keys_with_null_round_trip_and_recycle_ids() {
        let mut t = KeyTable::new(&[Field::new("k", DataType::Int32, true)]).expect("table");
        let col: ArrayRef = Arc::new(Int32Array::from(vec![
            Some(7),
            None,
            Some(-3),
            Some(7),
            None,
        ]));
        let ids = ids_of(&mut t, col);
        assert_eq!(ids[0], ids[3]);
        assert_eq!(ids[1], ids[4]);
        assert_eq!(t.len(), 3);
        let cols = t.columns(&[ids[2], ids[1], ids[0]]).expect("columns");
        let want: ArrayRef = Arc::new(Int32Array::from(vec![Some(-3), None, Some(7)]));
        assert_eq!(&cols[0], &want);
        t.release(ids[1]);
        t.release(ids[0]);
        assert_eq!(t.len(), 1);
        let again = ids_of(&mut t, Arc::new(Int32Array::from(vec![Some(9), None])));
        assert_eq!(t.len(), 3);
        let cols = t.columns(&again).expect("columns");
        let want: ArrayRef = Arc::new(Int32Array::from(vec![Some(9), None]));
        assert_eq!(&cols[0], &want);
    }

    #[test]
    fn string_keys_with_null_round_trip_and_recycle_ids() {
        let mut t = KeyTable::new(&[Field::new("k", DataType::Utf8, true)]).expect("table");
        let col: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            None,
            Some("b"),
            Some("a"),
        ]));
        let ids = ids_of(&mut t, col);
        assert_eq!(ids[0], ids[3]);
        assert_eq!(t.len(), 3);
        t.release(ids[0]);
        let b = t.intern(KeyRef::Str("b"));
        assert_eq!(b, ids[2]);
        let c = t.intern(KeyRef::Str("c"));
        assert_eq!(c, ids[0], "the released id is recycled");
        let cols = t.columns(&[c, ids[1], b]).expect("columns");
        let want: ArrayRef = Arc::new(StringArray::from(vec![Some("c"), None, Some("b")]));
        assert_eq!(&cols[0], &want);
        assert_eq!(t.intern(OwnedKey::from(KeyRef::Null).as_ref()), ids[1]);
        let long = t.intern(KeyRef::Str("a key longer than sixteen bytes"));
        let cols = t.columns(&[b, long, ids[1], long]).expect("columns");
        let want: ArrayRef = Arc::new(StringArray::from(vec![
            Some("b"),
            Some("a key longer than sixteen bytes"),
            None,
            Some("a key longer than sixteen bytes"),
        ]));
        assert_eq!(&cols[0], &want);
    }

    /// Against a map of the live keys, for a string key and for a two-column key (Arrow
    /// rows): a live key keeps its id, live keys never share one, a released key is
    /// interned anew, and the columns give the keys back.
    #[test]
    fn keys_agree_with_a_map_through_interning_and_release() {
        use arrow::array::Int64Array;
        use proptest::prelude::*;
        let key = prop_oneof![
            (0u8..20).prop_map(|i| format!("k{i}")),
            (0u8..20).prop_map(|i| format!("a key longer than sixteen bytes {i}")),
            Just(String::new()),
        ];
        // (true, key): intern it; (false, key): release its id if live.
        let ops = proptest::collection::vec((any::<bool>(), key), 1..200);
        // The two-column key: the string and its length.
        let columns = |names: &[String]| -> Vec<ArrayRef> {
            vec![
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(Int64Array::from_iter_values(
                    names.iter().map(|n| n.len() as i64),
                )),
            ]
        };
        proptest!(|(ops in ops, wide in any::<bool>())| {
            let fields = if wide {
                vec![Field::new("k", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]
            } else {
                vec![Field::new("k", DataType::Utf8, true)]
            };
            let mut t = KeyTable::new(&fields).expect("table");
            let mut live: HashMap<String, u32> = HashMap::new();
            for (intern, k) in ops {
                if intern {
                    let cols = columns(std::slice::from_ref(&k));
                    let keys = t.rows(&cols[..fields.len()]).expect("rows");
                    let id = t.intern(KeyTable::key_of(&keys, 0));
                    match live.get(&k) {
                        Some(&was) => prop_assert_eq!(id, was),
                        None => {
                            prop_assert!(!live.values().any(|&v| v == id), "id {} reused", id);
                            live.insert(k, id);
                        }
                    }
                } else if let Some(id) = live.remove(&k) {
                    t.release(id);
                }
                prop_assert_eq!(t.len(), live.len());
            }
            let (names, ids): (Vec<String>, Vec<u32>) = live.into_iter().unzip();
            let got = t.columns(&ids).expect("columns");
            prop_assert_eq!(&got[..], &columns(&names)[..fields.len()]);
        });
    }
}
