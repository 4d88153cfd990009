//! A node's durable state in sled.
//!
//! # Trees
//!
//! | tree | key | value |
//! |---|---|---|
//! | `objects` | the key's [`Segment`] (u16 BE), then the key's bytes | the key's [`Object`] (all siblings and the causal context) |
//! | `hints` | `u16 BE key length, key, target node id` | an [`Object`] held for a replica that was down |
//! | `meta` | `ring` | the [`RingState`] this node last installed (replaced only by a newer epoch: [`Storage::save_ring`] is a compare-and-swap) |
//! | `meta` | `node_uuid` | this node's identity, created with the data directory |
//! | `meta` | `transfer_done`, `cleanup_done` | the last epoch whose ring-change transfer / clean-up this node finished |
//! | `meta` | `transfer_cursor` | `(epoch, pass, stored key)`: how far the transfer of a running change got (record version 2; version 1 held the key as a string, still read) |
//! | `meta` | `restoring` | present while this node, readmitted after losing its data directory, refills from its peers |
//! | `key_order` | the key's bytes | nothing: the keys of `objects` in key order, for `scan` (see [`order`]) |
//! | `quarantine` | a hint record's key | a hint record that did not decode, set aside by [`Storage::hints`] (kept for inspection, never read back) |
//! | `floors` | the key's bytes | the highest dot counter this node issued for the key while it did not keep the key as its own replica (a hint, or a key it handed to new owners) |
//! | `segment_floors` | a [`Segment`] (u16 BE) | the highest dot counter this node issued for any key of the segment whose tombstone it removed |
//!
//! Every record starts with a one-byte format version ([`RECORD_FORMAT`]) followed by
//! bincode. A record with an unknown version is reported, never guessed at. The ring
//! record is at version [`RING_FORMAT`] (it gained the transition and node
//! identities); version 1 rings are still read.
//!
//! # Atomicity
//!
//! Read-modify-write of one key (merging a replica write, a coordinator's update)
//! happens under one of [`LOCK_STRIPES`] mutexes picked by the key's hash: writes to
//! different keys do not contend, writes to the same key are serialised, and no lock
//! is held across an `.await` (this layer is synchronous).
//!
//! # Durability
//!
//! A write is acknowledged only after [`Storage::durable`] resolves. With
//! `--fsync batch` a flusher thread takes every waiter that arrived since the last
//! flush and serves them all with one `flush` (group commit); with `always` each
//! waiter gets a flush of its own; with `never` it resolves at once and sled flushes
//! in the background. See [`group_commit`].
//!
//! # Removing keys
//!
//! A node removes a key only when a settled ring gives it to others, and only
//! after those owners acknowledged its copy ([`Storage::drop_value`] is a
//! compare-and-swap against the bytes that were sent, so a write that landed
//! meanwhile keeps the key). Before the record goes, the key's floor records the
//! highest counter this node issued for it, so a coordinator never reuses a dot
//! counter if the key comes back.
//!
//! # Removing tombstones
//!
//! A key whose every version is a tombstone is a *grave*. The store keeps the
//! set of its graves in memory (built by the walk at open, kept up to date by
//! every write that turns a key into a tombstone or back), so the tombstone
//! reaper ([`crate::antientropy::reaper`]) finds them without scanning the
//! values. [`Storage::reap`] removes a grave only if its bytes are still the
//! ones every owner was shown to hold (a compare-and-swap on its digest) and no
//! hint for the key is kept here; the proof that no other copy or hint of an
//! older version exists anywhere is the reaper's.
//!
//! Before a grave goes, its segment's floor records the highest counter this
//! node issued for the key: a later write to the key coordinated here starts
//! above it. Without that, a blind put after the removal would reuse dot 1,
//! which the context of a client that read the key before the delete still
//! covers, and that client's next put would silently replace the new value.
//! The floor is per segment, not per key, so removing a tombstone leaves
//! nothing per key behind.

mod buckets;
mod expiry;
mod group_commit;
mod hints;
mod meta;
mod order;
mod scan;
mod segments;
pub use hints::HintScan;
use hints::{hint_key, split_hint_key};
#[cfg(test)]
use meta::decode_ring;
pub use order::Listing;
pub use scan::{RawScan, Scan, ScanCursor, Stored};
pub use segments::{entry_digest, segment_of, Segment, SEGMENTS};
use segments::{grave_shard, mark_held, open_objects, split_stored_key, stored_key};

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::FsyncMode;
use crate::error::{Error, Result};
use crate::ring::RingState;
use crate::types::{Key, NodeId};
use crate::vclock::{Content, Dot, Object, VersionVector};

pub use group_commit::GroupCommit;

/// First byte of every stored record. Bump it when the encoding changes and keep a
/// decoder for every older version.
pub const RECORD_FORMAT: u8 = 1;
/// Format version of the ring record: 2 added node identities and the
/// transition, 3 the incarnations of each address, 4 the departed nodes, 5
/// the users, 6 the buckets.
pub const RING_FORMAT: u8 = 6;
/// How many mutexes guard per-key read-modify-write. 1024 makes two hot keys share a
/// stripe rarely while costing 1024 small mutexes per node.
pub const LOCK_STRIPES: usize = 1024;
/// Shards of the in-memory set of graves (one per top byte of the segment), so
/// deletes of different keys rarely share a mutex.
const GRAVE_SHARDS: usize = 256;
/// sled's page cache. Bounds a node's memory (sled's default is 1 GiB).
pub const CACHE_BYTES: u64 = 128 * 1024 * 1024;

const RING_KEY: &[u8] = b"ring";
const UUID_KEY: &[u8] = b"node_uuid";
const CURSOR_KEY: &[u8] = b"transfer_cursor";
const RESTORING_KEY: &[u8] = b"restoring";
/// Format version of the transfer cursor record: 2 keeps the raw stored key
/// ([`ScanCursor`]); version 1 kept the key as a string and is still read.
const CURSOR_FORMAT: u8 = 2;

/// A progress marker kept in the `meta` tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// The last transition epoch whose transfer this node finished.
    TransferDone,
    /// The last settled epoch whose clean-up (dropping keys owned by others) finished.
    CleanupDone,
}

impl Marker {
    fn key(self) -> &'static [u8] {
        match self {
            Marker::TransferDone => b"transfer_done",
            Marker::CleanupDone => b"cleanup_done",
        }
    }
}

/// One pending hint: a write held for `target`.
#[derive(Clone, Debug)]
pub struct Hint {
    /// The replica the write belongs to.
    pub target: NodeId,
    /// The key.
    pub key: Key,
    /// What is held for the target (shared: delivery sends it as is).
    pub object: Arc<Object>,
    /// The stored bytes, so delivery can delete the hint only if nothing changed it.
    pub raw: sled::IVec,
}

/// A node's durable state.
pub struct Storage {
    db: sled::Db,
    values: sled::Tree,
    /// The keys of `values` in key order (see [`order`]).
    order: sled::Tree,
    /// One digest per segment: the XOR of [`entry_digest`] over its keys of
    /// the default bucket.
    segments: Box<[AtomicU64]>,
    /// The same over each segment's keys of other buckets (see [`buckets`]).
    bucket_segments: Box<[AtomicU64]>,
    /// Bytes per bucket, memory buckets, the boot's counter floor.
    buckets: buckets::BucketBook,
    /// One bit per segment, set once the segment has held a key since the
    /// store opened (see [`Storage::segments_held`]).
    held: Box<[AtomicU64]>,
    hints: sled::Tree,
    meta: sled::Tree,
    floors: sled::Tree,
    /// The `segment_floors` tree and its copy in memory, one counter per segment.
    segment_floor_tree: sled::Tree,
    segment_floors: Box<[AtomicU64]>,
    /// Stored keys (see [`stored_key`]) whose every version is a tombstone,
    /// sharded by their first byte.
    graves: Box<[Mutex<BTreeSet<Vec<u8>>>]>,
    /// (death instant, stored key) of keys that die by expiry (see [`expiry`]).
    expiring: Mutex<BTreeSet<(u64, Vec<u8>)>>,
    quarantine: sled::Tree,
    keys: AtomicU64,
    /// Keys whose every version is a tombstone.
    tombstones: AtomicU64,
    /// Pending hints; reads skip the hints tree entirely while it is zero.
    hint_records: AtomicU64,
    /// Pending hints per target, for `status` (taken only when a hint is
    /// stored or goes, which is rare: a replica is down).
    hint_targets: Mutex<std::collections::BTreeMap<NodeId, u64>>,
    stripes: Vec<Mutex<()>>,
    commit: GroupCommit,
    fsync: FsyncMode,
    uuid: uuid::Uuid,
    restoring: std::sync::atomic::AtomicBool,
}

impl Storage {
    /// Opens (or creates) the store in `dir`; `None` keeps everything in memory.
    pub fn open(dir: Option<&Path>, fsync: FsyncMode) -> Result<Storage> {
        let config = sled::Config::new().cache_capacity(CACHE_BYTES);
        let config = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::storage(format!("cannot create data dir {}: {e}", dir.display()))
                })?;
                config.path(dir)
            }
            None => config.temporary(true),
        };
        let db = config.open().map_err(|e| match dir {
            Some(d) => Error::storage(format!("cannot open {}: {e}", d.display())),
            None => Error::storage(e),
        })?;
        let values = open_objects(&db)?;
        let order = db.open_tree("key_order")?;
        let hints = db.open_tree("hints")?;
        let meta = db.open_tree("meta")?;
        let floors = db.open_tree("floors")?;
        let segment_floor_tree = db.open_tree("segment_floors")?;
        let quarantine = db.open_tree("quarantine")?;
        let segment_floors: Box<[AtomicU64]> = (0..SEGMENTS).map(|_| AtomicU64::new(0)).collect();
        for item in segment_floor_tree.iter() {
            let (k, raw) = item?;
            let seg = k
                .first_chunk::<2>()
                .map(|b| usize::from(Segment::from_be_bytes(*b)))
                .ok_or_else(|| Error::storage("corrupt segment floor key"))?;
            let floor = decode::<u64>(&raw, "segment_floors")?;
            if let Some(cell) = segment_floors.get(seg) {
                cell.store(floor, Ordering::Relaxed);
            }
        }
        let graves: Box<[Mutex<BTreeSet<Vec<u8>>>]> = (0..GRAVE_SHARDS)
            .map(|_| Mutex::new(BTreeSet::new()))
            .collect();
        // Keys, tombstones and segment digests are computed in one walk at open
        // (sled keeps no count of its own), then kept up to date by every write
        // and drop.
        let (mut stored, mut deleted) = (0u64, 0u64);
        let segments: Box<[AtomicU64]> = (0..SEGMENTS).map(|_| AtomicU64::new(0)).collect();
        let bucket_segments: Box<[AtomicU64]> = (0..SEGMENTS).map(|_| AtomicU64::new(0)).collect();
        let last_ring = meta
            .get(RING_KEY)?
            .and_then(|raw| meta::decode_ring(&raw).ok());
        let book = buckets::BucketBook::open(&db, &meta, last_ring.as_ref())?;
        let mut forgotten = 0u64;
        let held: Box<[AtomicU64]> = (0..SEGMENTS / 64).map(|_| AtomicU64::new(0)).collect();
        let mut reordered = 0u64;
        let mut expiring = BTreeSet::new();
        for item in values.iter() {
            let (k, raw) = item?;
            if let Some((_, key)) = split_stored_key(&k) {
                if book.forget_at_open(key) {
                    // A memory bucket's key, or a dropped bucket's.
                    values.remove(&k)?;
                    order.remove(key)?;
                    forgotten += 1;
                    continue;
                }
                book.account(key, buckets::len_of(&raw));
            }
            stored += 1;
            if let Some((_, key)) = split_stored_key(&k) {
                reordered += u64::from(Storage::order_repair(&order, key)?);
            }
            let object = decode::<Object>(&raw, "objects");
            if let Some(at) = object.as_ref().ok().and_then(Object::dies_at) {
                expiring.insert((at, k.to_vec()));
            }
            if object.is_ok_and(|o| o.is_deleted()) {
                deleted += 1;
                if let Some(shard) = graves.get(grave_shard(&k)) {
                    shard
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(k.to_vec());
                }
            }
            if let Some((seg, key)) = split_stored_key(&k) {
                let digests = if key.first() == Some(&0) {
                    &bucket_segments
                } else {
                    &segments
                };
                digests[usize::from(seg)].fetch_xor(entry_digest(key, &raw), Ordering::Relaxed);
                mark_held(&held, seg);
            }
        }
        if forgotten > 0 {
            tracing::info!(
                keys = forgotten,
                "forgot the keys of memory buckets and of dropped buckets"
            );
        }
        if reordered > 0 {
            tracing::info!(
                keys = reordered,
                "added keys missing from the key-order index"
            );
        }
        let keys = AtomicU64::new(stored);
        let tombstones = AtomicU64::new(deleted);
        let hint_records = AtomicU64::new(hints.len() as u64);
        let mut per_target = std::collections::BTreeMap::<NodeId, u64>::new();
        for item in hints.iter() {
            let (k, _) = item?;
            if let Ok((_, target)) = split_hint_key(&k) {
                *per_target.entry(target).or_default() += 1;
            }
        }
        let hint_targets = Mutex::new(per_target);
        let fsync = if dir.is_none() {
            FsyncMode::Never
        } else {
            fsync
        };
        let uuid = match meta.get(UUID_KEY)? {
            Some(raw) => decode::<uuid::Uuid>(&raw, "meta")?,
            None => {
                // A new data directory: a new identity, on disk before anything
                // is acknowledged under it.
                let uuid = crate::runtime::new_uuid();
                meta.insert(UUID_KEY, encode(&uuid)?)?;
                db.flush()?;
                uuid
            }
        };
        let restoring = std::sync::atomic::AtomicBool::new(meta.contains_key(RESTORING_KEY)?);
        let commit = GroupCommit::start(db.clone(), fsync)?;
        let stripes = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(Storage {
            uuid,
            restoring,
            db,
            values,
            order,
            segments,
            bucket_segments,
            buckets: book,
            held,
            hints,
            meta,
            floors,
            segment_floor_tree,
            segment_floors,
            graves,
            expiring: Mutex::new(expiring),
            quarantine,
            keys,
            tombstones,
            hint_records,
            hint_targets,
            stripes,
            commit,
            fsync,
        })
    }

    /// This node's identity: a UUID created with the data directory (a new one for
    /// every in-memory store).
    pub fn uuid(&self) -> uuid::Uuid {
        self.uuid
    }

    /// True while this node refills after losing its data directory: its
    /// replica is incomplete, so its answers to reads must not count.
    pub fn restoring(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }

    /// Marks the store as refilling (or done). Call [`Storage::durable`] before
    /// relying on it.
    pub fn set_restoring(&self, on: bool) -> Result<()> {
        if on {
            self.meta.insert(RESTORING_KEY, encode(&true)?)?;
        } else {
            self.meta.remove(RESTORING_KEY)?;
        }
        self.restoring.store(on, Ordering::Release);
        Ok(())
    }

    /// The durability this store gives (`never` for in-memory stores).
    pub fn fsync(&self) -> FsyncMode {
        self.fsync
    }

    /// Resolves once everything written before the call is on disk (per `--fsync`).
    pub fn durable(&self) -> BoxFuture<'static, Result<()>> {
        let flushed = self.commit.wait();
        async move {
            crate::runtime::disk_latency().await;
            flushed.await
        }
        .boxed()
    }

    /// How many group-commit flushes have run (for tests, status and benchmarks).
    pub fn flush_count(&self) -> u64 {
        self.commit.flushes()
    }

    /// Flushes everything now (used at shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Number of keys this node keeps as its own replica.
    pub fn key_count(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    /// Number of keys whose every version is a tombstone (deleted keys still on disk).
    pub fn tombstone_count(&self) -> u64 {
        self.tombstones.load(Ordering::Relaxed)
    }

    /// Number of pending hints.
    pub fn hint_count(&self) -> u64 {
        self.hint_records.load(Ordering::Relaxed)
    }

    fn stripe(&self, key: &str) -> std::sync::MutexGuard<'_, ()> {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        // The remainder is below LOCK_STRIPES, so it fits usize and indexes the
        // stripes (an empty slice is impossible: `open` makes LOCK_STRIPES).
        let i = usize::try_from(hash % LOCK_STRIPES as u64).unwrap_or_default();
        let stripe = &self.stripes[i % self.stripes.len()];
        // A poisoned stripe only means another thread panicked while holding it; the
        // data under it is sled's and is consistent, so carry on.
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this node holds for `key`: its own replica merged with every hint it
    /// keeps for the key (a stand-in answers reads with what it stands in for).
    pub fn get(&self, key: &str) -> Result<Object> {
        let mut obj = self.get_value(key)?;
        self.merge_hints_for(key, &mut obj)?;
        Ok(obj)
    }

    fn get_value(&self, key: &str) -> Result<Object> {
        match self.values.get(stored_key(key))? {
            Some(raw) => decode(&raw, "objects"),
            None => Ok(Object::new()),
        }
    }

    /// Merges a replica write into this node's copy of `key`. Returns true if the
    /// stored object changed. Call [`Storage::durable`] before acknowledging.
    pub fn merge(&self, key: &str, incoming: &Object) -> Result<bool> {
        if self.is_dropped(key) {
            return Ok(false);
        }
        let _g = self.stripe(key);
        let mut obj = self.get_value(key)?;
        let was_deleted = obj.is_deleted();
        if !obj.merge(incoming) {
            return Ok(false);
        }
        self.put_value(key, &obj, was_deleted)?;
        Ok(true)
    }

    /// Stores `obj` as this node's replica of `key`; `was_deleted` tells whether
    /// the record it replaces held only tombstones (for the tombstone count).
    fn put_value(&self, key: &str, obj: &Object, was_deleted: bool) -> Result<()> {
        let raw = encode(obj)?;
        let digest = entry_digest(key.as_bytes(), &raw);
        let stored = stored_key(key);
        let new_len = buckets::len_of(&raw);
        let old = self.values.insert(stored.as_slice(), raw)?;
        let old_digest = match &old {
            Some(old) => entry_digest(key.as_bytes(), old),
            None => {
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.order_insert(key)?;
                0
            }
        };
        self.buckets.account(
            key.as_bytes(),
            new_len - old.as_deref().map_or(0, buckets::len_of),
        );
        self.segment(&stored)
            .fetch_xor(digest ^ old_digest, Ordering::Relaxed);
        if let Some(at) = obj.dies_at() {
            self.note_expiry(at, &stored);
        }
        match (was_deleted, obj.is_deleted()) {
            (false, true) => {
                self.tombstones.fetch_add(1, Ordering::Relaxed);
                self.graves(&stored).insert(stored);
            }
            (true, false) => {
                self.tombstones.fetch_sub(1, Ordering::Relaxed);
                self.graves(&stored).remove(&stored);
            }
            _ => {}
        }
        Ok(())
    }

    /// The shard of the grave set a stored key belongs to.
    fn graves(&self, stored: &[u8]) -> std::sync::MutexGuard<'_, BTreeSet<Vec<u8>>> {
        // grave_shard is below GRAVE_SHARDS, the length of `graves`.
        let shard = &self.graves[grave_shard(stored) % self.graves.len()];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `limit` keys whose every version is a tombstone, in stored order
    /// (segment, then key), starting after `after`; fewer than `limit` means the
    /// end was reached.
    pub fn tombstone_keys(&self, after: Option<&str>, limit: usize) -> Vec<Key> {
        let start = after.map(stored_key);
        let first = start.as_deref().map_or(0, grave_shard);
        let mut out = Vec::new();
        for shard in first..GRAVE_SHARDS {
            let set = self.graves[shard % self.graves.len()]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let lower = match &start {
                Some(s) if shard == first => Bound::Excluded(s.clone()),
                _ => Bound::Unbounded,
            };
            for stored in set.range((lower, Bound::Unbounded)) {
                if out.len() >= limit {
                    return out;
                }
                if let Some(key) =
                    split_stored_key(stored).and_then(|(_, k)| std::str::from_utf8(k).ok())
                {
                    out.push(key.to_string());
                }
            }
        }
        out
    }

    /// The digest of this node's copy of `key` if that copy is dead at `now`
    /// (ms since the Unix epoch): only tombstones and expired versions (None: no
    /// copy, or a live one, which then leaves the graves).
    pub fn grave_digest(&self, key: &str, now: u64) -> Result<Option<u64>> {
        let _g = self.stripe(key);
        let at = stored_key(key);
        let Some(raw) = self.values.get(&at)? else {
            return Ok(None);
        };
        let object = decode::<Object>(&raw, "objects")?;
        if !object.is_dead_at(now) {
            if object.dies_at().is_none() {
                // Written again since it died or was due to: not a grave.
                self.graves(&at).remove(&at);
            }
            return Ok(None);
        }
        Ok(Some(entry_digest(key.as_bytes(), &raw)))
    }

    /// The floor under every counter issued for keys of `seg`.
    fn segment_floor(&self, seg: Segment) -> u64 {
        self.segment_floors
            .get(usize::from(seg))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Raises the floor of `seg` to `counter` (on disk, then in memory).
    fn raise_segment_floor(&self, seg: Segment, counter: u64) -> Result<()> {
        if counter <= self.segment_floor(seg) {
            return Ok(());
        }
        self.segment_floor_tree
            .insert(seg.to_be_bytes(), encode(&counter)?)?;
        if let Some(cell) = self.segment_floors.get(usize::from(seg)) {
            cell.fetch_max(counter, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes the tombstone of `key` if this node's copy still has `digest` (the
    /// copy every owner was shown to hold), is still only tombstones, and no hint
    /// for the key is kept here. First raises the segment's floor to the highest
    /// counter `me` issued for the key. Returns true if removed. The caller
    /// proves that no other copy or hint of an older version exists.
    pub fn reap(&self, me: &NodeId, key: &str, digest: u64) -> Result<bool> {
        let _g = self.stripe(key);
        let at = stored_key(key);
        let Some(raw) = self.values.get(&at)? else {
            return Ok(false);
        };
        if entry_digest(key.as_bytes(), &raw) != digest || self.has_hint_for(key)? {
            return Ok(false);
        }
        let object = decode::<Object>(&raw, "objects")?;
        // Every version a tombstone or one that expires: the primary's proof
        // found them dead by its clock (see the reaper's essay on skew).
        if !object.is_dead_at(u64::MAX) {
            return Ok(false);
        }
        self.raise_segment_floor(segment_of(key), object.counter_of(me))?;
        self.remove_record(key, &at, &raw, object.is_deleted())
    }

    /// Removes the record at `at` if it still holds `raw`, keeping the counts,
    /// the segment digest and the graves in step. Call under the key's stripe.
    fn remove_record(&self, key: &str, at: &[u8], raw: &[u8], deleted: bool) -> Result<bool> {
        let swapped = self
            .values
            .compare_and_swap(at, Some(raw), None as Option<&[u8]>)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.segment(at)
            .fetch_xor(entry_digest(key.as_bytes(), raw), Ordering::Relaxed);
        self.buckets.account(key.as_bytes(), -buckets::len_of(raw));
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.order_remove(key)?;
        if deleted {
            self.tombstones.fetch_sub(1, Ordering::Relaxed);
        }
        // A key dead by expiry is in the graves without being counted.
        self.graves(at).remove(at);
        Ok(true)
    }

    /// The coordinator's read-modify-write: applies a put or delete made by `actor`
    /// with the client's context `seen` to everything this node holds for `key`, and
    /// stores the result as its own replica (`hint_for == None`) or as a hint for the
    /// replica it stands in for. Returns the new object (to send to the other
    /// replicas) and the new version's dot.
    pub fn coordinate(
        &self,
        key: &str,
        actor: &NodeId,
        seen: &VersionVector,
        content: Content,
        hint_for: Option<&NodeId>,
    ) -> Result<(Object, Dot)> {
        if self.is_dropped(key) {
            return Err(Error::NoSuchBucket {
                bucket: "(dropped)".into(),
            });
        }
        let _g = self.stripe(key);
        let mut obj = self.get_value(key)?;
        let was_deleted = obj.is_deleted();
        self.merge_hints_for(key, &mut obj)?;
        let floor = match self.floors.get(key.as_bytes())? {
            Some(raw) => decode::<u64>(&raw, "floors")?,
            None => 0,
        }
        .max(self.segment_floor(segment_of(key)))
        .max(self.boot_floor(key));
        let dot = obj.update(actor, seen, content, floor)?;
        let size = obj.approx_size();
        if size > crate::types::MAX_OBJECT_BYTES {
            return Err(Error::ObjectTooLarge {
                size,
                limit: crate::types::MAX_OBJECT_BYTES,
            });
        }
        match hint_for {
            None => self.put_value(key, &obj, was_deleted)?,
            Some(target) => {
                // This node may hand the hint off and forget the key: remember the
                // counter so it never issues the same dot twice.
                self.floors.insert(key.as_bytes(), encode(&dot.counter)?)?;
                self.insert_hint(target, hint_key(key, target)?, &obj)?;
            }
        }
        Ok((obj, dot))
    }

    /// The digest of `key`'s stored object ([`entry_digest`]), None when this
    /// node has no copy. Equal objects have equal bytes (the encoding is
    /// canonical: siblings sorted, contexts ordered), so equal digests mean
    /// equal copies.
    pub fn digest(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .values
            .get(stored_key(key))?
            .map(|raw| entry_digest(key.as_bytes(), &raw)))
    }

    /// This node's own replica of `key` (hints left out), None when it has none.
    pub fn replica(&self, key: &str) -> Result<Option<Object>> {
        match self.values.get(stored_key(key))? {
            Some(raw) => Ok(Some(decode(&raw, "objects")?)),
            None => Ok(None),
        }
    }

    /// True if this node's replica of `key` has a record that does not
    /// decode (a read or a merge of the key fails for that reason, not the disk's).
    pub fn unreadable(&self, key: &str) -> Result<bool> {
        Ok(match self.values.get(stored_key(key))? {
            Some(raw) => decode::<Object>(&raw, "objects").is_err(),
            None => false,
        })
    }

    /// Merges many objects (a transfer batch) into this node's replica. Returns how
    /// many keys changed. A key whose record here does not decode is logged and
    /// left as it is (never overwritten blindly), and the others are merged: one
    /// bad record must not fail every transfer or exchange that carries it.
    /// Call [`Storage::durable`] before acknowledging.
    pub fn merge_many(&self, items: &[(Key, Arc<Object>)]) -> Result<usize> {
        let mut changed = 0;
        for (key, object) in items {
            match self.merge(key, object) {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) if self.unreadable(key)? => {
                    tracing::error!(%key, error = %e, "skipping a key whose stored record does not decode");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Removes `stored` from this node's replica if its bytes are still the ones
    /// scanned (a write that landed since keeps the key), after recording in the
    /// key's floor the highest counter `me` issued for it. Returns true if removed.
    pub fn drop_value(&self, me: &NodeId, stored: &Stored) -> Result<bool> {
        let _g = self.stripe(&stored.key);
        let issued = stored.object.counter_of(me);
        if issued > 0 {
            let floor = match self.floors.get(stored.key.as_bytes())? {
                Some(raw) => decode::<u64>(&raw, "floors")?,
                None => 0,
            };
            if issued > floor {
                self.floors
                    .insert(stored.key.as_bytes(), encode(&issued)?)?;
            }
        }
        let at = stored_key(&stored.key);
        self.remove_record(&stored.key, &at, &stored.raw, stored.object.is_deleted())
    }

    /// Stores `raw` as the record of `key` as is, keeping the count and the
    /// segment digest (as the walk at open would): tests use it to plant a
    /// record that does not decode.
    #[cfg(test)]
    pub(crate) fn insert_raw(&self, key: &str, raw: &[u8]) -> Result<()> {
        let stored = stored_key(key);
        let old = self.values.insert(stored.as_slice(), raw)?;
        let old_digest = match &old {
            Some(old) => entry_digest(key.as_bytes(), old),
            None => {
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.order_insert(key)?;
                0
            }
        };
        self.segment(&stored).fetch_xor(
            entry_digest(key.as_bytes(), raw) ^ old_digest,
            Ordering::Relaxed,
        );
        Ok(())
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.commit.stop();
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_FORMAT];
    bincode::serialize_into(&mut out, v).map_err(Error::storage)?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(raw: &[u8], tree: &str) -> Result<T> {
    match raw.split_first() {
        Some((&RECORD_FORMAT, body)) => bincode::deserialize(body)
            .map_err(|e| Error::storage(format!("corrupt record in tree {tree}: {e}"))),
        Some((v, _)) => Err(Error::storage(format!(
            "record in tree {tree} has format version {v}, this dynamo reads version {RECORD_FORMAT}: \
             was the data written by a newer dynamo?"
        ))),
        None => Err(Error::storage(format!("empty record in tree {tree}"))),
    }
}

#[cfg(test)]
mod tests;
