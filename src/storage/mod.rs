//! A node's durable state in sled.
//!
//! # Trees
//!
//! | tree | key | value |
//! |---|---|---|
//! | `values` | the key's bytes | the key's [`Object`] (all siblings and the causal context) |
//! | `hints` | `u16 BE key length, key, target node id` | an [`Object`] held for a replica that was down |
//! | `meta` | `ring` | the [`RingState`] this node last installed |
//! | `floors` | the key's bytes | the highest dot counter this node issued for the key while it held the key only as a hint |
//!
//! Every record starts with a one-byte format version ([`RECORD_FORMAT`]) followed by
//! bincode. A record with an unknown version is reported, never guessed at.
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
//! # Left out here
//!
//! Removing records (tombstone collection, handing keys to new owners) comes with
//! data movement; whoever removes a `values` record must first record the key's
//! floor so that a coordinator never reuses a dot counter.

mod group_commit;

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
/// How many mutexes guard per-key read-modify-write. 1024 makes two hot keys share a
/// stripe rarely while costing 1024 small mutexes per node.
pub const LOCK_STRIPES: usize = 1024;
/// sled's page cache. Bounds a node's memory (sled's default is 1 GiB).
pub const CACHE_BYTES: u64 = 128 * 1024 * 1024;

const RING_KEY: &[u8] = b"ring";

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
    hints: sled::Tree,
    meta: sled::Tree,
    floors: sled::Tree,
    keys: AtomicU64,
    /// Pending hints; reads skip the hints tree entirely while it is zero.
    hint_records: AtomicU64,
    stripes: Vec<Mutex<()>>,
    commit: GroupCommit,
    fsync: FsyncMode,
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
        let values = db.open_tree("values")?;
        let hints = db.open_tree("hints")?;
        let meta = db.open_tree("meta")?;
        let floors = db.open_tree("floors")?;
        let keys = AtomicU64::new(values.len() as u64);
        let hint_records = AtomicU64::new(hints.len() as u64);
        let fsync = if dir.is_none() {
            FsyncMode::Never
        } else {
            fsync
        };
        let commit = GroupCommit::start(db.clone(), fsync);
        let stripes = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(Storage {
            db,
            values,
            hints,
            meta,
            floors,
            keys,
            hint_records,
            stripes,
            commit,
            fsync,
        })
    }

    /// The durability this store gives (`never` for in-memory stores).
    pub fn fsync(&self) -> FsyncMode {
        self.fsync
    }

    /// Resolves once everything written before the call is on disk (per `--fsync`).
    pub fn durable(&self) -> BoxFuture<'static, Result<()>> {
        self.commit.wait().boxed()
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

    /// Number of keys in `values`.
    pub fn key_count(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    /// Number of pending hints.
    pub fn hint_count(&self) -> u64 {
        self.hint_records.load(Ordering::Relaxed)
    }

    /// Merges every hint this node keeps for `key` into `obj` (nothing to do, and
    /// no tree walk, while no hint is pending).
    fn merge_hints_for(&self, key: &str, obj: &mut Object) -> Result<()> {
        if self.hint_count() == 0 {
            return Ok(());
        }
        for item in self.hints.scan_prefix(hint_prefix(key)?) {
            let (_, raw) = item?;
            obj.merge(&decode::<Object>(&raw, "hints")?);
        }
        Ok(())
    }

    fn insert_hint(&self, hkey: Vec<u8>, obj: &Object) -> Result<()> {
        if self.hints.insert(hkey, encode(obj)?)?.is_none() {
            self.hint_records.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
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
        match self.values.get(key.as_bytes())? {
            Some(raw) => decode(&raw, "values"),
            None => Ok(Object::new()),
        }
    }

    /// Merges a replica write into this node's copy of `key`. Returns true if the
    /// stored object changed. Call [`Storage::durable`] before acknowledging.
    pub fn merge(&self, key: &str, incoming: &Object) -> Result<bool> {
        let _g = self.stripe(key);
        let mut obj = self.get_value(key)?;
        if !obj.merge(incoming) {
            return Ok(false);
        }
        self.put_value(key, &obj)?;
        Ok(true)
    }

    fn put_value(&self, key: &str, obj: &Object) -> Result<()> {
        let old = self.values.insert(key.as_bytes(), encode(obj)?)?;
        if old.is_none() {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Merges a write held for `target` (hinted handoff).
    pub fn merge_hint(&self, target: &NodeId, key: &str, incoming: &Object) -> Result<()> {
        let _g = self.stripe(key);
        let hkey = hint_key(key, target)?;
        let mut obj = match self.hints.get(&hkey)? {
            Some(raw) => decode(&raw, "hints")?,
            None => Object::new(),
        };
        obj.merge(incoming);
        self.insert_hint(hkey, &obj)
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
        let _g = self.stripe(key);
        let mut obj = self.get_value(key)?;
        self.merge_hints_for(key, &mut obj)?;
        let floor = match self.floors.get(key.as_bytes())? {
            Some(raw) => decode::<u64>(&raw, "floors")?,
            None => 0,
        };
        let dot = obj.update(actor, seen, content, floor)?;
        let size = obj.approx_size();
        if size > crate::types::MAX_OBJECT_BYTES {
            return Err(Error::ObjectTooLarge {
                size,
                limit: crate::types::MAX_OBJECT_BYTES,
            });
        }
        match hint_for {
            None => self.put_value(key, &obj)?,
            Some(target) => {
                // This node may hand the hint off and forget the key: remember the
                // counter so it never issues the same dot twice.
                self.floors.insert(key.as_bytes(), encode(&dot.counter)?)?;
                self.insert_hint(hint_key(key, target)?, &obj)?;
            }
        }
        Ok((obj, dot))
    }

    /// Every pending hint, in key order. Hints with undecodable records are skipped
    /// with an error logged by the caller through the returned list of failures.
    pub fn hints(&self) -> Result<Vec<Hint>> {
        let mut out = Vec::new();
        for item in self.hints.iter() {
            let (k, raw) = item?;
            let (key, target) = split_hint_key(&k)?;
            let object = Arc::new(decode(&raw, "hints")?);
            out.push(Hint {
                target,
                key,
                object,
                raw,
            });
        }
        Ok(out)
    }

    /// Deletes a delivered hint unless it changed since it was read (a newer write
    /// merged into it must still be delivered). Returns true if deleted.
    pub fn remove_hint(&self, hint: &Hint) -> Result<bool> {
        let hkey = hint_key(&hint.key, &hint.target)?;
        let swapped = self
            .hints
            .compare_and_swap(hkey, Some(&hint.raw), None as Option<&[u8]>)?;
        if swapped.is_ok() {
            self.hint_records.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(swapped.is_ok())
    }

    /// The ring this node last installed.
    pub fn ring(&self) -> Result<Option<RingState>> {
        match self.meta.get(RING_KEY)? {
            Some(raw) => Ok(Some(decode(&raw, "meta")?)),
            None => Ok(None),
        }
    }

    /// Persists a ring. Call [`Storage::durable`] before relying on it.
    pub fn save_ring(&self, ring: &RingState) -> Result<()> {
        self.meta.insert(RING_KEY, encode(ring)?)?;
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

fn hint_prefix(key: &str) -> Result<Vec<u8>> {
    let len = u16::try_from(key.len())
        .map_err(|_| Error::invalid(format!("key of {} bytes cannot be hinted", key.len())))?;
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    Ok(out)
}

fn hint_key(key: &str, target: &NodeId) -> Result<Vec<u8>> {
    let mut out = hint_prefix(key)?;
    out.extend_from_slice(target.as_str().as_bytes());
    Ok(out)
}

fn split_hint_key(raw: &[u8]) -> Result<(Key, NodeId)> {
    let bad = || Error::storage("corrupt hint key");
    let (len, rest) = raw.split_first_chunk::<2>().ok_or_else(bad)?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (key, target) = (
        rest.get(..len).ok_or_else(bad)?,
        rest.get(len..).ok_or_else(bad)?,
    );
    let key = String::from_utf8(key.to_vec()).map_err(|_| bad())?;
    let target = std::str::from_utf8(target)
        .map_err(|_| bad())?
        .parse()
        .map_err(|_| bad())?;
    Ok((key, target))
}

#[cfg(test)]
mod tests;
