#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
//! Checkpoint tests for the window operators: a run cut by snapshots and resumed from
//! them — at other parallelisms, with the state split by key group as the runtime does —
//! must emit exactly what one uninterrupted run emits (and so what the naive oracle in
//! `common/oracle.rs` computes), no window twice, with the same late events; a restored
//! state must snapshot to an equivalent state; and taking checkpoints must not change
//! what a run emits.
//!
//! How a run is cut: the operators run in a real dataflow (source subtasks with their
//! watermark generators, the runtime's hash exchange on the key columns, window subtasks,
//! each followed by a collector). A run reads the input up to the cut; at its end of input
//! every stateful operator (each watermark generator and each window subtask) writes its
//! state through `on_barrier` instead of flushing. With one source subtask the end of a
//! truncated input reaches each operator exactly where the barrier of a checkpoint taken
//! at that point of the input would (after the batch and the watermark it raised); with
//! several, the window operators' watermark is held at what it would be at an aligned
//! barrier (see `SnapshotAtEnd` in `common/checkpoint.rs`, where these runs are made).
//! The state goes through an Arrow IPC round trip, as in a checkpoint store. The next
//! run reads the following input with fresh operators restored from that state — window
//! subtask `i` of `n` gets the rows of the key groups it owns plus the rows without a key
//! group, as `owned_rows` in the runtime's `checkpoint.rs` does; every generator gets all
//! generator state — while the runtime's exchange routes the rows to the new subtasks.
//!
//! (Operators are not driven by hand because `Output` has no public way to read what an
//! operator emitted; the collector behind each window operator reads it instead.)
//!
//! `PROPTEST_CASES=n` sets the number of random cases (default 64 per property).

mod common;

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use proptest::prelude::*;

use common::cases::{
    agg, check_no_leftovers, count_sum_query, ev, keep_huge_sums_exact, lay_out, proptest_cases,
    raw_event, row,
};
use common::checkpoint::{
    Snapshot, StateRow, Stop, check_key_groups, restore_and_snapshot, run, state_rows,
};
use common::oracle::{self, AggFn, ArgType, Event, KeyValue, ResultRow, Window};
use common::query::{Query, chunks, cut};

// ---------------------------------------------------------------------------------------
// Random cases.
// ---------------------------------------------------------------------------------------

/// Every window kind: TUMBLE, HOP (size a multiple of the slide, any size, size < slide,
/// odd lengths), CUMULATE and SESSION.
fn window() -> BoxedStrategy<Window> {
    prop_oneof![
        2 => (1i64..=30).prop_map(|s| Window::Tumble { size: s * 100 }),
        1 => (1i64..3000).prop_map(|size| Window::Tumble { size }),
        2 => (1i64..=20, 1i64..=8).prop_map(|(slide, m)| Window::Hop { size: slide * m * 100, slide: slide * 100 }),
        2 => (1i64..=60, 1i64..=30).prop_map(|(size, slide)| Window::Hop { size: size * 100, slide: slide * 100 }),
        1 => (1i64..=20, 1i64..=20).prop_map(|(size, extra)| Window::Hop { size: size * 100, slide: (size + extra) * 100 }),
        1 => (1i64..4000, 1i64..2000).prop_map(|(size, slide)| Window::Hop { size, slide }),
        2 => (1i64..=20, 1i64..=8).prop_map(|(step, k)| Window::Cumulate { step: step * 100, max_size: step * 100 * k }),
        1 => (1i64..500, 1i64..=8).prop_map(|(step, k)| Window::Cumulate { step, max_size: step * k }),
        3 => (1i64..=30).prop_map(|g| Window::Session { gap: g * 100 }),
        1 => (1i64..3000).prop_map(|gap| Window::Session { gap }),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Case {
    query: Query,
    events: Vec<Event>,
    batch_sizes: Vec<usize>,
    delay_ms: i64,
    /// Where two cuts fall, in percent of the input (0: before the first batch, 100:
    /// after the last); the first is at or before the second.
    cut_percent: (usize, usize),
    /// Window subtasks before the first cut, between the cuts, after the second.
    before: usize,
    after: usize,
    again: usize,
    /// Source subtasks likewise. More than one only without late events: with several
    /// sources, whether an event is late depends on thread timing.
    sources: (usize, usize, usize),
}

impl Case {
    fn chunks(&self) -> Vec<&[Event]> {
        chunks(&self.events, &self.batch_sizes)
    }

    fn batches(&self) -> Vec<RecordBatch> {
        cut(&self.query, &self.events, &self.batch_sizes)
    }

    /// Number of batches before each cut.
    fn cuts(&self, batches: usize) -> (usize, usize) {
        let at = |percent: usize| (percent * (batches + 1) / 100).min(batches);
        (at(self.cut_percent.0), at(self.cut_percent.1))
    }

    fn oracle(&self) -> oracle::LateOutcome {
        self.query
            .evaluate_with_watermarks(&self.events, &self.batch_sizes, self.delay_ms)
    }
}

/// A cut, often at either end of the input.
fn cut_percent() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 1 => Just(100usize), 6 => 0usize..=100]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            1usize..20,
            any::<bool>(),
            window(),
            prop::collection::vec(agg(), 1..=5),
        ),
        prop_oneof![Just(0i64), Just(1i64), 1i64..3000],
        // Disorder: within the delay (nothing late), or up to a few times the delay plus
        // a fixed amount (late and partially late events).
        prop_oneof![1 => Just(None), 1 => (1i64..4, prop_oneof![Just(500i64), 0i64..10_000]).prop_map(Some)],
        prop_oneof![Just(1_700_000_000_000i64), -100_000i64..100_000],
        prop::collection::vec(raw_event(), 0..300),
        prop::collection::vec(1usize..=50, 1..20),
        (cut_percent(), cut_percent()),
        (1usize..=4, 1usize..=4, 1usize..=4),
        (1usize..=3, 1usize..=3, 1usize..=3),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                (n_keys, two_keys, window, mut aggs),
                delay_ms,
                disorder,
                base,
                raw,
                batch_sizes,
                (cut1, cut2),
                (before, after, again),
                sources,
                huge,
            )| {
                if huge {
                    keep_huge_sums_exact(&mut aggs);
                }
                // Nothing is late when every event is less than the delay behind the
                // largest timestamp before it (so a delay of at least 1 ms).
                let (delay_ms, max_lag) = match disorder {
                    None => (delay_ms.max(1), delay_ms.max(1) - 1),
                    Some((factor, extra)) => (delay_ms, delay_ms * factor + extra),
                };
                let events = lay_out(&raw, n_keys, two_keys, base, max_lag, huge);
                Case {
                    query: Query {
                        two_keys,
                        window,
                        aggs,
                    },
                    events,
                    batch_sizes,
                    delay_ms,
                    cut_percent: (cut1.min(cut2), cut1.max(cut2)),
                    before,
                    after,
                    again,
                    sources: if disorder.is_some() {
                        (1, 1, 1)
                    } else {
                        sources
                    },
                }
            },
        )
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(cases),
        // Counterexamples are printed (with the seed) rather than written to a file.
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

fn window_keys(rows: &[ResultRow]) -> BTreeMap<(i64, i64, Vec<KeyValue>), usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry((r.window_start, r.window_end, r.keys.clone()))
            .or_default() += 1;
    }
    m
}

/// The property: the uninterrupted run matches the oracle, and so does a run with a
/// (discarded) checkpoint after every batch and watermark; a run cut twice — snapshot,
/// restore at another parallelism, more input, snapshot, restore again, the rest of the
/// input — emits exactly what the uninterrupted run emits, no window twice, with the same
/// late events and no state left after the end.
fn check_cut_and_resume(case: &Case) -> Result<(), TestCaseError> {
    let query = &case.query;
    let batches = case.batches();
    let (cut1, cut2) = case.cuts(batches.len());
    let expected = case.oracle();

    let run_whole = |stop| {
        run(
            query,
            batches.clone(),
            case.delay_ms,
            (case.sources.0, 1),
            None,
            stop,
        )
    };
    let whole = run_whole(Stop::Flush);
    if let Err(diff) = oracle::compare(&expected.rows, &whole.rows, 1e-9) {
        prop_assert!(
            false,
            "the uninterrupted run disagrees with the oracle (not a checkpoint problem): {}",
            diff
        );
    }
    prop_assert_eq!(whole.late, expected.late, "late events, uninterrupted run");
    let busy = run_whole(Stop::FlushAfterBarriers);
    if let Err(diff) = oracle::compare(&whole.rows, &busy.rows, 1e-9) {
        prop_assert!(
            false,
            "taking checkpoints changes the results of a run: {}",
            diff
        );
    }
    prop_assert_eq!(busy.late, whole.late, "late events with checkpoints");

    let first = run(
        query,
        batches[..cut1].to_vec(),
        case.delay_ms,
        (case.sources.0, case.before),
        None,
        Stop::Snapshot,
    );
    let s1 = first.snapshot.clone().expect("snapshot");
    for (i, state) in s1.window.iter().enumerate() {
        check_key_groups(query, state, i, case.before)?;
    }
    let second = run(
        query,
        batches[cut1..cut2].to_vec(),
        case.delay_ms,
        (case.sources.1, case.after),
        Some(&s1),
        Stop::Snapshot,
    );
    let s2 = second.snapshot.clone().expect("snapshot");
    for (i, state) in s2.window.iter().enumerate() {
        check_key_groups(query, state, i, case.after)?;
    }
    let third = run(
        query,
        batches[cut2..].to_vec(),
        case.delay_ms,
        (case.sources.2, case.again),
        Some(&s2),
        Stop::Flush,
    );

    let phases = [&first, &second, &third];
    let mut seen: BTreeMap<(i64, i64, Vec<KeyValue>), usize> = BTreeMap::new();
    for (p, phase) in phases.iter().enumerate() {
        for w in window_keys(&phase.rows).into_keys() {
            if let Some(q) = seen.insert(w.clone(), p) {
                prop_assert!(
                    false,
                    "window {:?} emitted in phase {} and again in phase {} (cuts after {} \
                     and {} of {} batches)",
                    w,
                    q,
                    p,
                    cut1,
                    cut2,
                    batches.len()
                );
            }
        }
    }
    let union: Vec<ResultRow> = phases.iter().flat_map(|p| p.rows.clone()).collect();
    if let Err(diff) = oracle::compare(&whole.rows, &union, 1e-9) {
        prop_assert!(
            false,
            "cuts after {} and {} of {} batches (window subtasks {} -> {} -> {}, sources \
             {:?}): the rows of the three phases ({}, {}, {}) differ from the uninterrupted \
             run: {}",
            cut1,
            cut2,
            batches.len(),
            case.before,
            case.after,
            case.again,
            case.sources,
            first.rows.len(),
            second.rows.len(),
            third.rows.len(),
            diff
        );
    }
    prop_assert_eq!(
        first.late + second.late + third.late,
        whole.late,
        "late events"
    );
    prop_assert_eq!(
        first.dead_letters + second.dead_letters + third.dead_letters,
        0
    );
    check_no_leftovers(&third.leftovers, "restored subtask")
}

/// The property: snapshot → restore (at another parallelism) → snapshot gives the same
/// state, redistributed; and resuming from either state gives identical results.
fn check_restore_then_snapshot(case: &Case) -> Result<(), TestCaseError> {
    let query = &case.query;
    let batches = case.batches();
    let cut = case.cuts(batches.len()).0;
    let distinct = query.aggs.iter().any(|a| a.func == AggFn::CountDistinct);

    let first = run(
        query,
        batches[..cut].to_vec(),
        case.delay_ms,
        (case.sources.0, case.before),
        None,
        Stop::Snapshot,
    );
    let s1 = first.snapshot.expect("snapshot");
    let s2 = Snapshot {
        source: s1.source.clone(),
        window: restore_and_snapshot(query, &s1, case.after),
    };
    for (i, state) in s2.window.iter().enumerate() {
        check_key_groups(query, state, i, case.after)?;
    }

    // Keyed rows: the same, only redistributed. Clock rows: one per subtask, all equal
    // (every subtask saw the same watermarks).
    let split = |snap: &Snapshot| {
        let (keyed, clocks): (Vec<StateRow>, Vec<StateRow>) = snap
            .window
            .iter()
            .flat_map(|s| state_rows(s, distinct))
            .partition(|(g, _)| g.is_some());
        (keyed, clocks)
    };
    let (keyed1, clocks1) = split(&s1);
    let (keyed2, clocks2) = split(&s2);
    prop_assert_eq!(clocks1.len(), case.before, "one clock row per subtask");
    prop_assert_eq!(clocks2.len(), case.after, "one clock row per subtask");
    prop_assert!(
        clocks1.iter().chain(&clocks2).all(|c| *c == clocks1[0]),
        "clock rows differ: before {:?}, after restore {:?}",
        clocks1,
        clocks2
    );
    let mut keyed1 = keyed1;
    let mut keyed2 = keyed2;
    keyed1.sort();
    keyed2.sort();
    prop_assert_eq!(
        keyed1,
        keyed2,
        "keyed state changed through restore and snapshot ({} -> {} subtasks)",
        case.before,
        case.after
    );

    // Resuming from either gives identical results, at a third parallelism.
    let rest = batches[cut..].to_vec();
    let from1 = run(
        query,
        rest.clone(),
        case.delay_ms,
        (case.sources.1, case.again),
        Some(&s1),
        Stop::Flush,
    );
    let from2 = run(
        query,
        rest,
        case.delay_ms,
        (case.sources.1, case.again),
        Some(&s2),
        Stop::Flush,
    );
    prop_assert_eq!(from1.late, from2.late, "late events");
    if from1.rows != from2.rows {
        let diff = oracle::compare(&from1.rows, &from2.rows, 0.0).err();
        prop_assert!(
            false,
            "results after resuming from the snapshot and from its restored re-snapshot \
             differ: {:?}",
            diff
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// A run cut at a random point, snapshotted, and resumed at a random new parallelism
    /// emits exactly what an uninterrupted run (and the oracle) emits.
    #[test]
    fn cut_and_resume_matches_uninterrupted_run(case in case()) {
        check_cut_and_resume(&case)?;
    }

    /// Snapshot → restore → snapshot keeps the state, and results after it are identical.
    #[test]
    fn restore_then_snapshot_keeps_the_state(case in case()) {
        check_restore_then_snapshot(&case)?;
    }
}

/// The random cases cover every window kind, both ends of the input as the cut, changes
/// of parallelism up and down, and late and partially late events; checked without
/// running the engine (`-- --nocapture` shows the numbers).
#[test]
fn cases_cover_what_matters() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    let n = 500;
    for _ in 0..n {
        let c = strategy.new_tree(&mut runner).expect("case").current();
        let mut count =
            |what: &'static str, yes: bool| *seen.entry(what).or_default() += u32::from(yes);
        let kind = match c.query.window {
            Window::Tumble { .. } => "tumble",
            Window::Hop { size, slide } if size < slide => "hop size < slide",
            Window::Hop { size, slide } if size % slide == 0 => "hop size multiple of slide",
            Window::Hop { .. } => "hop other",
            Window::Cumulate { .. } => "cumulate",
            Window::Session { .. } => "session",
        };
        count(kind, true);
        let batches = c.chunks().len();
        let (cut, cut2) = c.cuts(batches);
        count("cut at the start", cut == 0);
        count("cut at the end", cut2 == batches && batches > 0);
        count("cut inside", cut > 0 && cut < batches);
        count(
            "second cut inside, after the first",
            cut2 > cut && cut2 < batches,
        );
        count("both cuts at the same point", cut2 == cut);
        count("more subtasks after", c.after > c.before);
        count("fewer subtasks after", c.after < c.before);
        count("two key columns", c.query.two_keys);
        count("several sources before", c.sources.0 > 1);
        count("several sources after", c.sources.1 > 1);
        let o = c.oracle();
        count("late events", o.late > 0);
        count("partially late events", o.partially_late > 0);
        for a in &c.query.aggs {
            count(
                match (a.func, a.arg) {
                    (AggFn::CountStar, _) => "COUNT(*)",
                    (AggFn::Count, _) => "COUNT",
                    (AggFn::CountDistinct, _) => "COUNT DISTINCT",
                    (AggFn::Sum, ArgType::Int) => "SUM int",
                    (AggFn::Sum, ArgType::Float) => "SUM float",
                    (AggFn::Min, _) => "MIN",
                    (AggFn::Max, _) => "MAX",
                    (AggFn::Avg, _) => "AVG",
                },
                true,
            );
        }
    }
    eprintln!("of {n} cases: {seen:#?}");
    for (what, min) in [
        ("tumble", 40),
        ("hop size < slide", 20),
        ("hop size multiple of slide", 20),
        ("hop other", 20),
        ("cumulate", 40),
        ("session", 60),
        ("cut at the start", 30),
        ("cut at the end", 30),
        ("cut inside", 200),
        ("second cut inside, after the first", 150),
        ("both cuts at the same point", 50),
        ("more subtasks after", 100),
        ("fewer subtasks after", 100),
        ("late events", 80),
        ("partially late events", 30),
        ("COUNT DISTINCT", 50),
        ("SUM float", 30),
        ("SUM int", 30),
        ("several sources before", 80),
        ("several sources after", 80),
    ] {
        let got = seen.get(what).copied().unwrap_or(0);
        assert!(
            got >= min,
            "{what}: {got} of {n} cases, expected at least {min}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Focused deterministic tests: no window fires twice across a restore.
/// Runs the batches `before` at 1..=3 window subtasks and snapshots, resumes at every
/// parallelism 1..=4 with the batches `after`, and checks the rows on each side and the
/// late events after the restore.
fn cut_and_resume(
    window: Window,
    before: &[&[Event]],
    after: &[&[Event]],
    delay_ms: i64,
    expected_before: &[ResultRow],
    expected_after: &[ResultRow],
    late_after: u64,
) {
    let query = count_sum_query(window);
    let to_batches = |chunks: &[&[Event]]| -> Vec<RecordBatch> {
        chunks.iter().map(|c| query.batch(c)).collect()
    };
    for p1 in 1..=3 {
        let first = run(
            &query,
            to_batches(before),
            delay_ms,
            (1, p1),
            None,
            Stop::Snapshot,
        );
        assert_eq!(
            first.rows, expected_before,
            "{window:?}: before the snapshot, {p1} subtasks"
        );
        let snap = first.snapshot.expect("snapshot");
        for p2 in 1..=4 {
            let second = run(
                &query,
                to_batches(after),
                delay_ms,
                (1, p2),
                Some(&snap),
                Stop::Flush,
            );
            assert_eq!(
                second.rows, expected_after,
                "{window:?}: after the restore, {p1} -> {p2} subtasks"
            );
            assert_eq!(
                second.late, late_after,
                "{window:?}: late, {p1} -> {p2} subtasks"
            );
            // An idle restored operator emits nothing either.
            let idle = run(
                &query,
                Vec::new(),
                delay_ms,
                (1, p2),
                Some(&snap),
                Stop::Snapshot,
            );
            assert!(idle.rows.is_empty(), "{window:?}: {:?}", idle.rows);
        }
    }
}

#[test]
fn tumble_windows_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Tumble { size: 1000 },
        &[
            &[ev("a", 0, 1), ev("a", 500, 2), ev("b", 1500, 4)],
            &[ev("a", 2500, 8)],
        ],
        &[
            // Late: [0, 1000) and [1000, 2000) fired before the snapshot.
            &[ev("a", 100, 16), ev("b", 1999, 32)],
            &[ev("a", 2000, 64), ev("c", 2999, 128)],
        ],
        0,
        &[row(0, 1000, "a", 2, 3), row(1000, 2000, "b", 1, 4)],
        &[row(2000, 3000, "a", 2, 72), row(2000, 3000, "c", 1, 128)],
        2,
    );
}

/// HOP slide 2 s, size 10 s: at the snapshot (watermark 13000) [2000, 12000) has fired
/// and [4000, 14000) .. [10000, 20000) are open with a@10000 and a@13000 in them; a@11000
/// after the restore counts in the open ones only.
#[test]
fn hop_windows_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Hop {
            size: 10_000,
            slide: 2_000,
        },
        &[&[ev("a", 10_000, 1)], &[ev("a", 13_000, 2)]],
        &[&[ev("a", 11_000, 4)]],
        0,
        &[row(2_000, 12_000, "a", 1, 1)],
        &[
            row(4_000, 14_000, "a", 3, 7),
            row(6_000, 16_000, "a", 3, 7),
            row(8_000, 18_000, "a", 3, 7),
            row(10_000, 20_000, "a", 3, 7),
            row(12_000, 22_000, "a", 1, 2),
        ],
        0,
    );
}

/// HOP slide 1 s, size 2 s: at the snapshot (watermark 1500) [-1000, 1000) has fired
/// while empty. a@500 after the restore must not reopen it: the clock carries how far
/// windows have fired, not only the watermark.
#[test]
fn hop_empty_window_fired_before_the_snapshot_stays_fired() {
    cut_and_resume(
        Window::Hop {
            size: 2000,
            slide: 1000,
        },
        &[&[ev("a", 1500, 1)]],
        &[&[ev("a", 500, 2)]],
        0,
        &[],
        &[row(0, 2000, "a", 2, 3), row(1000, 3000, "a", 1, 1)],
        0,
    );
}

#[test]
fn cumulate_windows_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Cumulate {
            step: 1000,
            max_size: 3000,
        },
        &[&[ev("a", 100, 1), ev("b", 1200, 2)], &[ev("a", 2100, 4)]],
        &[&[ev("a", 1500, 8), ev("b", 2500, 16)], &[ev("a", 3100, 32)]],
        0,
        // Watermark 2100: [0, 1000) and [0, 2000) fired.
        &[
            row(0, 1000, "a", 1, 1),
            row(0, 2000, "a", 1, 1),
            row(0, 2000, "b", 1, 2),
        ],
        // a@1500 is behind [0, 2000) but in [0, 3000).
        &[
            row(0, 3000, "a", 3, 13),
            row(0, 3000, "b", 2, 18),
            row(3000, 4000, "a", 1, 32),
            row(3000, 5000, "a", 1, 32),
            row(3000, 6000, "a", 1, 32),
        ],
        0,
    );
}

#[test]
fn sessions_fired_before_the_snapshot_stay_fired() {
    cut_and_resume(
        Window::Session { gap: 1000 },
        &[&[ev("a", 0, 1)], &[ev("a", 5000, 2), ev("b", 4000, 64)]],
        &[&[
            ev("a", 200, 4),
            ev("a", 5000, 8),
            ev("a", 5500, 16),
            ev("b", 4999, 32),
        ]],
        0,
        // Watermark 5000: [0, 1000) and b's [4000, 5000) have fired.
        &[row(0, 1000, "a", 1, 1), row(4000, 5000, "b", 1, 64)],
        &[row(5000, 6500, "a", 2, 18)],
        3,
    );
}
