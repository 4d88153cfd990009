//! The wire contract: one tarpc service spoken by clients and by nodes, its
//! messages, and the framing both ends use.
//!
//! Every node listens on one port (its identity). Client calls (`write`, `read`,
//! `add_node`, ...) and node-to-node calls (`replicate`, `read_replica`,
//! `install_ring`, ...) share the service so one long-lived connection between two
//! nodes carries everything, multiplexed by tarpc.
//!
//! Frames are length-delimited (4-byte big-endian length) and bincode-encoded; a
//! frame longer than [`MAX_FRAME_BYTES`] closes the connection before anything is
//! allocated, and a frame that does not decode closes it too. Errors the node means
//! to report travel inside responses as `Result<T, Error>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tarpc::tokio_serde::formats::Bincode;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::net::{BoxStream, Network};
use crate::ring::{Ring, RingState};
use crate::types::{Key, NodeId, Replication, MAX_FRAME_BYTES};
use crate::vclock::{Content, Object, VersionVector};

mod buckets;
pub use buckets::{BucketEntry, BucketReply};
mod connection;
mod framing;
pub use connection::{
    connect, connect_as, connect_over, context, io_reason, ConnectError, Connection,
    SILENT_CONNECTION,
};
pub use framing::*;

/// A put or a delete as a client sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteRequest {
    pub key: Key,
    /// The context the client read (`{}` for a blind write).
    pub context: VersionVector,
    /// The new value, or a tombstone for a delete.
    pub content: Content,
    /// Set by a node that forwards the write to a replica: the receiver coordinates
    /// it and never forwards again.
    pub forwarded: bool,
}

/// The answer to a put or delete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteReply {
    pub key: Key,
    /// The context after the write: it covers exactly `values`; pass it to the
    /// next put to replace them.
    pub context: VersionVector,
    /// Every current version of the key at the coordinator after the write: the
    /// new value (none for a delete) and any sibling the client had not seen.
    pub values: Vec<crate::types::Value>,
    /// The node that coordinated the write.
    pub coordinator: NodeId,
    /// Nodes that acknowledged before the reply (replicas and stand-ins).
    pub acks: Vec<NodeId>,
    /// How many of the acks were stand-ins holding a hint.
    pub hinted: usize,
}

/// The answer to a get.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadReply {
    pub key: Key,
    /// Every version no other answer dominates (tombstones are left out).
    pub values: Vec<crate::types::Value>,
    /// The media type each value was written with (None: none given, as from
    /// the REPL), in the order of `values`.
    pub media_types: Vec<Option<String>>,
    /// The merged context: pass it to the next put.
    pub context: VersionVector,
    /// The nodes whose answers made up the reply.
    pub replicas: Vec<NodeId>,
}

impl ReadReply {
    /// The answer to a get from the merge of the answers of `replicas`, at
    /// `now` (the reader's clock, milliseconds since the Unix epoch: a version
    /// that has expired by then is left out).
    pub fn from_merged(key: Key, merged: &Object, replicas: Vec<NodeId>, now: u64) -> ReadReply {
        ReadReply {
            key,
            values: merged.values_at(now).cloned().collect(),
            media_types: merged
                .media_types_at(now)
                .map(|t| t.map(str::to_string))
                .collect(),
            context: merged.context().clone(),
            replicas,
        }
    }
}

/// One write of a `replicate_batch`: the arguments of a `replicate` but the
/// addressee, which the batch names once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaWrite {
    /// The ring the coordinator placed the write with (0: not checked).
    pub epoch: u64,
    pub key: Key,
    pub object: Arc<Object>,
    /// Stored as a hint for this replica when set.
    pub hint_for: Option<NodeId>,
}

/// One read of a `read_batch`: the arguments of a `read_at` but the
/// addressee, which the batch names once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaRead {
    /// The ring the client placed the key with; any other is refused.
    pub epoch: u64,
    pub key: Key,
    /// Count the get in the receiver's metrics.
    pub count: bool,
}

/// A setting a client adds to one get or put (`get --r N`, `put --w N`).
/// New settings become new variants at the end, so a request without them
/// decodes the same on every version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOption {
    /// Answers this read needs (1..=N) instead of the ring's R.
    R(u32),
    /// Acknowledgements this write needs (1..=N) instead of the ring's W.
    W(u32),
    /// The put's value expires this many milliseconds after the coordinator
    /// stamps it (`put --ttl 30s`, `X-Dynamo-TTL`).
    Ttl(u64),
}

impl RequestOption {
    /// The R among `opts`, if any.
    pub fn r(opts: &[RequestOption]) -> Option<usize> {
        opts.iter().rev().find_map(|o| match o {
            RequestOption::R(r) => usize::try_from(*r).ok(),
            _ => None,
        })
    }

    /// The TTL among `opts` (milliseconds), if any.
    pub fn ttl(opts: &[RequestOption]) -> Option<u64> {
        opts.iter().rev().find_map(|o| match o {
            RequestOption::Ttl(t) => Some(*t),
            _ => None,
        })
    }

    /// The W among `opts`, if any.
    pub fn w(opts: &[RequestOption]) -> Option<usize> {
        opts.iter().rev().find_map(|o| match o {
            RequestOption::W(w) => usize::try_from(*w).ok(),
            _ => None,
        })
    }
}

/// `scan` as a client asks it (see [`crate::coordinator::scan`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanRequest {
    /// Only keys that start with it (empty: every key).
    pub prefix: String,
    /// Only keys after it: the `next` of the previous page.
    pub after: Option<Key>,
    /// Most keys in the answer (1..=[`crate::coordinator::scan::MAX_SCAN_LIMIT`]).
    pub limit: u32,
    /// Ask R replicas of every range instead of one.
    pub consistent: bool,
}

/// One page of a `scan`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanReply {
    /// Keys in key order, deleted and expired ones left out.
    pub keys: Vec<Key>,
    /// Pass it as `after` for the next page; None on the last page.
    pub next: Option<Key>,
    /// Replicas asked for each range (1, or R with `consistent`).
    pub r: u32,
    /// The nodes that answered.
    pub nodes: Vec<NodeId>,
}

/// A coordinator's request for one replica's part of a scan page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaScan {
    /// The ring the coordinator assigned the ranges with; any other is refused.
    pub epoch: u64,
    /// The nodes asked; a key is this replica's to list if it is among the
    /// first `r` of them in the key's preference list.
    pub covering: Vec<NodeId>,
    pub r: u32,
    pub prefix: String,
    pub after: Option<Key>,
    pub limit: u32,
    /// Send the objects whole (a backup), not only their versions (a listing).
    pub values: bool,
}

/// `client backup`'s request for one page of whole objects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportRequest {
    pub scan: ScanRequest,
    /// Include keys whose every version is a tombstone or has expired.
    pub tombstones: bool,
}

/// One page of a backup: whole objects in key order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportPage {
    pub items: Vec<(Key, Object)>,
    /// Pass it as `after` for the next page; None on the last page.
    pub next: Option<Key>,
}

/// One replica's part of a scan page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaScanReply {
    /// The keys assigned to it, each with its object without the values (dots,
    /// context and which siblings are tombstones: what a merge needs).
    pub items: Vec<(Key, Object)>,
    /// Where it stopped when it did not reach the end (see
    /// [`crate::storage::Listing::resume`]).
    pub resume: Option<Key>,
}

/// The answer to `user add` and `user remove`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserReply {
    pub user: String,
    pub role: crate::types::Role,
    /// The new user's token: given once, by `user add`, and kept nowhere.
    pub token: Option<String>,
    /// The ring epoch that holds the change.
    pub epoch: u64,
}

/// One user, as `user list` shows it (never its token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    pub user: String,
    pub role: crate::types::Role,
}

/// The answer to add-node / remove-node: the change has started (it settles in
/// the background; `status` shows its progress).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipReply {
    /// The epoch that started the change.
    pub epoch: u64,
    /// The members once the change settles.
    pub members: Vec<NodeId>,
    /// Nodes the change adds.
    pub joining: Vec<NodeId>,
    /// Nodes the change removes.
    pub leaving: Vec<NodeId>,
    /// Nodes the new ring has not reached yet (they catch up when they return).
    pub unreached: Vec<NodeId>,
}

/// The node a node-to-node call is meant for: its address and, when the ring
/// knows it, its identity. A node that is not that member refuses the call, so a
/// stranger at a member's address (another data directory, or one process under
/// two addresses) never counts as the member.
///
/// A call that stores data on the receiver (`replicate`, `replicate_batch`,
/// `transfer`, `reap`) also names its sender (`from`): the receiver refuses it
/// unless the sender is a node of the receiver's ring under the identity the
/// ring admitted ([`crate::error::Error::Fenced`]), so a node removed while
/// it was away, or whose join was aborted, never writes into the ring again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addressee {
    pub node: NodeId,
    pub identity: Option<Uuid>,
    /// The node sending the call (None from clients, which only read).
    pub from: Option<Sender>,
}

/// The node that sends a node-to-node call: its address, the identity of its
/// data directory, and the ring epoch it had when it made the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub node: NodeId,
    pub identity: Uuid,
    pub epoch: u64,
}

impl Addressee {
    /// `node` as `ring` knows it: its address and the identity the ring
    /// admitted it with.
    pub fn in_ring(ring: &Ring, node: &NodeId) -> Addressee {
        Addressee {
            node: node.clone(),
            identity: ring.identity(node),
            from: None,
        }
    }

    /// `node` as `ring` knows it, for a call sent by `me` (with identity
    /// `uuid`) under `ring`.
    pub fn from_me(ring: &Ring, node: &NodeId, me: &NodeId, uuid: Uuid) -> Addressee {
        Addressee {
            from: Some(Sender {
                node: me.clone(),
                identity: uuid,
                epoch: ring.epoch(),
            }),
            ..Addressee::in_ring(ring, node)
        }
    }
}

/// A key a node could not hand to another because the receiver refused it for
/// good (it would refuse it again): reported in `status`, skipped by the
/// transfer so that it never blocks a ring change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub key: Key,
    /// The node that refused it.
    pub node: NodeId,
    /// What it said.
    pub reason: String,
    /// What was being done: `transfer`, `anti-entropy`, `handoff`.
    pub during: String,
}

/// Where one sender of a ring change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferPhase {
    /// Waiting for requests begun under the previous ring to finish.
    Draining,
    /// Counting the keys it must send.
    Counting,
    /// Sending keys to their new owners.
    Sending,
    /// Every key it holds is confirmed on its new owners.
    Done,
}

/// One node's part in the running ring change, as it reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferProgress {
    /// The transition epoch this is about.
    pub epoch: u64,
    pub phase: TransferPhase,
    /// Keys this node holds that the change gives to new owners (each key
    /// counts once per node that holds it).
    pub keys_to_move: u64,
    /// Of those, keys every new owner has acknowledged.
    pub keys_moved: u64,
    /// Bytes of objects sent so far.
    pub bytes_moved: u64,
    /// Milliseconds since this node started its part.
    pub elapsed_ms: u64,
}

/// One node's line in `status`'s transition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SenderStatus {
    pub node: NodeId,
    /// `draining`, `counting`, `sending`, `done`, or `unreachable`.
    pub state: String,
    pub keys_to_move: u64,
    pub keys_moved: u64,
    pub bytes_moved: u64,
}

/// The running ring change in `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransitionStatus {
    pub epoch: u64,
    pub joining: Vec<NodeId>,
    pub leaving: Vec<NodeId>,
    /// Sum over the nodes that hold data (a key held by three nodes counts three times).
    pub keys_to_move: u64,
    pub keys_moved: u64,
    pub bytes_moved: u64,
    /// Milliseconds since the leader started the change.
    pub elapsed_ms: u64,
    /// Keys moved per second since the start.
    pub keys_per_sec: u64,
    /// Seconds left at that rate (None until something moved).
    pub eta_s: Option<u64>,
    /// Each node's part.
    pub senders: Vec<SenderStatus>,
}

/// The answer to `locate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocateReply {
    pub key: Key,
    pub epoch: u64,
    /// The preference list in the current ring, in order.
    pub replicas: Vec<NodeId>,
    /// Owners a running change is moving the key to.
    pub pending: Vec<NodeId>,
    /// Stand-ins next in line, nearest first.
    pub fallbacks: Vec<NodeId>,
    /// How the answering node sees each of them.
    pub states: BTreeMap<NodeId, NodeState>,
}

/// How the answering node sees one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Alive,
    Suspect,
    Down,
}

/// One member in `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub state: NodeState,
    /// Keys it stores (None when it did not answer).
    pub keys: Option<u64>,
    /// Of those, keys whose every version is a tombstone (deleted, still on disk).
    pub tombstones: Option<u64>,
    /// Hints it holds for others.
    pub hints: Option<u64>,
    /// The ring epoch it has installed.
    pub epoch: Option<u64>,
    /// Its anti-entropy counters (None when it did not answer).
    pub anti_entropy: Option<AeStats>,
    /// True while it refills after losing its data directory (its reads do
    /// not count yet); None when it did not answer.
    pub restoring: Option<bool>,
    /// The fraction of the hash space it keeps a replica of in the current
    /// ring (0 for a node outside it), from the ring itself.
    pub share: f64,
    /// Pending hints it holds, per target (None when it did not answer).
    pub hints_by_target: Option<BTreeMap<NodeId, u64>>,
    /// How long its process has run, in milliseconds (None when it did not answer).
    pub uptime_ms: Option<u64>,
    /// Its build (None when it did not answer).
    pub version: Option<String>,
    /// Its part in the ring's Raft group: `leader`, `voter` or `learner`
    /// (None when it did not answer).
    pub role: Option<String>,
}

/// The answer to `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReply {
    /// The node that answered.
    pub node: NodeId,
    pub leader: NodeId,
    /// The Raft term of the ring's leader, the highest any answering node knows.
    pub term: u64,
    pub epoch: u64,
    pub replication: Replication,
    /// The answering node's durability (`always`, `batch`, `never`).
    pub fsync: String,
    pub nodes: Vec<MemberStatus>,
    /// The running ring change, with its progress (None when the ring is settled).
    pub transition: Option<TransitionStatus>,
    /// Whether the answering node is a member (of the current or target ring).
    pub member: bool,
    /// Set when the answering node was removed from the ring while it was
    /// away (the epoch that removed it): it serves nothing until its data
    /// directory is deleted and it is added again.
    pub removed_at_epoch: Option<u64>,
    /// Keys the nodes could not hand off because a receiver refused them for
    /// good (at most a few per node, newest last).
    pub refused: Vec<Refusal>,
    /// The answering node has a cluster secret and checks tokens (false:
    /// `--insecure`).
    pub secure: bool,
}

/// One anti-entropy query: what a node holds in common with the asking node,
/// level by level (see [`crate::antientropy`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AeQuery {
    /// The 256 group digests.
    Groups,
    /// The segment digests of these groups (256 per group, in order).
    Segments(Vec<u8>),
    /// The shared keys of these segments with their entry digests, all in
    /// one answer (unbounded: exchanges ask with `KeysFrom`).
    Keys(Vec<u16>),
    /// One page of the shared keys of these segments with their entry
    /// digests, in the order of the segments and of the keys in each, from
    /// just after `after` (from the start when None). Appended last, so the
    /// other variants keep their bincode indices.
    KeysFrom {
        segments: Vec<u16>,
        after: Option<Key>,
    },
}

/// The answer to an [`AeQuery`], of the same level.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AeAnswer {
    Groups(Vec<u64>),
    Segments(Vec<u64>),
    Keys(Vec<(Key, u64)>),
    /// One page of a `KeysFrom` listing, at most
    /// [`crate::antientropy::MAX_KEYS_PAGE_BYTES`]; `next` is where the next
    /// page starts (None: the listing is complete).
    KeysPage {
        keys: Vec<(Key, u64)>,
        next: Option<Key>,
    },
}

/// A piece of the failure detector's news: `node` is alive, or down, at
/// `incarnation` (see [`crate::detector`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rumour {
    pub node: NodeId,
    pub incarnation: u64,
    pub down: bool,
}

/// A failure detector's probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The prober.
    pub from: NodeId,
    /// The prober's incarnation.
    pub incarnation: u64,
    /// The prober's ring epoch: a node behind it pulls the ring.
    pub epoch: u64,
    /// The incarnation the prober holds the receiver down at, if it does.
    pub you_are_down_at: Option<u64>,
    /// News the prober passes on.
    pub rumours: Vec<Rumour>,
}

/// The answer to a [`Probe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAck {
    /// The answering node's incarnation (after hearing the probe).
    pub incarnation: u64,
    /// The answering node's ring epoch.
    pub epoch: u64,
    /// The incarnation the answering node holds the prober down at, if it does.
    pub you_are_down_at: Option<u64>,
    /// News the answering node passes on.
    pub rumours: Vec<Rumour>,
}

/// A node's anti-entropy counters, as `status` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AeStats {
    /// Exchanges this node started and finished since it started.
    pub exchanges: u64,
    /// Keys those exchanges sent or fetched because the copies differed.
    pub keys_repaired: u64,
    /// The last exchange it finished (None before the first).
    pub last_exchange: Option<LastExchange>,
    /// Tombstones this node removed from its disk since it started.
    pub tombstones_removed: u64,
}

/// A member's answer to a tombstone check (see [`crate::antientropy::reaper`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TombstoneCheck {
    /// Why this node cannot vouch for any key now (a ring change, a clean-up
    /// not finished, a refill); None when it can.
    pub not_ready: Option<String>,
    /// For each key asked, in order: the digest of this node's own copy (None:
    /// it keeps none).
    pub copies: Vec<Option<u64>>,
    /// For each key asked, in order: true if this node keeps a hint for it.
    pub hinted: Vec<bool>,
}

/// One finished anti-entropy exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExchange {
    /// The node it compared with.
    pub peer: NodeId,
    /// When it finished, in milliseconds since the Unix epoch (the node's clock).
    pub at_unix_ms: u64,
    /// How long ago that was when the node answered.
    pub ago_ms: u64,
    /// Keys it sent or fetched.
    pub keys_repaired: u64,
}

/// What a node says about itself to another node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The node's identity (created with its data directory).
    pub identity: Uuid,
    pub epoch: u64,
    pub keys: u64,
    /// Keys whose every version is a tombstone.
    pub tombstones: u64,
    pub hints: u64,
    pub fsync: String,
    /// Its part in the running ring change, if any.
    pub transfer: Option<TransferProgress>,
    /// Its anti-entropy counters.
    pub anti_entropy: AeStats,
    /// True while it refills after losing its data directory.
    pub restoring: bool,
    /// Pending hints per target.
    pub hints_by_target: BTreeMap<NodeId, u64>,
    /// How long the process has run, in milliseconds.
    pub uptime_ms: u64,
    /// Its build (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The epoch that removed it while it was away, if it was.
    pub removed_at_epoch: Option<u64>,
    /// Keys it could not hand off because a receiver refused them for good.
    pub refused: Vec<Refusal>,
    /// Its part in the ring's Raft group: `leader`, `voter` or `learner`.
    pub role: String,
    /// The Raft term it knows (0 for a node that never voted).
    pub term: u64,
    /// The voters as its Raft instance knows them (a leader's view is the
    /// current one; a node taken out of the voters stops hearing of them).
    pub voters: Vec<NodeId>,
}

/// The service every node serves.
#[tarpc::service]
pub trait Node {
    // ---- called by clients (any node) ----
    /// `put` and `delete`.
    async fn write(req: WriteRequest) -> Result<WriteReply>;
    /// `get`.
    async fn read(key: Key) -> Result<ReadReply>;
    /// `add-node` (leader only).
    async fn add_node(node: NodeId) -> Result<MembershipReply>;
    /// `remove-node` (leader only).
    async fn remove_node(node: NodeId) -> Result<MembershipReply>;
    /// `status`.
    async fn status() -> Result<StatusReply>;
    /// `locate`: where a key lives.
    async fn locate(key: Key) -> Result<LocateReply>;

    // ---- called by nodes ----
    /// Store `object` durably for `key`, as this node's replica or, with `hint_for`,
    /// as a hint for that replica. `epoch` is the ring the coordinator placed the
    /// write with (0: a delivery of data already stored elsewhere, not checked); a
    /// node with a newer ring refuses it ([`Error::StaleRing`]).
    async fn replicate(
        to: Addressee,
        epoch: u64,
        key: Key,
        object: Arc<Object>,
        hint_for: Option<NodeId>,
    ) -> Result<()>;
    /// Several `replicate`s to the receiver in one call (see [`crate::outbox`]),
    /// at most [`crate::outbox::MAX_ITEMS`]: each write is applied as
    /// `replicate` would, and answered, in order, after one flush wait.
    async fn replicate_batch(to: Addressee, writes: Vec<ReplicaWrite>) -> Result<Vec<Result<()>>>;
    /// What this node holds for `key` (its replica merged with hints for the key).
    async fn read_replica(to: Addressee, key: Key) -> Result<Object>;
    /// `read_replica` for a client that coordinates its own get (see
    /// [`crate::client`]): answered only under ring `epoch` (any other gets
    /// [`Error::StaleRing`], so a client with an old ring never reads from nodes
    /// that no longer own the key). With `count`, the node counts the get in
    /// its metrics (the client sets it on one replica per get). Today's client
    /// sends `read_batch`; this stays for clients built before it.
    async fn read_at(to: Addressee, epoch: u64, key: Key, count: bool) -> Result<Object>;
    /// Several `read_at`s to the receiver in one call (see [`crate::outbox`]),
    /// at most [`crate::outbox::MAX_ITEMS`]: each answered, in order, as
    /// `read_at` would.
    async fn read_batch(to: Addressee, reads: Vec<ReplicaRead>) -> Result<Vec<Result<Object>>>;
    /// Merges a batch of objects durably into this node's replica (a ring
    /// change's transfer); returns how many keys changed.
    async fn transfer(to: Addressee, items: Vec<(Key, Arc<Object>)>) -> Result<u64>;
    /// The leader commits a ring; returns the epoch the receiver now has.
    async fn install_ring(ring: RingState) -> Result<u64>;
    /// The ring this node has (None before it learned one).
    async fn fetch_ring() -> Result<Option<RingState>>;
    /// Liveness and counters.
    async fn info() -> Result<NodeInfo>;
    /// A ring change's cheap check: for each key, the digest of the sender's
    /// stored object; returns the indices of the keys whose copy here differs
    /// (or is missing), which the sender then sends with `transfer`.
    async fn transfer_check(to: Addressee, digests: Vec<(Key, u64)>) -> Result<Vec<u32>>;
    /// Anti-entropy: what the receiver holds in common with `from` under ring
    /// `epoch` (refused with `StaleRing` under another epoch).
    async fn ae_digests(
        to: Addressee,
        epoch: u64,
        from: NodeId,
        query: AeQuery,
    ) -> Result<AeAnswer>;
    /// Anti-entropy: the receiver's own copies of `keys` (those it has; as many
    /// as fit one frame, at least one).
    async fn ae_fetch(to: Addressee, epoch: u64, keys: Vec<Key>)
        -> Result<Vec<(Key, Arc<Object>)>>;
    /// Leader only: the member `node` lost its data directory and runs again,
    /// empty, with the new identity `identity`; readmits it (a new epoch).
    /// Returns that epoch.
    async fn rejoin(node: NodeId, identity: Uuid) -> Result<u64>;
    /// Tombstone removal: what the receiver holds of `keys` (its copies' digests
    /// and whether it keeps hints for them), under ring `epoch`.
    async fn tombstone_check(to: Addressee, epoch: u64, keys: Vec<Key>) -> Result<TombstoneCheck>;
    /// Tombstone removal: the receiver, an owner of each key, removes its copy if
    /// it still has the given digest; returns how many it removed.
    async fn reap(to: Addressee, epoch: u64, items: Vec<(Key, u64)>) -> Result<u64>;

    // ---- added later: a request names its call by position, so new calls go
    // last and the ones above keep their numbers ----
    /// Called by clients: several `write`s in one call (see
    /// [`crate::outbox`]), at most [`crate::outbox::MAX_ITEMS`]: each
    /// coordinated as `write` would, all at once, and answered in order.
    async fn write_batch(writes: Vec<WriteRequest>) -> Result<Vec<Result<WriteReply>>>;
    /// `abort-change` (leader only): ends the running ring change, returning
    /// the ring to the members it had before it.
    async fn abort_change() -> Result<MembershipReply>;
    /// The ring this node has if its epoch is above `epoch`, else None: what
    /// a member's periodic pull asks the leader, so an unchanged ring costs a
    /// few bytes instead of the whole state (which grows with the ring).
    async fn fetch_ring_newer(epoch: u64) -> Result<Option<RingState>>;
    /// The failure detector's probe: answered at once with the receiver's
    /// incarnation and news (see [`crate::detector`]).
    async fn probe(probe: Probe) -> Result<ProbeAck>;
    /// Raft among the ring's voters ([`crate::consensus`]): the leader's
    /// AppendEntries to the node whose Raft id is `to`.
    async fn raft_append(
        to: u128,
        req: openraft::raft::AppendEntriesRequest<crate::consensus::RingRaft>,
    ) -> Result<crate::consensus::net::RaftAnswer<openraft::raft::AppendEntriesResponse<u128>>>;
    /// Raft: a candidate's request for `to`'s vote.
    async fn raft_vote(
        to: u128,
        req: openraft::raft::VoteRequest<u128>,
    ) -> Result<crate::consensus::net::RaftAnswer<openraft::raft::VoteResponse<u128>>>;
    /// Raft: a chunk of the leader's snapshot for `to`.
    async fn raft_snapshot(
        to: u128,
        req: openraft::raft::InstallSnapshotRequest<crate::consensus::RingRaft>,
    ) -> Result<
        crate::consensus::net::RaftAnswer<
            openraft::raft::InstallSnapshotResponse<u128>,
            openraft::error::InstallSnapshotError,
        >,
    >;
    /// `user add NAME ROLE` (admin): a new user with a new token. A node that
    /// is not the leader passes a client's request on to the leader.
    async fn user_add(name: String, role: crate::types::Role) -> Result<UserReply>;
    /// `user list` (admin): every user and its role.
    async fn user_list() -> Result<Vec<UserEntry>>;
    /// `user remove NAME` (admin): the token stops working on every node that
    /// has the new ring.
    async fn user_remove(name: String) -> Result<UserReply>;
    /// `scan` (read): one page of keys in key order, from a covering set of
    /// replicas (see [`crate::coordinator::scan`]).
    async fn scan(req: ScanRequest) -> Result<ScanReply>;
    /// Called by a scan's coordinator: this replica's keys of the page.
    async fn scan_replica(to: Addressee, req: ReplicaScan) -> Result<ReplicaScanReply>;
    /// `get` with per-request settings (`get --r N`), coordinated by the node.
    async fn read_with(key: Key, opts: Vec<RequestOption>) -> Result<ReadReply>;
    /// `put` or `delete` with per-request settings (`put --w N`).
    async fn write_with(req: WriteRequest, opts: Vec<RequestOption>) -> Result<WriteReply>;
    /// `client backup` (read): one page of whole objects, from R replicas of
    /// every range (see [`crate::coordinator::scan`]).
    async fn export(req: ExportRequest) -> Result<ExportPage>;
    /// `client restore` (write): merges each object into the key's replicas
    /// (a merge never replaces a newer version); answers how many keys a
    /// write quorum took.
    async fn restore_batch(items: Vec<(Key, Object)>) -> Result<u64>;
    /// `bucket create NAME [settings]` (admin, at the leader): creates the
    /// bucket, or changes the settings of an existing one.
    async fn bucket_create(name: String, spec: crate::ring::BucketSpec) -> Result<BucketReply>;
    /// `bucket drop NAME` (admin, at the leader): the bucket goes, and every
    /// node removes its keys in the background.
    async fn bucket_drop(name: String) -> Result<BucketReply>;
    /// `bucket list` (read): every bucket of the ring this node has.
    async fn bucket_list() -> Result<Vec<BucketEntry>>;
}
