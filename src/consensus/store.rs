//! Raft's log, vote and state machine in the node's sled store.
//!
//! * `raft_log`: one record per log entry, keyed by its index (8 bytes, big
//!   endian, so sled's order is the log's), the entry in bincode.
//! * `raft_state`: the vote, the committed log id, the last purged log id, and
//!   the state machine (the last applied log id, the membership it saw last,
//!   the applied ring) with the snapshot built from it.
//!
//! Every write returns, or calls openraft back, only once the store says it
//! is durable ([`Storage::durable`], under the node's `--fsync`). A purge
//! records the purged id before it deletes entries, so a crash between the two
//! leaves entries below the purge point, which reads skip, never a gap.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::{Applied, RingCmd, RingRaft};
use crate::ring::RingState;
use crate::storage::Storage;

type Entry = openraft::Entry<RingRaft>;
type Membership = StoredMembership<u128, openraft::BasicNode>;
type Error = StorageError<u128>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";
const MACHINE: &[u8] = b"machine";
const SNAPSHOT: &[u8] = b"snapshot";

/// A storage failure as openraft takes it.
fn fail(e: StorageIOError<u128>) -> Error {
    Error::from(e)
}

fn io(e: impl ToString) -> AnyError {
    AnyError::error(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    bincode::serialize(v).map_err(io)
}

fn decode<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, AnyError> {
    bincode::deserialize(raw).map_err(io)
}

/// A log entry, as this version writes it or as the version before users
/// were part of the ring wrote it (read, then converted: see
/// [`crate::ring::RingStateV4`]). A ring encodes last in an entry, so an old
/// entry never decodes as a new one: it ends where the users would begin.
fn decode_entry(raw: &[u8]) -> Result<Entry, AnyError> {
    match bincode::deserialize::<Entry>(raw) {
        Ok(e) => Ok(e),
        Err(new) => match bincode::deserialize::<legacy::EntryV5>(raw) {
            Ok(old) => Ok(old.into()),
            Err(_) => match bincode::deserialize::<legacy::EntryV4>(raw) {
                Ok(old) => Ok(old.into()),
                Err(_) => Err(io(new)),
            },
        },
    }
}

/// The state machine, in this version's encoding or the one before users.
fn decode_machine(raw: &[u8]) -> Result<Machine, AnyError> {
    match bincode::deserialize::<Machine>(raw) {
        Ok(m) => Ok(m),
        Err(new) => match bincode::deserialize::<legacy::MachineV5>(raw) {
            Ok(old) => Ok(Machine {
                applied: old.applied,
                membership: old.membership,
                ring: old.ring.map(RingState::from),
            }),
            Err(_) => match bincode::deserialize::<legacy::MachineV4>(raw) {
                Ok(old) => Ok(Machine {
                    applied: old.applied,
                    membership: old.membership,
                    ring: old.ring.map(RingState::from),
                }),
                Err(_) => Err(io(new)),
            },
        },
    }
}

/// The encodings of the versions before users (V4) and before buckets (V5)
/// were part of the ring.
mod legacy {
    use super::*;
    use crate::ring::{RingStateV4, RingStateV5};

    #[derive(Deserialize)]
    pub struct EntryV4 {
        log_id: LogId<u128>,
        payload: PayloadV4,
    }

    #[derive(Deserialize)]
    enum PayloadV4 {
        Blank,
        Normal(CmdV4),
        Membership(openraft::Membership<u128, openraft::BasicNode>),
    }

    #[derive(Deserialize)]
    enum CmdV4 {
        Propose {
            from: Option<u64>,
            next: RingStateV4,
        },
    }

    impl From<EntryV4> for Entry {
        fn from(e: EntryV4) -> Entry {
            Entry {
                log_id: e.log_id,
                payload: match e.payload {
                    PayloadV4::Blank => EntryPayload::Blank,
                    PayloadV4::Normal(CmdV4::Propose { from, next }) => {
                        EntryPayload::Normal(RingCmd::Propose {
                            from,
                            next: next.into(),
                        })
                    }
                    PayloadV4::Membership(m) => EntryPayload::Membership(m),
                },
            }
        }
    }

    #[derive(Deserialize)]
    pub struct MachineV4 {
        pub applied: Option<LogId<u128>>,
        pub membership: Membership,
        pub ring: Option<RingStateV4>,
    }

    #[derive(Deserialize)]
    pub struct EntryV5 {
        log_id: LogId<u128>,
        payload: PayloadV5,
    }

    #[derive(Deserialize)]
    enum PayloadV5 {
        Blank,
        Normal(CmdV5),
        Membership(openraft::Membership<u128, openraft::BasicNode>),
    }

    #[derive(Deserialize)]
    enum CmdV5 {
        Propose {
            from: Option<u64>,
            next: RingStateV5,
        },
    }

    impl From<EntryV5> for Entry {
        fn from(e: EntryV5) -> Entry {
            Entry {
                log_id: e.log_id,
                payload: match e.payload {
                    PayloadV5::Blank => EntryPayload::Blank,
                    PayloadV5::Normal(CmdV5::Propose { from, next }) => {
                        EntryPayload::Normal(RingCmd::Propose {
                            from,
                            next: next.into(),
                        })
                    }
                    PayloadV5::Membership(m) => EntryPayload::Membership(m),
                },
            }
        }
    }

    #[derive(Deserialize)]
    pub struct MachineV5 {
        pub applied: Option<LogId<u128>>,
        pub membership: Membership,
        pub ring: Option<RingStateV5>,
    }
}

/// Waits until what was written is durable.
async fn durable(
    storage: &Storage,
    fail: fn(AnyError) -> StorageIOError<u128>,
) -> Result<(), Error> {
    storage.durable().await.map_err(|e| fail(io(e)).into())
}

/// Raft's log and vote.
#[derive(Clone)]
pub struct LogStore {
    storage: Arc<Storage>,
    log: sled::Tree,
    state: sled::Tree,
}

impl LogStore {
    /// The log and vote kept in `storage`.
    pub fn open(storage: Arc<Storage>) -> crate::error::Result<LogStore> {
        let (log, state) = storage.raft_trees()?;
        Ok(LogStore {
            storage,
            log,
            state,
        })
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, AnyError> {
        match self.state.get(key).map_err(io)? {
            Some(raw) => Ok(Some(decode(&raw)?)),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, key: &[u8], v: &T) -> Result<(), AnyError> {
        self.state.insert(key, encode(v)?).map_err(io)?;
        Ok(())
    }

    fn last_entry(&self) -> Result<Option<Entry>, AnyError> {
        match self.log.last().map_err(io)? {
            Some((_, raw)) => Ok(Some(decode_entry(&raw)?)),
            None => Ok(None),
        }
    }
}

fn bound_key(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<RingRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, Error> {
        let purged: Option<LogId<u128>> = self
            .get(PURGED)
            .map_err(|e| fail(StorageIOError::read_logs(e)))?;
        let range = (bound_key(range.start_bound()), bound_key(range.end_bound()));
        let mut out = Vec::new();
        for item in self.log.range::<[u8; 8], _>(range) {
            let (_, raw) = item.map_err(|e| fail(StorageIOError::read_logs(io(e))))?;
            let entry = decode_entry(&raw).map_err(|e| fail(StorageIOError::read_logs(e)))?;
            // Entries a purge recorded but had not yet deleted are gone.
            if purged.is_some_and(|p| entry.log_id.index <= p.index) {
                continue;
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<RingRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<RingRaft>, Error> {
        let bad = |e| fail(StorageIOError::read_logs(e));
        let purged: Option<LogId<u128>> = self.get(PURGED).map_err(bad)?;
        let last = match self.last_entry().map_err(bad)? {
            Some(e) if purged.is_none_or(|p| e.log_id.index > p.index) => Some(e.log_id),
            _ => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u128>) -> Result<(), Error> {
        self.put(VOTE, vote)
            .map_err(|e| fail(StorageIOError::write_vote(e)))?;
        durable(&self.storage, StorageIOError::write_vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u128>>, Error> {
        self.get(VOTE)
            .map_err(|e| fail(StorageIOError::read_vote(e)))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u128>>) -> Result<(), Error> {
        // Not waited on: a committed id lost to a crash is learnt again from
        // the leader, and openraft does not rely on it being durable.
        self.put(COMMITTED, &committed)
            .map_err(|e| fail(StorageIOError::write(e)))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u128>>, Error> {
        Ok(self
            .get::<Option<LogId<u128>>>(COMMITTED)
            .map_err(|e| fail(StorageIOError::read(e)))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<RingRaft>) -> Result<(), Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let raw = encode(&entry).map_err(|e| fail(StorageIOError::write_logs(e)))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), raw);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| fail(StorageIOError::write_logs(io(e))))?;
        let outcome = self
            .storage
            .durable()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()));
        let failed = outcome.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(outcome);
        match failed {
            Some(e) => Err(fail(StorageIOError::write_logs(io(e)))),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u128>) -> Result<(), Error> {
        let bad = |e| fail(StorageIOError::write_logs(io(e)));
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            let (k, _) = item.map_err(bad)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(bad)?;
        durable(&self.storage, StorageIOError::write_logs).await
    }

    async fn purge(&mut self, log_id: LogId<u128>) -> Result<(), Error> {
        // The purge point first: until the entries are gone, reads skip them.
        self.put(PURGED, &log_id)
            .map_err(|e| fail(StorageIOError::write_logs(e)))?;
        durable(&self.storage, StorageIOError::write_logs).await?;
        let bad = |e| fail(StorageIOError::write_logs(io(e)));
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_id.index.to_be_bytes()) {
            let (k, _) = item.map_err(bad)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(bad)?;
        Ok(())
    }
}

/// What the state machine holds: the applied ring and where in the log it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub applied: Option<LogId<u128>>,
    pub membership: Membership,
    pub ring: Option<RingState>,
}

impl Machine {
    /// Applies one command (see the module essay of [`crate::consensus`]).
    pub fn apply(&mut self, cmd: &RingCmd) -> Applied {
        match cmd {
            RingCmd::Propose { from, next } => {
                let applied = self.ring.as_ref().map(|r| r.epoch);
                if applied != *from || from.is_some_and(|f| next.epoch <= f) {
                    return Applied::Stale { applied };
                }
                self.ring = Some(next.clone());
                Applied::Ring { epoch: next.epoch }
            }
        }
    }
}

/// A snapshot as stored: its metadata and the machine it was built from.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u128, openraft::BasicNode>,
    machine: Vec<u8>,
}

/// Called with each ring the state machine applies, and waited on before
/// the entry counts as applied (the node installs the ring: a leader's
/// proposal returns once its own node has the ring in memory).
pub type OnRing = Arc<dyn Fn(RingState) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The ring's state machine, kept in `raft_state` after every batch applied.
pub struct RingMachine {
    storage: Arc<Storage>,
    state: sled::Tree,
    machine: Machine,
    on_ring: Option<OnRing>,
}

impl RingMachine {
    /// The state machine kept in `storage`, as it was last saved.
    pub fn open(
        storage: Arc<Storage>,
        on_ring: Option<OnRing>,
    ) -> crate::error::Result<RingMachine> {
        let (_, state) = storage.raft_trees()?;
        let machine = match state.get(MACHINE)? {
            Some(raw) => decode_machine(&raw).map_err(crate::error::Error::storage)?,
            None => Machine::default(),
        };
        Ok(RingMachine {
            storage,
            state,
            machine,
            on_ring,
        })
    }

    /// The machine as applied so far.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    async fn save(&self) -> Result<(), Error> {
        let raw =
            encode(&self.machine).map_err(|e| fail(StorageIOError::write_state_machine(e)))?;
        self.state
            .insert(MACHINE, raw)
            .map_err(|e| fail(StorageIOError::write_state_machine(io(e))))?;
        durable(&self.storage, StorageIOError::write_state_machine).await
    }
}

/// Builds a snapshot from a copy of the machine.
pub struct RingSnapshotter {
    storage: Arc<Storage>,
    state: sled::Tree,
    machine: Machine,
}

fn snapshot_id(applied: &Option<LogId<u128>>) -> String {
    match applied {
        Some(id) => format!(
            "{}-{}-{}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => "none".into(),
    }
}

impl RaftSnapshotBuilder<RingRaft> for RingSnapshotter {
    async fn build_snapshot(&mut self) -> Result<Snapshot<RingRaft>, Error> {
        let bad = |e| fail(StorageIOError::write_snapshot(None, e));
        let machine = encode(&self.machine).map_err(bad)?;
        let meta = SnapshotMeta {
            last_log_id: self.machine.applied,
            last_membership: self.machine.membership.clone(),
            snapshot_id: snapshot_id(&self.machine.applied),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            machine: machine.clone(),
        };
        self.state
            .insert(SNAPSHOT, encode(&stored).map_err(bad)?)
            .map_err(|e| bad(io(e)))?;
        durable(&self.storage, |e| StorageIOError::write_snapshot(None, e)).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(machine)),
        })
    }
}

impl RaftStateMachine<RingRaft> for RingMachine {
    type SnapshotBuilder = RingSnapshotter;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u128>>, Membership), Error> {
        Ok((self.machine.applied, self.machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut installed = None;
        for entry in entries {
            self.machine.applied = Some(entry.log_id);
            out.push(match &entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                EntryPayload::Normal(cmd) => {
                    let applied = self.machine.apply(cmd);
                    if matches!(applied, Applied::Ring { .. }) {
                        installed = self.machine.ring.clone();
                    }
                    applied
                }
                EntryPayload::Membership(m) => {
                    self.machine.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Applied::Nothing
                }
            });
        }
        self.save().await?;
        if let (Some(ring), Some(on_ring)) = (installed, &self.on_ring) {
            on_ring(ring).await;
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> RingSnapshotter {
        RingSnapshotter {
            storage: self.storage.clone(),
            state: self.state.clone(),
            machine: self.machine.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u128, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let bad = |e| fail(StorageIOError::read_snapshot(Some(meta.signature()), e));
        let raw = snapshot.into_inner();
        let machine = decode_machine(&raw).map_err(bad)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            machine: raw,
        };
        self.state
            .insert(SNAPSHOT, encode(&stored).map_err(bad)?)
            .map_err(|e| bad(io(e)))?;
        self.machine = Machine {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            ring: machine.ring,
        };
        self.save().await?;
        if let (Some(ring), Some(on_ring)) = (&self.machine.ring, &self.on_ring) {
            on_ring(ring.clone()).await;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<RingRaft>>, Error> {
        let bad = |e| fail(StorageIOError::read_snapshot(None, e));
        match self.state.get(SNAPSHOT).map_err(|e| bad(io(e)))? {
            Some(raw) => {
                let stored: StoredSnapshot = decode(&raw).map_err(bad)?;
                Ok(Some(Snapshot {
                    meta: stored.meta,
                    snapshot: Box::new(Cursor::new(stored.machine)),
                }))
            }
            None => Ok(None),
        }
    }
}
