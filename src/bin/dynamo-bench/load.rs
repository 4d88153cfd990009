//! The load generator behind `dynamo-bench` and `make bench`: the binary's own
//! code, outside the library, which it drives through its public client API
//! ([`dynamo::client::Client`]) like any other program.
//!
//! A run drives one [`Target`] (a dynamo cluster through the client library, or a
//! Redis server for comparison) with one [`Workload`] from `clients` concurrent
//! workers, and records every operation's latency in HDR histograms (one per worker
//! and operation kind, merged at the end, so recording takes no lock).
//!
//! * **Closed loop** (default): each worker issues its next operation when the
//!   previous one completes; latency is the operation's own time.
//! * **Open loop** (`rate`): operation `i` is started at its intended time
//!   `start + i / rate` whether or not earlier ones have finished (up to
//!   `MAX_OPEN_IN_FLIGHT` at once), and latency is measured **from the intended send
//!   time**, so a stall shows up in the latency of everything scheduled behind it
//!   (no coordinated omission, as in wrk2).
//!
//! Keys are `user00000042`-style names over a keyspace loaded first; their ranks are
//! drawn uniformly or from a Zipfian distribution (s = 0.99, YCSB's constant).
//! Puts carry the context of an earlier reply for the key, as Dynamo clients do (a
//! worker remembers the last context it saw per key): read-modify-write reads the
//! key first when it has none (YCSB A/B), cached puts write `{}` then (put-only), and
//! blind puts always write `{}`, leaving a sibling beside every existing version.
//! Errors are counted per kind and their first messages kept; none is hidden.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution as _, Zipf};
use serde::{Deserialize, Serialize};

use dynamo::client::Client;
use dynamo::types::NodeId;
use dynamo::vclock::VersionVector;

/// Largest latency the histograms record (a minute, in microseconds).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Contexts a worker remembers before it forgets them all and starts over.
const CONTEXT_CACHE_ENTRIES: usize = 200_000;
/// Error messages kept per run, for the report.
const ERROR_SAMPLES: usize = 5;
/// Open loop: operations in flight at once before new ones wait for a slot.
const MAX_OPEN_IN_FLIGHT: usize = 4096;

/// What the workers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Every operation a put.
    PutOnly,
    /// Every operation a get.
    GetOnly,
    /// YCSB A: 50% get, 50% put.
    YcsbA,
    /// YCSB B: 95% get, 5% put.
    YcsbB,
    /// Put every key of the keyspace once, in order (the load phase).
    Load,
}

impl Workload {
    fn get_fraction(self) -> f64 {
        match self {
            Workload::PutOnly | Workload::Load => 0.0,
            Workload::GetOnly => 1.0,
            Workload::YcsbA => 0.5,
            Workload::YcsbB => 0.95,
        }
    }
}

/// How keys are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    Uniform,
    Zipfian,
}

/// What context a put carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PutMode {
    /// The last context this session saw for the key (a get first when it has none).
    Rmw,
    /// The last context this session saw for the key, `{}` when it has none (no
    /// read): a write-only client that still never fights its own earlier writes.
    Cached,
    /// Always `{}`: every put to an existing key adds a sibling.
    Blind,
}

/// One run's settings. `clients` is the closed loop's concurrency; the open loop
/// is bounded by its rate instead.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSpec {
    /// A name for the run in reports ("dynamo N=3", "redis", ...).
    pub label: String,
    pub workload: Workload,
    pub distribution: KeyDistribution,
    pub keys: u64,
    pub value_size: usize,
    pub clients: usize,
    /// Open loop at this many operations per second (None: closed loop).
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub put_mode: PutMode,
    pub seed: u64,
    /// Added to every key rank: a load with an offset writes keys that do not exist
    /// yet (an insert workload, like YCSB's load phase).
    #[serde(default)]
    pub key_offset: u64,
}

/// Latency summary of one operation kind, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpStats {
    pub count: u64,
    pub errors: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub spec: RunSpec,
    pub target: String,
    /// Measured time (after warm-up), seconds.
    pub elapsed_s: f64,
    /// Successful operations per second over the measured time.
    pub ops_per_s: f64,
    pub get: OpStats,
    pub put: OpStats,
    /// Every operation of the run together (gets and puts in one histogram).
    #[serde(default)]
    pub all: OpStats,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Resident memory of the server processes after the run (KiB), if asked.
    #[serde(default)]
    pub rss_kib: Vec<u64>,
    /// Free-form facts about the setup (fsync mode, N/W/R, machine).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Where the load goes.
pub enum Target {
    /// A dynamo cluster: one client library connection per entry; workers are
    /// spread over them round-robin.
    Dynamo(Vec<Arc<Client>>),
    /// A Redis server (GET/SET), for comparison.
    Redis(Vec<redis::aio::MultiplexedConnection>),
}

impl Target {
    /// Connects `connections` times to each dynamo node; `direct`: the client
    /// library coordinates gets itself (see [`dynamo::client`]).
    pub async fn dynamo(
        nodes: &[NodeId],
        connections: usize,
        direct: bool,
    ) -> dynamo::Result<Target> {
        // The token of a ring with a secret, from the file DYNAMO_TOKEN_FILE
        // names (as the client's).
        let credentials = dynamo::client::Credentials {
            token: match std::env::var_os("DYNAMO_TOKEN_FILE").filter(|v| !v.is_empty()) {
                Some(path) => Some(dynamo::security::secret::read_token_file(
                    std::path::Path::new(&path),
                    "DYNAMO_TOKEN_FILE",
                    false,
                )?),
                None => None,
            },
            tls: None,
        };
        let mut out: Vec<Arc<Client>> = Vec::new();
        for node in nodes {
            for _ in 0..connections.max(1) {
                // One process, one ring: every client after the first shares
                // its ring and its connections to the replicas.
                let client = match out.first() {
                    _ if !direct => {
                        Client::connect_via_node_with(node.clone(), &credentials).await?
                    }
                    None => Client::connect_with(node.clone(), &credentials).await?,
                    Some(first) => Client::connect_beside(node.clone(), first).await?,
                };
                out.push(Arc::new(client));
            }
        }
        Ok(Target::Dynamo(out))
    }

    /// Connects `connections` times to a Redis server at `url`.
    pub async fn redis(url: &str, connections: usize) -> Result<Target, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for _ in 0..connections.max(1) {
            out.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("redis at {url}: {e}"))?,
            );
        }
        Ok(Target::Redis(out))
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Dynamo(_) => "dynamo",
            Target::Redis(_) => "redis",
        }
    }

    fn conn(&self, worker: usize) -> Conn {
        match self {
            Target::Dynamo(c) => Conn::Dynamo(c[worker % c.len()].clone()),
            Target::Redis(c) => Conn::Redis(c[worker % c.len()].clone()),
        }
    }
}

enum Conn {
    Dynamo(Arc<Client>),
    Redis(redis::aio::MultiplexedConnection),
}

impl Conn {
    async fn get(&mut self, key: &str) -> Result<Option<VersionVector>, String> {
        match self {
            Conn::Dynamo(c) => c
                .get(key.to_string())
                .await
                .map(|r| Some(r.context))
                .map_err(|e| e.to_string()),
            Conn::Redis(c) => redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(c)
                .await
                .map(|_| None)
                .map_err(|e| e.to_string()),
        }
    }

    async fn put(
        &mut self,
        key: &str,
        context: VersionVector,
        value: Bytes,
    ) -> Result<Option<VersionVector>, String> {
        match self {
            Conn::Dynamo(c) => c
                .put(key.to_string(), context, value)
                .await
                .map(|r| Some(r.context))
                .map_err(|e| e.to_string()),
            Conn::Redis(c) => redis::cmd("SET")
                .arg(key)
                .arg(value.as_ref())
                .query_async::<()>(c)
                .await
                .map(|_| None)
                .map_err(|e| e.to_string()),
        }
    }
}

/// The key with rank `i`.
pub fn key_name(i: u64) -> String {
    format!("user{i:012}")
}

enum Picker {
    Uniform(u64),
    Zipf(Zipf<f64>),
}

impl Picker {
    fn new(d: KeyDistribution, keys: u64) -> Picker {
        let keys = keys.max(1);
        match d {
            KeyDistribution::Uniform => Picker::Uniform(keys),
            KeyDistribution::Zipfian => match Zipf::new(keys as f64, 0.99) {
                Ok(z) => Picker::Zipf(z),
                Err(_) => Picker::Uniform(keys),
            },
        }
    }

    fn pick(&self, rng: &mut SmallRng) -> u64 {
        match self {
            Picker::Uniform(n) => rng.random_range(0..*n),
            // Zipf samples ranks 1..=n as floats.
            Picker::Zipf(z) => (z.sample(rng) as u64).saturating_sub(1),
        }
    }
}

/// What one worker (closed loop) or the whole run (open loop) recorded.
struct Tally {
    get: Histogram<u64>,
    put: Histogram<u64>,
    get_errors: u64,
    put_errors: u64,
    samples: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            get: histogram(),
            put: histogram(),
            get_errors: 0,
            put_errors: 0,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, other: Tally) {
        let _ = self.get.add(&other.get);
        let _ = self.put.add(&other.put);
        self.get_errors += other.get_errors;
        self.put_errors += other.put_errors;
        for s in other.samples {
            if self.samples.len() < ERROR_SAMPLES && !self.samples.contains(&s) {
                self.samples.push(s);
            }
        }
    }

    fn record(&mut self, get: bool, outcome: Result<u64, String>) {
        match (get, outcome) {
            (true, Ok(us)) => {
                let _ = self.get.record(us);
            }
            (false, Ok(us)) => {
                let _ = self.put.record(us);
            }
            (get, Err(e)) => {
                if get {
                    self.get_errors += 1;
                } else {
                    self.put_errors += 1;
                }
                if self.samples.len() < ERROR_SAMPLES && !self.samples.contains(&e) {
                    self.samples.push(e);
                }
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: 1 us to a minute at 3 significant digits.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Contexts remembered per key rank (read-modify-write puts).
type Contexts = HashMap<u64, VersionVector>;

/// Everything one operation needs besides its connection.
struct Op<'a> {
    rank: u64,
    get: bool,
    /// When the operation was meant to start: latency is measured from here.
    intended: Instant,
    value: &'a Bytes,
    put_mode: PutMode,
    load: bool,
    /// Added to the rank to name the key.
    key_offset: u64,
    /// Open loop: the put of a read-modify-write is timed from `intended` (the
    /// read delayed it). Closed loop: each request is timed on its own.
    open: bool,
}

/// Runs one operation and returns what to record: (was it a get, latency or
/// error) for the operation itself and, for a read-modify-write put that had no
/// context yet, for the read it made first.
async fn one_op(
    conn: &mut Conn,
    op: Op<'_>,
    contexts: &std::sync::Mutex<Contexts>,
) -> Vec<(bool, Result<u64, String>)> {
    let key = key_name(op.rank.saturating_add(op.key_offset));
    let mut out = Vec::with_capacity(2);
    let remember = |ctx: Option<VersionVector>| {
        if op.put_mode == PutMode::Blind {
            return;
        }
        if let (Some(ctx), Ok(mut c)) = (ctx, contexts.lock()) {
            if c.len() >= CONTEXT_CACHE_ENTRIES {
                c.clear();
            }
            c.insert(op.rank, ctx);
        }
    };
    if op.get {
        let r = conn.get(&key).await;
        out.push((
            true,
            r.map(|ctx| {
                remember(ctx);
                latency_us(op.intended)
            }),
        ));
        return out;
    }
    let mut context = VersionVector::new();
    if op.put_mode != PutMode::Blind && !op.load {
        let cached = contexts.lock().ok().and_then(|c| c.get(&op.rank).cloned());
        match cached {
            Some(c) => context = c,
            None if op.put_mode == PutMode::Cached => {}
            None => {
                let started = if op.open { op.intended } else { Instant::now() };
                match conn.get(&key).await {
                    Ok(ctx) => {
                        out.push((true, Ok(latency_us(started))));
                        context = ctx.unwrap_or_default();
                    }
                    Err(e) => out.push((true, Err(e))),
                }
            }
        }
    }
    let put_started = if op.open { op.intended } else { Instant::now() };
    let r = conn.put(&key, context, op.value.clone()).await;
    out.push((
        false,
        r.map(|ctx| {
            remember(ctx);
            latency_us(put_started)
        }),
    ));
    out
}

/// Runs `spec` against `target`. `progress` is bumped once per finished operation.
pub async fn run(target: Arc<Target>, spec: RunSpec, progress: Arc<AtomicU64>) -> RunResult {
    let value = Bytes::from(vec![b'x'; spec.value_size]);
    let picker = Arc::new(Picker::new(spec.distribution, spec.keys));
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let tally = match spec.rate {
        Some(rate) if rate > 0.0 && spec.workload != Workload::Load => {
            open_loop(
                &target,
                &spec,
                rate,
                &value,
                &picker,
                &progress,
                start,
                measure_from,
                end,
            )
            .await
        }
        _ => {
            let load_next = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for w in 0..spec.clients.max(1) {
                let conn = target.conn(w);
                let spec = spec.clone();
                let value = value.clone();
                let picker = picker.clone();
                let progress = progress.clone();
                let load_next = load_next.clone();
                tasks.push(tokio::spawn(async move {
                    closed_loop_worker(
                        w,
                        conn,
                        spec,
                        value,
                        picker,
                        progress,
                        load_next,
                        measure_from,
                        end,
                    )
                    .await
                }));
            }
            let mut tally = Tally::new();
            for t in tasks {
                if let Ok(t) = t.await {
                    tally.add(t);
                }
            }
            tally
        }
    };
    let finished = Instant::now();
    let elapsed = if spec.workload == Workload::Load {
        finished.duration_since(start)
    } else {
        finished.min(end).saturating_duration_since(measure_from)
    };
    let elapsed_s = elapsed.as_secs_f64().max(1e-9);
    let ok = tally.get.len() + tally.put.len();
    let mut all = tally.get.clone();
    let _ = all.add(&tally.put);
    RunResult {
        target: target.name().to_string(),
        elapsed_s,
        ops_per_s: ok as f64 / elapsed_s,
        get: stats(&tally.get, tally.get_errors),
        put: stats(&tally.put, tally.put_errors),
        all: stats(&all, tally.get_errors + tally.put_errors),
        errors: tally.get_errors + tally.put_errors,
        error_samples: tally.samples,
        rss_kib: Vec::new(),
        notes: Vec::new(),
        spec,
    }
}

fn stats(h: &Histogram<u64>, errors: u64) -> OpStats {
    if h.is_empty() {
        return OpStats {
            errors,
            ..OpStats::default()
        };
    }
    OpStats {
        count: h.len(),
        errors,
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn closed_loop_worker(
    w: usize,
    mut conn: Conn,
    spec: RunSpec,
    value: Bytes,
    picker: Arc<Picker>,
    progress: Arc<AtomicU64>,
    load_next: Arc<AtomicU64>,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::new();
    let mut rng = SmallRng::seed_from_u64(spec.seed.wrapping_add(w as u64 * 0x9e37_79b9));
    // Each worker is one client session: its contexts are its own.
    let contexts = std::sync::Mutex::new(Contexts::new());
    let load = spec.workload == Workload::Load;
    let get_fraction = spec.workload.get_fraction();
    loop {
        let intended = Instant::now();
        if !load && intended >= end {
            break;
        }
        let (rank, get) = if load {
            let i = load_next.fetch_add(1, Ordering::Relaxed);
            if i >= spec.keys {
                break;
            }
            (i, false)
        } else {
            (picker.pick(&mut rng), rng.random::<f64>() < get_fraction)
        };
        let op = Op {
            rank,
            get,
            intended,
            value: &value,
            put_mode: spec.put_mode,
            load,
            key_offset: spec.key_offset,
            open: false,
        };
        let outcomes = one_op(&mut conn, op, &contexts).await;
        if load || intended >= measure_from {
            for (get, outcome) in outcomes {
                tally.record(get, outcome);
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// Operations start at their intended times whatever the ones before them are
/// doing (up to [`MAX_OPEN_IN_FLIGHT`] at once; past that an operation waits, and
/// the wait counts in its latency).
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    target: &Arc<Target>,
    spec: &RunSpec,
    rate: f64,
    value: &Bytes,
    picker: &Arc<Picker>,
    progress: &Arc<AtomicU64>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let tally = Arc::new(std::sync::Mutex::new(Tally::new()));
    let contexts = Arc::new(std::sync::Mutex::new(Contexts::new()));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN_IN_FLIGHT));
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let get_fraction = spec.workload.get_fraction();
    let mut tasks = tokio::task::JoinSet::new();
    // The schedule runs on a thread of its own: tokio's timer has a resolution
    // of 1 ms, so operations it woke would leave up to a millisecond after their
    // intended time and carry that delay in their latency. A thread's sleep is
    // precise to tens of microseconds.
    let (ticks, mut due) = tokio::sync::mpsc::channel::<(u64, Instant)>(MAX_OPEN_IN_FLIGHT);
    std::thread::spawn(move || {
        for i in 0u64.. {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            if intended >= end {
                break;
            }
            std::thread::sleep(intended.saturating_duration_since(Instant::now()));
            if ticks.blocking_send((i, intended)).is_err() {
                break;
            }
        }
    });
    while let Some((i, intended)) = due.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut conn = target.conn(usize::try_from(i).unwrap_or(0));
        let rank = picker.pick(&mut rng);
        let get = rng.random::<f64>() < get_fraction;
        let (value, put_mode, key_offset) = (value.clone(), spec.put_mode, spec.key_offset);
        let (tally, contexts, progress) = (tally.clone(), contexts.clone(), progress.clone());
        tasks.spawn(async move {
            let op = Op {
                rank,
                get,
                intended,
                value: &value,
                put_mode,
                load: false,
                key_offset,
                open: true,
            };
            let outcomes = one_op(&mut conn, op, &contexts).await;
            if intended >= measure_from {
                if let Ok(mut t) = tally.lock() {
                    for (get, outcome) in outcomes {
                        t.record(get, outcome);
                    }
                }
            }
            progress.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut out = Tally::new();
    if let Ok(mut t) = tally.lock() {
        out.add(std::mem::replace(&mut *t, Tally::new()));
    }
    out
}

fn latency_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(MAX_LATENCY_US)
        .clamp(1, MAX_LATENCY_US)
}

/// Resident set size of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
