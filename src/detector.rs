//! Failure detection: which peers are alive, suspect or down, from pings.
//!
//! Every [`PING_INTERVAL`] a node pings each of its *neighbours* (the nodes it
//! shares a preference list with, [`Ring::neighbours`], and the leader) with
//! the `info` call (whose answer also carries the peer's counters, shown by
//! `status` while the peer is held down). A ping that gets no answer within [`PING_TIMEOUT`] is a miss. The
//! rules, in [`crate::peers::Liveness`]:
//!
//! - `alive`: the last ping was answered, or the misses began less than
//!   [`SUSPECT_AFTER`] ago;
//! - `suspect`: no answer for [`SUSPECT_AFTER`] (one ping missed);
//! - `down`: no answer for [`DOWN_AFTER`] (about four pings missed), or the
//!   connection was refused (nothing listens at the port: the process is gone).
//!
//! A miss count with fixed thresholds rather than phi accrual: pings are
//! periodic and their round trip on a LAN is far below the interval, so the
//! inter-arrival distribution phi models is nearly constant, and two thresholds
//! in milliseconds are easier for an operator to reason about. A hung node (a
//! SIGSTOPped process, a partition over an open connection) is `down` about
//! two seconds after its first unanswered ping.
//!
//! # What uses it
//!
//! - The coordinator sends a slot whose replica is `down` straight to a
//!   stand-in, instead of spending the request's deadline on it, and forwards a
//!   request to the first replica not `down`.
//! - `status` and `locate` take each node's state from the detector and do not
//!   call a node it holds down (its last answer is shown instead); the others
//!   are asked for their current counters.
//!
//! Being held `down` never makes a node refuse anything: the detector only
//! routes around a peer. A wrong `down` costs a hint, never a write.
//!
//! # Cost as the ring grows
//!
//! A node pings only its neighbours, not every member: with T tokens per node
//! and N replicas that is at most 2·T·(N−1) nodes, whatever the ring's size,
//! and in practice far fewer in small rings. The request path only ever asks
//! about neighbours (the replicas and stand-ins of keys it coordinates are
//! near it on the ring); `status`, an operator's command, calls the members.
//! Gossiping views (so a node learns about non-neighbours without calling
//! them) is left out until rings are large enough for that to matter.
//!
//! # Bounds
//!
//! One round at a time, each ping with its deadline, at most one ping per peer
//! per round: a round takes at most [`PING_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use crate::context::NodeContext;
use crate::peers::Peers;
pub use crate::peers::{DOWN_AFTER, SUSPECT_AFTER};
use crate::ring::{Ring, RingCell};
use crate::types::NodeId;

/// Pause between two ping rounds by default (`--ping-interval-ms`).
pub const PING_INTERVAL: Duration = Duration::from_millis(crate::config::DEFAULT_PING_INTERVAL_MS);
/// How long a ping may take. A loaded 2-core box answers `info` in well
/// under a millisecond; half a second without an answer is a miss.
pub const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// The pinger of one node.
pub struct Detector {
    me: NodeId,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    interval: Option<Duration>,
}

impl Detector {
    /// The detector of node `me`, recording into `peers`, pinging every
    /// `interval` (None: never).
    pub fn new(node: &NodeContext, interval: Option<Duration>) -> Detector {
        let NodeContext {
            me, peers, ring, ..
        } = node.clone();
        Detector {
            me,
            peers,
            ring,
            interval,
        }
    }

    /// The nodes this node pings under `ring`: its neighbours and the leader.
    pub fn targets(&self, ring: &Ring) -> Vec<NodeId> {
        let mut out = ring.neighbours(&self.me);
        let leader = ring.leader();
        if *leader != self.me && !out.contains(leader) {
            out.push(leader.clone());
        }
        out
    }

    /// Pings every interval until `stop` (returns at once when off).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(interval) = self.interval else {
            return;
        };
        let mut targets: (u64, Vec<NodeId>) = (0, Vec::new());
        loop {
            let started = tokio::time::Instant::now();
            if let Some(ring) = self.ring.get() {
                if targets.0 != ring.epoch() {
                    targets = (ring.epoch(), self.targets(&ring));
                }
                self.round(&targets.1).await;
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

    /// Pings every target once, at the same time, and records the outcomes.
    async fn round(&self, targets: &[NodeId]) {
        let pings = targets.iter().map(|node| async move {
            let sent = Instant::now();
            let before = self.peers.state(node);
            let out = self
                .peers
                .call(node, PING_TIMEOUT, |c, ctx| async move { c.info(ctx).await })
                .await;
            self.peers.record_ping(node, sent, &out);
            let after = self.peers.state(node);
            if before != after {
                match &out {
                    Ok(_) => tracing::info!(%node, state = ?after, "peer answers again"),
                    Err(e) => {
                        tracing::info!(%node, state = ?after, reason = %e.reason(), "peer not answering")
                    }
                }
            }
        });
        futures::future::join_all(pings).await;
    }
}
