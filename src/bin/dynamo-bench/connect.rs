//! `dynamo-bench connect`: how long opening a connection to a node takes: the
//! TCP connect and the handshake, a client's (with the token in
//! DYNAMO_TOKEN_FILE, if any) and, given the cluster secret, a member's.
//! Connections are opened one after another and each closed before the next.

use std::path::Path;
use std::time::{Duration, Instant};

use dynamo::security::{secret, Hello};
use dynamo::types::NodeId;

/// Times `count` connections of each kind and prints one line per kind.
pub async fn run(node: &NodeId, count: usize, secret_file: Option<&Path>) -> Result<(), String> {
    let token = match std::env::var_os("DYNAMO_TOKEN_FILE").filter(|v| !v.is_empty()) {
        Some(p) => Some(
            secret::read_token_file(Path::new(&p), "DYNAMO_TOKEN_FILE", false)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let mut kinds = vec![("client", Hello::Client(token))];
    if let Some(f) = secret_file {
        let keys = secret::read_cluster_keys(f).map_err(|e| e.to_string())?;
        kinds.push(("member", Hello::Peer(keys.first().cloned())));
    }
    for (name, hello) in kinds {
        let mut took = Vec::with_capacity(count);
        for _ in 0..count {
            let start = Instant::now();
            let conn = dynamo::rpc::connect_as(node, Duration::from_secs(5), hello.clone())
                .await
                .map_err(|e| format!("{name} connection: {}", e.error))?;
            took.push(start.elapsed());
            drop(conn);
        }
        took.sort();
        let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        println!(
            "connect {name}: {count} connections, p50 {:.3} ms, p99 {:.3} ms",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
