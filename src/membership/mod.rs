//! Leader-managed membership: the elected leader owns the ring; each change
//! makes a new epoch, committed by a majority of the ring's voters and then
//! pushed to every member.
//!
//! * `add-node` / `remove-node` run only at the leader, one at a time. A node must
//!   answer before it is added, under the address it runs as, and with an
//!   identity (the UUID of its data directory) no other member has: one process
//!   never counts as two replicas, and a typo does not join a ghost.
//! * A change is a transition (see [`crate::ring`] and [`crate::rebalance`]):
//!   `add-node` / `remove-node` commit an epoch that carries the target
//!   membership and answer at once; data moves in the background. The leader's
//!   [`Membership::run_transitions`] polls every node of both rings, re-sends the
//!   ring to any that lag, and settles (another epoch) once every node reports
//!   its transfer done, except a leaving node that has not answered for
//!   [`LEAVING_DOWN_POLLS`] polls in a row: a dead node can be removed, its keys
//!   come from the surviving replicas. A second change while one runs is
//!   refused, naming the running one.
//! * Every change can end. `abort-change` returns the ring to the members it
//!   had before the change ([`RingState::abort`] says why nothing acknowledged
//!   is lost); `remove-node` of a node the change adds aborts its join, and of
//!   a staying member that does not answer takes it out of the target (one
//!   that answers is a second change, refused); a node of either ring that
//!   comes back on a wiped disk is readmitted while the change runs
//!   ([`Membership::rejoin`]).
//! * The settle records how each leaving node went ([`crate::ring::Departure`]):
//!   `left` after its report, `removed` when the leader settled without it. A
//!   node that learns it was `removed` says so at error level, serves nothing,
//!   and `add-node` refuses it until its data directory is replaced.
//! * A change is durable at a majority of the voters before anyone installs
//!   it, then pushed to every node of both rings (and to a removed node at the
//!   settle, so it knows).
//!   Members persist a ring before acknowledging it. The transition lives in the
//!   committed ring, so the leader elected after one killed in the middle
//!   drives it to its settle.
//! * A member that missed a push catches up by pulling the ring from the leader:
//!   at start-up, at once when a peer shows it a newer epoch (a refusal naming
//!   the epoch, or a failure detector's probe, which carries it), and every
//!   [`RING_SYNC_INTERVAL`] as a backstop. A node never installs a ring older
//!   than the one it has.
//! * The leader's N/W/R travel in the ring; a member started with other values
//!   warns and follows the leader.
//! * A restart keeps the ring and the leader's role: a persisted ring wins over the
//!   `--leader` flag, with a warning when they disagree.
//!
//! * The leader is elected. Every ring is committed through the ring's Raft
//!   group ([`crate::consensus`]) before anyone installs it; the node its
//!   Raft instance elects commits a ring naming it (the next epoch) and
//!   takes over from there, a running change included
//!   ([`leadership`]). A leader-only command anywhere else is refused naming
//!   the leader. A member that is not a voter learns each ring from the
//!   leader's push or its own pull ([`sync`]); a deposed leader or a member
//!   whose leader is gone pulls from the other members.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::consensus::Consensus;
use crate::context::NodeContext;
use crate::error::{Error, Result};
use crate::peers::{CallError, Peers};
use crate::ring::{RingCell, RingState};
use crate::rpc::{
    AeStats, LocateReply, MemberStatus, MembershipReply, NodeInfo, NodeState, SenderStatus,
    StatusReply, TransferPhase, TransferProgress, TransitionStatus,
};
use crate::storage::Storage;
use crate::types::{Key, NodeId, Replication};

/// Where this node's part in a ring change stands (the rebalancing task's view).
pub type ProgressSource = Arc<dyn Fn() -> Option<TransferProgress> + Send + Sync>;
/// This node's anti-entropy counters (the anti-entropy task's view).
pub type AeSource = Arc<dyn Fn() -> AeStats + Send + Sync>;

/// What the background tasks report into [`NodeInfo`].
#[derive(Clone)]
pub struct Reports {
    /// This node's part in a ring change.
    pub transfer: ProgressSource,
    /// Its anti-entropy counters.
    pub anti_entropy: AeSource,
}

mod buckets;
mod leadership;
mod status;
mod sync;
mod users;

/// How often the leader polls the nodes of a running change. A quarter second
/// makes an empty ring's change settle at once while costing one small RPC per
/// node per poll, and only while a change runs.
pub const TRANSITION_POLL: Duration = Duration::from_millis(250);
/// Polls in a row (about two seconds) a leaving node must fail to answer before
/// the leader settles without its report.
pub const LEAVING_DOWN_POLLS: u32 = 8;

/// How often a node asks the leader for a newer ring when nothing told it of
/// one. A member learns of a newer epoch from the failure detector's probes
/// (each carries the sender's epoch) within a round or two and pulls at once,
/// so this is only a backstop (a node no member probes: one removed while it
/// was away); it is long because every member's pull lands on the leader,
/// which in a ring of a thousand is 33 small calls a second.
pub const RING_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// How often a node checks whether it lost its data directory and must ask
/// the leader to readmit it (a local check).
pub const REJOIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Most `info` calls `status` (or the leader's poll of a ring change) has
/// in flight at once.
pub const MAX_INFO_CALLS: usize = 64;
/// How often the Raft leader checks that the ring names it and that the
/// voters are the ones [`crate::consensus::choose_voters`] picks.
pub const LEADERSHIP_CHECK: Duration = Duration::from_millis(250);
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
    reports: Reports,
    /// Keys this node's background work could not hand off, for `status`.
    refused: Arc<crate::peers::Refusals>,
    ring_news: Arc<Notify>,
    /// When this process started (for `uptime_ms`).
    started: tokio::time::Instant,
    /// The ring's Raft group, through which every ring is committed.
    consensus: std::sync::OnceLock<Arc<Consensus>>,
    /// The node has a cluster secret (not `--insecure`): shown in `status`,
    /// and users can be managed.
    secure: bool,
}

impl Membership {
    /// Membership for node `me`, told `leader` and `replication` on the command line.
    /// `reports` give this node's part in a ring change and its anti-entropy; `ring_news` wakes the
    /// ring sync when a peer has shown a newer epoch.
    pub fn new(
        node: &NodeContext,
        leader: NodeId,
        replication: Replication,
        reports: Reports,
        ring_news: Arc<Notify>,
    ) -> Membership {
        let NodeContext {
            me,
            storage,
            peers,
            ring,
            refused,
        } = node.clone();
        Membership {
            refused,
            me,
            storage,
            peers,
            ring,
            configured_leader: leader,
            configured_replication: replication,
            changes: tokio::sync::Mutex::new(()),
            warned_replication: AtomicBool::new(false),
            reports,
            ring_news,
            started: tokio::time::Instant::now(),
            consensus: std::sync::OnceLock::new(),
            secure: false,
        }
    }

    /// The same, on a node with a cluster secret (`secure`) or `--insecure`.
    pub fn with_secure(mut self, secure: bool) -> Membership {
        self.secure = secure;
        self
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
                if let Some(other) = state.address_of(&self.storage.uuid()) {
                    if *other != self.me {
                        tracing::warn!(
                            member = %other,
                            this = %self.me,
                            "this data directory belongs to the member {other}, but the node runs as {}: \
                             it will not answer for {other}; restart it with that --host/--port",
                            self.me
                        );
                    }
                }
                tracing::info!(
                    epoch = state.epoch,
                    members = state.members.len(),
                    transition = state.transition.is_some(),
                    "ring loaded"
                );
                let removed = state.removed_at(&self.me, self.storage.uuid());
                let leads = state.leader == self.me;
                self.storage.learn_buckets(&state);
                self.ring.install(state.clone());
                if let Some(at) = removed {
                    self.warn_removed(at);
                }
                // A ring kept from before the ring had consensus: its leader
                // founds the group with it (its epoch unchanged, unless the
                // ring must learn the founder's identity: the next epoch).
                let consensus = self.consensus()?;
                if leads && !consensus.initialized().await {
                    tracing::warn!(
                        epoch = state.epoch,
                        "this ring has no consensus group yet (a data directory from an \
                         earlier version): founding it with this node as its one voter"
                    );
                    let founding = match state.identities.get(&self.me) {
                        Some(_) => state,
                        None => state.with_identity(&self.me, self.storage.uuid())?,
                    };
                    consensus.found().await?;
                    consensus.propose(None, founding).await?;
                }
            }
            None if self.configured_leader == self.me => {
                let mut state = RingState::bootstrap(self.me.clone(), self.configured_replication);
                state.record_identity(&self.me, self.storage.uuid());
                let consensus = self.consensus()?;
                consensus.found().await?;
                // Applying it saves and installs it here (Membership::install).
                consensus.propose(None, state.clone()).await?;
                tracing::info!(epoch = state.epoch, "new ring, this node is the leader");
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

    /// The leader as this node knows it: the Raft leader if this node is a
    /// voter that knows one, else the ring's.
    pub fn leader(&self) -> NodeId {
        if let Some(leader) = self.consensus.get().and_then(|c| c.leader_addr()) {
            return leader;
        }
        self.ring
            .get()
            .map(|r| r.leader().clone())
            .unwrap_or_else(|| self.configured_leader.clone())
    }

    /// The ring, if this node leads it: the ring names it and the ring's Raft
    /// group has it as its leader.
    fn leader_ring(&self) -> Result<RingState> {
        let elected = self.consensus.get().is_some_and(|c| c.is_leader());
        match self.ring.get() {
            Some(r) if *r.leader() == self.me && elected => Ok(r.state().clone()),
            _ => Err(Error::NotLeader {
                leader: self.leader(),
            }),
        }
    }

    /// `add-node`: the node, already running, joins the ring. Answers once the
    /// change has started; the data moves in the background.
    pub async fn add_node(&self, node: NodeId) -> Result<MembershipReply> {
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        if current.transition.is_none() && current.members.contains(&node) {
            return Err(Error::Membership {
                reason: format!(
                    "{node} is already a member of the ring (epoch {})",
                    current.epoch
                ),
            });
        }
        let info = self.info_of(&node).await.map_err(|e| {
            let why = e.reason();
            Error::Membership {
                reason: if why.contains("refused the connection") {
                    // The handshake failed: it is not of this ring.
                    format!(
                        "cannot add {node}: {why}; a member must be started with this ring's \
                         --cluster-secret-file"
                    )
                } else {
                    format!("cannot add {node}: it does not answer ({why}); start it first")
                },
            }
        })?;
        // Refuses a change while one runs, and a node whose identity is already a
        // member's (one process under two addresses).
        let next = current.begin_add(node.clone(), Some(info.identity), now_ms())?;
        if info.id != node {
            return Err(Error::Membership {
                reason: format!(
                    "cannot add {node}: the node answering there runs as {}; add it under \
                     the address it was started with (--host/--port)",
                    info.id
                ),
            });
        }
        // A node that left (or whose join was aborted) drops its copies once
        // it learns it is out. Until it has, what it holds is from before it
        // left: deletes finished since would come back through it.
        if let Some(d) = current.departed.get(&node) {
            if d.identity == Some(info.identity) && (info.keys > 0 || info.hints > 0) {
                return Err(Error::Membership {
                    reason: format!(
                        "cannot add {node} yet: it left the ring at epoch {} ({}) and still \
                         holds {} keys and {} hints from before; it drops them once it learns \
                         the ring (try again shortly), or delete its data directory",
                        d.epoch,
                        d.kind.name(),
                        info.keys,
                        info.hints
                    ),
                });
            }
        }
        self.commit(current.epoch, next, Vec::new()).await
    }

    /// `remove-node`: the node leaves the ring once its keys have moved. It may
    /// be down: its keys then come from the other replicas.
    ///
    /// While a change runs: a node the change adds has its join aborted (the
    /// whole change when that was all it did), and a member that stays but
    /// does not answer is taken out of the target, so a node that is gone for
    /// good never blocks the change; removing a member that answers is a
    /// second change and is refused.
    pub async fn remove_node(&self, node: NodeId) -> Result<MembershipReply> {
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        // During a change, a member that answers is no reason to change the
        // change: that is a second change, refused like any other. Only one
        // that does not answer (gone for good, as far as the leader can
        // tell) is taken out of the target.
        let staying = current.members.contains(&node) && current.target().contains(&node);
        if current.transition.is_some() && staying && self.info_of(&node).await.is_ok() {
            current.refuse_while_changing()?;
        }
        let next = current.begin_remove(&node, now_ms())?;
        if current.transition.is_some() {
            tracing::warn!(
                %node,
                epoch = next.epoch,
                change = %next.describe_change(),
                "remove-node during a ring change: the change goes on without it"
            );
        }
        self.commit(current.epoch, next, vec![node]).await
    }

    /// `abort-change`: ends the running change and returns the ring to the
    /// members it had before it (see [`RingState::abort`] for why nothing
    /// acknowledged is lost). Nodes it was adding are told they are out.
    pub async fn abort_change(&self) -> Result<MembershipReply> {
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        let next = current.abort()?;
        tracing::warn!(
            epoch = next.epoch,
            aborted = %current.describe_change(),
            "ring change aborted: the ring returns to the members it had before it"
        );
        self.commit(current.epoch, next, current.joining()).await
    }

    /// Commits `next`, computed from the ring of epoch `from`, through the
    /// ring's Raft group (applying it saves and installs it on every voter,
    /// this one included), then pushes it to every node of both of its rings
    /// (and to `also`, nodes that just left).
    async fn commit(
        &self,
        from: u64,
        next: RingState,
        also: Vec<NodeId>,
    ) -> Result<MembershipReply> {
        // The proposal runs to its end in a task of its own: a caller
        // cancelled half-way (an add-node whose deadline passes while the
        // voters answer) must not leave the leader without the ring it
        // committed (found by the simulation's leader-commit-cancelled
        // scenario, when the leader saved the ring itself).
        let consensus = self.consensus()?.clone();
        let state = next.clone();
        tokio::spawn(async move { consensus.propose(Some(from), state).await })
            .await
            .map_err(|e| Error::internal(format!("ring commit failed: {e}")))??;
        self.push_all(&next, also).await
    }

    /// Pushes the committed ring `next` to every node of both of its rings
    /// and to `also`; answers with the nodes it did not reach.
    async fn push_all(&self, next: &RingState, also: Vec<NodeId>) -> Result<MembershipReply> {
        match &next.transition {
            Some(_) => tracing::info!(
                epoch = next.epoch,
                change = %next.describe_change(),
                "ring change started"
            ),
            None => tracing::info!(epoch = next.epoch, members = ?next.members, "ring settled"),
        }
        let mut targets: Vec<NodeId> = next
            .all_nodes()
            .into_iter()
            .filter(|n| *n != self.me)
            .collect();
        targets.extend(also.into_iter().filter(|n| *n != self.me));
        targets.sort();
        targets.dedup();
        let pushes: FuturesUnordered<_> = targets
            .into_iter()
            .map(|node| {
                let state = next.clone();
                async move {
                    let out = self.push_ring(&node, state).await;
                    (node, out)
                }
            })
            .collect();
        let mut unreached = Vec::new();
        let all = next.all_nodes();
        for (node, out) in pushes.collect::<Vec<_>>().await {
            if let Err(e) = out {
                tracing::warn!(%node, reason = %e.reason(), "ring not delivered; it will catch up");
                if all.contains(&node) {
                    unreached.push(node);
                }
            }
        }
        unreached.sort();
        Ok(MembershipReply {
            epoch: next.epoch,
            joining: next.joining(),
            leaving: next.leaving(),
            members: next.target().to_vec(),
            unreached,
        })
    }

    async fn push_ring(
        &self,
        node: &NodeId,
        state: RingState,
    ) -> std::result::Result<u64, CallError> {
        self.peers
            .call(node, MEMBERSHIP_TIMEOUT, |c, ctx| {
                let s = state.clone();
                async move { c.install_ring(ctx, s).await }
            })
            .await
    }

    /// The leader's side of ring changes: while one runs, polls every node of
    /// both rings, re-sends the ring to any that lag, and settles once every
    /// node has reported its transfer done (see the module docs). Runs until
    /// `stop`.
    pub async fn run_transitions(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut silent: BTreeMap<NodeId, u32> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TRANSITION_POLL) => {}
                _ = stop.changed() => return,
            }
            let state = match self.ring.get() {
                Some(r) if *r.leader() == self.me && r.transition().is_some() => r.state().clone(),
                _ => {
                    silent.clear();
                    continue;
                }
            };
            if let Some(unreported) = self.transition_done(&state, &mut silent).await {
                if let Err(e) = self.settle(state.epoch, &unreported).await {
                    tracing::warn!(error = %e, "cannot settle the ring change yet");
                }
                silent.clear();
            }
        }
    }

    /// Polls every node of the change in `state`: once each has finished its
    /// transfer (or is a leaving node that stays silent), the leaving nodes
    /// that never reported it (they are recorded as removed while away).
    async fn transition_done(
        &self,
        state: &RingState,
        silent: &mut BTreeMap<NodeId, u32>,
    ) -> Option<Vec<NodeId>> {
        let leaving = state.leaving();
        let mut all_done = true;
        let mut unreported = Vec::new();
        for (node, out) in self.probe(&state.all_nodes()).await {
            let info = out.and_then(|info| match state.identities.get(&node) {
                Some(id) if *id != info.identity => Err(CallError::Remote(Error::Stranger {
                    node: node.clone(),
                    reason: format!("it has identity {}, the ring knows {id}", info.identity),
                })),
                _ => Ok(info),
            });
            let done = match info {
                Ok(info) => {
                    silent.remove(&node);
                    if info.epoch < state.epoch {
                        if let Err(e) = self.push_ring(&node, state.clone()).await {
                            tracing::debug!(%node, reason = %e.reason(), "ring not delivered");
                        }
                    }
                    info.transfer
                        .is_some_and(|t| t.epoch == state.epoch && t.phase == TransferPhase::Done)
                }
                Err(e) if leaving.contains(&node) => {
                    let polls = silent.entry(node.clone()).or_insert(0);
                    *polls += 1;
                    if *polls == LEAVING_DOWN_POLLS {
                        tracing::warn!(
                            %node,
                            reason = %e.reason(),
                            "the leaving node does not answer; its keys are taken from the other replicas"
                        );
                    }
                    unreported.push(node.clone());
                    *polls >= LEAVING_DOWN_POLLS
                }
                Err(_) => false,
            };
            all_done &= done;
        }
        all_done.then_some(unreported)
    }

    /// Ends the running change of epoch `epoch`; `unreported` are the leaving
    /// nodes it settles without (recorded as removed while away).
    async fn settle(&self, epoch: u64, unreported: &[NodeId]) -> Result<()> {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        if current.epoch != epoch || current.transition.is_none() {
            return Ok(());
        }
        let left = current.leaving();
        let next = current.settle(unreported)?;
        for node in unreported {
            tracing::warn!(
                %node,
                epoch = next.epoch,
                "settled without the leaving node's report: it is recorded as removed while \
                 away, and its data directory must be deleted before it is added again"
            );
        }
        self.commit(current.epoch, next, left).await?;
        drop(_one_at_a_time);
        // The members changed: the voters follow at once rather than at the
        // next leadership check (a node that left keeps a seat until then).
        if let Err(e) = self.lead().await {
            tracing::warn!(error = %e, "cannot change the ring's voters yet");
        }
        Ok(())
    }

    /// Asks `node` for its [`NodeInfo`] (this node answers locally).
    async fn info_of(&self, node: &NodeId) -> std::result::Result<NodeInfo, CallError> {
        if *node == self.me {
            return Ok(self.info());
        }
        self.peers
            .call(node, MEMBERSHIP_TIMEOUT, |c, ctx| async move {
                c.info(ctx).await
            })
            .await
    }

    /// Asks each node for its [`NodeInfo`] (this node answers locally), at
    /// most [`MAX_INFO_CALLS`] at a time: `status` in a ring of a thousand
    /// opens no thousand calls at once.
    async fn probe(
        &self,
        nodes: &[NodeId],
    ) -> Vec<(NodeId, std::result::Result<NodeInfo, CallError>)> {
        let mut out: Vec<_> = futures::stream::iter(nodes.iter().cloned())
            .map(|node| async move {
                let out = self.info_of(&node).await;
                (node, out)
            })
            .buffer_unordered(MAX_INFO_CALLS)
            .collect()
            .await;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The wall clock in milliseconds since the Unix epoch (shown to operators only).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
