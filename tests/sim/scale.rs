//! How a ring's traffic and cost grow with its size, in simulation (`make
//! sim-scale`): rings of each size are formed in bulk ([`super::form`]), left
//! idle, and the bytes each node writes to other nodes are counted at the
//! network seam (`harness::traffic`, split by RPC method). Then, on the same
//! ring holding a known number of keys, one `add-node` and one `remove-node`:
//! how many copies moved against the ideal, what was sent, how long the
//! change took. The nodes run with a real node's defaults (ping,
//! anti-entropy and ring-sync intervals, transfer rate), except fsync
//! (`never`: no flusher thread).
//!
//! Everything is a function of the seed except the real-time figures (real
//! seconds per simulated second, memory).
//!
//! Measurement options (environment): `SIM_TOKENS` tokens per node (256, the
//! ring's default; fewer makes a large ring affordable to simulate, and
//! changes what each node's neighbours are), `SIM_WINDOW` seconds of idle
//! window (20; 5 from 1,000 nodes), `SIM_KEYS` keys written before the
//! changes (20,000), `SIM_CHANGES=0` to skip the changes, `SIM_TICK_MS`
//! simulated milliseconds per step (1, turmoil's default: each step costs
//! turmoil hosts × links, so a large ring needs a longer tick; timers and
//! latencies are then rounded up to it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dynamo::config::Flags;
use dynamo::rpc::TransferProgress;
use futures::StreamExt;

use super::harness::{self, id, Cluster, Traffic, METHODS};

/// How a measurement runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub tokens: u32,
    /// `SIM_TOKENS` was given.
    pub tokens_chosen: bool,
    /// The idle window (None: 20 s, 5 s from 1,000 nodes).
    pub window: Option<Duration>,
    pub keys: usize,
    pub changes: bool,
    pub tick: Duration,
}

impl Options {
    pub fn from_env() -> Options {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Options {
            tokens: var("SIM_TOKENS").map_or(dynamo::ring::DEFAULT_TOKENS_PER_NODE, |t| t as u32),
            tokens_chosen: var("SIM_TOKENS").is_some(),
            window: var("SIM_WINDOW").map(Duration::from_secs),
            keys: var("SIM_KEYS").map_or(20_000, |k| k as usize),
            changes: var("SIM_CHANGES").is_none_or(|c| c != 0),
            tick: Duration::from_millis(var("SIM_TICK_MS").unwrap_or(1)),
        }
    }
}

/// One ring size's idle numbers.
pub struct Idle {
    pub nodes: usize,
    pub tokens: u32,
    pub tick: Duration,
    /// The peers a node pings (`Ring::neighbours`, and the leader), mean
    /// over a sample of nodes; and the connections a node dialled, mean.
    pub neighbours: f64,
    pub dials: f64,
    /// Mean bytes per second a member (not the leader) writes to other
    /// nodes when idle.
    pub member_mean: f64,
    /// The busiest member's.
    pub member_max: f64,
    /// The leader's.
    pub leader: f64,
    /// Per method: (calls/s, bytes/s) a mean member sends (calls and
    /// answers to them), and the leader's.
    pub member_methods: Vec<(&'static str, f64, f64)>,
    pub leader_methods: Vec<(&'static str, f64, f64)>,
    /// The leader's `status` answer: its size, and the real seconds it took.
    pub status_bytes: u64,
    pub status_real: f64,
    pub window: Duration,
    /// Real seconds: forming and starting (until the status answered),
    /// and per simulated second over the idle window.
    pub form_real: f64,
    pub real_per_simulated: f64,
    /// Peak resident memory of the process so far (MiB), and now.
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
}

/// One ring change's numbers.
pub struct Change {
    /// `add n10` or `remove n1`.
    pub what: String,
    /// Members before the change.
    pub nodes: usize,
    pub keys: usize,
    /// Copies the change should move at best: every copy the added node
    /// gets (keys × N / its ring's size), or every copy the removed node
    /// held (keys × N / the ring's size before).
    pub ideal: f64,
    /// Copies the added node holds once the change is over, or that the
    /// removed node held before it (each must go to a new owner).
    pub copies: u64,
    /// Copies the other members gained (an add: lost) over the change.
    pub others_delta: i64,
    /// Every copy on the ring's members, before and after (keys × N if every
    /// write reached all N).
    pub total_before: u64,
    pub total_after: u64,
    /// The transfer's own counts, summed over every node's last report (what
    /// the leader's `status` sums into `transition`): keys each holder had to
    /// move (a key once per holder) and keys it moved.
    pub keys_to_move: u64,
    pub keys_moved: u64,
    /// Bytes every node wrote to other nodes from the change's start until
    /// it settled, then until the old owners had dropped what they no longer
    /// own (clean-up); and of those, the transfer's (transfer and
    /// transfer_check, both ways).
    pub bytes_change: u64,
    pub bytes_transfer: u64,
    pub bytes_cleanup: u64,
    pub by_method: Vec<(&'static str, u64, u64)>,
    pub cleanup_by_method: Vec<(&'static str, u64, u64)>,
    /// The last node of the change to report its transfer done, and when
    /// (simulated seconds after the change began; as polled every 100 ms).
    pub last_done: (String, f64),
    /// The node that made the most transfer calls (`transfer` and
    /// `transfer_check`) until the settle, and how many.
    pub busiest: (String, u64),
    /// Simulated seconds until the leader settled, and until the copies
    /// were where the settled ring puts them.
    pub settle_s: f64,
    pub clean_s: f64,
    pub real_s: f64,
}

/// Everything measured on one ring size.
pub struct Measured {
    pub idle: Idle,
    pub changes: Vec<Change>,
}

/// Real nodes' defaults (intervals, timeouts), without the flusher thread.
fn flags() -> Flags {
    Flags {
        fsync: Some("never".into()),
        insecure: true,
        ..Default::default()
    }
}

/// A line saying how far a measurement got, with real time and memory.
fn progress(nodes: usize, what: &str, started: Instant) {
    let (peak, now) = memory();
    println!(
        "[{nodes} nodes] {what}: {:.1} real s, RSS {now:.0} MiB (peak {peak:.0})",
        started.elapsed().as_secs_f64()
    );
}

/// VmHWM and VmRSS of this process, in MiB.
pub fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn sum_traffic<'a>(all: impl Iterator<Item = &'a Traffic>) -> Traffic {
    let mut out = Traffic::default();
    for t in all {
        out.add(t);
    }
    out
}

/// Calls and bytes per method, calls and answers together.
fn per_method(t: &Traffic) -> Vec<(&'static str, u64, u64)> {
    METHODS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let c = t.calls.get(i).copied().unwrap_or((0, 0));
            let a = t.answers.get(i).copied().unwrap_or((0, 0));
            (*name, c.0, c.1 + a.1)
        })
        .filter(|(_, calls, bytes)| *calls > 0 || *bytes > 0)
        .collect()
}

fn since(
    now: &BTreeMap<String, Traffic>,
    then: &BTreeMap<String, Traffic>,
) -> BTreeMap<String, Traffic> {
    now.iter()
        .map(|(h, t)| (h.clone(), t.since(then.get(h))))
        .collect()
}

/// Measures a ring of `nodes`.
pub fn measure(nodes: usize, opts: &Options) -> Result<Measured, String> {
    // The counters name each frame's method, which a member's encrypted
    // channel hides: the measured rings run --insecure. (Encryption adds a
    // handshake per connection and 18 bytes per message of up to 64 KiB.)
    harness::plain_rings();
    // A node's probes reach, in turn, every node it shares a preference
    // list with, about min(nodes - 1, 2.5 x tokens) of them, and keep a
    // connection to each (as a real node does), and a connection costs the
    // simulation about 50 KB: at 1,000 nodes of 256 tokens that ends near
    // 60 GB. With the detector probing three a round the process still
    // passed 14 GB at the fourth simulated second, at 90 real s each.
    if nodes >= 500 && opts.tokens > 32 && !opts.tokens_chosen {
        return Err(format!(
            "{nodes} nodes of {} tokens would each reach about {} peers in turn, over connections \
             that cost the simulation about {} GB: set SIM_TOKENS=16 (SIM_TOKENS={} to try anyway)",
            opts.tokens,
            (nodes - 1).min(opts.tokens as usize * 5 / 2),
            nodes * (nodes - 1).min(opts.tokens as usize * 5 / 2) * 2 * 50 / 1_000_000,
            opts.tokens
        ));
    }
    let mut c = Cluster::with_tick(7, opts.tick);
    let hosts: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
    let started = Instant::now();
    let ring = super::form::form(&mut c, &hosts, &flags(), opts.tokens)?;
    progress(nodes, "stores written, hosts started", started);
    let neighbours = {
        let r = dynamo::ring::Ring::new(ring.clone());
        let sample: Vec<&String> = hosts.iter().step_by(nodes.div_ceil(10)).collect();
        let count: usize = sample
            .iter()
            .map(|h| {
                let mut peers = r.neighbours(&id(h));
                if h.as_str() != "n0" && !peers.contains(&id("n0")) {
                    peers.push(id("n0"));
                }
                peers.len()
            })
            .sum();
        count as f64 / sample.len() as f64
    };
    progress(nodes, "neighbours counted", started);
    for second in 1..=5 {
        c.advance(Duration::from_secs(1))?;
        if nodes >= 500 || second == 5 {
            progress(nodes, &format!("{second} s simulated"), started);
        }
    }
    // Every node a member on the ring's epoch, with no change running, as
    // the leader sees them (it asks each).
    let status_started = Instant::now();
    let (epoch, n) = (ring.epoch, nodes);
    let before_status = harness::traffic();
    let status = c.call(async move {
        let s = harness::status("n0").await.map_err(|e| e.to_string())?;
        let wrong: Vec<String> = s
            .nodes
            .iter()
            .filter(|m| m.epoch != Some(epoch) || m.state != dynamo::rpc::NodeState::Alive)
            .map(|m| format!("{} ({:?}, epoch {:?})", m.id, m.state, m.epoch))
            .collect();
        if s.epoch != epoch || s.nodes.len() != n || s.transition.is_some() || !s.member {
            return Err(format!(
                "the leader has epoch {} with {} nodes (want {epoch}, {n}), change {:?}",
                s.epoch,
                s.nodes.len(),
                s.transition.is_some()
            ));
        }
        if !wrong.is_empty() {
            return Err(format!("not up on epoch {epoch}: {}", wrong.join(", ")));
        }
        Ok(String::new())
    });
    status?;
    let status_real = status_started.elapsed().as_secs_f64();
    let status_bytes = harness::traffic()
        .get("n0")
        .map_or(0, |t| t.since(before_status.get("n0")).driver_bytes);
    let form_real = started.elapsed().as_secs_f64();
    progress(nodes, "status answered", started);

    let window = opts.window.unwrap_or(if nodes >= 1000 {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(20)
    });
    let before = harness::traffic();
    let t = Instant::now();
    let mut left = window;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(1));
        c.advance(step)?;
        left -= step;
        if nodes >= 500 {
            progress(nodes, "a second of the idle window", started);
        }
    }
    let real = t.elapsed().as_secs_f64();
    progress(nodes, "idle window measured", started);
    let during = since(&harness::traffic(), &before);
    let secs = window.as_secs_f64();
    let rate = |h: &str| during.get(h).map_or(0, |t| t.bytes) as f64 / secs;
    let members: Vec<f64> = hosts[1..].iter().map(|h| rate(h)).collect();
    let scale = |v: Vec<(&'static str, u64, u64)>, per: f64| {
        v.into_iter()
            .map(|(m, calls, bytes)| (m, calls as f64 / per, bytes as f64 / per))
            .collect::<Vec<_>>()
    };
    let member_sum = sum_traffic(hosts[1..].iter().filter_map(|h| during.get(h)));
    let leader_t = during.get("n0").cloned().unwrap_or_default();
    let (peak_rss_mib, rss_mib) = memory();
    let now = harness::traffic();
    let dials = hosts
        .iter()
        .filter_map(|h| now.get(h).map(|t| t.dials))
        .sum::<u64>() as f64
        / nodes as f64;
    let idle = Idle {
        nodes,
        tokens: opts.tokens,
        tick: opts.tick,
        neighbours,
        dials,
        member_mean: members.iter().sum::<f64>() / members.len().max(1) as f64,
        member_max: members.iter().copied().fold(0.0, f64::max),
        leader: rate("n0"),
        member_methods: scale(per_method(&member_sum), secs * members.len().max(1) as f64),
        leader_methods: scale(per_method(&leader_t), secs),
        status_bytes,
        status_real,
        window,
        form_real,
        real_per_simulated: real / secs,
        peak_rss_mib,
        rss_mib,
    };
    let mut changes = Vec::new();
    if opts.changes {
        write_keys(&mut c, &hosts, opts.keys)?;
        progress(nodes, "keys written", started);
        let new = format!("n{nodes}");
        c.start(&new, flags());
        let mut ring_hosts = hosts.clone();
        changes.push(change(&mut c, &ring_hosts, &new, true, opts.keys)?);
        progress(nodes, "add-node measured", started);
        ring_hosts.push(new);
        changes.push(change(&mut c, &ring_hosts, "n1", false, opts.keys)?);
        progress(nodes, "remove-node measured", started);
    }
    Ok(Measured { idle, changes })
}

/// Writes `keys` small keys through the ring (batches of 256 through each
/// node in turn, four batches at a time, each write acknowledged by W
/// replicas), retrying what failed, then waits until every copy is stored.
fn write_keys(c: &mut Cluster, hosts: &[String], keys: usize) -> Result<(), String> {
    let names: Vec<String> = (0..keys).map(|i| format!("key{i:06}")).collect();
    let mut left = names;
    for round in 0..5 {
        if left.is_empty() {
            break;
        }
        let hosts = hosts.to_vec();
        let chunks: Vec<Vec<String>> = std::mem::take(&mut left)
            .chunks(dynamo::outbox::MAX_ITEMS)
            .map(<[String]>::to_vec)
            .collect();
        let failed = c.call(async move {
            let jobs = chunks.into_iter().enumerate().map(|(i, chunk)| {
                let host = hosts[(i + round) % hosts.len()].clone();
                async move {
                    let writes = chunk
                        .iter()
                        .map(|k| dynamo::rpc::WriteRequest {
                            key: k.as_str().into(),
                            context: Default::default(),
                            content: harness::value("v"),
                            forwarded: false,
                        })
                        .collect();
                    let out = match harness::client(&host).await {
                        Ok(cl) => cl.write_batch(harness::ctx(), writes).await,
                        Err(_) => return chunk,
                    };
                    match out {
                        Ok(Ok(replies)) => chunk
                            .into_iter()
                            .zip(replies)
                            .filter(|(_, r)| r.is_err())
                            .map(|(k, _)| k)
                            .collect(),
                        _ => chunk,
                    }
                }
            });
            let failed: Vec<Vec<String>> = futures::stream::iter(jobs)
                .buffer_unordered(4)
                .collect()
                .await;
            Ok(failed.concat().join("\n"))
        })?;
        left = failed
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
    }
    if !left.is_empty() {
        return Err(format!("{} keys could not be written", left.len()));
    }
    // W of N acknowledged each write; the last replica's copy follows.
    c.advance(Duration::from_secs(2))?;
    Ok(())
}

/// What each of `hosts` answers to `info`: its keys and its transfer report.
async fn infos(
    hosts: &[String],
) -> BTreeMap<String, Result<(u64, Option<TransferProgress>), String>> {
    let asks = hosts.iter().cloned().map(|h| async move {
        let out = async {
            let cl = harness::client(&h).await.map_err(|e| e.to_string())?;
            let info = cl
                .info(harness::ctx())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok((info.keys, info.transfer))
        }
        .await;
        (h, out)
    });
    futures::stream::iter(asks)
        .buffer_unordered(64)
        .collect()
        .await
}

fn key_counts(c: &mut Cluster, hosts: &[String]) -> Result<BTreeMap<String, u64>, String> {
    let hosts = hosts.to_vec();
    let out = c.call(async move {
        let mut lines = Vec::new();
        for (h, r) in infos(&hosts).await {
            let (keys, _) = r.map_err(|e| format!("{h}: {e}"))?;
            lines.push(format!("{h} {keys}"));
        }
        Ok(lines.join("\n"))
    })?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(h, k)| Some((h.to_string(), k.parse().ok()?)))
        .collect())
}

/// One change on the ring of `hosts`: adds `node` (started, empty) or removes
/// it, and follows it until it settles and the copies are where the settled
/// ring puts them.
fn change(
    c: &mut Cluster,
    hosts: &[String],
    node: &str,
    add: bool,
    keys: usize,
) -> Result<Change, String> {
    let real = Instant::now();
    let mut all = hosts.to_vec();
    if add {
        all.push(node.to_string());
    }
    let target: Vec<String> = all.iter().filter(|h| add || *h != node).cloned().collect();
    let n_copies = {
        let s = c.call(async {
            let cl = harness::client("n0").await.map_err(|e| e.to_string())?;
            let r = cl
                .fetch_ring_newer(harness::ctx(), 0)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("the leader has no ring")?;
            Ok(r.replication.n.to_string())
        })?;
        s.parse::<usize>().map_err(|e| e.to_string())?
    };
    let before = key_counts(c, &all)?;
    let total_before: u64 = hosts.iter().filter_map(|h| before.get(h)).sum();
    let traffic_before = harness::traffic();
    let started = c.now();
    let (who, adding) = (node.to_string(), add);
    let epoch: u64 = c
        .call(async move {
            let leader = harness::client("n0").await.map_err(|e| e.to_string())?;
            loop {
                let out = if adding {
                    leader.add_node(harness::ctx(), id(&who)).await
                } else {
                    leader.remove_node(harness::ctx(), id(&who)).await
                };
                match out.map_err(|e| e.to_string())? {
                    Ok(reply) => return Ok(reply.epoch.to_string()),
                    Err(e) if e.to_string().contains("does not answer") => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        })?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    // Until the leader settles: its ring and every node's transfer report
    // polled every 100 ms (the last report of each node is kept; a node's
    // report ends when it installs the settled ring, so the last one seen
    // may be up to a poll short of its final count).
    let watched = all.clone();
    let offset = (c.now() - started).as_secs_f64();
    let reports = c.call(async move {
        let leader = harness::client("n0").await.map_err(|e| e.to_string())?;
        let watching = tokio::time::Instant::now();
        let mut last: BTreeMap<String, TransferProgress> = BTreeMap::new();
        // The last node to report its transfer done, and when.
        let mut slowest = (String::new(), 0.0f64);
        loop {
            for (h, r) in infos(&watched).await {
                if let Ok((_, Some(t))) = r {
                    if t.epoch == epoch {
                        let was_done = last
                            .get(&h)
                            .is_some_and(|t| t.phase == dynamo::rpc::TransferPhase::Done);
                        if t.phase == dynamo::rpc::TransferPhase::Done && !was_done {
                            let at = offset + watching.elapsed().as_secs_f64();
                            if at >= slowest.1 {
                                slowest = (h.clone(), at);
                            }
                        }
                        last.insert(h, t);
                    }
                }
            }
            let newer = leader
                .fetch_ring_newer(harness::ctx(), epoch)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            match newer {
                Some(r) if r.transition.is_none() => break,
                Some(r) => return Err(format!("another change began: epoch {}", r.epoch)),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let to_move: u64 = last.values().map(|t| t.keys_to_move).sum();
        let moved: u64 = last.values().map(|t| t.keys_moved).sum();
        Ok(format!("{to_move} {moved} {} {}", slowest.0, slowest.1))
    })?;
    let settle_s = (c.now() - started).as_secs_f64();
    let traffic_settled = harness::traffic();
    let fields: Vec<&str> = reports.split(' ').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let (keys_to_move, keys_moved) = (field(0).parse().unwrap_or(0), field(1).parse().unwrap_or(0));
    let last_done = (field(2).to_string(), field(3).parse().unwrap_or(0.0));
    // Until the old owners have dropped what the settled ring gives others:
    // every copy on the target ring's members, none left outside it.
    let want = (keys * n_copies) as u64;
    let limit = c.now() + Duration::from_secs(120);
    let after = loop {
        let counts = key_counts(c, &all)?;
        let on_target: u64 = target.iter().filter_map(|h| counts.get(h)).sum();
        let outside: u64 = all
            .iter()
            .filter(|h| !target.contains(h))
            .filter_map(|h| counts.get(h))
            .sum();
        if (on_target == want && outside == 0) || c.now() > limit {
            break counts;
        }
        c.advance(Duration::from_millis(500))?;
    };
    let clean_s = (c.now() - started).as_secs_f64();
    let now = harness::traffic();
    let per_host = since(&traffic_settled, &traffic_before);
    let change_t = sum_traffic(per_host.values());
    // The node that made the most transfer calls (full copies and digest
    // checks) until the settle.
    let transfer_calls = |t: &Traffic| -> u64 {
        ["transfer", "transfer_check"]
            .iter()
            .filter_map(|m| METHODS.iter().position(|x| x == m))
            .map(|i| t.calls.get(i).map_or(0, |c| c.0))
            .sum()
    };
    let busiest = per_host
        .iter()
        .map(|(h, t)| (h.clone(), transfer_calls(t)))
        .max_by_key(|(h, calls)| (*calls, std::cmp::Reverse(h.clone())))
        .unwrap_or_default();
    let cleanup_t = sum_traffic(since(&now, &traffic_settled).values());
    let by_method = per_method(&change_t);
    let cleanup_by_method = per_method(&cleanup_t);
    let transfer: u64 = by_method
        .iter()
        .filter(|(m, _, _)| *m == "transfer" || *m == "transfer_check")
        .map(|(_, _, b)| *b)
        .sum();
    let total_after: u64 = target.iter().filter_map(|h| after.get(h)).sum();
    let others: Vec<&String> = hosts.iter().filter(|h| *h != node).collect();
    let others_before: u64 = others.iter().filter_map(|h| before.get(*h)).sum();
    let others_after: u64 = others.iter().filter_map(|h| after.get(*h)).sum();
    let ring_size = if add { hosts.len() + 1 } else { hosts.len() };
    Ok(Change {
        what: format!("{} {node}", if add { "add" } else { "remove" }),
        nodes: hosts.len(),
        keys,
        ideal: (keys * n_copies) as f64 / ring_size as f64,
        copies: if add {
            after.get(node).copied().unwrap_or(0)
        } else {
            before.get(node).copied().unwrap_or(0)
        },
        others_delta: others_after as i64 - others_before as i64,
        total_before,
        total_after,
        keys_to_move,
        keys_moved,
        bytes_change: change_t.bytes,
        bytes_transfer: transfer,
        bytes_cleanup: cleanup_t.bytes,
        by_method,
        cleanup_by_method,
        last_done,
        busiest,
        settle_s,
        clean_s,
        real_s: real.elapsed().as_secs_f64(),
    })
}
