//! The runner of the simulation's scenarios (`tests/sim/scenarios/*.txt`),
//! goldenscript files: each command's output is compared with the output
//! recorded under it (`UPDATE_GOLDENFILES=1` rewrites them).
//!
//! Hosts are named `n0`, `n1`, ...; `n0` is the leader every node is told
//! about. Keys are written one by one or as a range: `k0..40` is `k0` to
//! `k39`. Durations are `500ms`, `10s`, `2m`. Commands:
//!
//! - `start HOST... [seed=S] [grace=MS] [copy_timeout=MS] [transfer_rate=K]
//!   [ae=MS]`: starts nodes (the first `start` creates the simulation with
//!   seed S, 1 by default; the flags are the nodes' own, defaults in
//!   [`quick_flags`]).
//! - `join HOST...`: adds each at the leader, one settled change at a time.
//! - `add HOST [until_ok]`, `remove HOST`, `abort`: the ring change at the
//!   leader, and its answer (`until_ok` retries every 100 ms while refused
//!   and prints each distinct refusal once; `deadline=DURATION` gives the
//!   call another deadline than 5 s).
//! - `settle [members=M]`: waits until the leader's ring runs no change (and
//!   has M members).
//! - `put NODE KEYS VALUE`: a blind write of each key (empty context);
//!   `update NODE KEYS VALUE`: a read, then a write with the context read;
//!   `delete NODE KEYS`: a read, then a tombstone with that context. Each
//!   prints `ok`, or the keys that failed and why. `retry=DURATION` retries
//!   a key whose write failed (a blind write only: never one whose outcome
//!   is unknown).
//! - `get NODE KEYS`: the values each key reads as (keys that read alike are
//!   printed together).
//! - `locate KEY`: the key's replicas in the leader's ring.
//! - `partition A B...` / `heal A B...`: cut or repair A's links with each B
//!   both ways (no B: with every other node); `cut A B...` / `uncut A B...`:
//!   one way only, A to B; `hold A` / `release A`: every message from or to
//!   A waits on the wire (A runs on, cut off), then is delivered.
//! - `crash HOST`, `restart HOST [wiped]`: stop a node's process; start it
//!   again on its disk or on an empty one.
//! - `sleep DURATION`: simulated time passes.
//! - `status HOST`: its epoch, members, change and removal; `hints`: the
//!   hints each member holds, as the leader's status shows them.
//! - `wait removed HOST`: until HOST's status says it was removed;
//!   `wait tombstones_gone`: until no member keeps a tombstone;
//!   `wait reads NODE KEYS VALUE...`: until each key reads as these values;
//!   `wait held HOST STATE`: until every other running node's status shows
//!   HOST in STATE (`alive`, `suspect`, `down`: its failure detector's view).
//!   Each gives up after [`WAIT_LIMIT`] of simulated time, or `within=DURATION`.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

use dynamo::config::Flags;
use dynamo::vclock::Content;
use goldenscript::Command;

use super::harness::{self, id, Cluster};

/// How long a `wait` or `settle` waits (simulated time).
pub const WAIT_LIMIT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Runner {
    cluster: Option<Cluster>,
}

/// Runs scenario `name` against its recorded output.
pub fn run(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sim/scenarios")
        .join(name);
    goldenscript::run(&mut Runner::default(), &path)
        .unwrap_or_else(|e| panic!("scenario {name}: {e}"));
}

/// `k0..40` is `k0` .. `k39`; anything else is one key.
pub fn keys(spec: &str) -> Vec<String> {
    if let Some((first, end)) = spec.split_once("..") {
        let digits = first.len() - first.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, start) = first.split_at(first.len() - digits);
        if let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) {
            return (start..end).map(|i| format!("{prefix}{i}")).collect();
        }
    }
    vec![spec.to_string()]
}

pub fn duration(s: &str) -> Result<Duration, Box<dyn Error>> {
    let (n, unit) = s.split_at(s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s}"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        _ => return Err(format!("bad duration {s} (ms, s or m)").into()),
    })
}

/// Prints keys that read alike together: `k0..3 → [v]`.
fn group(reads: Vec<(String, String)>) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < reads.len() {
        let mut j = i + 1;
        while j < reads.len() && reads[j].1 == reads[i].1 {
            j += 1;
        }
        let name = if j - i == 1 {
            reads[i].0.clone()
        } else {
            format!("{}..{} ({} keys)", reads[i].0, reads[j - 1].0, j - i)
        };
        let _ = writeln!(out, "{name} → {}", reads[i].1);
        i = j;
    }
    out
}

fn show(values: &[String]) -> String {
    if values.is_empty() {
        "(none)".into()
    } else {
        format!("[{}]", values.join(", "))
    }
}

impl Runner {
    fn cluster(&mut self) -> Result<&mut Cluster, Box<dyn Error>> {
        self.cluster
            .as_mut()
            .ok_or_else(|| "no node started yet (start HOST...)".into())
    }

    fn hosts(&mut self, command: &Command) -> Result<Vec<String>, Box<dyn Error>> {
        Ok(command
            .args
            .iter()
            .filter(|a| a.key.is_none())
            .map(|a| a.value.clone())
            .collect())
    }

    /// The other hosts of a link command (`A B...`, or every other node).
    fn peers_of(&mut self, command: &Command) -> Result<(String, Vec<String>), Box<dyn Error>> {
        let mut hosts = self.hosts(command)?;
        if hosts.is_empty() {
            return Err("name a host".into());
        }
        let a = hosts.remove(0);
        if hosts.is_empty() {
            hosts = self
                .cluster()?
                .nodes
                .keys()
                .filter(|h| **h != a)
                .cloned()
                .collect();
        }
        Ok((a, hosts))
    }

    fn ring_change(&mut self, command: &Command) -> Result<String, Box<dyn Error>> {
        let c = self.cluster()?;
        let hosts: Vec<String> = command
            .args
            .iter()
            .filter(|a| a.key.is_none() && a.value != "until_ok")
            .map(|a| a.value.clone())
            .collect();
        let until_ok = command.args.iter().any(|a| a.value == "until_ok");
        let deadline = match command
            .args
            .iter()
            .find(|a| a.key.as_deref() == Some("deadline"))
        {
            Some(a) => duration(&a.value)?,
            None => Duration::from_secs(5),
        };
        // `at=HOST`: the node the command goes to (default n0).
        let at = command
            .args
            .iter()
            .find(|a| a.key.as_deref() == Some("at"))
            .map_or_else(|| "n0".to_string(), |a| a.value.clone());
        let name = command.name.clone();
        let target = hosts.first().cloned().unwrap_or_default();
        let mut refusals: Vec<String> = Vec::new();
        let started = c.now();
        loop {
            let (name, target, at) = (name.clone(), target.clone(), at.clone());
            let out = c.call(async move {
                let leader = harness::client(&at).await.map_err(|e| e.to_string())?;
                let ctx = dynamo::rpc::context(deadline);
                let r = match name.as_str() {
                    "add" => leader.add_node(ctx, id(&target)).await,
                    "remove" => leader.remove_node(ctx, id(&target)).await,
                    _ => leader.abort_change(ctx).await,
                };
                match r {
                    Ok(Ok(r)) => {
                        let names = |v: &[dynamo::types::NodeId]| {
                            v.iter()
                                .map(|n| n.host().to_string())
                                .collect::<Vec<_>>()
                                .join(" ")
                        };
                        let mut s = format!("epoch {}: {}", r.epoch, names(&r.members));
                        if !r.joining.is_empty() {
                            let _ = write!(s, "; joining {}", names(&r.joining));
                        }
                        if !r.leaving.is_empty() {
                            let _ = write!(s, "; leaving {}", names(&r.leaving));
                        }
                        Ok(s)
                    }
                    Ok(Err(e)) => Err(format!("refused: {e}")),
                    Err(e) => Err(format!("no answer: {e}")),
                }
            });
            match out {
                Ok(s) => {
                    let mut out = String::new();
                    for r in refusals {
                        let _ = writeln!(out, "{r}");
                    }
                    let _ = writeln!(out, "{s}");
                    return Ok(out);
                }
                Err(e) if until_ok && c.now() - started < WAIT_LIMIT => {
                    if !refusals.contains(&e) {
                        refusals.push(e);
                    }
                    c.advance(Duration::from_millis(100))?;
                }
                Err(e) => return Ok(format!("{e}\n")),
            }
        }
    }

    /// Polls `probe` every 100 ms until it returns Some, for [`WAIT_LIMIT`].
    fn wait<F, Fut>(&mut self, what: &str, probe: F) -> Result<String, Box<dyn Error>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, String>> + Send + 'static,
    {
        self.wait_within(what, WAIT_LIMIT, probe)
    }

    /// [`Runner::wait`] with a limit of its own.
    fn wait_within<F, Fut>(
        &mut self,
        what: &str,
        within: Duration,
        probe: F,
    ) -> Result<String, Box<dyn Error>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, String>> + Send + 'static,
    {
        let c = self.cluster()?;
        let limit = c.now() + within;
        let mut last = String::new();
        while c.now() < limit {
            let probe = probe();
            match c.call(async move {
                Ok(match probe.await {
                    Ok(Some(s)) => format!("+{s}"),
                    Ok(None) => "-".into(),
                    Err(e) => format!("-{e}"),
                })
            }) {
                Ok(s) if s.starts_with('+') => return Ok(format!("{}\n", &s[1..])),
                Ok(s) => last = s[1..].to_string(),
                Err(e) => last = e,
            }
            c.advance(Duration::from_millis(100))?;
        }
        Err(format!(
            "{what}: still not so after {}s ({last})",
            within.as_secs_f64()
        )
        .into())
    }

    fn writes(&mut self, command: &Command) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let node = args.next_pos().ok_or("name a node")?.value.clone();
        let keys = keys(&args.next_pos().ok_or("name the keys")?.value);
        let value = match command.name.as_str() {
            "delete" => None,
            _ => Some(args.next_pos().ok_or("give a value")?.value.clone()),
        };
        let retry = match args.lookup("retry") {
            Some(a) => Some(duration(&a.value)?),
            None => None,
        };
        args.reject_rest()?;
        let kind = command.name.clone();
        let c = self.cluster()?;
        let mut failed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in keys {
            let started = c.now();
            loop {
                let (node, key2, value, kind) =
                    (node.clone(), key.clone(), value.clone(), kind.clone());
                let out = c.call(async move {
                    let context = if kind == "put" {
                        Default::default()
                    } else {
                        harness::read(&node, &key2)
                            .await
                            .map_err(|e| e.to_string())?
                            .1
                    };
                    let content = match &value {
                        Some(v) => harness::value(v),
                        None => Content::Tombstone,
                    };
                    harness::write(&node, &key2, context, content)
                        .await
                        .map(|_| String::new())
                        .map_err(|e| e.to_string())
                });
                match out {
                    Ok(_) => break,
                    Err(e) => {
                        let unknown = e.contains("may or may not") || e.contains("unknown");
                        match retry {
                            Some(r) if !unknown && c.now() - started < r => {
                                c.advance(Duration::from_millis(100))?;
                            }
                            _ => {
                                failed.entry(e).or_default().push(key.clone());
                                break;
                            }
                        }
                    }
                }
            }
        }
        if failed.is_empty() {
            return Ok("ok\n".into());
        }
        let mut out = String::new();
        for (e, keys) in failed {
            let _ = writeln!(out, "{} failed: {e}", keys.join(" "));
        }
        Ok(out)
    }
}

impl goldenscript::Runner for Runner {
    fn run(&mut self, command: &Command) -> Result<String, Box<dyn Error>> {
        match command.name.as_str() {
            "start" => {
                let mut args = command.consume_args();
                let mut flags: Flags = harness::quick_flags();
                let mut seed = 1;
                for a in args.rest_key() {
                    let ms = || a.value.parse::<u64>();
                    match a.key.as_deref().unwrap_or_default() {
                        "seed" => seed = a.value.parse()?,
                        "grace" => flags.tombstone_grace_ms = Some(ms()?),
                        "copy_timeout" => flags.copy_timeout_ms = Some(ms()?),
                        "transfer_rate" => flags.transfer_rate = Some(ms()?),
                        "ae" => flags.anti_entropy_interval_ms = Some(ms()?),
                        "request_timeout" => flags.request_timeout_ms = Some(ms()?),
                        "fsync" => flags.fsync = Some(a.value.clone()),
                        k => return Err(format!("unknown flag {k}").into()),
                    }
                }
                let hosts: Vec<String> = args.rest_pos().iter().map(|a| a.value.clone()).collect();
                let c = self.cluster.get_or_insert_with(|| Cluster::new(seed));
                for h in hosts {
                    c.start(&h, flags.clone());
                }
                Ok(String::new())
            }
            "join" => {
                let hosts = self.hosts(command)?;
                let c = self.cluster()?;
                let out = c.call(async move { join(hosts).await.map_err(|e| e.to_string()) })?;
                Ok(out)
            }
            "add" | "remove" | "abort" => self.ring_change(command),
            "settle" => {
                let mut args = command.consume_args();
                let members: Option<usize> = args.lookup_parse("members")?;
                let at = args
                    .lookup("at")
                    .map_or_else(|| "n0".to_string(), |a| a.value.clone());
                args.reject_rest()?;
                self.wait("settle", move || {
                    let at = at.clone();
                    async move {
                        let s = harness::status(&at).await.map_err(|e| e.to_string())?;
                        let done =
                            s.transition.is_none() && members.is_none_or(|m| s.nodes.len() == m);
                        Ok(done.then(|| {
                            let names: Vec<&str> = s.nodes.iter().map(|n| n.id.host()).collect();
                            format!("epoch {}: {}", s.epoch, names.join(" "))
                        }))
                    }
                })
            }
            "put" | "update" | "delete" => self.writes(command),
            "get" => {
                let mut args = command.consume_args();
                let node = args.next_pos().ok_or("name a node")?.value.clone();
                let keys = keys(&args.next_pos().ok_or("name the keys")?.value);
                args.reject_rest()?;
                let c = self.cluster()?;
                let mut reads = Vec::new();
                for key in keys {
                    let (n, k) = (node.clone(), key.clone());
                    let shown = c.call(async move {
                        Ok(match harness::read(&n, &k).await {
                            Ok((values, _)) => show(&values),
                            Err(e) => format!("error: {e}"),
                        })
                    })?;
                    reads.push((key, shown));
                }
                Ok(group(reads))
            }
            "locate" => {
                let mut args = command.consume_args();
                let key = args.next_pos().ok_or("name a key")?.value.clone();
                args.reject_rest()?;
                let c = self.cluster()?;
                Ok(c.call(async move {
                    let c = harness::client("n0").await.map_err(|e| e.to_string())?;
                    let r = c
                        .locate(harness::ctx(), key.as_str().into())
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    let names: Vec<&str> = r.replicas.iter().map(|n| n.host()).collect();
                    Ok(format!("{key}: {}\n", names.join(" ")))
                })?)
            }
            "partition" | "heal" | "cut" | "uncut" => {
                let (a, others) = self.peers_of(command)?;
                let c = self.cluster()?;
                for b in &others {
                    match command.name.as_str() {
                        "partition" => c.sim.partition(a.as_str(), b.as_str()),
                        "heal" => c.sim.repair(a.as_str(), b.as_str()),
                        "cut" => c.sim.partition_oneway(a.as_str(), b.as_str()),
                        _ => c.sim.repair_oneway(a.as_str(), b.as_str()),
                    }
                }
                Ok(String::new())
            }
            "hold" | "release" => {
                let (a, mut others) = self.peers_of(command)?;
                others.push("driver".into());
                let c = self.cluster()?;
                for b in &others {
                    if command.name == "hold" {
                        c.sim.hold(a.as_str(), b.as_str());
                    } else {
                        c.sim.release(a.as_str(), b.as_str());
                    }
                }
                Ok(String::new())
            }
            "crash" => {
                let hosts = self.hosts(command)?;
                let c = self.cluster()?;
                for h in hosts {
                    c.crash(&h);
                }
                Ok(String::new())
            }
            "restart" => {
                let hosts = self.hosts(command)?;
                let wiped = hosts.iter().any(|h| h == "wiped");
                let c = self.cluster()?;
                for h in hosts.iter().filter(|h| *h != "wiped") {
                    c.restart(h, wiped);
                }
                Ok(String::new())
            }
            "sleep" => {
                let mut args = command.consume_args();
                let d = duration(&args.next_pos().ok_or("give a duration")?.value)?;
                args.reject_rest()?;
                self.cluster()?.advance(d)?;
                Ok(String::new())
            }
            "hints" => {
                let c = self.cluster()?;
                Ok(c.call(async move {
                    let s = harness::status("n0").await.map_err(|e| e.to_string())?;
                    let mut out = String::new();
                    for n in &s.nodes {
                        match n.hints {
                            Some(h) => writeln!(out, "{}: {h} hints", n.id.host()),
                            None => writeln!(out, "{}: unknown", n.id.host()),
                        }
                        .map_err(|e| e.to_string())?;
                    }
                    Ok(out)
                })?)
            }
            "status" => {
                let mut args = command.consume_args();
                let node = args.next_pos().ok_or("name a node")?.value.clone();
                args.reject_rest()?;
                let c = self.cluster()?;
                Ok(c.call(async move {
                    let s = harness::status(&node).await.map_err(|e| e.to_string())?;
                    Ok(describe(&s))
                })?)
            }
            "wait" => {
                let mut args = command.consume_args();
                let what = args.next_pos().ok_or("wait for what?")?.value.clone();
                let within = match args.lookup("within") {
                    Some(a) => duration(&a.value)?,
                    None => WAIT_LIMIT,
                };
                let rest: Vec<String> = args.rest_pos().iter().map(|a| a.value.clone()).collect();
                args.reject_rest()?;
                match what.as_str() {
                    // `wait leader HOST...`: every one of the hosts names one
                    // leader among them, and it names itself (elected by the
                    // ring's Raft group and committed to the ring).
                    "leader" => {
                        let hosts = rest.clone();
                        self.wait("leader", move || {
                            let hosts = hosts.clone();
                            async move {
                                let mut named = Vec::new();
                                for h in &hosts {
                                    let s = harness::status(h).await.map_err(|e| e.to_string())?;
                                    named.push(s.leader.host().to_string());
                                }
                                let first = named.first().cloned().unwrap_or_default();
                                if named.iter().any(|l| *l != first) || !hosts.contains(&first) {
                                    return Ok(None);
                                }
                                let s = harness::status(&first).await.map_err(|e| e.to_string())?;
                                Ok((s.leader.host() == first).then(|| {
                                    format!("{} name {first} the leader", hosts.join(" "))
                                }))
                            }
                        })
                    }
                    "removed" => {
                        let host = rest.first().ok_or("name a host")?.clone();
                        self.wait("removed", move || {
                            let host = host.clone();
                            async move {
                                let s = harness::status(&host).await.map_err(|e| e.to_string())?;
                                Ok(s.removed_at_epoch
                                    .map(|e| format!("{host} was removed at epoch {e}")))
                            }
                        })
                    }
                    "tombstones_gone" => self.wait("tombstones_gone", || async {
                        let s = harness::status("n0").await.map_err(|e| e.to_string())?;
                        let left: u64 = s
                            .nodes
                            .iter()
                            .map(|n| n.tombstones.unwrap_or(u64::MAX))
                            .sum();
                        Ok((left == 0).then(|| "no member keeps a tombstone".to_string()))
                    }),
                    "reads" => {
                        let node = rest.first().ok_or("name a node")?.clone();
                        let spec = rest.get(1).ok_or("name the keys")?.clone();
                        let mut want: Vec<String> = rest[2..].to_vec();
                        want.sort();
                        let all = keys(&spec);
                        self.wait("reads", move || {
                            let (node, all, want) = (node.clone(), all.clone(), want.clone());
                            let spec = spec.clone();
                            async move {
                                for k in &all {
                                    let (v, _) =
                                        harness::read(&node, k).await.map_err(|e| e.to_string())?;
                                    if v != want {
                                        return Err(format!("{k} reads {}", show(&v)));
                                    }
                                }
                                Ok(Some(format!("{spec} → {}", show(&want))))
                            }
                        })
                    }
                    "held" => {
                        let host = rest.first().ok_or("name a host")?.clone();
                        let want = rest.get(1).ok_or("name a state")?.clone();
                        let c = self.cluster()?;
                        let others: Vec<String> = c
                            .nodes
                            .keys()
                            .filter(|h| **h != host && c.sim.is_host_running(h.as_str()))
                            .cloned()
                            .collect();
                        self.wait_within("held", within, move || {
                            let (host, want, others) = (host.clone(), want.clone(), others.clone());
                            async move {
                                for o in &others {
                                    let s = harness::status(o).await.map_err(|e| e.to_string())?;
                                    let seen = s
                                        .nodes
                                        .iter()
                                        .find(|n| n.id.host() == host)
                                        .map(|n| format!("{:?}", n.state).to_lowercase());
                                    if seen.as_deref() != Some(want.as_str()) {
                                        return Err(format!("{o} holds {host} {seen:?}"));
                                    }
                                }
                                Ok(Some(format!("every other node holds {host} {want}")))
                            }
                        })
                    }
                    w => Err(format!("cannot wait for {w}").into()),
                }
            }
            name => Err(format!("unknown command {name}").into()),
        }
    }
}

/// A node's view in one line: epoch, members, change, removal.
fn describe(s: &dynamo::rpc::StatusReply) -> String {
    let names: Vec<&str> = s.nodes.iter().map(|n| n.id.host()).collect();
    let mut out = format!("epoch {}: {}", s.epoch, names.join(" "));
    if let Some(t) = &s.transition {
        let j: Vec<&str> = t.joining.iter().map(|n| n.host()).collect();
        let l: Vec<&str> = t.leaving.iter().map(|n| n.host()).collect();
        let _ = write!(
            out,
            "; changing (joining [{}], leaving [{}])",
            j.join(" "),
            l.join(" ")
        );
    }
    if let Some(e) = s.removed_at_epoch {
        let _ = write!(out, "; removed at epoch {e}");
    }
    out.push('\n');
    out
}

/// Adds `hosts` at the leader, one settled change at a time; the last ring.
pub async fn join(hosts: Vec<String>) -> Result<String, harness::BoxError> {
    let leader = loop {
        match harness::client("n0").await {
            Ok(c) if c.status(harness::ctx()).await.is_ok() => break c,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    for host in &hosts {
        loop {
            match leader.add_node(harness::ctx(), id(host)).await? {
                Ok(_) => break,
                Err(e) if e.to_string().contains("does not answer") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            let s = leader.status(harness::ctx()).await??;
            if s.transition.is_none() && s.nodes.iter().any(|n| n.id == id(host)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let s = leader.status(harness::ctx()).await??;
    Ok(describe(&s))
}
