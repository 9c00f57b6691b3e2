//! What the differential and checkpoint tests are made of: the random generators of
//! events and aggregates, and the events and rows of the focused deterministic tests.

use proptest::prelude::*;

use super::oracle::{Agg, AggFn, AggValue, ArgType, Event, KeyValue, ResultRow, Window};
use super::query::Query;

// ---------------------------------------------------------------------------------------
// Random cases.
// ---------------------------------------------------------------------------------------

/// One raw event before timestamps are laid out: which key, the BIGINT key, how far event
/// time moves forward, how far this event lags behind the front, its value.
pub type RawEvent = (usize, Option<i64>, i64, i64, Option<i64>);

pub fn raw_event() -> impl Strategy<Value = RawEvent> {
    (
        0usize..20,
        prop_oneof![5 => (0i64..3).prop_map(Some), 1 => Just(None)],
        // Steps in round multiples of 100 ms land events exactly on window and session
        // boundaries; large steps leave windows empty and close sessions.
        prop_oneof![12 => 0i64..200, 6 => (0i64..4).prop_map(|k| k * 100), 1 => 1_000i64..30_000],
        prop_oneof![1 => Just(0i64), 2 => 0i64..i64::MAX],
        prop_oneof![1 => Just(None), 8 => (-1000i64..1000).prop_map(Some)],
    )
}

pub fn agg() -> impl Strategy<Value = Agg> {
    (
        prop_oneof![
            Just(AggFn::CountStar),
            Just(AggFn::Count),
            Just(AggFn::CountDistinct),
            Just(AggFn::Sum),
            Just(AggFn::Min),
            Just(AggFn::Max),
            Just(AggFn::Avg),
        ],
        prop_oneof![Just(ArgType::Int), Just(ArgType::Float)],
    )
        .prop_map(|(func, arg)| Agg {
            func,
            arg: if func == AggFn::CountStar {
                ArgType::Int
            } else {
                arg
            },
        })
}

/// With huge values (see [`lay_out`]): sums of huge doubles depend on the order of
/// addition, so SUM and AVG take the BIGINT argument and stay exact.
pub fn keep_huge_sums_exact(aggs: &mut [Agg]) {
    for a in aggs {
        if matches!(a.func, AggFn::Sum | AggFn::Avg) {
            a.arg = ArgType::Int;
        }
    }
}

/// Lays out timestamps so that each event is at most `max_lag` behind the largest
/// timestamp before it, and builds the keys and values.
pub fn lay_out(
    raw: &[RawEvent],
    n_keys: usize,
    two_keys: bool,
    base: i64,
    max_lag: i64,
    huge: bool,
) -> Vec<Event> {
    let mut front = base;
    raw.iter()
        .map(|&(key, k1, step, lag, value)| {
            front += step;
            let mut keys = vec![KeyValue::Str(format!("k{}", key % n_keys))];
            if two_keys {
                keys.push(k1.map_or(KeyValue::Null, KeyValue::Int));
            }
            // Huge values make integer SUM and AVG wrap around.
            let value = if huge {
                value.map(|v| v.wrapping_mul(9_223_372_036_854_775))
            } else {
                value
            };
            Event {
                keys,
                ts: front - lag % (max_lag + 1),
                value,
            }
        })
        .collect()
}

/// The number of random cases: `default`, or `PROPTEST_CASES=n` for a longer soak.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// No window subtask kept state after the end of input: `leftovers` holds each sliced
/// subtask's `(live_keys, live_slices)`; `who` names the subtasks in the failure.
pub fn check_no_leftovers(leftovers: &[(usize, usize)], who: &str) -> Result<(), TestCaseError> {
    for (i, &(keys, slices)) in leftovers.iter().enumerate() {
        prop_assert!(
            keys == 0 && slices == 0,
            "{} {} kept {} keys and {} slices after the end",
            who,
            i,
            keys,
            slices
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Focused deterministic tests.
// ---------------------------------------------------------------------------------------

/// An event of key `k` (one STRING key column) at `ts` with value `v`.
pub fn ev(k: &str, ts: i64, v: i64) -> Event {
    Event {
        keys: vec![KeyValue::Str(k.into())],
        ts,
        value: Some(v),
    }
}

/// `COUNT(*), SUM(v)`.
pub const COUNT_SUM: [Agg; 2] = [
    Agg {
        func: AggFn::CountStar,
        arg: ArgType::Int,
    },
    Agg {
        func: AggFn::Sum,
        arg: ArgType::Int,
    },
];

/// A result row of [`COUNT_SUM`] for key `k`.
pub fn row(start: i64, end: i64, k: &str, count: i64, sum: i64) -> ResultRow {
    ResultRow {
        window_start: start,
        window_end: end,
        keys: vec![KeyValue::Str(k.into())],
        aggs: vec![AggValue::Int(count), AggValue::Int(sum)],
    }
}

/// The query of the focused tests: one STRING key, `window`, [`COUNT_SUM`].
pub fn count_sum_query(window: Window) -> Query {
    Query {
        two_keys: false,
        window,
        aggs: COUNT_SUM.to_vec(),
    }
}
