//! Security on real processes: members prove the cluster secret, clients
//! prove who they are and are held to their role, over the RPC port and
//! HTTP, with TLS; a flood of idle connections cannot take a node off the
//! ring; a secret and a user's token are replaced on a running ring; and no
//! secret or token reaches a log.
//!
//! - `members.rs`: the cluster secret (a process without it is refused by
//!   `add-node` and by every member), its rotation node by node.
//! - `clients.rs`: tokens and roles through the real client and curl, users
//!   added, rotated and removed, `--open-metrics`, `--insecure`.
//! - `door.rs`: the connection flood, mutated handshakes and frames, TLS.

#[path = "../common/mod.rs"]
mod common;

mod clients;
mod door;
mod members;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{client_bin, json_lines_of, secrets, write_private, ClientRun, Cluster};

/// A file holding `token`, readable by its owner only, in `dir`.
pub fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    write_private(&path, &format!("{token}\n"));
    path
}

/// The real client against `port` with `--json`, presenting the token in
/// `token_file` (None: no token at all).
pub fn client_as(port: u16, token_file: Option<&Path>, commands: &[&str]) -> ClientRun {
    let mut cmd = Command::new(client_bin());
    cmd.env_remove("DYNAMO_TOKEN_FILE").args([
        "--node",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--json",
    ]);
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ClientRun {
        status: out.status.code().unwrap_or(-1),
        results: json_lines_of(&stdout),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `curl` an HTTP route with an optional bearer token: the status and body.
pub fn curl_as(port: u16, token: Option<&str>, args: &[&str], path: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Asserts that no log of `c` holds any of `secrets` (the run's cluster
/// secret and admin token are always among them).
pub fn logs_hold_none_of(c: &Cluster, more: &[&str]) {
    let s = secrets();
    let secret = std::fs::read_to_string(&s.secret_file).unwrap();
    let mut all: Vec<String> = vec![secret.trim().to_string(), s.admin_token.clone()];
    all.extend(more.iter().map(|m| m.to_string()));
    for i in 0..c.nodes.len() {
        let log = c.log(i);
        assert!(!log.is_empty(), "node {i} logged nothing");
        for secret in &all {
            assert!(
                !log.contains(secret.as_str()),
                "node {i}'s log holds a secret or token ({}...)",
                &secret[..8.min(secret.len())]
            );
        }
    }
}
