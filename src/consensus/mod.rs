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
//! # Status
//!
//! This module holds the replicated state machine and its storage
//! ([`store`]), checked by openraft's own storage suite. Membership
//! ([`crate::membership`]) does not use it yet: the ring is still committed by
//! the leader named at start-up.

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
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// The shortest wait for a heartbeat before a follower stands for election;
/// each follower waits a random time between this and
/// [`ELECTION_TIMEOUT_MAX`], so that one usually stands alone.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(750);
/// The longest such wait.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1500);

/// This node's part in the ring's Raft group: the running Raft instance and
/// the ring its state machine applied last.
pub struct Consensus {
    /// The Raft instance (idle until the node is initialised as the founder
    /// or made a voter by the leader).
    pub raft: openraft::Raft<RingRaft>,
    /// This node's Raft id ([`raft_id`]).
    pub id: u128,
    me: NodeId,
    applied: Arc<Mutex<Option<RingState>>>,
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
        let on_applied: store::OnRing = Arc::new(move |ring: &RingState| {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring.clone());
            if let Some(f) = &on_ring {
                f(ring);
            }
        });
        let log = store::LogStore::open(storage.clone())?;
        let machine = store::RingMachine::open(storage, Some(on_applied))?;
        *applied.lock().unwrap_or_else(|p| p.into_inner()) = machine.machine().ring.clone();
        let raft = openraft::Raft::new(id, Arc::new(config), net::RaftNet { peers }, log, machine)
            .await
            .map_err(|e| Error::internal(format!("raft did not start: {e}")))?;
        Ok(Consensus {
            raft,
            id,
            me,
            applied,
        })
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
        Ok(self.raft.append_entries(req).await)
    }

    /// Answers a candidate's vote request addressed to `to`.
    pub async fn vote(
        &self,
        to: u128,
        req: VoteRequest<u128>,
    ) -> Result<RaftAnswer<VoteResponse<u128>>> {
        self.check(to)?;
        Ok(self.raft.vote(req).await)
    }

    /// Takes a chunk of the leader's snapshot addressed to `to`.
    pub async fn snapshot(
        &self,
        to: u128,
        req: InstallSnapshotRequest<RingRaft>,
    ) -> Result<RaftAnswer<InstallSnapshotResponse<u128>, openraft::error::InstallSnapshotError>>
    {
        self.check(to)?;
        Ok(self.raft.install_snapshot(req).await)
    }

    /// Stops the Raft instance (before the store closes).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
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
