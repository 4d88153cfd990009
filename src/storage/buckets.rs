//! What the store keeps per bucket (see [`crate::ring`]'s `bucket` module):
//! the bytes each bucket's keys take here, which buckets are kept in memory
//! only, and the removal of a bucket's keys.
//!
//! # Keys of buckets in the segment digests
//!
//! A key of the default bucket is held by the ring's N owners of its
//! position, so anti-entropy compares a whole segment with one digest
//! ([`Storage::segment_digest`]). A bucket's key may have another N, so two
//! nodes that share a segment's default keys need not share its bucket
//! keys. Bucket keys are therefore kept out of that digest and in a second
//! one per segment ([`Storage::bucket_digest`]); anti-entropy compares them
//! key by key ([`Storage::bucket_entries`], a prefix of the segment: they
//! begin with the NUL byte, so they sort first).
//!
//! # Memory buckets
//!
//! A key of a bucket with `storage=memory` is written like any other, but a
//! write is acknowledged without waiting for the disk ([`Storage::durable_for`]),
//! and the walk at open removes every such record: after a restart the node
//! holds none, and refills from its peers by anti-entropy.
//!
//! Forgetting a key must not let this node issue a dot it issued before (the
//! Riak kv679 loss: a new write under an old dot is taken for the old one
//! and dropped). Every open counts a *boot* in `meta` (flushed before
//! anything is served), and a counter this node issues for a memory bucket's
//! key starts above `boot << 32`: a boot's counters lie above every earlier
//! boot's, unless one key took 2^32 writes coordinated here in one boot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::RwLock;

use super::*;
use crate::ring::{RingState, StorageKind};
use crate::types::{bucket_prefix, split_bucket_key};

const BOOTS_KEY: &[u8] = b"boots";

/// The store's per-bucket state.
pub(super) struct BucketBook {
    /// Bytes of records held here, per bucket id.
    bytes: RwLock<HashMap<u32, AtomicI64>>,
    /// What the last ring installed says of the buckets.
    known: RwLock<Known>,
    /// The floor under counters issued for memory buckets' keys in this boot.
    boot_floor: u64,
}

/// The buckets as the last ring installed has them.
#[derive(Default)]
struct Known {
    /// Ids of the buckets kept in memory only.
    volatile: HashSet<u32>,
    /// Ids of the buckets that exist.
    live: HashSet<u32>,
    /// Ids below it were given.
    next_id: u32,
}

impl Known {
    fn of(ring: &RingState) -> Known {
        let buckets = ring.buckets.by_name.values();
        Known {
            volatile: buckets
                .clone()
                .filter(|b| b.storage == StorageKind::Memory)
                .map(|b| b.id)
                .collect(),
            live: buckets.map(|b| b.id).collect(),
            next_id: ring.buckets.next_id,
        }
    }

    fn dropped(&self, id: u32) -> bool {
        id < self.next_id && !self.live.contains(&id)
    }
}

/// The bucket id of a stored key's key part, if it is a bucket's.
fn bucket_of(key: &[u8]) -> Option<u32> {
    if key.first() != Some(&0) {
        return None;
    }
    std::str::from_utf8(key)
        .ok()
        .and_then(split_bucket_key)
        .map(|(id, _)| id)
}

impl BucketBook {
    /// Counts this boot in `meta` (durably) and takes the memory buckets
    /// from the ring this node last installed.
    pub(super) fn open(db: &sled::Db, meta: &sled::Tree, ring: Option<&RingState>) -> Result<Self> {
        let boots = match meta.get(BOOTS_KEY)? {
            Some(raw) => decode::<u64>(&raw, "meta")?,
            None => 0,
        }
        .saturating_add(1);
        meta.insert(BOOTS_KEY, encode(&boots)?)?;
        db.flush()?;
        Ok(BucketBook {
            bytes: RwLock::new(HashMap::new()),
            known: RwLock::new(ring.map(Known::of).unwrap_or_default()),
            boot_floor: boots.min(u64::from(u32::MAX)) << 32,
        })
    }

    /// True if the walk at open must remove the record of `key`: a memory
    /// bucket's, or one of a bucket `ring` dropped.
    pub(super) fn forget_at_open(&self, key: &[u8]) -> bool {
        let Some(id) = bucket_of(key) else {
            return false;
        };
        let known = self.known();
        known.volatile.contains(&id) || known.dropped(id)
    }

    fn known(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `delta` bytes to the count of `key`'s bucket (nothing for a
    /// default key).
    pub(super) fn account(&self, key: &[u8], delta: i64) {
        let Some(id) = bucket_of(key) else {
            return;
        };
        {
            let map = self.bytes.read().unwrap_or_else(|p| p.into_inner());
            if let Some(cell) = map.get(&id) {
                cell.fetch_add(delta, Ordering::Relaxed);
                return;
            }
        }
        self.bytes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_insert_with(|| AtomicI64::new(0))
            .fetch_add(delta, Ordering::Relaxed);
    }
}

/// The length of a record, as a byte count's change.
pub(super) fn len_of(raw: &[u8]) -> i64 {
    i64::try_from(raw.len()).unwrap_or(i64::MAX)
}

impl Storage {
    /// The bytes of the records of bucket `id` this node holds (keys and
    /// objects, as stored).
    pub fn bucket_bytes(&self, id: u32) -> u64 {
        self.buckets
            .bytes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map_or(0, |c| c.load(Ordering::Relaxed).max(0).unsigned_abs())
    }

    /// About how many bytes bucket `id` takes in the ring (one copy of each
    /// key): the bytes held here divided by `share`, the fraction of the
    /// ring this node keeps for the bucket's N (exact when N is the ring's
    /// size, since every node then holds every key).
    pub fn bucket_estimate(&self, id: u32, share: f64) -> u64 {
        let held = self.bucket_bytes(id);
        if share > 0.0 {
            (held as f64 / share) as u64
        } else {
            held
        }
    }

    /// Takes the buckets of a newly installed ring: which are kept in
    /// memory, which were dropped.
    pub fn learn_buckets(&self, ring: &RingState) {
        *self
            .buckets
            .known
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Known::of(ring);
    }

    /// True if `key` is a key of a memory bucket.
    pub fn is_volatile(&self, key: &str) -> bool {
        bucket_of(key.as_bytes()).is_some_and(|id| self.buckets.known().volatile.contains(&id))
    }

    /// True if `key` is a key of a bucket the ring dropped: such a key is
    /// never stored again ([`Storage::merge`] takes it as merged into
    /// nothing, [`Storage::coordinate`] refuses it).
    pub fn is_dropped(&self, key: &str) -> bool {
        bucket_of(key.as_bytes()).is_some_and(|id| self.buckets.known().dropped(id))
    }

    /// The ids of the buckets the ring dropped whose keys this node still holds.
    pub fn dropped_ids_held(&self) -> Vec<u32> {
        let known = self.buckets.known();
        self.bucket_ids_held()
            .into_iter()
            .filter(|id| known.dropped(*id))
            .collect()
    }

    /// The floor under a dot counter this node issues for `key`: above every
    /// earlier boot's for a memory bucket's key (see the module essay), 0
    /// otherwise.
    pub(super) fn boot_floor(&self, key: &str) -> u64 {
        if self.is_volatile(key) {
            self.buckets.boot_floor
        } else {
            0
        }
    }

    /// [`Storage::durable`] for a write of `key`: resolved at once for a
    /// memory bucket's key.
    pub fn durable_for(&self, key: &str) -> BoxFuture<'static, Result<()>> {
        if self.is_volatile(key) {
            futures::future::ready(Ok(())).boxed()
        } else {
            self.durable()
        }
    }

    /// The digest of the bucket keys of `seg` (see the module essay).
    pub fn bucket_digest(&self, seg: Segment) -> u64 {
        self.bucket_segments[usize::from(seg)].load(Ordering::Relaxed)
    }

    /// The bucket keys of `seg` with their entry digests, in key order.
    pub fn bucket_entries(&self, seg: Segment) -> Result<Vec<(Key, u64)>> {
        if self.bucket_digest(seg) == 0 {
            return Ok(Vec::new());
        }
        let mut prefix = seg.to_be_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.values.scan_prefix(prefix) {
            let (stored, raw) = item?;
            if let Some(key) =
                split_stored_key(&stored).and_then(|(_, k)| std::str::from_utf8(k).ok())
            {
                out.push((key.to_string(), entry_digest(key.as_bytes(), &raw)));
            }
        }
        Ok(out)
    }

    /// Removes up to `limit` keys of bucket `id` (a dropped bucket's, or a
    /// memory bucket's at open), with no tombstone: nobody can address them
    /// again. Returns how many went; 0 when none is left.
    pub fn purge_bucket(&self, id: u32, limit: usize) -> Result<usize> {
        let prefix = bucket_prefix(id);
        let keys: Vec<Key> = self
            .order
            .scan_prefix(prefix.as_bytes())
            .take(limit)
            .filter_map(|item| item.ok())
            .filter_map(|(k, _)| String::from_utf8(k.to_vec()).ok())
            .collect();
        let mut removed = 0;
        for key in &keys {
            let _g = self.stripe(key);
            let at = stored_key(key);
            match self.values.get(&at)? {
                Some(raw) => {
                    let deleted = decode::<Object>(&raw, "objects").is_ok_and(|o| o.is_deleted());
                    if self.remove_record(key, &at, &raw, deleted)? {
                        removed += 1;
                    }
                }
                None => {
                    // An entry whose record already went.
                    self.order_remove(key)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The ids of buckets whose keys this node still holds.
    fn bucket_ids_held(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut from = vec![0u8];
        // One seek per bucket: the key-order tree sorts a bucket's keys together.
        while let Some(Ok((k, _))) = self.order.range(from.clone()..).next() {
            let Some(id) = bucket_of(&k) else {
                break;
            };
            ids.push(id);
            // Past every key of this bucket (no UTF-8 byte is 0xFF).
            from = bucket_prefix(id).into_bytes();
            from.push(0xFF);
        }
        ids
    }
}

#[cfg(test)]
mod tests;
