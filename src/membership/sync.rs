//! How a node gets its ring: the rings its Raft group commits, the rings the
//! leader pushes and the rings it pulls (from the leader, or from the
//! members when the leader it knows is gone), and how a member that lost its
//! data directory rejoins.

use std::sync::Arc;

use super::{Membership, MEMBERSHIP_TIMEOUT, REJOIN_CHECK_INTERVAL, RING_SYNC_INTERVAL};
use crate::error::{Error, Result};
use crate::peers::CallError;
use crate::ring::RingState;
use crate::types::NodeId;

impl Membership {
    /// A ring this node's Raft group committed (or one [`Membership::learn`]
    /// let through): installed and persisted if newer. Returns the epoch
    /// this node has afterwards.
    ///
    /// Saving the ring, waiting for it to be durable and installing it in
    /// memory run to the end in a task of their own: the caller may be
    /// dropped half-way (an `install_ring` call whose deadline passes during
    /// the flush is cancelled by the RPC server), and a ring saved but never
    /// installed left the node on its old ring in memory for good, every
    /// later install refused as "not newer" than the one on disk (found by
    /// the simulation's ring-install-race scenario).
    pub async fn install(self: &Arc<Self>, state: RingState) -> Result<u64> {
        let me = self.clone();
        tokio::spawn(async move { me.install_now(state).await })
            .await
            .map_err(|e| Error::internal(format!("ring install failed: {e}")))?
    }

    /// Installs a ring that came from outside this node's Raft group: pushed
    /// by the leader to a member that does not vote, or pulled from a peer.
    /// A node that founded a ring of its own and learns a ring in which its
    /// address is a member under another identity came back on a wiped disk
    /// (a leader restarted on an empty directory founds a ring, not knowing
    /// better): it forgets its own group first, then installs the ring and
    /// rejoins it as any wiped member does ([`Membership::run_sync`]).
    pub async fn learn(self: &Arc<Self>, state: RingState) -> Result<u64> {
        if state.epoch > self.ring.epoch() && state.all_nodes().contains(&self.me) {
            let ours = self.storage.uuid();
            let wiped = state.identities.get(&self.me).is_some_and(|u| *u != ours);
            if let Some(consensus) = self.consensus.get() {
                if wiped && consensus.is_lone_founder() {
                    let _one_at_a_time = self.changes.lock().await;
                    tracing::warn!(
                        epoch = state.epoch,
                        leader = %state.leader,
                        "this node founded a ring of its own, but the ring it now learns has it \
                         as a member with another data directory: it came back on an empty one; \
                         leaving its own ring to rejoin that one"
                    );
                    consensus.reset().await?;
                    // It refills from its peers: its reads must not count
                    // until then, and keys anti-entropy brings it before it
                    // is readmitted must not make it look like a stranger.
                    self.storage.set_restoring(true)?;
                    self.storage.durable().await?;
                }
            }
        }
        self.install(state).await
    }

    async fn install_now(&self, state: RingState) -> Result<u64> {
        state.validate()?;
        if state.epoch <= self.ring.epoch() {
            return Ok(self.ring.epoch());
        }
        match self.storage.save_ring(&state) {
            Ok(()) => {}
            // A concurrent install stored a newer ring after the check above:
            // that one stays. Acknowledge once what is stored is durable (it
            // is newer than what was pushed), and make sure memory has it.
            Err(Error::RingNotNewer { current, .. }) => {
                self.storage.durable().await?;
                if self.ring.epoch() < current {
                    if let Some(stored) = self.storage.ring()? {
                        self.install_in_memory(stored);
                    }
                }
                return Ok(self.ring.epoch().max(current));
            }
            Err(e) => return Err(e),
        }
        self.storage.durable().await?;
        self.install_in_memory(state);
        Ok(self.ring.epoch())
    }

    /// Installs a saved, durable `state` in memory if it is newer there.
    fn install_in_memory(&self, state: RingState) {
        self.check_replication(&state);
        let epoch = state.epoch;
        let removed = state.removed_at(&self.me, self.storage.uuid());
        self.storage.learn_buckets(&state);
        if self.ring.install(state) {
            tracing::info!(epoch, "installed ring from the leader");
            if let Some(at) = removed {
                self.warn_removed(at);
            }
        }
    }

    /// Says, loudly, that this node was removed while it was away.
    pub(super) fn warn_removed(&self, epoch: u64) {
        tracing::error!(
            node = %self.me,
            removed_at_epoch = epoch,
            "this node was removed from the ring at epoch {epoch} while it was away: it keeps \
             its data untouched, hands nothing off and serves nothing. To add it again, stop \
             it, delete its data directory (--data-dir), start it and run add-node"
        );
    }

    /// The ring this node has.
    pub fn current(&self) -> Option<RingState> {
        self.ring.get().map(|r| r.state().clone())
    }

    /// The ring this node has, if its epoch is above `epoch`.
    pub fn current_if_newer(&self, epoch: u64) -> Option<RingState> {
        self.ring
            .get()
            .filter(|r| r.epoch() > epoch)
            .map(|r| r.state().clone())
    }

    /// Asks the leader for its ring if newer than this node's, and installs
    /// it. The leader answers an unchanged ring with nothing: every member
    /// asks every [`RING_SYNC_INTERVAL`], and the whole state grows with the
    /// ring, so the leader sent members × ring size every interval (41 KB/s
    /// at 30 idle nodes in simulation, against 15 KB/s for a member).
    pub async fn sync_with_leader(self: &Arc<Self>) -> Result<()> {
        let leader = self.leader();
        let have = self.ring.epoch();
        if leader == self.me {
            // The ring names this node, but the ring's Raft group may have
            // elected another while this one was away (paused, cut off): a
            // deposed leader asks the members instead of itself.
            if self.consensus.get().is_none_or(|c| c.is_leader()) {
                // A lone founder knows no other member: a peer that showed it
                // a newer ring (its probes carry their epoch) may have one
                // that names this node (it came back on a wiped disk).
                if let Some(peer) = self.ring.take_newer() {
                    return self.pull_from(&[peer], have, true).await;
                }
                return Ok(());
            }
            return self.pull_from_members(have).await;
        }
        let state = match self
            .peers
            .call(&leader, MEMBERSHIP_TIMEOUT, |c, ctx| async move {
                c.fetch_ring_newer(ctx, have).await
            })
            .await
        {
            Ok(state) => state,
            // The leader it knows is gone: any member may have a newer ring.
            Err(e) if e.never_delivered() || matches!(e, CallError::Unknown(_)) => {
                return self.pull_from_members(have).await;
            }
            Err(e) => return Err(e.into_error(&leader)),
        };
        if let Some(state) = state {
            self.learn(state).await?;
        }
        Ok(())
    }

    /// Asks the members of this node's ring, one at a time, for a ring newer
    /// than epoch `have`, and installs the first one offered.
    async fn pull_from_members(self: &Arc<Self>, have: u64) -> Result<()> {
        let Some(ring) = self.ring.get() else {
            // No ring at all (a member back on an empty directory whose seed
            // is gone): a member that probed it may have one naming it.
            if let Some(peer) = self.ring.take_newer() {
                return self.pull_from(&[peer], have, true).await;
            }
            return Ok(());
        };
        let others: Vec<NodeId> = ring
            .state()
            .all_nodes()
            .into_iter()
            .filter(|n| *n != self.me)
            .collect();
        drop(ring);
        self.pull_from(&others, have, false).await
    }

    /// Asks `nodes`, one at a time, for a ring newer than epoch `have`, and
    /// learns the first one offered (with `naming_me`, only a ring that has
    /// this node among its nodes: a peer of another ring is no source).
    async fn pull_from(
        self: &Arc<Self>,
        nodes: &[NodeId],
        have: u64,
        naming_me: bool,
    ) -> Result<()> {
        for node in nodes {
            let out = self
                .peers
                .call(node, MEMBERSHIP_TIMEOUT, |c, ctx| async move {
                    c.fetch_ring_newer(ctx, have).await
                })
                .await;
            if let Ok(Some(state)) = out {
                if naming_me && !state.all_nodes().contains(&self.me) {
                    continue;
                }
                self.learn(state).await?;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Pulls the ring from the leader at start-up, when woken by news of a
    /// newer epoch, and at least every [`RING_SYNC_INTERVAL`]; checks every
    /// [`REJOIN_CHECK_INTERVAL`] whether this node must rejoin. Until `stop`.
    pub async fn run_sync(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pull = true;
        let mut last_pull = tokio::time::Instant::now();
        loop {
            if pull || last_pull.elapsed() >= RING_SYNC_INTERVAL {
                if let Err(e) = self.sync_with_leader().await {
                    tracing::debug!(error = %e, "ring sync with the leader failed");
                }
                last_pull = tokio::time::Instant::now();
            }
            if let Err(e) = self.rejoin_if_wiped().await {
                tracing::warn!(error = %e, "cannot rejoin the ring yet");
            }
            tokio::select! {
                _ = tokio::time::sleep(REJOIN_CHECK_INTERVAL) => pull = false,
                _ = self.ring_news.notified() => pull = true,
                _ = stop.changed() => return,
            }
        }
    }

    /// A member that lost its data directory comes back under its address with
    /// a new, empty one: the ring knows another identity there, so its peers
    /// treat it as a stranger. If this node is such a member and holds nothing,
    /// it marks itself as refilling (durably, first: its reads must not count
    /// until anti-entropy has refilled it) and asks the leader to readmit it. A
    /// node holding data under another identity is a real stranger (a data
    /// directory moved to the wrong address) and is left alone.
    async fn rejoin_if_wiped(&self) -> Result<()> {
        let Some(ring) = self.ring.get() else {
            return Ok(());
        };
        let mine = self.storage.uuid();
        let known = match ring.identity(&self.me) {
            Some(known) if known != mine && ring.is_member(&self.me) => known,
            _ => return Ok(()),
        };
        if holds_data_of_its_own(
            self.storage.key_count(),
            self.storage.hint_count(),
            self.storage.restoring(),
        ) {
            return Ok(());
        }
        if !self.storage.restoring() {
            tracing::warn!(
                ring_knows = %known,
                this = %mine,
                "this member's data directory is new: asking the leader to readmit it; \
                 it refills from its peers by anti-entropy"
            );
            self.storage.set_restoring(true)?;
            self.storage.durable().await?;
        }
        let leader = ring.leader().clone();
        let (me, uuid) = (self.me.clone(), mine);
        let epoch = self
            .peers
            .call(&leader, MEMBERSHIP_TIMEOUT, |c, ctx| async move {
                c.rejoin(ctx, me, uuid).await
            })
            .await
            .map_err(|e| e.into_error(&leader))?;
        tracing::info!(epoch, "readmitted by the leader");
        self.ring_news.notify_one();
        Ok(())
    }

    /// Leader side of a rejoin: readmits the member `node`, which answers at its
    /// address with the new identity `identity` and holds nothing.
    pub async fn rejoin(&self, node: NodeId, identity: uuid::Uuid) -> Result<u64> {
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        if current.identities.get(&node) == Some(&identity) {
            return Ok(current.epoch);
        }
        let info = self.info_of(&node).await.map_err(|e| Error::Membership {
            reason: format!("cannot readmit {node}: it does not answer ({})", e.reason()),
        })?;
        if info.id != node || info.identity != identity {
            return Err(Error::Membership {
                reason: format!(
                    "cannot readmit {node}: the node answering there is {} with identity {}",
                    info.id, info.identity
                ),
            });
        }
        if holds_data_of_its_own(info.keys, info.hints, info.restoring) {
            return Err(Error::Membership {
                reason: format!(
                    "cannot readmit {node}: it holds {} keys and {} hints under another \
                     identity than the member's (a data directory from elsewhere?)",
                    info.keys, info.hints
                ),
            });
        }
        let next = current.readmit(&node, identity)?;
        let number = next.incarnations.get(&node).map_or(0, |i| i.number);
        tracing::warn!(
            %node,
            %identity,
            incarnation = number,
            "readmitting a member that lost its data directory; it refills by anti-entropy"
        );
        let epoch = next.epoch;
        self.commit(current.epoch, next, Vec::new()).await?;
        Ok(epoch)
    }
}

/// True if a node at a member's address under another identity holds keys or
/// hints that are not a refill: a data directory from elsewhere, a real
/// stranger, which is not readmitted. A node already refilling (it marked
/// itself, or it left a ring it founded on an empty directory) may have been
/// sent keys by anti-entropy since; those do not make it a stranger. The
/// wiped node asks to be readmitted, and the leader readmits it, by this one
/// rule.
fn holds_data_of_its_own(keys: u64, hints: u64, restoring: bool) -> bool {
    (keys > 0 || hints > 0) && !restoring
}
