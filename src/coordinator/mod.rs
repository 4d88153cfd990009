//! The request path: a node coordinating a client's put, delete or get over the
//! key's replicas with N/W/R, sloppy quorum, hinted handoff and read repair.
//!
//! # Placement
//!
//! Every request starts from the key's [`Placement`] in the node's current ring:
//! the replicas (the preference list), the pending owners while a ring change
//! moves the key, and the fallbacks. Replicas and pending owners are *slots*;
//! a slot whose node fails is served by the next fallback, holding a hint. A
//! [`Quorum`] counts answers per slot: W (or R) among the current owners and,
//! during a change, W (or R) among the owners after it too (ARCHITECTURE.md,
//! "life of a ring change").
//!
//! # Writes (and sloppy quorum)
//!
//! A write is coordinated by a slot of the key: a node outside them forwards it
//! to the first one that can be reached (a write forwarded once is never
//! forwarded again). Only the coordinator creates the new version's dot, from its
//! own durable state for the key, so two writes through the same node always get
//! different dots and both survive as siblings. A forward that surely never left
//! (connection refused) moves on to the next slot; one whose outcome is unknown
//! is reported as such, never sent again.
//!
//! The coordinator applies the write to its own copy (read-modify-write under the
//! key's lock in [`Storage::coordinate`]), then sends the resulting object to the
//! other slots, which merge it into theirs. The client hears back as soon as the
//! quorum is reached (the coordinator counts once its flush completes); the
//! other copies complete in the background. When no slot can be reached at all,
//! the receiving node coordinates itself, as a stand-in for the first slot.
//!
//! Each `replicate` carries the epoch the write was placed under. A node whose
//! ring is newer refuses it ([`Error::StaleRing`]) and the coordinator asks for
//! the new ring at once: a write placed under an old ring never lands on a node
//! after that node started moving data for the new one.
//!
//! # Reads
//!
//! Any node coordinates a read: it asks every slot (stand-ins for those that
//! fail), merges the answers with the causal join until the read quorum is
//! reached, and replies with every version no answer dominates. The remaining
//! answers are collected in the background, and every slot whose answer
//! differed from the merge is sent the merged object (read repair).
//!
//! # What a put answers
//!
//! A put answers like Riak's `return_body`: the coordinator's copy of the key
//! after the write, every value still current (the new one and any siblings the
//! client had not seen) with the context that covers them.
//!
//! # Background work
//!
//! What continues after the reply (the rest of a fan-out, read repair) runs as a
//! task tracked by the node's [`TaskTracker`] (shutdown waits for it) and holds
//! one of [`MAX_BACKGROUND`] permits; when none is free the remainder is dropped
//! with a log line: the client already has its quorum, and the missing copies
//! are restored by hinted handoff, read repair or a ring change's transfer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::context::NodeContext;
use crate::error::{Error, ReplicaFailure, Result};
use crate::outbox::{Outboxes, Replicate};
use crate::peers::{before, CallError, Expired, Peers};
use crate::ring::{Placement, Quorum, Ring, RingCell};
use crate::rpc::{
    Addressee, ReadReply, ReplicaRead, ReplicaWrite, RequestOption, WriteReply, WriteRequest,
};
use crate::storage::Storage;
use crate::types::{
    check_key, check_value, Key, NodeId, MAX_CONTEXT_ENTRIES, MAX_COPY_BYTES, MAX_OBJECT_BYTES,
};
use crate::vclock::Object;

/// Background continuations (fan-out remainders, read repairs) one node runs at
/// once. Each holds at most a few RPCs; 4096 covers a saturated node's
/// in-flight requests several times over while bounding memory under a burst.
pub const MAX_BACKGROUND: usize = 4096;

mod fanout;
mod replica;
use fanout::{held_down, Answer, Attempt, Fanout};
pub use replica::MAX_DIGESTS_PER_CHECK;

/// Where and how a write goes: its ring, its placement under it, and the
/// acknowledgements it needs.
#[derive(Clone, Copy)]
struct Plan<'a> {
    ring: &'a Arc<Ring>,
    placement: &'a Placement,
    w: usize,
}

pub use crate::types::MAX_TTL_MS;

/// Refuses a TTL of zero or above [`MAX_TTL_MS`].
pub fn check_ttl(ttl: Option<u64>) -> Result<()> {
    match ttl {
        Some(t) if t == 0 || t > MAX_TTL_MS => Err(Error::invalid(format!(
            "ttl of {t} ms is out of range: 1 ms to {} days",
            MAX_TTL_MS / 86_400_000
        ))),
        _ => Ok(()),
    }
}

/// Refuses a per-request R or W (`what`) outside 1..=N, N being `key`'s
/// (its bucket's).
pub fn check_per_request(what: &str, asked: Option<usize>, ring: &Ring, key: &str) -> Result<()> {
    let n = ring.n_of(key.as_bytes());
    match asked {
        Some(v) if v == 0 || v > n => Err(Error::invalid(format!(
            "{what}={v} is out of range: 1 to N ({n})"
        ))),
        _ => Ok(()),
    }
}
mod buckets;
pub mod restore;
pub mod scan;

/// The coordinator of one node.
pub struct Coordinator {
    me: NodeId,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    leader: NodeId,
    request_timeout: Duration,
    background: TaskTracker,
    background_permits: Arc<Semaphore>,
    /// Woken when a peer shows this node a newer ring (membership pulls it).
    ring_news: Arc<Notify>,
    /// Replica writes to other nodes, coalesced per peer.
    outbox: Outboxes<Replicate>,
}

impl Coordinator {
    /// A coordinator for node `me`. `leader` is named in errors before a ring is
    /// known; `background` tracks work that continues after a reply; `ring_news`
    /// is notified when a peer has a newer ring.
    pub fn new(
        node: &NodeContext,
        leader: NodeId,
        request_timeout: Duration,
        background: TaskTracker,
        ring_news: Arc<Notify>,
    ) -> Coordinator {
        let NodeContext {
            me,
            storage,
            peers,
            ring,
            ..
        } = node.clone();
        let outbox = Outboxes::new(peers.clone(), background.clone());
        Coordinator {
            me,
            storage,
            peers,
            ring,
            leader,
            request_timeout,
            background,
            background_permits: Arc::new(Semaphore::new(MAX_BACKGROUND)),
            ring_news,
            outbox,
        }
    }

    /// How long one replica gets before a stand-in is tried: half the request
    /// budget, so a stand-in still has the other half.
    fn replica_timeout(&self) -> Duration {
        self.request_timeout / 2
    }

    fn current_ring(&self) -> Result<Arc<Ring>> {
        match self.ring.get() {
            Some(r) if !r.members().is_empty() => {
                self.refuse_if_removed(&r)?;
                Ok(r)
            }
            Some(r) => Err(Error::NoRing {
                leader: r.leader().clone(),
            }),
            None => Err(Error::NoRing {
                leader: self.leader.clone(),
            }),
        }
    }

    /// Runs `work` after the reply, tracked and bounded (see the module docs).
    fn in_background(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        match self.background_permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.background.spawn(async move {
                    work.await;
                    drop(permit);
                });
            }
            Err(_) => tracing::debug!(what, "background work dropped: too much in flight"),
        }
    }

    /// Coordinates a put or delete.
    pub async fn write(self: &Arc<Self>, req: WriteRequest) -> Result<WriteReply> {
        self.write_with(req, Vec::new()).await
    }

    /// Coordinates a put or delete with per-request settings: the
    /// acknowledgements it needs (`RequestOption::W`, 1..=N; the ring's W
    /// without one) and a TTL (`RequestOption::Ttl`: the coordinator stamps the
    /// value's expiry from its clock).
    pub async fn write_with(
        self: &Arc<Self>,
        mut req: WriteRequest,
        opts: Vec<RequestOption>,
    ) -> Result<WriteReply> {
        let w = RequestOption::w(&opts);
        let ttl = RequestOption::ttl(&opts);
        check_ttl(ttl)?;
        check_key(&req.key)?;
        if let Some(v) = req.content.value() {
            check_value(v)?;
        }
        if let Some(t) = req.content.media_type() {
            crate::types::check_media_type(t)?;
        }
        if req.context.len() > MAX_CONTEXT_ENTRIES {
            return Err(Error::BadContext {
                reason: format!(
                    "{} entries, the limit is {MAX_CONTEXT_ENTRIES}",
                    req.context.len()
                ),
            });
        }
        // Held until the write is done: a ring change's transfer on this node
        // waits for requests placed under an older ring (RingCell::older_in_use).
        let ring = self.current_ring()?;
        let bucket = self.bucket_in(&ring, &req.key)?;
        check_per_request("w", w, &ring, &req.key)?;
        let placement = ring.placement(req.key.as_bytes());
        let deadline = Instant::now() + self.request_timeout;
        let mut unreachable = Vec::new();
        // The actor this node issues dots under; None while the ring knows
        // another identity at its address (it lost its data directory and is
        // not readmitted yet): it must not issue a dot that another incarnation
        // may have issued (Riak's kv679), so it only forwards.
        let actor = ring.state().actor(&self.me, self.storage.uuid());
        if (actor.is_none() || !placement.is_slot(&self.me)) && !req.forwarded {
            let forwarded = WriteRequest {
                forwarded: true,
                ..req.clone()
            };
            // The first replica the failure detector does not hold down (those
            // it holds down are tried last: it may be wrong).
            let mut order: Vec<&NodeId> = placement.coordinators().collect();
            order.sort_by_key(|n| self.peers.is_down(n));
            for node in order {
                let left = deadline.saturating_duration_since(Instant::now());
                let fwd = &forwarded;
                let out = self
                    .peers
                    .call(node, left, |c, ctx| {
                        let r = fwd.clone();
                        let opts = opts.clone();
                        async move {
                            if opts.is_empty() {
                                c.write(ctx, r).await
                            } else {
                                c.write_with(ctx, r, opts).await
                            }
                        }
                    })
                    .await;
                match out {
                    Ok(reply) => return Ok(reply),
                    // Refused before anything was applied: try the next one.
                    Err(CallError::Remote(e @ Error::Stranger { .. })) => {
                        unreachable.push(ReplicaFailure {
                            node: node.clone(),
                            reason: e.to_string(),
                        })
                    }
                    Err(CallError::Remote(e)) => return Err(e),
                    Err(e) if e.never_delivered() => unreachable.push(ReplicaFailure {
                        node: node.clone(),
                        reason: e.reason(),
                    }),
                    Err(e) => {
                        return Err(Error::Unreachable {
                            node: node.clone(),
                            reason: format!(
                                "forwarded write did not complete ({}); it may or may not have been applied",
                                e.reason()
                            ),
                        })
                    }
                }
            }
        }
        let Some(actor) = actor else {
            return Err(Error::Stranger {
                node: self.me.clone(),
                reason: format!(
                    "its data directory is new (identity {}) and it is not readmitted yet, \
                     so it coordinates no write; no replica took the write ({})",
                    self.storage.uuid(),
                    unreachable
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            });
        };
        self.check_actors(&ring, &req)?;
        // A bucket's default TTL, for a value put without one.
        let ttl = match (ttl, bucket) {
            (None, Some((_, b))) if req.content.value().is_some() => b.ttl_ms,
            (ttl, _) => ttl,
        };
        if let Some((name, b)) = bucket {
            self.check_quota(&ring, name, b, &req)?;
        }
        if let Some(ttl) = ttl {
            // This node coordinates: its clock stamps the expiry.
            let at = crate::runtime::now_ms().saturating_add(ttl);
            req.content = req.content.expiring(at);
        }
        let plan = Plan {
            ring: &ring,
            placement: &placement,
            w: w.unwrap_or(ring.replication_of(req.key.as_bytes()).w),
        };
        self.coordinate(plan, req, &actor, unreachable, deadline)
            .await
    }

    /// Refuses a context that names a node this ring never had (a typo, or a
    /// context from another cluster): it would cover none of the key's
    /// versions, so the put would keep what the client meant to replace, and
    /// its entry would stay in the key's context for good. An actor the ring
    /// forgot (removed before the ring recorded incarnations) is still
    /// accepted when this node's copy of the key names it.
    fn check_actors(&self, ring: &Ring, req: &WriteRequest) -> Result<()> {
        let state = ring.state();
        let mut unknown = req.context.iter().filter(|(a, _)| !state.knows_actor(a));
        let Some((first, _)) = unknown.next() else {
            return Ok(());
        };
        let local = self.storage.get(&req.key)?;
        let named = local.context();
        if named.get(first) > 0 && unknown.all(|(a, _)| named.get(a) > 0) {
            return Ok(());
        }
        let stranger = req
            .context
            .iter()
            .map(|(a, _)| a)
            .find(|a| !state.knows_actor(a) && named.get(a) == 0)
            .unwrap_or(first);
        Err(Error::BadContext {
            reason: format!(
                "it names {stranger}, which was never a node of this ring; \
                 pass {{}} or the context printed by get {}",
                req.key
            ),
        })
    }

    async fn coordinate(
        self: &Arc<Self>,
        plan: Plan<'_>,
        req: WriteRequest,
        actor: &NodeId,
        known_down: Vec<ReplicaFailure>,
        deadline: Instant,
    ) -> Result<WriteReply> {
        let Plan { ring, placement, w } = plan;
        let mut quorum = Quorum::new(placement, w);
        // A node outside the slots stands in for the first one.
        let stand_in_for = if placement.is_slot(&self.me) {
            None
        } else {
            placement.slots().next().cloned()
        };
        let (object, _dot) = self.storage.coordinate(
            &req.key,
            actor,
            &req.context,
            req.content,
            stand_in_for.as_ref(),
        )?;
        let context = object.context().clone();
        let values: Vec<crate::types::Value> = object
            .values_at(crate::runtime::now_ms())
            .cloned()
            .collect();
        let local_durable = self.storage.durable_for(&req.key);

        let object = Arc::new(object);
        let launch = {
            let coord = self.clone();
            let ring = ring.clone();
            let key = req.key.clone();
            let object = object.clone();
            move |slot: NodeId, node: NodeId| -> Attempt<()> {
                let coord = coord.clone();
                let ring = ring.clone();
                let key = key.clone();
                let object = object.clone();
                Box::pin(async move {
                    let hint_for = (slot != node).then_some(&slot);
                    let r = coord.store_on(&ring, &node, &key, &object, hint_for).await;
                    (slot, node, r)
                })
            }
        };
        // The coordinator already stored its copy: it is no stand-in for others.
        let mut fanout = Fanout::new(placement, &self.me, true, &self.peers, Box::new(launch));
        let local_slot = stand_in_for.clone().unwrap_or_else(|| self.me.clone());
        let me = self.me.clone();
        fanout.push_future(Box::pin(async move {
            let r = local_durable.await.map_err(CallError::Remote);
            (local_slot, me, r)
        }));
        let forward_failed: HashSet<NodeId> = known_down.iter().map(|f| f.node.clone()).collect();
        let mut failures = known_down;
        for slot in placement
            .slots()
            .filter(|n| **n != self.me && Some(*n) != stand_in_for.as_ref())
        {
            if forward_failed.contains(slot) {
                // Known unreachable (the forward failed): straight to a stand-in.
                fanout.push_fallback(slot.clone());
            } else if self.peers.is_down(slot) {
                // Held down by the failure detector: straight to a stand-in
                // instead of spending the deadline on it.
                failures.push(held_down(slot));
                fanout.push_fallback(slot.clone());
            } else {
                fanout.push(slot.clone(), slot.clone());
            }
        }

        let mut acks = Vec::new();
        let mut hinted = 0;
        let expired = tokio::time::sleep_until(deadline);
        tokio::pin!(expired);
        loop {
            let outcome = match before(fanout.next(), expired.as_mut()).await {
                Ok(Some(outcome)) => outcome,
                Ok(None) => break,
                Err(Expired) => {
                    failures.push(ReplicaFailure {
                        node: self.me.clone(),
                        reason: format!(
                            "request timed out after {} ms waiting for acks",
                            self.request_timeout.as_millis()
                        ),
                    });
                    break;
                }
            };
            match outcome.result {
                Ok(()) => {
                    hinted += usize::from(outcome.slot != outcome.node);
                    acks.push(outcome.node);
                    if quorum.record(&outcome.slot) {
                        // The other copies complete in the background.
                        if !fanout.is_empty() {
                            self.in_background("write fan-out", fanout.finish());
                        }
                        return Ok(WriteReply {
                            key: req.key,
                            context,
                            values,
                            coordinator: self.me.clone(),
                            acks,
                            hinted,
                        });
                    }
                }
                Err(e) => {
                    self.note_failure(&e);
                    failures.push(ReplicaFailure {
                        node: outcome.node,
                        reason: e.reason(),
                    });
                }
            }
        }
        if !fanout.is_empty() {
            self.in_background("write fan-out", fanout.finish());
        }
        Err(Error::WriteQuorum {
            needed: quorum.needed(),
            acked: quorum.counted(),
            failures,
        })
    }

    /// Reacts to a typed failure: a peer with a newer ring, or one that does
    /// not count this node in its ring, makes this node pull the ring.
    fn note_failure(&self, e: &CallError) {
        if let CallError::Remote(Error::StaleRing { .. } | Error::Fenced { .. }) = e {
            self.ring_news.notify_one();
        }
    }

    /// Coordinates a get.
    pub async fn read(self: &Arc<Self>, key: Key) -> Result<ReadReply> {
        self.read_with(key, None).await
    }

    /// Coordinates a get that needs `r` answers (the ring's R when None; 1..=N).
    pub async fn read_with(self: &Arc<Self>, key: Key, r: Option<usize>) -> Result<ReadReply> {
        check_key(&key)?;
        let ring = self.current_ring()?;
        self.bucket_in(&ring, &key)?;
        check_per_request("r", r, &ring, &key)?;
        let placement = ring.placement(key.as_bytes());
        let deadline = Instant::now() + self.request_timeout;
        let launch = {
            let coord = self.clone();
            let ring = ring.clone();
            let key = key.clone();
            move |slot: NodeId, node: NodeId| -> Attempt<Object> {
                let coord = coord.clone();
                let ring = ring.clone();
                let key = key.clone();
                Box::pin(async move {
                    let r = coord.fetch_from(&ring, &node, &key).await;
                    (slot, node, r)
                })
            }
        };
        // A coordinator outside the slots may stand in: it answers with the hints
        // it holds for the key.
        let mut fanout = Fanout::new(&placement, &self.me, false, &self.peers, Box::new(launch));
        let mut failures = Vec::new();
        let mut primaries_left = 0usize;
        for slot in placement.slots() {
            if *slot != self.me && self.peers.is_down(slot) {
                // Held down by the failure detector: ask a stand-in instead.
                failures.push(held_down(slot));
                fanout.push_fallback(slot.clone());
            } else {
                fanout.push(slot.clone(), slot.clone());
                primaries_left += 1;
            }
        }

        let mut quorum = Quorum::new(
            &placement,
            r.unwrap_or(ring.replication_of(key.as_bytes()).r),
        );
        let mut answers: Vec<Answer> = Vec::new();
        // A stand-in that holds nothing for the key says little while a slot
        // that may hold it has yet to answer: count such answers only once every
        // slot has answered or failed.
        let mut deferred: Vec<NodeId> = Vec::new();
        let expired = tokio::time::sleep_until(deadline);
        tokio::pin!(expired);
        while !quorum.reached() {
            match before(fanout.next(), expired.as_mut()).await {
                Ok(Some(outcome)) => {
                    let primary = outcome.slot == outcome.node;
                    if primary {
                        primaries_left = primaries_left.saturating_sub(1);
                    }
                    match outcome.result {
                        Ok(obj) => {
                            if primary || !obj.is_empty() {
                                quorum.record(&outcome.slot);
                            } else {
                                deferred.push(outcome.slot.clone());
                            }
                            answers.push(Answer {
                                slot: outcome.slot,
                                node: outcome.node,
                                object: obj,
                            });
                        }
                        Err(e) => {
                            self.note_failure(&e);
                            failures.push(ReplicaFailure {
                                node: outcome.node,
                                reason: e.reason(),
                            });
                        }
                    }
                    if primaries_left == 0 {
                        for slot in deferred.drain(..) {
                            quorum.record(&slot);
                        }
                    }
                }
                Ok(None) => break,
                Err(Expired) => {
                    failures.push(ReplicaFailure {
                        node: self.me.clone(),
                        reason: format!(
                            "request timed out after {} ms waiting for answers",
                            self.request_timeout.as_millis()
                        ),
                    });
                    break;
                }
            }
        }
        if !quorum.reached() {
            for slot in deferred.drain(..) {
                quorum.record(&slot);
            }
        }
        if !quorum.reached() {
            if !fanout.is_empty() {
                self.in_background("read fan-out", fanout.finish());
            }
            return Err(Error::ReadQuorum {
                needed: quorum.needed(),
                answered: quorum.counted(),
                failures,
            });
        }
        let mut merged = Object::new();
        for answer in &answers {
            merged.merge(&answer.object);
        }
        let reply = ReadReply::from_merged(
            key.clone(),
            &merged,
            answers.iter().map(|a| a.node.clone()).collect(),
            crate::runtime::now_ms(),
        );
        let consistent = answers
            .iter()
            .all(|a| a.slot != a.node || a.object == merged);
        if !fanout.is_empty() || !consistent {
            let coord = self.clone();
            self.in_background(
                "read repair",
                coord.read_repair(ring, key, merged, answers, fanout),
            );
        }
        Ok(reply)
    }

    /// Waits for the answers still on their way, then sends the merged object to
    /// every slot whose answer was stale.
    async fn read_repair(
        self: Arc<Self>,
        ring: Arc<Ring>,
        key: Key,
        mut merged: Object,
        mut answers: Vec<Answer>,
        mut fanout: Fanout<Object>,
    ) {
        let expired = tokio::time::sleep(self.request_timeout);
        tokio::pin!(expired);
        while let Ok(Some(outcome)) = before(fanout.next(), expired.as_mut()).await {
            if let Ok(obj) = outcome.result {
                merged.merge(&obj);
                answers.push(Answer {
                    slot: outcome.slot,
                    node: outcome.node,
                    object: obj,
                });
            }
        }
        if merged.is_empty() {
            return;
        }
        let merged = Arc::new(merged);
        let repairs: FuturesUnordered<_> = answers
            .into_iter()
            .filter(|a| a.slot == a.node && a.object != *merged)
            .map(|a| {
                let coord = self.clone();
                let ring = ring.clone();
                let key = key.clone();
                let merged = merged.clone();
                async move {
                    match coord.store_on(&ring, &a.node, &key, &merged, None).await {
                        Ok(()) => tracing::debug!(node = %a.node, "read repair"),
                        Err(e) => {
                            tracing::debug!(node = %a.node, reason = %e.reason(), "read repair failed")
                        }
                    }
                }
            })
            .collect();
        repairs.collect::<Vec<_>>().await;
    }

    /// Stores `object` on `node` (locally when it is this node), durably.
    async fn store_on(
        &self,
        ring: &Ring,
        node: &NodeId,
        key: &str,
        object: &Arc<Object>,
        hint_for: Option<&NodeId>,
    ) -> std::result::Result<(), CallError> {
        let to = self.addressee(ring, node);
        let epoch = ring.epoch();
        if *node == self.me {
            return self
                .replicate(to, epoch, key.to_string(), object, hint_for.cloned())
                .await
                .map_err(CallError::Remote);
        }
        let write = ReplicaWrite {
            epoch,
            key: key.to_string(),
            object: object.clone(),
            hint_for: hint_for.cloned(),
        };
        self.outbox.send(to, write, self.replica_timeout()).await
    }

    /// Reads what `node` holds for `key` (locally when it is this node).
    async fn fetch_from(
        &self,
        ring: &Ring,
        node: &NodeId,
        key: &str,
    ) -> std::result::Result<Object, CallError> {
        let to = Addressee::in_ring(ring, node);
        if *node == self.me {
            return self.read_replica(&to, key).map_err(CallError::Remote);
        }
        self.peers
            .call(node, self.replica_timeout(), |c, ctx| {
                let to = to.clone();
                let key = key.to_string();
                async move { c.read_replica(ctx, to, key).await }
            })
            .await
    }
}
