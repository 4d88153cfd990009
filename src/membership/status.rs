//! What a node says about itself and the ring: its own counters
//! ([`Membership::info`], what `info` answers peers), `status` (every node's
//! liveness and counters, the running change with its progress, a removal
//! while away, keys refused for good) and `locate`. A node the failure
//! detector holds down is not called: its state comes from the detector.

use super::*;

impl Membership {
    /// Each node's state and [`NodeInfo`] for `status` and `locate`. A node the
    /// failure detector holds down is not called: its state and last answer
    /// come from the detector, so a hung node costs nothing. Every other node
    /// is asked now, so the counters are the current ones (a put just made
    /// shows in `keys`); if it does not answer, the detector's state stands.
    async fn view(
        &self,
        nodes: &[NodeId],
    ) -> Vec<(NodeId, NodeState, std::result::Result<NodeInfo, CallError>)> {
        let now = tokio::time::Instant::now();
        let mut out = Vec::with_capacity(nodes.len());
        let mut ask = Vec::new();
        for node in nodes {
            let seen = self.peers.liveness(node);
            if *node != self.me && seen.known() && seen.state(now) == NodeState::Down {
                let reason = seen.reason().unwrap_or("no answer to pings").to_string();
                out.push((
                    node.clone(),
                    NodeState::Down,
                    Err(CallError::Unknown(reason)),
                ));
            } else {
                ask.push(node.clone());
            }
        }
        for (node, result) in self.probe(&ask).await {
            let seen = self.peers.liveness(&node);
            let state = match &result {
                Ok(_) => NodeState::Alive,
                Err(_) if seen.known() => seen.state(tokio::time::Instant::now()),
                Err(e) => liveness(e),
            };
            out.push((node, state, result));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// This node's counters.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.me.clone(),
            identity: self.storage.uuid(),
            epoch: self.ring.epoch(),
            keys: self.storage.key_count(),
            tombstones: self.storage.tombstone_count(),
            hints: self.storage.hint_count(),
            fsync: self.storage.fsync().to_string(),
            transfer: (self.reports.transfer)(),
            anti_entropy: (self.reports.anti_entropy)(),
            restoring: self.storage.restoring(),
            hints_by_target: self.storage.hints_by_target(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            version: env!("CARGO_PKG_VERSION").to_string(),
            removed_at_epoch: self.removed_at(),
            refused: self.refused.list(),
            role: self
                .consensus
                .get()
                .map_or("learner", |c| c.role())
                .to_string(),
            term: self.consensus.get().map_or(0, |c| c.term()),
            voters: self
                .consensus
                .get()
                .map_or_else(Vec::new, |c| c.voter_addrs()),
        }
    }

    /// Whether this node is ready to serve as a replica (`GET /health/ready`):
    /// it has a ring, is a member of it (or joins it in the running change),
    /// was not removed while away, and is not refilling after losing its
    /// data directory. Ok: the epoch; Err: why not.
    pub fn readiness(&self) -> std::result::Result<u64, String> {
        let Some(ring) = self.ring.get() else {
            return Err(format!(
                "no ring yet: it has not learned the ring from the leader {}",
                self.configured_leader
            ));
        };
        if let Some(epoch) = self.removed_at() {
            return Err(format!("it was removed from the ring at epoch {epoch}"));
        }
        if !ring.is_member(&self.me) {
            return Err(format!(
                "it is not a member of the ring (epoch {})",
                ring.epoch()
            ));
        }
        if self.storage.restoring() {
            return Err("it is refilling after losing its data directory".into());
        }
        Ok(ring.epoch())
    }

    /// The epoch that removed this node while it was away, if it was.
    pub fn removed_at(&self) -> Option<u64> {
        self.ring
            .get()
            .and_then(|r| r.state().removed_at(&self.me, self.storage.uuid()))
    }

    /// `status`: the ring as this node sees it, every node's liveness and
    /// counters, and the running change with its progress.
    pub async fn status(&self) -> Result<StatusReply> {
        let ring = self.ring.get().ok_or_else(|| Error::NoRing {
            leader: self.configured_leader.clone(),
        })?;
        let state = ring.state().clone();
        let viewed = self.view(&state.all_nodes()).await;
        // Each node's role as the leader with the highest term sees it (a
        // node taken out of the voters no longer hears that it was); a node's
        // own word where no leader answered.
        let leader_view = viewed
            .iter()
            .filter_map(|(id, _, out)| out.as_ref().ok().map(|i| (id, i)))
            .filter(|(_, i)| i.role == "leader")
            .max_by_key(|(_, i)| i.term)
            .map(|(id, i)| (id.clone(), i.voters.clone()));
        let role_of = |id: &NodeId, own: Option<&str>| -> Option<String> {
            match &leader_view {
                Some((leader, _)) if leader == id => Some("leader".into()),
                Some((_, voters)) if voters.contains(id) => Some("voter".into()),
                Some(_) => Some("learner".into()),
                None => own.map(str::to_string),
            }
        };
        let nodes = viewed
            .iter()
            .map(|(id, seen, out)| {
                let share = ring.share(id);
                match out {
                    Ok(info) => MemberStatus {
                        id: id.clone(),
                        state: *seen,
                        keys: Some(info.keys),
                        tombstones: Some(info.tombstones),
                        hints: Some(info.hints),
                        epoch: Some(info.epoch),
                        anti_entropy: Some(info.anti_entropy.clone()),
                        restoring: Some(info.restoring),
                        share,
                        hints_by_target: Some(info.hints_by_target.clone()),
                        uptime_ms: Some(info.uptime_ms),
                        version: Some(info.version.clone()),
                        role: role_of(id, Some(&info.role)),
                    },
                    Err(_) => MemberStatus {
                        id: id.clone(),
                        state: *seen,
                        keys: None,
                        tombstones: None,
                        hints: None,
                        epoch: None,
                        anti_entropy: None,
                        restoring: None,
                        share,
                        hints_by_target: None,
                        uptime_ms: None,
                        version: None,
                        role: role_of(id, None),
                    },
                }
            })
            .collect();
        let transition = state.transition.as_ref().map(|t| {
            let probed: Vec<(NodeId, std::result::Result<NodeInfo, CallError>)> = viewed
                .iter()
                .map(|(id, _, out)| (id.clone(), out.clone()))
                .collect();
            transition_status(&state, t.started_ms, &probed)
        });
        let member = state.all_nodes().contains(&self.me);
        let mut refused = Vec::new();
        for (_, _, out) in &viewed {
            if let Ok(info) = out {
                refused.extend(info.refused.iter().cloned());
            }
        }
        let term = viewed
            .iter()
            .filter_map(|(_, _, out)| out.as_ref().ok().map(|i| i.term))
            .chain(self.consensus.get().map(|c| c.term()))
            .max()
            .unwrap_or(0);
        Ok(StatusReply {
            node: self.me.clone(),
            leader: state.leader.clone(),
            term,
            epoch: state.epoch,
            replication: state.replication,
            fsync: self.storage.fsync().to_string(),
            nodes,
            transition,
            member,
            removed_at_epoch: state.removed_at(&self.me, self.storage.uuid()),
            refused,
            secure: self.secure,
        })
    }

    /// `locate`: the key's placement in this node's ring and how this node sees
    /// each node of it.
    pub async fn locate(&self, key: Key) -> Result<LocateReply> {
        crate::types::check_key(&key)?;
        let ring = self.ring.get().ok_or_else(|| Error::NoRing {
            leader: self.configured_leader.clone(),
        })?;
        let placement = ring.placement(key.as_bytes());
        let epoch = ring.epoch();
        drop(ring);
        let nodes: Vec<NodeId> = placement
            .slots()
            .chain(&placement.fallbacks)
            .cloned()
            .collect();
        let states = self
            .view(&nodes)
            .await
            .into_iter()
            .map(|(node, state, _)| (node, state))
            .collect();
        Ok(LocateReply {
            key,
            epoch,
            replicas: placement.replicas,
            pending: placement.pending,
            fallbacks: placement.fallbacks,
            states,
        })
    }
}

/// How a failed probe reads: a refused connection (nothing listens) or a
/// stranger at the address is down; a timeout may be a slow or partitioned node.
fn liveness(e: &CallError) -> NodeState {
    match e {
        CallError::Refused(_) | CallError::Remote(Error::Stranger { .. }) => NodeState::Down,
        _ => NodeState::Suspect,
    }
}

/// The running change's progress, summed from every node's report.
fn transition_status(
    state: &RingState,
    started_ms: u64,
    probed: &[(NodeId, std::result::Result<NodeInfo, CallError>)],
) -> TransitionStatus {
    let mut senders = Vec::new();
    let (mut to_move, mut moved, mut bytes) = (0u64, 0u64, 0u64);
    for (node, out) in probed {
        let report = match out {
            Ok(info) => info.transfer.clone().filter(|t| t.epoch == state.epoch),
            Err(_) => None,
        };
        let line = match (out, report) {
            (Err(_), _) => SenderStatus {
                node: node.clone(),
                state: "unreachable".into(),
                keys_to_move: 0,
                keys_moved: 0,
                bytes_moved: 0,
            },
            (Ok(_), None) => SenderStatus {
                node: node.clone(),
                state: "waiting".into(),
                keys_to_move: 0,
                keys_moved: 0,
                bytes_moved: 0,
            },
            (Ok(_), Some(t)) => SenderStatus {
                node: node.clone(),
                state: phase_name(t.phase).into(),
                keys_to_move: t.keys_to_move,
                keys_moved: t.keys_moved,
                bytes_moved: t.bytes_moved,
            },
        };
        to_move += line.keys_to_move;
        moved += line.keys_moved;
        bytes += line.bytes_moved;
        senders.push(line);
    }
    let elapsed_ms = now_ms().saturating_sub(started_ms);
    let keys_per_sec = moved
        .saturating_mul(1000)
        .checked_div(elapsed_ms)
        .unwrap_or(0);
    let eta_s = (keys_per_sec > 0).then(|| to_move.saturating_sub(moved) / keys_per_sec);
    TransitionStatus {
        epoch: state.epoch,
        joining: state.joining(),
        leaving: state.leaving(),
        keys_to_move: to_move,
        keys_moved: moved,
        bytes_moved: bytes,
        elapsed_ms,
        keys_per_sec,
        eta_s,
        senders,
    }
}

fn phase_name(phase: TransferPhase) -> &'static str {
    match phase {
        TransferPhase::Draining => "draining",
        TransferPhase::Counting => "counting",
        TransferPhase::Sending => "sending",
        TransferPhase::Done => "done",
    }
}
