//! Rebalancing: each node's part in a ring change (SPEC 3.6). While a change
//! runs, the node sends every key it holds that the change gives to new owners
//! to those owners; once the leader has settled the ring, it hands off and drops
//! the keys the settled ring gives to others.
//!
//! # The invariant
//!
//! **A write acknowledged before or during a change is, when the change settles,
//! on the owners of the settled ring; a node removes a key only after the owners
//! of the settled ring acknowledged its copy.** It rests on four rules:
//!
//! 1. *Writes during a change reach both rings.* The coordinator needs W acks
//!    among the key's current owners and W among its owners after the change
//!    ([`crate::ring::Quorum`]).
//! 2. *A node's transfer sees every write placed under an older ring.* Each
//!    replica write carries the epoch it was placed under, and a node with a
//!    newer ring refuses it ([`crate::error::Error::StaleRing`]). Requests hold
//!    the ring they were placed with until they finish, and the transfer of
//!    epoch E starts only when no ring older than E is held on this node
//!    ([`crate::ring::RingCell::older_in_use`]). So a write this node stores
//!    either came before the scan started (the scan sees it) or was placed
//!    under E or later (its coordinator also wrote the new owners).
//!    Anti-entropy is not waited for (its map keeps a ring of its own): an
//!    exchange under an older epoch stops at the change and only merges
//!    copies between owners. After 10 s the wait logs which older epochs are
//!    still held, and by how many references.
//! 3. *Every live holder sends.* Each node of either ring scans its whole
//!    replica and its hints and sends every key whose owners change to each of
//!    the key's pending owners (the new owners that are not owners now), in
//!    batches that the receiver merges durably before it answers. A write
//!    acknowledged by W nodes has a live copy to send unless all W are gone;
//!    removing a dead node works because the surviving replicas send its keys.
//!    Every holder makes sure the receiver has its copy, so the change depends
//!    on no single sender (see "Two passes" for what that costs).
//! 4. *The leader settles only on proof.* It settles once every node of both
//!    rings reports its transfer of this epoch done, except a leaving node that
//!    has not answered for [`crate::membership::LEAVING_DOWN_POLLS`] polls (its
//!    keys come from the other replicas). A node that drops a key after the
//!    settle first sends it to every owner of the settled ring and then removes
//!    it with a compare-and-swap, so a write that arrived meanwhile keeps it,
//!    and a node that missed the change (down throughout) hands off what only
//!    it had instead of losing it.
//!
//! # Two passes
//!
//! Three holders sending every key in full would triple the receiver's work.
//! So the scan runs twice: first each node sends in full the keys it is the
//! first replica of; then it sends, for every other moving key, only a digest
//! (the hash of its stored bytes, [`entry_digest`]): the receiver answers which of
//! those it holds a different copy of (or none), and only those are sent in
//! full. By the second pass the first replicas have normally sent their keys,
//! so replicas that agree cost a lookup, not a merge; a first replica that is
//! dead or behind costs a full send, never a lost copy. Equal objects have
//! equal bytes (the encoding is canonical), so an equal digest proves the
//! receiver has this node's copy.
//!
//! # Nodes outside the ring
//!
//! A node that is in neither ring sends nothing (its receivers would refuse
//! it: see [`crate::coordinator`]). What it does with what it holds depends on
//! how it left ([`crate::ring::Departure`]): after reporting its transfer done,
//! or with its join aborted, every key it holds is a copy of what the members
//! hold, and it drops them (`Rebalance::outside`, recording each key's dot
//! floor first); removed while it was away, it keeps everything for the
//! operator and does nothing.
//!
//! # Refused for good
//!
//! A batch the receiver refuses for good (the error is not
//! [`crate::error::Error::retryable`]: an object over the copy limit, a bad
//! key) is sent again item by item, and the items refused alone are reported
//! in `status` and skipped, so one key never holds a change for ever. In the
//! clean-up such a key is kept, not dropped: this node's copy may be the only
//! one.
//!
//! # Progress and restarts
//!
//! The scan runs in stored order (segment, then key) in chunks of
//! [`CHUNK_KEYS`]; after each chunk is confirmed the node records `(epoch,
//! pass, last stored key read)` on disk (the raw key, exact even for a record
//! whose key is not UTF-8, which is logged and skipped), so after a
//! `kill -9` it resumes where it stopped, and it records the epoch when its
//! whole transfer is done. A counting scan (keys only) runs beside the first
//! pass to fill in `keys_to_move`. A receiver that is down is retried with backoff
//! until it returns or the change is replaced. Progress (keys to move, keys
//! moved, bytes) is reported to `status` through [`Rebalance::progress`].
//!
//! # Cost
//!
//! At most [`TRANSFER_CONCURRENCY`] batches of at most [`BATCH_KEYS`] keys or
//! [`BATCH_BYTES`] bytes are in flight per node, and a token bucket holds the
//! node to `--transfer-rate` keys per second ([`crate::config::DEFAULT_TRANSFER_RATE`] by default), so foreground requests keep their
//! latency. The receiver merges a batch on a blocking thread and answers after
//! one group-commit flush.
//!
//! # Left out
//!
//! Keys whose owners do not change are not compared here: converging replicas
//! that missed writes is anti-entropy's job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::watch;

use crate::context::NodeContext;
use crate::peers::Peers;
use crate::ring::{Ring, RingCell};
use crate::rpc::{Addressee, NodeClient, TransferPhase, TransferProgress};
use crate::storage::{entry_digest, Marker, ScanCursor, Storage, Stored};
use crate::types::{Key, NodeId};
use crate::vclock::Object;

mod cleanup;
mod plan;
mod purge;
pub(crate) use plan::{batches, item_size, Bucket};
use plan::{sending, Batch, Checks, Plan};
pub use purge::PURGE_CHUNK;
use purge::PURGE_RECHECK;

/// Keys read from disk per step of a scan; the transfer cursor advances per chunk.
pub const CHUNK_KEYS: usize = 4096;
/// Keys per digest check (a check costs the receiver one lookup per key).
pub const DIGEST_BATCH_KEYS: usize = 1024;
/// Keys per step of the counting scan (no objects decoded).
pub const COUNT_KEYS: usize = 16_384;
/// Most keys in one transfer batch.
pub const BATCH_KEYS: usize = 256;
/// Most bytes (approximate object size) in one transfer batch: well under the
/// 16 MiB frame limit, small enough that a batch is a few milliseconds of work.
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches one node has in flight at once.
pub const TRANSFER_CONCURRENCY: usize = 4;
/// How often the task looks for a new ring when idle.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Backoff between retries of a batch whose receiver failed.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Why a pass stopped before the end.
#[derive(Debug)]
enum Stop {
    /// The ring changed (or the node is stopping): start over with the new one.
    Superseded,
    /// Something failed; retry the pass later.
    Failed(String),
    /// The receiver refused the call for good (it would refuse it again):
    /// the caller decides what to skip ([`crate::error::Error::retryable`]).
    Refused(crate::Error),
}

/// The rebalancing task of one node.
pub struct Rebalance {
    me: NodeId,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    /// Keys per second this node may send (0: no cap).
    rate: u64,
    progress: Mutex<Option<Tracked>>,
    /// Keys a receiver refused for good, for `status`.
    refused: Arc<crate::peers::Refusals>,
    /// Deadline of one batch (`--copy-timeout-ms`).
    copy_timeout: Duration,
}

/// Progress of the current pass, with its start time.
#[derive(Clone, Debug)]
struct Tracked {
    report: TransferProgress,
    started: Instant,
}

impl Rebalance {
    /// The task for node `me`, sending at most `rate` keys per second (0: no cap).
    pub fn new(node: &NodeContext, rate: u64, copy_timeout: Duration) -> Rebalance {
        let NodeContext {
            me,
            storage,
            peers,
            ring,
            refused,
        } = node.clone();
        Rebalance {
            me,
            storage,
            peers,
            ring,
            rate,
            progress: Mutex::new(None),
            refused,
            copy_timeout,
        }
    }

    /// This node's part in the running change, for `status`.
    pub fn progress(&self) -> Option<TransferProgress> {
        let ring = self.ring.get()?;
        ring.transition()?;
        let tracked = self.lock().clone();
        match tracked {
            Some(t) if t.report.epoch == ring.epoch() => {
                let mut report = t.report;
                report.elapsed_ms = u64::try_from(t.started.elapsed().as_millis()).unwrap_or(0);
                Some(report)
            }
            _ => {
                // Not started yet (or finished before a restart).
                let done = self.storage.marker(Marker::TransferDone).ok() == Some(ring.epoch());
                Some(TransferProgress {
                    epoch: ring.epoch(),
                    phase: if done {
                        TransferPhase::Done
                    } else {
                        TransferPhase::Draining
                    },
                    keys_to_move: 0,
                    keys_moved: 0,
                    bytes_moved: 0,
                    elapsed_ms: 0,
                })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Tracked>> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut TransferProgress)) {
        if let Some(t) = self.lock().as_mut() {
            f(&mut t.report);
        }
    }

    /// Runs until `stop` changes: a transfer whenever a change runs that this
    /// node has not finished, a clean-up whenever a settled ring has not been
    /// cleaned up.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut purged: Option<(u64, std::time::Instant)> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            // The keys of dropped buckets: looked for at each new epoch and
            // every half minute (a copy sent by a node that learned the drop
            // late may land after a purge).
            let epoch = self.ring.epoch();
            if purged.is_none_or(|(e, at)| e != epoch || at.elapsed() > PURGE_RECHECK) {
                purged = Some((epoch, std::time::Instant::now()));
                if let Err(e) = self.purge_dropped(&stop).await {
                    tracing::warn!(error = %e, "removing a dropped bucket's keys failed; retrying");
                    purged = None;
                }
            }
            let pass = match self.ring.get() {
                Some(ring) => self.pass(ring, &stop).await,
                None => Ok(false),
            };
            let pause = match pass {
                Ok(true) => Duration::ZERO,
                Ok(false) => POLL_INTERVAL,
                Err(Stop::Superseded) => Duration::ZERO,
                Err(Stop::Failed(reason)) => {
                    tracing::warn!(%reason, "rebalancing pass failed; retrying");
                    RETRY_BACKOFF
                }
                Err(Stop::Refused(e)) => {
                    tracing::warn!(error = %e, "rebalancing pass refused; retrying");
                    RETRY_BACKOFF
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Does whatever the current ring asks of this node. Ok(true) if it did
    /// something.
    async fn pass(&self, ring: Arc<Ring>, stop: &watch::Receiver<bool>) -> Result<bool, Stop> {
        let epoch = ring.epoch();
        let failed = |e: crate::Error| Stop::Failed(e.to_string());
        if !ring.is_member(&self.me) {
            return self.outside(ring, stop).await;
        }
        let marker = if ring.transition().is_some() {
            Marker::TransferDone
        } else {
            Marker::CleanupDone
        };
        if self.storage.marker(marker).map_err(failed)? >= epoch {
            return Ok(false);
        }
        match marker {
            Marker::TransferDone => self.transfer(ring, stop).await?,
            Marker::CleanupDone => self.cleanup(ring, stop).await?,
        }
        self.storage.set_marker(marker, epoch).map_err(failed)?;
        self.storage.durable().await.map_err(failed)?;
        Ok(true)
    }

    /// One page of this node's replica after `after`, read off the async threads.
    async fn scan_page(&self, after: Option<ScanCursor>) -> Result<crate::storage::Scan, Stop> {
        let storage = self.storage.clone();
        crate::runtime::spawn(move || storage.scan(after.as_ref(), CHUNK_KEYS))
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?
            .map_err(|e| Stop::Failed(e.to_string()))
    }

    /// Stops the pass if the ring moved on or the node is stopping.
    fn check(&self, ring: &Ring, stop: &watch::Receiver<bool>) -> Result<(), Stop> {
        if *stop.borrow() || self.ring.epoch() != ring.epoch() {
            return Err(Stop::Superseded);
        }
        Ok(())
    }

    /// Waits until no request placed under a ring older than `ring` runs here.
    async fn drain(&self, ring: &Ring, stop: &watch::Receiver<bool>) -> Result<(), Stop> {
        let started = Instant::now();
        let mut warned = false;
        while self.ring.older_in_use(ring.epoch()) {
            self.check(ring, stop)?;
            if !warned && started.elapsed() > Duration::from_secs(10) {
                let held: Vec<String> = self
                    .ring
                    .older_held(ring.epoch())
                    .into_iter()
                    .map(|(epoch, holders)| format!("epoch {epoch} by {holders}"))
                    .collect();
                tracing::warn!(
                    epoch = ring.epoch(),
                    held = %held.join(", "),
                    "still waiting for requests begun under an older ring (rings held)"
                );
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// This node's transfer for the change in `ring`.
    async fn transfer(&self, ring: Arc<Ring>, stop: &watch::Receiver<bool>) -> Result<(), Stop> {
        let epoch = ring.epoch();
        let failed = |e: crate::Error| Stop::Failed(e.to_string());
        *self.lock() = Some(Tracked {
            report: TransferProgress {
                epoch,
                phase: TransferPhase::Draining,
                keys_to_move: 0,
                keys_moved: 0,
                bytes_moved: 0,
                elapsed_ms: 0,
            },
            started: Instant::now(),
        });
        let t0 = Instant::now();
        self.drain(&ring, stop).await?;
        let drained = t0.elapsed();

        // Where a previous run of this transfer stopped.
        let resume = match self.storage.transfer_cursor().map_err(failed)? {
            Some((e, pass, key)) if e == epoch => Some(Cursor { pass, key }),
            _ => None,
        };
        tracing::info!(
            epoch,
            change = %ring.state().describe_change(),
            resume_pass = resume.as_ref().map(|c| c.pass).unwrap_or(0),
            resume_after = %resume.as_ref().map(|c| c.key.to_string()).unwrap_or_default(),
            drain_ms = u64::try_from(drained.as_millis()).unwrap_or(u64::MAX),
            "ring change: sending keys to their new owners"
        );
        self.update(|p| p.phase = TransferPhase::Sending);
        // keys_to_move: a fresh transfer counts the moving keys as its first pass
        // reads them all; a resumed one counts them beside the sending, on a
        // scan of its own (it skips the part of the first pass already done).
        if resume.is_some() {
            let counting = self.count(&ring, resume.as_ref(), stop);
            let sending = self.send_all(&ring, resume.clone(), stop);
            let (counted, sent) = futures::future::join(counting, sending).await;
            counted?;
            sent?;
        } else {
            self.send_all(&ring, None, stop).await?;
        }

        // Hints: writes this node holds for others are data too.
        let scan = self.storage.hints().map_err(failed)?;
        for bad in &scan.corrupt {
            tracing::error!(record = %bad, "skipping a hint that does not decode");
        }
        let hints = scan.hints;
        let mut plan = Plan::default();
        for hint in hints {
            if let Some((_, targets)) = sending(&ring, &self.me, &hint.key) {
                plan.add(&targets, hint.key, hint.object);
            }
        }
        // Hint copies are extra copies of keys counted above: bytes, not keys.
        plan.uncounted();
        self.send_plan(&ring, plan, &mut Bucket::new(self.rate), true, stop)
            .await?;
        self.update(|p| p.phase = TransferPhase::Done);
        let done = self.lock().clone();
        if let Some(t) = done {
            tracing::info!(
                epoch,
                keys_moved = t.report.keys_moved,
                bytes = t.report.bytes_moved,
                secs = t.started.elapsed().as_secs_f64(),
                "ring change: this node's keys are on their new owners"
            );
        }
        Ok(())
    }

    /// Sends every moving key of this node's replica to its pending owners, in
    /// two passes from `resume` on (module docs, "Two passes"), recording the
    /// cursor after each chunk.
    async fn send_all(
        &self,
        ring_arc: &Arc<Ring>,
        resume: Option<Cursor>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let ring: &Ring = ring_arc;
        let epoch = ring.epoch();
        let failed = |e: crate::Error| Stop::Failed(e.to_string());
        let mut bucket = Bucket::new(self.rate);
        let first_pass = resume.as_ref().map(|c| c.pass).unwrap_or(PRIMARY_PASS);
        for pass in [PRIMARY_PASS, SECONDARY_PASS] {
            if pass < first_pass {
                continue;
            }
            let mut after = resume
                .as_ref()
                .filter(|c| c.pass == pass)
                .map(|c| c.key.clone());
            loop {
                self.check(ring, stop)?;
                let storage = self.storage.clone();
                let from = after.clone();
                let (owned_ring, me) = (ring_arc.clone(), self.me.clone());
                let count_here = pass == PRIMARY_PASS && resume.is_none();
                // Only the keys this pass sends are kept (and only those decoded);
                // a fresh first pass also counts every moving key.
                let (page, moving) = crate::runtime::spawn(move || {
                    let mut moving = 0u64;
                    let page = storage.scan_raw(from.as_ref(), CHUNK_KEYS, |key| {
                        let (key_pass, targets) = sending(&owned_ring, &me, key)?;
                        moving += 1;
                        (key_pass == pass).then_some(targets)
                    });
                    page.map(|p| (p, moving))
                })
                .await
                .map_err(|e| Stop::Failed(e.to_string()))?
                .map_err(failed)?;
                if count_here {
                    self.update(|p| {
                        p.keys_to_move = (p.keys_to_move + moving).max(p.keys_moved);
                    });
                }
                if pass == PRIMARY_PASS {
                    for bad in &page.corrupt {
                        tracing::error!(record = %bad, "skipping an unreadable record in the transfer");
                    }
                }
                let mut plan = Plan::default();
                let mut checks = Checks::default();
                for (key, raw, targets) in page.items {
                    if pass == PRIMARY_PASS {
                        match Stored::decode(key, raw) {
                            Ok(stored) => plan.add(&targets, stored.key, stored.object),
                            Err(e) => {
                                tracing::error!(error = %e, "skipping an unreadable record in the transfer")
                            }
                        }
                    } else {
                        checks.add(&targets, key, raw);
                    }
                }
                if pass == PRIMARY_PASS {
                    self.send_plan(ring, plan, &mut bucket, true, stop).await?;
                } else {
                    self.check_and_send(ring, checks, &mut bucket, stop).await?;
                }
                if let Some(last) = &page.last {
                    self.storage
                        .set_transfer_cursor(epoch, pass, last)
                        .map_err(failed)?;
                    self.storage.durable().await.map_err(failed)?;
                }
                if !page.more {
                    break;
                }
                after = page.last;
            }
        }
        Ok(())
    }

    /// The second pass for one chunk: asks each receiver which keys it holds a
    /// different copy of (by digest), sends those in full, and counts the chunk's
    /// keys as moved once every receiver has answered.
    async fn check_and_send(
        &self,
        ring: &Ring,
        checks: Checks,
        bucket: &mut Bucket,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let mut plan = Plan::default();
        let mut counted = 0u64;
        for (target, items) in checks.per_target {
            for chunk in items.chunks(DIGEST_BATCH_KEYS) {
                let counts = chunk.iter().filter(|(.., counts)| *counts).count() as u64;
                bucket.take(counts).await;
                let digests: Vec<(Key, u64)> =
                    chunk.iter().map(|(k, d, _, _)| (k.clone(), *d)).collect();
                let differ = self
                    .check_until_answered(ring, &target, digests, stop)
                    .await?;
                for i in differ {
                    let Some((key, _, raw, _)) = usize::try_from(i).ok().and_then(|i| chunk.get(i))
                    else {
                        continue;
                    };
                    match Stored::decode(key.clone(), raw.clone()) {
                        Ok(stored) => {
                            plan.add(std::slice::from_ref(&target), stored.key, stored.object)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "skipping an unreadable record in the transfer")
                        }
                    }
                }
                counted += counts;
            }
        }
        // The keys sent in full are counted below, by the digest check.
        plan.uncounted();
        self.send_plan(ring, plan, bucket, true, stop).await?;
        self.update(|p| {
            p.keys_moved += counted;
            p.keys_to_move = p.keys_to_move.max(p.keys_moved);
        });
        Ok(())
    }

    /// Asks `target` which of `digests` differ, until it answers.
    async fn check_until_answered(
        &self,
        ring: &Ring,
        target: &NodeId,
        digests: Vec<(Key, u64)>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<u32>, Stop> {
        let digests = Arc::new(digests);
        self.until_answered(ring, target, stop, |c, ctx, to| {
            let digests = (*digests).clone();
            async move { c.transfer_check(ctx, to, digests).await }
        })
        .await
    }

    /// Calls `target` with `f` until it answers without an error, backing off
    /// between attempts; gives up only when the ring moves on or the node stops.
    async fn until_answered<T, F, Fut>(
        &self,
        ring: &Ring,
        target: &NodeId,
        stop: &watch::Receiver<bool>,
        f: F,
    ) -> Result<T, Stop>
    where
        F: Fn(NodeClient, tarpc::context::Context, Addressee) -> Fut,
        Fut: std::future::Future<Output = Result<crate::Result<T>, tarpc::client::RpcError>>,
    {
        let to = Addressee::from_me(ring, target, &self.me, self.storage.uuid());
        let mut backoff = RETRY_BACKOFF;
        loop {
            self.check(ring, stop)?;
            let out = self
                .peers
                .call(target, self.copy_timeout, |c, ctx| f(c, ctx, to.clone()))
                .await;
            match out {
                Ok(answer) => return Ok(answer),
                // Refused for good: sending it again cannot help. A sender the
                // receiver does not admit stops the pass (its ring will tell
                // it why); anything else is the caller's to skip.
                Err(crate::peers::CallError::Remote(e)) if !e.retryable() => {
                    return match e {
                        crate::Error::Fenced { .. } | crate::Error::Removed { .. } => {
                            Err(Stop::Failed(e.to_string()))
                        }
                        e => Err(Stop::Refused(e)),
                    }
                }
                Err(e) => {
                    tracing::debug!(%target, reason = %e.reason(), "transfer call not answered; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Counts the keys this node must send, and those at or before the resume
    /// point (already confirmed by an earlier run).
    async fn count(
        &self,
        ring: &Arc<Ring>,
        resume: Option<&Cursor>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let mut after: Option<ScanCursor> = None;
        loop {
            self.check(ring, stop)?;
            let storage = self.storage.clone();
            let from = after.clone();
            let (owned_ring, me, resume) = (ring.clone(), self.me.clone(), resume.cloned());
            // Keeps nothing: the filter only counts.
            let (page, total, done) = crate::runtime::spawn(move || {
                let (mut total, mut done) = (0u64, 0u64);
                let page = storage.scan_raw(from.as_ref(), COUNT_KEYS, |key| {
                    let (pass, _) = sending(&owned_ring, &me, key)?;
                    total += 1;
                    done += u64::from(resume.as_ref().is_some_and(|c| c.covers(pass, key)));
                    None::<()>
                });
                page.map(|p| (p, total, done))
            })
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?
            .map_err(|e| Stop::Failed(e.to_string()))?;
            // Keys before the resume point were confirmed by an earlier run.
            self.update(|p| {
                p.keys_moved += done;
                p.keys_to_move = (p.keys_to_move + total).max(p.keys_moved);
            });
            if !page.more {
                return Ok(());
            }
            after = page.last;
        }
    }

    /// Sends every batch of `plan` (each batch waits for its keys in `bucket`),
    /// retrying a failed receiver until it answers or the ring moves on. With
    /// `report`, each acknowledged batch adds its keys and bytes to the progress.
    async fn send_plan(
        &self,
        ring: &Ring,
        plan: Plan,
        bucket: &mut Bucket,
        report: bool,
        stop: &watch::Receiver<bool>,
    ) -> Result<Vec<Key>, Stop> {
        let mut refused = Vec::new();
        let mut batches = plan.into_batches().into_iter();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < TRANSFER_CONCURRENCY {
                let Some(batch) = batches.next() else { break };
                bucket.take(batch.counted).await;
                in_flight.push(self.send_until_acked(ring, batch, stop));
            }
            match in_flight.next().await {
                Some(sent) => {
                    let (keys, bytes, skipped) = sent?;
                    refused.extend(skipped);
                    if report {
                        self.update(|p| {
                            p.keys_moved += keys;
                            p.bytes_moved += bytes;
                            // Keys written after the count are sent too.
                            p.keys_to_move = p.keys_to_move.max(p.keys_moved);
                        });
                    }
                }
                None => return Ok(refused),
            }
        }
    }

    /// Sends one batch until its receiver acknowledges it. Returns the keys it
    /// counts for, its bytes, and the keys the receiver refused for good.
    async fn send_until_acked(
        &self,
        ring: &Ring,
        batch: Batch,
        stop: &watch::Receiver<bool>,
    ) -> Result<(u64, u64, Vec<Key>), Stop> {
        let target = batch.target;
        let mut refused = Vec::new();
        match self
            .transfer_to(ring, &target, batch.items.clone(), stop)
            .await
        {
            Ok(()) => {}
            // One item the receiver will never take must not hold the rest,
            // nor the change: each goes alone, and those refused for good are
            // reported and skipped.
            Err(Stop::Refused(_)) => {
                for item in batch.items {
                    let key = item.0.clone();
                    match self.transfer_to(ring, &target, vec![item], stop).await {
                        Ok(()) => {}
                        Err(Stop::Refused(e)) => {
                            self.refused
                                .record(&key, &target, e.to_string(), "transfer");
                            refused.push(key);
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
            Err(other) => return Err(other),
        }
        Ok((batch.counted, batch.bytes, refused))
    }

    /// One `transfer` of `items` to `target`, until it is answered.
    async fn transfer_to(
        &self,
        ring: &Ring,
        target: &NodeId,
        items: Vec<(Key, Arc<Object>)>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let items = Arc::new(items);
        self.until_answered(ring, target, stop, |c, ctx, to| {
            let items = (*items).clone();
            async move { c.transfer(ctx, to, items).await }
        })
        .await
        .map(|_| ())
    }
}

/// Where a transfer stopped: the pass and where its last confirmed chunk
/// ended (in the scan's stored order).
#[derive(Clone, Debug)]
struct Cursor {
    pass: u8,
    key: ScanCursor,
}

impl Cursor {
    /// True if a key sent in `pass` was confirmed before this cursor.
    fn covers(&self, pass: u8, key: &str) -> bool {
        pass < self.pass || (pass == self.pass && self.key.covers(key))
    }
}

/// The first pass: keys this node is the first replica of, sent in full.
const PRIMARY_PASS: u8 = 1;
/// The second pass: the other keys, checked by digest first.
const SECONDARY_PASS: u8 = 2;
