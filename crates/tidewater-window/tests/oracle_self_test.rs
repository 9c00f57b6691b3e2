//! Hand-computed checks of the reference implementation itself, so that a disagreement
//! between engine and oracle can be blamed on the right side.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use common::oracle::{
    Agg, AggFn, AggValue, ArgType, Event, KeyValue, ResultRow, Window, aggregate, compare,
    evaluate, evaluate_with_watermarks, floor_div, windows_of,
};

fn key(s: &str) -> Vec<KeyValue> {
    vec![KeyValue::Str(s.to_string())]
}

fn ev(k: &str, ts: i64, v: Option<i64>) -> Event {
    Event {
        keys: key(k),
        ts,
        value: v,
    }
}

const COUNT_STAR: Agg = Agg {
    func: AggFn::CountStar,
    arg: ArgType::Int,
};
const COUNT: Agg = Agg {
    func: AggFn::Count,
    arg: ArgType::Int,
};
const SUM: Agg = Agg {
    func: AggFn::Sum,
    arg: ArgType::Int,
};

fn row(start: i64, end: i64, k: &str, aggs: Vec<AggValue>) -> ResultRow {
    ResultRow {
        window_start: start,
        window_end: end,
        keys: key(k),
        aggs,
    }
}

#[test]
fn floor_division_rounds_down() {
    assert_eq!(floor_div(-1, 1000), -1);
    assert_eq!(floor_div(-1000, 1000), -1);
    assert_eq!(floor_div(-1001, 1000), -2);
    assert_eq!(floor_div(999, 1000), 0);
    assert_eq!(floor_div(1000, 1000), 1);
}

#[test]
fn tumble_windows() {
    let w = Window::Tumble { size: 1000 };
    assert_eq!(windows_of(&w, 0), vec![(0, 1000)]);
    assert_eq!(windows_of(&w, 999), vec![(0, 1000)]);
    assert_eq!(windows_of(&w, -1), vec![(-1000, 0)]);
    let events = vec![
        ev("a", 0, Some(1)),
        ev("a", 999, Some(2)),
        ev("a", 1000, None),
        ev("b", -1, Some(5)),
    ];
    let got = evaluate(&events, &w, &[COUNT_STAR, COUNT, SUM]);
    use AggValue::{Int, Null};
    assert_eq!(
        got,
        vec![
            row(-1000, 0, "b", vec![Int(1), Int(1), Int(5)]),
            row(0, 1000, "a", vec![Int(2), Int(2), Int(3)]),
            row(1000, 2000, "a", vec![Int(1), Int(0), Null]),
        ]
    );
}

#[test]
fn hop_windows() {
    let w = Window::Hop {
        size: 3000,
        slide: 1000,
    };
    assert_eq!(
        windows_of(&w, 2500),
        vec![(0, 3000), (1000, 4000), (2000, 5000)]
    );
    assert_eq!(
        windows_of(&w, -1),
        vec![(-3000, 0), (-2000, 1000), (-1000, 2000)]
    );
    assert_eq!(
        windows_of(&w, 3000),
        vec![(1000, 4000), (2000, 5000), (3000, 6000)]
    );
    // Size not a multiple of the slide: starts are still multiples of the slide.
    let w = Window::Hop {
        size: 300,
        slide: 200,
    };
    assert_eq!(windows_of(&w, 250), vec![(0, 300), (200, 500)]);
    assert_eq!(windows_of(&w, 350), vec![(200, 500)]);
    assert_eq!(windows_of(&w, 400), vec![(200, 500), (400, 700)]);
    // Size smaller than the slide: some events are in no window.
    let w = Window::Hop {
        size: 100,
        slide: 300,
    };
    assert_eq!(windows_of(&w, 150), vec![]);
    assert_eq!(windows_of(&w, 50), vec![(0, 100)]);
    assert_eq!(windows_of(&w, 300), vec![(300, 400)]);
    // Hop with size == slide is tumble.
    for ts in -2500..2500 {
        assert_eq!(
            windows_of(
                &Window::Hop {
                    size: 700,
                    slide: 700
                },
                ts
            ),
            windows_of(&Window::Tumble { size: 700 }, ts)
        );
    }
}

#[test]
fn cumulate_windows() {
    let w = Window::Cumulate {
        step: 1000,
        max_size: 3000,
    };
    assert_eq!(windows_of(&w, 1500), vec![(0, 2000), (0, 3000)]);
    assert_eq!(windows_of(&w, 0), vec![(0, 1000), (0, 2000), (0, 3000)]);
    assert_eq!(
        windows_of(&w, 3000),
        vec![(3000, 4000), (3000, 5000), (3000, 6000)]
    );
    assert_eq!(windows_of(&w, 2999), vec![(0, 3000)]);
    assert_eq!(windows_of(&w, -1), vec![(-3000, 0)]);
}

#[test]
fn session_windows() {
    let w = Window::Session { gap: 1000 };
    let events = vec![
        ev("a", 0, Some(1)),
        ev("a", 999, Some(2)),
        // Exactly `gap` after the previous event: [1999, 2999) does not overlap [0, 1999).
        ev("a", 1999, Some(4)),
        // Out of order input.
        ev("a", 5000, Some(8)),
        ev("a", 4500, Some(16)),
        ev("b", 0, Some(32)),
        // Chain: each event overlaps the session grown by the previous one.
        ev("c", 0, Some(1)),
        ev("c", 800, Some(1)),
        ev("c", 1600, Some(1)),
    ];
    let got = evaluate(&events, &w, &[COUNT_STAR, SUM]);
    use AggValue::Int;
    assert_eq!(
        got,
        vec![
            row(0, 1000, "b", vec![Int(1), Int(32)]),
            row(0, 1999, "a", vec![Int(2), Int(3)]),
            row(0, 2600, "c", vec![Int(3), Int(3)]),
            row(1999, 2999, "a", vec![Int(1), Int(4)]),
            row(4500, 6000, "a", vec![Int(2), Int(24)]),
        ]
    );
}

#[test]
fn aggregates() {
    use AggValue::{Float, Int, Null};
    let agg = |func, arg| Agg { func, arg };
    let vals = [Some(-7), Some(0), None, Some(-7)];
    assert_eq!(
        aggregate(&agg(AggFn::CountStar, ArgType::Int), &vals),
        Int(4)
    );
    assert_eq!(aggregate(&agg(AggFn::Count, ArgType::Int), &vals), Int(3));
    assert_eq!(
        aggregate(&agg(AggFn::CountDistinct, ArgType::Int), &vals),
        Int(2)
    );
    assert_eq!(aggregate(&agg(AggFn::Sum, ArgType::Int), &vals), Int(-14));
    assert_eq!(
        aggregate(&agg(AggFn::Sum, ArgType::Float), &vals),
        Float(-14.0)
    );
    // -14 / 3 = -4.67: truncated toward zero, not floored.
    assert_eq!(aggregate(&agg(AggFn::Avg, ArgType::Int), &vals), Int(-4));
    assert_eq!(
        aggregate(&agg(AggFn::Avg, ArgType::Int), &[Some(-7), Some(0)]),
        Int(-3)
    );
    assert_eq!(
        aggregate(&agg(AggFn::Avg, ArgType::Float), &[Some(-7), Some(0)]),
        Float(-3.5)
    );
    assert_eq!(aggregate(&agg(AggFn::Min, ArgType::Int), &vals), Int(-7));
    assert_eq!(aggregate(&agg(AggFn::Max, ArgType::Int), &vals), Int(0));
    assert_eq!(
        aggregate(&agg(AggFn::Max, ArgType::Float), &vals),
        Float(0.0)
    );
    let nulls = [None, None];
    assert_eq!(
        aggregate(&agg(AggFn::CountStar, ArgType::Int), &nulls),
        Int(2)
    );
    assert_eq!(
        aggregate(&agg(AggFn::Count, ArgType::Float), &nulls),
        Int(0)
    );
    assert_eq!(
        aggregate(&agg(AggFn::CountDistinct, ArgType::Int), &nulls),
        Int(0)
    );
    for f in [AggFn::Sum, AggFn::Avg, AggFn::Min, AggFn::Max] {
        assert_eq!(aggregate(&agg(f, ArgType::Int), &nulls), Null);
        assert_eq!(aggregate(&agg(f, ArgType::Float), &nulls), Null);
    }
    // SUM wraps.
    assert_eq!(
        aggregate(&agg(AggFn::Sum, ArgType::Int), &[Some(i64::MAX), Some(1)]),
        Int(i64::MIN)
    );
    // Distinct integers can be equal as doubles.
    let big = [Some(1 << 60), Some((1 << 60) + 1)];
    assert_eq!(
        aggregate(&agg(AggFn::CountDistinct, ArgType::Int), &big),
        Int(2)
    );
    assert_eq!(
        aggregate(&agg(AggFn::CountDistinct, ArgType::Float), &big),
        Int(1)
    );
}

#[test]
fn compare_detects_differences() {
    use AggValue::{Float, Int};
    let a = vec![
        row(0, 10, "a", vec![Int(1), Float(1.0)]),
        row(0, 10, "b", vec![Int(2), Float(3.0)]),
    ];
    assert!(compare(&a, &a, 1e-9).is_ok());
    let mut reversed = a.clone();
    reversed.reverse();
    assert!(compare(&a, &reversed, 1e-9).is_ok());
    let mut close = a.clone();
    close[1].aggs[1] = Float(3.0 * (1.0 + 1e-12));
    assert!(compare(&a, &close, 1e-9).is_ok());
    let mut far = a.clone();
    far[1].aggs[1] = Float(3.0001);
    assert!(compare(&a, &far, 1e-9).is_err());
    let mut wrong_int = a.clone();
    wrong_int[0].aggs[0] = Int(2);
    assert!(compare(&a, &wrong_int, 1e-9).is_err());
    assert!(compare(&a, &a[..1], 1e-9).is_err());
    let mut dup = a.clone();
    dup.push(a[0].clone());
    assert!(compare(&a, &dup, 1e-9).is_err());
    let mut moved = a.clone();
    moved[0].window_end = 11;
    assert!(compare(&a, &moved, 1e-9).is_err());
}

/// `evaluate_with_watermarks` with one event per batch: `(late, partially late, in no
/// window)` and the rows.
fn replay(w: Window, events: &[Event], delay: i64) -> ((u64, u64, u64), Vec<ResultRow>) {
    let batches: Vec<&[Event]> = events.chunks(1).collect();
    let out = evaluate_with_watermarks(&batches, &w, &[COUNT_STAR, SUM], delay);
    ((out.late, out.partially_late, out.in_no_window), out.rows)
}

#[test]
fn lateness_hop() {
    use AggValue::Int;
    let w = Window::Hop {
        size: 10_000,
        slide: 2_000,
    };
    // Watermark 13000 when a@11000 arrives: only [2000, 12000) of its windows has fired.
    let events = [
        ev("a", 10_000, Some(1)),
        ev("a", 13_000, Some(2)),
        ev("a", 11_000, Some(4)),
    ];
    let r = |s, e, c, v| row(s, e, "a", vec![Int(c), Int(v)]);
    assert_eq!(
        replay(w, &events, 0),
        (
            (0, 1, 0),
            vec![
                r(2_000, 12_000, 1, 1),
                r(4_000, 14_000, 3, 7),
                r(6_000, 16_000, 3, 7),
                r(8_000, 18_000, 3, 7),
                r(10_000, 20_000, 3, 7),
                r(12_000, 22_000, 1, 2),
            ]
        )
    );
    // With a delay of 1500 the watermark is 11500: nothing containing 11000 has fired.
    let (counts, rows) = replay(w, &events, 1500);
    assert_eq!(counts, (0, 0, 0));
    assert_eq!(rows[0], r(2_000, 12_000, 2, 5));
    // Behind every window: the last one containing 9999 is [8000, 18000), fired at 17999.
    let events = [ev("a", 17_999, Some(1)), ev("a", 9_999, Some(2))];
    assert_eq!(replay(w, &events, 0).0, (1, 0, 0));
    let events = [ev("a", 17_998, Some(1)), ev("a", 9_999, Some(2))];
    assert_eq!(replay(w, &events, 0).0, (0, 1, 0));
    // [2000, 12000), the first window containing 10000, fires at watermark 11999.
    let events = [ev("a", 11_999, Some(1)), ev("a", 10_000, Some(2))];
    assert_eq!(replay(w, &events, 0).0, (0, 1, 0));
    let events = [ev("a", 11_998, Some(1)), ev("a", 10_000, Some(2))];
    assert_eq!(replay(w, &events, 0).0, (0, 0, 0));
    // Size < slide: events in a gap are in no window, never late.
    let w = Window::Hop {
        size: 100,
        slide: 300,
    };
    let events = [
        ev("a", 1_210, Some(1)),
        ev("a", 150, Some(2)),   // gap, behind the watermark
        ev("a", 1_150, Some(4)), // gap, near the watermark
        ev("a", 50, Some(8)),    // late: [0, 100) fired
        ev("a", 1_250, Some(16)),
    ];
    assert_eq!(
        replay(w, &events, 0),
        (
            (1, 0, 2),
            vec![row(1_200, 1_300, "a", vec![Int(2), Int(17)])]
        )
    );
}

#[test]
fn lateness_cumulate_and_session() {
    use AggValue::Int;
    let w = Window::Cumulate {
        step: 1_000,
        max_size: 3_000,
    };
    // Watermark 1500: [0, 1000) has fired, [0, 2000) and [0, 3000) are open.
    let events = [
        ev("a", 1_500, Some(1)),
        ev("a", 500, Some(2)),
        ev("b", 999, Some(4)),
    ];
    assert_eq!(
        replay(w, &events, 0),
        (
            (0, 2, 0),
            vec![
                row(0, 2_000, "a", vec![Int(2), Int(3)]),
                row(0, 2_000, "b", vec![Int(1), Int(4)]),
                row(0, 3_000, "a", vec![Int(2), Int(3)]),
                row(0, 3_000, "b", vec![Int(1), Int(4)]),
            ]
        )
    );
    // Watermark 2999: the whole period [0, 3000) has fired.
    let events = [ev("a", 2_999, Some(1)), ev("a", 0, Some(2))];
    assert_eq!(replay(w, &events, 0).0, (1, 0, 0));
    // Session: late iff at or behind the watermark.
    let w = Window::Session { gap: 1_000 };
    let events = [
        ev("a", 5_000, Some(1)),
        ev("a", 5_000, Some(2)),
        ev("a", 5_001, Some(4)),
    ];
    assert_eq!(
        replay(w, &events, 0),
        (
            (1, 0, 0),
            vec![row(5_000, 6_001, "a", vec![Int(2), Int(5)])]
        )
    );
}
