//! Key hashing and key groups.
//!
//! State is sharded by key group (ARCHITECTURE.md, invariant): a row's key group is
//! `hash(key) % KEY_GROUPS`, and key groups map to subtasks in contiguous ranges (as in
//! Flink), so state can later move between subtasks without being re-keyed. The hash is
//! seeded with constants so it is the same in every process.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMillisecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::{Error, Result};

/// Number of key groups, the maximum parallelism of a keyed operator.
pub const KEY_GROUPS: u32 = 128;

fn state() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x7469_6465, 0x7761_7465, 0x7220_6b65, 0x7920_6772)
}

/// Writes one hash per row of `columns` into `out` (cleared first).
pub fn hash_columns(columns: &[ArrayRef], rows: usize, out: &mut Vec<u64>) -> Result<()> {
    let rs = state();
    out.clear();
    out.resize(rows, 0x9e37_79b9_7f4a_7c15);
    for col in columns {
        hash_into(&rs, col.as_ref(), out)?;
    }
    Ok(())
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x100_0000_01b3).rotate_left(23)
}

macro_rules! hash_prim {
    ($rs:expr, $arr:expr, $ty:ty, $out:expr, $conv:expr) => {{
        let a = $arr.as_primitive::<$ty>();
        for (i, h) in $out.iter_mut().enumerate() {
            let v = if a.is_null(i) {
                0x5555
            } else {
                $rs.hash_one($conv(a.value(i)))
            };
            *h = mix(*h, v);
        }
    }};
}

fn hash_into(rs: &ahash::RandomState, col: &dyn Array, out: &mut [u64]) -> Result<()> {
    match col.data_type() {
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            for (i, h) in out.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    0x5555
                } else {
                    rs.hash_one(a.value(i).as_bytes())
                };
                *h = mix(*h, v);
            }
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            for (i, h) in out.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    0x5555
                } else {
                    rs.hash_one(a.value(i).as_bytes())
                };
                *h = mix(*h, v);
            }
        }
        DataType::Boolean => {
            let a = col.as_boolean();
            for (i, h) in out.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    0x5555
                } else {
                    rs.hash_one(a.value(i))
                };
                *h = mix(*h, v);
            }
        }
        DataType::Int8 => hash_prim!(rs, col, Int8Type, out, |v: i8| v as i64),
        DataType::Int16 => hash_prim!(rs, col, Int16Type, out, |v: i16| v as i64),
        DataType::Int32 => hash_prim!(rs, col, Int32Type, out, |v: i32| v as i64),
        DataType::Int64 => hash_prim!(rs, col, Int64Type, out, |v: i64| v),
        DataType::UInt8 => hash_prim!(rs, col, UInt8Type, out, |v: u8| v as i64),
        DataType::UInt16 => hash_prim!(rs, col, UInt16Type, out, |v: u16| v as i64),
        DataType::UInt32 => hash_prim!(rs, col, UInt32Type, out, |v: u32| v as i64),
        DataType::Date32 => hash_prim!(rs, col, Date32Type, out, |v: i32| v as i64),
        DataType::UInt64 => hash_prim!(rs, col, UInt64Type, out, |v: u64| v),
        DataType::Float32 => hash_prim!(rs, col, Float32Type, out, |v: f32| (v as f64).to_bits()),
        DataType::Float64 => hash_prim!(rs, col, Float64Type, out, |v: f64| v.to_bits()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            hash_prim!(rs, col, TimestampMillisecondType, out, |v: i64| v)
        }
        other => {
            return Err(Error::runtime(format!(
                "cannot partition by a key of type {other}; use STRING, BIGINT, INT, DOUBLE, BOOLEAN or TIMESTAMP(3)"
            )));
        }
    }
    Ok(())
}

/// The key group of a hash.
pub fn key_group(hash: u64) -> u32 {
    (hash % KEY_GROUPS as u64) as u32
}

/// The subtask that owns `key_group` when the operator runs with `parallelism` subtasks.
pub fn subtask_for_key_group(key_group: u32, parallelism: usize) -> usize {
    (key_group as usize * parallelism) / KEY_GROUPS as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn hashing_is_deterministic_and_key_groups_cover_subtasks() -> Result<()> {
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a"]));
        let nums: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 1]));
        let mut h = Vec::new();
        hash_columns(&[keys, nums], 3, &mut h)?;
        assert_eq!(h[0], h[2]);
        assert_ne!(h[0], h[1]);
        for p in 1..=8 {
            let mut seen = vec![false; p];
            for kg in 0..KEY_GROUPS {
                seen[subtask_for_key_group(kg, p)] = true;
            }
            assert!(seen.iter().all(|s| *s), "parallelism {p}");
        }
        Ok(())
    }
}
