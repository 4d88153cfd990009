//! The load generator behind `dynamo-bench` and `make bench`.
//!
//! A run drives one [`Target`] (a dynamo cluster through the client library, or a
//! Redis server for comparison) with one [`Workload`] from `clients` concurrent
//! workers, and records every operation's latency in HDR histograms (one per worker
//! and operation kind, merged at the end, so recording takes no lock).
//!
//! * **Closed loop** (default): each worker issues its next operation when the
//!   previous one completes; latency is the operation's own time.
//! * **Open loop** (`rate`): operations are scheduled at fixed intended times
//!   (worker `i` of `C` owns ticks `i, i+C, ...` of a `rate` per second clock) and
//!   latency is measured **from the intended send time**, so a stall that delays
//!   later sends shows up in their latency (no coordinated omission, as in wrk2).
//!
//! Keys are `user00000042`-style names over a keyspace loaded first; their ranks are
//! drawn uniformly or from a Zipfian distribution (s = 0.99, YCSB's constant).
//! Puts either carry the context of an earlier reply for the key (read-modify-write,
//! as Dynamo clients do: a worker remembers the last context it saw per key, and
//! reads the key first when it has none) or are blind (`{}`, which leaves siblings).
//! Errors are counted per kind and their first messages kept; none is hidden.

pub mod report;

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

use crate::client::Client;
use crate::types::NodeId;
use crate::vclock::VersionVector;

/// Largest latency the histograms record (a minute, in microseconds).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Contexts a worker remembers before it forgets them all and starts over.
const CONTEXT_CACHE_ENTRIES: usize = 200_000;
/// Error messages kept per run, for the report.
const ERROR_SAMPLES: usize = 5;

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
    /// The last context this worker saw for the key (a get first when it has none).
    Rmw,
    /// Always `{}`.
    Blind,
}

/// One run's settings.
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
    /// Connects `connections` times to each dynamo node.
    pub async fn dynamo(nodes: &[NodeId], connections: usize) -> crate::Result<Target> {
        let mut out = Vec::new();
        for node in nodes {
            for _ in 0..connections.max(1) {
                out.push(Arc::new(Client::connect(node.clone()).await?));
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

struct WorkerOut {
    get: Histogram<u64>,
    put: Histogram<u64>,
    get_errors: u64,
    put_errors: u64,
    samples: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: 1 us to a minute at 3 significant digits.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Runs `spec` against `target`. `progress` is bumped once per finished operation.
pub async fn run(target: Arc<Target>, spec: RunSpec, progress: Arc<AtomicU64>) -> RunResult {
    let value = Bytes::from(vec![b'x'; spec.value_size]);
    let picker = Arc::new(Picker::new(spec.distribution, spec.keys));
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
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
            worker(
                w,
                conn,
                spec,
                value,
                picker,
                progress,
                load_next,
                start,
                measure_from,
                end,
            )
            .await
        }));
    }
    let mut get = histogram();
    let mut put = histogram();
    let (mut get_errors, mut put_errors) = (0, 0);
    let mut samples: Vec<String> = Vec::new();
    for t in tasks {
        if let Ok(out) = t.await {
            let _ = get.add(&out.get);
            let _ = put.add(&out.put);
            get_errors += out.get_errors;
            put_errors += out.put_errors;
            for s in out.samples {
                if samples.len() < ERROR_SAMPLES && !samples.contains(&s) {
                    samples.push(s);
                }
            }
        }
    }
    let finished = Instant::now();
    let elapsed = if spec.workload == Workload::Load {
        finished.duration_since(start)
    } else {
        finished.min(end).saturating_duration_since(measure_from)
    };
    let elapsed_s = elapsed.as_secs_f64().max(1e-9);
    let ok = get.len() + put.len();
    RunResult {
        target: target.name().to_string(),
        elapsed_s,
        ops_per_s: ok as f64 / elapsed_s,
        get: stats(&get, get_errors),
        put: stats(&put, put_errors),
        errors: get_errors + put_errors,
        error_samples: samples,
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
async fn worker(
    w: usize,
    mut conn: Conn,
    spec: RunSpec,
    value: Bytes,
    picker: Arc<Picker>,
    progress: Arc<AtomicU64>,
    load_next: Arc<AtomicU64>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> WorkerOut {
    let mut out = WorkerOut {
        get: histogram(),
        put: histogram(),
        get_errors: 0,
        put_errors: 0,
        samples: Vec::new(),
    };
    let mut rng = SmallRng::seed_from_u64(spec.seed.wrapping_add(w as u64 * 0x9e37_79b9));
    let mut contexts: HashMap<u64, VersionVector> = HashMap::new();
    let clients = spec.clients.max(1) as u64;
    let mut tick = w as u64;
    let get_fraction = spec.workload.get_fraction();
    loop {
        // When this operation should start.
        let intended = match spec.rate {
            Some(rate) if rate > 0.0 => {
                let at = start + Duration::from_secs_f64(tick as f64 / rate);
                tick += clients;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            _ => Instant::now(),
        };
        if spec.workload != Workload::Load && intended >= end {
            break;
        }
        let (rank, is_get) = if spec.workload == Workload::Load {
            let i = load_next.fetch_add(1, Ordering::Relaxed);
            if i >= spec.keys {
                break;
            }
            (i, false)
        } else {
            (picker.pick(&mut rng), rng.random::<f64>() < get_fraction)
        };
        let key = key_name(rank);
        let record = spec.workload == Workload::Load || intended >= measure_from;
        if is_get {
            let r = conn.get(&key).await;
            let us = latency_us(intended);
            match r {
                Ok(ctx) => {
                    if record {
                        let _ = out.get.record(us);
                    }
                    remember(&mut contexts, rank, ctx, spec.put_mode);
                }
                Err(e) => note_error(&mut out, true, e, record),
            }
        } else {
            let mut context = VersionVector::new();
            if spec.put_mode == PutMode::Rmw && spec.workload != Workload::Load {
                match contexts.get(&rank) {
                    Some(c) => context = c.clone(),
                    None => match conn.get(&key).await {
                        Ok(ctx) => {
                            if record {
                                let _ = out.get.record(latency_us(intended));
                            }
                            context = ctx.unwrap_or_default();
                        }
                        Err(e) => note_error(&mut out, true, e, record),
                    },
                }
            }
            let started = if spec.rate.is_some() {
                intended
            } else {
                Instant::now()
            };
            let r = conn.put(&key, context, value.clone()).await;
            let us = latency_us(started);
            match r {
                Ok(ctx) => {
                    if record {
                        let _ = out.put.record(us);
                    }
                    remember(&mut contexts, rank, ctx, spec.put_mode);
                }
                Err(e) => note_error(&mut out, false, e, record),
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    out
}

fn latency_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(MAX_LATENCY_US)
        .clamp(1, MAX_LATENCY_US)
}

fn remember(
    contexts: &mut HashMap<u64, VersionVector>,
    rank: u64,
    ctx: Option<VersionVector>,
    mode: PutMode,
) {
    if mode != PutMode::Rmw {
        return;
    }
    if let Some(ctx) = ctx {
        if contexts.len() >= CONTEXT_CACHE_ENTRIES {
            contexts.clear();
        }
        contexts.insert(rank, ctx);
    }
}

fn note_error(out: &mut WorkerOut, get: bool, e: String, record: bool) {
    if !record {
        return;
    }
    if get {
        out.get_errors += 1;
    } else {
        out.put_errors += 1;
    }
    if out.samples.len() < ERROR_SAMPLES && !out.samples.contains(&e) {
        out.samples.push(e);
    }
}

/// Resident set size of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
