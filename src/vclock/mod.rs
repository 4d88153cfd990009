//! Causality for one key: version vectors, dots, siblings and the causal merge.
//!
//! # What it owns
//!
//! Dynamo tags every version of a key with a vector clock so that replicas can
//! tell a newer version (which replaces an older one) from a concurrent one
//! (which must be kept beside it as a *sibling* until a client resolves it).
//! This module is that bookkeeping, for one key at a time, with no I/O: the
//! storage layer persists an [`Object`], the coordinator calls
//! [`Object::update`] for a put or a delete and [`Object::merge`] to combine the
//! answers of replicas, and the client sees the object's *context* as JSON.
//!
//! # Dots and the causal context
//!
//! A plain version vector per version is not precise enough. If a coordinator
//! stamps each write with "the client's context plus one tick of my entry", two
//! blind puts (`put k {} a`, then `put k {} b`) on the same coordinator get
//! `{n1:1}` and `{n1:2}`, the second seems to descend from the first, and `a`
//! is silently lost although the client that wrote `b` never saw it. Riak
//! called this the "false causality" problem. We therefore use the dotted form
//! of Almeida, Baquero et al. (dotted version vectors, as in Riak 2.0's DVVSet
//! and the "MVRegister with causal context" of delta CRDTs):
//!
//! * a [`Dot`] `(node, counter)` names one write event: the coordinator `node`
//!   and the counter it took for this key. Dots are unique, so the same dot
//!   always carries the same content, on every replica;
//! * a [`VersionVector`] `{node: n}` is read as the downward-closed *set* of
//!   dots `{(node, 1..=n)}`; it is the client's *context* and the object's
//!   record of everything it has seen;
//! * an [`Object`] is the pair (context, siblings): the siblings are the
//!   versions still alive, each with its own dot; the context covers every dot
//!   this replica has seen for the key, including those of versions since
//!   replaced.
//!
//! Keeping the dot of a version apart from the context is what makes the two
//! blind puts above concurrent: the second gets dot `(n1,2)` but its client saw
//! `{}`, so only siblings whose dots `{}` covers (none) are replaced and both
//! stay. A later put with the merged context `{n1:2}` replaces both.
//!
//! # The two operations
//!
//! **Update** (a coordinator's put or delete by `actor` with the client's
//! context `seen`): drop the siblings whose dots `seen` covers (the client saw
//! them, so the new version descends from them); take a fresh dot
//! `(actor, max(context[actor], seen[actor], floor) + 1)`; add it, and `seen`,
//! to the context; add the new sibling. A delete is the same with
//! [`Content::Tombstone`], so it replaces exactly what the client saw and a
//! concurrent put survives it.
//!
//! **Merge** (two replicas' views of the key, e.g. read repair, anti-entropy,
//! a coordinator combining R answers): a sibling of one side is kept if the
//! other side holds the same dot, or if the other side's context does not
//! cover it (the other side never saw it). A sibling that one side's context
//! covers but that side does not hold was seen there and replaced, so it goes.
//! The context becomes the pointwise maximum. This is the join of a
//! semilattice: commutative, associative and idempotent, so replicas converge
//! whatever order or how often they exchange state.
//!
//! # Invariants
//!
//! * A [`VersionVector`] never stores an entry with counter 0 (it would mean the
//!   empty set of dots, and would make equal vectors compare unequal).
//! * An [`Object`]'s siblings are sorted by dot with no two sharing a dot, and
//!   the object's context covers every sibling's dot. Everything that builds an
//!   object from untrusted parts (disk, a peer) goes through
//!   [`Object::from_parts`], which restores these, and `Deserialize` is
//!   implemented through it.
//! * Dot counters start at 1; a decoded sibling with counter 0 cannot come from
//!   any write and is dropped by [`Object::from_parts`].
//! * A version is discarded only when a context that covers its dot says so:
//!   either a client's `seen` on update, or another replica's context on merge
//!   where that replica does not hold the version.
//!
//! # What it leaves out
//!
//! * **Contexts are version vectors, not arbitrary dot sets.** A context of
//!   `{n1:5}` claims dots `(n1,1)..(n1,5)` all at once, so a coordinator must
//!   never skip counters for a key while another replica might still hold an
//!   unseen sibling with a skipped dot. Dynamo's coordinator writes to its own
//!   replica first, so its local context always holds every dot it issued and
//!   `max(context[actor], ...) + 1` never leaves a gap. The `floor` argument of
//!   [`Object::update`] exists for a coordinator that lost its local copy: it
//!   must never reuse a dot (two contents under one dot would break merge),
//!   which matters more than the small risk of a gap. There is no "dot cloud"
//!   for out-of-order dots.
//! * **No clock truncation.** Dynamo pruned old vector clock entries by
//!   timestamp, which can make a descendant look concurrent (or worse). We keep
//!   every entry: a context names the nodes that coordinated writes of the key,
//!   its owners and stand-ins over its life (a few more each time a ring change
//!   moves it), not every member of the ring. [`MAX_CONTEXT_ENTRIES`] is enforced where
//!   contexts enter from users ([`VersionVector::parse_context`]) and on
//!   [`Object::update`]; decoding and merge accept what they get, since
//!   refusing a merge would stop replicas from converging.
//! * **No sibling limit on merge.** [`MAX_SIBLINGS`] guards a put; concurrent
//!   puts on different replicas can still merge into more siblings, and the
//!   next put is refused until a client resolves them.
//! * **No tombstone collection.** A tombstone stays until a later put with a
//!   context that covers it replaces it; removing tombstones once every replica
//!   has them is left to a later layer.
//! * **No conflict resolution.** Siblings go back to the client; the module
//!   never picks a winner (no last-writer-wins, no timestamps).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{NodeId, Value, MAX_CONTEXT_ENTRIES, MAX_SIBLINGS};

#[cfg(test)]
mod script;
#[cfg(test)]
mod tests;

/// Bytes charged per sibling by [`Object::approx_size`] on top of its value and
/// node id: the dot counter (8), the content tag and the length prefixes of the
/// value and node id (8 each in bincode), rounded up.
const SIBLING_OVERHEAD_BYTES: usize = 32;

/// Bytes charged per context entry by [`Object::approx_size`] on top of its node
/// id: the counter (8) and the node id's length prefix (8).
const CONTEXT_ENTRY_OVERHEAD_BYTES: usize = 16;

/// How a context should look, repeated in every parse error so a person can fix
/// what they typed.
const CONTEXT_EXAMPLE: &str = r#"expected a JSON object such as {} or {"127.0.0.1:13337":1}"#;

/// The most characters of a bad context quoted back in an error.
const QUOTED_INPUT_CHARS: usize = 40;

fn bad_context(reason: impl Into<String>) -> Error {
    Error::BadContext {
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Version vectors
// ---------------------------------------------------------------------------

/// A version vector: node -> highest counter seen. Read as the downward-closed set
/// of dots `{(n, 1..=vv[n])}`. Serialises (serde, transparent) as a JSON object
/// `{"127.0.0.1:13337":2,...}`; entries with counter 0 are never stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

/// Decodes the transparent map and drops zero entries, so a vector read from a
/// peer or the disk keeps the "no zero counter" invariant.
impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut entries = BTreeMap::<NodeId, u64>::deserialize(deserializer)?;
        entries.retain(|_, counter| *counter > 0);
        Ok(VersionVector(entries))
    }
}

impl VersionVector {
    /// The empty vector: no dots seen.
    pub fn new() -> Self {
        VersionVector(BTreeMap::new())
    }

    /// The highest counter seen from `node`, 0 when absent.
    pub fn get(&self, node: &NodeId) -> u64 {
        self.0.get(node).copied().unwrap_or(0)
    }

    /// True if the dot is in the set this vector stands for.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.node) >= dot.counter
    }

    /// Adds a dot (and, by downward closure, every earlier dot of its node).
    pub fn add(&mut self, dot: &Dot) {
        if dot.counter == 0 {
            return;
        }
        let entry = self.0.entry(dot.node.clone()).or_insert(0);
        *entry = (*entry).max(dot.counter);
    }

    /// Pointwise maximum: the union of the two dot sets.
    pub fn merge(&mut self, other: &VersionVector) {
        for (node, &counter) in &other.0 {
            if counter == 0 {
                continue;
            }
            let entry = self.0.entry(node.clone()).or_insert(0);
            *entry = (*entry).max(counter);
        }
    }

    /// True if `self >= other` pointwise: everything `other` has seen, `self` has.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .0
            .iter()
            .all(|(node, &counter)| self.get(node) >= counter)
    }

    /// True if no dot has been seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of nodes with a non-zero counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The entries in node order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, u64)> {
        self.0.iter().map(|(node, &counter)| (node, counter))
    }

    /// Compact JSON without spaces, exactly the client's context format: `{}` or
    /// `{"127.0.0.1:13337":2,"127.0.0.1:13338":1}` (keys in sorted order).
    pub fn to_json(&self) -> String {
        self.to_string()
    }

    /// Parses a context typed by a user: must be a JSON object of node id ("HOST:PORT",
    /// parsed with NodeId's FromStr) -> non-negative integer; counters of 0 dropped;
    /// more than MAX_CONTEXT_ENTRIES entries refused. Errors are Error::BadContext
    /// with a reason a person understands (e.g. `expected a JSON object such as {} or {"127.0.0.1:13337":1}`).
    pub fn parse_context(s: &str) -> Result<Self> {
        let raw: RawContext = serde_json::from_str(s).map_err(|e| json_error(s, &e))?;
        if raw.total > MAX_CONTEXT_ENTRIES {
            return Err(bad_context(format!(
                "the context names {} nodes, the limit is {MAX_CONTEXT_ENTRIES}",
                raw.total
            )));
        }
        let mut entries = BTreeMap::new();
        let mut named = std::collections::BTreeSet::new();
        for (key, counter) in raw.entries {
            let node: NodeId = key.parse().map_err(|e: Error| bad_context(e.to_string()))?;
            if !named.insert(node.clone()) {
                return Err(bad_context(format!("node {node} appears twice")));
            }
            let counter = parse_counter(&node, &counter)?;
            if counter > 0 {
                entries.insert(node, counter);
            }
        }
        Ok(VersionVector(entries))
    }
}

/// Turns a JSON counter into a `u64`, or says in words what is wrong with it.
fn parse_counter(node: &NodeId, counter: &serde_json::Value) -> Result<u64> {
    let what = match counter {
        serde_json::Value::Number(n) => {
            if let Some(c) = n.as_u64() {
                return Ok(c);
            }
            if n.as_i64().is_some() {
                return Err(bad_context(format!(
                    "the counter of {node} is negative ({n}); counters are whole numbers from 0"
                )));
            }
            return Err(bad_context(format!(
                "the counter of {node} is not a whole number from 0 to {} ({n})",
                u64::MAX
            )));
        }
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    Err(bad_context(format!(
        "the counter of {node} must be a whole number, not {what}"
    )))
}

/// Explains a serde_json failure on a user's context in plain words.
fn json_error(input: &str, e: &serde_json::Error) -> Error {
    if input.trim().is_empty() {
        return bad_context(format!("the context is empty; {CONTEXT_EXAMPLE}"));
    }
    if e.is_data() {
        // Valid JSON of the wrong shape: a number, a string, an array...
        let mut quoted: String = input.trim().chars().take(QUOTED_INPUT_CHARS).collect();
        if input.trim().chars().count() > QUOTED_INPUT_CHARS {
            quoted.push_str("...");
        }
        return bad_context(format!("{CONTEXT_EXAMPLE}, got {quoted}"));
    }
    bad_context(format!("not valid JSON ({e}); {CONTEXT_EXAMPLE}"))
}

/// A user's context as typed: the entries in input order (so duplicates can be
/// refused, which a map would hide), at most [`MAX_CONTEXT_ENTRIES`] + 1 of them
/// kept, and the total count.
struct RawContext {
    entries: Vec<(String, serde_json::Value)>,
    total: usize,
}

impl<'de> Deserialize<'de> for RawContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawContextVisitor)
    }
}

struct RawContextVisitor;

impl<'de> Visitor<'de> for RawContextVisitor {
    type Value = RawContext;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawContext, A::Error> {
        let mut entries = Vec::new();
        let mut total = 0usize;
        while total <= MAX_CONTEXT_ENTRIES {
            match map.next_entry::<String, serde_json::Value>()? {
                Some(entry) => {
                    entries.push(entry);
                    total += 1;
                }
                None => return Ok(RawContext { entries, total }),
            }
        }
        // Over the limit: count the rest without keeping it.
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            total = total.saturating_add(1);
        }
        Ok(RawContext { entries, total })
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (node, counter)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write_json_string(f, node.as_str())?;
            write!(f, ":{counter}")?;
        }
        f.write_str("}")
    }
}

/// Writes `s` as a JSON string literal. Node ids parsed from text have no quotes,
/// backslashes or control characters, but ids decoded from a peer are not
/// checked, so escape anyway rather than emit broken JSON.
fn write_json_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl FromStr for VersionVector {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        VersionVector::parse_context(s)
    }
}

// ---------------------------------------------------------------------------
// Dots, contents, siblings
// ---------------------------------------------------------------------------

/// One write event: the node that coordinated it and that node's counter for this key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The coordinator that made the write.
    pub node: NodeId,
    /// The coordinator's counter for this key, from 1.
    pub counter: u64,
}

/// `node#counter`, e.g. `127.0.0.1:13337#2`.
impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.node, self.counter)
    }
}

/// What a version holds: a value, or a tombstone left by a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A value written by a put.
    Value(Value),
    /// The mark of a delete: it replaces what the deleting client saw and is
    /// never shown as a value.
    Tombstone,
    /// A value written with its media type (an HTTP `PUT` with a
    /// `Content-Type`), which a `GET` over HTTP answers with. It comes last so
    /// that objects stored before it existed decode unchanged.
    Typed { value: Value, media_type: String },
    /// A value that expires: from `expires_at` (milliseconds since the Unix
    /// epoch, stamped by the coordinator of the put from its clock) it reads
    /// as absent everywhere, and it leaves the disk like a tombstone (see
    /// [`crate::antientropy::reaper`]). The expiry belongs to the version, so
    /// every copy of it, late or not, expires at the same instant.
    Expiring {
        value: Value,
        media_type: Option<String>,
        expires_at: u64,
    },
}

impl Content {
    /// The value, unless this is a tombstone.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Content::Value(v) | Content::Typed { value: v, .. } => Some(v),
            Content::Expiring { value, .. } => Some(value),
            Content::Tombstone => None,
        }
    }

    /// The media type a value was written with, if it was given one.
    pub fn media_type(&self) -> Option<&str> {
        match self {
            Content::Typed { media_type, .. } => Some(media_type),
            Content::Expiring { media_type, .. } => media_type.as_deref(),
            Content::Value(_) | Content::Tombstone => None,
        }
    }

    /// When this version expires (milliseconds since the Unix epoch), if it does.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Content::Expiring { expires_at, .. } => Some(*expires_at),
            _ => None,
        }
    }

    /// True for a value that can be read at `now` (not a tombstone, not expired).
    pub fn readable_at(&self, now: u64) -> bool {
        match self {
            Content::Tombstone => false,
            Content::Expiring { expires_at, .. } => now < *expires_at,
            Content::Value(_) | Content::Typed { .. } => true,
        }
    }

    /// The same value, expiring at `expires_at` (a tombstone stays one).
    pub fn expiring(self, expires_at: u64) -> Content {
        match self {
            Content::Value(value) => Content::Expiring {
                value,
                media_type: None,
                expires_at,
            },
            Content::Typed { value, media_type } => Content::Expiring {
                value,
                media_type: Some(media_type),
                expires_at,
            },
            Content::Expiring {
                value, media_type, ..
            } => Content::Expiring {
                value,
                media_type,
                expires_at,
            },
            Content::Tombstone => Content::Tombstone,
        }
    }
}

/// One concurrent version of a key: the write event that made it and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The write event; unique across the cluster.
    pub dot: Dot,
    /// The value or tombstone written.
    pub content: Content,
}

// ---------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------

/// Everything one replica knows about one key: the concurrent versions (siblings)
/// and the causal context (every dot this replica has seen for the key, including
/// those of versions since replaced).
/// Invariants: siblings sorted by dot, no two with the same dot; every sibling's dot
/// is covered by `context`. Same dot => same content everywhere (dots are unique
/// write events), which is why merge can dedupe by dot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawObject")]
pub struct Object {
    context: VersionVector,
    siblings: Vec<Sibling>,
}

/// An object as decoded, before its invariants are checked.
#[derive(Deserialize)]
struct RawObject {
    context: VersionVector,
    siblings: Vec<Sibling>,
}

impl From<RawObject> for Object {
    fn from(raw: RawObject) -> Object {
        Object::from_parts(raw.context, raw.siblings)
    }
}

impl Object {
    /// The empty object: no siblings, empty context (a key never written here).
    pub fn new() -> Self {
        Object::default()
    }

    /// Every dot this replica has seen for the key: what a `get` hands the client.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The live versions, values and tombstones, in dot order.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// True for a key this replica knows nothing about.
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.context.is_empty()
    }

    /// Values of the non-tombstone siblings, in dot order.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.siblings.iter().filter_map(|s| s.content.value())
    }

    /// Values readable at `now` (milliseconds since the Unix epoch): neither
    /// tombstones nor expired, in dot order.
    pub fn values_at(&self, now: u64) -> impl Iterator<Item = &Value> {
        self.siblings
            .iter()
            .filter(move |s| s.content.readable_at(now))
            .filter_map(|s| s.content.value())
    }

    /// The media type of each value of [`Object::values_at`], in the same order.
    pub fn media_types_at(&self, now: u64) -> impl Iterator<Item = Option<&str>> {
        self.siblings
            .iter()
            .filter(move |s| s.content.readable_at(now))
            .map(|s| s.content.media_type())
    }

    /// True if the object has versions and none can be read at `now`: each
    /// is a tombstone or has expired. Use `u64::MAX` for "every version is a
    /// tombstone or expires" (a key that will be dead).
    pub fn is_dead_at(&self, now: u64) -> bool {
        !self.siblings.is_empty() && !self.siblings.iter().any(|s| s.content.readable_at(now))
    }

    /// When the object dies by expiry: the latest expiry of its versions, if
    /// every version is a tombstone or expires and at least one expires.
    pub fn dies_at(&self) -> Option<u64> {
        let mut latest = None;
        for s in &self.siblings {
            match &s.content {
                Content::Tombstone => {}
                Content::Expiring { expires_at, .. } => {
                    latest = Some(latest.map_or(*expires_at, |l: u64| l.max(*expires_at)))
                }
                Content::Value(_) | Content::Typed { .. } => return None,
            }
        }
        latest
    }

    /// The media type of each value of [`Object::values`], in the same order.
    pub fn media_types(&self) -> impl Iterator<Item = Option<&str>> {
        self.siblings
            .iter()
            .filter(|s| s.content.value().is_some())
            .map(|s| s.content.media_type())
    }

    /// The causal join: keep a sibling of one side if the other side holds the same
    /// dot or the other side's context does not cover it; context = pointwise max.
    /// Commutative, associative, idempotent. Returns true if self changed.
    pub fn merge(&mut self, other: &Object) -> bool {
        let mut merged = Vec::with_capacity(self.siblings.len().max(other.siblings.len()));
        let mut ours = self.siblings.iter().peekable();
        let mut theirs = other.siblings.iter().peekable();
        loop {
            let order = match (ours.peek(), theirs.peek()) {
                (Some(a), Some(b)) => a.dot.cmp(&b.dot),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match order {
                Ordering::Less => {
                    if let Some(a) = ours.next() {
                        if !other.context.covers(&a.dot) {
                            merged.push(a.clone());
                        }
                    }
                }
                Ordering::Greater => {
                    if let Some(b) = theirs.next() {
                        if !self.context.covers(&b.dot) {
                            merged.push(b.clone());
                        }
                    }
                }
                Ordering::Equal => {
                    // Same dot, same write: keep ours.
                    if let Some(a) = ours.next() {
                        merged.push(a.clone());
                    }
                    theirs.next();
                }
            }
        }
        let mut context = self.context.clone();
        context.merge(&other.context);
        let changed = merged != self.siblings || context != self.context;
        self.siblings = merged;
        self.context = context;
        changed
    }

    /// The coordinator's write (put or delete) made by `actor` with the client's
    /// context `seen`: drop siblings whose dots `seen` covers; new dot counter =
    /// max(context.get(actor), seen.get(actor), floor) + 1; context = context ∪ seen ∪ {dot};
    /// add the sibling. If the result would have more than MAX_SIBLINGS siblings, return
    /// Err(Error::TooManySiblings{count, limit}) and leave self unchanged.
    /// Returns the new dot.
    ///
    /// Also refused, leaving self unchanged: a counter that would overflow, and a
    /// `seen` that would grow the context past [`MAX_CONTEXT_ENTRIES`]
    /// (both [`Error::BadContext`]).
    pub fn update(
        &mut self,
        actor: &NodeId,
        seen: &VersionVector,
        content: Content,
        floor: u64,
    ) -> Result<Dot> {
        let highest = self.context.get(actor).max(seen.get(actor)).max(floor);
        let counter = highest.checked_add(1).ok_or_else(|| {
            bad_context(format!(
                "the counter of {actor} for this key is at its maximum ({highest})"
            ))
        })?;
        let dot = Dot {
            node: actor.clone(),
            counter,
        };

        let mut siblings: Vec<Sibling> = self
            .siblings
            .iter()
            .filter(|s| !seen.covers(&s.dot))
            .cloned()
            .collect();
        let count = siblings.len().saturating_add(1);
        if count > MAX_SIBLINGS {
            return Err(Error::TooManySiblings {
                count,
                limit: MAX_SIBLINGS,
            });
        }

        let mut context = self.context.clone();
        context.merge(seen);
        context.add(&dot);
        if context.len() > MAX_CONTEXT_ENTRIES && context.len() > self.context.len() {
            return Err(bad_context(format!(
                "the key's context would name {} nodes, the limit is {MAX_CONTEXT_ENTRIES}",
                context.len()
            )));
        }

        // The new dot is above everything the context covered for `actor`, so it
        // is not among the kept siblings; insert it in dot order.
        let at = siblings.partition_point(|s| s.dot < dot);
        siblings.insert(
            at,
            Sibling {
                dot: dot.clone(),
                content,
            },
        );
        self.siblings = siblings;
        self.context = context;
        Ok(dot)
    }

    /// Rebuilds the invariants from untrusted parts (data decoded from disk or a peer):
    /// sort siblings, drop duplicate dots, add every sibling dot to the context.
    ///
    /// Of two siblings with the same dot the first given is kept (honest replicas
    /// never send two contents under one dot). Siblings with counter 0 are
    /// dropped: no write makes them.
    pub fn from_parts(mut context: VersionVector, mut siblings: Vec<Sibling>) -> Object {
        siblings.retain(|s| s.dot.counter > 0);
        // A stable sort, so "first given" is well defined among equal dots.
        siblings.sort_by(|a, b| a.dot.cmp(&b.dot));
        siblings.dedup_by(|later, earlier| later.dot == earlier.dot);
        for sibling in &siblings {
            context.add(&sibling.dot);
        }
        Object { context, siblings }
    }

    /// The same versions with every value emptied (tombstones stay
    /// tombstones): enough to merge copies and tell whether any value
    /// survives, without carrying the values (what a scan sends).
    pub fn without_values(&self) -> Object {
        let siblings = self
            .siblings
            .iter()
            .map(|s| Sibling {
                dot: s.dot.clone(),
                content: match s.content {
                    Content::Tombstone => Content::Tombstone,
                    Content::Expiring { expires_at, .. } => Content::Expiring {
                        value: Value::new(),
                        media_type: None,
                        expires_at,
                    },
                    _ => Content::Value(Value::new()),
                },
            })
            .collect();
        Object {
            context: self.context.clone(),
            siblings,
        }
    }

    /// True if some version can be read at `now` (neither a tombstone nor expired).
    pub fn is_live_at(&self, now: u64) -> bool {
        self.siblings.iter().any(|s| s.content.readable_at(now))
    }

    /// Highest counter `actor` has in this object's context (for a coordinator's counter floor).
    pub fn counter_of(&self, actor: &NodeId) -> u64 {
        self.context.get(actor)
    }

    /// True if this object has versions but every one is a tombstone.
    pub fn is_deleted(&self) -> bool {
        !self.siblings.is_empty()
            && self
                .siblings
                .iter()
                .all(|s| matches!(s.content, Content::Tombstone))
    }

    /// Approximate encoded size in bytes (sum of value lengths plus per-sibling and
    /// per-context-entry overhead), used for the MAX_OBJECT_BYTES check.
    pub fn approx_size(&self) -> usize {
        let siblings = self.siblings.iter().fold(0usize, |size, s| {
            let value = s.content.value().map_or(0, |v| v.len())
                + s.content.media_type().map_or(0, str::len);
            size.saturating_add(value)
                .saturating_add(s.dot.node.as_str().len())
                .saturating_add(SIBLING_OVERHEAD_BYTES)
        });
        let context = self.context.iter().fold(0usize, |size, (node, _)| {
            size.saturating_add(node.as_str().len())
                .saturating_add(CONTEXT_ENTRY_OVERHEAD_BYTES)
        });
        siblings.saturating_add(context)
    }
}
