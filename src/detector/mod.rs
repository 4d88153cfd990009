//! Failure detection: which peers are alive, suspect or down, at a cost per
//! node that does not grow with the ring.
//!
//! # Probing: a few peers a round
//!
//! Every [`PING_INTERVAL`] (a *round*) a node probes [`PROBES_PER_ROUND`] of
//! its *neighbours* (the nodes it shares a preference list with,
//! [`Ring::neighbours`]), taking them in turn from a list in an order of its
//! own (sorted by a hash of the pair, so two nodes do not walk the ring in
//! step), and every neighbour whose last probe failed: each round while its
//! own probes do not yet hold it down, then every [`DOWN_RECHECK_ROUNDS`]
//! rounds until it answers (at most [`MAX_RETRIES_PER_ROUND`] a round). A probe
//! that gets no answer within [`PING_TIMEOUT`] is a miss. The rules for what
//! a node's own probes say, in [`crate::peers::Liveness`]:
//!
//! - `alive`: the last probe was answered, or the misses began less than
//!   [`SUSPECT_AFTER`] ago;
//! - `suspect`: no answer for [`SUSPECT_AFTER`] (one probe missed);
//! - `down`: no answer for [`DOWN_AFTER`] (about four probes missed), or the
//!   connection was refused (nothing listens at the port: the process is gone).
//!
//! A node tells others (below) of a peer its own probes hold down if the peer
//! answered once, or has not answered for [`DOWN_AFTER`]: a refused connection
//! to a peer that never answered is what every node sees while a ring starts
//! (a process not listening yet), and at 1,000 simulated nodes that news and
//! its refutations kept every probe full for minutes after the start.
//!
//! A miss count with fixed thresholds rather than phi accrual: probes of a
//! failing peer are periodic and their round trip on a LAN is far below the
//! interval, so the inter-arrival distribution phi models is nearly constant,
//! and two thresholds in milliseconds are easier for an operator to reason
//! about.
//!
//! # Dissemination: SWIM's news on every probe
//!
//! A node probes only a few peers a round, so most of what it knows it hears.
//! Every probe and every answer carries a few pieces of news (`alive` or
//! `down`, each at the subject's *incarnation*) with SWIM's rules
//! ([`gossip`]): a node whose own probes hold a peer down says so; a node
//! that hears it is held down raises its incarnation and says it is alive,
//! which beats the down. Each piece is passed on about 3·log2(n) times, so it
//! reaches every node in O(log n) rounds. The request path reads one state
//! per peer ([`crate::peers::Peers::state`]): what the node's own probes say
//! while the last one was answered less than [`DOWN_AFTER`] ago, else down if
//! the news says so, else what its own probes say.
//!
//! In an n-node ring each node is probed by about [`PROBES_PER_ROUND`] others
//! a round, so a peer that dies is missed by a few probers within a round,
//! held down by them [`DOWN_AFTER`] later, and by everyone O(log n) rounds
//! after that: about three seconds at any size (measured in the simulation,
//! see BENCHMARKS.md). A SIGSTOPped node that resumes is told it is held
//! down by the first node it probes or that probes it, and clears itself in
//! the same round trip.
//!
//! What is left out of SWIM: indirect probes (asking k others to probe a peer
//! that does not answer) and suspect news. A node whose link to one prober is
//! cut is held down by the news until it clears itself, over and over while
//! the cut lasts; a node that has just reached it itself routes to it anyway
//! (its own fresh answer wins), so with a cut link each node routes by what
//! it sees, and elsewhere a wrong `down` costs a hint, never a write (below).
//! Foca (a SWIM crate) was considered: it is a membership protocol (it owns
//! who is in the cluster, and a node it declares down may not come back under
//! its identity), where here membership is the leader's ring and the detector
//! only a routing hint for the ring's members, so only the part of SWIM that
//! spreads liveness is used.
//!
//! Probes and answers also carry the sender's ring epoch: a node that sees a
//! newer one wakes its ring sync ([`crate::membership`]), which pulls the
//! ring from the leader. So a node that missed the leader's push learns of
//! it within a round or two from whoever it probes, and the periodic pull
//! from the leader is only a backstop.
//!
//! # What uses it
//!
//! - The coordinator sends a slot whose replica is `down` straight to a
//!   stand-in, instead of spending the request's deadline on it, and forwards a
//!   request to the first replica not `down`.
//! - `status` and `locate` take each node's state from the detector and do not
//!   call a node it holds down; the others are asked for their current
//!   counters.
//!
//! Being held `down` never makes a node refuse anything: the detector only
//! routes around a peer. A wrong `down` costs a hint, never a write.
//!
//! # Cost as the ring grows
//!
//! Per round a node sends [`PROBES_PER_ROUND`] probes (plus re-probes of
//! failing peers) and answers about as many, each with at most
//! [`gossip::MAX_RUMOURS_PER_MESSAGE`] pieces of news: flat in the ring's
//! size. The neighbour list is computed once per ring epoch.
//!
//! # Bounds
//!
//! One round at a time, each probe with its deadline: a round takes at most
//! [`PING_TIMEOUT`] and sends at most `PROBES_PER_ROUND + MAX_RETRIES_PER_ROUND`
//! probes.

pub mod gossip;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::context::NodeContext;
use crate::peers::Peers;
pub use crate::peers::{DOWN_AFTER, SUSPECT_AFTER};
use crate::ring::{Ring, RingCell};
use crate::rpc::{NodeState, Probe, ProbeAck};
use crate::types::NodeId;
use gossip::{Change, Gossip};

/// Pause between two probe rounds by default (`--ping-interval-ms`).
pub const PING_INTERVAL: Duration = Duration::from_millis(crate::config::DEFAULT_PING_INTERVAL_MS);
/// How long a probe may take. A loaded 2-core box answers in well under a
/// millisecond; half a second without an answer is a miss.
pub const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// Neighbours probed in turn each round.
pub const PROBES_PER_ROUND: usize = 3;
/// Most failing neighbours probed again in one round (on top of
/// [`PROBES_PER_ROUND`]).
pub const MAX_RETRIES_PER_ROUND: usize = 8;
/// A neighbour this node's own probes hold down is probed again every this
/// many rounds (about once a second), until it answers: its own verdict must
/// not outlive the peer's recovery by a turn of the whole rotation.
pub const DOWN_RECHECK_ROUNDS: u64 = 4;

/// What a node's detector has sent and heard, for measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Probes this node sent.
    pub probes_sent: u64,
    /// Probes this node answered.
    pub probes_answered: u64,
    /// Pieces of news this node put on its probes and answers.
    pub rumours_sent: u64,
}

/// The neighbours of one ring epoch, in this node's probing order.
#[derive(Default)]
struct Rotation {
    epoch: u64,
    order: Vec<NodeId>,
    next: usize,
    round: u64,
}

/// The failure detector of one node: its probing loop, its answers to
/// others' probes, and the news it passes on.
pub struct Detector {
    me: NodeId,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    interval: Option<Duration>,
    ring_news: Arc<Notify>,
    gossip: Mutex<Gossip>,
    probes_sent: AtomicU64,
    probes_answered: AtomicU64,
    rumours_sent: AtomicU64,
}

fn lock(g: &Mutex<Gossip>) -> std::sync::MutexGuard<'_, Gossip> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

impl Detector {
    /// The detector of node `node`, recording into its peers, probing every
    /// `interval` (None: never, though it still answers and passes news on),
    /// waking `ring_news` when a peer has a newer ring epoch.
    pub fn new(node: &NodeContext, interval: Option<Duration>, ring_news: Arc<Notify>) -> Detector {
        let NodeContext {
            me, peers, ring, ..
        } = node.clone();
        Detector {
            gossip: Mutex::new(Gossip::new(me.clone())),
            me,
            peers,
            ring,
            interval,
            ring_news,
            probes_sent: AtomicU64::new(0),
            probes_answered: AtomicU64::new(0),
            rumours_sent: AtomicU64::new(0),
        }
    }

    /// What it has sent and heard so far.
    pub fn stats(&self) -> DetectorStats {
        DetectorStats {
            probes_sent: self.probes_sent.load(Ordering::Relaxed),
            probes_answered: self.probes_answered.load(Ordering::Relaxed),
            rumours_sent: self.rumours_sent.load(Ordering::Relaxed),
        }
    }

    /// The nodes this node probes under `ring`, in its order: its neighbours,
    /// sorted by a hash of this node and the neighbour.
    pub fn targets(&self, ring: &Ring) -> Vec<NodeId> {
        let seed = xxh3_64_with_seed(self.me.to_string().as_bytes(), 0);
        let mut out: Vec<(u64, NodeId)> = ring
            .neighbours(&self.me)
            .into_iter()
            .map(|n| (xxh3_64_with_seed(n.to_string().as_bytes(), seed), n))
            .collect();
        out.sort();
        out.into_iter().map(|(_, n)| n).collect()
    }

    /// Probes every interval until `stop` (returns at once when off).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(interval) = self.interval else {
            return;
        };
        let mut rotation = Rotation::default();
        loop {
            let started = Instant::now();
            if let Some(ring) = self.ring.get() {
                if rotation.epoch != ring.epoch() || rotation.order.is_empty() {
                    let all = ring.state().all_nodes();
                    lock(&self.gossip).resize(all.len(), |n| all.contains(n));
                    rotation = Rotation {
                        epoch: ring.epoch(),
                        order: self.targets(&ring),
                        next: 0,
                        round: rotation.round,
                    };
                }
                drop(ring);
                let targets = self.choose(&mut rotation);
                self.round(&targets).await;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// This round's targets: the neighbours whose last probe failed (those its
    /// own probes hold down only every [`DOWN_RECHECK_ROUNDS`] rounds), up to
    /// [`MAX_RETRIES_PER_ROUND`], the ones not yet down first; then the next
    /// [`PROBES_PER_ROUND`] in turn.
    fn choose(&self, rotation: &mut Rotation) -> Vec<NodeId> {
        let now = Instant::now();
        rotation.round += 1;
        let recheck_down = rotation.round % DOWN_RECHECK_ROUNDS == 0;
        let mut failing = Vec::new();
        let mut down = Vec::new();
        for n in &rotation.order {
            let l = self.peers.liveness(n);
            if !l.failing() {
                continue;
            }
            if l.own_state(now) != NodeState::Down {
                failing.push(n.clone());
            } else if recheck_down {
                down.push(n.clone());
            }
        }
        let mut out: Vec<NodeId> = failing
            .into_iter()
            .chain(down)
            .take(MAX_RETRIES_PER_ROUND)
            .collect();
        let len = rotation.order.len();
        let mut taken = 0;
        for _ in 0..len {
            if taken == PROBES_PER_ROUND {
                break;
            }
            let node = &rotation.order[rotation.next % len];
            rotation.next = (rotation.next + 1) % len;
            if !out.contains(node) {
                out.push(node.clone());
                taken += 1;
            }
        }
        out
    }

    /// Probes every target once, at the same time, and takes in the outcomes.
    async fn round(&self, targets: &[NodeId]) {
        let probes = targets.iter().map(|node| self.probe_one(node));
        futures::future::join_all(probes).await;
    }

    async fn probe_one(&self, node: &NodeId) {
        let probe = {
            let mut g = lock(&self.gossip);
            Probe {
                from: self.me.clone(),
                incarnation: g.incarnation(),
                epoch: self.ring.epoch(),
                you_are_down_at: g.held_down_at(node),
                rumours: g.outgoing(),
            }
        };
        self.probes_sent.fetch_add(1, Ordering::Relaxed);
        self.rumours_sent
            .fetch_add(probe.rumours.len() as u64, Ordering::Relaxed);
        let sent = Instant::now();
        let before = self.peers.state(node);
        let out = self
            .peers
            .call(node, PING_TIMEOUT, |c, ctx| async move {
                c.probe(ctx, probe).await
            })
            .await;
        let own = self.peers.record_ping(node, sent, &out);
        let changes = {
            let mut g = lock(&self.gossip);
            match &out {
                Ok(ack) => {
                    self.epoch_seen(ack.epoch, node);
                    if let Some(at) = ack.you_are_down_at {
                        g.told_down(at);
                    }
                    let mut changes: Vec<Change> = ack
                        .rumours
                        .iter()
                        .take(gossip::MAX_RUMOURS_PER_MESSAGE)
                        .filter(|r| self.in_ring(&r.node))
                        .filter_map(|r| g.apply(r))
                        .collect();
                    changes.extend(g.heard_from(node, ack.incarnation));
                    changes
                }
                Err(_)
                    if own == NodeState::Down
                        && self.peers.liveness(node).down_is_news(Instant::now()) =>
                {
                    g.declare_down(node).into_iter().collect()
                }
                Err(_) => Vec::new(),
            }
        };
        self.record(&changes);
        let after = self.peers.state(node);
        if before != after {
            match &out {
                Ok(_) => tracing::info!(%node, state = ?after, "peer answers again"),
                Err(e) => {
                    tracing::info!(%node, state = ?after, reason = %e.reason(), "peer not answering")
                }
            }
        }
    }

    /// Answers another node's probe: takes in its news and returns this
    /// node's.
    pub fn answer(&self, probe: Probe) -> ProbeAck {
        self.probes_answered.fetch_add(1, Ordering::Relaxed);
        self.epoch_seen(probe.epoch, &probe.from);
        let (ack, changes) = {
            let mut g = lock(&self.gossip);
            if let Some(at) = probe.you_are_down_at {
                g.told_down(at);
            }
            let mut changes: Vec<Change> = probe
                .rumours
                .iter()
                .take(gossip::MAX_RUMOURS_PER_MESSAGE)
                .filter(|r| self.in_ring(&r.node))
                .filter_map(|r| g.apply(r))
                .collect();
            changes.extend(g.heard_from(&probe.from, probe.incarnation));
            let ack = ProbeAck {
                incarnation: g.incarnation(),
                epoch: self.ring.epoch(),
                you_are_down_at: g.held_down_at(&probe.from),
                rumours: g.outgoing(),
            };
            (ack, changes)
        };
        self.rumours_sent
            .fetch_add(ack.rumours.len() as u64, Ordering::Relaxed);
        self.record(&changes);
        ack
    }

    /// True if news about `node` is worth keeping: it is this node or a member
    /// of either ring of this node's (news of any other name is dropped, so
    /// a peer cannot grow the news with names that are not in the ring).
    fn in_ring(&self, node: &NodeId) -> bool {
        *node == self.me || self.ring.get().is_some_and(|r| r.is_member(node))
    }

    /// A peer has ring `epoch`: if it is newer than this node's, the ring
    /// sync pulls the ring now (ring epochs spread with the probes, so the
    /// sync's periodic pull from the leader can be rare).
    fn epoch_seen(&self, epoch: u64, peer: &NodeId) {
        if epoch > self.ring.epoch() {
            self.ring.seen_newer(peer);
            self.ring_news.notify_one();
        }
    }

    /// Records changes of the news in the peers table, where the request path
    /// reads them.
    fn record(&self, changes: &[Change]) {
        for c in changes {
            if c.node == self.me {
                continue;
            }
            self.peers.record_reported(&c.node, c.down);
            if c.down {
                tracing::info!(node = %c.node, "held down by the failure detector's news");
            } else {
                tracing::info!(node = %c.node, "alive again by the failure detector's news");
            }
        }
    }
}
