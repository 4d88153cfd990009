//! Tombstone removal: a deleted key leaves the disk once that is proven safe.
//!
//! A delete writes a tombstone, a version that says "everything this context
//! saw is gone". As long as some node may still hold or send an older version
//! of the key, the tombstone is what keeps that version from coming back: merged
//! with the tombstone, the older version is dominated and dropped. Removing it
//! too early is how Cassandra and Riak users got deleted data back. Removing it
//! never is how their disks filled up. This module removes it on proof.
//!
//! # The invariant
//!
//! **A tombstone is removed only if, under one settled ring, every owner of the
//! key held the same tombstone (the same bytes), no member kept a hint for the
//! key and no non-owner kept a copy of it, and that was still so after a grace
//! period longer than any call that could carry an older copy.**
//!
//! Why that is enough for a deleted value never to return. An older version can
//! only come back by being merged into a node that no longer holds the
//! tombstone. The ways a version travels between nodes are: replica writes
//! (they carry a new version made by a coordinator, never an old one), read
//! repair, hint delivery, anti-entropy, a ring change's transfer, and the
//! clean-up after a change. With the ring settled and every member's clean-up
//! of it finished, no transfer or clean-up is running. A hint is deleted only
//! after its target merged it, so a check that finds no hint on any member
//! finds none in flight either. Read repair and anti-entropy only copy what a
//! member holds, and every member that holds the key holds the tombstone.
//!
//! *Nodes outside the ring.* "Every member" is the members of one ring; a node
//! that is not one of them (removed while it was stalled or down, a join that
//! was aborted) is never asked, and may hold anything. It can never write into
//! the ring: every call that stores data names its sender, and a receiver
//! refuses one from outside its own ring (`Error::Fenced`, in
//! [`crate::coordinator`]). The check is made when the receiver handles the
//! call, against the ring it has then, so it does not matter how old the call
//! is: a frame from a removed node that sat in a socket for an hour is refused
//! like a fresh one. And a receiver still on an older ring (where the sender
//! was a member) cannot be part of a proof: a proof needs every member to
//! answer under the ring being proven ([`Reaper::check_here`] refuses another
//! epoch), and a node does not vouch while any call it began under an older
//! ring still runs (`RingCell::older_in_use`), so what such a call merged is
//! in the copies the proof reads.
//!
//! *Copies in flight between members.* What is left is a copy a member read
//! *before* the first check (read repair's merge, an anti-entropy push) and
//! still on its way. The grace is meant to outlast it, and the argument has a
//! gap that must be said: tarpc sends a request's deadline as the time left,
//! not as an instant, so a frame delayed after it was written (in a socket
//! buffer, in TCP retransmissions across a healed partition) arrives with a
//! fresh deadline. Three things bound it. A receiver refuses a call that stores
//! data when its deadline has already passed when it reads it (a request that
//! waited in the sender's own queues arrives with only what was left), so
//! only delay after the frame left the sender counts. A live receiver reads
//! its sockets at once. And the grace must be longer than twice the longest
//! deadline of a call that carries copies (`--tombstone-grace-ms` is refused
//! otherwise, [`crate::config`]). What remains unbounded is a frame held in
//! the network itself for longer than the grace, between two members that
//! both stay in the ring: TCP gives up on such a connection after its own
//! retransmission timeout (minutes), so a partition healing between one and
//! fifteen minutes after a read repair was sent could still bring an old
//! value back to a node whose tombstone was removed meanwhile. Keeping
//! `--tombstone-grace-ms` above the longest partition expected closes it;
//! checking a sender's clock would need synchronised clocks, which this
//! database does not assume.
//!
//! Each owner then removes its copy with a compare-and-swap on the proven
//! digest ([`Storage::reap`]): a write that landed since keeps the key. An owner
//! that misses the removal keeps its tombstone and gives it back to the others
//! by anti-entropy, and the proof runs again: the end state is always "removed
//! everywhere", never "value back".
//!
//! Removing a tombstone also forgets the dot counters it held. A blind put
//! after the removal must not reuse them, or a client still holding a context
//! from before the delete would silently replace the new value. Each owner
//! raises its segment's dot floor before it removes its copy (see
//! [`crate::storage`]).
//!
//! # Keys that die by expiry
//!
//! A version put with a TTL carries the instant it expires, stamped by the
//! coordinator of the put from its clock ([`crate::vclock::Content::Expiring`]).
//! A key whose every version is a tombstone or has expired is dead, and is
//! removed on the same proof as a deleted one: every owner holds the same
//! bytes, no hint, no stray copy, twice across the grace. Such a key cannot be
//! resurrected by a replica that missed the expiry, because there is nothing
//! to miss: the expiry is part of the version, so every copy of it anywhere,
//! however late it arrives, expires at the same instant, and a copy merged in
//! after the removal reads as absent and is removed again.
//!
//! Whose clock decides. Reads: the node (or client) that merges the answers
//! leaves out versions expired by its own clock. Removal: the primary decides
//! that the copies are dead by its clock; the other owners remove on its proof
//! whatever their clocks say (the proven bytes are only tombstones and expiring
//! versions). What a skew of S does: a key reads as absent up to S early
//! through a node whose clock is ahead, and up to S late through one that is
//! behind; once every clock has passed the instant it is absent everywhere, and
//! it never comes back. A primary whose clock is ahead can remove a key up to S
//! before a slow node would have stopped showing it, which that node's readers
//! see as an expiry up to S early. Nothing needs synchronised clocks to stay
//! safe; NTP keeps the early/late window to milliseconds.
//!
//! # Who does it
//!
//! The *primary* of a key, the first of its owners in the ring, drives its
//! removal, so each tombstone is handled by one node. Once a second, on a ring
//! with no change running, each node takes the graves it is primary for
//! ([`Storage::tombstone_keys`], a cursor walking them in order), asks every
//! member with [`TombstoneCheck`] and remembers, for each key that passed, when
//! and with which digest. A key that passes again at least the grace later with
//! the same digest is removed on all its owners (the `reap` call).
//!
//! # What it leaves out
//!
//! - Every member must answer: one member down stops all removals, as it
//!   should (it may hold an older copy or a hint). A failure detector does not
//!   change that.
//! - Nothing is removed while anti-entropy is off (`--anti-entropy-interval-ms
//!   0`): the proof needs the exchanges that make owners agree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use crate::context::NodeContext;
use crate::error::{Error, Result};
use crate::peers::Peers;
use crate::ring::{Ring, RingCell};
use crate::rpc::{Addressee, TombstoneCheck};
use crate::storage::{Marker, Storage};
use crate::types::{Key, NodeId};

/// Pause between two rounds: tombstones wait for the grace anyway, and a
/// round costs one small call per member.
pub const ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// Most keys one check or one reap call may name (a check answer of 1,024 keys
/// of at most 1 KiB stays far under the frame limit).
pub const MAX_CHECK_KEYS: usize = 1024;
/// Keys a round newly checks: a few thousand tombstones a second per node.
pub const ROUND_KEYS: usize = 4096;
/// Graves a round walks to find those this node is primary for.
pub const WALK_KEYS: usize = 16_384;
/// Most keys waiting for their grace at once; more waits for a later round.
pub const MAX_WAITING: usize = 200_000;
/// Deadline of one check or reap call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Refuses a call from a peer that names more than [`MAX_CHECK_KEYS`] keys.
fn within_limit(keys: usize, what: &str) -> Result<()> {
    if keys > MAX_CHECK_KEYS {
        return Err(Error::invalid(format!(
            "{keys} keys in one {what}, the limit is {MAX_CHECK_KEYS}"
        )));
    }
    Ok(())
}

/// A key that passed a check: the digest every owner held, and when.
struct Waiting {
    digest: u64,
    since: Instant,
}

/// The tombstone remover of one node.
pub struct Reaper {
    me: NodeId,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    grace: Duration,
    enabled: bool,
    removed: AtomicU64,
    /// Keys that passed a check, by epoch (a new ring starts over).
    waiting: Mutex<(u64, BTreeMap<Key, Waiting>)>,
    /// Where the walk over the graves goes on.
    cursor: Mutex<Option<Key>>,
}

impl Reaper {
    /// The remover of node `me`; `enabled` false makes it only answer peers.
    pub fn new(node: &NodeContext, grace: Duration, enabled: bool) -> Reaper {
        let NodeContext {
            me,
            storage,
            peers,
            ring,
            ..
        } = node.clone();
        Reaper {
            me,
            storage,
            peers,
            ring,
            grace,
            enabled,
            removed: AtomicU64::new(0),
            waiting: Mutex::new((0, BTreeMap::new())),
            cursor: Mutex::new(None),
        }
    }

    /// Tombstones this node removed since it started.
    pub fn removed(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// One round a second until `stop` (returns at once when disabled).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.enabled {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ROUND_INTERVAL) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            match self.round().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed tombstones every owner held"),
                Err(e) => tracing::debug!(error = %e, "tombstone round stopped"),
            }
        }
    }

    /// Why this node cannot vouch for keys under `ring` now, if it cannot.
    fn not_ready(&self, ring: &Ring) -> Result<Option<String>> {
        if ring.transition().is_some() {
            return Ok(Some("a ring change is running".into()));
        }
        if self.ring.older_in_use(ring.epoch()) {
            return Ok(Some(
                "a call begun under an older ring is still running on it".into(),
            ));
        }
        if self.storage.marker(Marker::CleanupDone)? < ring.epoch() {
            return Ok(Some("its clean-up of the ring is not finished".into()));
        }
        if self.storage.restoring() {
            return Ok(Some("it is refilling after losing its data".into()));
        }
        if ring.state().actor(&self.me, self.storage.uuid()).is_none() {
            return Ok(Some("the ring knows another node at its address".into()));
        }
        Ok(None)
    }

    /// The ring, if it is at `epoch`.
    fn ring_at(&self, epoch: u64) -> Result<Arc<Ring>> {
        match self.ring.get() {
            Some(r) if r.epoch() == epoch => Ok(r),
            other => Err(Error::StaleRing {
                node: self.me.clone(),
                sent: epoch,
                current: other.map_or(0, |r| r.epoch()),
            }),
        }
    }

    /// Answers a peer's [`TombstoneCheck`] for `keys` under `epoch`.
    pub async fn check_here(&self, epoch: u64, keys: Vec<Key>) -> Result<TombstoneCheck> {
        within_limit(keys.len(), "tombstone check")?;
        let ring = self.ring_at(epoch)?;
        if let Some(reason) = self.not_ready(&ring)? {
            return Ok(TombstoneCheck {
                not_ready: Some(reason),
                ..TombstoneCheck::default()
            });
        }
        let storage = self.storage.clone();
        crate::runtime::spawn(move || {
            let mut out = TombstoneCheck::default();
            for key in &keys {
                out.copies.push(storage.digest(key)?);
                out.hinted.push(storage.has_hint_for(key)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }

    /// Removes this node's copies of `items` (key, proven digest) under `epoch`.
    pub async fn reap_here(&self, epoch: u64, items: Vec<(Key, u64)>) -> Result<u64> {
        within_limit(items.len(), "reap")?;
        let ring = self.ring_at(epoch)?;
        if let Some(reason) = self.not_ready(&ring)? {
            return Err(Error::invalid(format!(
                "cannot remove tombstones: {reason}"
            )));
        }
        let Some(actor) = ring.state().actor(&self.me, self.storage.uuid()) else {
            return Ok(0);
        };
        let storage = self.storage.clone();
        let removed = crate::runtime::spawn(move || {
            let mut removed = 0;
            for (key, digest) in &items {
                if storage.reap(&actor, key, *digest)? {
                    removed += 1;
                }
            }
            Ok::<_, Error>(removed)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        self.storage.durable().await?;
        self.removed.fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }

    /// One round: check the keys due and new ones, remove those proven twice.
    /// Returns how many tombstones it removed on this node.
    async fn round(&self) -> Result<u64> {
        let Some(ring) = self.ring.get() else {
            return Ok(0);
        };
        if let Some(reason) = self.not_ready(&ring)? {
            tracing::debug!(%reason, "not removing tombstones now");
            return Ok(0);
        }
        let epoch = ring.epoch();
        let now = Instant::now();
        // The keys whose grace is over, then new keys from the walk.
        let (mut keys, room) = {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if w.0 != epoch {
                *w = (epoch, BTreeMap::new());
            }
            let due: Vec<Key> =
                w.1.iter()
                    .filter(|(_, v)| now.duration_since(v.since) >= self.grace)
                    .map(|(k, _)| k.clone())
                    .take(ROUND_KEYS)
                    .collect();
            (due, MAX_WAITING.saturating_sub(w.1.len()))
        };
        let due = keys.len();
        if room > 0 {
            let fresh = self.walk(&ring, room.min(ROUND_KEYS)).await?;
            keys.extend(fresh);
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let (proven, owners) = self.check(&ring, &keys).await?;
        let checked_at = Instant::now();
        let mut reap = Vec::new();
        {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if w.0 != epoch {
                return Ok(0);
            }
            let checked = keys.into_iter().zip(proven).zip(owners);
            for (i, ((key, digest), owners)) in checked.enumerate() {
                match (i < due, digest) {
                    (true, Some(d)) => match w.1.remove(&key) {
                        Some(v) if v.digest == d => reap.push((key, d, owners)),
                        // Changed since the first proof: start over.
                        _ => {
                            w.1.insert(
                                key,
                                Waiting {
                                    digest: d,
                                    since: checked_at,
                                },
                            );
                        }
                    },
                    (true, None) => {
                        w.1.remove(&key);
                    }
                    (false, Some(d)) => {
                        w.1.insert(
                            key,
                            Waiting {
                                digest: d,
                                since: checked_at,
                            },
                        );
                    }
                    (false, None) => {}
                }
            }
        }
        if reap.is_empty() {
            return Ok(0);
        }
        self.reap(&ring, reap).await
    }

    /// Up to `limit` graves this node is primary for, from where the last walk
    /// stopped (wrapping at the end), that are not already waiting.
    async fn walk(&self, ring: &Arc<Ring>, limit: usize) -> Result<Vec<Key>> {
        let after = self
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let storage = self.storage.clone();
        let now = crate::runtime::now_ms();
        let graves = crate::runtime::spawn(move || {
            // Keys that died by expiry since the last walk join the graves.
            storage.promote_expired(now);
            storage.tombstone_keys(after.as_deref(), WALK_KEYS)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?;
        let mut out = Vec::new();
        let mut last = None;
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for key in &graves {
            if out.len() >= limit {
                break;
            }
            last = Some(key);
            if waiting.1.contains_key(key) {
                continue;
            }
            let owners = ring.preference_list(key.as_bytes());
            if owners.first() == Some(&self.me) {
                out.push(key.clone());
            }
        }
        drop(waiting);
        // Walked to the end of the graves: the next walk starts over.
        let next = if out.len() < limit && graves.len() < WALK_KEYS {
            None
        } else {
            last.cloned()
        };
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(out)
    }

    /// For each key, the digest every owner holds, if the proof holds for it
    /// now: every member answered and is ready, every owner holds these same
    /// bytes and they are only tombstones, no member keeps a hint for the key
    /// and no other member keeps a copy.
    /// Returns that digest (or None) and the owners of each key.
    async fn check(
        &self,
        ring: &Arc<Ring>,
        keys: &[Key],
    ) -> Result<(Vec<Option<u64>>, Vec<Vec<NodeId>>)> {
        let storage = self.storage.clone();
        let asked = keys.to_vec();
        let now = crate::runtime::now_ms();
        // Mine first: the digest of a copy that is dead (only tombstones and
        // versions expired by this node's clock), and no hint.
        let mut proven: Vec<Option<u64>> = crate::runtime::spawn(move || {
            let mut out = Vec::with_capacity(asked.len());
            for key in &asked {
                let digest = match storage.grave_digest(key, now)? {
                    Some(d) if !storage.has_hint_for(key)? => Some(d),
                    _ => None,
                };
                out.push(digest);
            }
            Ok::<_, Error>(out)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        let owners: Vec<Vec<NodeId>> = keys
            .iter()
            .map(|k| ring.preference_list(k.as_bytes()))
            .collect();
        let others: Vec<NodeId> = ring
            .members()
            .iter()
            .filter(|m| **m != self.me)
            .cloned()
            .collect();
        let answers =
            futures::future::join_all(others.iter().map(|m| self.ask_all(ring, m, keys))).await;
        for (member, answer) in others.iter().zip(answers) {
            // One member that does not answer, or cannot vouch: nothing is proven.
            let answer = answer?;
            for (i, slot) in proven.iter_mut().enumerate() {
                let Some(d) = *slot else { continue };
                let owner = owners.get(i).is_some_and(|o| o.contains(member));
                let copy = answer.copies.get(i).copied().flatten();
                let hinted = answer.hinted.get(i).copied().unwrap_or(true);
                let agrees = if owner {
                    copy == Some(d)
                } else {
                    copy.is_none()
                };
                if hinted || !agrees {
                    *slot = None;
                }
            }
        }
        Ok((proven, owners))
    }

    /// `member`'s check of every key (in calls of at most [`MAX_CHECK_KEYS`]).
    async fn ask_all(&self, ring: &Ring, member: &NodeId, keys: &[Key]) -> Result<TombstoneCheck> {
        let mut all = TombstoneCheck::default();
        for chunk in keys.chunks(MAX_CHECK_KEYS) {
            let to = Addressee::in_ring(ring, member);
            let epoch = ring.epoch();
            let asked = chunk.to_vec();
            let answer = self
                .peers
                .call(member, CALL_TIMEOUT, |c, ctx| async move {
                    c.tombstone_check(ctx, to, epoch, asked).await
                })
                .await
                .map_err(|e| Error::invalid(format!("{member}: {}", e.reason())))?;
            if let Some(reason) = answer.not_ready {
                return Err(Error::invalid(format!("{member}: {reason}")));
            }
            if answer.copies.len() != chunk.len() || answer.hinted.len() != chunk.len() {
                return Err(Error::invalid(format!(
                    "{member}: a tombstone check answered for the wrong number of keys"
                )));
            }
            all.copies.extend(answer.copies);
            all.hinted.extend(answer.hinted);
        }
        Ok(all)
    }

    /// Removes `items` (key, proven digest, its owners) on every owner (this
    /// node included). Returns how many copies this node removed.
    async fn reap(&self, ring: &Arc<Ring>, items: Vec<(Key, u64, Vec<NodeId>)>) -> Result<u64> {
        let epoch = ring.epoch();
        let mut by_owner: BTreeMap<NodeId, Vec<(Key, u64)>> = BTreeMap::new();
        for (key, digest, owners) in items {
            for owner in owners {
                by_owner
                    .entry(owner)
                    .or_default()
                    .push((key.clone(), digest));
            }
        }
        let mine = by_owner.remove(&self.me).unwrap_or_default();
        let remote = futures::future::join_all(by_owner.into_iter().map(|(owner, items)| async move {
            for chunk in items.chunks(MAX_CHECK_KEYS) {
                let to = Addressee::from_me(ring, &owner, &self.me, self.storage.uuid());
                let sent = chunk.to_vec();
                if let Err(e) = self
                    .peers
                    .call(&owner, CALL_TIMEOUT, |c, ctx| async move {
                        c.reap(ctx, to, epoch, sent).await
                    })
                    .await
                {
                    // It keeps its tombstones; anti-entropy gives them back to
                    // the others and a later round removes them again.
                    tracing::debug!(%owner, reason = %e.reason(), "an owner did not remove tombstones");
                    return;
                }
            }
        }));
        let mut removed = 0;
        for chunk in mine.chunks(MAX_CHECK_KEYS) {
            removed += self.reap_here(epoch, chunk.to_vec()).await?;
        }
        remote.await;
        Ok(removed)
    }
}
