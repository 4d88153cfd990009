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
//! leader's N/W/R are the cluster's) and the token count. Each change
//! ([`RingState::with_member`], [`RingState::without_member`]) makes a new
//! state with the next epoch; the state is persisted and sent as is (serde).
//! A state read from disk or received from a peer is checked with
//! [`RingState::validate`] before it is used. [`Ring`] is the immutable,
//! precomputed form that the request path shares behind an `Arc`, built once
//! per epoch with [`Ring::new`].
//!
//! # Invariants
//!
//! - `members` is sorted and unique, the leader is one of them, there are at
//!   most [`MAX_MEMBERS`], `tokens_per_node` is in `1..=`[`MAX_TOKENS_PER_NODE`],
//!   the replication settings are valid, and the epoch is at least 1
//!   ([`RingState::validate`]).
//! - Every member has at least one token in a [`Ring`], so a walk that has not
//!   yet found every member always finds the next one within one lap.
//! - The same [`RingState`] gives the same token table and the same preference
//!   lists, in every process.
//!
//! # Cost per request
//!
//! [`Ring::new`] hashes every token once. [`Ring::preference_list`] and
//! [`Ring::walk`] hash only the key, binary-search the table for the first
//! token, and step clockwise at most one lap, remembering the nodes already
//! taken in a 256-bit set on the stack. The only allocation is the result
//! (a vector of cloned identities).
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
//!   are up. Skipping down nodes is the coordinator's job, using [`Ring::walk`].

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::types::{NodeId, Replication, MAX_CONTEXT_ENTRIES};

mod cell;
pub use cell::RingCell;

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
    /// Every member, sorted and without duplicates.
    pub members: Vec<NodeId>,
    /// N/W/R: the leader's values are the cluster's.
    pub replication: Replication,
    /// Tokens (virtual nodes) per member.
    pub tokens_per_node: u32,
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
        }
    }

    /// The next epoch's state with `node` added.
    ///
    /// Fails with [`Error::Membership`] if `node` is already a member or the
    /// ring already has [`MAX_MEMBERS`] members.
    pub fn with_member(&self, node: NodeId) -> Result<RingState> {
        let at = match self.members.binary_search(&node) {
            Ok(_) => {
                return Err(membership(format!(
                    "{node} is already a member of the ring (epoch {})",
                    self.epoch
                )))
            }
            Err(at) => at,
        };
        if self.members.len() >= MAX_MEMBERS {
            return Err(membership(format!(
                "cannot add {node}: the ring already has {} members, the limit is {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        let mut next = self.next_epoch()?;
        next.members.insert(at, node);
        Ok(next)
    }

    /// The next epoch's state with `node` removed.
    ///
    /// Fails with [`Error::Membership`] if `node` is not a member or is the
    /// leader (the leader owns the ring and cannot hand itself out of it).
    pub fn without_member(&self, node: &NodeId) -> Result<RingState> {
        let Ok(at) = self.members.binary_search(node) else {
            return Err(membership(format!(
                "{node} is not a member of the ring (epoch {})",
                self.epoch
            )));
        };
        if *node == self.leader {
            return Err(membership(format!(
                "cannot remove the leader {node}: the leader owns the ring and must stay a member"
            )));
        }
        let mut next = self.next_epoch()?;
        next.members.remove(at);
        Ok(next)
    }

    /// Checks the invariants of a state decoded from disk or received from a
    /// peer: epoch at least 1, members sorted and unique and at most
    /// [`MAX_MEMBERS`], every identity a well-formed `HOST:PORT`, the leader a
    /// member, `tokens_per_node` in
    /// `1..=`[`MAX_TOKENS_PER_NODE`], replication valid.
    ///
    /// Fails with [`Error::InvalidInput`] naming the first broken invariant.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| {
            Error::invalid(format!("invalid ring state (epoch {}): {why}", self.epoch))
        };
        if self.epoch == 0 {
            return Err(bad("epoch 0 is never committed".into()));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(bad(format!(
                "{} members, the limit is {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        for pair in self.members.windows(2) {
            if let [a, b] = pair {
                if a == b {
                    return Err(bad(format!("member {a} is listed twice")));
                }
                if a > b {
                    return Err(bad(format!("members are not sorted ({a} before {b})")));
                }
            }
        }
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

fn membership(reason: String) -> Error {
    Error::Membership { reason }
}

/// One virtual node: a position on the ring and the index of its member in
/// `RingState::members`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Token {
    position: u64,
    member: usize,
}

/// An immutable ring built from a [`RingState`]: the sorted token table.
///
/// Built once per epoch and shared behind an `Arc` by the request path.
#[derive(Clone, Debug)]
pub struct Ring {
    state: RingState,
    /// Every member's tokens, sorted by `(position, member)`. Members are
    /// sorted, so ties on position are broken by node identity.
    tokens: Vec<Token>,
}

impl Ring {
    /// Builds the token table: token `i` of node `n` is at
    /// `xxh3_64("{n}#{i}")` for `i` in `0..tokens_per_node`.
    ///
    /// Never panics. The state should have passed [`RingState::validate`];
    /// if it has not, the ring is still made consistent: members are sorted
    /// and deduplicated, and the token count is clamped to
    /// `1..=`[`MAX_TOKENS_PER_NODE`] (so every member has a token and the
    /// table stays bounded). [`Ring::state`] returns the state so adjusted.
    pub fn new(mut state: RingState) -> Ring {
        state.members.sort();
        state.members.dedup();
        let per_node = state.tokens_per_node.clamp(1, MAX_TOKENS_PER_NODE);
        let capacity = usize::try_from(per_node)
            .ok()
            .and_then(|t| t.checked_mul(state.members.len()))
            .unwrap_or(0);
        let mut tokens = Vec::with_capacity(capacity);
        let mut label = String::new();
        for (member, node) in state.members.iter().enumerate() {
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
        Ring { state, tokens }
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

    /// Every member, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.state.members
    }

    /// The cluster's N/W/R.
    pub fn replication(&self) -> Replication {
        self.state.replication
    }

    /// Whether `node` is a member in this epoch.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.state.members.binary_search(node).is_ok()
    }

    /// The key's preference list: the first N distinct physical nodes
    /// clockwise from the key's position (every member, in ring order, when
    /// there are fewer than N). N is `replication.n`.
    pub fn preference_list(&self, key: &[u8]) -> Vec<NodeId> {
        self.clockwise(key, self.state.replication.n)
    }

    /// Every member, each once, in clockwise order from the key's position:
    /// the preference list first, then the fallbacks (the nodes that stand in
    /// under sloppy quorum, nearest first).
    pub fn walk(&self, key: &[u8]) -> Vec<NodeId> {
        self.clockwise(key, self.state.members.len())
    }

    /// The first node of the key's preference list (`None` on an empty ring).
    pub fn owner(&self, key: &[u8]) -> Option<&NodeId> {
        let start = self.first_token_at_or_after(key_position(key));
        // Past the last token, the ring wraps to the first.
        let token = self.tokens.get(start).or_else(|| self.tokens.first())?;
        self.state.members.get(token.member)
    }

    /// The index of the first token at or after `position`; `tokens.len()`
    /// when every token is before it (the walk then wraps to index 0).
    fn first_token_at_or_after(&self, position: u64) -> usize {
        self.tokens.partition_point(|t| t.position < position)
    }

    /// The first `limit` distinct members clockwise from the key's position
    /// (fewer if the ring has fewer members).
    fn clockwise(&self, key: &[u8], limit: usize) -> Vec<NodeId> {
        let members = &self.state.members;
        let want = limit.min(members.len());
        let mut out = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        let start = self.first_token_at_or_after(key_position(key));
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
