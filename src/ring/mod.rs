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
//! identity (the UUID of its data directory), the ring change in
//! progress, if any, the users and the buckets ([`bucket`]: each key takes
//! its N from its bucket, [`Ring::n_of`]). The state is persisted and sent as is (serde). A state
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
use crate::types::{NodeId, Replication};

mod bucket;
mod cell;
mod legacy;
mod placement;
mod state;
pub use bucket::{
    check_bucket_name, parse_size, Bucket, BucketSpec, Buckets, StorageKind, DEFAULT_BUCKET,
    MAX_BUCKETS,
};
pub use cell::RingCell;
pub use legacy::{RingStateV4, RingStateV5};
pub use placement::{Placement, Quorum};
pub use state::{actor_name, Departure, DepartureKind, Incarnation, RingState, Transition};

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
/// received from a peer or read from disk bounded (a full ring of
/// [`MAX_MEMBERS`] at this count is four million entries, 64 MiB): a corrupt
/// count cannot make a node allocate without limit.
pub const MAX_TOKENS_PER_NODE: u32 = 4096;

/// The most members a ring may have.
///
/// Not tied to [`crate::types::MAX_CONTEXT_ENTRIES`]: a context names the
/// nodes that coordinated writes of one key, which are that key's owners (and
/// stand-ins) over its life, not the ring. A key changes owners only when a
/// ring change moves it (about N of every n changes in an n-node ring), so
/// reaching 256 actors on one key takes tens of thousands of ring changes in
/// a large ring; a put that would cross the limit is refused with a clear
/// error, never silently truncated.
pub const MAX_MEMBERS: usize = 1024;

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
    /// Each bucket's N/W/R by id (see [`bucket`]); empty without buckets, so
    /// a key of the default bucket never looks here.
    buckets: std::collections::HashMap<u32, Replication>,
    /// The largest N of the ring and its buckets.
    max_n: usize,
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
        let buckets: std::collections::HashMap<u32, Replication> = state
            .buckets
            .by_name
            .values()
            .map(|b| (b.id, b.replication()))
            .collect();
        let max_n = buckets
            .values()
            .map(|r| r.n)
            .fold(state.replication.n, usize::max);
        Ring {
            state,
            current,
            target,
            buckets,
            max_n,
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

    /// The N/W/R of `key`: its bucket's ([`bucket`]), or the ring's for a
    /// key of the default bucket or of a bucket this ring does not have.
    pub fn replication_of(&self, key: &[u8]) -> Replication {
        if self.buckets.is_empty() || key.first() != Some(&0) {
            return self.state.replication;
        }
        std::str::from_utf8(key)
            .ok()
            .and_then(crate::types::split_bucket_key)
            .and_then(|(id, _)| self.buckets.get(&id).copied())
            .unwrap_or(self.state.replication)
    }

    /// How many replicas `key` has: its bucket's N ([`Ring::replication_of`]).
    pub fn n_of(&self, key: &[u8]) -> usize {
        self.replication_of(key).n
    }

    /// The largest N of the ring and its buckets.
    pub fn max_n(&self) -> usize {
        self.max_n
    }

    /// The bucket called `name` (None for `default` and for a name the ring
    /// does not have).
    pub fn bucket(&self, name: &str) -> Option<&Bucket> {
        self.state.buckets.by_name.get(name)
    }

    /// The key the ring stores `key` of bucket `bucket` under (see
    /// [`bucket`]): `key` itself in the default bucket. Checks the key as a
    /// user's key and that the bucket exists.
    pub fn address(&self, bucket: &str, key: &str) -> Result<crate::types::Key> {
        crate::types::check_user_key(key)?;
        if bucket == DEFAULT_BUCKET {
            return Ok(key.to_string());
        }
        match self.bucket(bucket) {
            Some(b) => Ok(crate::types::bucket_key(b.id, key)),
            None => Err(Error::NoSuchBucket {
                bucket: bucket.to_string(),
            }),
        }
    }

    /// The bucket `key` is stored in (None: the default bucket), by name.
    /// A key marked as a bucket's whose bucket this ring does not have (never
    /// created, or dropped) is refused with [`Error::NoSuchBucket`].
    pub fn bucket_of_key(&self, key: &str) -> Result<Option<(&str, &Bucket)>> {
        if !key.starts_with(crate::types::BUCKET_MARK) {
            return Ok(None);
        }
        let missing = |what: String| Error::NoSuchBucket { bucket: what };
        let (id, _) = crate::types::split_bucket_key(key)
            .ok_or_else(|| missing("(a malformed bucket key)".into()))?;
        match self.state.buckets.by_id(id) {
            Some(found) => Ok(Some(found)),
            None => Err(missing(format!("#{id} (dropped, or not yet known here)"))),
        }
    }

    /// The fraction of the hash space whose keys `node` keeps a replica of,
    /// for keys with `n` replicas ([`Ring::share`] for the ring's N).
    pub fn share_n(&self, node: &NodeId, n: usize) -> f64 {
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

    /// The key's preference list in the current ring: the first N distinct
    /// physical nodes clockwise from the key's position (every member, in ring
    /// order, when there are fewer than N). N is the key's
    /// ([`Ring::n_of`]).
    pub fn preference_list(&self, key: &[u8]) -> Vec<NodeId> {
        self.current.clockwise(key, self.n_of(key))
    }

    /// The key's owners once the running change settles (the preference list
    /// when none runs).
    pub fn owners_after(&self, key: &[u8]) -> Vec<NodeId> {
        match &self.target {
            Some(t) => t.clockwise(key, self.n_of(key)),
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
        let n = self.n_of(key);
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
        self.share_n(node, self.state.replication.n)
    }

    /// The nodes that share a preference list with `node` in the current ring
    /// or, during a change, in the target ring (`node` left out): the peers its
    /// replicas are compared and its requests are sent to. Each token starts
    /// one range, so this is one walk of N nodes per token of each table.
    pub fn neighbours(&self, node: &NodeId) -> Vec<NodeId> {
        let n = self.max_n;
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

    /// Which arc of the current ring `position` lies on: the index of the
    /// first token at or after it, wrapping to 0 past the last. Positions on
    /// one arc have the same owners ([`Ring::owners_at`]), so a walk over many
    /// positions need look the owners up once per arc.
    pub fn arc_at(&self, position: u64) -> usize {
        let i = self.current.first_token_at_or_after(position);
        if i >= self.current.tokens.len() {
            0
        } else {
            i
        }
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

    /// The owners of each part of `[lo, hi]` in the current ring, in order:
    /// the owners at `lo`, then just past each token inside the range (the
    /// owners change only there). A range may hold several tokens, and a
    /// node may own only a part between two of them.
    pub fn owner_lists_in(&self, lo: u64, hi: u64) -> Vec<Vec<NodeId>> {
        self.owner_lists_in_n(lo, hi, self.state.replication.n)
    }

    /// [`Ring::owner_lists_in`] for keys with `n` replicas.
    pub fn owner_lists_in_n(&self, lo: u64, hi: u64, n: usize) -> Vec<Vec<NodeId>> {
        let mut out = vec![self.current.clockwise_at(lo, n)];
        if lo < hi {
            out.extend(
                self.current
                    .token_positions_in(lo, hi - 1)
                    .map(|t| self.current.clockwise_at(t + 1, n)),
            );
        }
        out
    }

    /// Where the key lives in this epoch: its replicas, the pending owners a
    /// running change is moving it to, and the stand-ins (see the module
    /// documentation).
    pub fn placement(&self, key: &[u8]) -> Placement {
        let n = self.n_of(key);
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
