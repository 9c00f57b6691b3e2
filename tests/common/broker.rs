//! A real Kafka-protocol broker for the tests (docs/kafka-testing.md).
//!
//! `Broker::start()` starts tansu (installed and checksum-verified by
//! `scripts/kafka-broker`) on a free port of 127.0.0.1 with memory storage, waits until it
//! answers a metadata request, and kills it when dropped. With
//! `TIDEWATER_KAFKA_BOOTSTRAP=host:port` the tests use that broker instead and start
//! nothing. When no broker can be had here (no python3, PyPI unreachable), `start()`
//! prints `SKIPPED: ...` and returns `None`, and the test returns.
#![allow(dead_code)]

use std::future::Future;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Use this broker (`host:port[,host:port...]`) instead of starting tansu.
pub const BOOTSTRAP_ENV: &str = "TIDEWATER_KAFKA_BOOTSTRAP";
/// Start this tansu binary instead of the one `scripts/kafka-broker` installs.
pub const TANSU_ENV: &str = "TIDEWATER_TANSU";
/// Set to 1 when the broker hides aborted transactions from read_committed consumers
/// (Apache Kafka does, the pinned tansu does not): the tests then assert it.
pub const READ_COMMITTED_ENV: &str = "TIDEWATER_KAFKA_READ_COMMITTED";

/// How long the broker may take to answer its first metadata request.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long a single request to the broker may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A running broker: tansu started by this test, or an external one.
#[derive(Debug)]
pub struct Broker {
    bootstrap: String,
    /// The tansu process this fixture started; `None` for an external broker.
    child: Option<Child>,
    /// tansu's stdout and stderr, shown when it fails to start or a test panics.
    log: Option<tempfile::NamedTempFile>,
    /// How long tansu took from spawn to answering a metadata request.
    pub started_in: Duration,
}

impl Broker {
    /// A broker for one test, or `None` (after printing `SKIPPED: ...`) when none can be
    /// had on this machine. Panics when one could be had but does not work.
    pub fn start() -> Option<Broker> {
        if let Ok(bootstrap) = std::env::var(BOOTSTRAP_ENV) {
            let began = Instant::now();
            wait_until_ready(&bootstrap, None)
                .unwrap_or_else(|e| panic!("{BOOTSTRAP_ENV}={bootstrap}: {e}"));
            return Some(Broker {
                bootstrap,
                child: None,
                log: None,
                started_in: began.elapsed(),
            });
        }
        let tansu = match tansu_binary() {
            Ok(path) => path,
            Err(why) => {
                eprintln!("SKIPPED: no Kafka broker: {why}");
                return None;
            }
        };
        // A free port can be taken by someone else between asking and binding: try again.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Broker::spawn(tansu, None) {
                Ok(broker) => return Some(broker),
                Err(e) => last_error = e,
            }
        }
        panic!("tansu did not start: {last_error}");
    }

    /// tansu behind a [`NetCut`]: it advertises the proxy's address, so every client
    /// connection goes through the proxy, which can cut them all and refuse new ones
    /// (the broker gone, as clients see it) while tansu keeps its in-memory data. `None`
    /// as for [`Broker::start`], or when an external broker is configured.
    pub fn start_behind_netcut() -> Option<(Broker, NetCut)> {
        if std::env::var(BOOTSTRAP_ENV).is_ok() {
            eprintln!("SKIPPED: a network cut needs the broker this test starts");
            return None;
        }
        let tansu = match tansu_binary() {
            Ok(path) => path,
            Err(why) => {
                eprintln!("SKIPPED: no Kafka broker: {why}");
                return None;
            }
        };
        let mut last_error = String::new();
        for _ in 0..3 {
            let cut = NetCut::listen().unwrap_or_else(|e| panic!("proxy: {e}"));
            match Broker::spawn(tansu, Some(&cut)) {
                Ok(broker) => return Some((broker, cut)),
                Err(e) => last_error = e,
            }
        }
        panic!("tansu did not start: {last_error}");
    }

    fn spawn(tansu: &Path, behind: Option<&NetCut>) -> Result<Broker, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let public = match behind {
            Some(cut) => {
                cut.forward_to(port);
                cut.port
            }
            None => port,
        };
        let advertised = format!("tcp://127.0.0.1:{public}");
        let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
        let out = log.reopen().map_err(|e| format!("log file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        let began = Instant::now();
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", tansu.display()))?;
        let mut broker = Broker {
            bootstrap: format!("127.0.0.1:{public}"),
            child: Some(child),
            log: Some(log),
            started_in: Duration::ZERO,
        };
        let ready = wait_until_ready(&broker.bootstrap, broker.child.as_mut());
        match ready {
            Ok(()) => {
                broker.started_in = began.elapsed();
                Ok(broker)
            }
            Err(e) => Err(format!("{e}; its log:\n{}", broker.log())),
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The pid of the tansu process this fixture started (`None`: an external broker).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether this fixture started the broker (false: `TIDEWATER_KAFKA_BOOTSTRAP`).
    pub fn is_local_tansu(&self) -> bool {
        self.child.is_some()
    }

    /// Whether read_committed consumers can be expected not to see records of aborted
    /// transactions: only when the user says so of an external broker.
    pub fn hides_aborted_transactions(&self) -> bool {
        self.child.is_none() && std::env::var(READ_COMMITTED_ENV).is_ok_and(|v| v == "1")
    }

    /// A client configuration with `bootstrap.servers` set.
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    /// Creates `name` with `partitions` partitions (replication 1) and waits until its
    /// metadata lists them all with a leader.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self
            .config()
            .create()
            .unwrap_or_else(|e| panic!("admin client: {e}"));
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = block_on(admin.create_topics([&topic], &options))
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("create topic {topic}: {code}");
            }
        }
        let probe = self.consumer(&[]);
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let leaders = probe
                .fetch_metadata(Some(name), REQUEST_TIMEOUT)
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map(|t| t.partitions().iter().filter(|p| p.leader() >= 0).count())
                });
            if leaders == usize::try_from(partitions).ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {name}: {leaders:?} of {partitions} partitions have a leader"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes `names` (the benchmark's finished outputs: memory storage keeps every
    /// record until its topic goes). Errors are only reported: a topic the broker never
    /// created is no reason to stop.
    pub fn delete_topics(&self, names: &[&str]) {
        let admin: AdminClient<DefaultClientContext> = self
            .config()
            .create()
            .unwrap_or_else(|e| panic!("admin client: {e}"));
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        match block_on(admin.delete_topics(names, &options)) {
            Ok(results) => {
                for (topic, code) in results.into_iter().filter_map(Result::err) {
                    eprintln!("delete topic {topic}: {code}");
                }
            }
            Err(e) => eprintln!("delete topics {names:?}: {e}"),
        }
    }

    /// A `BaseConsumer` with `bootstrap.servers` and the given extra settings.
    pub fn consumer(&self, settings: &[(&str, &str)]) -> BaseConsumer {
        let mut config = self.config();
        for (k, v) in settings {
            config.set(*k, *v);
        }
        config.create().unwrap_or_else(|e| panic!("consumer: {e}"))
    }

    /// tansu's output so far (empty for an external broker).
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Some(log) = &self.log
            && let Ok(mut f) = log.reopen()
        {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if thread::panicking() {
                eprintln!("tansu at {} logged:\n{}", self.bootstrap, self.log());
            }
        }
    }
}

/// A name no other test (or earlier run against an external broker) has used:
/// `prefix-<pid>-<n>-<time>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}-{}-{n}-{millis}", std::process::id())
}

/// The tansu binary: `TIDEWATER_TANSU`, or the one `scripts/kafka-broker path` installs
/// and verifies (once per test process). `Err` says why there is none on this machine.
fn tansu_binary() -> Result<&'static Path, String> {
    static TANSU: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TANSU
        .get_or_init(|| {
            if let Some(path) = std::env::var_os(TANSU_ENV) {
                return Ok(PathBuf::from(path));
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker");
            let out = Command::new(&script)
                .arg("path")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("{}: {e}", script.display()))?;
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            match out.status.code() {
                Some(0) => {
                    if !said.is_empty() {
                        eprintln!("{said}");
                    }
                    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
                }
                // 2: cannot be installed here (no python3 or venv, no PyPI, no binary
                // for this platform).
                Some(2) => Err(said),
                // 3: checksum mismatch, or anything else: a broken install must fail.
                _ => panic!("scripts/kafka-broker path failed ({}):\n{said}", out.status),
            }
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// Polls a metadata request until the broker answers with at least one broker, the
/// process (when given) exits, or `START_PATIENCE` passes.
fn wait_until_ready(bootstrap: &str, mut child: Option<&mut Child>) -> Result<(), String> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("client: {e}"))?;
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!("broker exited: {status}"));
        }
        let error = match client.fetch_metadata(None, Duration::from_millis(500)) {
            Ok(m) if !m.brokers().is_empty() => return Ok(()),
            Ok(_) => "metadata lists no broker".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "no metadata from {bootstrap} within {START_PATIENCE:?}: {error}"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a future to completion on this thread (the admin client's futures need no
/// runtime: librdkafka completes them from its own thread).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// A TCP proxy in front of the broker that can cut the network: [`NetCut::set_up`]
/// `(false)` shuts every proxied connection down and closes new ones at once, `(true)`
/// forwards again.
#[derive(Debug)]
pub struct NetCut {
    /// The port clients connect to.
    pub port: u16,
    upstream: Arc<std::sync::atomic::AtomicU16>,
    up: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl NetCut {
    fn listen() -> std::io::Result<NetCut> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let cut = NetCut {
            port: listener.local_addr()?.port(),
            upstream: Arc::default(),
            up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            open: Arc::default(),
        };
        let (upstream, up, open) = (cut.upstream.clone(), cut.up.clone(), cut.open.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect((
                    Ipv4Addr::LOCALHOST,
                    upstream.load(Ordering::SeqCst),
                )) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    if let Ok(mut open) = open.lock() {
                        open.push(c2);
                        open.push(s2);
                    }
                    let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    pipe(c3, server);
                    pipe(s3, client);
                }
            }
        });
        Ok(cut)
    }

    fn forward_to(&self, port: u16) {
        self.upstream.store(port, Ordering::SeqCst);
    }

    /// Cuts (false) or restores (true) the network between clients and the broker.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up && let Ok(mut open) = self.open.lock() {
            for s in open.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
