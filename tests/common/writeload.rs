//! A write load through the real `client` binary, and a checker that every
//! acknowledged write reads back.
//!
//! The load is one long-lived `client --json` process in script mode (stdin and
//! stdout piped) driven by a background thread: it writes `put wl-SEQ {} v-SEQ`,
//! one line at a time, reads the one JSON result line, and records the key as
//! acknowledged iff the result says `"ok":true`. Every key is written once, so an
//! acknowledged key must read back with exactly its value. A failed put's outcome
//! is unknown (it may or may not be stored): it is counted, never retried, never
//! expected absent. If the client dies, stops answering, or keeps failing (its
//! node was killed), it is replaced by a client of the next port in the list.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{client_cmd, run_script};

/// How long one put may take before its client is given up on: the client's own
/// deadline (10 s) plus room for a loaded machine.
pub const PUT_DEADLINE: Duration = Duration::from_secs(20);
/// Failed puts in a row after which the load moves to the next node.
pub const ROTATE_AFTER: usize = 3;
/// A bound on the keys one load writes (it is normally stopped long before).
pub const MAX_KEYS: u64 = 200_000;
/// Sample error strings kept.
pub const SAMPLES: usize = 8;

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Every acknowledged put: (key, value).
    pub acked: Vec<(String, String)>,
    /// Puts that failed (outcome unknown).
    pub failed: usize,
    /// Each failed put: (key, what the client answered).
    pub failures: Vec<(String, String)>,
    /// A few distinct error strings.
    pub samples: Vec<String>,
    /// Clients started after the first (a node died or kept failing).
    pub restarts: usize,
    pub elapsed: Duration,
}

/// A running write load; [`WriteLoad::stop`] ends it.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<JoinHandle<LoadReport>>,
}

/// One client process of the load.
struct LoadClient {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    port: u16,
}

impl LoadClient {
    fn spawn(port: u16) -> std::io::Result<LoadClient> {
        let mut child = client_cmd()
            .args(["--node", "127.0.0.1", "--port", &port.to_string(), "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(LoadClient {
            child,
            stdin,
            lines,
            port,
        })
    }

    fn end(mut self) {
        drop(self.stdin);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why one put did not count.
enum PutFailure {
    /// The node answered with an error: the client is fine.
    Answered(String),
    /// The client died, desynchronised or did not answer: replace it.
    ClientGone(String),
}

fn put_once(c: &mut LoadClient, key: &str, value: &str) -> Result<(), PutFailure> {
    writeln!(c.stdin, "put {key} {{}} {value}")
        .and_then(|()| c.stdin.flush())
        .map_err(|e| PutFailure::ClientGone(format!("cannot send to the client: {e}")))?;
    let line = match c.lines.recv_timeout(PUT_DEADLINE) {
        Ok(line) => line,
        Err(RecvTimeoutError::Timeout) => {
            return Err(PutFailure::ClientGone(format!(
                "no answer from the client of port {} within {PUT_DEADLINE:?}",
                c.port
            )))
        }
        Err(RecvTimeoutError::Disconnected) => {
            return Err(PutFailure::ClientGone(format!(
                "the client of port {} exited",
                c.port
            )))
        }
    };
    let v: Value = serde_json::from_str(&line)
        .map_err(|e| PutFailure::ClientGone(format!("not JSON: {line:?}: {e}")))?;
    if v["ok"] == true {
        if v["key"] != key {
            return Err(PutFailure::ClientGone(format!(
                "answer for another key (expected {key}): {line}"
            )));
        }
        Ok(())
    } else {
        Err(PutFailure::Answered(
            v["error"].as_str().unwrap_or(&line).to_string(),
        ))
    }
}

impl WriteLoad {
    /// Starts writing `wl-SEQ` keys through a client of `ports[0]` (then the next
    /// port whenever a client fails), with a short pause between puts.
    pub fn start(ports: &[u16]) -> WriteLoad {
        WriteLoad::start_with("wl", ports, Duration::from_millis(2))
    }

    /// [`WriteLoad::start`] with the key prefix and the pause between puts.
    pub fn start_with(prefix: &str, ports: &[u16], pause: Duration) -> WriteLoad {
        assert!(!ports.is_empty(), "a write load needs a port");
        let stop = Arc::new(AtomicBool::new(false));
        let acked_n = Arc::new(AtomicUsize::new(0));
        let failed_n = Arc::new(AtomicUsize::new(0));
        let ports = ports.to_vec();
        let prefix = prefix.to_string();
        let thread = {
            let stop = stop.clone();
            let acked_n = acked_n.clone();
            let failed_n = failed_n.clone();
            std::thread::spawn(move || run_load(&prefix, &ports, pause, &stop, &acked_n, &failed_n))
        };
        WriteLoad {
            stop,
            acked: acked_n,
            failed: failed_n,
            thread: Some(thread),
        }
    }

    /// Puts acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Puts failed so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` more puts have been acknowledged.
    pub fn wait_acked(&self, n: usize, limit: Duration) {
        let target = self.acked() + n;
        super::wait_for(
            &format!("{n} more acknowledged puts of the load"),
            limit,
            || (self.acked() >= target).then_some(()),
        );
    }

    /// Stops the load (after the put in flight) and reports.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("running");
        t.join().expect("the write load thread panicked")
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_load(
    prefix: &str,
    ports: &[u16],
    pause: Duration,
    stop: &AtomicBool,
    acked_n: &AtomicUsize,
    failed_n: &AtomicUsize,
) -> LoadReport {
    let start = Instant::now();
    let mut report = LoadReport::default();
    let sample = |report: &mut LoadReport, s: String| {
        if report.samples.len() < SAMPLES && !report.samples.contains(&s) {
            report.samples.push(s);
        }
    };
    let mut next_port = 0usize;
    let mut client: Option<LoadClient> = None;
    let mut in_a_row = 0usize;
    let mut seq = 0u64;
    let mut started = 0usize;
    while !stop.load(Ordering::Relaxed) && seq < MAX_KEYS {
        if client.is_none() {
            let port = ports[next_port % ports.len()];
            next_port += 1;
            match LoadClient::spawn(port) {
                Ok(c) => {
                    started += 1;
                    client = Some(c);
                }
                Err(e) => {
                    sample(&mut report, format!("cannot start a client: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("a client");
        let key = format!("{prefix}-{seq}");
        let value = format!("v-{seq}");
        seq += 1;
        match put_once(c, &key, &value) {
            Ok(()) => {
                report.acked.push((key, value));
                acked_n.fetch_add(1, Ordering::Relaxed);
                in_a_row = 0;
            }
            Err(failure) => {
                report.failed += 1;
                failed_n.fetch_add(1, Ordering::Relaxed);
                in_a_row += 1;
                let (msg, gone) = match failure {
                    PutFailure::Answered(m) => (m, false),
                    PutFailure::ClientGone(m) => (m, true),
                };
                sample(&mut report, msg.clone());
                report.failures.push((key, msg));
                if gone || in_a_row >= ROTATE_AFTER {
                    if let Some(c) = client.take() {
                        c.end();
                    }
                    in_a_row = 0;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    if let Some(c) = client.take() {
        c.end();
    }
    report.restarts = started.saturating_sub(1);
    report.elapsed = start.elapsed();
    report
}

/// Writes `count` keys `PREFIX-I` = `p-I` through one client process (script
/// mode) at `port`, asserting each put is acknowledged; returns them.
pub fn preload(port: u16, prefix: &str, count: usize) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = (0..count)
        .map(|i| (format!("{prefix}-{i}"), format!("p-{i}")))
        .collect();
    let lines: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("put {k} {{}} {v}"))
        .collect();
    let out = run_script(port, &lines, Duration::from_secs(300));
    assert_eq!(
        out.results.len(),
        count,
        "preload: {} results for {count} puts (exit {}; stderr {})",
        out.results.len(),
        out.status,
        out.stderr
    );
    for (r, (k, _)) in out.results.iter().zip(&pairs) {
        assert!(
            r["ok"] == true && r["key"] == k.as_str(),
            "preload {k}: {r}"
        );
    }
    pairs
}

/// An acknowledged key that did not read back with its value.
#[derive(Debug, Clone)]
pub struct Lost {
    pub key: String,
    pub expected: String,
    /// What the read answered: the values, or the error of the last attempt.
    pub got: String,
}

/// Keys read per client process.
pub const VERIFY_BATCH: usize = 500;
/// Rounds of re-reading keys whose read failed (an error, not a wrong answer).
pub const VERIFY_RETRIES: usize = 3;

/// Reads every `acked` key through clients of `via_ports` (batches of
/// [`VERIFY_BATCH`] `get`s, one client process each, rotating the ports) and
/// returns those that did not read back with exactly their value. A key whose
/// read answered with other values is lost at once; a key whose read failed is
/// read again (through another port) up to [`VERIFY_RETRIES`] times.
pub fn verify(via_ports: &[u16], acked: &[(String, String)]) -> Vec<Lost> {
    assert!(!via_ports.is_empty());
    let mut lost = Vec::new();
    let mut todo: Vec<&(String, String)> = acked.iter().collect();
    let mut turn = 0usize;
    for round in 0..=VERIFY_RETRIES {
        if todo.is_empty() {
            break;
        }
        let mut failed_reads: Vec<(&(String, String), String)> = Vec::new();
        for chunk in todo.chunks(VERIFY_BATCH) {
            let port = via_ports[turn % via_ports.len()];
            turn += 1;
            let lines: Vec<String> = chunk.iter().map(|(k, _)| format!("get {k}")).collect();
            let out = run_script(port, &lines, Duration::from_secs(120));
            for (i, pair) in chunk.iter().enumerate() {
                let (key, expected) = (&pair.0, &pair.1);
                let Some(r) = out.results.get(i) else {
                    failed_reads.push((
                        pair,
                        format!(
                            "no answer (client of port {port} exited {}: {})",
                            out.status,
                            out.stderr.trim()
                        ),
                    ));
                    continue;
                };
                if r["ok"] != true {
                    failed_reads.push((pair, format!("port {port}: {}", r["error"])));
                    continue;
                }
                assert_eq!(r["key"], key.as_str(), "replies out of step: {r}");
                let values: Vec<&str> = r["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                if values != [expected.as_str()] {
                    lost.push(Lost {
                        key: key.clone(),
                        expected: expected.clone(),
                        got: format!(
                            "port {port}: values {} (replicas {})",
                            r["values"], r["replicas"]
                        ),
                    });
                }
            }
        }
        if round == VERIFY_RETRIES {
            lost.extend(failed_reads.into_iter().map(|(p, got)| Lost {
                key: p.0.clone(),
                expected: p.1.clone(),
                got: format!("read failed: {got}"),
            }));
            break;
        }
        todo = failed_reads.into_iter().map(|(p, _)| p).collect();
        if !todo.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    eprintln!(
        "verified {} acknowledged puts: {} read back with their value, {} did not",
        acked.len(),
        acked.len() - lost.len(),
        lost.len()
    );
    lost
}

/// A failure message for `lost` out of `total` keys checked (the first 20 shown).
pub fn describe_lost(lost: &[Lost], total: usize) -> String {
    let mut s = format!(
        "{} of {total} acknowledged keys did not read back with their value:\n",
        lost.len()
    );
    for l in lost.iter().take(20) {
        s.push_str(&format!(
            "  {}: expected {:?}, got {}\n",
            l.key, l.expected, l.got
        ));
    }
    if lost.len() > 20 {
        s.push_str(&format!("  ... and {} more\n", lost.len() - 20));
    }
    s
}
