//! `dynamo`: one node of the ring. Parses flags (SPEC section 1), sets up logging,
//! runs the node until SIGINT or SIGTERM, then shuts down gracefully.

/// mimalloc: the request path allocates many small, short-lived buffers, which
/// glibc malloc serves markedly slower (it topped the node's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dynamo::config::{Flags, NodeConfig};

/// Logging when `RUST_LOG` is unset: our own events at info; tarpc's per-request
/// spans are off, because building them costs more than the request itself.
const DEFAULT_LOG_FILTER: &str = "info,tarpc=warn";

/// A node of a Dynamo-style replicated key-value store.
#[derive(Parser, Debug)]
#[command(
    name = "dynamo",
    version,
    about,
    after_help = "Logs go to stderr, filtered by RUST_LOG (default \"info,tarpc=warn\"; for example\n\
RUST_LOG=debug or RUST_LOG=dynamo::antientropy=debug,info), without colours unless\n\
stderr is a terminal. SIGINT or SIGTERM: finish the requests in flight, flush, exit 0."
)]
struct Args {
    /// Host part of this node's identity (the address others reach it at).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of this node.
    #[arg(long, default_value_t = 13337)]
    port: u16,
    /// The leader, HOST[:PORT]; absent or equal to this node: this node leads.
    #[arg(long)]
    leader: Option<String>,
    /// N: replicas per key.
    #[arg(long, default_value_t = dynamo::types::DEFAULT_N)]
    qsize: usize,
    /// W: acknowledgements a write needs.
    #[arg(long = "sq-write-n", alias = "sq_write_n", default_value_t = dynamo::types::DEFAULT_W)]
    write_n: usize,
    /// R: answers a read needs.
    #[arg(long = "sq-read-n", alias = "sq_read_n", default_value_t = dynamo::types::DEFAULT_R)]
    read_n: usize,
    /// Where sled keeps data, hints and the ring (default ./data/HOST_PORT).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk.
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// When an acknowledgement means "on disk": always, batch (group commit) or never.
    #[arg(long, default_value = "batch", value_parser = ["always", "batch", "never"])]
    fsync: String,
    /// Serve the HTTP API, /metrics and the web page on this port (same host as --listen).
    #[arg(long)]
    http_port: Option<u16>,
    /// Address to bind (default: HOST:PORT).
    #[arg(long)]
    listen: Option<String>,
    /// Coordinator deadline for one client request, in milliseconds.
    #[arg(long, default_value_t = dynamo::config::DEFAULT_REQUEST_TIMEOUT_MS)]
    request_timeout_ms: u64,
    /// Keys per second this node sends to new owners during a ring change (0: no cap).
    #[arg(long, default_value_t = dynamo::config::DEFAULT_TRANSFER_RATE)]
    transfer_rate: u64,
    /// Keys per second anti-entropy repairs, sent plus fetched (0: no cap).
    #[arg(long, default_value_t = dynamo::antientropy::DEFAULT_REPAIR_RATE)]
    repair_rate: u64,
    /// Pause between two anti-entropy exchanges of this node, in milliseconds (0: off).
    #[arg(long, default_value_t = dynamo::antientropy::DEFAULT_EXCHANGE_INTERVAL_MS)]
    anti_entropy_interval_ms: u64,
    /// How long every owner must have held a tombstone, with nothing pending for
    /// it, before it leaves the disk, in milliseconds (more than twice the
    /// longest deadline of a call that carries copies: with the defaults, more
    /// than 20,000).
    #[arg(long, default_value_t = dynamo::config::DEFAULT_TOMBSTONE_GRACE_MS)]
    tombstone_grace_ms: u64,
    /// Deadline of a call that carries copies in bulk (a ring change's transfer
    /// batch, an anti-entropy call), in milliseconds.
    #[arg(long, default_value_t = dynamo::config::DEFAULT_COPY_TIMEOUT_MS)]
    copy_timeout_ms: u64,
    /// Pause between two rounds of failure-detector pings, in milliseconds (0: no
    /// pings; peers then count as alive until a call to them fails).
    #[arg(long, default_value_t = dynamo::config::DEFAULT_PING_INTERVAL_MS)]
    ping_interval_ms: u64,
    /// The secret every node of the ring shares, one per line (the first is
    /// used to dial, every one is accepted: see "Rotating the cluster secret"
    /// in the README). Readable by its owner only, or the node refuses to start.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Run with no cluster secret and no tokens: anyone who reaches the port
    /// can read, write and change the ring. Said at start-up and in status.
    #[arg(long, conflicts_with_all = ["cluster_secret_file", "admin_token_file"])]
    insecure: bool,
    /// A token this node accepts as the admin role (owner-readable file); user
    /// add makes more.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for clients, on the RPC and the HTTP port.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM, owner-readable).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve /metrics without a token (on a ring with a secret it needs one).
    #[arg(long)]
    open_metrics: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .init();
    let config = match NodeConfig::from_flags(Flags {
        host: Some(args.host),
        port: Some(args.port),
        leader: args.leader,
        qsize: Some(args.qsize),
        write_n: Some(args.write_n),
        read_n: Some(args.read_n),
        data_dir: args.data_dir,
        in_memory: args.in_memory,
        fsync: Some(args.fsync),
        http_port: args.http_port,
        listen: args.listen,
        request_timeout_ms: Some(args.request_timeout_ms),
        transfer_rate: Some(args.transfer_rate),
        repair_rate: Some(args.repair_rate),
        anti_entropy_interval_ms: Some(args.anti_entropy_interval_ms),
        tombstone_grace_ms: Some(args.tombstone_grace_ms),
        ping_interval_ms: Some(args.ping_interval_ms),
        copy_timeout_ms: Some(args.copy_timeout_ms),
        cluster_secret_file: args.cluster_secret_file,
        insecure: args.insecure,
        admin_token_file: args.admin_token_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        open_metrics: args.open_metrics,
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dynamo: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dynamo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dynamo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: NodeConfig) -> dynamo::Result<()> {
    let node = dynamo::server::start(config).await?;
    let stop = node.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received, shutting down");
        let _ = stop.send(true);
    });
    node.wait().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
