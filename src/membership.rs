//! Leader-managed membership (SPEC 3.6): the leader owns the ring; each change
//! makes a new epoch, persisted by the leader and committed to every member.
//!
//! * `add-node` / `remove-node` run only at the leader, one at a time. A node must
//!   answer before it is added, so a typo does not join a ghost.
//! * A change is durable at the leader before anyone else sees it, then pushed to
//!   every member (and to a removed node, so it knows). Members persist a ring
//!   before acknowledging it.
//! * A member that missed a push catches up by pulling the ring from the leader:
//!   at start-up and every [`RING_SYNC_INTERVAL`]. A node never installs a ring
//!   older than the one it has (epochs only grow).
//! * The leader's N/W/R travel in the ring; a member started with other values
//!   warns and follows the leader.
//! * A restart keeps the ring and the leader's role: a persisted ring wins over the
//!   `--leader` flag, with a warning when they disagree.
//!
//! Left out here: moving data when owners change (the next issue), electing a new
//! leader (the leader being down stops only membership changes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::peers::Peers;
use crate::ring::{RingCell, RingState};
use crate::rpc::{MemberStatus, MembershipReply, NodeInfo, NodeState, StatusReply};
use crate::storage::Storage;
use crate::types::{NodeId, Replication};

/// How often a node asks the leader for a newer ring. Two seconds bounds how long a
/// returning member runs on an old ring while costing one tiny RPC per interval.
pub const RING_SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Deadline of a ring push or pull, and of the liveness probe `status` makes.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(1);

/// Membership of one node.
pub struct Membership {
    me: NodeId,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    configured_leader: NodeId,
    configured_replication: Replication,
    changes: tokio::sync::Mutex<()>,
    warned_replication: AtomicBool,
}

impl Membership {
    /// Membership for node `me`, told `leader` and `replication` on the command line.
    pub fn new(
        me: NodeId,
        storage: Arc<Storage>,
        peers: Arc<Peers>,
        ring: Arc<RingCell>,
        leader: NodeId,
        replication: Replication,
    ) -> Membership {
        Membership {
            me,
            storage,
            peers,
            ring,
            configured_leader: leader,
            configured_replication: replication,
            changes: tokio::sync::Mutex::new(()),
            warned_replication: AtomicBool::new(false),
        }
    }

    /// Loads the persisted ring, or bootstraps a one-node ring when this node is
    /// the leader and has none.
    pub async fn load(&self) -> Result<()> {
        match self.storage.ring()? {
            Some(state) => {
                state.validate()?;
                if state.leader != self.configured_leader {
                    tracing::warn!(
                        persisted = %state.leader,
                        flag = %self.configured_leader,
                        "the persisted ring names another leader than --leader; following the persisted ring"
                    );
                }
                self.check_replication(&state);
                tracing::info!(
                    epoch = state.epoch,
                    members = state.members.len(),
                    "ring loaded"
                );
                self.ring.install(state);
            }
            None if self.configured_leader == self.me => {
                let state = RingState::bootstrap(self.me.clone(), self.configured_replication);
                self.storage.save_ring(&state)?;
                self.storage.durable().await?;
                tracing::info!(epoch = state.epoch, "new ring, this node is the leader");
                self.ring.install(state);
            }
            None => {
                tracing::info!(leader = %self.configured_leader, "waiting to learn the ring from the leader");
            }
        }
        Ok(())
    }

    fn check_replication(&self, state: &RingState) {
        if state.replication != self.configured_replication
            && !self.warned_replication.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                cluster = ?state.replication,
                flags = ?self.configured_replication,
                "N/W/R differ from the cluster's; following the leader's values"
            );
        }
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> NodeId {
        self.ring
            .get()
            .map(|r| r.leader().clone())
            .unwrap_or_else(|| self.configured_leader.clone())
    }

    fn leader_ring(&self) -> Result<RingState> {
        match self.ring.get() {
            Some(r) if *r.leader() == self.me => Ok(r.state().clone()),
            _ => Err(Error::NotLeader {
                leader: self.leader(),
            }),
        }
    }

    /// `add-node`: the node, already running, joins the ring.
    pub async fn add_node(&self, node: NodeId) -> Result<MembershipReply> {
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        if current.members.contains(&node) {
            return Err(Error::Membership {
                reason: format!(
                    "{node} is already a member of the ring (epoch {})",
                    current.epoch
                ),
            });
        }
        if node != self.me {
            self.peers
                .call(&node, MEMBERSHIP_TIMEOUT, |c, ctx| async move {
                    c.info(ctx).await
                })
                .await
                .map_err(|e| Error::Membership {
                    reason: format!(
                        "cannot add {node}: it does not answer ({}); start it first",
                        e.reason()
                    ),
                })?;
        }
        let next = current.with_member(node)?;
        self.commit(next, None).await
    }

    /// `remove-node`: the node leaves the ring.
    pub async fn remove_node(&self, node: NodeId) -> Result<MembershipReply> {
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        let next = current.without_member(&node)?;
        self.commit(next, Some(node)).await
    }

    /// Persists `next`, installs it here and pushes it to every member (and to
    /// `also`, a node that just left).
    async fn commit(&self, next: RingState, also: Option<NodeId>) -> Result<MembershipReply> {
        self.storage.save_ring(&next)?;
        self.storage.durable().await?;
        self.ring.install(next.clone());
        tracing::info!(epoch = next.epoch, members = ?next.members, "ring changed");
        let mut targets: Vec<NodeId> = next
            .members
            .iter()
            .filter(|n| **n != self.me)
            .cloned()
            .collect();
        targets.extend(also.filter(|n| *n != self.me));
        let pushes: FuturesUnordered<_> = targets
            .into_iter()
            .map(|node| {
                let state = next.clone();
                async move {
                    let out = self
                        .peers
                        .call(&node, MEMBERSHIP_TIMEOUT, |c, ctx| {
                            let s = state.clone();
                            async move { c.install_ring(ctx, s).await }
                        })
                        .await;
                    (node, out)
                }
            })
            .collect();
        let mut unreached = Vec::new();
        for (node, out) in pushes.collect::<Vec<_>>().await {
            if let Err(e) = out {
                tracing::warn!(%node, reason = %e.reason(), "ring not delivered; it will catch up");
                if next.members.contains(&node) {
                    unreached.push(node);
                }
            }
        }
        unreached.sort();
        Ok(MembershipReply {
            epoch: next.epoch,
            members: next.members,
            unreached,
        })
    }

    /// A ring pushed by the leader or pulled from it: installed and persisted if
    /// newer. Returns the epoch this node has afterwards.
    pub async fn install(&self, state: RingState) -> Result<u64> {
        state.validate()?;
        if state.epoch <= self.ring.epoch() {
            return Ok(self.ring.epoch());
        }
        self.storage.save_ring(&state)?;
        self.storage.durable().await?;
        self.check_replication(&state);
        let epoch = state.epoch;
        if self.ring.install(state) {
            tracing::info!(epoch, "installed ring from the leader");
        }
        Ok(self.ring.epoch())
    }

    /// The ring this node has.
    pub fn current(&self) -> Option<RingState> {
        self.ring.get().map(|r| r.state().clone())
    }

    /// Asks the leader for its ring and installs it if newer.
    pub async fn sync_with_leader(&self) -> Result<()> {
        let leader = self.leader();
        if leader == self.me {
            return Ok(());
        }
        let state = self
            .peers
            .call(&leader, MEMBERSHIP_TIMEOUT, |c, ctx| async move {
                c.fetch_ring(ctx).await
            })
            .await
            .map_err(|e| e.into_error(&leader))?;
        if let Some(state) = state {
            self.install(state).await?;
        }
        Ok(())
    }

    /// Pulls the ring from the leader every [`RING_SYNC_INTERVAL`] until `stop`.
    pub async fn run_sync(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sync_with_leader().await {
                tracing::debug!(error = %e, "ring sync with the leader failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(RING_SYNC_INTERVAL) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// This node's counters.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.me.clone(),
            epoch: self.ring.epoch(),
            keys: self.storage.key_count(),
            hints: self.storage.hint_count(),
            fsync: self.storage.fsync().to_string(),
        }
    }

    /// `status`: the ring as this node sees it and every member's liveness.
    pub async fn status(&self) -> Result<StatusReply> {
        let ring = self.ring.get().ok_or_else(|| Error::NoRing {
            leader: self.configured_leader.clone(),
        })?;
        let probes: FuturesUnordered<_> = ring
            .members()
            .iter()
            .cloned()
            .map(|node| async move {
                if node == self.me {
                    return (node, Ok(self.info()));
                }
                let out = self
                    .peers
                    .call(&node, MEMBERSHIP_TIMEOUT, |c, ctx| async move {
                        c.info(ctx).await
                    })
                    .await;
                (node, out)
            })
            .collect();
        let mut nodes: Vec<MemberStatus> = probes
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|(id, out)| match out {
                Ok(info) => MemberStatus {
                    id,
                    state: NodeState::Alive,
                    keys: Some(info.keys),
                    hints: Some(info.hints),
                    epoch: Some(info.epoch),
                },
                Err(e) => MemberStatus {
                    id,
                    // Refused connections mean the process is gone; a timeout may be
                    // a slow or partitioned node.
                    state: if e.never_delivered() && !e.reason().contains("timed out") {
                        NodeState::Down
                    } else {
                        NodeState::Suspect
                    },
                    keys: None,
                    hints: None,
                    epoch: None,
                },
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(StatusReply {
            node: self.me.clone(),
            leader: ring.leader().clone(),
            epoch: ring.epoch(),
            replication: ring.replication(),
            fsync: self.storage.fsync().to_string(),
            nodes,
        })
    }
}
