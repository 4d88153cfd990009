//! Helpers shared by the integration tests: an in-process cluster (nodes as tokio
//! tasks on 127.0.0.1:0) and a cluster of real `dynamo` processes driven by the
//! real `client` binary. Every wait is a bounded poll.

#![allow(dead_code)]

use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dynamo::client::Client;
use dynamo::config::{Flags, NodeConfig};
use dynamo::server::NodeHandle;
use dynamo::types::NodeId;

pub mod http;
pub mod replica;
mod tools;
#[allow(unused_imports)]
pub use tools::have;
pub mod writeload;

/// The cluster secret and admin token every real-process ring of a test run
/// shares, in files only their owner may read (the nodes refuse others).
pub struct Secrets {
    _dir: tempfile::TempDir,
    pub secret_file: PathBuf,
    pub admin_token_file: PathBuf,
    pub admin_token: String,
}

/// The run's [`Secrets`], made on first use.
pub fn secrets() -> &'static Secrets {
    static SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory for the secrets");
        let secret_file = dir.path().join("cluster.secret");
        let admin_token_file = dir.path().join("admin.token");
        let admin_token = dynamo::security::new_token();
        write_private(
            &secret_file,
            &format!("{}\n", dynamo::security::new_token()),
        );
        write_private(&admin_token_file, &format!("{admin_token}\n"));
        Secrets {
            _dir: dir,
            secret_file,
            admin_token_file,
            admin_token,
        }
    })
}

/// Writes `text` to `path`, readable by its owner only.
pub fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .expect("write a secret file");
    f.write_all(text.as_bytes()).expect("write a secret file");
}

/// The real client, with the run's admin token (through `DYNAMO_TOKEN_FILE`,
/// as a user's environment would give it).
pub fn client_cmd() -> Command {
    let mut cmd = Command::new(client_bin());
    cmd.env("DYNAMO_TOKEN_FILE", &secrets().admin_token_file);
    cmd
}

/// The run's admin token, as the client library takes it.
pub fn admin() -> dynamo::client::Credentials {
    dynamo::client::Credentials {
        token: Some(secrets().admin_token.clone()),
        tls: None,
    }
}

/// The HTTP header that carries the run's admin token.
pub fn bearer() -> String {
    format!("Authorization: Bearer {}", secrets().admin_token)
}

/// Polls `f` until it returns Some, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async version of [`wait_for`].
pub async fn wait_for_async<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a helper waits for a ring change to settle (a change of a test's
/// small ring settles in well under a second at the default transfer rate).
pub const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// A free port on 127.0.0.1 (bound and released), never one this test process
/// handed out before: two tests running side by side once drew the same port,
/// so both clients talked to one node and a SIGSTOP hit the other.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

// ---------------------------------------------------------------------------
// In-process cluster
// ---------------------------------------------------------------------------

/// Nodes running as tasks of the test's runtime, each with its own data dir.
pub struct InProcess {
    pub dir: tempfile::TempDir,
    pub ids: Vec<NodeId>,
    pub handles: Vec<Option<NodeHandle>>,
    pub nwr: (usize, usize, usize),
}

impl InProcess {
    fn config(&self, i: usize) -> NodeConfig {
        let id = &self.ids[i];
        NodeConfig::from_flags(Flags {
            host: Some(id.host().to_string()),
            port: Some(id.port()),
            leader: Some(self.ids[0].to_string()),
            qsize: Some(self.nwr.0),
            write_n: Some(self.nwr.1),
            read_n: Some(self.nwr.2),
            data_dir: Some(self.dir.path().join(format!("n{i}"))),
            request_timeout_ms: Some(2000),
            // Off: these tests watch read repair and handoff alone.
            anti_entropy_interval_ms: Some(0),
            // In-process nodes are called by library clients and raw RPC
            // connections; the real-process clusters below run secured.
            insecure: true,
            ..Flags::default()
        })
        .expect("config")
    }

    /// Starts `n` nodes and adds every one to the leader's (node 0's) ring.
    pub async fn start(n: usize, nwr: (usize, usize, usize)) -> InProcess {
        let mut listeners = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ids.push(NodeId::new("127.0.0.1", l.local_addr().unwrap().port()).unwrap());
            listeners.push(l);
        }
        let mut c = InProcess {
            dir: tempfile::tempdir().unwrap(),
            ids,
            handles: Vec::new(),
            nwr,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let h = dynamo::server::start_on(c.config(i), l).await.unwrap();
            c.handles.push(Some(h));
        }
        let leader = c.client(0).await;
        for id in c.ids.iter().skip(1) {
            leader.add_node(id.clone()).await.expect("add-node");
            // One ring change at a time: wait until this one has settled.
            wait_for_async(
                &format!("the change adding {id} to settle"),
                SETTLE_LIMIT,
                || {
                    let leader = &leader;
                    async move {
                        let s = leader.status().await.ok()?;
                        let caught_up =
                            s.nodes.iter().all(|n| n.epoch.is_none_or(|e| e == s.epoch));
                        (s.transition.is_none() && caught_up).then_some(())
                    }
                },
            )
            .await;
        }
        c
    }

    pub async fn client(&self, i: usize) -> Client {
        Client::connect(self.ids[i].clone()).await.expect("connect")
    }

    /// Stops node `i` (its port then refuses connections).
    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.handles[i].take() {
            h.shutdown().await.expect("shutdown");
        }
    }

    /// Starts node `i` again on its port and data dir.
    pub async fn restart(&mut self, i: usize) {
        let config = self.config(i);
        self.restart_with(i, config).await;
    }

    /// Starts node `i` again on its data dir, listening on its address, but
    /// running as `host:PORT`: a process that is not the member it was added as.
    pub async fn restart_as(&mut self, i: usize, host: &str) {
        let mut config = self.config(i);
        config.id = NodeId::new(host, self.ids[i].port()).expect("id");
        config.listen = self.ids[i].to_string();
        self.restart_with(i, config).await;
    }

    /// Starts node `i` with `config` on its address.
    async fn restart_with(&mut self, i: usize, config: NodeConfig) {
        let addr = self.ids[i].to_string();
        // The old node's storage may still be held by a finishing background task;
        // sled's lock tells us when it is free.
        let h = wait_for_async("node restart", Duration::from_secs(20), || {
            let addr = addr.clone();
            let config = config.clone();
            async move {
                let l = tokio::net::TcpListener::bind(&addr).await.ok()?;
                dynamo::server::start_on(config, l).await.ok()
            }
        })
        .await;
        self.handles[i] = Some(h);
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.handles.len() {
            self.stop(i).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Real processes
// ---------------------------------------------------------------------------

/// One `dynamo` process.
pub struct Proc {
    pub port: u16,
    /// Its HTTP API's port (every test node serves one).
    pub http: u16,
    pub id: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub args: Vec<String>,
}

/// A ring of real `dynamo` processes in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Proc>,
}

pub fn dynamo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dynamo")
}

pub fn client_bin() -> &'static str {
    env!("CARGO_BIN_EXE_client")
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

impl Cluster {
    /// Starts `n` processes (node 0 leads) with N/W/R = `nwr`, without adding members.
    pub fn spawn(n: usize, nwr: (usize, usize, usize)) -> Cluster {
        Cluster::spawn_with(n, nwr, &[])
    }

    /// [`Cluster::spawn`] with `extra` arguments for every process (for example
    /// `["--transfer-rate", "300"]`).
    pub fn spawn_with(n: usize, nwr: (usize, usize, usize), extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let leader = format!("127.0.0.1:{}", ports[0]);
        let nodes = ports
            .iter()
            .map(|&port| {
                let http = free_port();
                let data = dir.path().join(format!("data-{port}"));
                let log = dir.path().join(format!("node-{port}.log"));
                let args = vec![
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string(),
                    "--leader".into(),
                    leader.clone(),
                    "--qsize".into(),
                    nwr.0.to_string(),
                    "--sq-write-n".into(),
                    nwr.1.to_string(),
                    "--sq-read-n".into(),
                    nwr.2.to_string(),
                    "--data-dir".into(),
                    data.display().to_string(),
                    "--http-port".into(),
                    http.to_string(),
                ];
                let mut args = args;
                // Secured as a user runs it, unless the test says otherwise.
                if !extra
                    .iter()
                    .any(|a| *a == "--insecure" || *a == "--cluster-secret-file")
                {
                    let s = secrets();
                    args.extend([
                        "--cluster-secret-file".to_string(),
                        s.secret_file.display().to_string(),
                        "--admin-token-file".to_string(),
                        s.admin_token_file.display().to_string(),
                    ]);
                }
                args.extend(extra.iter().map(|a| a.to_string()));
                Proc {
                    port,
                    http,
                    id: format!("127.0.0.1:{port}"),
                    data,
                    log,
                    child: None,
                    args,
                }
            })
            .collect();
        let mut c = Cluster { dir, nodes };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    /// Starts `n` processes and adds nodes 1.. to the ring at the leader, one
    /// change at a time (each settles before the next starts).
    pub fn ring(n: usize, nwr: (usize, usize, usize)) -> Cluster {
        Cluster::ring_with(n, n, nwr, &[])
    }

    /// Starts `n` processes with `extra` arguments and makes nodes `0..members`
    /// the ring (each add settles before the next); the others run outside it.
    pub fn ring_with(
        n: usize,
        members: usize,
        nwr: (usize, usize, usize),
        extra: &[&str],
    ) -> Cluster {
        assert!(members >= 1 && members <= n);
        let c = Cluster::spawn_with(n, nwr, extra);
        for i in 1..members {
            c.add_settled(i);
        }
        c
    }

    /// `add-node` node `i` at the leader (node 0) and waits for the change to settle.
    pub fn add_settled(&self, i: usize) -> serde_json::Value {
        let out = self.client(0, &[&format!("add-node {}", self.nodes[i].id)]);
        assert_eq!(
            out.results.first().map(|r| r["ok"].clone()),
            Some(true.into()),
            "add-node {}: {out:?}",
            self.nodes[i].id
        );
        self.wait_settled(0, SETTLE_LIMIT)
    }

    /// `status` at node `via`, if it answered.
    pub fn status(&self, via: usize) -> Option<serde_json::Value> {
        let out = self.client(via, &["status"]);
        let s = out.results.into_iter().next()?;
        (s["ok"] == true).then_some(s)
    }

    /// Polls `status` at node `via` (the leader, or any member) until no ring
    /// change runs (`transition` is null) and every member that answers has
    /// installed the leader's epoch; returns that status. Panics after `limit`.
    pub fn wait_settled(&self, via: usize, limit: Duration) -> serde_json::Value {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(s) = self.status(via) {
                let epoch = s["epoch"].clone();
                let caught_up = s["nodes"].as_array().is_some_and(|nodes| {
                    nodes
                        .iter()
                        .filter(|n| n["state"] == "alive" && !n["epoch"].is_null())
                        .all(|n| n["epoch"] == epoch)
                });
                if s["transition"].is_null() && caught_up {
                    return s;
                }
                last = Some(s);
            }
            assert!(
                start.elapsed() < limit,
                "the ring change did not settle within {limit:?} (status at node {via}: {})",
                last.map(|s| s.to_string())
                    .unwrap_or_else(|| "no answer".into())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ports of nodes `idx`.
    pub fn ports(&self, idx: &[usize]) -> Vec<u16> {
        idx.iter().map(|&i| self.nodes[i].port).collect()
    }

    /// Starts (or restarts) process `i` and waits until its port answers.
    pub fn start(&mut self, i: usize) {
        let p = &mut self.nodes[i];
        assert!(p.child.is_none(), "node {i} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .unwrap();
        let child = Command::new(dynamo_bin())
            .args(&p.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dynamo");
        p.child = Some(child);
        let (port, http) = (p.port, p.http);
        let (child, log) = (&mut p.child, &p.log);
        wait_for(
            &format!("node {i} to listen"),
            Duration::from_secs(20),
            || {
                // A node that exited will never listen: say why at once.
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!(
                        "node {i} exited ({status}) before listening on {port} and {http}: {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
                (port_open(port) && port_open(http)).then_some(())
            },
        );
        // The port answering is not enough: another process may hold it.
        let exited = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(
            exited.is_none(),
            "node {i} exited ({exited:?}) although port {port} answers: {}",
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
    }

    /// Changes the value of `flag` for the next start of process `i`.
    pub fn set_arg(&mut self, i: usize, flag: &str, value: &str) {
        let args = &mut self.nodes[i].args;
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }

    /// `kill -9` process `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM process `i` and wait for it to exit; returns its exit status.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut c = self.nodes[i].child.take().expect("running");
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait_for("node exit", Duration::from_secs(20), || {
            c.try_wait().ok().flatten()
        })
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to process `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i]
            .child
            .as_ref()
            .expect("running")
            .id()
            .to_string();
        let ok = Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {signal} {pid}");
    }

    /// True while process `i` runs.
    pub fn alive(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Runs a leader-only `command` (add-node, remove-node, abort-change) at
    /// the ring's leader, as an operator would: first at node 0, then wherever
    /// a refusal names the leader; while the voters elect one, again shortly
    /// (up to 20 s). A refusal changed nothing, so asking again is safe; any
    /// other answer is returned as it is.
    pub fn at_leader(&self, command: &str) -> ClientRun {
        let start = Instant::now();
        let mut at = 0;
        loop {
            let out = self.client(at, &[command]);
            let error = out
                .results
                .first()
                .and_then(|r| r["error"].as_str())
                .unwrap_or("")
                .to_string();
            if start.elapsed() > Duration::from_secs(20) {
                return out;
            }
            if let Some(leader) = error.strip_prefix("not the leader: the leader is ") {
                match self.nodes.iter().position(|n| n.id == leader.trim()) {
                    Some(i) if i != at => {
                        at = i;
                        continue;
                    }
                    _ => {}
                }
            } else if !error.contains("electing a leader") {
                return out;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the real client against node `i` with `--json -c` for each command.
    pub fn client(&self, i: usize, commands: &[&str]) -> ClientRun {
        run_client(self.nodes[i].port, commands)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].data
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// What one run of the client printed.
#[derive(Debug)]
pub struct ClientRun {
    pub status: i32,
    pub results: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
}

/// The client's `--json` output: one JSON object per non-empty line.
pub fn json_lines_of(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Runs `client --node 127.0.0.1 --port PORT --json -c ...`.
pub fn run_client(port: u16, commands: &[&str]) -> ClientRun {
    let mut cmd = client_cmd();
    cmd.args(["--node", "127.0.0.1", "--port", &port.to_string(), "--json"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let results = json_lines_of(&stdout);
    ClientRun {
        status: out.status.code().unwrap_or(-1),
        results,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `client --node 127.0.0.1 --port PORT -c ...` without `--json` and
/// returns what it printed for people.
#[allow(dead_code)]
pub fn run_client_human(port: u16, commands: &[&str]) -> String {
    let mut cmd = client_cmd();
    cmd.args(["--node", "127.0.0.1", "--port", &port.to_string()]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run client");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The compact JSON text of a context value, ready to pass to `put`.
pub fn ctx(v: &serde_json::Value) -> String {
    serde_json::to_string(&v["context"]).unwrap()
}

/// Runs `client --node 127.0.0.1 --port PORT --json` in script mode, feeding
/// `lines` on stdin (from a helper thread, so a full stdout pipe cannot block the
/// feed). The client is killed if it runs longer than `limit`; `results` then
/// holds what it printed until then (one JSON object per command answered).
pub fn run_script(port: u16, lines: &[String], limit: Duration) -> ClientRun {
    use std::io::{Read, Write};
    let mut child = client_cmd()
        .args(["--node", "127.0.0.1", "--port", &port.to_string(), "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdin = child.stdin.take().expect("stdin");
    let script: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let feeder = std::thread::spawn(move || {
        // A client that died early closes the pipe: nothing more to feed.
        let _ = stdin.write_all(script.as_bytes());
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait client") {
            break st.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = feeder.join();
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let results = json_lines_of(&stdout);
    ClientRun {
        status,
        results,
        stdout,
        stderr,
    }
}

/// The keys among `PREFIX-0..PREFIX-{scan}` whose replicas are exactly `replicas` (any
/// order) and whose first fallback is `fallback`, asked with `locate`.
pub fn keys_placed(
    c: &Cluster,
    prefix: &str,
    replicas: &[usize],
    fallback: usize,
    scan: usize,
) -> Vec<String> {
    let ids: Vec<&str> = replicas.iter().map(|&i| c.nodes[i].id.as_str()).collect();
    let lines: Vec<String> = (0..scan).map(|i| format!("locate {prefix}-{i}")).collect();
    let out = run_script(c.nodes[0].port, &lines, Duration::from_secs(60));
    out.results
        .iter()
        .filter(|r| {
            let reps: Vec<&str> = r["replicas"]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
                .unwrap_or_default();
            reps.len() == ids.len()
                && ids.iter().all(|id| reps.contains(id))
                && r["fallbacks"][0] == c.nodes[fallback].id.as_str()
        })
        .filter_map(|r| r["key"].as_str().map(str::to_string))
        .collect()
}

/// The entry of node `id` in a status reply.
pub fn node_status(status: &serde_json::Value, id: &str) -> serde_json::Value {
    status["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Copies the node logs out of the cluster's temporary directory if the test
/// panics (declare it after the cluster so it runs first).
pub struct Logs {
    name: &'static str,
    files: Vec<PathBuf>,
}

impl Logs {
    pub fn keep(name: &'static str, c: &Cluster) -> Logs {
        Logs {
            name,
            files: c.nodes.iter().map(|p| p.log.clone()).collect(),
        }
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("node-logs")
            .join(self.name);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        for f in &self.files {
            if let Some(name) = f.file_name() {
                let _ = std::fs::copy(f, dir.join(name));
            }
        }
        eprintln!("node logs of {} kept in {}", self.name, dir.display());
    }
}
