//! The ring under consensus: the ring state is the state machine of a Raft
//! group ([openraft](https://docs.rs/openraft/0.9)), so that the ring outlives
//! the node that leads it.
//!
//! # What must hold
//!
//! * **One history of rings.** Every ring a node installs was committed by a
//!   majority of the voters, and the committed rings form one sequence of
//!   strictly increasing epochs. A command carries the ring it proposes *and*
//!   the epoch it was computed from ([`RingCmd::Propose`]); the state machine
//!   applies it only if that epoch is still the applied one, and answers
//!   [`Applied::Stale`] otherwise. So a leader that computed a change on a ring
//!   it had not yet caught up with (just elected, its state machine behind the
//!   log) cannot overwrite a newer ring: it re-reads and proposes again.
//! * **A bounded set of voters.** Up to [`MAX_VOTERS`] members vote, chosen
//!   deterministically from the settled members ([`choose_voters`]); every
//!   other member *learns*: it gets each committed ring pushed by the leader or
//!   pulls it (the ring push and pull that existed before consensus), and
//!   never takes part in Raft. A leader's heartbeats therefore go to at most
//!   four followers however large the ring, and losing any minority of the
//!   voters leaves a ring that can still change.
//! * **Durable before answered.** Raft's log entries and votes live in the
//!   node's sled store (trees `raft_log` and `raft_state`) and are answered
//!   only once [`Storage::durable`] says so, under the node's `--fsync`.
//!   With `--fsync never` a crash can lose a vote, and a node that forgets
//!   its vote can vote twice in one term: that mode gives up the ring's
//!   safety on a crash as it gives up acknowledged writes.
//! * **An identity is never reused.** A node's Raft id is the UUID of its data
//!   directory ([`raft_id`]). A node that comes back on a wiped disk is a new
//!   Raft node, as it is a new identity to the ring; Raft forbids reusing an
//!   id whose log was lost.
//! * **Time and chance come from the node's seams.** openraft reads tokio's
//!   clock, and its election timeouts draw from [`NodeRuntime`], which draws
//!   from [`crate::runtime::random_u64`]: seeded in the simulation, so a seed
//!   still replays.
//!
//! # Where it is used
//!
//! Membership ([`crate::membership`]) commits every ring through
//! [`Consensus::propose`] and takes up the leadership when this node is
//! elected; the state machine's apply hands each committed ring to the node,
//! which installs it. The replicated state machine and its storage
//! ([`store`]) pass openraft's own storage suite.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::peers::Peers;
use crate::ring::RingState;
use crate::storage::Storage;
use crate::types::NodeId;

pub mod net;
pub mod store;

use net::RaftAnswer;

#[cfg(test)]
mod tests;

/// The most members that vote on the ring. Five voters survive two lost at
/// once; more would only slow every commit.
pub const MAX_VOTERS: usize = 5;

openraft::declare_raft_types!(
    /// The type configuration of the ring's Raft group.
    pub RingRaft:
        D = RingCmd,
        R = Applied,
        NodeId = u128,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<RingRaft>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = NodeRuntime,
);

/// A command to the ring's state machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RingCmd {
    /// Install `next`, computed from the ring of epoch `from` (`None`: from
    /// no ring at all, the founding ring).
    Propose { from: Option<u64>, next: RingState },
}

/// What applying one log entry did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The ring of this epoch is now the state machine's.
    Ring { epoch: u64 },
    /// The command was computed from another ring than the applied one, of
    /// this epoch (`None`: none yet); nothing changed.
    Stale { applied: Option<u64> },
    /// The entry carried no command (a leader's first entry, or a change of
    /// the voters).
    Nothing,
}

/// How often the leader tells its followers it is alive. Failover takes an
/// election timeout after the last heartbeat, plus a vote.
pub const HEARTBEAT: Duration = Duration::from_millis(300);
/// The shortest wait for a heartbeat before a follower stands for election;
/// each follower waits a random time between this and
/// [`ELECTION_TIMEOUT_MAX`], so that one usually stands alone.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(1500);
/// The longest such wait.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(3000);

/// How long a ring proposal, or a change of the voters, may wait for a
/// majority of the voters.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// This node's part in the ring's Raft group: the running Raft instance and
/// the ring its state machine applied last.
pub struct Consensus {
    /// The Raft instance (idle until the node is initialised as the founder
    /// or made a voter by the leader); replaced only by [`Consensus::reset`].
    raft: std::sync::RwLock<openraft::Raft<RingRaft>>,
    /// This node's Raft id ([`raft_id`]).
    pub id: u128,
    me: NodeId,
    applied: Arc<Mutex<Option<RingState>>>,
    /// What a new Raft instance is built from (see [`Consensus::reset`]).
    config: Arc<openraft::Config>,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    on_applied: store::OnRing,
}

impl Consensus {
    /// Starts the node's Raft instance over the log and state machine kept in
    /// `storage`, talking to the others through `peers`. `on_ring` is called
    /// with each ring the state machine applies.
    pub async fn start(
        me: NodeId,
        storage: Arc<Storage>,
        peers: Arc<Peers>,
        on_ring: Option<store::OnRing>,
    ) -> Result<Consensus> {
        let id = raft_id(storage.uuid());
        let config = openraft::Config {
            cluster_name: "dynamo-ring".into(),
            heartbeat_interval: HEARTBEAT.as_millis() as u64,
            election_timeout_min: ELECTION_TIMEOUT_MIN.as_millis() as u64,
            election_timeout_max: ELECTION_TIMEOUT_MAX.as_millis() as u64,
            install_snapshot_timeout: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::internal(format!("raft config: {e}")))?;
        let applied = Arc::new(Mutex::new(None));
        let seen = applied.clone();
        let on_applied: store::OnRing = Arc::new(move |ring: RingState| {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring.clone());
            match &on_ring {
                Some(f) => f(ring),
                None => Box::pin(async {}),
            }
        });
        let config = Arc::new(config);
        let raft = Self::raft_over(id, &config, &storage, &peers, &on_applied, &applied).await?;
        Ok(Consensus {
            raft: std::sync::RwLock::new(raft),
            id,
            me,
            applied,
            config,
            storage,
            peers,
            on_applied,
        })
    }

    /// A Raft instance over the log and state machine in `storage`.
    async fn raft_over(
        id: u128,
        config: &Arc<openraft::Config>,
        storage: &Arc<Storage>,
        peers: &Arc<Peers>,
        on_applied: &store::OnRing,
        applied: &Mutex<Option<RingState>>,
    ) -> Result<openraft::Raft<RingRaft>> {
        let log = store::LogStore::open(storage.clone())?;
        let machine = store::RingMachine::open(storage.clone(), Some(on_applied.clone()))?;
        *applied.lock().unwrap_or_else(|p| p.into_inner()) = machine.machine().ring.clone();
        let net = net::RaftNet {
            peers: peers.clone(),
        };
        openraft::Raft::new(id, config.clone(), net, log, machine)
            .await
            .map_err(|e| Error::internal(format!("raft did not start: {e}")))
    }

    /// The running Raft instance (a handle: cheap to clone).
    pub fn raft(&self) -> openraft::Raft<RingRaft> {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True if this node founded its group and no other node ever joined it:
    /// its one voter is this node.
    pub fn is_lone_founder(&self) -> bool {
        let voters = self.voters();
        voters.len() == 1 && voters.contains(&self.id)
    }

    /// Forgets this node's group: stops the Raft instance, deletes its log,
    /// vote and state machine, and starts an empty one that waits to be made
    /// a voter. Only for a lone founder whose ring is being replaced by the
    /// ring of another group (a node that came back on a wiped disk at a
    /// member's address founded a ring of its own before it learned it is a
    /// member): joining the other group with this group's log would mix two
    /// histories under one log index.
    pub async fn reset(&self) -> Result<()> {
        let old = self.raft();
        if let Err(e) = old.shutdown().await {
            tracing::warn!(error = %e, "the old raft instance did not stop cleanly");
        }
        let (log, state) = self.storage.raft_trees()?;
        log.clear()?;
        state.clear()?;
        self.storage.durable().await?;
        let raft = Self::raft_over(
            self.id,
            &self.config,
            &self.storage,
            &self.peers,
            &self.on_applied,
            &self.applied,
        )
        .await?;
        *self.raft.write().unwrap_or_else(|p| p.into_inner()) = raft;
        Ok(())
    }

    /// The ring the state machine applied last.
    pub fn applied(&self) -> Option<RingState> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn check(&self, to: u128) -> Result<()> {
        if to == self.id {
            return Ok(());
        }
        Err(Error::Stranger {
            node: self.me.clone(),
            reason: format!(
                "a Raft message for {to:032x} reached the node whose Raft id is {:032x}",
                self.id
            ),
        })
    }

    /// Answers the leader's AppendEntries addressed to `to`.
    pub async fn append(
        &self,
        to: u128,
        req: AppendEntriesRequest<RingRaft>,
    ) -> Result<RaftAnswer<AppendEntriesResponse<u128>>> {
        self.check(to)?;
        Ok(self.raft().append_entries(req).await)
    }

    /// Answers a candidate's vote request addressed to `to`.
    pub async fn vote(
        &self,
        to: u128,
        req: VoteRequest<u128>,
    ) -> Result<RaftAnswer<VoteResponse<u128>>> {
        self.check(to)?;
        Ok(self.raft().vote(req).await)
    }

    /// Takes a chunk of the leader's snapshot addressed to `to`.
    pub async fn snapshot(
        &self,
        to: u128,
        req: InstallSnapshotRequest<RingRaft>,
    ) -> Result<RaftAnswer<InstallSnapshotResponse<u128>, openraft::error::InstallSnapshotError>>
    {
        self.check(to)?;
        Ok(self.raft().install_snapshot(req).await)
    }

    /// True while this node is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.raft().metrics().borrow().state == openraft::ServerState::Leader
    }

    /// The current term as this node knows it.
    pub fn term(&self) -> u64 {
        self.raft().metrics().borrow().current_term
    }

    /// This node's part in the group: `leader`, `voter`, or `learner` (a node
    /// that does not vote: it learns the ring from the leader's pushes).
    pub fn role(&self) -> &'static str {
        if self.is_leader() {
            "leader"
        } else if self.voters().contains(&self.id) {
            "voter"
        } else {
            "learner"
        }
    }

    /// The Raft leader's address, if this node knows one.
    pub fn leader_addr(&self) -> Option<NodeId> {
        let m = self.raft().metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .and_then(|n| n.addr.parse().ok())
    }

    /// The addresses of the voters, as this node knows them.
    pub fn voter_addrs(&self) -> Vec<NodeId> {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id))
            .filter_map(|n| n.addr.parse().ok())
            .collect()
    }

    /// The Raft ids of the voters, as this node knows them.
    pub fn voters(&self) -> BTreeSet<u128> {
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// True once the group has a membership (this node founded it or was
    /// made a voter; a restart keeps it).
    pub async fn initialized(&self) -> bool {
        self.raft().is_initialized().await.unwrap_or(false)
    }

    /// Founds the group with this node as its one voter, and waits (up to
    /// [`PROPOSE_TIMEOUT`]) until it leads it.
    pub async fn found(&self) -> Result<()> {
        let members = std::collections::BTreeMap::from([(
            self.id,
            openraft::BasicNode::new(self.me.to_string()),
        )]);
        if let Err(e) = self.raft().initialize(members).await {
            // Already initialised (a restart): nothing to do.
            tracing::debug!(error = %e, "raft already initialised");
        }
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        while !self.is_leader() {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "electing this node as the founding leader of the ring".into(),
                    millis: PROPOSE_TIMEOUT.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Commits `next`, computed from the ring of epoch `from`, through the
    /// group: answers once a majority of the voters has it and this node has
    /// applied it. A node that is not the leader refuses, naming the leader; a
    /// proposal computed from another ring than the applied one is refused;
    /// one that no majority answers within [`PROPOSE_TIMEOUT`] is of unknown
    /// outcome (it may still commit).
    pub async fn propose(&self, from: Option<u64>, next: RingState) -> Result<u64> {
        let epoch = next.epoch;
        let raft = self.raft();
        let write = raft.client_write(RingCmd::Propose { from, next });
        match tokio::time::timeout(PROPOSE_TIMEOUT, write).await {
            Err(_) => Err(Error::Timeout {
                what: format!(
                    "committing the ring of epoch {epoch}: no majority of the ring's voters \
                     answered; it may or may not take effect"
                ),
                millis: PROPOSE_TIMEOUT.as_millis() as u64,
            }),
            Ok(Ok(reply)) => match reply.data {
                Applied::Ring { epoch } => Ok(epoch),
                Applied::Stale { applied } => Err(Error::Membership {
                    reason: format!(
                        "the ring changed while this change was computed (now at epoch {}); \
                         try again",
                        applied.unwrap_or(0)
                    ),
                }),
                Applied::Nothing => Err(Error::internal("a ring proposal applied as nothing")),
            },
            Ok(Err(e)) => match e.forward_to_leader() {
                Some(f) => match f.leader_node.as_ref().and_then(|n| n.addr.parse().ok()) {
                    Some(leader) => Err(Error::NotLeader { leader }),
                    None => Err(Error::Membership {
                        reason: "the ring's voters are electing a leader; try again shortly".into(),
                    }),
                },
                None => Err(Error::internal(format!("raft: {e}"))),
            },
        }
    }

    /// The Raft ids of the nodes that follow the log without voting.
    pub fn learners(&self) -> BTreeSet<u128> {
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .learner_ids()
            .collect()
    }

    /// Makes `voters` (Raft id to address) the group's voters: each new one
    /// first catches up as a Raft learner, then one membership change swaps
    /// the sets. A voter taken out stays a learner while it is in `keep` (the
    /// ring's nodes): it goes on hearing the log, so it knows it no longer
    /// votes and never stands for election with the voters it had. Learners
    /// not in `keep` are dropped. Leader only.
    pub async fn set_voters(
        &self,
        voters: &std::collections::BTreeMap<u128, NodeId>,
        keep: &BTreeSet<u128>,
    ) -> Result<()> {
        let current = self.voters();
        let raft = self.raft();
        let ids: BTreeSet<u128> = voters.keys().copied().collect();
        if ids != current {
            for (id, addr) in voters {
                if current.contains(id) {
                    continue;
                }
                let node = openraft::BasicNode::new(addr.to_string());
                let add = raft.add_learner(*id, node, true);
                match tokio::time::timeout(PROPOSE_TIMEOUT, add).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(Error::internal(format!("adding voter {addr}: {e}"))),
                    Err(_) => {
                        return Err(Error::Timeout {
                            what: format!("bringing {addr} up to date as a voter"),
                            millis: PROPOSE_TIMEOUT.as_millis() as u64,
                        })
                    }
                }
            }
            self.change(openraft::ChangeMembers::ReplaceAllVoters(ids), true)
                .await?;
        }
        let stale: BTreeSet<u128> = self
            .learners()
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        if !stale.is_empty() {
            self.change(openraft::ChangeMembers::RemoveNodes(stale), false)
                .await?;
        }
        Ok(())
    }

    async fn change(
        &self,
        change: openraft::ChangeMembers<u128, openraft::BasicNode>,
        retain: bool,
    ) -> Result<()> {
        let raft = self.raft();
        match tokio::time::timeout(PROPOSE_TIMEOUT, raft.change_membership(change, retain)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::internal(format!("changing the voters: {e}"))),
            Err(_) => Err(Error::Timeout {
                what: "changing the ring's voters".into(),
                millis: PROPOSE_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// Stops the Raft instance (before the store closes).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft().shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

/// The Raft id of a node: the UUID of its data directory, as a number.
pub fn raft_id(identity: uuid::Uuid) -> u128 {
    identity.as_u128()
}

/// The voters among `members` (the settled ring's), given the `current`
/// voters: every current voter that is still a member, then members in order
/// until there are [`MAX_VOTERS`], and an odd number of them (an even number
/// tolerates no more failures than one fewer, and needs more answers). A
/// current voter is kept first so that a change of the voters moves as few
/// seats as it can; the order of the members decides the rest, so every node
/// that computes it gets the same set.
pub fn choose_voters(members: &[NodeId], current: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let mut sorted: Vec<&NodeId> = members.iter().collect();
    sorted.sort();
    sorted.dedup();
    let want = match sorted.len().min(MAX_VOTERS) {
        n if n % 2 == 0 && n > 0 => n - 1,
        n => n,
    };
    let mut out: BTreeSet<NodeId> = sorted
        .iter()
        .filter(|m| current.contains(**m))
        .take(want)
        .map(|m| (*m).clone())
        .collect();
    for m in sorted {
        if out.len() >= want {
            break;
        }
        out.insert(m.clone());
    }
    out
}

/// openraft's async runtime for a node: tokio's, except that the election
/// timeouts draw from [`crate::runtime::random_u64`] (seeded in the
/// simulation) instead of the thread's OS-seeded generator.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct NodeRuntime;

/// The generator [`NodeRuntime`] hands openraft.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeRng;

impl rand_core_06::RngCore for NodeRng {
    fn next_u32(&mut self) -> u32 {
        (crate::runtime::random_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        crate::runtime::random_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = crate::runtime::random_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl openraft::AsyncRuntime for NodeRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: openraft::OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = openraft::TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: std::future::Future<Output = R> + openraft::OptionalSend> =
        tokio::time::Timeout<T>;
    type ThreadLocalRng = NodeRng;
    type OneshotSender<T: openraft::OptionalSend> = openraft::async_runtime::TokioOneShotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: openraft::OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: std::future::Future + openraft::OptionalSend + 'static,
        T::Output: openraft::OptionalSend + 'static,
    {
        tokio::spawn(future)
    }

    fn sleep(duration: std::time::Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: std::future::Future<Output = R> + openraft::OptionalSend>(
        duration: std::time::Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: std::future::Future<Output = R> + openraft::OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        NodeRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: openraft::OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (openraft::async_runtime::TokioOneShotSender(tx), rx)
    }
}
