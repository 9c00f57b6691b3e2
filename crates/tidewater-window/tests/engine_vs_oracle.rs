//! Differential tests: the window operators, run in a real dataflow (parallel sources,
//! watermark generators, hash exchange, parallel window subtasks), must produce exactly
//! the results of the naive oracle in `common/oracle.rs`, as multisets of rows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tidewater_core::metrics::JobMetrics;
use tidewater_core::{Result as TwResult, Watermark};
use tidewater_runtime::watermark::WatermarkGenerator;
use tidewater_runtime::{Chain, Operator, Output, SourceStage};
use tidewater_window::{SlicedWindowOperator, WindowInput, WindowSpec};

use common::cases::{
    COUNT_SUM, agg, check_no_leftovers, count_sum_query, ev, keep_huge_sums_exact, lay_out,
    proptest_cases, raw_event, row,
};
use common::oracle::{self, Event, KeyValue, ResultRow, Window};
use common::query::{Query, collected_rows, cut, deal, execute_window_flow, vec_readers};

// ---------------------------------------------------------------------------------------
// Test plumbing: a sink that collects batches and checks when windows fire.
// ---------------------------------------------------------------------------------------

/// Collects every batch it receives, and checks the firing time of each row: a window
/// `[s, e)` must reach the sink after the watermark `e - 1` has been reached (never
/// early) and, when `check_not_delayed` (no late data), before the next watermark
/// beyond `e - 1` is forwarded (never held back).
#[derive(Debug)]
struct Collect {
    out: Arc<Mutex<Vec<RecordBatch>>>,
    problems: Arc<Mutex<Vec<String>>>,
    check_not_delayed: bool,
    /// The last watermark seen, and the window ends received since.
    last_wm: Watermark,
    pending_ends: Vec<i64>,
}

impl Collect {
    fn new(
        out: Arc<Mutex<Vec<RecordBatch>>>,
        problems: Arc<Mutex<Vec<String>>>,
        check_not_delayed: bool,
    ) -> Self {
        Self {
            out,
            problems,
            check_not_delayed,
            last_wm: Watermark::MIN,
            pending_ends: Vec::new(),
        }
    }

    fn problem(&self, p: String) {
        self.problems.lock().expect("problems lock").push(p);
    }
}

impl Operator for Collect {
    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> TwResult<()> {
        let ends = batch.column(1).as_primitive::<TimestampMillisecondType>();
        for i in 0..ends.len() {
            let end = ends.value(i);
            if self.check_not_delayed && end - 1 <= self.last_wm.0 {
                self.problem(format!(
                    "window ending {end} emitted only after watermark {} had already passed",
                    self.last_wm.0
                ));
            }
            self.pending_ends.push(end);
        }
        self.out.lock().expect("collect lock").push(batch);
        Ok(())
    }

    fn on_watermark(&mut self, wm: Watermark, _out: &mut Output) -> TwResult<()> {
        for &end in &self.pending_ends {
            if end - 1 > wm.0 {
                self.problem(format!(
                    "window ending {end} fired before the watermark reached it (watermark {})",
                    wm.0
                ));
            }
        }
        self.pending_ends.clear();
        self.last_wm = wm;
        Ok(())
    }

    fn on_end(&mut self, _out: &mut Output) -> TwResult<()> {
        self.pending_ends.clear();
        Ok(())
    }
}

/// Everything a run of the engine produced.
#[derive(Debug)]
struct Outcome {
    rows: Vec<ResultRow>,
    late_events: u64,
    dead_letters: u64,
    problems: Vec<String>,
    /// `(live_keys, live_slices)` of each sliced window subtask after the end of input.
    leftovers: Vec<(usize, usize)>,
}

/// Runs `batches` through a dataflow: `readers` source subtasks (batches dealt out
/// round-robin), each with a watermark generator `delay_ms` behind, then a hash exchange
/// on the key columns into `parallelism` window subtasks, each followed by a collector.
fn run_engine(
    query: &Query,
    batches: Vec<RecordBatch>,
    readers: usize,
    parallelism: usize,
    delay_ms: i64,
    check_not_delayed: bool,
) -> Outcome {
    let k = query.key_columns();
    let metrics = Arc::new(JobMetrics::default());
    let collected = Arc::new(Mutex::new(Vec::new()));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let leftovers = Arc::new(Mutex::new(Vec::new()));

    let source = SourceStage {
        name: "events".into(),
        readers: vec_readers(deal(batches, readers)),
        chains: (0..readers)
            .map(|_| vec![Box::new(WatermarkGenerator::new(k, delay_ms)) as Box<dyn Operator>])
            .collect(),
    };
    let chains: Vec<Chain> = (0..parallelism)
        .map(|_| {
            vec![
                Box::new(query.window_operator(&metrics, &leftovers)) as Box<dyn Operator>,
                Box::new(Collect::new(
                    collected.clone(),
                    problems.clone(),
                    check_not_delayed,
                )) as Box<dyn Operator>,
            ]
        })
        .collect();
    execute_window_flow(query, source, chains);

    let rows = collected_rows(&collected.lock().expect("collect lock"), query, &metrics);
    let problems = std::mem::take(&mut *problems.lock().expect("problems lock"));
    let leftovers = std::mem::take(&mut *leftovers.lock().expect("leftovers lock"));
    Outcome {
        rows,
        late_events: metrics.late_events.load(AtomicOrdering::Relaxed),
        dead_letters: metrics.dead_letters.load(AtomicOrdering::Relaxed),
        problems,
        leftovers,
    }
}

// ---------------------------------------------------------------------------------------
// Random cases.
// ---------------------------------------------------------------------------------------

/// TUMBLE, HOP with a size that is a multiple of the slide, CUMULATE and SESSION, with
/// lengths in multiples of 100 ms and (less often) odd lengths.
fn window() -> BoxedStrategy<Window> {
    prop_oneof![
        3 => (1i64..=50).prop_map(|s| Window::Tumble { size: s * 100 }),
        3 => (1i64..=50, 1i64..=10).prop_map(|(slide, m)| Window::Hop { size: slide * m * 100, slide: slide * 100 }),
        3 => (1i64..=20, 1i64..=8).prop_map(|(step, k)| Window::Cumulate { step: step * 100, max_size: step * 100 * k }),
        3 => (1i64..=30).prop_map(|g| Window::Session { gap: g * 100 }),
        // Odd lengths, not multiples of 100 ms.
        1 => (1i64..3000).prop_map(|size| Window::Tumble { size }),
        1 => (1i64..1000, 1i64..=5).prop_map(|(slide, m)| Window::Hop { size: slide * m, slide }),
        1 => (1i64..500, 1i64..=6).prop_map(|(step, k)| Window::Cumulate { step, max_size: step * k }),
        1 => (1i64..3000).prop_map(|gap| Window::Session { gap }),
    ]
    .boxed()
}

/// HOP with any positive size and slide (multiples of 100 ms, or odd), including a size
/// smaller than the slide.
fn any_hop() -> BoxedStrategy<Window> {
    prop_oneof![
        3 => (1i64..=100, 1i64..=50).prop_map(|(size, slide)| Window::Hop { size: size * 100, slide: slide * 100 }),
        1 => (1i64..3000, 1i64..3000).prop_map(|(size, slide)| Window::Hop { size, slide }),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Case {
    query: Query,
    events: Vec<Event>,
    batch_sizes: Vec<usize>,
    delay_ms: i64,
    parallelism: usize,
}

fn case(windows: BoxedStrategy<Window>) -> impl Strategy<Value = Case> {
    (
        (
            1usize..20,
            any::<bool>(),
            windows,
            prop::collection::vec(agg(), 1..=5),
        ),
        prop_oneof![Just(1_700_000_000_000i64), -100_000i64..100_000],
        prop_oneof![Just(1i64), 1i64..3000],
        prop::collection::vec(raw_event(), 0..400),
        prop::collection::vec(1usize..=50, 1..20),
        1usize..=4,
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(
                (n_keys, two_keys, window, mut aggs),
                base,
                delay_ms,
                raw,
                batch_sizes,
                parallelism,
                huge,
            )| {
                if huge {
                    keep_huge_sums_exact(&mut aggs);
                }
                // Disorder strictly smaller than the watermark delay: nothing is late.
                let events = lay_out(&raw, n_keys, two_keys, base, delay_ms - 1, huge);
                Case {
                    query: Query {
                        two_keys,
                        window,
                        aggs,
                    },
                    events,
                    batch_sizes,
                    delay_ms,
                    parallelism,
                }
            },
        )
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        // Each case runs in milliseconds; shrink to a small counterexample.
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// Runs `case` through the engine (as many source subtasks as window subtasks) and
/// checks it against the oracle: same rows, nothing late, windows fired when (and only
/// when) the watermark passes their end, no state left after the end of input.
fn check_against_oracle(case: &Case) -> Result<(), TestCaseError> {
    let Case {
        query,
        events,
        batch_sizes,
        delay_ms,
        parallelism,
    } = case;
    let expected = oracle::evaluate(events, &query.window, &query.aggs);
    let batches = cut(query, events, batch_sizes);
    let got = run_engine(query, batches, *parallelism, *parallelism, *delay_ms, true);
    if let Err(diff) = oracle::compare(&expected, &got.rows, 1e-9) {
        prop_assert!(false, "engine and oracle disagree: {}", diff);
    }
    prop_assert_eq!(got.late_events, 0, "no event is late");
    prop_assert_eq!(got.dead_letters, 0);
    prop_assert!(
        got.problems.is_empty(),
        "firing-time problems: {:?}",
        got.problems
    );
    check_no_leftovers(&got.leftovers, "subtask")
}

proptest! {
    #![proptest_config(config(48))]

    /// With all disorder within the watermark delay, the engine computes exactly the
    /// oracle's results (TUMBLE, HOP with size a multiple of slide, CUMULATE, SESSION).
    #[test]
    fn engine_matches_oracle_without_late_events(case in case(window())) {
        check_against_oracle(&case)?;
    }

    /// The same for HOP windows whose size is not a multiple of the slide (including
    /// size < slide).
    #[test]
    fn hop_with_any_size_and_slide_matches_oracle(case in case(any_hop())) {
        check_against_oracle(&case)?;
    }
}

// ---------------------------------------------------------------------------------------
// Late events, random: one source subtask, so the watermark each batch sees is known.
// ---------------------------------------------------------------------------------------

/// Windows for the lateness tests: every sliced kind, including HOP with a size that is
/// not a multiple of the slide and smaller than the slide, with lengths comparable to the
/// disorder of `late_case` so that events fall behind some or all of their windows.
fn late_window() -> BoxedStrategy<Window> {
    prop_oneof![
        2 => (1i64..=30).prop_map(|s| Window::Tumble { size: s * 100 }),
        2 => (1i64..=30).prop_map(|g| Window::Session { gap: g * 100 }),
        // HOP, size a multiple of the slide.
        2 => (1i64..=20, 1i64..=8).prop_map(|(slide, m)| Window::Hop { size: slide * m * 100, slide: slide * 100 }),
        // HOP, any size and slide in multiples of 100 ms (size < slide included).
        2 => (1i64..=60, 1i64..=30).prop_map(|(size, slide)| Window::Hop { size: size * 100, slide: slide * 100 }),
        // HOP, size smaller than the slide: gaps between windows.
        1 => (1i64..=20, 1i64..=20).prop_map(|(size, extra)| Window::Hop { size: size * 100, slide: (size + extra) * 100 }),
        // HOP, odd lengths.
        1 => (1i64..4000, 1i64..2000).prop_map(|(size, slide)| Window::Hop { size, slide }),
        2 => (1i64..=20, 1i64..=8).prop_map(|(step, k)| Window::Cumulate { step: step * 100, max_size: step * 100 * k }),
        1 => (1i64..500, 1i64..=8).prop_map(|(step, k)| Window::Cumulate { step, max_size: step * k }),
    ]
    .boxed()
}

fn late_case() -> impl Strategy<Value = Case> {
    (
        (
            1usize..20,
            any::<bool>(),
            prop::collection::vec(agg(), 1..=4),
        ),
        late_window(),
        prop_oneof![Just(0i64), 1i64..2000],
        // Disorder up to this many times the delay, plus a fixed amount.
        1i64..4,
        prop_oneof![Just(500i64), 0i64..10_000],
        prop_oneof![Just(1_700_000_000_000i64), -100_000i64..100_000],
        prop::collection::vec(raw_event(), 0..300),
        prop::collection::vec(1usize..=50, 1..20),
        1usize..=4,
    )
        .prop_map(
            |(
                (n_keys, two_keys, aggs),
                window,
                delay_ms,
                factor,
                extra_lag,
                base,
                raw,
                batch_sizes,
                parallelism,
            )| {
                let events = lay_out(
                    &raw,
                    n_keys,
                    two_keys,
                    base,
                    delay_ms * factor + extra_lag,
                    false,
                );
                Case {
                    query: Query {
                        two_keys,
                        window,
                        aggs,
                    },
                    events,
                    batch_sizes,
                    delay_ms,
                    parallelism,
                }
            },
        )
}

/// The oracle's verdict on a lateness case (one source subtask).
fn late_oracle(case: &Case) -> oracle::LateOutcome {
    case.query
        .evaluate_with_watermarks(&case.events, &case.batch_sizes, case.delay_ms)
}

proptest! {
    #![proptest_config(config(32))]

    /// With disorder beyond the watermark delay, exactly the late events are dropped and
    /// counted, events behind only some of their windows count in the others, and the
    /// rest is aggregated exactly (one source subtask, `parallelism` window subtasks).
    #[test]
    fn late_events_are_dropped_exactly(case in late_case()) {
        let Case { query, events, batch_sizes, delay_ms, parallelism } = &case;
        let expected = late_oracle(&case);
        let batches = cut(query, events, batch_sizes);
        let got = run_engine(query, batches, 1, *parallelism, *delay_ms, true);
        if let Err(diff) = oracle::compare(&expected.rows, &got.rows, 1e-9) {
            prop_assert!(
                false,
                "engine and oracle disagree ({} late, {} partially late, {} in no window, of {}): {}",
                expected.late, expected.partially_late, expected.in_no_window, events.len(), diff
            );
        }
        prop_assert_eq!(got.late_events, expected.late, "late event count");
        prop_assert!(got.problems.is_empty(), "firing-time problems: {:?}", got.problems);
        check_no_leftovers(&got.leftovers, "subtask")?;
    }
}

/// `late_case` really produces, for every sliced window kind, cases with events behind
/// all of their windows (late) and events behind only some of them (partially late), and
/// HOP gaps; checked on the oracle alone, without running the engine.
#[test]
fn late_case_generates_both_kinds_of_lateness() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = late_case();
    // Per kind: cases, cases with late events, cases with partially late events.
    let mut seen: std::collections::BTreeMap<&str, [u32; 3]> = Default::default();
    let mut gaps = 0;
    for _ in 0..600 {
        let case = strategy.new_tree(&mut runner).expect("case").current();
        let kind = match case.query.window {
            Window::Tumble { .. } => "tumble",
            Window::Hop { size, slide } if size % slide == 0 => "hop (size multiple of slide)",
            Window::Hop { size, slide } if size < slide => "hop (size < slide)",
            Window::Hop { .. } => "hop (other)",
            Window::Cumulate { .. } => "cumulate",
            Window::Session { .. } => "session",
        };
        let out = late_oracle(&case);
        let c = seen.entry(kind).or_default();
        c[0] += 1;
        c[1] += u32::from(out.late > 0);
        c[2] += u32::from(out.partially_late > 0);
        gaps += u32::from(out.in_no_window > 0);
    }
    // `cargo test late_case_generates -- --nocapture` shows the coverage.
    eprintln!("[cases, with late, with partially late] per kind: {seen:?}; {gaps} with HOP gaps");
    for (kind, [cases, late, partial]) in &seen {
        assert!(
            *late * 4 >= *cases,
            "{kind}: {late} of {cases} cases with late events"
        );
        // A tumble or session event has one window: it cannot be partially late.
        // Nor can a HOP event when size < slide.
        if !matches!(*kind, "tumble" | "session" | "hop (size < slide)") {
            assert!(
                *partial * 4 >= *cases,
                "{kind}: {partial} of {cases} cases with partially late events"
            );
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(gaps >= 10, "only {gaps} cases with events in HOP gaps");
}

// ---------------------------------------------------------------------------------------
// Focused deterministic tests.
// ---------------------------------------------------------------------------------------

#[test]
fn tumble_late_events_are_dropped_and_counted() {
    let query = count_sum_query(Window::Tumble { size: 1000 });
    let first = [
        ev("a", 0, 1),
        ev("a", 500, 2),
        ev("b", 1500, 4),
        ev("a", 2500, 8),
    ];
    // Watermark is now 2500: windows [0,1000) and [1000,2000) have fired.
    let second = [
        ev("a", 100, 16),  // late: [0,1000) fired
        ev("b", 1999, 32), // late: [1000,2000) fired
        ev("a", 2000, 64), // on time: [2000,3000) has not fired
        ev("c", 2999, 128),
    ];
    let batches = vec![query.batch(&first), query.batch(&second)];
    let got = run_engine(&query, batches, 1, 1, 0, false);
    assert_eq!(got.late_events, 2);
    assert_eq!(
        got.rows,
        vec![
            row(0, 1000, "a", 2, 3),
            row(1000, 2000, "b", 1, 4),
            row(2000, 3000, "a", 2, 72),
            row(2000, 3000, "c", 1, 128),
        ]
    );
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    assert_eq!(got.leftovers, vec![(0, 0)]);
}

#[test]
fn session_late_events_are_dropped_and_counted() {
    let query = count_sum_query(Window::Session { gap: 1000 });
    let first = [ev("a", 0, 1), ev("a", 5000, 2)];
    // Watermark 5000: session [0,1000) has fired; an event at 5000 is not after the watermark.
    let second = [
        ev("a", 200, 4),   // late: would reopen the fired session
        ev("a", 5000, 8),  // late: at the watermark
        ev("a", 5500, 16), // on time, extends [5000,6000) to [5000,6500)
        ev("b", 4999, 32), // late, even for a new key
    ];
    let batches = vec![query.batch(&first), query.batch(&second)];
    let got = run_engine(&query, batches, 1, 1, 0, false);
    assert_eq!(got.late_events, 3);
    assert_eq!(
        got.rows,
        vec![row(0, 1000, "a", 1, 1), row(5000, 6500, "a", 2, 18)]
    );
    assert!(got.problems.is_empty(), "{:?}", got.problems);
}

#[test]
fn hop_event_behind_every_fired_window_is_late() {
    let query = count_sum_query(Window::Hop {
        size: 2000,
        slide: 1000,
    });
    let first = [ev("a", 0, 1), ev("a", 4000, 2)];
    // Watermark 4000: all windows ending at or before 4000 have fired; 500 only belongs
    // to [-1000,1000) and [0,2000).
    let second = [ev("a", 500, 4), ev("a", 4500, 8)];
    let batches = vec![query.batch(&first), query.batch(&second)];
    let got = run_engine(&query, batches, 1, 1, 0, false);
    assert_eq!(got.late_events, 1);
    assert_eq!(
        got.rows,
        vec![
            row(-1000, 1000, "a", 1, 1),
            row(0, 2000, "a", 1, 1),
            row(3000, 5000, "a", 2, 10),
            row(4000, 6000, "a", 2, 10),
        ]
    );
}

/// Feeds `events` one per batch to one source and one window subtask, delay 0, where
/// exactly one event is partially late (behind some of its windows) and none is late:
/// checks that the oracle and the engine both give `expected`. Returns the engine's run.
fn one_event_per_batch(query: &Query, events: &[Event], expected: &[ResultRow]) -> Outcome {
    let batches: Vec<&[Event]> = events.chunks(1).collect();
    let model = oracle::evaluate_with_watermarks(&batches, &query.window, &query.aggs, 0);
    assert_eq!((model.late, model.partially_late), (0, 1));
    assert_eq!(model.rows, expected, "oracle");
    let got = run_engine(
        query,
        batches.iter().map(|b| query.batch(b)).collect(),
        1,
        1,
        0,
        false,
    );
    assert_eq!(got.late_events, 0);
    assert_eq!(got.rows, expected, "engine");
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    got
}

/// HOP slide 2 s, size 10 s, delay 0, one event per batch: a@10000, a@13000, a@11000.
/// When a@11000 arrives the watermark is 13000, so of its windows only [2000, 12000) has
/// fired (11999 <= 13000): the event is not late, and counts in [4000, 14000),
/// [6000, 16000), [8000, 18000) and [10000, 20000) but not in [2000, 12000).
#[test]
fn hop_event_behind_some_fired_windows_counts_in_the_open_ones() {
    let query = count_sum_query(Window::Hop {
        size: 10_000,
        slide: 2_000,
    });
    let events = [ev("a", 10_000, 1), ev("a", 13_000, 2), ev("a", 11_000, 4)];
    let expected = vec![
        // Fired at watermark 13000, before a@11000 arrived.
        row(2_000, 12_000, "a", 1, 1),
        row(4_000, 14_000, "a", 3, 7),
        row(6_000, 16_000, "a", 3, 7),
        row(8_000, 18_000, "a", 3, 7),
        row(10_000, 20_000, "a", 3, 7),
        row(12_000, 22_000, "a", 1, 2),
    ];
    let got = one_event_per_batch(&query, &events, &expected);
    assert_eq!(got.leftovers, vec![(0, 0)]);
}

/// Minimal counterexample found by `late_events_are_dropped_exactly`: HOP slide 1 s,
/// size 2 s, delay 0. After a@1500 the watermark is 1500, so [-1000, 1000) has fired
/// (it was empty, so nothing was emitted). a@500 then arrives behind that window but
/// not behind [0, 2000): it is not late, and must count in [0, 2000) only. The engine
/// also emits [-1000, 1000) with a@500 in it: it only remembers which windows fired
/// when they had data (`fired_end` advances only while slices are live), so a window
/// the watermark passed while the subtask held no data for it still fires later.
#[test]
fn hop_event_behind_an_empty_fired_window_does_not_reopen_it() {
    let query = count_sum_query(Window::Hop {
        size: 2000,
        slide: 1000,
    });
    let events = [ev("a", 1500, 1), ev("a", 500, 2)];
    let expected = vec![row(0, 2000, "a", 2, 3), row(1000, 3000, "a", 1, 1)];
    one_event_per_batch(&query, &events, &expected);
}

fn input_for(query: &Query) -> (WindowInput, Arc<JobMetrics>) {
    let metrics = Arc::new(JobMetrics::default());
    (query.window_input(&metrics), metrics)
}

#[test]
fn sliced_state_is_freed_as_the_watermark_advances() {
    let query = count_sum_query(Window::Hop {
        size: 3000,
        slide: 1000,
    });
    let (input, _) = input_for(&query);
    let mut op = SlicedWindowOperator::new(
        WindowSpec::Hop {
            size: 3000,
            slide: 1000,
        },
        input,
    )
    .expect("operator");
    let mut out = Output::default();
    // Slices of 1000 ms: 0 (a, b), 1 (a), 2 (c), 5 (a).
    let events = [
        ev("a", 10, 1),
        ev("b", 999, 1),
        ev("a", 1000, 1),
        ev("c", 2500, 1),
        ev("a", 5999, 1),
    ];
    op.process_batch(query.batch(&events), &mut out)
        .expect("process");
    assert_eq!((op.live_keys(), op.live_slices()), (3, 4));
    // Windows ending 1000, 2000, 3000 fire; [1000, 4000) still needs slices 1 and 2.
    op.on_watermark(Watermark(2999), &mut out)
        .expect("watermark");
    assert_eq!(
        (op.live_keys(), op.live_slices()),
        (2, 3),
        "key b and slice 0 are freed"
    );
    // Windows ending 4000, 5000 fire; [3000, 6000) needs slice 5 only.
    op.on_watermark(Watermark(4999), &mut out)
        .expect("watermark");
    assert_eq!((op.live_keys(), op.live_slices()), (1, 1));
    // The last window containing slice 5 ends at 8000.
    op.on_watermark(Watermark(7998), &mut out)
        .expect("watermark");
    assert_eq!((op.live_keys(), op.live_slices()), (1, 1));
    op.on_watermark(Watermark(7999), &mut out)
        .expect("watermark");
    assert_eq!((op.live_keys(), op.live_slices()), (0, 0));
    // A key that comes back after its state was freed starts afresh.
    op.process_batch(query.batch(&[ev("b", 9000, 1)]), &mut out)
        .expect("process");
    assert_eq!((op.live_keys(), op.live_slices()), (1, 1));
    op.on_end(&mut out).expect("end");
    assert_eq!((op.live_keys(), op.live_slices()), (0, 0));
}

#[test]
fn tumble_and_cumulate_state_is_empty_after_end() {
    for spec in [
        WindowSpec::Tumble { size: 1000 },
        WindowSpec::Cumulate {
            step: 500,
            max_size: 2000,
        },
    ] {
        let query = Query {
            two_keys: true,
            window: Window::Tumble { size: 1000 },
            aggs: COUNT_SUM.to_vec(),
        };
        let (input, metrics) = input_for(&query);
        let mut op = SlicedWindowOperator::new(spec, input).expect("operator");
        let mut out = Output::default();
        let events: Vec<Event> = (0..200)
            .map(|i| Event {
                keys: vec![KeyValue::Str(format!("k{}", i % 7)), KeyValue::Int(i % 3)],
                ts: i * 37,
                value: Some(i),
            })
            .collect();
        for chunk in events.chunks(16) {
            op.process_batch(query.batch(chunk), &mut out)
                .expect("process");
            let wm = chunk.iter().map(|e| e.ts).max().unwrap_or(0) - 100;
            op.on_watermark(Watermark(wm), &mut out).expect("watermark");
            // Only slices within the last max window (plus the delay) may be live.
            assert!(
                op.live_slices() <= 6,
                "{spec:?}: {} slices live",
                op.live_slices()
            );
        }
        op.on_end(&mut out).expect("end");
        assert_eq!((op.live_keys(), op.live_slices()), (0, 0), "{spec:?}");
        assert_eq!(metrics.late_events.load(AtomicOrdering::Relaxed), 0);
    }
}

#[test]
fn empty_input_produces_nothing() {
    for window in [
        Window::Tumble { size: 1000 },
        Window::Hop {
            size: 3000,
            slide: 1000,
        },
        Window::Cumulate {
            step: 1000,
            max_size: 3000,
        },
        Window::Session { gap: 1000 },
    ] {
        let query = count_sum_query(window);
        let got = run_engine(&query, Vec::new(), 2, 3, 100, true);
        assert!(got.rows.is_empty(), "{window:?}");
        assert_eq!(got.late_events, 0);
    }
}

/// Minimal counterexample found by `hop_with_any_size_and_slide_matches_oracle`: HOP
/// windows start at multiples of the slide (Flink: `[k*slide, k*slide + size)`), but the
/// engine makes them *end* at multiples of the slide, which is the same set of windows
/// only when the size is a multiple of the slide.
#[test]

fn hop_size_smaller_than_slide() {
    let query = count_sum_query(Window::Hop {
        size: 100,
        slide: 200,
    });
    let events = [ev("a", 18, 1)];
    let expected = oracle::evaluate(&events, &query.window, &query.aggs);
    assert_eq!(expected, vec![row(0, 100, "a", 1, 1)]);
    let got = run_engine(&query, vec![query.batch(&events)], 1, 1, 1, true);
    // The engine emits nothing: it looks for the event's slice [0, 100) in the window
    // [100, 200) (ending on a multiple of the slide), finds no data, and drops the slice.
    assert_eq!(got.rows, expected);
}

#[test]

fn hop_size_not_multiple_of_slide() {
    let query = count_sum_query(Window::Hop {
        size: 300,
        slide: 200,
    });
    let events = [ev("a", 250, 1)];
    let expected = oracle::evaluate(&events, &query.window, &query.aggs);
    assert_eq!(
        expected,
        vec![row(0, 300, "a", 1, 1), row(200, 500, "a", 1, 1)]
    );
    let got = run_engine(&query, vec![query.batch(&events)], 1, 1, 1, true);
    // The engine emits only [100, 400).
    assert_eq!(got.rows, expected);
}
