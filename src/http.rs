//! The status page (`/`), its JSON feed (`/api/status`) and Prometheus metrics
//! (`/metrics`) of a running job.
//!
//! A [`StatusServer`] runs on its own thread with a current-thread tokio runtime, so the
//! job's threads never wait for it: it only reads the job's atomics ([`JobMetrics`]).
//! On each scrape those atomics are published through the `metrics` facade into a
//! Prometheus recorder, which also holds the runtime's own emit-latency histogram.
//!
//! ```no_run
//! use tidewater::http::{StatusInfo, StatusServer};
//! use tidewater::{Job, JobOptions};
//!
//! let job = Job::from_file("examples/sliding_sum.sql", &JobOptions::default())?;
//! let server = StatusServer::start("127.0.0.1:8080".parse().unwrap(), StatusInfo::of(&job))?;
//! println!("status page at http://{}/", server.local_addr());
//! job.run()?;
//! server.set_finished();
//! # Ok::<(), tidewater::Error>(())
//! ```

use std::net::{SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::Label;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use serde_json::{Value, json};
use tidewater_core::metrics::{LATENCY_BUCKETS_MS, TaskMetrics, quantile_of};

use crate::{Error, Job, JobMetrics, Result};

/// Where `tidewater run` serves when `--http` is not given.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// Ports tried after [`DEFAULT_ADDR`]'s when it is taken (several jobs on one machine).
pub const FALLBACK_PORTS: RangeInclusive<u16> = 8081..=8099;
/// The runtime's emit-latency histogram (recorded in `tidewater-runtime`'s task loop).
pub const EMIT_LATENCY: &str = "tidewater_emit_latency_seconds";

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// What the status page shows besides the live counters: fixed for the job's life.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    /// The job's name (also the `job` label of every metric).
    pub job: String,
    /// [`Job::graph`]: stages, parallelism, operators, edges.
    pub graph: Value,
    /// [`Job::explain`]: the plan as text.
    pub explain: String,
    /// The job's live counters.
    pub metrics: Arc<JobMetrics>,
}

impl StatusInfo {
    /// Everything the status page needs from `job`, taken before `job.run()` consumes it.
    pub fn of(job: &Job) -> Self {
        Self {
            job: job.name().to_string(),
            graph: job.graph(),
            explain: job.explain(),
            metrics: job.metrics(),
        }
    }
}

/// The value of `--http`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// No status page and no metrics endpoint.
    Off,
    /// Serve here (port 0: any free port).
    At(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse().map(Self::At).map_err(|_| {
            format!("'{s}' is not an address like 127.0.0.1:8080 or 0.0.0.0:9000, nor 'off'")
        })
    }
}

/// The status page and metrics server of one job. Stops when dropped.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// State the handlers read.
#[derive(Debug)]
struct Shared {
    info: StatusInfo,
    finished: AtomicBool,
    started: Instant,
    rates: Mutex<Rates>,
    exporter: &'static Exporter,
}

impl StatusServer {
    /// Serves `info` at `addr` (port 0: any free port) until [`StatusServer::stop`].
    /// Fails when the address cannot be bound (taken, not local, no permission).
    pub fn start(addr: SocketAddr, info: StatusInfo) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| bind_error(addr, &e))?;
        Self::serve(listener, info)
    }

    /// Serves on an already bound listener (see [`bind_with_fallback`]).
    pub fn serve(listener: TcpListener, info: StatusInfo) -> Result<Self> {
        let io = |e: std::io::Error| Error::runtime(format!("status server: {e}"));
        let addr = listener.local_addr().map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(io)?;
        let shared = Arc::new(Shared {
            exporter: exporter(&info.job),
            info,
            finished: AtomicBool::new(false),
            started: Instant::now(),
            rates: Mutex::new(Rates::default()),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tidewater-http".into())
            .spawn(move || runtime.block_on(serve(listener, state, stopped)))
            .map_err(io)?;
        Ok(Self {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The address served (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address, `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Marks the job finished (its input ended): the page and `/api/status` say so.
    pub fn set_finished(&self) {
        if !self.shared.finished.swap(true, Ordering::Relaxed) {
            self.shared
                .info
                .metrics
                .event("info", "input ended: job finished");
        }
    }

    /// Whether [`StatusServer::set_finished`] was called.
    pub fn finished(&self) -> bool {
        self.shared.finished.load(Ordering::Relaxed)
    }

    /// Stops serving and waits for the server thread (open connections get 1 s).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind_error(addr: SocketAddr, e: &std::io::Error) -> Error {
    Error::config(
        format!("--http {addr}"),
        format!("cannot serve the status page there: {e} (give another address, or --http off)"),
    )
}

/// Binds `first`, or when that port is in use, the first free port of `fallbacks` on
/// the same IP. Returns the listener and whether a fallback was used.
pub fn bind_with_fallback(
    first: SocketAddr,
    fallbacks: impl IntoIterator<Item = u16>,
) -> std::io::Result<(TcpListener, bool)> {
    match TcpListener::bind(first) {
        Ok(l) => Ok((l, false)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            for port in fallbacks {
                if let Ok(l) = TcpListener::bind(SocketAddr::new(first.ip(), port)) {
                    return Ok((l, true));
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// `tidewater run --http`: starts the server for `job` and logs its URL. `None` (no
/// `--http`) serves at [`DEFAULT_ADDR`] or, when several jobs share the machine, the next
/// free port of [`FALLBACK_PORTS`]; failing that the job runs without a status page.
/// An explicit address that cannot be bound is an error naming it.
pub fn serve_job(job: &Job, listen: Option<Listen>) -> Result<Option<StatusServer>> {
    let listener = match listen {
        Some(Listen::Off) => return Ok(None),
        Some(Listen::At(addr)) => TcpListener::bind(addr).map_err(|e| bind_error(addr, &e))?,
        None => match bind_with_fallback(DEFAULT_ADDR, FALLBACK_PORTS) {
            Ok((l, false)) => l,
            Ok((l, true)) => {
                tracing::warn!("{DEFAULT_ADDR} is taken (another job?); using the next free port");
                l
            }
            Err(e) => {
                tracing::warn!(
                    "no status page: cannot listen on {DEFAULT_ADDR} or ports {}-{}: {e} \
                     (choose one with --http ADDR)",
                    FALLBACK_PORTS.start(),
                    FALLBACK_PORTS.end()
                );
                return Ok(None);
            }
        },
    };
    let server = StatusServer::serve(listener, StatusInfo::of(job))?;
    tracing::info!("status page and metrics at {}", server.url());
    Ok(Some(server))
}

/// SIGINT and SIGTERM, caught from the moment [`StopSignals::listen`] returns (so a
/// signal sent after that cannot kill the process before [`StopSignals::wait`]).
/// `signal-hook`, like the CLI's handling of signals while a job runs.
#[derive(Debug)]
pub struct StopSignals(signal_hook::iterator::Signals);

impl StopSignals {
    /// Starts catching SIGINT and SIGTERM.
    pub fn listen() -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .map(Self)
            .map_err(|e| Error::runtime(format!("cannot catch SIGINT/SIGTERM: {e}")))
    }

    /// Blocks until one of the signals arrives; returns its name.
    pub fn wait(mut self) -> &'static str {
        let sig = self.0.forever().next();
        sig.and_then(signal_hook::low_level::signal_name)
            .unwrap_or("signal")
    }
}

/// `tidewater run --http-keep-open`: once the job's input has ended, marks it finished
/// and keeps serving its final figures until SIGINT or SIGTERM (then returns, exit 0).
/// Signals are caught before the page says "finished", so whoever waits for that can
/// signal at once.
pub fn keep_open(server: StatusServer) -> Result<()> {
    let signals = StopSignals::listen()?;
    server.set_finished();
    tracing::info!(
        "job finished; still serving {} until SIGINT (Ctrl-C) or SIGTERM",
        server.url()
    );
    let sig = signals.wait();
    tracing::info!("{sig}: status page stopped");
    server.stop();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("status server cannot start: {e}");
            return;
        }
    };
    let app = Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics_text))
        .with_state(shared.clone());
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(stopped(stop.clone()));
    let sampler = sample_rates(shared);
    // Open connections (a page that keeps polling) get a second to finish after stop.
    let deadline = async {
        stopped(stop).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        r = server.into_future() => if let Err(e) = r { tracing::error!("status server: {e}") },
        _ = sampler => {}
        _ = deadline => {}
    }
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

async fn api_status(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(status_json(&s)),
    )
}

async fn metrics_text(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    s.exporter.publish(|| publish(&s));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.exporter.handle.render(),
    )
}

// ---------------------------------------------------------------------------------------
// Events per second: sampled once a second, so every reader sees the same rates
// ---------------------------------------------------------------------------------------

/// Records in per second of each subtask (in [`JobMetrics::tasks`] order) and of the
/// job's sources and sinks, over the last second.
#[derive(Debug, Default)]
struct Rates {
    last: Option<(Instant, Vec<u64>, u64, u64)>,
    tasks: Vec<f64>,
    source: f64,
    sink: f64,
}

async fn sample_rates(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = &shared.info.metrics;
        let now = Instant::now();
        let counts: Vec<u64> = m.tasks().iter().map(|t| load(&t.records_in)).collect();
        let snap = m.snapshot();
        let Ok(mut r) = shared.rates.lock() else {
            return;
        };
        if let Some((then, prev, src, sink)) = r.last.take() {
            let dt = now.duration_since(then).as_secs_f64().max(1e-3);
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
            let tasks = counts
                .iter()
                .enumerate()
                .map(|(i, c)| rate(*c, prev.get(i).copied().unwrap_or(0)))
                .collect();
            r.tasks = tasks;
            r.source = rate(snap.records_in, src);
            r.sink = rate(snap.records_out, sink);
        }
        r.last = Some((now, counts, snap.records_in, snap.records_out));
        drop(r);
        shared.exporter.handle.run_upkeep();
    }
}

impl Shared {
    fn rates(&self) -> (Vec<f64>, f64, f64) {
        self.rates
            .lock()
            .map(|r| (r.tasks.clone(), r.source, r.sink))
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------

/// The process's Prometheus recorder. The `metrics` facade has one global recorder per
/// process, installed by the first server; later servers (tests, embedders running
/// several jobs) share it and tell their figures apart by the `job` label. When another
/// recorder was installed first, tidewater's figures go to a private one instead (and
/// the runtime's emit-latency histogram, recorded globally, is then missing).
#[derive(Debug)]
struct Exporter {
    handle: PrometheusHandle,
    private: Option<PrometheusRecorder>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

fn exporter(job: &str) -> &'static Exporter {
    EXPORTER.get_or_init(|| {
        let builder = || PrometheusBuilder::new().add_global_label("job", job);
        let buckets: Vec<f64> = LATENCY_BUCKETS_MS
            .iter()
            .map(|ms| *ms as f64 / 1e3)
            .collect();
        let with_buckets = builder()
            .set_buckets_for_metric(Matcher::Full(EMIT_LATENCY.into()), &buckets)
            .unwrap_or_else(|e| {
                tracing::warn!("emit latency becomes a summary: {e}");
                builder()
            });
        let recorder = with_buckets.build_recorder();
        let handle = recorder.handle();
        let exporter = match metrics::set_global_recorder(recorder) {
            Ok(()) => Exporter {
                handle,
                private: None,
            },
            Err(e) => {
                tracing::warn!(
                    "another metrics recorder is installed ({e}); /metrics shows tidewater's \
                     counters but not the emit-latency histogram"
                );
                let recorder = builder().build_recorder();
                Exporter {
                    handle: recorder.handle(),
                    private: Some(recorder),
                }
            }
        };
        exporter.publish(describe);
        exporter
    })
}

impl Exporter {
    /// Runs `f`, whose facade calls land in this exporter's recorder.
    fn publish(&self, f: impl FnOnce()) {
        match &self.private {
            Some(r) => metrics::with_local_recorder(r, f),
            None => f(),
        }
    }
}

/// Each metric's kind (`c`ounter, `g`auge, `h`istogram) and `# HELP` line.
#[rustfmt::skip] // a table
const HELP: &[(&str, char, &str)] = &[
    ("tidewater_records_in_total", 'c', "Rows into the subtask's operators"),
    ("tidewater_records_out_total", 'c', "Rows out of the subtask (next stage or sink)"),
    ("tidewater_batches_in_total", 'c', "Batches into the subtask's operators"),
    ("tidewater_events_per_second", 'g', "Rows in per second over the last second"),
    ("tidewater_source_records_in_total", 'c', "Records read by sources, bad ones included"),
    ("tidewater_source_bytes_in_total", 'c', "Bytes read by the sources"),
    ("tidewater_sink_records_out_total", 'c', "Rows written by the sinks"),
    ("tidewater_late_events_total", 'c', "Events dropped: their last window had fired"),
    ("tidewater_dead_letters_total", 'c', "Records that could not be parsed or converted"),
    ("tidewater_watermark_milliseconds", 'g', "The subtask's current watermark, epoch ms"),
    ("tidewater_watermark_lag_seconds", 'g', "Wall clock minus the watermark, seconds"),
    ("tidewater_state_keys", 'g', "Keys in window state"),
    ("tidewater_state_slices", 'g', "Slices (or sessions) in window state"),
    ("tidewater_state_bytes", 'g', "Approximate bytes of window state"),
    ("tidewater_channel_queued_messages", 'g', "Messages waiting in the input channel"),
    ("tidewater_channel_capacity_messages", 'g', "Capacity of the input channel"),
    ("tidewater_checkpoints_completed_total", 'c', "Checkpoints completed"),
    ("tidewater_checkpoints_failed_total", 'c', "Checkpoints that failed"),
    ("tidewater_checkpoint_duration_seconds", 'g', "Last checkpoint, trigger to manifest"),
    ("tidewater_checkpoint_size_bytes", 'g', "State bytes of the last checkpoint"),
    ("tidewater_restore_duration_seconds", 'g', "Restore at start (0: none)"),
    ("tidewater_job_finished", 'g', "1 once the bounded input has ended"),
    ("tidewater_kafka_tasks", 'g', "Kafka partition tasks open in this instance"),
    ("tidewater_kafka_tasks_opened_total", 'c', "Partition tasks opened (assigned or reopened)"),
    ("tidewater_kafka_tasks_restored_total", 'c', "Partition tasks that restored a committed snapshot"),
    ("tidewater_kafka_assignments_total", 'c', "Rebalances that assigned partitions here"),
    ("tidewater_kafka_revocations_total", 'c', "Partitions revoked from or lost by this instance"),
    ("tidewater_uptime_seconds", 'g', "Seconds since the status server started"),
    (EMIT_LATENCY, 'h', "Watermark passing a window's end to its results entering the sink"),
];

fn describe() {
    for (name, kind, help) in HELP {
        match kind {
            'c' => metrics::describe_counter!(*name, *help),
            'g' => metrics::describe_gauge!(*name, *help),
            _ => metrics::describe_histogram!(*name, *help),
        }
    }
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Copies the job's atomics into the recorder (counters as absolute values).
fn publish(s: &Shared) {
    use metrics::{counter, gauge};
    let m = &s.info.metrics;
    let job = [Label::new("job", s.info.job.clone())];
    let snap = m.snapshot();
    counter!("tidewater_source_records_in_total", job.iter()).absolute(snap.records_in);
    counter!("tidewater_source_bytes_in_total", job.iter()).absolute(snap.bytes_in);
    counter!("tidewater_sink_records_out_total", job.iter()).absolute(snap.records_out);
    counter!("tidewater_late_events_total", job.iter()).absolute(snap.late_events);
    counter!("tidewater_dead_letters_total", job.iter()).absolute(snap.dead_letters);
    let c = &m.checkpoints;
    counter!("tidewater_checkpoints_completed_total", job.iter()).absolute(load(&c.completed));
    counter!("tidewater_checkpoints_failed_total", job.iter()).absolute(load(&c.failed));
    let secs = |ms: u64| ms as f64 / 1e3;
    gauge!("tidewater_checkpoint_duration_seconds", job.iter())
        .set(secs(load(&c.last_duration_ms)));
    gauge!("tidewater_checkpoint_size_bytes", job.iter()).set(load(&c.last_bytes) as f64);
    gauge!("tidewater_restore_duration_seconds", job.iter()).set(secs(load(&c.restore_ms)));
    let finished = if s.finished.load(Ordering::Relaxed) {
        1.0
    } else {
        0.0
    };
    gauge!("tidewater_job_finished", job.iter()).set(finished);
    let p = &m.partitions;
    if load(&p.opened) > 0 {
        gauge!("tidewater_kafka_tasks", job.iter()).set(load(&p.assigned) as f64);
        counter!("tidewater_kafka_tasks_opened_total", job.iter()).absolute(load(&p.opened));
        counter!("tidewater_kafka_tasks_restored_total", job.iter()).absolute(load(&p.restored));
        counter!("tidewater_kafka_assignments_total", job.iter()).absolute(load(&p.assignments));
        counter!("tidewater_kafka_revocations_total", job.iter()).absolute(load(&p.revocations));
    }
    gauge!("tidewater_uptime_seconds", job.iter()).set(s.started.elapsed().as_secs_f64());
    let (rates, _, _) = s.rates();
    let now = now_ms();
    for (i, t) in m.tasks().iter().enumerate() {
        let l = [
            job[0].clone(),
            Label::new("operator", t.operator.clone()),
            Label::new("subtask", t.subtask.to_string()),
        ];
        counter!("tidewater_records_in_total", l.iter()).absolute(load(&t.records_in));
        counter!("tidewater_records_out_total", l.iter()).absolute(load(&t.records_out));
        counter!("tidewater_batches_in_total", l.iter()).absolute(load(&t.batches_in));
        gauge!("tidewater_events_per_second", l.iter()).set(rates.get(i).copied().unwrap_or(0.0));
        if let Some(wm) = watermark(t) {
            gauge!("tidewater_watermark_milliseconds", l.iter()).set(wm as f64);
            gauge!("tidewater_watermark_lag_seconds", l.iter()).set(lag_seconds(now, wm));
        }
        gauge!("tidewater_state_keys", l.iter()).set(load(&t.state_keys) as f64);
        gauge!("tidewater_state_slices", l.iter()).set(load(&t.state_slices) as f64);
        gauge!("tidewater_state_bytes", l.iter()).set(load(&t.state_bytes) as f64);
        // Sources have no input channel.
        let capacity = load(&t.queue_capacity);
        if capacity > 0 {
            gauge!("tidewater_channel_queued_messages", l.iter()).set(load(&t.queued) as f64);
            gauge!("tidewater_channel_capacity_messages", l.iter()).set(capacity as f64);
        }
    }
}

// ---------------------------------------------------------------------------------------
// /api/status
// ---------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The subtask's watermark, `None` before the first one.
fn watermark(t: &TaskMetrics) -> Option<i64> {
    let wm = t.watermark.load(Ordering::Relaxed);
    (wm != i64::MIN).then_some(wm)
}

/// Wall clock minus watermark; 0 once the input ended (watermark at its maximum).
fn lag_seconds(now_ms: i64, wm: i64) -> f64 {
    if wm == i64::MAX {
        0.0
    } else {
        (now_ms as f64 - wm as f64) / 1e3
    }
}

fn iso(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// `{"ms", "iso", "lag_seconds"}`, `"end"` once the input ended, or null before any.
fn watermark_json(wm: Option<i64>, now: i64) -> Value {
    match wm {
        None => Value::Null,
        Some(i64::MAX) => json!({ "ms": null, "iso": "end of input", "lag_seconds": 0.0 }),
        Some(wm) => json!({ "ms": wm, "iso": iso(wm), "lag_seconds": lag_seconds(now, wm) }),
    }
}

/// Quantile `q` of emit latency as the bound of its bucket in ms, `">30000"` above the
/// largest bucket, null when nothing was emitted.
fn quantile_json(buckets: &[u64], q: f64) -> Value {
    match quantile_of(buckets, q) {
        None => Value::Null,
        Some(u64::MAX) => Value::from(format!(
            ">{}",
            LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]
        )),
        Some(ms) => Value::from(ms),
    }
}

/// Figures of a group of subtasks (one subtask, or a whole stage).
fn figures(tasks: &[(&TaskMetrics, f64)], now: i64) -> serde_json::Map<String, Value> {
    let sum = |f: fn(&TaskMetrics) -> u64| tasks.iter().map(|(t, _)| f(t)).sum::<u64>();
    let mut buckets = vec![0u64; LATENCY_BUCKETS_MS.len() + 1];
    for (t, _) in tasks {
        for (b, c) in buckets.iter_mut().zip(t.emit_latency.buckets()) {
            *b += c;
        }
    }
    // A stage's watermark is its slowest subtask's; none while any has none.
    let wm = tasks
        .iter()
        .map(|(t, _)| watermark(t))
        .min()
        .flatten()
        .filter(|_| !tasks.is_empty());
    let v = json!({
        "records_in": sum(|t| load(&t.records_in)),
        "records_out": sum(|t| load(&t.records_out)),
        "batches_in": sum(|t| load(&t.batches_in)),
        "events_per_second": tasks.iter().map(|(_, r)| r).sum::<f64>(),
        "watermark": watermark_json(wm, now),
        "queued": sum(|t| load(&t.queued)),
        "queue_capacity": sum(|t| load(&t.queue_capacity)),
        "state_keys": sum(|t| load(&t.state_keys)),
        "state_slices": sum(|t| load(&t.state_slices)),
        "state_bytes": sum(|t| load(&t.state_bytes)),
        "emit_latency": {
            "count": buckets.iter().sum::<u64>(),
            "p50_ms": quantile_json(&buckets, 0.5),
            "p99_ms": quantile_json(&buckets, 0.99),
        },
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Everything the page shows, in one JSON document.
fn status_json(s: &Shared) -> Value {
    let m = &s.info.metrics;
    let now = now_ms();
    let tasks = m.tasks();
    let (rates, source_rate, sink_rate) = s.rates();
    let with_rates: Vec<(&TaskMetrics, f64)> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_ref(), rates.get(i).copied().unwrap_or(0.0)))
        .collect();
    // Stages in graph order; subtasks of a stage the graph does not name come last.
    let mut names: Vec<(String, Value)> = s.info.graph["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|st| (st["name"].as_str().unwrap_or("").to_string(), st.clone()))
                .collect()
        })
        .unwrap_or_default();
    for t in &tasks {
        if !names.iter().any(|(n, _)| *n == t.operator) {
            names.push((
                t.operator.clone(),
                json!({ "name": t.operator, "operators": [], "input": null }),
            ));
        }
    }
    let stages: Vec<Value> = names
        .into_iter()
        .map(|(name, graph)| {
            let mine: Vec<(&TaskMetrics, f64)> = with_rates
                .iter()
                .filter(|(t, _)| t.operator == name)
                .copied()
                .collect();
            let mut stage = figures(&mine, now);
            let subtasks: Vec<Value> = mine
                .iter()
                .map(|(t, r)| {
                    let mut f = figures(&[(*t, *r)], now);
                    f.insert("subtask".into(), t.subtask.into());
                    Value::Object(f)
                })
                .collect();
            stage.insert("name".into(), name.into());
            stage.insert(
                "parallelism".into(),
                graph
                    .get("parallelism")
                    .cloned()
                    .unwrap_or(mine.len().into()),
            );
            stage.insert(
                "operators".into(),
                graph.get("operators").cloned().unwrap_or(json!([])),
            );
            stage.insert(
                "input".into(),
                graph.get("input").cloned().unwrap_or(Value::Null),
            );
            stage.insert("subtasks".into(), subtasks.into());
            Value::Object(stage)
        })
        .collect();
    let snap = m.snapshot();
    let c = &m.checkpoints;
    let events: Vec<Value> = m
        .events()
        .iter()
        .rev()
        .map(|e| json!({ "at_ms": e.at_ms, "at": iso(e.at_ms), "level": e.level, "message": e.message }))
        .collect();
    json!({
        "job": s.info.job,
        "finished": s.finished.load(Ordering::Relaxed),
        "uptime_seconds": s.started.elapsed().as_secs_f64(),
        "now_ms": now,
        "graph": s.info.graph,
        "explain": s.info.explain,
        "totals": {
            "records_in": snap.records_in,
            "records_out": snap.records_out,
            "bytes_in": snap.bytes_in,
            "bytes_total": snap.bytes_total,
            "late_events": snap.late_events,
            "dead_letters": snap.dead_letters,
            "events_per_second": source_rate,
            "results_per_second": sink_rate,
        },
        "checkpoints": {
            "completed": load(&c.completed),
            "failed": load(&c.failed),
            "last_epoch": load(&c.last_epoch),
            "last_duration_ms": load(&c.last_duration_ms),
            "last_bytes": load(&c.last_bytes),
            "restore_ms": load(&c.restore_ms),
            "restored_epoch": load(&c.restored_epoch),
        },
        "stages": stages,
        "events": events,
    })
}
