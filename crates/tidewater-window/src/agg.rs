//! Aggregates as partial states that can be updated by one value and merged with each
//! other: a slice holds one partial per key and aggregate, a window result merges the
//! partials of its slices.

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, Int64Builder, StringArray,
    StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use tidewater_core::{Error, Result};

/// The supported aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggKind {
    /// `COUNT(*)`.
    CountStar,
    /// `COUNT(x)`: non-null values.
    Count,
    /// `COUNT(DISTINCT x)`.
    CountDistinct,
    /// `SUM(x)`.
    Sum,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// `AVG(x)`; like Flink, the average of integers is an integer (truncated).
    Avg,
}

/// One aggregate of a window query.
#[derive(Debug, Clone, PartialEq)]
pub struct AggSpec {
    /// The function.
    pub kind: AggKind,
    /// Index of the argument column in the window input (`None` for `COUNT(*)`).
    pub arg: Option<usize>,
    /// Type of the argument column as declared by the query.
    pub arg_type: DataType,
}

/// How values of an argument column are held in state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Int,
    Float,
    Str,
}

fn class_of(t: &DataType) -> Option<Class> {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Some(Class::Int),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => Some(Class::Int),
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Date32 => Some(Class::Int),
        DataType::Float32 | DataType::Float64 => Some(Class::Float),
        DataType::Utf8 | DataType::LargeUtf8 => Some(Class::Str),
        _ => None,
    }
}

impl AggSpec {
    /// Checks that `kind` accepts `arg_type`, explaining what would.
    pub fn validate(&self) -> Result<()> {
        let class = class_of(&self.arg_type);
        let ok = match self.kind {
            AggKind::CountStar | AggKind::Count => true,
            AggKind::Sum | AggKind::Avg => {
                matches!(class, Some(Class::Int | Class::Float))
                    && !matches!(self.arg_type, DataType::Timestamp(..) | DataType::Date32)
            }
            AggKind::Min | AggKind::Max | AggKind::CountDistinct => class.is_some(),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::config(
                format!("{:?}", self.kind).to_uppercase(),
                format!(
                    "cannot aggregate a value of type {}; SUM and AVG take numbers, MIN, MAX and COUNT(DISTINCT) take numbers, strings and timestamps",
                    match &self.arg_type {
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View =>
                            "STRING".to_string(),
                        DataType::Boolean => "BOOLEAN".to_string(),
                        other => other.to_string(),
                    }
                ),
            ))
        }
    }

    /// The type of the result column.
    pub fn output_type(&self) -> DataType {
        match self.kind {
            AggKind::CountStar | AggKind::Count | AggKind::CountDistinct => DataType::Int64,
            AggKind::Sum | AggKind::Avg => match class_of(&self.arg_type) {
                Some(Class::Float) => DataType::Float64,
                _ => DataType::Int64,
            },
            AggKind::Min | AggKind::Max => self.arg_type.clone(),
        }
    }

    /// The empty partial state.
    pub(crate) fn empty(&self) -> Acc {
        let class = class_of(&self.arg_type).unwrap_or(Class::Int);
        match (self.kind, class) {
            (AggKind::CountStar | AggKind::Count, _) => Acc::Count(0),
            (AggKind::Sum | AggKind::Avg, Class::Float) => Acc::SumF { sum: 0.0, n: 0 },
            (AggKind::Sum | AggKind::Avg, _) => Acc::SumI { sum: 0, n: 0 },
            (AggKind::Min | AggKind::Max, Class::Int) => Acc::ExtI(None),
            (AggKind::Min | AggKind::Max, Class::Float) => Acc::ExtF(None),
            (AggKind::Min | AggKind::Max, Class::Str) => Acc::ExtS(None),
            (AggKind::CountDistinct, Class::Str) => Acc::DistinctS(Box::default()),
            (AggKind::CountDistinct, _) => Acc::DistinctI(Box::default()),
        }
    }

    /// Views this aggregate's argument column of a batch for per-row updates.
    pub(crate) fn arg_view(&self, columns: &[ArrayRef]) -> Result<ArgView> {
        let Some(i) = self.arg else {
            return Ok(ArgView::None);
        };
        let col = columns
            .get(i)
            .ok_or_else(|| Error::runtime(format!("aggregate argument column {i} missing")))?;
        Ok(match (self.kind, class_of(col.data_type())) {
            (AggKind::Count, _) => ArgView::Any(col.clone()),
            (_, Some(Class::Int)) => ArgView::Int(
                cast(col, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            (_, Some(Class::Float)) => {
                ArgView::Float(cast(col, &DataType::Float64)?.as_primitive().clone())
            }
            (_, Some(Class::Str)) => {
                ArgView::Str(cast(col, &DataType::Utf8)?.as_string::<i32>().clone())
            }
            (_, None) => {
                return Err(Error::runtime(format!(
                    "unsupported aggregate input type {}",
                    col.data_type()
                )));
            }
        })
    }
}

/// A batch's argument column, downcast once per batch.
#[derive(Debug)]
pub(crate) enum ArgView {
    None,
    Any(ArrayRef),
    Int(Int64Array),
    Float(Float64Array),
    Str(StringArray),
}

/// One partial aggregate. `Ext*` hold the running minimum or maximum (the operator knows
/// which from the [`AggKind`]); `Distinct*` count occurrences so partials merge exactly.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::box_collection)] // boxed maps keep the enum small; see DistinctI
pub(crate) enum Acc {
    Count(i64),
    SumI { sum: i64, n: i64 },
    SumF { sum: f64, n: i64 },
    ExtI(Option<i64>),
    ExtF(Option<f64>),
    ExtS(Option<Box<str>>),
    // Boxed so that the common partials stay 24 bytes.
    DistinctI(Box<HashMap<i64, u32>>),
    DistinctS(Box<HashMap<Box<str>, u32>>),
}

fn better<T: PartialOrd + ?Sized>(kind: AggKind, new: &T, old: &T) -> bool {
    if kind == AggKind::Max {
        new > old
    } else {
        new < old
    }
}

impl Acc {
    /// Adds row `row` of `arg` to this partial.
    #[inline]
    pub(crate) fn update(&mut self, kind: AggKind, arg: &ArgView, row: usize) {
        match (self, arg) {
            (Acc::Count(c), ArgView::None) => *c += 1,
            (Acc::Count(c), ArgView::Any(a)) => *c += i64::from(a.is_valid(row)),
            (Acc::SumI { sum, n }, ArgView::Int(a)) if a.is_valid(row) => {
                *sum = sum.wrapping_add(a.value(row));
                *n += 1;
            }
            (Acc::SumF { sum, n }, ArgView::Float(a)) if a.is_valid(row) => {
                *sum += a.value(row);
                *n += 1;
            }
            (Acc::ExtI(cur), ArgView::Int(a)) if a.is_valid(row) => {
                let v = a.value(row);
                if cur.is_none_or(|c| better(kind, &v, &c)) {
                    *cur = Some(v);
                }
            }
            (Acc::ExtF(cur), ArgView::Float(a)) if a.is_valid(row) => {
                let v = a.value(row);
                if cur.is_none_or(|c| better(kind, &v, &c)) {
                    *cur = Some(v);
                }
            }
            (Acc::ExtS(cur), ArgView::Str(a)) if a.is_valid(row) => {
                let v = a.value(row);
                if cur.as_deref().is_none_or(|c| better(kind, &v, &c)) {
                    *cur = Some(v.into());
                }
            }
            (Acc::DistinctI(m), ArgView::Int(a)) if a.is_valid(row) => {
                *m.entry(a.value(row)).or_insert(0) += 1
            }
            (Acc::DistinctI(m), ArgView::Float(a)) if a.is_valid(row) => {
                *m.entry(a.value(row).to_bits() as i64).or_insert(0) += 1
            }
            (Acc::DistinctS(m), ArgView::Str(a)) if a.is_valid(row) => {
                let v = a.value(row);
                match m.get_mut(v) {
                    Some(c) => *c += 1,
                    None => {
                        m.insert(v.into(), 1);
                    }
                }
            }
            _ => {} // a null argument leaves the partial unchanged
        }
    }

    /// True when [`Acc::retract`] can undo a merge exactly. Integer sums and counts wrap,
    /// so they subtract exactly; float sums would drift and extremes cannot be undone.
    pub(crate) fn invertible(&self) -> bool {
        matches!(
            self,
            Acc::Count(_) | Acc::SumI { .. } | Acc::DistinctI(_) | Acc::DistinctS(_)
        )
    }

    /// Undoes `merge(other)`. Only called when [`Acc::invertible`] holds.
    pub(crate) fn retract(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a -= b,
            (Acc::SumI { sum, n }, Acc::SumI { sum: s2, n: n2 }) => {
                *sum = sum.wrapping_sub(*s2);
                *n -= n2;
            }
            (Acc::DistinctI(a), Acc::DistinctI(b)) => {
                for (k, c) in b.iter() {
                    if let Some(x) = a.get_mut(k) {
                        *x -= c;
                        if *x == 0 {
                            a.remove(k);
                        }
                    }
                }
            }
            (Acc::DistinctS(a), Acc::DistinctS(b)) => {
                for (k, c) in b.iter() {
                    if let Some(x) = a.get_mut(k) {
                        *x -= c;
                        if *x == 0 {
                            a.remove(k);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Merges `other` (a partial of the same aggregate) into this one.
    pub(crate) fn merge(&mut self, kind: AggKind, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumI { sum, n }, Acc::SumI { sum: s2, n: n2 }) => {
                *sum = sum.wrapping_add(*s2);
                *n += n2;
            }
            (Acc::SumF { sum, n }, Acc::SumF { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::ExtI(a), Acc::ExtI(Some(b))) if a.is_none_or(|x| better(kind, b, &x)) => {
                *a = Some(*b);
            }
            (Acc::ExtF(a), Acc::ExtF(Some(b))) if a.is_none_or(|x| better(kind, b, &x)) => {
                *a = Some(*b);
            }
            (Acc::ExtS(a), Acc::ExtS(Some(b)))
                if a.as_deref().is_none_or(|x| better(kind, &**b, x)) =>
            {
                *a = Some(b.clone());
            }
            (Acc::DistinctI(a), Acc::DistinctI(b)) => {
                for (k, c) in b.iter() {
                    *a.entry(*k).or_insert(0) += c;
                }
            }
            (Acc::DistinctS(a), Acc::DistinctS(b)) => {
                for (k, c) in b.iter() {
                    *a.entry(k.clone()).or_insert(0) += c;
                }
            }
            _ => {}
        }
    }
}

/// Builds one aggregate's output column.
#[derive(Debug)]
pub(crate) enum OutColumn {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
}

impl OutColumn {
    pub(crate) fn for_spec(spec: &AggSpec) -> Self {
        match spec.empty() {
            Acc::SumF { .. } | Acc::ExtF(_) => OutColumn::Float(Float64Builder::new()),
            Acc::ExtS(_) => OutColumn::Str(StringBuilder::new()),
            _ => OutColumn::Int(Int64Builder::new()),
        }
    }

    /// An empty column for `spec` with room for `n` values.
    pub(crate) fn with_capacity(spec: &AggSpec, n: usize) -> Self {
        match spec.empty() {
            Acc::SumF { .. } | Acc::ExtF(_) => OutColumn::Float(Float64Builder::with_capacity(n)),
            Acc::ExtS(_) => OutColumn::Str(StringBuilder::with_capacity(n, n * 8)),
            _ => OutColumn::Int(Int64Builder::with_capacity(n)),
        }
    }

    /// Appends the final value of `acc`.
    pub(crate) fn append(&mut self, kind: AggKind, acc: &Acc) {
        match (self, acc) {
            (OutColumn::Int(b), Acc::Count(c)) => b.append_value(*c),
            (OutColumn::Int(b), Acc::SumI { sum, n }) => match (kind, *n) {
                (_, 0) => b.append_null(),
                (AggKind::Avg, n) => b.append_value(sum.wrapping_div(n)),
                _ => b.append_value(*sum),
            },
            (OutColumn::Float(b), Acc::SumF { sum, n }) => match (kind, *n) {
                (_, 0) => b.append_null(),
                (AggKind::Avg, n) => b.append_value(sum / n as f64),
                _ => b.append_value(*sum),
            },
            (OutColumn::Int(b), Acc::ExtI(v)) => b.append_option(*v),
            (OutColumn::Float(b), Acc::ExtF(v)) => b.append_option(*v),
            (OutColumn::Str(b), Acc::ExtS(v)) => b.append_option(v.as_deref()),
            (OutColumn::Int(b), Acc::DistinctI(m)) => b.append_value(m.len() as i64),
            (OutColumn::Int(b), Acc::DistinctS(m)) => b.append_value(m.len() as i64),
            // Unreachable by construction (`for_spec` matches `empty`); a null is safer than a panic.
            (OutColumn::Int(b), _) => b.append_null(),
            (OutColumn::Float(b), _) => b.append_null(),
            (OutColumn::Str(b), _) => b.append_null(),
        }
    }

    /// The finished column, cast to the aggregate's declared output type.
    pub(crate) fn finish(&mut self, spec: &AggSpec) -> Result<ArrayRef> {
        let arr: ArrayRef = match self {
            OutColumn::Int(b) => std::sync::Arc::new(b.finish()),
            OutColumn::Float(b) => std::sync::Arc::new(b.finish()),
            OutColumn::Str(b) => std::sync::Arc::new(b.finish()),
        };
        let want = spec.output_type();
        Ok(if arr.data_type() == &want {
            arr
        } else {
            cast(&arr, &want)?
        })
    }
}

/// A result batch `[window_start, window_end, keys.., aggregates..]`.
pub(crate) fn result_batch(
    schema: &arrow::datatypes::SchemaRef,
    starts: Vec<i64>,
    ends: Vec<i64>,
    keys: Vec<ArrayRef>,
    cols: &mut [OutColumn],
    aggs: &[AggSpec],
) -> Result<arrow::record_batch::RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(arrow::array::TimestampMillisecondArray::from(starts)),
        std::sync::Arc::new(arrow::array::TimestampMillisecondArray::from(ends)),
    ];
    columns.extend(keys);
    for (col, spec) in cols.iter_mut().zip(aggs) {
        columns.push(col.finish(spec)?);
    }
    Ok(arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        columns,
    )?)
}

/// Partials in checkpoints: a tag byte, then little-endian fields. Written and read only
/// by this module, in the order of the query's aggregates.
impl Acc {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        fn opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
            match v {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    put(out, v);
                }
            }
        }
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        match self {
            Acc::Count(c) => {
                out.push(1);
                out.extend_from_slice(&c.to_le_bytes());
            }
            Acc::SumI { sum, n } => {
                out.push(2);
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::SumF { sum, n } => {
                out.push(3);
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::ExtI(v) => {
                out.push(4);
                opt(out, *v, |o, v| o.extend_from_slice(&v.to_le_bytes()));
            }
            Acc::ExtF(v) => {
                out.push(5);
                opt(out, *v, |o, v| o.extend_from_slice(&v.to_le_bytes()));
            }
            Acc::ExtS(v) => {
                out.push(6);
                opt(out, v.as_deref(), string);
            }
            Acc::DistinctI(m) => {
                out.push(7);
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                for (k, c) in m.iter() {
                    out.extend_from_slice(&k.to_le_bytes());
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
            Acc::DistinctS(m) => {
                out.push(8);
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                for (k, c) in m.iter() {
                    string(out, k);
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
        }
    }

    /// Reads one partial written by [`Acc::encode`], advancing `input`.
    pub(crate) fn decode(input: &mut &[u8]) -> Result<Acc> {
        fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            if input.len() < n {
                return Err(Error::runtime("window state: partial cut short"));
            }
            let (a, b) = input.split_at(n);
            *input = b;
            Ok(a)
        }
        fn arr<const N: usize>(input: &mut &[u8]) -> Result<[u8; N]> {
            let mut a = [0u8; N];
            a.copy_from_slice(take(input, N)?);
            Ok(a)
        }
        fn i64_(input: &mut &[u8]) -> Result<i64> {
            Ok(i64::from_le_bytes(arr(input)?))
        }
        fn u32_(input: &mut &[u8]) -> Result<u32> {
            Ok(u32::from_le_bytes(arr(input)?))
        }
        fn string(input: &mut &[u8]) -> Result<Box<str>> {
            let n = u32_(input)? as usize;
            let b = take(input, n)?;
            std::str::from_utf8(b)
                .map(Into::into)
                .map_err(|_| Error::runtime("window state: string is not UTF-8"))
        }
        fn some(input: &mut &[u8]) -> Result<bool> {
            Ok(take(input, 1)?[0] == 1)
        }
        let tag = take(input, 1)?[0];
        Ok(match tag {
            1 => Acc::Count(i64_(input)?),
            2 => Acc::SumI {
                sum: i64_(input)?,
                n: i64_(input)?,
            },
            3 => Acc::SumF {
                sum: f64::from_le_bytes(arr(input)?),
                n: i64_(input)?,
            },
            4 => Acc::ExtI(if some(input)? {
                Some(i64_(input)?)
            } else {
                None
            }),
            5 => Acc::ExtF(if some(input)? {
                Some(f64::from_le_bytes(arr(input)?))
            } else {
                None
            }),
            6 => Acc::ExtS(if some(input)? {
                Some(string(input)?)
            } else {
                None
            }),
            7 => {
                let n = u32_(input)?;
                let mut m = HashMap::with_capacity(n as usize);
                for _ in 0..n {
                    m.insert(i64_(input)?, u32_(input)?);
                }
                Acc::DistinctI(Box::new(m))
            }
            8 => {
                let n = u32_(input)?;
                let mut m = HashMap::with_capacity(n as usize);
                for _ in 0..n {
                    let k = string(input)?;
                    m.insert(k, u32_(input)?);
                }
                Acc::DistinctS(Box::new(m))
            }
            other => {
                return Err(Error::runtime(format!(
                    "window state: unknown partial tag {other}"
                )));
            }
        })
    }
}
