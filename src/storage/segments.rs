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
