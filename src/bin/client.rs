//! `client`: the interactive client of dynamo (SPEC section 2).
//!
//! ```text
//! client [--node HOST] [--port PORT] [--json] [-c COMMAND]...
//!        [--token-file FILE] [--bucket BUCKET] [--tls [--ca FILE]]
//! client backup FILE [--bucket B] [--prefix P] [--tombstones] [--node HOST] ...
//! client restore FILE [--node HOST] ...
//! ```
//!
//! This binary only parses its flags and resolves the node's address; the loop,
//! the command language and the output formats live in [`dynamo::repl`]. `--node`
//! takes a host (the port then comes from `--port`, default 13337) or a full
//! `HOST:PORT`; giving a port both ways is refused unless they agree.

/// mimalloc: the request path allocates many small, short-lived buffers, which
/// glibc malloc serves markedly slower (it topped the node's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dynamo::client::Credentials;
use dynamo::repl::{self, Options};
use dynamo::security::{secret, tls::ClientTls};
use dynamo::types::NodeId;

/// The node the client talks to when no flag says otherwise.
const DEFAULT_HOST: &str = "127.0.0.1";
/// The default node port, the same as the node's (`dynamo --port`).
const DEFAULT_PORT: u16 = 13337;

/// The flags of `client`.
#[derive(Parser, Debug)]
#[command(
    name = "client",
    version,
    about = "The interactive client of dynamo, a Dynamo-style key-value database",
    after_help = "Interactive when stdin is a terminal; otherwise reads one command per line.\n\
\n\
Commands (`help COMMAND` at the prompt for details; names are case-insensitive):\n  \
put KEY CONTEXT VALUE    store VALUE; CONTEXT is {} or one printed by get\n  \
                         (--w N: wait for N acks; --ttl 30s: the value expires)\n  \
get [-v] KEY             every current version and the merged context (-v: who answered;\n  \
                         --r N: wait for N answers)\n  \
scan [PREFIX]            keys in key order, a page at a time (--limit N, --after KEY,\n  \
                         --consistent)\n  \
delete KEY CONTEXT       a tombstone over what CONTEXT has seen\n  \
add-node HOST:PORT       (leader) start a ring change that adds the node\n  \
remove-node HOST:PORT    (leader) start a ring change that removes the node\n  \
status                   the ring, each node's state and counters, a running change\n  \
locate KEY               the key's replicas, pending owners, fallbacks and their states\n  \
wait-settled [SECONDS]   wait until no ring change runs\n  \
use BUCKET               later commands address BUCKET's keys (--bucket B at start)\n  \
bucket create|list|drop  buckets with their own N/W/R, storage, quota, default TTL\n  \
help [COMMAND], quit\n\
\n\
Puts, deletes and ring commands go to the node; a get asks the key's replicas
directly (the ring learned from the node) and falls back to the node when it
cannot.

Exit status: with -c or a script on stdin, 0 when every command succeeded and 1\n\
when one failed (an unreachable node fails its commands); 2 for bad flags. The\n\
interactive prompt exits 0.\n\
\n\
Credentials: on a ring with a cluster secret every command needs a token, read\n\
from --token-file FILE or the file DYNAMO_TOKEN_FILE names (never from the\n\
command line). A missing or unknown token fails with \"unauthorized: ...\", a role\n\
that may not run a command with \"forbidden: ...\" (exit status 1).\n\
\n\
Environment: DYNAMO_HISTORY is the file the interactive prompt keeps its history\n\
in (default ~/.dynamo_history); DYNAMO_TOKEN_FILE as --token-file."
)]
struct Args {
    /// The node to talk to: HOST or HOST:PORT.
    #[arg(long, global = true, visible_alias = "host", value_name = "HOST", default_value = DEFAULT_HOST)]
    node: String,
    /// The node's port (when --node gives only a host).
    #[arg(long, global = true, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Print each result as one JSON object on one line.
    #[arg(long, global = true)]
    json: bool,
    /// Run COMMAND and exit (repeatable: the commands run in order); stdin is not read.
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    commands: Vec<String>,
    /// The file holding this client's token (default: $DYNAMO_TOKEN_FILE).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The bucket key commands address until `use` says otherwise (default: `default`).
    #[arg(long, value_name = "BUCKET", default_value = "default")]
    bucket: String,
    /// Connect over TLS (the nodes run with --tls-cert).
    #[arg(long, global = true)]
    tls: bool,
    /// The certificate authority to trust for --tls (PEM; default: the system's roots).
    #[arg(long, global = true, value_name = "FILE", requires = "tls")]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    action: Option<Action>,
}

/// What the client does instead of the REPL.
#[derive(Subcommand, Debug)]
enum Action {
    /// Write every key of the ring (every version, with its context) to FILE:
    /// one JSON line per key, a header and a checksummed trailer.
    Backup {
        /// Where to write (replaced only once the backup is whole).
        file: std::path::PathBuf,
        /// Only this bucket's keys (default: every bucket).
        #[arg(long, value_name = "BUCKET")]
        bucket: Option<String>,
        /// Only keys that start with it.
        #[arg(long, value_name = "PREFIX", default_value = "")]
        prefix: String,
        /// Also keys that were deleted or expired (their tombstones).
        #[arg(long)]
        tombstones: bool,
    },
    /// Merge the backup in FILE into the ring (never over a newer version;
    /// restoring twice changes nothing). The file is checked first.
    Restore {
        /// A file `client backup` wrote.
        file: std::path::PathBuf,
    },
}

/// Runs a backup or a restore against `node`; prints a summary (one JSON
/// line under --json, a progress bar and a sentence on a terminal).
fn run_action(action: Action, node: NodeId, credentials: Credentials, json: bool) -> ExitCode {
    use dynamo::backup::{self, Bar, Progress, Silent};
    use std::io::IsTerminal as _;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("client: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        Bar::new(match action {
            Action::Backup { .. } => "backup",
            Action::Restore { .. } => "restore",
        })
    });
    let progress: &dyn Progress = match &bar {
        Some(b) => b,
        None => &Silent,
    };
    let out = runtime.block_on(async {
        let client = dynamo::client::Client::connect_via_node_with(node, &credentials).await?;
        match &action {
            Action::Backup {
                file,
                bucket,
                prefix,
                tombstones,
            } => {
                backup::backup(
                    &client,
                    file,
                    bucket.as_deref(),
                    prefix,
                    *tombstones,
                    progress,
                )
                .await
            }
            Action::Restore { file } => backup::restore(&client, file, progress).await,
        }
    });
    if let Some(b) = &bar {
        b.finish();
    }
    let verb = match action {
        Action::Backup { .. } => "backed up",
        Action::Restore { .. } => "restored",
    };
    match out {
        Ok(summary) if json => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            println!(
                "{verb} {} keys ({} bytes) {} {} in {:.1} s",
                s.keys,
                s.bytes,
                if verb == "restored" { "from" } else { "to" },
                s.file,
                s.seconds
            );
            ExitCode::SUCCESS
        }
        Err(e) if json => {
            let error = serde_json::json!({"ok": false, "error": e.to_string()});
            println!("{error}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::from(1)
        }
    }
}

/// The token and TLS the flags and the environment give.
fn credentials(args: &Args) -> Result<Credentials, String> {
    let file = args.token_file.clone().or_else(|| {
        std::env::var_os("DYNAMO_TOKEN_FILE")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    });
    let token = match &file {
        None => None,
        Some(path) => {
            warn_if_shared(path);
            Some(secret::read_token_file(path, "--token-file", false).map_err(|e| e.to_string())?)
        }
    };
    let tls = if args.tls {
        Some(std::sync::Arc::new(
            ClientTls::new(args.ca.as_deref()).map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    Ok(Credentials { token, tls })
}

/// A token file others may read is a token others may use: say so.
fn warn_if_shared(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "client: warning: {} can be read by others (mode {mode:03o}); chmod 600 it",
                path.display()
            );
        }
    }
}

/// `--node` and `--port` as one identity.
fn node_id(node: &str, port: Option<u16>) -> Result<NodeId, String> {
    // A full HOST:PORT wins over the default port; with --port too, they must agree.
    if node.contains(':') {
        let id: NodeId = node.parse().map_err(|e| format!("--node: {e}"))?;
        return match port {
            Some(p) if p != id.port() => Err(format!(
                "--node {node} names port {} but --port says {p}; give the port once",
                id.port()
            )),
            _ => Ok(id),
        };
    }
    NodeId::new(node, port.unwrap_or(DEFAULT_PORT)).map_err(|e| format!("--node: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let node = match node_id(&args.node, args.port) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::from(2);
        }
    };
    let credentials = match credentials(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(action) = args.action {
        return run_action(action, node, credentials, args.json);
    }
    if args.bucket != dynamo::ring::DEFAULT_BUCKET {
        if let Err(e) = dynamo::ring::check_bucket_name(&args.bucket) {
            eprintln!("client: --bucket: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(repl::run(Options {
        node,
        json: args.json,
        commands: args.commands,
        credentials,
        bucket: args.bucket,
    }))
}
