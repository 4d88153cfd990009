//! The nemesis of tests/sim/nemesis.rs against real processes: the same
//! schedule of client operations and faults drawn from a seed, the same
//! records of what each operation saw, the same end (heal, every change ends,
//! the ring converges, every key read through every member) and the same
//! checker. What differs:
//!
//! - the faults are real: `kill -9`, SIGSTOP/SIGCONT for a held host,
//!   firewall rules for a partition (and one node cut from every other), a
//!   deleted data directory for a wiped disk; a jump of simulated time
//!   becomes a quiet spell of a few seconds;
//! - time is real, so a seed draws the same choices but does not replay a
//!   run: what is in flight when a fault lands, and what each call answers,
//!   are the machine's;
//! - a real operation takes milliseconds where a step's pause takes
//!   hundreds, so some steps start a burst of operations (up to the four in
//!   flight) to make writes of one key through different nodes overlap;
//! - the clients are the client library's (`Client::connect`: gets
//!   coordinated by the client, writes through the node), one per node,
//!   kept across faults as an application would keep them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dynamo::client::Client;
use dynamo::error::Error;
use dynamo::rpc::{ReadReply, StatusReply};
use dynamo::vclock::VersionVector;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::checker::{self, Kind, Op, Outcome};
use super::net::{Net, NODES};
use super::nodes::{id, name, Nodes};

mod end;

const KEYS: usize = 8;
const IN_FLIGHT: usize = 4;
/// How long an operation's step waits for one of the four in flight to end.
const ROOM_WAIT: Duration = Duration::from_secs(2);
/// Deadline of a call to the leader for a ring change or `status`.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What one run did and saw.
pub struct Run {
    pub ops: usize,
    pub acked_writes: usize,
    pub unknown_writes: usize,
    pub faults: BTreeMap<String, usize>,
    pub elapsed: Duration,
}

/// A run that broke an invariant (or could not finish).
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub what: String,
    pub trace_tail: Vec<String>,
    /// For a broken rule: every rule broken and the history of the key the
    /// first one names.
    pub detail: Vec<String>,
    pub dir: PathBuf,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos seed {} failed: {}", self.seed, self.what)?;
        for l in &self.detail {
            writeln!(f, "{l}")?;
        }
        writeln!(f, "last events:")?;
        for l in &self.trace_tail {
            writeln!(f, "  {l}")?;
        }
        write!(
            f,
            "every event and the nodes' logs: {}\n\
             CHAOS_SEED={} draws the same choices again, but real time decides \
             the interleaving: a run does not replay",
            self.dir.display(),
            self.seed
        )
    }
}

/// How an operation ended, as its task reports it.
enum Done {
    Read(Vec<String>),
    Wrote {
        saw: Vec<String>,
    },
    /// Nothing was written: a read (or the read before a write) failed.
    ReadFailed(String),
    /// A write that failed: it may have applied.
    WriteFailed {
        saw: Vec<String>,
        why: String,
    },
}

/// One client per node, connected on first use (a node that is down then
/// fails the operation); each reconnects by itself after its node restarts.
struct Clients {
    slots: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
}

impl Clients {
    async fn get(&self, i: usize) -> Result<Arc<Client>, String> {
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // A paused node accepts the connection and then answers nothing:
        // the client's first ring fetch gives up after its own deadline.
        let c = tokio::time::timeout(
            Duration::from_secs(20),
            Client::connect_with(id(i), &crate::common::admin()),
        )
        .await
        .map_err(|_| format!("connecting to {} timed out", name(i)))?
        .map_err(|e| e.to_string())?;
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }
}

fn values(r: &ReadReply) -> Vec<String> {
    let mut v: Vec<String> = r
        .values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    v.sort();
    v
}

/// The UTC time of day, HH:MM:SS.mmm.
fn time_of_day() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A client of node `i` for one admin call or final read, coordinated by
/// the node itself.
async fn via_node(i: usize) -> Result<Client, String> {
    tokio::time::timeout(
        ADMIN_TIMEOUT,
        Client::connect_via_node_with(id(i), &crate::common::admin()),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", name(i)))?
    .map(|c| c.with_timeout(ADMIN_TIMEOUT))
    .map_err(|e| e.to_string())
}

async fn status(i: usize) -> Result<StatusReply, String> {
    via_node(i).await?.status().await.map_err(|e| e.to_string())
}

struct State<'a> {
    seed: u64,
    rt: Runtime,
    nodes: Nodes,
    net: &'a Net,
    dir: PathBuf,
    clients: Arc<Clients>,
    rng: StdRng,
    start: Instant,
    ops: Vec<Op>,
    in_flight: Vec<(usize, JoinHandle<Done>)>,
    trace: Vec<String>,
    events: File,
    crashed: BTreeSet<usize>,
    paused: BTreeSet<usize>,
    partitioned: bool,
    wiped: bool,
    next_value: u64,
    faults: BTreeMap<String, usize>,
}

impl State<'_> {
    fn log(&mut self, event: String) {
        let line = format!("{:>8.3}s {event}", self.start.elapsed().as_secs_f64());
        // The file also gets the UTC time of day, as the nodes' logs show it.
        let _ = writeln!(self.events, "{} {line}", time_of_day());
        self.trace.push(line);
    }

    /// Logs a fault (and prints it: `make chaos` shows them as they happen).
    fn fault(&mut self, kind: impl Into<String>, event: String) {
        *self.faults.entry(kind.into()).or_default() += 1;
        println!("{:>8.3}s {event}", self.start.elapsed().as_secs_f64());
        self.log(event);
    }

    fn fail(&self, what: String) -> Failure {
        let n = self.trace.len();
        Failure {
            seed: self.seed,
            what,
            trace_tail: self.trace[n.saturating_sub(30)..].to_vec(),
            detail: vec![],
            dir: self.dir.clone(),
        }
    }

    /// Every operation on `key`, with what it saw and how it ended.
    fn history(&self, key: &str) -> Vec<String> {
        let mut lines = vec![format!("every operation on {key}:")];
        for (i, op) in self.ops.iter().enumerate().filter(|(_, o)| o.key == key) {
            let what = match &op.kind {
                Kind::Read => "get".to_string(),
                Kind::Write {
                    value: Some(v),
                    saw,
                } => format!("write {v} (saw {saw:?})"),
                Kind::Write { value: None, saw } => format!("delete (saw {saw:?})"),
            };
            let outcome = match &op.outcome {
                Some(Outcome::Ok(values)) if op.kind == Kind::Read => format!("read {values:?}"),
                Some(Outcome::Ok(_)) => "acknowledged".into(),
                Some(Outcome::Unknown(why)) => format!("unknown ({why})"),
                Some(Outcome::NotSent(why)) => format!("not written ({why})"),
                None => "no answer".into(),
            };
            lines.push(format!("  op {i}: {what} via {}: {outcome}", op.node));
        }
        lines
    }

    fn live(&self) -> Vec<usize> {
        (0..NODES).filter(|i| !self.crashed.contains(i)).collect()
    }

    fn pick(&mut self, from: &[usize]) -> usize {
        from[self.rng.random_range(0..from.len())]
    }

    /// Starts a client operation through a random live node. Its choices
    /// are drawn first, so a step that finds no room skips the operation
    /// without changing what later steps draw.
    fn start_op(&mut self) {
        let live = self.live();
        let node = self.pick(&live);
        let key = format!("k{}", self.rng.random_range(0..KEYS));
        let roll = self.rng.random_range(0..100);
        let (kind, label) = match roll {
            0..20 => (Kind::Read, "get".to_string()),
            20..85 => {
                self.next_value += 1;
                let v = format!("v{}", self.next_value);
                let label = if roll < 40 { "put" } else { "update" };
                (
                    Kind::Write {
                        value: Some(v.clone()),
                        saw: vec![],
                    },
                    format!("{label} {v}"),
                )
            }
            _ => (
                Kind::Write {
                    value: None,
                    saw: vec![],
                },
                "delete".to_string(),
            ),
        };
        let blind = (20..40).contains(&roll);
        // Four in flight (a node held, a partition): wait a little, then
        // let the step go rather than stall the faults behind it.
        let limit = Instant::now() + ROOM_WAIT;
        while self.in_flight.len() >= IN_FLIGHT {
            if Instant::now() > limit {
                self.log(format!(
                    "{label} {key} via {}: skipped (four in flight)",
                    name(node)
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
            self.collect();
        }
        let index = self.ops.len();
        self.log(format!("op {index}: {label} {key} via {}", name(node)));
        let clients = self.clients.clone();
        let job = {
            let (key, kind) = (key.clone(), kind.clone());
            async move {
                // A blind put has nothing to read first: a failure is a
                // failed write.
                let client = match clients.get(node).await {
                    Ok(c) => c,
                    Err(why) if blind => return Done::WriteFailed { saw: vec![], why },
                    Err(why) => return Done::ReadFailed(why),
                };
                let value = match kind {
                    Kind::Read => {
                        return match client.get(key).await {
                            Ok(r) => Done::Read(values(&r)),
                            Err(e) => Done::ReadFailed(e.to_string()),
                        }
                    }
                    Kind::Write { value, .. } => value,
                };
                let (saw, context) = if blind {
                    (vec![], VersionVector::default())
                } else {
                    // A failed read: nothing was written.
                    match client.get(key.clone()).await {
                        Ok(r) => (values(&r), r.context),
                        Err(e) => return Done::ReadFailed(e.to_string()),
                    }
                };
                // Whatever fails from here may have applied.
                let r = match value {
                    Some(v) => client.put(key, context, v.into_bytes().into()).await,
                    None => client.delete(key, context).await,
                };
                match r {
                    Ok(_) => Done::Wrote { saw },
                    Err(e) => Done::WriteFailed {
                        saw,
                        why: e.to_string(),
                    },
                }
            }
        };
        let handle = self.rt.spawn(job);
        self.ops.push(Op {
            key,
            node: name(node),
            kind,
            outcome: None,
        });
        self.in_flight.push((index, handle));
    }

    /// Records the operations that completed.
    fn collect(&mut self) {
        let (done, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|(_, h)| h.is_finished());
        self.in_flight = still;
        for (i, handle) in done {
            let done = self
                .rt
                .block_on(handle)
                .unwrap_or_else(|e| Done::WriteFailed {
                    saw: vec![],
                    why: format!("the task failed: {e}"),
                });
            let recorded = match done {
                Done::Read(values) => {
                    let shown = format!("read {values:?}");
                    self.ops[i].outcome = Some(Outcome::Ok(values));
                    shown
                }
                Done::Wrote { saw } => {
                    if let Kind::Write { saw: s, .. } = &mut self.ops[i].kind {
                        *s = saw;
                    }
                    self.ops[i].outcome = Some(Outcome::Ok(vec![]));
                    "ok".into()
                }
                Done::ReadFailed(e) => {
                    let shown = format!("failed before writing: {e}");
                    self.ops[i].outcome = Some(Outcome::NotSent(e));
                    shown
                }
                Done::WriteFailed { saw, why } => {
                    if let Kind::Write { saw: s, .. } = &mut self.ops[i].kind {
                        *s = saw;
                    }
                    let shown = format!("unknown: {why}");
                    self.ops[i].outcome = Some(Outcome::Unknown(why));
                    shown
                }
            };
            self.log(format!("op {i} done: {recorded}"));
        }
    }

    fn step_fault(&mut self) -> Result<(), Failure> {
        let roll = self.rng.random_range(0..100);
        let all: Vec<usize> = (0..NODES).collect();
        let host = self.pick(&all);
        match roll {
            0..10 => {
                let other = self.pick(&all);
                let oneway = self.rng.random_bool(0.3);
                let isolate = self.rng.random_bool(0.2);
                let net = self.net;
                let r = if isolate {
                    self.fault("isolate", format!("isolate {} from every node", name(host)));
                    (0..NODES)
                        .filter(|&j| j != host)
                        .try_for_each(|j| net.cut(host, j).and_then(|()| net.cut(j, host)))
                } else if other == host {
                    Ok(())
                } else if oneway {
                    self.fault(
                        "partition one way",
                        format!("partition {} -> {} (one way)", name(host), name(other)),
                    );
                    net.cut(other, host)
                } else {
                    self.fault(
                        "partition",
                        format!("partition {} {} (both ways)", name(host), name(other)),
                    );
                    net.cut(other, host).and_then(|()| net.cut(host, other))
                };
                r.map_err(|e| self.fail(e))?;
                self.partitioned |= isolate || other != host;
            }
            10..22 => self.heal_links()?,
            22..26 if !self.paused.contains(&host) && !self.crashed.contains(&host) => {
                self.nodes.signal(host, "STOP").map_err(|e| self.fail(e))?;
                self.paused.insert(host);
                self.fault("pause", format!("pause {} (SIGSTOP)", name(host)));
            }
            26..32 => self.resume_all()?,
            32..37 if !self.crashed.contains(&host) && self.crashed.len() < 2 => {
                self.nodes.kill(host);
                self.paused.remove(&host);
                self.crashed.insert(host);
                self.fault("kill", format!("kill -9 {}", name(host)));
            }
            37..45 => {
                if let Some(h) = self.crashed.pop_first() {
                    self.restart(h)?;
                }
            }
            45..47 if !self.wiped && host != 0 && self.crashed.is_empty() => self.wipe(host)?,
            47..50 => {
                let d = Duration::from_millis(self.rng.random_range(1000..5000));
                self.fault("quiet", format!("quiet for {:.1}s", d.as_secs_f64()));
                self.wait(d);
            }
            50..58 => self.ring_change(),
            _ => {}
        }
        Ok(())
    }

    /// Sleeps `d`, recording the operations that complete meanwhile.
    fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
            self.collect();
        }
    }

    fn restart(&mut self, h: usize) -> Result<(), Failure> {
        self.nodes.start(h).map_err(|e| self.fail(e))?;
        self.fault("restart", format!("restart {}", name(h)));
        Ok(())
    }

    /// Kills a non-leader member, deletes its data directory and starts it
    /// again (once per run).
    fn wipe(&mut self, host: usize) -> Result<(), Failure> {
        let members = self
            .rt
            .block_on(status(0))
            .map(|s| s.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>());
        match members {
            Ok(m) if m.contains(&id(host)) => {
                self.wiped = true;
                self.paused.remove(&host);
                self.nodes.wipe(host).map_err(|e| self.fail(e))?;
                self.fault(
                    "wipe",
                    format!("wipe {} (kill -9, rm -r its data, restart)", name(host)),
                );
            }
            Ok(_) => self.log(format!("wipe {}: skipped (not a member)", name(host))),
            Err(e) => self.log(format!("wipe {}: skipped (no status: {e})", name(host))),
        }
        Ok(())
    }

    fn heal_links(&mut self) -> Result<(), Failure> {
        self.net.heal().map_err(|e| self.fail(e))?;
        if std::mem::take(&mut self.partitioned) {
            self.fault("heal", "heal".into());
        }
        Ok(())
    }

    fn resume_all(&mut self) -> Result<(), Failure> {
        for h in std::mem::take(&mut self.paused) {
            self.nodes.signal(h, "CONT").map_err(|e| self.fail(e))?;
            self.fault("resume", format!("resume {} (SIGCONT)", name(h)));
        }
        Ok(())
    }

    fn ring_change(&mut self) {
        let roll = self.rng.random_range(0..100);
        let target = 1 + self.rng.random_range(0..NODES - 1);
        let what = match roll {
            0..45 => "add",
            45..85 => "remove",
            _ => "abort",
        };
        let out = self.rt.block_on(async move {
            // The change goes to the leader n0 names (an elected one may be
            // any member).
            let s = via_node(0)
                .await?
                .status()
                .await
                .map_err(|e| e.to_string())?;
            let at = (0..NODES).find(|&i| id(i) == s.leader).unwrap_or(0);
            let leader = via_node(at).await?;
            // Keep three members: a quorum stays possible.
            if what == "remove" && s.nodes.len() <= 3 {
                return Ok("skipped (three members)".to_string());
            }
            if what == "remove" && target == at {
                return Ok("skipped (the leader)".to_string());
            }
            let r = match what {
                "add" => leader.add_node(id(target)).await,
                "remove" => leader.remove_node(id(target)).await,
                _ => leader.abort_change().await,
            };
            match r {
                Ok(r) => Ok(format!("started, epoch {}", r.epoch)),
                Err(e @ (Error::Timeout { .. } | Error::Unreachable { .. })) => Err(e.to_string()),
                Err(e) => Ok(format!("refused: {e}")),
            }
        });
        let (shown, outcome) = match out {
            Ok(s) => {
                let outcome = s
                    .split([' ', ',', ':'])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (s, outcome)
            }
            Err(e) => (format!("no answer: {e}"), "no answer".to_string()),
        };
        let event = match what {
            "abort" => format!("abort-change: {shown}"),
            _ => format!("{what} {}: {shown}", name(target)),
        };
        self.fault(format!("{what} ({outcome})"), event);
    }

    fn form_ring(&mut self) -> Result<(), Failure> {
        let joined = self.rt.block_on(async {
            for i in 1..=3 {
                let limit = Instant::now() + Duration::from_secs(60);
                loop {
                    let r = via_node(0).await?.add_node(id(i)).await;
                    match r {
                        Ok(_) => break,
                        Err(e) if Instant::now() > limit => return Err(e.to_string()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                loop {
                    match status(0).await {
                        Ok(s)
                            if s.transition.is_none() && s.nodes.iter().any(|n| n.id == id(i)) =>
                        {
                            break
                        }
                        _ if Instant::now() > limit => {
                            return Err(format!("adding {} never settled", name(i)))
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            Ok(())
        });
        match joined {
            Ok(()) => {
                self.log("formed: n0 n1 n2 n3 (n4 spare)".into());
                // Every client learns the ring now, while every node answers.
                let clients = self.clients.clone();
                let connected = self.rt.block_on(async move {
                    for i in 0..NODES {
                        clients.get(i).await?;
                    }
                    Ok::<_, String>(())
                });
                connected.map_err(|e| self.fail(format!("a client did not connect: {e}")))
            }
            Err(e) => Err(self.fail(format!("the ring did not form: {e}"))),
        }
    }
}

/// Runs one seed for `length` of schedule: the ring, the schedule, the heal,
/// the checks. `dir` receives `events.log` and the nodes' logs.
pub fn run(seed: u64, length: Duration, net: &Net, dir: PathBuf) -> Result<Run, Failure> {
    let events = File::create(dir.join("events.log")).expect("events.log");
    let failure = |what: String| Failure {
        seed,
        what,
        trace_tail: vec![],
        detail: vec![],
        dir: dir.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failure(e.to_string()))?;
    let nodes = Nodes::start_all(&dir).map_err(failure)?;
    let mut s = State {
        seed,
        rt,
        nodes,
        net,
        dir: dir.clone(),
        clients: Arc::new(Clients {
            slots: (0..NODES).map(|_| Default::default()).collect(),
        }),
        rng: StdRng::seed_from_u64(seed),
        start: Instant::now(),
        ops: Vec::new(),
        in_flight: Vec::new(),
        trace: Vec::new(),
        events,
        crashed: BTreeSet::new(),
        paused: BTreeSet::new(),
        partitioned: false,
        wiped: false,
        next_value: 0,
        faults: BTreeMap::new(),
    };
    s.log(format!("seed {seed}: five nodes started"));
    s.form_ring()?;
    let schedule_end = Instant::now() + length;
    while Instant::now() < schedule_end {
        if s.rng.random_bool(0.7) {
            // A real operation takes milliseconds where the pause between
            // two steps takes hundreds: some steps start a burst, so that
            // writes of one key through different nodes overlap.
            let burst = if s.rng.random_bool(0.3) {
                s.rng.random_range(2..=IN_FLIGHT)
            } else {
                1
            };
            for _ in 0..burst {
                s.start_op();
            }
        } else {
            s.step_fault()?;
        }
        let pause = Duration::from_millis(s.rng.random_range(50..800));
        s.wait(pause);
    }
    s.log("schedule over".into());
    let members = s.end()?;
    s.check(&members)?;
    let writes = |o: &&Op| matches!(o.kind, Kind::Write { .. });
    let acked_writes = s
        .ops
        .iter()
        .filter(writes)
        .filter(|o| matches!(o.outcome, Some(Outcome::Ok(_))))
        .count();
    let unknown_writes = s
        .ops
        .iter()
        .filter(writes)
        .filter(|o| matches!(o.outcome, Some(Outcome::Unknown(_))))
        .count();
    s.log("passed".into());
    // The clients' connections go before the nodes do.
    let State { rt, nodes, .. } = s;
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(nodes);
    Ok(Run {
        ops: s.ops.len(),
        acked_writes,
        unknown_writes,
        faults: s.faults,
        elapsed: s.start.elapsed(),
    })
}
