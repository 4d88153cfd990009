//! The randomized nemesis and its checker.
//!
//! A run is a function of its seed: the seed draws a schedule of client
//! operations (blind puts, read-modify-write updates, deletes, reads, a few
//! in flight at once, through random nodes) and faults (partitions, held
//! links, crashes and restarts, one restart on a wiped disk, long jumps of
//! time, ring changes and aborts) against a simulated ring of five hosts,
//! four of them members. Then everything heals, every change must end, the
//! ring must converge, and the checker reads every key and judges the
//! history the clients recorded:
//!
//! - no acknowledged write is lost: each value an acknowledged write wrote is
//!   read back, unless some write of the key (acknowledged or not: it may
//!   have applied) was made with a context that saw it;
//! - nothing superseded comes back: a value that an acknowledged write or
//!   delete saw is never read again (a deleted value stays deleted, through
//!   the tombstone's removal too);
//! - siblings are concurrent: no value read back was seen by the write of
//!   another value read back with it, and every value read was written;
//! - every change ends (the leader's ring runs no change at the end), the
//!   ring converges (every live member on the leader's epoch, and
//!   anti-entropy repairs nothing over several rounds), and every tombstone
//!   leaves the members' disks before the final reads.
//!
//! Unknown outcomes (a timeout, a forward that did not complete) are recorded
//! as such and never retried. A failing seed prints the command that replays
//! it exactly.
//!
//! Clock jumps are jumps of simulated time for the whole ring: turmoil gives
//! every host one clock, so a skew between two nodes is not simulated (a
//! node's decisions use only its monotonic clock; the wall clock is shown to
//! operators only).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

use super::checker::{self, Kind, Op, Outcome};
use super::harness::{self, id, Cluster};

const HOSTS: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
const KEYS: usize = 8;
const IN_FLIGHT: usize = 4;

/// How long a run's schedule lasts, in steps.
pub struct Plan {
    pub steps: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Plan { steps: 80 }
    }
}

/// What one run did and saw.
pub struct Run {
    /// One line per event, in order: the trace a replay must reproduce.
    pub trace: Vec<String>,
    pub acked_writes: usize,
    pub unknown_writes: usize,
    pub simulated: Duration,
}

/// A run that broke an invariant.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    /// The plan's length, when not the default.
    pub steps: Option<usize>,
    pub what: String,
    pub trace_tail: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} failed: {}", self.seed, self.what)?;
        writeln!(f, "last events:")?;
        for l in &self.trace_tail {
            writeln!(f, "  {l}")?;
        }
        write!(
            f,
            "replay it exactly: make sim SEED={}{} (or SIM_SEED={}{} cargo test --release --test sim nemesis_seeds -- --nocapture)",
            self.seed,
            self.steps.map(|s| format!(" STEPS={s}")).unwrap_or_default(),
            self.seed,
            self.steps.map(|s| format!(" SIM_STEPS={s}")).unwrap_or_default(),
        )
    }
}

struct State {
    c: Cluster,
    steps: usize,
    rng: StdRng,
    ops: Vec<Op>,
    in_flight: Vec<(usize, oneshot::Receiver<harness::Outcome>)>,
    trace: Vec<String>,
    crashed: BTreeSet<String>,
    held: BTreeSet<String>,
    partitions: BTreeSet<(String, String)>,
    wiped: bool,
    next_value: u64,
}

impl State {
    fn log(&mut self, event: String) {
        let t = self.c.now();
        self.trace
            .push(format!("{:>9.3}s {event}", t.as_secs_f64()));
    }

    fn fail(&self, what: String) -> Failure {
        let n = self.trace.len();
        Failure {
            seed: self.c.seed,
            what,
            steps: (self.steps != Plan::default().steps).then_some(self.steps),
            trace_tail: self.trace[n.saturating_sub(25)..].to_vec(),
        }
    }

    fn live(&self) -> Vec<&'static str> {
        HOSTS
            .iter()
            .copied()
            .filter(|h| !self.crashed.contains(*h))
            .collect()
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    /// Starts a client operation through a random live node.
    fn start_op(&mut self) {
        let live = self.live();
        if live.is_empty() {
            return;
        }
        let node = self.pick(&live).to_string();
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
        let index = self.ops.len();
        self.log(format!("op {index}: {label} {key} via {node}"));
        let blind = (20..40).contains(&roll);
        let job = {
            let (node, key, kind) = (node.clone(), key.clone(), kind.clone());
            async move {
                match kind {
                    Kind::Read => {
                        let (values, _) = harness::read(&node, &key)
                            .await
                            .map_err(|e| format!("R {e}"))?;
                        Ok(format!("R{}", values.join(",")))
                    }
                    Kind::Write { value, .. } => {
                        let (saw, context) = if blind {
                            (vec![], Default::default())
                        } else {
                            // A failed read: nothing was written.
                            harness::read(&node, &key)
                                .await
                                .map_err(|e| format!("R {e}"))?
                        };
                        let content = match &value {
                            Some(v) => harness::value(v),
                            None => dynamo::vclock::Content::Tombstone,
                        };
                        // Whatever fails from here may have applied.
                        harness::write(&node, &key, context, content)
                            .await
                            .map_err(|e| format!("W{} {e}", saw.join(",")))?;
                        Ok(format!("W{}", saw.join(",")))
                    }
                }
            }
        };
        let rx = self.c.submit(job);
        self.ops.push(Op {
            key,
            node,
            kind,
            outcome: None,
        });
        self.in_flight.push((index, rx));
    }

    /// Records the operations that completed.
    fn collect(&mut self) {
        let mut done = Vec::new();
        self.in_flight.retain_mut(|(i, rx)| match rx.try_recv() {
            Ok(outcome) => {
                done.push((*i, outcome));
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => {
                done.push((*i, Err("W the driver dropped it".into())));
                false
            }
        });
        for (i, outcome) in done {
            let split = |s: &str| -> Vec<String> {
                s.split(',')
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            let recorded = match &outcome {
                Ok(s) if s.starts_with('R') => {
                    self.ops[i].outcome = Some(Outcome::Ok(split(&s[1..])));
                    format!("read {:?}", split(&s[1..]))
                }
                Ok(s) => {
                    if let Kind::Write { saw, .. } = &mut self.ops[i].kind {
                        *saw = split(&s[1..]);
                    }
                    self.ops[i].outcome = Some(Outcome::Ok(vec![]));
                    "ok".into()
                }
                Err(e) if e.starts_with("R ") => {
                    // The read before a write failed: nothing was written.
                    self.ops[i].outcome = Some(Outcome::NotSent(e[2..].to_string()));
                    format!("failed before writing: {}", &e[2..])
                }
                Err(e) => {
                    let (saw, msg) = e[1..].split_once(' ').unwrap_or(("", &e[1..]));
                    if let Kind::Write { saw: s, .. } = &mut self.ops[i].kind {
                        *s = split(saw);
                    }
                    self.ops[i].outcome = Some(Outcome::Unknown(msg.to_string()));
                    format!("unknown: {msg}")
                }
            };
            self.log(format!("op {i} done: {recorded}"));
        }
    }

    fn step_fault(&mut self) -> Result<(), String> {
        let roll = self.rng.random_range(0..100);
        let host = self.pick(&HOSTS).to_string();
        match roll {
            0..10 => {
                let other = self.pick(&HOSTS).to_string();
                if other != host {
                    let oneway = self.rng.random_bool(0.3);
                    if oneway {
                        self.c.sim.partition_oneway(host.as_str(), other.as_str());
                    } else {
                        self.c.sim.partition(host.as_str(), other.as_str());
                    }
                    self.partitions.insert((host.clone(), other.clone()));
                    let how = if oneway { "one way" } else { "both ways" };
                    self.log(format!("partition {host} {other} ({how})"));
                }
            }
            10..22 => self.heal_links(),
            22..26 if !self.held.contains(&host) && !self.crashed.contains(&host) => {
                for other in HOSTS.iter().chain(["driver"].iter()) {
                    if *other != host {
                        self.c.sim.hold(host.as_str(), *other);
                    }
                }
                self.held.insert(host.clone());
                self.log(format!("hold {host}"));
            }
            26..32 => self.release_all(),
            32..37 if !self.crashed.contains(&host) && self.crashed.len() < 2 => {
                self.c.crash(&host);
                self.crashed.insert(host.clone());
                self.log(format!("crash {host}"));
            }
            37..45 => {
                if let Some(h) = self.crashed.pop_first() {
                    self.c.restart(&h, false);
                    self.log(format!("restart {h}"));
                }
            }
            45..47 if !self.wiped && host != "n0" && self.crashed.is_empty() => {
                self.wiped = true;
                self.c.restart(&host, true);
                self.log(format!("restart {host} wiped"));
            }
            47..50 => {
                let d = Duration::from_secs(self.rng.random_range(5..30));
                self.log(format!("time jumps {}s", d.as_secs()));
                self.c.advance(d)?;
            }
            50..58 => self.ring_change(),
            _ => {}
        }
        Ok(())
    }

    fn heal_links(&mut self) {
        for (a, b) in std::mem::take(&mut self.partitions) {
            self.c.sim.repair(a.as_str(), b.as_str());
        }
        self.log("heal".into());
    }

    fn release_all(&mut self) {
        for h in std::mem::take(&mut self.held) {
            for other in HOSTS.iter().chain(["driver"].iter()) {
                if *other != h {
                    self.c.sim.release(h.as_str(), *other);
                }
            }
            self.log(format!("release {h}"));
        }
    }

    fn ring_change(&mut self) {
        let roll = self.rng.random_range(0..100);
        // Which of the eligible hosts, drawn before knowing them (the draws
        // stay the seed's whatever the ring answers).
        let choice = self.rng.random_range(0..HOSTS.len());
        let what = match roll {
            0..45 => "add",
            45..85 => "remove",
            _ => "abort",
        };
        let w = what.to_string();
        let out = self.c.call(async move {
            let leader = harness::client("n0").await.map_err(|e| e.to_string())?;
            let s = leader
                .status(harness::ctx())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            // The change goes to the leader n0 names (an elected one may be
            // any member).
            let at = s.leader.host().to_string();
            let leader = if at == "n0" {
                leader
            } else {
                harness::client(&at).await.map_err(|e| e.to_string())?
            };
            let members: Vec<&str> = s.nodes.iter().map(|n| n.id.host()).collect();
            // An add names a host outside the ring, a remove a member other
            // than the leader, keeping three members (a quorum stays possible).
            let eligible: Vec<&str> = match w.as_str() {
                "add" => HOSTS[1..]
                    .iter()
                    .copied()
                    .filter(|h| !members.contains(h))
                    .collect(),
                "remove" if members.len() <= 3 => vec![],
                "remove" => members
                    .iter()
                    .copied()
                    .filter(|h| *h != "n0" && *h != at)
                    .collect(),
                _ => vec![""],
            };
            let Some(name) = eligible.get(choice % eligible.len().max(1)).copied() else {
                return Ok(format!("{w}: skipped (no host to {w})"));
            };
            let r = match w.as_str() {
                "add" => leader.add_node(harness::ctx(), id(name)).await,
                "remove" => leader.remove_node(harness::ctx(), id(name)).await,
                _ => leader.abort_change(harness::ctx()).await,
            };
            match r {
                Ok(Ok(r)) => Ok(format!("{w} {name}: epoch {}", r.epoch)),
                Ok(Err(e)) => Ok(format!("{w} {name}: refused: {e}")),
                Err(e) => Err(format!("{w} {name}: {e}")),
            }
        });
        let shown = match out {
            Ok(s) => s,
            Err(e) => format!("no answer: {e}"),
        };
        self.log(shown);
    }

    /// Heals everything, restarts what crashed and waits for every
    /// operation, then for the ring to settle and converge.
    fn end(&mut self) -> Result<(), Failure> {
        self.heal_links();
        self.release_all();
        for h in std::mem::take(&mut self.crashed) {
            self.c.restart(&h, false);
            self.log(format!("restart {h}"));
        }
        let limit = self.c.now() + Duration::from_secs(120);
        while !self.in_flight.is_empty() && self.c.now() < limit {
            self.c
                .advance(Duration::from_millis(100))
                .map_err(|e| self.fail(e))?;
            self.collect();
        }
        if !self.in_flight.is_empty() {
            return Err(self.fail("operations never answered after the heal".into()));
        }
        // Every change ends.
        let limit = self.c.now() + Duration::from_secs(180);
        let status = loop {
            let s = self.c.call(async {
                let s = harness::status("n0").await.map_err(|e| e.to_string())?;
                Ok(serde_json::to_string(&s).unwrap_or_default())
            });
            if let Ok(s) = s {
                let s: dynamo::rpc::StatusReply = serde_json::from_str(&s).unwrap();
                if s.transition.is_none() {
                    break s;
                }
            }
            if self.c.now() > limit {
                return Err(self.fail("a ring change never ended after the heal".into()));
            }
            self.c
                .advance(Duration::from_millis(500))
                .map_err(|e| self.fail(e))?;
        };
        let members: Vec<String> = status
            .nodes
            .iter()
            .map(|n| n.id.host().to_string())
            .collect();
        self.log(format!(
            "settled at epoch {}: {}",
            status.epoch,
            members.join(" ")
        ));
        // The ring converges: every member on the leader's epoch, and
        // anti-entropy quiet (nothing repaired over a few rounds). The leader
        // may still move on (a wiped member's readmission is a new epoch):
        // its ring is read again each round, and must not be changing.
        let limit = self.c.now() + Duration::from_secs(180);
        let mut last = None;
        loop {
            let view = self.c.call(async move {
                let leader = harness::status("n0")
                    .await
                    .map_err(|e| format!("n0: {e}"))?;
                if leader.transition.is_some() {
                    return Err(format!("a change runs at epoch {}", leader.epoch));
                }
                let mut repaired = 0;
                for m in leader.nodes.iter().map(|n| n.id.host()) {
                    let s = harness::status(m).await.map_err(|e| format!("{m}: {e}"))?;
                    if s.epoch != leader.epoch {
                        return Err(format!(
                            "{m} is on epoch {} (leader {})",
                            s.epoch, leader.epoch
                        ));
                    }
                    repaired += s
                        .nodes
                        .iter()
                        .find(|n| n.id.host() == m)
                        .and_then(|n| n.anti_entropy.as_ref())
                        .map_or(0, |a| a.keys_repaired);
                }
                Ok(format!("epoch {}, {repaired} repaired", leader.epoch))
            });
            match view {
                Ok(r) if last.as_ref() == Some(&r) => break,
                Ok(r) => last = Some(r),
                Err(e) if self.c.now() > limit => {
                    return Err(self.fail(format!("the ring did not converge: {e}")))
                }
                Err(_) => last = None,
            }
            if self.c.now() > limit {
                return Err(self.fail("anti-entropy never went quiet".into()));
            }
            self.c
                .advance(Duration::from_secs(3))
                .map_err(|e| self.fail(e))?;
        }
        if let Some(view) = last {
            self.log(format!("converged: {view}"));
        }
        // Tombstones leave the disks (so the final reads check that nothing
        // deleted comes back after its tombstone's removal).
        let limit = self.c.now() + Duration::from_secs(180);
        loop {
            let left = self.c.call(async {
                let s = harness::status("n0").await.map_err(|e| e.to_string())?;
                let left: u64 = s
                    .nodes
                    .iter()
                    .map(|n| n.tombstones.unwrap_or(u64::MAX))
                    .fold(0, u64::saturating_add);
                Ok(left.to_string())
            });
            if left.as_deref() == Ok("0") {
                break;
            }
            if self.c.now() > limit {
                return Err(self.fail(format!(
                    "tombstones never left the members after the heal ({left:?} left)"
                )));
            }
            self.c
                .advance(Duration::from_secs(1))
                .map_err(|e| self.fail(e))?;
        }
        self.log("no member keeps a tombstone".into());
        Ok(())
    }

    /// Reads every key at the end through each member, all at once, and
    /// checks the history.
    fn check(&mut self, members: &[String]) -> Result<(), Failure> {
        let mut finals: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let reads: Vec<(String, String)> = (0..KEYS)
            .flat_map(|k| members.iter().map(move |m| (format!("k{k}"), m.clone())))
            .collect();
        let jobs: Vec<_> = reads
            .iter()
            .map(|(key, m)| {
                let (m2, key2) = (m.clone(), key.clone());
                async move {
                    let (v, _) = harness::read(&m2, &key2).await.map_err(|e| e.to_string())?;
                    Ok(v.join(","))
                }
            })
            .collect();
        let answers = self.c.call_all(jobs);
        for ((key, m), r) in reads.into_iter().zip(answers) {
            let v: Vec<String> = match r {
                Ok(s) => s
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect(),
                Err(e) => return Err(self.fail(format!("final read of {key} at {m}: {e}"))),
            };
            self.log(format!("final {key} at {m}: {v:?}"));
            match finals.get(&key) {
                None => {
                    finals.insert(key, v);
                }
                Some(s) if *s != v => {
                    return Err(self.fail(format!(
                        "replicas disagree at the end on {key}: {s:?} vs {v:?} at {m}"
                    )))
                }
                _ => {}
            }
        }
        match checker::violations(&self.ops, &finals).into_iter().next() {
            Some(e) => Err(self.fail(e)),
            None => Ok(()),
        }
    }
}

/// Runs one seed: the schedule, the heal, the checks.
pub fn run(seed: u64, plan: &Plan) -> Result<Run, Failure> {
    let mut c = Cluster::new(seed);
    for h in HOSTS {
        c.start(h, harness::quick_flags());
    }
    let joined = c.call(async {
        super::script::join(vec!["n1".into(), "n2".into(), "n3".into()])
            .await
            .map_err(|e| e.to_string())
    });
    let mut s = State {
        c,
        steps: plan.steps,
        rng: StdRng::seed_from_u64(seed),
        ops: Vec::new(),
        in_flight: Vec::new(),
        trace: Vec::new(),
        crashed: BTreeSet::new(),
        held: BTreeSet::new(),
        partitions: BTreeSet::new(),
        wiped: false,
        next_value: 0,
    };
    match joined {
        Ok(ring) => s.log(format!("formed: {}", ring.trim())),
        Err(e) => return Err(s.fail(format!("the ring did not form: {e}"))),
    }
    for _ in 0..plan.steps {
        if s.in_flight.len() < IN_FLIGHT && s.rng.random_bool(0.7) {
            s.start_op();
        } else {
            s.step_fault().map_err(|e| s.fail(e))?;
        }
        let pause = Duration::from_millis(s.rng.random_range(50..800));
        s.c.advance(pause).map_err(|e| s.fail(e))?;
        s.collect();
    }
    s.end()?;
    let members: Vec<String> = {
        let out = s.c.call(async {
            let st = harness::status("n0").await.map_err(|e| e.to_string())?;
            Ok(st
                .nodes
                .iter()
                .map(|n| n.id.host().to_string())
                .collect::<Vec<_>>()
                .join(" "))
        });
        out.map_err(|e| s.fail(e))?
            .split(' ')
            .map(str::to_string)
            .collect()
    };
    s.check(&members)?;
    let acked_writes = s
        .ops
        .iter()
        .filter(|o| {
            matches!(o.kind, Kind::Write { .. }) && matches!(o.outcome, Some(Outcome::Ok(_)))
        })
        .count();
    let unknown_writes = s
        .ops
        .iter()
        .filter(|o| {
            matches!(o.kind, Kind::Write { .. }) && matches!(o.outcome, Some(Outcome::Unknown(_)))
        })
        .count();
    Ok(Run {
        simulated: s.c.now(),
        trace: s.trace,
        acked_writes,
        unknown_writes,
    })
}
