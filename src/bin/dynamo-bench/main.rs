//! `dynamo-bench`: the load generator. `run` drives one workload against a
//! running dynamo cluster or a Redis server and appends its result to a JSON
//! file; `report` prints the table and the side-by-side ratios.
//!
//! - `load.rs`: workloads, closed and open loop, HDR histograms (see its docs);
//! - `report.rs`: the results as a table, as JSON, and the ratios;
//! - `connect.rs`: how long opening a connection (and its handshake) takes.
//!
//! It is the binary's own code, not the library's: it reaches dynamo only
//! through the public client API, and the library does not depend on Redis.

/// mimalloc: the request path allocates many small, short-lived buffers, which
/// glibc malloc serves markedly slower (it topped the node's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dynamo::types::NodeId;

mod connect;
mod load;
mod report;

use load::{KeyDistribution, PutMode, RunSpec, Target, Workload};

#[derive(Parser)]
#[command(
    name = "dynamo-bench",
    version,
    about = "Load generator for dynamo (and Redis, for comparison)"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one workload and append its result to --out.
    Run(RunArgs),
    /// Print the results in a file, with ratios against --against.
    Report {
        #[arg(long, default_value = "target/bench/results.json")]
        file: PathBuf,
        /// Label whose runs are compared with the others.
        #[arg(long)]
        against: Option<String>,
    },
    /// Time opening connections to a node: TCP connect and handshake, one
    /// after another (a client's; with --cluster-secret-file also a member's).
    Connect {
        #[arg(long, default_value = "127.0.0.1:13337")]
        node: String,
        #[arg(long, default_value_t = 300)]
        count: usize,
        /// The ring's secret: time a member's handshake too.
        #[arg(long)]
        cluster_secret_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// dynamo nodes to spread the load over (HOST:PORT, repeatable).
    #[arg(long = "node", default_value = "127.0.0.1:13337")]
    nodes: Vec<String>,
    /// Drive a Redis server at this URL instead (e.g. redis://127.0.0.1:6379).
    #[arg(long)]
    redis: Option<String>,
    /// Clients (connections) per node, for puts and node-coordinated gets;
    /// client-driven gets share one connection per replica.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Let the nodes coordinate gets too (by default the client library
    /// coordinates them itself, reading the replicas directly).
    #[arg(long)]
    via_node: bool,
    #[arg(long, value_enum, default_value = "ycsb-a")]
    workload: WorkloadArg,
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: DistArg,
    /// Keyspace size (keys are loaded first with --load).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Concurrent clients (closed loop) or workers (open loop).
    #[arg(long, short = 'c', default_value_t = 64)]
    clients: usize,
    /// Open loop at this many operations per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// rmw: context of an earlier reply, read first if none (default for YCSB);
    /// cached: context of an earlier reply or {} (default for put-only); blind: {}.
    #[arg(long, value_enum)]
    put_mode: Option<PutModeArg>,
    /// Put every key once before the run.
    #[arg(long)]
    load: bool,
    #[arg(long, default_value = "dynamo")]
    label: String,
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Processes whose resident memory is recorded after the run.
    #[arg(long = "rss-pid")]
    rss_pids: Vec<u32>,
    /// Free-form notes stored with the result.
    #[arg(long = "note")]
    notes: Vec<String>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Added to every key's rank (a load with an offset inserts new keys).
    #[arg(long, default_value_t = 0)]
    key_offset: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WorkloadArg {
    PutOnly,
    GetOnly,
    YcsbA,
    YcsbB,
    Load,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DistArg {
    Uniform,
    Zipfian,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PutModeArg {
    Rmw,
    Cached,
    Blind,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dynamo-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Cmd::Report { file, against } => match report::load(&file) {
            Ok(results) => {
                print!("{}", report::table(&results));
                if let Some(label) = against {
                    print!("{}", report::ratios(&results, &label));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dynamo-bench: cannot read {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Cmd::Run(a) => rt.block_on(run(a)),
        Cmd::Connect {
            node,
            count,
            cluster_secret_file,
        } => {
            let node: NodeId = match node.parse() {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("dynamo-bench: --node: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let secret = cluster_secret_file.as_deref();
            match rt.block_on(connect::run(&node, count.max(1), secret)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dynamo-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(a: RunArgs) -> ExitCode {
    let target = match &a.redis {
        Some(url) => Target::redis(url, a.connections).await,
        None => {
            let nodes: Result<Vec<NodeId>, _> = a.nodes.iter().map(|n| n.parse()).collect();
            match nodes {
                Ok(nodes) => Target::dynamo(&nodes, a.connections, !a.via_node)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("{e}")),
            }
        }
    };
    let target = match target {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("dynamo-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workload = match a.workload {
        WorkloadArg::PutOnly => Workload::PutOnly,
        WorkloadArg::GetOnly => Workload::GetOnly,
        WorkloadArg::YcsbA => Workload::YcsbA,
        WorkloadArg::YcsbB => Workload::YcsbB,
        WorkloadArg::Load => Workload::Load,
    };
    let put_mode = match a.put_mode {
        Some(PutModeArg::Rmw) => PutMode::Rmw,
        Some(PutModeArg::Cached) => PutMode::Cached,
        Some(PutModeArg::Blind) => PutMode::Blind,
        // Put-only measures writes (no reads): contexts from the session's own replies.
        None if workload == Workload::PutOnly => PutMode::Cached,
        None => PutMode::Rmw,
    };
    let base = RunSpec {
        label: a.label.clone(),
        workload,
        distribution: match a.distribution {
            DistArg::Uniform => KeyDistribution::Uniform,
            DistArg::Zipfian => KeyDistribution::Zipfian,
        },
        keys: a.keys,
        value_size: a.value_size,
        clients: a.clients,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration.max(0.1)),
        warmup: Duration::from_secs_f64(a.warmup.max(0.0)),
        put_mode,
        seed: a.seed,
        key_offset: a.key_offset,
    };
    if a.load && workload != Workload::Load {
        let load = RunSpec {
            workload: Workload::Load,
            put_mode: PutMode::Blind,
            warmup: Duration::ZERO,
            label: format!("{} load", a.label),
            ..base.clone()
        };
        eprintln!("loading {} keys of {} B ...", a.keys, a.value_size);
        let r = drive(target.clone(), load, a.keys).await;
        eprintln!("loaded at {:.0} ops/s ({} errors)", r.ops_per_s, r.errors);
    }
    let total = if workload == Workload::Load {
        a.keys
    } else {
        0
    };
    let mut result = drive(target, base, total).await;
    result.rss_kib = a
        .rss_pids
        .iter()
        .filter_map(|p| load::rss_kib(*p))
        .collect();
    result.notes = a.notes.clone();
    print!("{}", report::table(std::slice::from_ref(&result)));
    if let Err(e) = report::append(&a.out, &result) {
        eprintln!("dynamo-bench: cannot write {}: {e}", a.out.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs one spec with a progress bar on a terminal (none in CI or when piped).
async fn drive(target: Arc<Target>, spec: RunSpec, total: u64) -> load::RunResult {
    let progress = Arc::new(AtomicU64::new(0));
    let show = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let bar = show.then(|| {
        let bar = if total > 0 {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::new_spinner()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {pos} ops {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let ticker = bar.clone().map(|bar| {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = progress.load(Ordering::Relaxed);
                bar.set_position(now);
                bar.set_message(format!("{:.0} ops/s", (now - last) as f64 * 2.0));
                last = now;
            }
        })
    });
    let result = load::run(target, spec, progress).await;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}
