//! Each segment's digest (the XOR of its keys' entry digests, kept up to
//! date by every write) and the set of segments the store has held a key of
//! since it opened: what anti-entropy compares, and the walk it may skip.

use super::*;

impl Storage {
    /// The digest cell of the segment a stored key (from [`stored_key`]) is
    /// in, for a write to update; the segment counts as held from now on.
    pub(super) fn segment(&self, stored: &[u8]) -> &AtomicU64 {
        let (seg, key) = split_stored_key(stored).unwrap_or((0, &[]));
        mark_held(&self.held, seg);
        // A bucket's key (it begins with NUL) goes to the second digest: see
        // the `buckets` module.
        if key.first() == Some(&0) {
            &self.bucket_segments[usize::from(seg)]
        } else {
            &self.segments[usize::from(seg)]
        }
    }

    /// Every segment that has held a key since the store opened, in order: a
    /// superset of the segments holding one now (a segment emptied since
    /// stays in it), so a walk over what this node holds can skip the rest of
    /// the 65,536 without reading them. A key's segment is marked before its
    /// digest changes, and after the key is in the tree: a walk that misses a
    /// key written meanwhile misses it as reading the digest a moment
    /// earlier would.
    pub fn segments_held(&self) -> impl Iterator<Item = Segment> + '_ {
        self.held.iter().enumerate().flat_map(|(w, word)| {
            let mut bits = word.load(Ordering::Relaxed);
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                Segment::try_from(w * 64 + bit as usize).ok()
            })
        })
    }

    /// The digest of segment `seg`: the XOR of the [`entry_digest`]s of its keys
    /// of the default bucket (0 when it holds none; a bucket's keys are in
    /// [`Storage::bucket_digest`]). Kept up to date by every write, never recomputed.
    pub fn segment_digest(&self, seg: Segment) -> u64 {
        self.segments[usize::from(seg)].load(Ordering::Relaxed)
    }

    /// Every key of segment `seg` with its [`entry_digest`], in key order. Keys
    /// that are not UTF-8 are left out (a scan reports them).
    pub fn segment_entries(&self, seg: Segment) -> Result<Vec<(Key, u64)>> {
        let mut out = Vec::new();
        for item in self.values.scan_prefix(seg.to_be_bytes()) {
            let (stored, raw) = item?;
            let Some((_, k)) = split_stored_key(&stored) else {
                continue;
            };
            if let Ok(key) = std::str::from_utf8(k) {
                out.push((key.to_string(), entry_digest(k, &raw)));
            }
        }
        Ok(out)
    }
}

/// Marks segment `seg` as held in the bitmap `held` (one bit per segment).
pub(super) fn mark_held(held: &[AtomicU64], seg: Segment) {
    let seg = usize::from(seg);
    if let Some(word) = held.get(seg / 64) {
        let bit = 1u64 << (seg % 64);
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }
}

/// Opens the `objects` tree, first moving the keys of a data directory written
/// before segments (tree `values`, keyed by the key alone) into it. The move is
/// idempotent (same records under the same keys) and `values` is dropped only
/// once `objects` is durable, so a crash in the middle repeats it at the next open.
pub(super) fn open_objects(db: &sled::Db) -> Result<sled::Tree> {
    let objects = db.open_tree("objects")?;
    if !db.tree_names().iter().any(|n| &n[..] == b"values") {
        return Ok(objects);
    }
    let old = db.open_tree("values")?;
    let mut moved = 0u64;
    let mut batch = sled::Batch::default();
    for item in old.iter() {
        let (k, raw) = item?;
        let Ok(key) = std::str::from_utf8(&k) else {
            tracing::warn!(key = ?String::from_utf8_lossy(&k), "a stored key is not UTF-8; left behind");
            continue;
        };
        batch.insert(stored_key(key), raw);
        moved += 1;
        if moved % 10_000 == 0 {
            objects.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    objects.apply_batch(batch)?;
    // A transfer cursor names a position in the old order: start over instead.
    db.open_tree("meta")?.remove(CURSOR_KEY)?;
    db.flush()?;
    db.drop_tree("values")?;
    db.flush()?;
    tracing::info!(keys = moved, "moved the stored keys into segment order");
    Ok(objects)
}

/// A segment: a fixed slice of the hash space, `1/SEGMENTS` of it. A key's segment
/// is the top 16 bits of its ring position ([`crate::ring::key_position`]), so a
/// segment is an arc of the ring that never moves: tokens and ring changes decide
/// who owns it, not what is in it.
pub type Segment = u16;
/// How many segments the hash space is cut into.
pub const SEGMENTS: usize = 1 << 16;

/// The segment of `key`.
pub fn segment_of(key: &str) -> Segment {
    // The shift leaves 16 bits, so the conversion cannot fail.
    Segment::try_from(crate::ring::key_position(key.as_bytes()) >> 48).unwrap_or_default()
}

/// The digest of one stored key: the 64-bit xxh3 of its record's bytes, seeded
/// with the hash of the key (two keys holding equal objects differ).
pub fn entry_digest(key: &[u8], raw: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(raw, xxhash_rust::xxh3::xxh3_64(key))
}

/// Where `key` is stored in the `objects` tree: its segment, then its bytes.
pub(super) fn stored_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&segment_of(key).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// The shard of the grave set a stored key is in: its first byte.
pub(super) fn grave_shard(stored: &[u8]) -> usize {
    stored.first().map_or(0, |b| usize::from(*b))
}

/// The segment and key of a stored key (None for a record shorter than a prefix).
pub(super) fn split_stored_key(stored: &[u8]) -> Option<(Segment, &[u8])> {
    let (seg, key) = stored.split_first_chunk::<2>()?;
    Some((Segment::from_be_bytes(*seg), key))
}
