//! Which segments one node holds under one ring, and with whom
//! ([`SharedMap`]): the levels of the hash tree two nodes compare (group,
//! segment, key digests, the keys paged under a byte bound), and the
//! comparisons ([`differing`], [`key_diff`]).

use super::*;

pub(super) const SPLIT: u32 = u32::MAX;

/// True for a key of a bucket other than the default.
fn is_bucket_key(key: &str) -> bool {
    key.starts_with(crate::types::BUCKET_MARK)
}
pub(super) const NOT_HELD: u32 = u32::MAX - 1;

/// The bits of a position below its segment.
pub(super) const SEGMENT_SHIFT: u32 = 48;

/// How a segment is shared between this node and a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Not at all.
    None,
    /// Every key of it is held by both.
    Whole,
    /// A token lies inside it: only the keys whose holders include both.
    Split,
}

/// Which segments one node holds under one ring, and with whom.
///
/// It keeps a copy of the ring of its own, not the node's shared one: a map is
/// cached until the next epoch's is built (for ever if no exchange runs and no
/// peer asks), and a ring change's transfer waits while anything holds the
/// shared ring of an older epoch ([`RingCell::older_in_use`]). An exchange
/// needs no such wait: it stops at a ring change and only merges.
pub struct SharedMap {
    pub(super) ring: Ring,
    me: NodeId,
    /// Per segment: an index into `lists` (its holders), [`SPLIT`] or [`NOT_HELD`].
    segments: Vec<u32>,
    lists: Vec<Vec<NodeId>>,
    /// Every node that holds some key with `me`, sorted.
    peers: Vec<NodeId>,
}

impl SharedMap {
    /// Builds the map of `me` under `ring` (one walk per arc of the ring).
    pub fn new(ring: &Ring, me: NodeId) -> SharedMap {
        let mut segments = Vec::with_capacity(SEGMENTS);
        let mut lists: Vec<Vec<NodeId>> = Vec::new();
        let mut index: HashMap<Vec<NodeId>, u32> = HashMap::new();
        let mut peers = std::collections::BTreeSet::new();
        let mut last_arc: Option<(usize, u32)> = None;
        for seg in 0..SEGMENTS as u64 {
            let lo = seg << SEGMENT_SHIFT;
            let hi = lo | ((1u64 << SEGMENT_SHIFT) - 1);
            if !ring.same_owner_set(lo, hi) {
                // Every part between the segment's tokens, not only its
                // ends: with several tokens in a segment (a large ring), a
                // node may share keys with a peer only in the middle.
                for holders in ring.owner_lists_in(lo, hi) {
                    if holders.contains(&me) {
                        peers.extend(holders.into_iter().filter(|n| *n != me));
                    }
                }
                segments.push(SPLIT);
                continue;
            }
            // A segment with no token inside lies on one arc, whose owners
            // are those of every segment on it: looked up once per arc.
            let arc = ring.arc_at(lo);
            if let Some((a, value)) = last_arc {
                if a == arc {
                    segments.push(value);
                    continue;
                }
            }
            let holders = ring.owners_at(lo);
            let value = if !holders.contains(&me) {
                NOT_HELD
            } else {
                match index.get(&holders) {
                    Some(i) => *i,
                    None => {
                        let i = u32::try_from(lists.len()).unwrap_or(NOT_HELD);
                        peers.extend(holders.iter().filter(|n| **n != me).cloned());
                        index.insert(holders.clone(), i);
                        lists.push(holders);
                        i
                    }
                }
            };
            last_arc = Some((arc, value));
            segments.push(value);
        }
        if ring.max_n() > ring.replication().n {
            // A bucket with a larger N shares keys with more nodes.
            peers.extend(ring.neighbours(&me));
        }
        SharedMap {
            ring: ring.clone(),
            me,
            segments,
            lists,
            peers: peers.into_iter().collect(),
        }
    }

    /// The ring epoch the map was built for.
    pub fn epoch(&self) -> u64 {
        self.ring.epoch()
    }

    /// Every node that holds some key with this one.
    pub fn peers(&self) -> &[NodeId] {
        &self.peers
    }

    /// How `seg` is shared with `peer`.
    pub fn share(&self, seg: Segment, peer: &NodeId) -> Share {
        self.share_in(seg, &self.lists_with(peer))
    }

    /// For each owner list, whether `peer` is on it: worked out once per
    /// digest request instead of once per segment (65,536 of them, every
    /// exchange, on both sides).
    fn lists_with(&self, peer: &NodeId) -> Vec<bool> {
        self.lists.iter().map(|l| l.contains(peer)).collect()
    }

    /// [`SharedMap::share`] with the peer's [`SharedMap::lists_with`].
    fn share_in(&self, seg: Segment, with: &[bool]) -> Share {
        match self.segments.get(usize::from(seg)).copied() {
            Some(SPLIT) => Share::Split,
            Some(NOT_HELD) | None => Share::None,
            Some(i) => match with.get(i as usize) {
                Some(true) => Share::Whole,
                _ => Share::None,
            },
        }
    }

    /// True if both this node and `peer` hold `key` (by the N of its bucket).
    pub fn key_shared(&self, key: &str, peer: &NodeId) -> bool {
        let holders = self.ring.preference_list(key.as_bytes());
        holders.contains(&self.me) && holders.contains(peer)
    }

    /// The digest of what this node holds of `seg` in common with `peer`.
    /// The shares say how the default bucket's keys are held; the keys of
    /// other buckets (another N) are compared one by one (see
    /// `storage::buckets`).
    fn segment_digest(
        &self,
        storage: &Storage,
        seg: Segment,
        peer: &NodeId,
        with: &[bool],
    ) -> Result<u64> {
        let xor = |entries: Vec<(Key, u64)>| entries.into_iter().fold(0, |acc, (_, d)| acc ^ d);
        Ok(match self.share_in(seg, with) {
            Share::Split => xor(self.shared_entries(storage, seg, Share::Split, peer)?),
            share => {
                let plain = if share == Share::Whole {
                    storage.segment_digest(seg)
                } else {
                    0
                };
                plain ^ xor(self.shared_bucket_entries(storage, seg, peer)?)
            }
        })
    }

    /// The keys of other buckets than the default in `seg` that this node
    /// shares with `peer`, with their entry digests.
    fn shared_bucket_entries(
        &self,
        storage: &Storage,
        seg: Segment,
        peer: &NodeId,
    ) -> Result<Vec<(Key, u64)>> {
        let mut entries = storage.bucket_entries(seg)?;
        entries.retain(|(k, _)| self.key_shared(k, peer));
        Ok(entries)
    }

    /// Every key of `seg`, shared as `share` says for the default bucket,
    /// that this node shares with `peer`, in key order.
    fn shared_entries(
        &self,
        storage: &Storage,
        seg: Segment,
        share: Share,
        peer: &NodeId,
    ) -> Result<Vec<(Key, u64)>> {
        Ok(match share {
            Share::None => self.shared_bucket_entries(storage, seg, peer)?,
            Share::Whole => {
                let mut entries = storage.segment_entries(seg)?;
                entries.retain(|(k, _)| !is_bucket_key(k) || self.key_shared(k, peer));
                entries
            }
            Share::Split => {
                let mut entries = storage.segment_entries(seg)?;
                entries.retain(|(k, _)| self.key_shared(k, peer));
                entries
            }
        })
    }

    /// The [`GROUPS`] group digests of what this node shares with `peer`.
    pub fn group_digests(&self, storage: &Storage, peer: &NodeId) -> Result<Vec<u64>> {
        let mut out = vec![0u64; GROUPS];
        let with = self.lists_with(peer);
        // A segment this node never held a key of adds nothing: walking only
        // the others keeps an exchange's cost with what the node holds, not
        // with the 65,536 segments.
        for seg in storage.segments_held() {
            // The group of a segment is its top 8 bits.
            if let Some(slot) = out.get_mut(usize::from(seg >> 8)) {
                *slot ^= self.segment_digest(storage, seg, peer, &with)?;
            }
        }
        Ok(out)
    }

    /// [`SharedMap::group_digests`] walking all 65,536 segments (the walk it
    /// skips segments in is checked against this one).
    #[cfg(test)]
    pub(super) fn group_digests_of_every_segment(
        &self,
        storage: &Storage,
        peer: &NodeId,
    ) -> Result<Vec<u64>> {
        let mut out = vec![0u64; GROUPS];
        let with = self.lists_with(peer);
        for seg in all_segments() {
            if let Some(slot) = out.get_mut(usize::from(seg >> 8)) {
                *slot ^= self.segment_digest(storage, seg, peer, &with)?;
            }
        }
        Ok(out)
    }

    /// The segment digests of `groups` ([`SEGMENTS_PER_GROUP`] per group, in order).
    pub fn segment_digests(
        &self,
        storage: &Storage,
        peer: &NodeId,
        groups: &[u8],
    ) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(groups.len() * SEGMENTS_PER_GROUP);
        let with = self.lists_with(peer);
        for &g in groups {
            for seg in group_segments(g) {
                out.push(self.segment_digest(storage, seg, peer, &with)?);
            }
        }
        Ok(out)
    }

    /// The keys of `segments` this node shares with `peer`, with their entry digests.
    pub fn key_digests(
        &self,
        storage: &Storage,
        peer: &NodeId,
        segments: &[Segment],
    ) -> Result<Vec<(Key, u64)>> {
        let mut out = Vec::new();
        let with = self.lists_with(peer);
        for &seg in segments {
            out.extend(self.shared_entries(storage, seg, self.share_in(seg, &with), peer)?);
        }
        Ok(out)
    }

    /// One page of [`SharedMap::key_digests`]: the listing from just after
    /// `after` (a key of one of `segments`; from the start when None) until
    /// the next key would take the page past `max_bytes` (counting each key
    /// as its bytes and [`KEY_ENTRY_BYTES`]; a page holds at least one key).
    /// Returns the page and where the next one starts (None: the listing is
    /// complete).
    pub fn key_digests_page(
        &self,
        storage: &Storage,
        peer: &NodeId,
        segments: &[Segment],
        after: Option<&str>,
        max_bytes: usize,
    ) -> Result<KeyPage> {
        let start = match after {
            None => 0,
            Some(key) => {
                let seg = crate::storage::segment_of(key);
                segments.iter().position(|s| *s == seg).ok_or_else(|| {
                    Error::invalid(format!(
                        "anti-entropy page cursor {key:?} is in none of the segments asked for"
                    ))
                })?
            }
        };
        let with = self.lists_with(peer);
        let mut out: Vec<(Key, u64)> = Vec::new();
        let mut bytes = 0usize;
        for (i, &seg) in segments.iter().enumerate().skip(start) {
            let share = self.share_in(seg, &with);
            for (key, digest) in self.shared_entries(storage, seg, share, peer)? {
                if i == start && after.is_some_and(|a| key.as_bytes() <= a.as_bytes()) {
                    continue;
                }
                let size = key.len().saturating_add(KEY_ENTRY_BYTES);
                if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                    let next = out.last().map(|(k, _)| k.clone());
                    return Ok((out, next));
                }
                bytes = bytes.saturating_add(size);
                out.push((key, digest));
            }
        }
        Ok((out, None))
    }
}

#[cfg(test)]
pub(super) fn all_segments() -> impl Iterator<Item = Segment> {
    (0..=Segment::MAX).take(SEGMENTS)
}

/// The segments of group `g`.
pub(super) fn group_segments(g: u8) -> impl Iterator<Item = Segment> {
    let first = Segment::from(g) << 8;
    (0..=u8::MAX).map(move |i| first | Segment::from(i))
}

/// Indices where two digest lists differ (a missing entry counts as 0).
pub fn differing(mine: &[u64], theirs: &[u64]) -> Vec<usize> {
    let len = mine.len().max(theirs.len());
    (0..len)
        .filter(|&i| mine.get(i).copied().unwrap_or(0) != theirs.get(i).copied().unwrap_or(0))
        .collect()
}

/// What an exchange must move for the keys it compared.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyDiff {
    /// Keys this node holds that the peer lacks or holds differently: sent.
    pub push: Vec<Key>,
    /// Keys the peer holds that this node lacks or holds differently: fetched.
    pub pull: Vec<Key>,
}

/// Compares two key listings (each key once per side).
pub fn key_diff(mine: Vec<(Key, u64)>, theirs: Vec<(Key, u64)>) -> KeyDiff {
    let mut theirs: BTreeMap<Key, u64> = theirs.into_iter().collect();
    let mut diff = KeyDiff::default();
    for (key, digest) in mine {
        match theirs.remove(&key) {
            Some(d) if d == digest => {}
            Some(_) => {
                diff.pull.push(key.clone());
                diff.push.push(key);
            }
            None => diff.push.push(key),
        }
    }
    // What is left, this node does not hold.
    diff.pull.extend(theirs.into_keys());
    diff
}
