//! The five real `dynamo` processes (the debug binary, as tests/common
//! starts it), each inside its namespace through `ip netns exec` (which execs
//! the node, so the child's id is the node's: `kill -9`, SIGSTOP and SIGCONT
//! reach it). Each has a data directory in a temporary directory and appends
//! its stderr to `nI.log` in the run's directory under target/chaos/, across
//! restarts. Every process is killed on drop, however the test ends.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dynamo::types::NodeId;

use super::common::secrets;
use super::net::{self, NODES, PORT};

/// How long a started node may take to listen (a loaded machine, a debug
/// build, sled recovering its log after a `kill -9`).
const LISTEN_LIMIT: Duration = Duration::from_secs(60);

/// Flags every node gets besides its address, leader and data directory:
/// N/W/R 3/2/2 as the simulation, and a tombstone grace short enough that
/// tombstones are removed during a run (it must exceed twice the longest
/// deadline of a call carrying copies, here the 2 s request timeout and
/// copy timeout).
const FLAGS: [&str; 10] = [
    "--qsize",
    "3",
    "--sq-write-n",
    "2",
    "--sq-read-n",
    "2",
    "--tombstone-grace-ms",
    "8000",
    "--copy-timeout-ms",
    "2000",
];

/// Node `i`'s identity.
pub fn id(i: usize) -> NodeId {
    NodeId::new(&net::addr(i), PORT).expect("an address")
}

pub fn name(i: usize) -> String {
    format!("n{i}")
}

struct Proc {
    child: Option<Child>,
    data: PathBuf,
    log: PathBuf,
}

pub struct Nodes {
    _data: tempfile::TempDir,
    procs: Vec<Proc>,
}

impl Nodes {
    /// Starts every node (n0 leads); returns once each listens.
    pub fn start_all(logs: &Path) -> Result<Nodes, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let procs = (0..NODES)
            .map(|i| Proc {
                child: None,
                data: data.path().join(name(i)),
                log: logs.join(format!("{}.log", name(i))),
            })
            .collect();
        let mut nodes = Nodes { _data: data, procs };
        for i in 0..NODES {
            nodes.start(i)?;
        }
        Ok(nodes)
    }

    /// Starts node `i` on its data directory and waits until it listens.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let p = &mut self.procs[i];
        assert!(p.child.is_none(), "{} already runs", name(i));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .map_err(|e| format!("{}: {e}", p.log.display()))?;
        let _ = writeln!(log, "=== chaos: starting {} ===", name(i));
        let (host, leader) = (net::addr(i), format!("{}:{PORT}", net::addr(0)));
        let (port, http) = (PORT.to_string(), net::HTTP_PORT.to_string());
        let data = p.data.display().to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &net::ns(i), dynamo_bin()])
            .args(["--host", &host, "--port", &port, "--leader", &leader])
            .args(["--data-dir", &data, "--http-port", &http])
            .args(FLAGS)
            .arg("--cluster-secret-file")
            .arg(&secrets().secret_file)
            .arg("--admin-token-file")
            .arg(&secrets().admin_token_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", name(i)))?;
        p.child = Some(child);
        let to: SocketAddr = format!("{host}:{PORT}").parse().expect("an address");
        let start = Instant::now();
        loop {
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                p.child = None;
                return Err(format!(
                    "{} exited ({status}) before listening; its log is {}",
                    name(i),
                    p.log.display()
                ));
            }
            if TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > LISTEN_LIMIT {
                return Err(format!(
                    "{} did not listen within {LISTEN_LIMIT:?}; its log is {}",
                    name(i),
                    p.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` node `i` (a paused one too) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to node `i`, if it runs.
    pub fn signal(&self, i: usize, signal: &str) -> Result<(), String> {
        match &self.procs[i].child {
            Some(c) => net::run(&["kill", "-s", signal, &c.id().to_string()]).map(drop),
            None => Ok(()),
        }
    }

    /// Kills node `i`, deletes its data directory and starts it again.
    pub fn wipe(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        let data = &self.procs[i].data;
        std::fs::remove_dir_all(data).map_err(|e| format!("{}: {e}", data.display()))?;
        self.start(i)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
    }
}

pub fn dynamo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dynamo")
}
