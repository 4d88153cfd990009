//! The Raft side of membership: the node's [`Consensus`], and what the
//! elected leader does (see the life of a leader election in
//! ARCHITECTURE.md). Once this node's Raft instance is the leader, it
//! commits a ring that names it (the next epoch); while it leads and no
//! change runs, it keeps the voters to [`choose_voters`] of the members.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Membership, LEADERSHIP_CHECK};
use crate::consensus::{choose_voters, raft_id, Consensus};
use crate::error::{Error, Result};
use crate::ring::RingState;
use crate::rpc::NodeState;
use crate::types::NodeId;

impl Membership {
    /// Hands membership the node's Raft instance (before [`Membership::load`]).
    pub fn set_consensus(&self, consensus: Arc<Consensus>) {
        let _ = self.consensus.set(consensus);
    }

    pub(super) fn consensus(&self) -> Result<&Arc<Consensus>> {
        self.consensus
            .get()
            .ok_or_else(|| Error::internal("the ring's consensus has not started"))
    }

    /// The identity of `node` as the ring `state` knows it (this node's own
    /// from its store).
    pub(super) fn identity_in(&self, state: &RingState, node: &NodeId) -> Option<uuid::Uuid> {
        if *node == self.me {
            return Some(self.storage.uuid());
        }
        state.identities.get(node).copied()
    }

    /// The Raft leader's side of the ring: once this node is elected, it
    /// commits a ring that names it the leader (the next epoch, which every
    /// node then learns); while it leads and no change runs, it keeps the
    /// voters to [`choose_voters`] of the members. Checks every
    /// [`LEADERSHIP_CHECK`] until `stop`.
    pub async fn run_leadership(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LEADERSHIP_CHECK) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.lead().await {
                tracing::warn!(error = %e, "cannot take up the ring's leadership yet");
            }
        }
    }

    pub(super) async fn lead(&self) -> Result<()> {
        let Some(consensus) = self.consensus.get() else {
            return Ok(());
        };
        if !consensus.is_leader() {
            return Ok(());
        }
        let Some(applied) = consensus.applied() else {
            return Ok(());
        };
        if applied.leader != self.me {
            if applied.target().binary_search(&self.me).is_err() {
                // Elected, but the running change removes this node: it
                // cannot lead the ring (the leader must stay a member), so it
                // hands the vote to the members the change keeps. Once that
                // change of the voters commits, Raft elects one of them.
                let wanted = self.wanted_voters(&applied, applied.target(), consensus);
                if wanted.is_empty() {
                    return Ok(());
                }
                tracing::warn!(
                    voters = ?wanted.values().collect::<Vec<_>>(),
                    "elected, but the running change removes this node: handing the vote \
                     to the members it keeps"
                );
                let keep = self.raft_ids(&applied, &applied.all_nodes());
                return consensus.set_voters(&wanted, &keep).await;
            }
            let _one_at_a_time = self.changes.lock().await;
            let next = applied.with_leader(self.me.clone(), self.storage.uuid())?;
            tracing::warn!(
                epoch = next.epoch,
                term = consensus.term(),
                previous = %applied.leader,
                "elected leader of the ring"
            );
            self.commit(applied.epoch, next, Vec::new()).await?;
            return Ok(());
        }
        if applied.transition.is_some() {
            return Ok(());
        }
        let wanted = self.wanted_voters(&applied, &applied.members, consensus);
        let keep = self.raft_ids(&applied, &applied.members);
        let same = wanted.keys().copied().collect::<BTreeSet<_>>() == consensus.voters();
        let stale = consensus.learners().iter().any(|id| !keep.contains(id));
        if wanted.is_empty() || (same && !stale) {
            return Ok(());
        }
        tracing::info!(voters = ?wanted.values().collect::<Vec<_>>(), "changing the ring's voters");
        consensus.set_voters(&wanted, &keep).await
    }

    /// The Raft ids of `nodes` whose identity `applied` knows.
    fn raft_ids(&self, applied: &RingState, nodes: &[NodeId]) -> BTreeSet<u128> {
        nodes
            .iter()
            .filter_map(|m| self.identity_in(applied, m))
            .map(raft_id)
            .collect()
    }

    /// The voters [`choose_voters`] picks from `among` (the members whose
    /// identity `applied` knows and the failure detector does not hold
    /// down), the current ones kept first and this node, the leader, always
    /// among them; by Raft id. A member held down is left out while others
    /// can take its seat: a voter that cannot answer only makes the
    /// majority harder to reach.
    fn wanted_voters(
        &self,
        applied: &RingState,
        among: &[NodeId],
        consensus: &Consensus,
    ) -> BTreeMap<u128, NodeId> {
        let known: Vec<NodeId> = among
            .iter()
            .filter(|m| self.identity_in(applied, m).is_some())
            .filter(|m| **m == self.me || self.peers.state(m) != NodeState::Down)
            .cloned()
            .collect();
        let current_ids = consensus.voters();
        let current: BTreeSet<NodeId> = known
            .iter()
            .filter(|m| {
                self.identity_in(applied, m)
                    .is_some_and(|u| current_ids.contains(&raft_id(u)))
            })
            .cloned()
            .collect();
        let mut chosen = choose_voters(&known, &current);
        if known.contains(&self.me) && !chosen.contains(&self.me) {
            // The leader keeps its seat (a leader that voted itself out would
            // step down and cost the ring an election): it takes the last.
            if let Some(last) = chosen.iter().next_back().cloned() {
                chosen.remove(&last);
            }
            chosen.insert(self.me.clone());
        }
        chosen
            .into_iter()
            .filter_map(|m| self.identity_in(applied, &m).map(|u| (raft_id(u), m)))
            .collect()
    }
}
