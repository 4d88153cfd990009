//! The ring: which nodes hold a key, and the membership state the leader owns.
//!
//! # Consistent hashing with virtual nodes
//!
//! Every key and every node has a position on a ring of 2^64 points. A key's
//! position is [`key_position`], the 64-bit xxh3 hash of its bytes. A physical
//! node does not sit at one point but at `tokens_per_node` points, its *tokens*
//! (virtual nodes): token `i` of node `n` is at `xxh3_64("{n}#{i}")`, where `{n}`
//! is the node's `HOST:PORT` identity as written and `{i}` the decimal index
//! `0..tokens_per_node`; for example `127.0.0.1:13337#0`. Positions depend on
//! nothing but those bytes, so every process, platform and version computes the
//! same ring from the same [`RingState`]. `std`'s `DefaultHasher` is not used
//! anywhere: its output may change between Rust releases.
//!
//! The *preference list* of a key (Dynamo paper §4.3) is found by walking
//! clockwise from the key's position: start at the first token whose position
//! is at or after the key's (wrapping past 2^64 - 1 to the start), and take the
//! node of each token in turn, skipping nodes already taken, until N distinct
//! physical nodes are found. With fewer than N members, every member holds the
//! key. Continuing the same walk past the N-th node gives the *fallbacks*: the
//! nodes that stand in, with a hint, for unreachable replicas under sloppy
//! quorum. [`Ring::walk`] returns the whole order, preference list first.
//!
//! Two tokens can land on the same position (a 64-bit collision; never seen in
//! practice, but possible). The token table is sorted by `(position, node)`,
//! node order being the identity's string order, so even then every node builds
//! the same table and agrees on every preference list.
//!
//! # Why virtual nodes, and why [`DEFAULT_TOKENS_PER_NODE`]
//!
//! With one point per node the arcs between nodes vary wildly in length (the
//! largest of five is often twice the fair share), and a departing node hands
//! its whole range to one neighbour. With T tokens per node, a node's share is
//! a sum of T arcs, so its relative spread shrinks like `1/sqrt(T)`, and the
//! keys of a joining or leaving node are taken from (or given to) every other
//! node. The cost is a table of `members * T` entries, rebuilt once per epoch,
//! and a binary search of `log2(members * T)` steps per request. 256 tokens
//! keep a node's share within a few per cent of fair (on the five nodes of
//! `make run-db`, the busiest owns 1.03x its fair share of 100,000 random keys;
//! the tests fail above 1.25x) while five
//! nodes cost a 1,280-entry table, 20 KiB, built in well under a millisecond.
//! Beyond a few hundred tokens the balance gain is small and the table and the
//! per-epoch build grow linearly. The count is part of [`RingState`], so it is
//! fixed cluster-wide by the leader and never differs between nodes.
//!
//! # Movement
//!
//! Adding a node only inserts its tokens: a key changes owner exactly when one
//! of the new tokens falls between the key and its old first token, so about
//! `1/(members + 1)` of the keys move, all of them to the new node. Removing a
//! node moves exactly the keys that node owned. Preference lists shift the same
//! way: a node's position in a list changes only when the new or removed node
//! is ahead of it. The membership and handoff modules move the data; this module
//! only answers "who holds this key in this epoch".
//!
//! # Membership state
//!
//! [`RingState`] is what the leader owns and commits to every member: the
//! epoch, the leader, the sorted members, the replication settings (the
//! leader's N/W/R are the cluster's), the token count, each member's
//! identity (the UUID of its data directory), and the ring change in
//! progress, if any. The state is persisted and sent as is (serde). A state
//! read from disk or received from a peer is checked with
//! [`RingState::validate`] before it is used. [`Ring`] is the immutable,
//! precomputed form that the request path shares behind an `Arc`, built once
//! per epoch with [`Ring::new`].
//!
//! # Ring changes are transitions
//!
//! Adding or removing a node does not switch the ring from one membership to
//! the next in one step: data has to move first. A change is a
//! [`Transition`]: [`RingState::begin_add`] / [`RingState::begin_remove`]
//! make the next epoch with `members` unchanged (the ring that owns the data
//! now) and `transition.target` the membership once the change is over. While
//! it runs, a [`Ring`] holds two token tables, and [`Ring::placement`] gives a
//! key's [`Placement`]:
//!
//! * `replicas`: the key's preference list in the current ring (its owners
//!   now, which hold its data);
//! * `pending`: the nodes of its preference list in the target ring that are
//!   not replicas now (they are receiving the data);
//! * `fallbacks`: the stand-ins for sloppy quorum, nearest first: the target
//!   ring's walk without the replicas and pending owners, and only members
//!   that stay: a leaving node never takes a hint it would carry out of the
//!   ring, and a joining node never holds a stand-in copy that an aborted
//!   join would strand.
//!
//! A write needs W acknowledgements among the current owners **and** W among
//! the target owners; a read needs R answers from each ([`Quorum`]). Once
//! every moved key is confirmed on its new owners the leader makes the next
//! epoch with [`RingState::settle`]: `members` becomes the target and the
//! transition ends. Only then may a node drop data the settled ring gives to
//! others. One change runs at a time: `begin_add` refuses while one runs,
//! naming it.
//!
//! # Every change can end
//!
//! A change waits for every node of both rings to report its transfer, so a
//! node that is gone for good must not be able to hold it for ever:
//!
//! * [`RingState::abort`] ends it without completing it: the ring keeps the
//!   members it had (`members` is never altered before the settle), so every
//!   acknowledged write (W acks among those owners) is still on a write
//!   quorum of the owners;
//! * `begin_remove` of a node the change adds aborts that node's join, and of
//!   a member that stays takes it out of the target (as a leaving node its
//!   silence is then tolerated);
//! * [`RingState::readmit`] admits a wiped node of either ring under a new
//!   incarnation while the change runs, and the new epoch makes every holder
//!   send its moving keys again.
//!
//! # Departures
//!
//! A node that is no longer in the ring must never write into it again: it
//! may hold versions the ring has since deleted and removed for good. The
//! state records, per address, how each node went ([`Departure`]): `left`
//! (its transfer was reported done: it may drop its copies), `aborted` (a
//! join that did not complete: it holds only copies) or `removed` (settled
//! without its report, as a dead or stalled leaving node is: it keeps its
//! data for the operator, hands nothing off, and cannot be added again on
//! that data directory). Receivers refuse data from any node outside their
//! ring whatever it believes (see [`crate::coordinator`]).
//!
//! # Invariants
//!
//! - `members` is sorted and unique, the leader is one of them, there are at
//!   most [`MAX_MEMBERS`], `tokens_per_node` is in `1..=`[`MAX_TOKENS_PER_NODE`],
//!   the replication settings are valid, and the epoch is at least 1
//!   ([`RingState::validate`]).
//! - A transition's target is sorted, unique, differs from `members`, keeps
//!   the leader, and has at most [`MAX_MEMBERS`].
//! - Every identity names a member of the current or the target ring, and no
//!   two addresses share one UUID (one process never counts as two replicas).
//! - Every member has at least one token in a [`Ring`], so a walk that has not
//!   yet found every member always finds the next one within one lap.
//! - The same [`RingState`] gives the same token tables and the same
//!   placements, in every process.
//!
//! # Cost per request
//!
//! [`Ring::new`] hashes every token once (twice during a change, once per
//! table). [`Ring::preference_list`], [`Ring::walk`] and [`Ring::placement`]
//! hash only the key, binary-search a table for the first token, and step
//! clockwise at most one lap, remembering the nodes already taken in a
//! 256-bit set on the stack. The only allocations are the results.
//!
//! # What it leaves out
//!
//! - Weights: every node has the same number of tokens; a bigger machine does
//!   not get a bigger share.
//! - Placement awareness (racks, zones): the preference list is purely the
//!   ring order.
//! - Dynamo's later partitioning strategy (fixed, equal-sized partitions with
//!   tokens assigned by the leader): hashed tokens are simpler and balanced
//!   enough at this scale, at the price of key ranges that are not aligned to
//!   fixed partitions.
//! - Failure detection and liveness: the ring knows members, not which of them
//!   are up. Skipping down nodes is the coordinator's job, using the
//!   placement's fallbacks.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::types::{NodeId, Replication, MAX_CONTEXT_ENTRIES};

mod cell;
mod placement;
pub use cell::RingCell;
pub use placement::{Placement, Quorum};

#[cfg(test)]
mod tests;

/// Tokens (virtual nodes) per physical node in a new ring.
///
/// Balance against cost: a node's share of the keys deviates from fair by
/// roughly `1/sqrt(tokens)` (about 6% at 256), so five nodes stay well inside
/// 1.25x of their fair share; the token table costs `members * 256` entries of
/// 16 bytes, rebuilt once per epoch, and a lookup is a binary search over it
/// (11 steps for five nodes). Doubling the tokens would buy only ~30% less
/// spread for twice the table.
pub const DEFAULT_TOKENS_PER_NODE: u32 = 256;

/// The most tokens per node a state may ask for. Keeps the table of a state
/// received from a peer or read from disk bounded (256 members at this count is
/// a million entries, 16 MiB): a corrupt count cannot make a node allocate
/// without limit.
pub const MAX_TOKENS_PER_NODE: u32 = 4096;

/// The most members a ring may have. A context (version vector) names the
/// nodes that coordinated writes of a key and is bounded by
/// [`MAX_CONTEXT_ENTRIES`]; a ring larger than that could produce contexts
/// that every node refuses.
pub const MAX_MEMBERS: usize = MAX_CONTEXT_ENTRIES;

/// Width of the "already taken" set used by a walk, in 64-bit words: enough
/// for [`MAX_MEMBERS`] members with no allocation.
const SEEN_WORDS: usize = MAX_MEMBERS.div_ceil(64);

/// The position of a key on the ring: the 64-bit xxh3 hash of its bytes.
///
/// xxh3 is specified and stable (same output on every platform and in every
/// version of the crate), unlike `std`'s `DefaultHasher`.
pub fn key_position(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The membership state the leader owns and commits to every member.
///
/// Persisted and sent as is (serde); check it with [`RingState::validate`]
/// after decoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// The version of the membership: each change makes the next epoch. A node
    /// adopts a state only if its epoch is newer than the one it has.
    pub epoch: u64,
    /// The node that owns the ring and makes every change.
    pub leader: NodeId,
    /// Every member, sorted and without duplicates: the ring that owns the
    /// data now (during a transition, the ring before the change).
    pub members: Vec<NodeId>,
    /// N/W/R: the leader's values are the cluster's.
    pub replication: Replication,
    /// Tokens (virtual nodes) per member.
    pub tokens_per_node: u32,
    /// The identity of each node of the current and target rings: the UUID
    /// created with its data directory. A node missing here (a ring made
    /// before identities existed) is not checked.
    #[serde(default)]
    pub identities: BTreeMap<NodeId, Uuid>,
    /// The ring change in progress, if any.
    #[serde(default)]
    pub transition: Option<Transition>,
    /// For every address ever admitted (members and former members): the last
    /// identity admitted there and its incarnation. Never shrinks: an address
    /// that comes back with a new data directory gets the next incarnation, so
    /// it writes under an actor no replica has seen ([`RingState::actor`]).
    #[serde(default)]
    pub incarnations: BTreeMap<NodeId, Incarnation>,
    /// Nodes that were in the ring (or joining it) and are no longer: how each
    /// one went, so that it knows what to do with its data when it learns it
    /// ([`Departure`]). An entry goes when its address is added again.
    #[serde(default)]
    pub departed: BTreeMap<NodeId, Departure>,
}

/// How a node left the ring, as the leader recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    /// The epoch that ended its part in the ring.
    pub epoch: u64,
    /// The data directory (identity) that departed; None when the ring never
    /// knew it.
    pub identity: Option<Uuid>,
    pub kind: DepartureKind,
}

/// Why a node is no longer in the ring; it decides what the node may do with
/// what it still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DepartureKind {
    /// It left through a settled change after reporting its transfer done:
    /// every key it held is on the owners, so it may drop its copies.
    Left,
    /// The change settled without its report (it was down or stalled): it may
    /// hold versions the ring has since deleted and removed. It must never
    /// hand anything off; its data directory must be deleted before the node
    /// is added again.
    Removed,
    /// Its join was aborted: it only ever held copies of what the members
    /// hold (the acknowledged writes are on W of the old owners), so it may
    /// drop them.
    Aborted,
}

impl DepartureKind {
    /// `left`, `removed`, `aborted`.
    pub fn name(self) -> &'static str {
        match self {
            DepartureKind::Left => "left",
            DepartureKind::Removed => "removed",
            DepartureKind::Aborted => "aborted",
        }
    }
}

/// One data directory's turn at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// The identity (data directory UUID) admitted.
    pub identity: Uuid,
    /// 0 for the first identity ever admitted at the address, then 1, 2, ...
    pub number: u32,
}

/// The actor name of incarnation `number` of `node`: the address itself for the
/// first, `HOST~I:PORT` after (`127.0.0.1~1:13338`). The name only appears in
/// dots and contexts, never as an address to connect to.
pub fn actor_name(node: &NodeId, number: u32) -> NodeId {
    if number == 0 {
        return node.clone();
    }
    NodeId::new(&format!("{}~{number}", node.host()), node.port()).unwrap_or_else(|_| node.clone())
}

/// A ring change in progress: the membership the ring moves to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The members once the change settles, sorted and without duplicates.
    pub target: Vec<NodeId>,
    /// When the leader started the change (milliseconds since the Unix epoch,
    /// the leader's clock; shown to operators, never used for decisions).
    pub started_ms: u64,
}

impl RingState {
    /// A one-node ring led by `leader`, epoch 1, with
    /// [`DEFAULT_TOKENS_PER_NODE`] tokens per node.
    pub fn bootstrap(leader: NodeId, replication: Replication) -> RingState {
        RingState {
            epoch: 1,
            members: vec![leader.clone()],
            leader,
            replication,
            tokens_per_node: DEFAULT_TOKENS_PER_NODE,
            identities: BTreeMap::new(),
            transition: None,
            incarnations: BTreeMap::new(),
            departed: BTreeMap::new(),
        }
    }

    /// The epoch that removed the node at `node` with identity `uuid` while it
    /// was away ([`DepartureKind::Removed`]), if it is in neither ring now.
    pub fn removed_at(&self, node: &NodeId, uuid: Uuid) -> Option<u64> {
        if self.members.binary_search(node).is_ok() || self.target().binary_search(node).is_ok() {
            return None;
        }
        self.departure(node, uuid)
            .filter(|d| d.kind == DepartureKind::Removed)
            .map(|d| d.epoch)
    }

    /// How the node at `node` with identity `uuid` left the ring, if the ring
    /// recorded its departure for that data directory (a departure recorded
    /// without an identity, from a ring that never learned it, applies to
    /// any: the node then keeps what it holds if it was removed while away;
    /// `add-node` cannot tell it from a wiped one and lets it in).
    pub fn departure(&self, node: &NodeId, uuid: Uuid) -> Option<Departure> {
        let d = self.departed.get(node)?;
        match d.identity {
            Some(id) if id != uuid => None,
            _ => Some(*d),
        }
    }

    /// The actor under which the node at `node` with identity `uuid` issues
    /// dots, or None when it must not issue any: another identity was admitted
    /// at that address (this process is a stranger there, or a node that lost
    /// its data directory and has not been readmitted yet).
    ///
    /// An address the ring never admitted an identity at (a node not yet
    /// added, or a ring from before identities) writes under its address.
    pub fn actor(&self, node: &NodeId, uuid: Uuid) -> Option<NodeId> {
        match (self.incarnations.get(node), self.identities.get(node)) {
            (Some(inc), _) if inc.identity == uuid => Some(actor_name(node, inc.number)),
            (Some(_), _) => None,
            (None, Some(id)) if *id != uuid => None,
            (None, _) => Some(node.clone()),
        }
    }

    /// Records that `uuid` is admitted at `node`: a new identity there is the
    /// next incarnation.
    fn admit(&mut self, node: &NodeId, uuid: Uuid) {
        let number = match self.incarnations.get(node) {
            None => 0,
            Some(inc) if inc.identity == uuid => inc.number,
            Some(inc) => inc.number.saturating_add(1),
        };
        self.identities.insert(node.clone(), uuid);
        self.incarnations.insert(
            node.clone(),
            Incarnation {
                identity: uuid,
                number,
            },
        );
    }

    /// The next epoch's state in which the node `node` (a member, or a node a
    /// running change adds) is known by the new identity `uuid`: it lost its
    /// data directory and came back empty under the same address. It gets the
    /// next incarnation (a new actor, so none of its new dots can collide with
    /// one its old data directory issued) and refills from its peers: by
    /// anti-entropy as a member, and, while a change runs, by every holder
    /// sending its moving keys again (the new epoch restarts each node's
    /// transfer), so a change whose node was wiped still settles.
    ///
    /// Fails with [`Error::Membership`] if `node` is in neither ring, already
    /// has that identity, or `uuid` is another node's.
    pub fn readmit(&self, node: &NodeId, uuid: Uuid) -> Result<RingState> {
        if self.all_nodes().binary_search(node).is_err() {
            return Err(membership(format!(
                "{node} is not a member of the ring (epoch {})",
                self.epoch
            )));
        }
        match self.address_of(&uuid) {
            Some(at) if at == node => {
                return Err(membership(format!("{node} already has identity {uuid}")))
            }
            Some(other) => {
                return Err(membership(format!(
                    "cannot readmit {node}: identity {uuid} is the member {other}'s"
                )))
            }
            None => {}
        }
        let mut next = self.next_epoch()?;
        next.admit(node, uuid);
        Ok(next)
    }

    /// The members once the running change settles (`members` when none runs).
    pub fn target(&self) -> &[NodeId] {
        match &self.transition {
            Some(t) => &t.target,
            None => &self.members,
        }
    }

    /// Nodes the running change adds (empty when none runs).
    pub fn joining(&self) -> Vec<NodeId> {
        let current = &self.members;
        self.target()
            .iter()
            .filter(|n| current.binary_search(n).is_err())
            .cloned()
            .collect()
    }

    /// Nodes the running change removes (empty when none runs).
    pub fn leaving(&self) -> Vec<NodeId> {
        let target = self.target();
        self.members
            .iter()
            .filter(|n| target.binary_search(n).is_err())
            .cloned()
            .collect()
    }

    /// Every node of the current and the target ring, sorted.
    pub fn all_nodes(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.members.iter().chain(self.target()).cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    /// True when `actor` is a name this ring ever let a node write under: an
    /// address it admitted (a member, a node of the running change, the
    /// leader, or a former member it keeps an incarnation for) or one of that
    /// address's incarnations up to the last (`HOST~I:PORT`).
    ///
    /// A ring from before incarnations (format 2 and older) forgot the members
    /// removed back then, so a false here is not proof: callers also accept an
    /// actor the stored copy of the key already names.
    pub fn knows_actor(&self, actor: &NodeId) -> bool {
        let (address, number) = match actor.host().rsplit_once('~') {
            Some((host, n)) => match (NodeId::new(host, actor.port()), n.parse::<u32>()) {
                (Ok(address), Ok(n)) if n > 0 => (address, n),
                _ => return false,
            },
            None => (actor.clone(), 0),
        };
        if let Some(inc) = self.incarnations.get(&address) {
            return number <= inc.number;
        }
        number == 0
            && (self.leader == address
                || self.members.binary_search(&address).is_ok()
                || self.target().binary_search(&address).is_ok())
    }

    /// The address a node with this identity is known under, if any.
    pub fn address_of(&self, uuid: &Uuid) -> Option<&NodeId> {
        self.identities
            .iter()
            .find_map(|(node, id)| (id == uuid).then_some(node))
    }

    /// Describes the running change for people: `adding 127.0.0.1:13342`.
    pub fn describe_change(&self) -> String {
        let mut parts = Vec::new();
        let joining = self.joining();
        let leaving = self.leaving();
        if !joining.is_empty() {
            parts.push(format!("adding {}", join_ids(&joining)));
        }
        if !leaving.is_empty() {
            parts.push(format!("removing {}", join_ids(&leaving)));
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join(", ")
        }
    }

    /// Refuses while a change runs, naming it.
    pub fn refuse_while_changing(&self) -> Result<()> {
        match &self.transition {
            Some(_) => Err(membership(format!(
                "a ring change is already running (epoch {}: {}); wait until it settles \
                 (status shows its progress)",
                self.epoch,
                self.describe_change()
            ))),
            None => Ok(()),
        }
    }

    /// The next epoch's state starting a change that adds `node` (with the
    /// identity `uuid`, when known). `now_ms` is the leader's clock.
    ///
    /// Fails with [`Error::Membership`] if a change is running, `node` is
    /// already a member, another member has the same identity (one process
    /// under two addresses), or the ring is full.
    pub fn begin_add(&self, node: NodeId, uuid: Option<Uuid>, now_ms: u64) -> Result<RingState> {
        self.refuse_while_changing()?;
        let at = match self.members.binary_search(&node) {
            Ok(_) => {
                return Err(membership(format!(
                    "{node} is already a member of the ring (epoch {})",
                    self.epoch
                )))
            }
            Err(at) => at,
        };
        if let Some(uuid) = uuid {
            if let Some(other) = self.address_of(&uuid) {
                return Err(membership(format!(
                    "cannot add {node}: it is the node already in the ring as {other} \
                     (same node identity {uuid}); one process cannot be two replicas"
                )));
            }
            if let Some(d) = self.departed.get(&node) {
                if d.kind == DepartureKind::Removed && d.identity == Some(uuid) {
                    return Err(membership(format!(
                        "cannot add {node}: it was removed from the ring at epoch {} while it \
                         was away, and it still runs on that data directory, which may hold \
                         versions the ring has deleted since; stop it, delete its data \
                         directory and start it again, then add it",
                        d.epoch
                    )));
                }
            }
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(membership(format!(
                "cannot add {node}: the ring already has {} members, the limit is {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        let mut next = self.next_epoch()?;
        let mut target = self.members.clone();
        target.insert(at, node.clone());
        if let Some(uuid) = uuid {
            next.admit(&node, uuid);
        }
        next.departed.remove(&node);
        next.transition = Some(Transition {
            target,
            started_ms: now_ms,
        });
        Ok(next)
    }

    /// The next epoch's state starting a change that removes `node`.
    ///
    /// While a change runs, removing a node that change adds aborts its join
    /// (the whole change when it was the only thing the change did), and
    /// removing a member that stays in the target takes it out of the target
    /// too (a node of the change that is dead for good then no longer blocks
    /// it: as a leaving node, its silence is tolerated). Either way the new
    /// epoch restarts every node's transfer against the new target.
    ///
    /// Fails with [`Error::Membership`] if `node` is in neither ring, is
    /// already leaving, is the leader (the leader owns the ring and cannot
    /// hand itself out of it), or if fewer members than W or R would be left
    /// (every write or read would then fail).
    pub fn begin_remove(&self, node: &NodeId, now_ms: u64) -> Result<RingState> {
        if self.transition.is_some() && self.members.binary_search(node).is_err() {
            if self.target().binary_search(node).is_ok() {
                return self.abort_join(node);
            }
            return Err(membership(format!(
                "{node} is not a member of the ring (epoch {})",
                self.epoch
            )));
        }
        if self.members.binary_search(node).is_err() {
            return Err(membership(format!(
                "{node} is not a member of the ring (epoch {})",
                self.epoch
            )));
        }
        if *node == self.leader {
            return Err(membership(format!(
                "cannot remove the leader {node}: the leader owns the ring and must stay a member"
            )));
        }
        let Ok(at) = self.target().binary_search(node) else {
            return Err(membership(format!(
                "{node} is already leaving in the running change (epoch {}: {})",
                self.epoch,
                self.describe_change()
            )));
        };
        let left = self.target().len().saturating_sub(1);
        let need = self.replication.w.max(self.replication.r);
        if left < need {
            return Err(membership(format!(
                "cannot remove {node}: {left} member(s) would be left, fewer than the {need} \
                 that every write (W = {}) and read (R = {}) needs",
                self.replication.w, self.replication.r
            )));
        }
        let mut next = self.next_epoch()?;
        let mut target = self.target().to_vec();
        target.remove(at);
        let started_ms = self.transition.as_ref().map_or(now_ms, |t| t.started_ms);
        next.transition = Some(Transition { target, started_ms });
        Ok(next)
    }

    /// The next epoch's state in which the node `node`, which the running
    /// change adds, no longer joins: recorded as [`DepartureKind::Aborted`].
    /// When the change did nothing else it ends ([`RingState::abort`]).
    fn abort_join(&self, node: &NodeId) -> Result<RingState> {
        let mut target = self.target().to_vec();
        target.retain(|n| n != node);
        if target == self.members {
            return self.abort();
        }
        let mut next = self.next_epoch()?;
        next.depart(node, DepartureKind::Aborted);
        next.identities.remove(node);
        if let Some(t) = next.transition.as_mut() {
            t.target = target;
        }
        Ok(next)
    }

    /// The next epoch's state ending the running change without completing
    /// it: the ring keeps the members it had before the change (`members`,
    /// which a change never alters until it settles), nodes it was adding are
    /// recorded as [`DepartureKind::Aborted`], and nodes it was removing stay.
    ///
    /// Nothing acknowledged is lost by going back: while the change ran,
    /// every write was acknowledged only with W acks among the key's owners
    /// before the change, and those owners are the owners again. What the
    /// joining nodes received is a copy; what the staying members received as
    /// new owners is handed back by their clean-up of this epoch.
    ///
    /// Fails with [`Error::Membership`] when no change runs.
    pub fn abort(&self) -> Result<RingState> {
        if self.transition.is_none() {
            return Err(membership(format!(
                "no ring change is running (epoch {})",
                self.epoch
            )));
        }
        let joining = self.joining();
        let mut next = self.next_epoch()?;
        for node in &joining {
            next.depart(node, DepartureKind::Aborted);
        }
        next.transition = None;
        let members = next.members.clone();
        next.identities
            .retain(|node, _| members.binary_search(node).is_ok());
        Ok(next)
    }

    /// Records that `node` left this epoch, with the identity the ring knew.
    fn depart(&mut self, node: &NodeId, kind: DepartureKind) {
        let departure = Departure {
            epoch: self.epoch,
            identity: self.identities.get(node).copied(),
            kind,
        };
        self.departed.insert(node.clone(), departure);
    }

    /// The next epoch's state ending the running change: the target becomes
    /// the ring, identities of nodes that left are forgotten, and each node
    /// that left is recorded as [`DepartureKind::Left`], or as
    /// [`DepartureKind::Removed`] when it is in `unreported` (the leader
    /// settled without its report that its transfer was done).
    ///
    /// Fails with [`Error::Membership`] when no change runs.
    pub fn settle(&self, unreported: &[NodeId]) -> Result<RingState> {
        let Some(transition) = &self.transition else {
            return Err(membership(format!(
                "no ring change is running (epoch {})",
                self.epoch
            )));
        };
        let leaving = self.leaving();
        let mut next = self.next_epoch()?;
        for node in &leaving {
            let kind = if unreported.contains(node) {
                DepartureKind::Removed
            } else {
                DepartureKind::Left
            };
            next.depart(node, kind);
        }
        next.members = transition.target.clone();
        next.transition = None;
        next.identities
            .retain(|node, _| transition.target.binary_search(node).is_ok());
        Ok(next)
    }

    /// The next epoch's state with `node` added at once, with no transition
    /// (a ring that holds no data yet, and tests of placement).
    pub fn with_member(&self, node: NodeId) -> Result<RingState> {
        let mut next = self.begin_add(node, None, 0)?.settle(&[])?;
        next.epoch = self.epoch.saturating_add(1);
        Ok(next)
    }

    /// The next epoch's state with `node` removed at once, with no transition.
    pub fn without_member(&self, node: &NodeId) -> Result<RingState> {
        let mut next = self.begin_remove(node, 0)?.settle(&[])?;
        next.epoch = self.epoch.saturating_add(1);
        if let Some(d) = next.departed.get_mut(node) {
            d.epoch = next.epoch;
        }
        Ok(next)
    }

    /// Checks the invariants of a state decoded from disk or received from a
    /// peer: epoch at least 1, members sorted and unique and at most
    /// [`MAX_MEMBERS`], every identity a well-formed `HOST:PORT`, the leader a
    /// member, `tokens_per_node` in
    /// `1..=`[`MAX_TOKENS_PER_NODE`], replication valid; a transition's target
    /// likewise, keeping the leader and differing from the members; node
    /// identities only for nodes of either ring, and never one UUID twice.
    ///
    /// Fails with [`Error::InvalidInput`] naming the first broken invariant.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| {
            Error::invalid(format!("invalid ring state (epoch {}): {why}", self.epoch))
        };
        if self.epoch == 0 {
            return Err(bad("epoch 0 is never committed".into()));
        }
        check_members(&self.members).map_err(bad)?;
        // NodeId's serde form is a bare string: a decoded id has not been
        // through its parser yet.
        for id in self.members.iter().chain([&self.leader]) {
            if let Err(e) = id.as_str().parse::<NodeId>() {
                return Err(bad(e.to_string()));
            }
        }
        if self.members.binary_search(&self.leader).is_err() {
            return Err(bad(format!("the leader {} is not a member", self.leader)));
        }
        if let Some(t) = &self.transition {
            check_members(&t.target).map_err(|why| bad(format!("transition target: {why}")))?;
            for id in &t.target {
                if let Err(e) = id.as_str().parse::<NodeId>() {
                    return Err(bad(e.to_string()));
                }
            }
            if t.target.binary_search(&self.leader).is_err() {
                return Err(bad(format!(
                    "the transition removes the leader {}",
                    self.leader
                )));
            }
            if t.target == self.members {
                return Err(bad("the transition changes nothing".into()));
            }
        }
        let all = self.all_nodes();
        let mut uuids = std::collections::BTreeSet::new();
        for (node, uuid) in &self.identities {
            if all.binary_search(node).is_err() {
                return Err(bad(format!("identity for {node}, which is not a member")));
            }
            if !uuids.insert(uuid) {
                return Err(bad(format!("identity {uuid} is given to two nodes")));
            }
        }
        if let Some(node) = self.departed.keys().find(|n| all.binary_search(n).is_ok()) {
            return Err(bad(format!(
                "{node} is recorded as departed but is in the ring"
            )));
        }
        if !(1..=MAX_TOKENS_PER_NODE).contains(&self.tokens_per_node) {
            return Err(bad(format!(
                "tokens_per_node is {}, it must be between 1 and {MAX_TOKENS_PER_NODE}",
                self.tokens_per_node
            )));
        }
        self.replication
            .validate()
            .map_err(|e| bad(format!("replication: {e}")))
    }

    /// A copy with the epoch advanced by one.
    fn next_epoch(&self) -> Result<RingState> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or_else(|| membership("the ring epoch cannot advance past u64::MAX".into()))?;
        Ok(RingState {
            epoch,
            ..self.clone()
        })
    }
}

/// Checks that a member list is sorted, unique and within [`MAX_MEMBERS`].
fn check_members(members: &[NodeId]) -> std::result::Result<(), String> {
    if members.len() > MAX_MEMBERS {
        return Err(format!(
            "{} members, the limit is {MAX_MEMBERS}",
            members.len()
        ));
    }
    if members.is_empty() {
        return Err("no members".into());
    }
    for pair in members.windows(2) {
        if let [a, b] = pair {
            if a == b {
                return Err(format!("member {a} is listed twice"));
            }
            if a > b {
                return Err(format!("members are not sorted ({a} before {b})"));
            }
        }
    }
    Ok(())
}

fn membership(reason: String) -> Error {
    Error::Membership { reason }
}

/// `a b c`, for messages.
fn join_ids(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(NodeId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One virtual node: a position on the ring and the index of its member in
/// the table's member list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Token {
    position: u64,
    member: usize,
}

/// The token table of one membership: every member's tokens, sorted.
#[derive(Clone, Debug)]
struct Table {
    /// Sorted, unique.
    members: Vec<NodeId>,
    /// Every member's tokens, sorted by `(position, member)`. Members are
    /// sorted, so ties on position are broken by node identity.
    tokens: Vec<Token>,
}

impl Table {
    /// Token `i` of node `n` is at `xxh3_64("{n}#{i}")` for `i` in
    /// `0..per_node`.
    fn new(mut members: Vec<NodeId>, per_node: u32) -> Table {
        members.sort();
        members.dedup();
        let per_node = per_node.clamp(1, MAX_TOKENS_PER_NODE);
        let capacity = usize::try_from(per_node)
            .ok()
            .and_then(|t| t.checked_mul(members.len()))
            .unwrap_or(0);
        let mut tokens = Vec::with_capacity(capacity);
        let mut label = String::new();
        for (member, node) in members.iter().enumerate() {
            for i in 0..per_node {
                label.clear();
                // Writing to a String cannot fail.
                let _ = write!(label, "{node}#{i}");
                tokens.push(Token {
                    position: xxh3_64(label.as_bytes()),
                    member,
                });
            }
        }
        tokens.sort_unstable();
        Table { members, tokens }
    }

    /// The index of the first token at or after `position`; `tokens.len()`
    /// when every token is before it (the walk then wraps to index 0).
    fn first_token_at_or_after(&self, position: u64) -> usize {
        self.tokens.partition_point(|t| t.position < position)
    }

    /// The first node clockwise from the key (`None` on an empty table).
    fn owner(&self, key: &[u8]) -> Option<&NodeId> {
        let start = self.first_token_at_or_after(key_position(key));
        // Past the last token, the ring wraps to the first.
        let token = self.tokens.get(start).or_else(|| self.tokens.first())?;
        self.members.get(token.member)
    }

    /// The first `limit` distinct members clockwise from the key's position
    /// (fewer if the table has fewer members).
    fn clockwise(&self, key: &[u8], limit: usize) -> Vec<NodeId> {
        self.clockwise_at(key_position(key), limit)
    }

    /// True if a token lies in `lo..=hi`.
    fn has_token_in(&self, lo: u64, hi: u64) -> bool {
        self.tokens
            .get(self.first_token_at_or_after(lo))
            .is_some_and(|t| t.position <= hi)
    }

    /// The positions of the tokens in `[lo, hi]`, in order.
    fn token_positions_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = u64> + '_ {
        self.tokens
            .get(self.first_token_at_or_after(lo)..)
            .unwrap_or_default()
            .iter()
            .map(|t| t.position)
            .take_while(move |p| *p <= hi)
    }

    /// The first `limit` distinct members clockwise from `position`.
    fn clockwise_at(&self, position: u64, limit: usize) -> Vec<NodeId> {
        let members = &self.members;
        let want = limit.min(members.len());
        let mut out = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        let start = self.first_token_at_or_after(position);
        let (before, after) = self
            .tokens
            .split_at_checked(start)
            .unwrap_or((&self.tokens, &[]));
        let mut seen = [0u64; SEEN_WORDS];
        for token in after.iter().chain(before) {
            let Some(node) = members.get(token.member) else {
                continue;
            };
            let fresh = match seen.get_mut(token.member / 64) {
                Some(word) => {
                    let bit = 1u64 << (token.member % 64);
                    let fresh = *word & bit == 0;
                    *word |= bit;
                    fresh
                }
                // Only reachable for an unvalidated ring above MAX_MEMBERS:
                // correct, just slower.
                None => !out.contains(node),
            };
            if fresh {
                out.push(node.clone());
                if out.len() == want {
                    break;
                }
            }
        }
        out
    }
}

/// An immutable ring built from a [`RingState`]: the token table of the
/// current members and, during a change, of the target members.
///
/// Built once per epoch and shared behind an `Arc` by the request path.
#[derive(Clone, Debug)]
pub struct Ring {
    state: RingState,
    current: Table,
    /// The target membership's table while a change runs.
    target: Option<Table>,
}

impl Ring {
    /// Builds the token tables.
    ///
    /// Never panics. The state should have passed [`RingState::validate`];
    /// if it has not, the ring is still made consistent: members are sorted
    /// and deduplicated, and the token count is clamped to
    /// `1..=`[`MAX_TOKENS_PER_NODE`] (so every member has a token and the
    /// table stays bounded). [`Ring::state`] returns the state so adjusted.
    pub fn new(mut state: RingState) -> Ring {
        state.members.sort();
        state.members.dedup();
        state.tokens_per_node = state.tokens_per_node.clamp(1, MAX_TOKENS_PER_NODE);
        if let Some(t) = &mut state.transition {
            t.target.sort();
            t.target.dedup();
        }
        let current = Table::new(state.members.clone(), state.tokens_per_node);
        let target = state
            .transition
            .as_ref()
            .map(|t| Table::new(t.target.clone(), state.tokens_per_node));
        Ring {
            state,
            current,
            target,
        }
    }

    /// The state this ring was built from.
    pub fn state(&self) -> &RingState {
        &self.state
    }

    /// The membership epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// The node that owns the ring.
    pub fn leader(&self) -> &NodeId {
        &self.state.leader
    }

    /// Every member of the current ring, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.state.members
    }

    /// The change in progress, if any.
    pub fn transition(&self) -> Option<&Transition> {
        self.state.transition.as_ref()
    }

    /// The cluster's N/W/R.
    pub fn replication(&self) -> Replication {
        self.state.replication
    }

    /// Whether `node` belongs to the current or the target ring.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.state.members.binary_search(node).is_ok()
            || self
                .target
                .as_ref()
                .is_some_and(|t| t.members.binary_search(node).is_ok())
    }

    /// The identity `node` was added with, if the ring knows it.
    pub fn identity(&self, node: &NodeId) -> Option<Uuid> {
        self.state.identities.get(node).copied()
    }

    /// The key's preference list in the current ring: the first N distinct
    /// physical nodes clockwise from the key's position (every member, in ring
    /// order, when there are fewer than N). N is `replication.n`.
    pub fn preference_list(&self, key: &[u8]) -> Vec<NodeId> {
        self.current.clockwise(key, self.state.replication.n)
    }

    /// The key's owners once the running change settles (the preference list
    /// when none runs).
    pub fn owners_after(&self, key: &[u8]) -> Vec<NodeId> {
        match &self.target {
            Some(t) => t.clockwise(key, self.state.replication.n),
            None => self.preference_list(key),
        }
    }

    /// Every member of the current ring, each once, in clockwise order from
    /// the key's position: the preference list first, then the fallbacks.
    pub fn walk(&self, key: &[u8]) -> Vec<NodeId> {
        self.current.clockwise(key, self.current.members.len())
    }

    /// The first node of the key's preference list (`None` on an empty ring).
    pub fn owner(&self, key: &[u8]) -> Option<&NodeId> {
        self.current.owner(key)
    }

    /// The key's pending owners: its owners after the running change that are
    /// not its owners now (empty when no change runs or the key does not move).
    /// The same as [`Placement::pending`], cheaper: two walks of N nodes.
    pub fn pending_owners(&self, key: &[u8]) -> Vec<NodeId> {
        let Some(target) = &self.target else {
            return Vec::new();
        };
        let n = self.state.replication.n;
        let now = self.current.clockwise(key, n);
        let mut next = target.clockwise(key, n);
        next.retain(|node| !now.contains(node));
        next
    }

    /// The owners of the keys at `position` in the current ring (its
    /// preference list). Anti-entropy compares a key between exactly these
    /// nodes; during a change, the transfer brings it to its pending owners.
    pub fn owners_at(&self, position: u64) -> Vec<NodeId> {
        self.current
            .clockwise_at(position, self.state.replication.n)
    }

    /// The fraction of the hash space whose keys `node` keeps a replica of in
    /// the current ring: about N / members with enough tokens, 0 outside it.
    pub fn share(&self, node: &NodeId) -> f64 {
        let n = self.state.replication.n;
        let tokens = &self.current.tokens;
        let mut owned: u128 = 0;
        for (i, token) in tokens.iter().enumerate() {
            // The range ending at this token, from the previous one (the last
            // token for the first, across the wrap).
            let prev = match i.checked_sub(1).and_then(|j| tokens.get(j)) {
                Some(p) => p.position,
                None => tokens.last().map_or(0, |l| l.position),
            };
            let len = u128::from(token.position.wrapping_sub(prev));
            // One token alone owns the whole ring.
            let len = if tokens.len() == 1 { 1u128 << 64 } else { len };
            if self.current.clockwise_at(token.position, n).contains(node) {
                owned += len;
            }
        }
        owned as f64 / (1u128 << 64) as f64
    }

    /// The nodes that share a preference list with `node` in the current ring
    /// or, during a change, in the target ring (`node` left out): the peers its
    /// replicas are compared and its requests are sent to. Each token starts
    /// one range, so this is one walk of N nodes per token of each table.
    pub fn neighbours(&self, node: &NodeId) -> Vec<NodeId> {
        let n = self.state.replication.n;
        let mut out = std::collections::BTreeSet::new();
        for table in std::iter::once(&self.current).chain(&self.target) {
            for token in &table.tokens {
                let owners = table.clockwise_at(token.position, n);
                if owners.contains(node) {
                    out.extend(owners.into_iter().filter(|o| o != node));
                }
            }
        }
        out.into_iter().collect()
    }

    /// True when every position in `lo..=hi` has the same owners: no token of
    /// the current table lies in `lo..hi` (a token at `hi` itself is the first
    /// token of every position in the range).
    pub fn same_owners(&self, lo: u64, hi: u64) -> bool {
        lo >= hi || !self.current.has_token_in(lo, hi - 1)
    }

    /// True if every position in `[lo, hi]` is kept by the same set of nodes in
    /// the current ring, in whatever order their preference lists name them: a
    /// range [`Ring::same_owners`] calls split (a token falls inside it) may
    /// still be kept whole by the same nodes, as every range is when N is the
    /// ring's size. The owners change only just past a token.
    pub fn same_owner_set(&self, lo: u64, hi: u64) -> bool {
        if self.same_owners(lo, hi) {
            return true;
        }
        let n = self.state.replication.n;
        let set = |position: u64| {
            let mut owners = self.current.clockwise_at(position, n);
            owners.sort();
            owners
        };
        let first = set(lo);
        self.current
            .token_positions_in(lo, hi - 1)
            .all(|t| set(t + 1) == first)
    }

    /// Where the key lives in this epoch: its replicas, the pending owners a
    /// running change is moving it to, and the stand-ins (see the module
    /// documentation).
    pub fn placement(&self, key: &[u8]) -> Placement {
        let n = self.state.replication.n;
        match &self.target {
            None => {
                let mut walk = self.walk(key);
                let fallbacks = walk.split_off(n.min(walk.len()));
                Placement::settled(walk, fallbacks)
            }
            Some(target) => {
                let replicas = self.preference_list(key);
                let mut walk = target.clockwise(key, target.members.len());
                let rest = walk.split_off(n.min(walk.len()));
                let next = walk;
                let pending: Vec<NodeId> = next
                    .iter()
                    .filter(|node| !replicas.contains(node))
                    .cloned()
                    .collect();
                // Only members that stay stand in: a leaving node would carry
                // the hint out of the ring, and a joining one would hold the
                // only stand-in copy of a write if its join were aborted.
                let fallbacks: Vec<NodeId> = rest
                    .into_iter()
                    .filter(|node| {
                        !replicas.contains(node) && self.state.members.binary_search(node).is_ok()
                    })
                    .collect();
                Placement::moving(replicas, pending, next, fallbacks)
            }
        }
    }
}
