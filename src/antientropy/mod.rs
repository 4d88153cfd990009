//! Anti-entropy: replicas converge by themselves, without reads.
//!
//! Read repair fixes the keys somebody reads, and hinted handoff the writes a
//! stand-in held; a replica that missed writes while its stand-in was down too,
//! or that lost its disk, stays wrong for every key nobody reads. This module
//! closes that gap the way Dynamo (§4.7) and Riak's active anti-entropy do: each
//! node keeps hash trees of what it holds and periodically compares them with
//! every node it shares keys with, descending only into what differs.
//!
//! # The invariant
//!
//! For every key and every two of its owners in the current ring
//! ([`Ring::owners_at`]), if both stay up, their copies are merged both ways
//! within one round of exchanges: each ends with the causal merge of the two. Merge is a join (commutative,
//! associative, idempotent), so exchanging in any order, twice, or at the same
//! time as writes, read repair, handoff or a ring change's transfer, never loses
//! a version and never resurrects one a context has replaced.
//!
//! An exchange only ever merges (`Storage::merge` through the `transfer` RPC,
//! and locally): it never deletes, and it only moves a key between two of its
//! owners under the ring epoch both have, so it never hands a key to a node
//! that does not own it (which a ring change's clean-up would then have to find).
//!
//! During a ring change it keeps comparing the current owners; bringing keys to
//! their pending owners is the transfer's job ([`crate::rebalance`]), which
//! sends the same objects through the same `transfer` RPC, and after the settle
//! the new owners are the owners anti-entropy compares. Comparing pending
//! owners too would send every moving key twice.
//!
//! # Segments, not token ranges
//!
//! The hash space is cut into [`SEGMENTS`] fixed segments (the top 16 bits of a
//! key's ring position, [`crate::storage::segment_of`]). The storage layer keeps
//! keys in segment order and one digest per segment, the XOR of its keys' entry
//! digests, updated as each write lands: the leaves of the tree are never
//! rebuilt, and a segment's keys are one prefix scan. Segments are used instead
//! of the ring's token ranges because they never move: a ring change changes who
//! holds a segment, not what is in it, so nothing is rebuilt when tokens come
//! and go, and two nodes agree on the leaves whatever ring either has. Tokens
//! are hashed, so a few segments (at most one per token) straddle a token, and
//! some of those are held by different nodes on either side (a token where
//! only the order of the same owners changes, as everywhere when N is the
//! ring's size, splits nothing): for those *split* segments the shared part is
//! computed from the keys (a prefix scan, a few keys each).
//!
//! The tree has three levels: [`GROUPS`] groups of 256 segments, the segments,
//! the keys. For a pair of nodes a group's digest is the XOR of the digests of
//! the segments (or shared parts of split segments) both hold in it, computed
//! on demand from the kept segment digests (65,536 XORs).
//!
//! # An exchange
//!
//! Node A picks the next peer B it shares segments with (round robin) and, under
//! the ring epoch both have (B refuses another):
//!
//! 1. asks B for its 256 group digests for the pair and compares them with its own;
//! 2. for the groups that differ, asks for the segment digests;
//! 3. for the segments that differ, asks for the keys with their entry
//!    digests, in pages of at most [`MAX_KEYS_PAGE_BYTES`], each asked from
//!    the key where the last one stopped;
//! 4. sends B, with `transfer`, its copy of every key B lacks or holds
//!    differently, and fetches B's copy of every key A lacks or holds
//!    differently (`ae_fetch`), merging it locally and durably.
//!
//! Two replicas that agree cost one round trip of 2 KiB.
//!
//! A stored record that does not decode, on either side, is logged and
//! skipped (neither sent nor fetched nor overwritten), as the transfer does,
//! and the exchange goes on with the other keys. Its digest still differs, so
//! every exchange finds it and logs it again until someone repairs the record.
//!
//! # Bounds
//!
//! One exchange at a time per node (so at most one per peer pair and direction),
//! one every `--anti-entropy-interval-ms` ([`DEFAULT_EXCHANGE_INTERVAL_MS`]), and keys repaired (sent plus fetched) capped
//! at `--repair-rate` keys per second ([`DEFAULT_REPAIR_RATE`]): a node that lost its disk
//! is refilled at that pace instead of in a repair storm. Queries are bounded
//! ([`MAX_SEGMENTS_PER_QUERY`], [`MAX_FETCH_KEYS`]) and every answer stays under
//! the frame limit: a fetch stops at [`BATCH_BYTES`] of objects and a key
//! listing comes in pages of [`MAX_KEYS_PAGE_BYTES`]. The asker still holds
//! its own listing and the peer's of one query's segments in memory at once.
//!
//! # A node that lost its data directory
//!
//! It comes back empty under its address with a new identity, is readmitted by
//! the leader (see [`crate::membership`]) and marks itself *refilling*: it takes
//! writes, but refuses to answer reads ([`Error::Restoring`]) so an empty copy
//! never counts toward R. It is refilled by its own exchanges; once it has
//! finished one with every peer it shares keys with, it holds everything they
//! held and its reads count again.
//!
//! # What it leaves out
//!
//! - Hints are not compared: a hint is delivered by handoff, and what it holds
//!   reaches the other replicas through its target.
//! - The per-segment digest is an XOR of 64-bit hashes: two different sets of
//!   copies could in principle have equal digests (odds about 2^-64 per segment
//!   per exchange); the next write to the segment changes it.

mod map;
pub mod reaper;

#[cfg(test)]
#[cfg(test)]
use map::all_segments;
use map::group_segments;
pub use map::{differing, key_diff, KeyDiff, Share, SharedMap};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use tokio::sync::watch;

use crate::context::NodeContext;
use crate::error::{Error, Result};
use crate::peers::{CallError, Peers};
use crate::rebalance::{batches, item_size, Bucket, BATCH_BYTES, BATCH_KEYS};
#[cfg(test)]
use crate::ring::key_position;
use crate::ring::{Ring, RingCell};
use crate::rpc::{Addressee, AeAnswer, AeQuery, AeStats, LastExchange};
use crate::storage::{Segment, Storage, SEGMENTS};
use crate::types::{Key, NodeId};
use crate::vclock::Object;

/// Groups of segments in the tree's top level.
pub const GROUPS: usize = 256;
/// Segments per group.
pub const SEGMENTS_PER_GROUP: usize = SEGMENTS / GROUPS;
pub use crate::config::{DEFAULT_EXCHANGE_INTERVAL_MS, DEFAULT_REPAIR_RATE};
/// Most segments one key query may name.
pub const MAX_SEGMENTS_PER_QUERY: usize = 1024;
/// Most keys one fetch may name.
pub const MAX_FETCH_KEYS: usize = BATCH_KEYS;
/// Most bytes of keys (with their digests and bincode lengths,
/// [`KEY_ENTRY_BYTES`] each) in one page of a key listing: 1024 segments of a
/// large node hold far more than the 16 MiB frame limit.
pub const MAX_KEYS_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// What one listed key costs in a page besides its bytes: its length prefix
/// and its digest.
pub const KEY_ENTRY_BYTES: usize = 16;
/// One page of a key listing (keys with their entry digests) and the key the
/// next page starts after (None: the listing is complete).
pub type KeyPage = (Vec<(Key, u64)>, Option<Key>);

/// This node's copies of `keys` (those it has), in order, until they pass
/// `budget` bytes. A record that does not decode is logged and skipped, as the
/// transfer does: one bad record must not stop anti-entropy with a peer.
fn readable_copies(
    storage: &Storage,
    keys: Vec<Key>,
    budget: usize,
) -> Result<Vec<(Key, Arc<Object>)>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for key in keys {
        if bytes >= budget {
            break;
        }
        match storage.replica(&key) {
            Ok(Some(obj)) => {
                bytes = bytes.saturating_add(obj.approx_size());
                out.push((key, Arc::new(obj)));
            }
            Ok(None) => {}
            Err(e) if storage.unreadable(&key)? => {
                tracing::error!(%key, error = %e, "anti-entropy: skipping a record that does not decode");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What one exchange did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Keys whose copy was sent to the peer.
    pub pushed: u64,
    /// Keys whose copy was fetched from the peer.
    pub pulled: u64,
    /// Segments found different.
    pub segments: u64,
}

/// Why an exchange ended early.
#[derive(Debug)]
enum Stop {
    /// The node is shutting down.
    Shutdown,
    /// The ring moved on, or the peer has another: try again next round.
    Ring,
    /// The peer failed.
    Peer(CallError),
    /// This node's storage failed.
    Local(Error),
}

/// A peer's refusal under another ring epoch ends the exchange until the next
/// round; any other failure is the peer's.
impl From<CallError> for Stop {
    fn from(e: CallError) -> Stop {
        match e {
            CallError::Remote(Error::StaleRing { .. }) => Stop::Ring,
            e => Stop::Peer(e),
        }
    }
}

/// One node's anti-entropy: the exchanges it starts and the queries it answers.
pub struct AntiEntropy {
    me: NodeId,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    rate: u64,
    interval: Option<Duration>,
    map: Mutex<Option<Arc<SharedMap>>>,
    stats: Mutex<AeStats>,
    next_peer: AtomicUsize,
    /// Keys a peer refused for good, for `status`.
    refused: Arc<crate::peers::Refusals>,
    /// Deadline of one call (`--copy-timeout-ms`).
    call_timeout: Duration,
}

/// A refusal that says the sender is not admitted: no key is at fault.
fn fenced(e: &Error) -> bool {
    matches!(e, Error::Fenced { .. } | Error::Removed { .. })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl AntiEntropy {
    /// Anti-entropy of node `me`, repairing at most `rate` keys per second (0: no
    /// cap), one exchange every `interval` (None: it only answers peers).
    pub fn new(
        node: &NodeContext,
        rate: u64,
        interval: Option<Duration>,
        call_timeout: Duration,
    ) -> AntiEntropy {
        let NodeContext {
            me,
            storage,
            peers,
            ring,
            refused,
        } = node.clone();
        AntiEntropy {
            me,
            storage,
            peers,
            ring,
            rate,
            interval,
            map: Mutex::new(None),
            stats: Mutex::new(AeStats::default()),
            next_peer: AtomicUsize::new(0),
            refused,
            call_timeout,
        }
    }

    /// Counters for `status`.
    pub fn stats(&self) -> AeStats {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(last) = &mut stats.last_exchange {
            last.ago_ms = unix_ms().saturating_sub(last.at_unix_ms);
        }
        stats
    }

    /// The map for the current ring (built once per epoch, off the async threads).
    async fn map(&self) -> Result<Option<Arc<SharedMap>>> {
        let Some(ring) = self.ring.get() else {
            return Ok(None);
        };
        if let Some(m) = self.map.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if m.epoch() == ring.epoch() {
                return Ok(Some(m.clone()));
            }
        }
        let me = self.me.clone();
        let map = Arc::new(
            crate::runtime::spawn(move || SharedMap::new(&ring, me))
                .await
                .map_err(|e| Error::internal(e.to_string()))?,
        );
        *self.map.lock().unwrap_or_else(|p| p.into_inner()) = Some(map.clone());
        Ok(Some(map))
    }

    /// The exchange loop: one exchange every interval, peers in turn, until
    /// `stop` (returns at once when anti-entropy is off).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(interval) = self.interval else {
            return;
        };
        // While refilling: the peers a whole exchange has been finished with.
        let mut refilled_from = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let map = match self.map().await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "anti-entropy: cannot map the ring");
                    continue;
                }
            };
            // A node the ring knows under another identity at its address does
            // not compare: its copy is not the member's.
            if map
                .ring
                .state()
                .actor(&self.me, self.storage.uuid())
                .is_none()
            {
                continue;
            }
            let peers = map.peers();
            if peers.is_empty() {
                continue;
            }
            let i = self.next_peer.fetch_add(1, Ordering::Relaxed) % peers.len();
            let Some(peer) = peers.get(i).cloned() else {
                continue;
            };
            let started = Instant::now();
            match self.exchange(&map, &peer, &stop).await {
                Ok(out) => {
                    let repaired = out.pushed + out.pulled;
                    {
                        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                        s.exchanges += 1;
                        s.keys_repaired += repaired;
                        s.last_exchange = Some(LastExchange {
                            peer: peer.clone(),
                            at_unix_ms: unix_ms(),
                            ago_ms: 0,
                            keys_repaired: repaired,
                        });
                    }
                    if self.storage.restoring() {
                        refilled_from.insert(peer.clone());
                        if map.peers().iter().all(|p| refilled_from.contains(p)) {
                            if let Err(e) = self.finish_refill().await {
                                tracing::warn!(error = %e, "cannot record the end of the refill");
                            }
                        }
                    }
                    if repaired > 0 {
                        tracing::info!(
                            %peer,
                            sent = out.pushed,
                            fetched = out.pulled,
                            segments = out.segments,
                            ms = started.elapsed().as_millis() as u64,
                            "anti-entropy repaired keys"
                        );
                    }
                }
                Err(Stop::Shutdown) => return,
                Err(Stop::Ring) => {}
                Err(Stop::Peer(e)) => {
                    tracing::debug!(%peer, reason = %e.reason(), "anti-entropy exchange failed")
                }
                Err(Stop::Local(e)) => {
                    tracing::warn!(%peer, error = %e, "anti-entropy exchange failed here")
                }
            }
        }
    }

    /// Every peer has been compared with since the node came back empty: its
    /// copy now holds everything they held, and its reads count again.
    async fn finish_refill(&self) -> Result<()> {
        self.storage.set_restoring(false)?;
        self.storage.durable().await?;
        tracing::info!(
            keys = self.storage.key_count(),
            "refilled from every peer after losing the data directory; reads count again"
        );
        Ok(())
    }

    async fn ask(&self, map: &SharedMap, peer: &NodeId, query: AeQuery) -> Result<AeAnswer, Stop> {
        let to = Addressee::in_ring(&map.ring, peer);
        let epoch = map.epoch();
        let from = self.me.clone();
        self.peers
            .call(peer, self.call_timeout, |c, ctx| async move {
                c.ae_digests(ctx, to, epoch, from, query).await
            })
            .await
            .map_err(Stop::from)
    }

    /// Runs `f` on the storage off the async threads.
    async fn local<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Storage) -> Result<T> + Send + 'static,
    ) -> Result<T, Stop> {
        let storage = self.storage.clone();
        crate::runtime::spawn(move || f(&storage))
            .await
            .map_err(|e| Stop::Local(Error::internal(e.to_string())))?
            .map_err(Stop::Local)
    }

    /// One exchange with `peer` (see the module documentation).
    async fn exchange(
        &self,
        map: &Arc<SharedMap>,
        peer: &NodeId,
        stop: &watch::Receiver<bool>,
    ) -> Result<Outcome, Stop> {
        let mut out = Outcome::default();
        let (m, p) = (map.clone(), peer.clone());
        let mine = self.local(move |s| m.group_digests(s, &p)).await?;
        let AeAnswer::Groups(theirs) = self.ask(map, peer, AeQuery::Groups).await? else {
            return Err(Stop::Local(Error::internal(
                "unexpected anti-entropy answer",
            )));
        };
        let groups: Vec<u8> = differing(&mine, &theirs)
            .into_iter()
            .filter_map(|g| u8::try_from(g).ok())
            .collect();
        if groups.is_empty() {
            return Ok(out);
        }
        let mut segments: Vec<Segment> = Vec::new();
        for chunk in groups.chunks(MAX_SEGMENTS_PER_QUERY / SEGMENTS_PER_GROUP) {
            let (m, p, c) = (map.clone(), peer.clone(), chunk.to_vec());
            let mine = self.local(move |s| m.segment_digests(s, &p, &c)).await?;
            let AeAnswer::Segments(theirs) = self
                .ask(map, peer, AeQuery::Segments(chunk.to_vec()))
                .await?
            else {
                return Err(Stop::Local(Error::internal(
                    "unexpected anti-entropy answer",
                )));
            };
            let listed: Vec<Segment> = chunk.iter().flat_map(|g| group_segments(*g)).collect();
            for i in differing(&mine, &theirs) {
                if let Some(seg) = listed.get(i) {
                    segments.push(*seg);
                }
            }
        }
        out.segments = segments.len() as u64;
        let mut bucket = Bucket::new(self.rate);
        for chunk in segments.chunks(MAX_SEGMENTS_PER_QUERY) {
            if *stop.borrow() {
                return Err(Stop::Shutdown);
            }
            if self.ring.epoch() != map.epoch() {
                return Err(Stop::Ring);
            }
            let (m, p, c) = (map.clone(), peer.clone(), chunk.to_vec());
            let mine = self.local(move |s| m.key_digests(s, &p, &c)).await?;
            let theirs = self.their_keys(map, peer, chunk).await?;
            let diff = key_diff(mine, theirs);
            for keys in diff.pull.chunks(MAX_FETCH_KEYS) {
                bucket.take(keys.len() as u64).await;
                out.pulled += self.pull(map, peer, keys.to_vec()).await?;
            }
            for keys in diff.push.chunks(BATCH_KEYS) {
                bucket.take(keys.len() as u64).await;
                out.pushed += self.push(map, peer, keys.to_vec()).await?;
            }
        }
        Ok(out)
    }

    /// The peer's listing of the keys of `segments` it shares with this node,
    /// asked page by page ([`AeQuery::KeysFrom`]), each page from where the
    /// last one stopped.
    async fn their_keys(
        &self,
        map: &SharedMap,
        peer: &NodeId,
        segments: &[Segment],
    ) -> Result<Vec<(Key, u64)>, Stop> {
        let mut out = Vec::new();
        let mut after: Option<Key> = None;
        loop {
            if self.ring.epoch() != map.epoch() {
                return Err(Stop::Ring);
            }
            let query = AeQuery::KeysFrom {
                segments: segments.to_vec(),
                after: after.clone(),
            };
            let AeAnswer::KeysPage { keys, next } = self.ask(map, peer, query).await? else {
                return Err(Stop::Local(Error::internal(
                    "unexpected anti-entropy answer",
                )));
            };
            let empty = keys.is_empty();
            out.extend(keys);
            match next {
                None => return Ok(out),
                // A page that lists nothing yet says more follows would be
                // asked again for ever.
                Some(_) if empty => {
                    return Err(Stop::Local(Error::internal(format!(
                        "{peer}'s anti-entropy key listing did not advance"
                    ))))
                }
                Some(next) => after = Some(next),
            }
        }
    }

    /// Fetches the peer's copies of `keys` and merges them here, durably.
    async fn pull(&self, map: &SharedMap, peer: &NodeId, mut keys: Vec<Key>) -> Result<u64, Stop> {
        let mut merged = 0;
        while !keys.is_empty() {
            let to = Addressee::in_ring(&map.ring, peer);
            let epoch = map.epoch();
            let asked = keys.clone();
            let items = self
                .peers
                .call(peer, self.call_timeout, |c, ctx| async move {
                    c.ae_fetch(ctx, to, epoch, asked).await
                })
                .await
                .map_err(Stop::from)?;
            // The answer stops early when it would not fit one frame: ask again
            // for the rest (it always carries at least one key).
            let answered: std::collections::BTreeSet<&Key> = items.iter().map(|(k, _)| k).collect();
            let last = keys
                .iter()
                .rposition(|k| answered.contains(k))
                .map_or(keys.len(), |i| i + 1);
            let count = items.len() as u64;
            self.local(move |s| s.merge_many(&items)).await?;
            self.storage.durable().await.map_err(Stop::Local)?;
            merged += count;
            keys.drain(..last.min(keys.len()));
            if count == 0 {
                break;
            }
        }
        Ok(merged)
    }

    /// Sends this node's copies of `keys` to the peer, which merges them durably.
    async fn push(&self, map: &SharedMap, peer: &NodeId, keys: Vec<Key>) -> Result<u64, Stop> {
        let items: Vec<(Key, Arc<Object>)> = self
            .local(move |s| readable_copies(s, keys, usize::MAX))
            .await?;
        let mut sent = 0;
        for items in batches(items, |(key, object)| item_size(key, object)) {
            let count = items.len() as u64;
            match self.send_copies(map, peer, items.clone()).await {
                Ok(()) => {}
                // One key the peer will never take must not stop the exchange
                // every round: each goes alone, and those refused for good are
                // reported and skipped.
                Err(CallError::Remote(e)) if !e.retryable() && !fenced(&e) => {
                    for item in items {
                        match self.send_copies(map, peer, vec![item.clone()]).await {
                            Ok(()) => {}
                            Err(CallError::Remote(e)) if !e.retryable() && !fenced(&e) => self
                                .refused
                                .record(&item.0, peer, e.to_string(), "anti-entropy"),
                            Err(e) => return Err(Stop::Peer(e)),
                        }
                    }
                }
                Err(e) => return Err(Stop::Peer(e)),
            }
            sent += count;
        }
        Ok(sent)
    }

    /// One `transfer` of this node's copies to `peer`, named as sent by this
    /// node under the map's ring.
    async fn send_copies(
        &self,
        map: &SharedMap,
        peer: &NodeId,
        items: Vec<(Key, Arc<Object>)>,
    ) -> Result<(), CallError> {
        let to = Addressee::from_me(&map.ring, peer, &self.me, self.storage.uuid());
        self.peers
            .call(peer, self.call_timeout, |c, ctx| async move {
                c.transfer(ctx, to, items).await
            })
            .await
            .map(|_| ())
    }

    /// Answers a peer's query about what this node shares with it, under `epoch`.
    pub async fn answer(&self, epoch: u64, from: NodeId, query: AeQuery) -> Result<AeAnswer> {
        let map = self.map_at(epoch).await?;
        match &query {
            AeQuery::Groups => {}
            AeQuery::Segments(groups) if groups.len() <= GROUPS => {}
            AeQuery::Keys(segments) if segments.len() <= MAX_SEGMENTS_PER_QUERY => {}
            AeQuery::KeysFrom { segments, .. } if segments.len() <= MAX_SEGMENTS_PER_QUERY => {}
            _ => {
                return Err(Error::invalid(format!(
                    "anti-entropy query too large: at most {GROUPS} groups or \
                     {MAX_SEGMENTS_PER_QUERY} segments"
                )))
            }
        }
        let storage = self.storage.clone();
        crate::runtime::spawn(move || match query {
            AeQuery::Groups => map.group_digests(&storage, &from).map(AeAnswer::Groups),
            AeQuery::Segments(groups) => map
                .segment_digests(&storage, &from, &groups)
                .map(AeAnswer::Segments),
            AeQuery::Keys(segments) => map
                .key_digests(&storage, &from, &segments)
                .map(AeAnswer::Keys),
            AeQuery::KeysFrom { segments, after } => map
                .key_digests_page(
                    &storage,
                    &from,
                    &segments,
                    after.as_deref(),
                    MAX_KEYS_PAGE_BYTES,
                )
                .map(|(keys, next)| AeAnswer::KeysPage { keys, next }),
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }

    /// This node's copies of `keys` (those it has), as many as fit one frame and
    /// at least one.
    pub async fn fetch(&self, epoch: u64, keys: Vec<Key>) -> Result<Vec<(Key, Arc<Object>)>> {
        self.map_at(epoch).await?;
        if keys.len() > MAX_FETCH_KEYS {
            return Err(Error::invalid(format!(
                "{} keys in one fetch, the limit is {MAX_FETCH_KEYS}",
                keys.len()
            )));
        }
        let storage = self.storage.clone();
        crate::runtime::spawn(move || readable_copies(&storage, keys, BATCH_BYTES))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
    }

    /// The map, if this node's ring is at `epoch` (peers compare under one ring).
    async fn map_at(&self, epoch: u64) -> Result<Arc<SharedMap>> {
        let current = self.ring.epoch();
        match self.map().await? {
            Some(m) if m.epoch() == epoch => Ok(m),
            _ => Err(Error::StaleRing {
                node: self.me.clone(),
                sent: epoch,
                current,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
