//! `client`: the interactive client of dynamo (SPEC section 2).
//!
//! ```text
//! client [--node HOST] [--port PORT] [--json] [-c COMMAND]...
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

use clap::Parser;
use dynamo::repl::{self, Options};
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
get [-v] KEY             every current version and the merged context (-v: who answered)\n  \
delete KEY CONTEXT       a tombstone over what CONTEXT has seen\n  \
add-node HOST:PORT       (leader) start a ring change that adds the node\n  \
remove-node HOST:PORT    (leader) start a ring change that removes the node\n  \
status                   the ring, each node's state and counters, a running change\n  \
locate KEY               the key's replicas, pending owners, fallbacks and their states\n  \
wait-settled [SECONDS]   wait until no ring change runs\n  \
help [COMMAND], quit\n\
\n\
Puts, deletes and ring commands go to the node; a get asks the key's replicas
directly (the ring learned from the node) and falls back to the node when it
cannot.

Exit status: with -c or a script on stdin, 0 when every command succeeded and 1\n\
when one failed (an unreachable node fails its commands); 2 for bad flags. The\n\
interactive prompt exits 0.\n\
\n\
Environment: DYNAMO_HISTORY is the file the interactive prompt keeps its history\n\
in (default ~/.dynamo_history)."
)]
struct Args {
    /// The node to talk to: HOST or HOST:PORT.
    #[arg(long, visible_alias = "host", value_name = "HOST", default_value = DEFAULT_HOST)]
    node: String,
    /// The node's port (when --node gives only a host).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Print each result as one JSON object on one line.
    #[arg(long)]
    json: bool,
    /// Run COMMAND and exit (repeatable: the commands run in order); stdin is not read.
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    commands: Vec<String>,
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
    ExitCode::from(repl::run(Options {
        node,
        json: args.json,
        commands: args.commands,
    }))
}
