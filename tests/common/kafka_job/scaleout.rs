//! The choreography of the multi-instance Kafka tests: waiting on broker state, choosing
//! the moment of a kill, and watching the killed instance's tasks move on. Shared by
//! `tests/kafka_scaleout.rs` (whole-partition tasks) and `tests/kafka_repartition.rs`
//! (window tasks); "task `k`" below is the judged task on changelog partition `k`
//! ([`Judged`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// The value of the environment variable `name` as a number, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls every [`POLL_EVERY`] until `done` holds for the verdict; panics after
/// `patience` or when an instance of `running` has ended.
pub fn wait_until(
    watcher: &mut Watcher,
    running: &mut [&mut Instance],
    patience: Duration,
    what: &str,
    mut done: impl FnMut(&Verdict) -> bool,
) -> Verdict {
    let began = Instant::now();
    loop {
        watcher.poll();
        let v = watcher.verdict(None);
        if done(&v) {
            return v;
        }
        for i in running.iter_mut() {
            if let Err(e) = i.check_running() {
                panic!("waiting for {what}: {e}\nbroker state: {}", v.summary());
            }
        }
        assert!(
            began.elapsed() < patience,
            "no {what} within {patience:?}: marks {:?}; {}",
            v.marks,
            v.summary()
        );
        thread::sleep(POLL_EVERY);
    }
}

/// The moment to kill an instance: every one of the `tasks` judged tasks has committed,
/// and has committed again since (the group is at work), and, as far as the victim's
/// log (`victim_log`) tells, it holds a task (given up on after 30 s: the kill then
/// still tests a member leaving). Returns the verdict at that moment.
pub fn wait_for_kill_moment(
    watcher: &mut Watcher,
    running: &mut [&mut Instance],
    victim_log: &Path,
    tasks: i32,
) -> Verdict {
    let n = usize::try_from(tasks).unwrap_or_default();
    let first = wait_until(
        watcher,
        running,
        Duration::from_secs(60),
        &format!("committed marks on all {tasks} partitions"),
        |v| v.marks.len() == n,
    );
    let m0 = first.marks.clone();
    let since = Instant::now();
    wait_until(
        watcher,
        running,
        Duration::from_secs(60),
        "a second commit on every partition",
        |v| {
            let advanced = (0..tasks).all(|p| {
                let (now, then) = (v.marks.get(&p), m0.get(&p));
                now.is_some() && now != then
            });
            let victim_owns =
                !owned_tasks(&std::fs::read_to_string(victim_log).unwrap_or_default()).is_empty();
            advanced && (victim_owns || since.elapsed() > Duration::from_secs(30))
        },
    )
}

/// How one judged task fared after the kill.
#[derive(Debug, Default)]
pub struct Takeover {
    /// The mark advanced in the generation it had at the kill: a survivor's task.
    pub advanced: bool,
    /// A new generation committed, when (after the kill) and which.
    pub moved: Option<(Duration, String)>,
    /// The new generation's first committed output, when (after the kill).
    pub output: Option<Duration>,
}

/// After a kill at `killed_at`: watches for up to 60 s which judged tasks were the
/// killed instance's (their generation never commits again) and how long until another
/// instance committed them, and their output; prints it (observed, not asserted) and
/// returns the killed instance's tasks. Panics when a survivor ends.
pub fn observe_takeover(
    watcher: &mut Watcher,
    s: &Scenario,
    survivors: &mut [&mut Instance],
    marks_at_kill: &BTreeMap<i32, Mark>,
    killed_at: Instant,
) -> Vec<i32> {
    let mut fate: BTreeMap<i32, Takeover> = (0..s.input_partitions)
        .map(|p| (p, Takeover::default()))
        .collect();
    let takeover_patience = Duration::from_secs(60);
    while killed_at.elapsed() < takeover_patience {
        watcher.poll();
        let v = watcher.verdict(None);
        for (p, f) in &mut fate {
            let (Some(now), Some(then)) = (v.marks.get(p), marks_at_kill.get(p)) else {
                continue;
            };
            if now.g == then.g && now.n > then.n {
                f.advanced = true;
            }
            if now.g != then.g && f.moved.is_none() {
                f.moved = Some((killed_at.elapsed(), now.g.clone()));
            }
            if let Some((_, g)) = &f.moved
                && f.output.is_none()
                && v.committed_records
                    .iter()
                    .any(|(t, _)| t.task == s.output_task(*p) && &t.generation == g)
            {
                f.output = Some(killed_at.elapsed());
            }
        }
        let settled = fate
            .values()
            .all(|f| f.advanced || (f.moved.is_some() && f.output.is_some()));
        if settled {
            break;
        }
        for i in survivors.iter_mut() {
            if let Err(e) = i.check_running() {
                panic!("after the kill: {e}");
            }
        }
        thread::sleep(POLL_EVERY);
    }
    let mut killed_tasks = Vec::new();
    for (p, f) in &fate {
        match (&f.moved, f.advanced) {
            (Some((after, g)), false) => {
                killed_tasks.push(*p);
                eprintln!(
                    "RECOVERY p{p} (a's): generation {} committed {:.2} s after the kill; first \
                     committed output of it {}",
                    short(g),
                    after.as_secs_f64(),
                    f.output.map_or("none yet".to_string(), |d| format!(
                        "{:.2} s after the kill",
                        d.as_secs_f64()
                    ))
                );
            }
            (None, false) => eprintln!(
                "RECOVERY p{p}: no commit at all in the {takeover_patience:?} after the kill"
            ),
            (moved, true) => eprintln!(
                "RECOVERY p{p} (a survivor's): kept committing{}",
                moved.as_ref().map_or(String::new(), |(d, g)| format!(
                    ", then moved to generation {} after {:.2} s",
                    short(g),
                    d.as_secs_f64()
                ))
            ),
        }
    }
    killed_tasks
}

/// Prints the `opened` lines of every instance's log.
pub fn print_opened(instances: &[&Instance]) {
    for i in instances {
        let opened: Vec<String> = i
            .log()
            .lines()
            .filter(|l| l.contains("opened"))
            .map(|l| {
                l.split("tidewater_connectors::kafka::")
                    .last()
                    .unwrap_or(l)
                    .to_string()
            })
            .collect();
        eprintln!("[{}] tasks opened: {opened:#?}", i.name);
    }
}
