//! The request path: a node coordinating a client's put, delete or get over the
//! key's replicas with N/W/R, sloppy quorum, hinted handoff and read repair.
//!
//! # Writes (SPEC 3.2, 3.3)
//!
//! A write is coordinated by a replica of the key: a node outside the preference
//! list forwards it to the first replica that can be reached (a write forwarded
//! once is never forwarded again). Only the coordinator creates the new version's
//! dot, from its own durable state for the key, so two writes through the same
//! node always get different dots and both survive as siblings.
//!
//! The coordinator applies the write to its own copy (read-modify-write under the
//! key's lock in [`Storage::coordinate`]), then sends the resulting object to the
//! other replicas, which merge it into theirs. Each replica that fails (connection
//! refused, timeout, error) is replaced by the next node clockwise outside the
//! preference list, which stores the object as a hint naming the replica it stands
//! in for. The client hears back as soon as W nodes (the coordinator counts once
//! its flush completes) have acknowledged durably; the other copies complete in the
//! background. When no replica can be reached at all, the receiving node
//! coordinates itself, as a stand-in for the first replica.
//!
//! # Reads (SPEC 3.4)
//!
//! Any node coordinates a read: it asks the N replicas (stand-ins for those that
//! fail), merges the first R answers with the causal join and replies with every
//! version no answer dominates. The remaining answers are collected in the
//! background, and every replica whose answer differed from the merge is sent the
//! merged object (read repair).
//!
//! # What a put answers
//!
//! A put answers like Riak's `return_body`: the coordinator's copy of the key
//! after the write, every value still current (the new one and any siblings the
//! client had not seen) with the context that covers them. Because the client is
//! shown every version the context covers, a next put with that context replaces
//! only versions the client has seen, and two blind puts through one node still
//! leave two siblings.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::time::Instant;

use crate::error::{Error, ReplicaFailure, Result};
use crate::peers::{CallError, Peers};
use crate::ring::{Ring, RingCell};
use crate::rpc::{ReadReply, WriteReply, WriteRequest};
use crate::storage::Storage;
use crate::types::{check_key, check_value, Key, NodeId, MAX_CONTEXT_ENTRIES, MAX_OBJECT_BYTES};
use crate::vclock::{Content, Object};

/// The coordinator of one node.
pub struct Coordinator {
    me: NodeId,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
    leader: NodeId,
    request_timeout: Duration,
}

/// Every member clockwise from the key, and how many of them make its preference
/// list: the preference list is the walk's first N entries (all members when there
/// are fewer), the rest are the stand-ins in the order they are tried.
fn walk_of(ring: &Ring, key: &str) -> (Vec<NodeId>, usize) {
    let walk = ring.walk(key.as_bytes());
    let n = ring.replication().n.min(walk.len());
    (walk, n)
}

impl Coordinator {
    /// A coordinator for node `me`. `leader` is named in errors before a ring is known.
    pub fn new(
        me: NodeId,
        storage: Arc<Storage>,
        peers: Arc<Peers>,
        ring: Arc<RingCell>,
        leader: NodeId,
        request_timeout: Duration,
    ) -> Coordinator {
        Coordinator {
            me,
            storage,
            peers,
            ring,
            leader,
            request_timeout,
        }
    }

    /// How long one replica gets before a stand-in is tried: half the request
    /// budget, so a stand-in still has the other half.
    fn replica_timeout(&self) -> Duration {
        self.request_timeout / 2
    }

    fn current_ring(&self) -> Result<Arc<Ring>> {
        match self.ring.get() {
            Some(r) if !r.members().is_empty() => Ok(r),
            Some(r) => Err(Error::NoRing {
                leader: r.leader().clone(),
            }),
            None => Err(Error::NoRing {
                leader: self.leader.clone(),
            }),
        }
    }

    /// Coordinates a put or delete.
    pub async fn write(self: &Arc<Self>, req: WriteRequest) -> Result<WriteReply> {
        check_key(&req.key)?;
        if let Content::Value(v) = &req.content {
            check_value(v)?;
        }
        if req.context.len() > MAX_CONTEXT_ENTRIES {
            return Err(Error::BadContext {
                reason: format!(
                    "{} entries, the limit is {MAX_CONTEXT_ENTRIES}",
                    req.context.len()
                ),
            });
        }
        let ring = self.current_ring()?;
        let (walk, n) = walk_of(&ring, &req.key);
        let (pref, outside) = walk.split_at(n);
        let deadline = Instant::now() + self.request_timeout;
        let mut unreachable = Vec::new();
        if !pref.contains(&self.me) && !req.forwarded {
            let forwarded = WriteRequest {
                forwarded: true,
                ..req.clone()
            };
            for node in pref {
                let left = deadline.saturating_duration_since(Instant::now());
                let fwd = &forwarded;
                let out = self
                    .peers
                    .call(node, left, |c, ctx| {
                        let r = fwd.clone();
                        async move { c.write(ctx, r).await }
                    })
                    .await;
                match out {
                    Ok(reply) => return Ok(reply),
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
        self.coordinate(&ring, pref, outside, req, unreachable, deadline)
            .await
    }

    async fn coordinate(
        self: &Arc<Self>,
        ring: &Ring,
        pref: &[NodeId],
        outside: &[NodeId],
        req: WriteRequest,
        known_down: Vec<ReplicaFailure>,
        deadline: Instant,
    ) -> Result<WriteReply> {
        let w = ring.replication().w;
        let is_replica = pref.contains(&self.me);
        // A node outside the preference list stands in for the first replica.
        let stand_in_for = if is_replica {
            None
        } else {
            pref.first().cloned()
        };
        let (object, _dot) = self.storage.coordinate(
            &req.key,
            &self.me,
            &req.context,
            req.content,
            stand_in_for.as_ref(),
        )?;
        let context = object.context().clone();
        let values: Vec<crate::types::Value> = object.values().cloned().collect();
        let local_durable = self.storage.durable();

        // pop() takes the stand-ins in ring order.
        let fallbacks: Vec<NodeId> = outside
            .iter()
            .rev()
            .filter(|n| **n != self.me)
            .cloned()
            .collect();
        let mut fanout = WriteFanout {
            coord: self.clone(),
            key: req.key.clone(),
            object: Arc::new(object),
            fallbacks,
            pending: FuturesUnordered::new(),
        };
        let me = self.me.clone();
        let local_hinted = stand_in_for.is_some();
        fanout.pending.push(Box::pin(async move {
            let r = local_durable
                .await
                .map_err(|e| format!("local write failed: {e}"));
            (me.clone(), me, local_hinted, r)
        }));
        let down: HashSet<&NodeId> = known_down.iter().map(|f| &f.node).collect();
        for slot in pref
            .iter()
            .filter(|n| **n != self.me && Some(*n) != stand_in_for.as_ref())
        {
            if down.contains(slot) {
                // Known unreachable (the forward failed): straight to a stand-in.
                fanout.push_fallback(slot.clone());
            } else {
                fanout.push(slot.clone(), slot.clone());
            }
        }

        let mut acks = Vec::new();
        let mut hinted = 0;
        let mut failures = known_down;
        loop {
            let (node, was_hinted, result) =
                match tokio::time::timeout_at(deadline, fanout.next()).await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(_) => {
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
            match result {
                Ok(()) => {
                    acks.push(node);
                    hinted += usize::from(was_hinted);
                    if acks.len() >= w {
                        // The other copies complete in the background.
                        if !fanout.pending.is_empty() {
                            tokio::spawn(fanout.finish());
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
                Err(reason) => failures.push(ReplicaFailure { node, reason }),
            }
        }
        if !fanout.pending.is_empty() {
            tokio::spawn(fanout.finish());
        }
        Err(Error::WriteQuorum {
            needed: w,
            acked: acks.len(),
            failures,
        })
    }

    /// Coordinates a get.
    pub async fn read(self: &Arc<Self>, key: Key) -> Result<ReadReply> {
        check_key(&key)?;
        let ring = self.current_ring()?;
        let r = ring.replication().r;
        let (walk, n) = walk_of(&ring, &key);
        let deadline = Instant::now() + self.request_timeout;
        let mut fallbacks: Vec<NodeId> = walk.iter().skip(n).cloned().collect();
        fallbacks.reverse();
        let mut fanout = ReadFanout {
            coord: self.clone(),
            key: key.clone(),
            fallbacks,
            pending: FuturesUnordered::new(),
        };
        for node in walk.into_iter().take(n) {
            fanout.push(node, true);
        }

        let mut answers: Vec<(NodeId, bool, Object)> = Vec::new();
        let mut failures = Vec::new();
        let mut primaries_left = n;
        // A stand-in that holds nothing for the key says little while a replica
        // that may hold it has yet to answer: count such answers only once every
        // replica has answered or failed.
        let counted = |answers: &[(NodeId, bool, Object)], primaries_left: usize| {
            if primaries_left == 0 {
                answers.len()
            } else {
                answers
                    .iter()
                    .filter(|(_, primary, obj)| *primary || !obj.is_empty())
                    .count()
            }
        };
        while counted(&answers, primaries_left) < r {
            match tokio::time::timeout_at(deadline, fanout.next()).await {
                Ok(Some((node, primary, result))) => {
                    if primary {
                        primaries_left = primaries_left.saturating_sub(1);
                    }
                    match result {
                        Ok(obj) => answers.push((node, primary, obj)),
                        Err(reason) => failures.push(ReplicaFailure { node, reason }),
                    }
                }
                Ok(None) => break,
                Err(_) => {
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
        if answers.len() < r {
            if !fanout.pending.is_empty() {
                tokio::spawn(fanout.finish());
            }
            return Err(Error::ReadQuorum {
                needed: r,
                answered: answers.len(),
                failures,
            });
        }
        let mut merged = Object::new();
        for (_, _, obj) in &answers {
            merged.merge(obj);
        }
        let reply = ReadReply {
            key: key.clone(),
            values: merged.values().cloned().collect(),
            context: merged.context().clone(),
            replicas: answers.iter().map(|(n, _, _)| n.clone()).collect(),
        };
        let consistent = answers
            .iter()
            .all(|(_, primary, obj)| !*primary || *obj == merged);
        if !fanout.pending.is_empty() || !consistent {
            let coord = self.clone();
            tokio::spawn(async move { coord.read_repair(key, merged, answers, fanout).await });
        }
        Ok(reply)
    }

    /// Waits for the answers still on their way, then sends the merged object to
    /// every replica whose answer was stale.
    async fn read_repair(
        self: Arc<Self>,
        key: Key,
        mut merged: Object,
        mut answers: Vec<(NodeId, bool, Object)>,
        mut fanout: ReadFanout,
    ) {
        let until = Instant::now() + self.request_timeout;
        while let Ok(Some((node, primary, result))) =
            tokio::time::timeout_at(until, fanout.next()).await
        {
            if let Ok(obj) = result {
                merged.merge(&obj);
                answers.push((node, primary, obj));
            }
        }
        if merged.is_empty() {
            return;
        }
        let merged = Arc::new(merged);
        let repairs: FuturesUnordered<_> = answers
            .into_iter()
            .filter(|(_, primary, obj)| *primary && *obj != *merged)
            .map(|(node, _, _)| {
                let coord = self.clone();
                let key = key.clone();
                let merged = merged.clone();
                async move {
                    match coord.store_on(&node, &key, &merged, None).await {
                        Ok(()) => tracing::debug!(%node, "read repair"),
                        Err(reason) => tracing::debug!(%node, %reason, "read repair failed"),
                    }
                }
            })
            .collect();
        repairs.collect::<Vec<_>>().await;
    }

    /// Stores `object` on `node` (locally when it is this node), durably.
    async fn store_on(
        &self,
        node: &NodeId,
        key: &str,
        object: &Arc<Object>,
        hint_for: Option<&NodeId>,
    ) -> std::result::Result<(), String> {
        if *node == self.me {
            return self
                .replicate(key.to_string(), object, hint_for.cloned())
                .await
                .map_err(|e| e.to_string());
        }
        let timeout = self.replica_timeout();
        self.peers
            .call(node, timeout, |c, ctx| {
                let key = key.to_string();
                let object = object.clone();
                let hint_for = hint_for.cloned();
                async move { c.replicate(ctx, key, object, hint_for).await }
            })
            .await
            .map_err(|e| e.reason())
    }

    /// Reads what `node` holds for `key` (locally when it is this node).
    async fn fetch_from(&self, node: &NodeId, key: &str) -> std::result::Result<Object, String> {
        if *node == self.me {
            return self.read_replica(key).map_err(|e| e.to_string());
        }
        self.peers
            .call(node, self.replica_timeout(), |c, ctx| {
                let key = key.to_string();
                async move { c.read_replica(ctx, key).await }
            })
            .await
            .map_err(|e| e.reason())
    }

    /// Replica side of a write: merge `object` into this node's copy of `key` (or
    /// into the hint for `hint_for`) and answer once it is durable.
    pub async fn replicate(
        &self,
        key: Key,
        object: &Object,
        hint_for: Option<NodeId>,
    ) -> Result<()> {
        check_key(&key)?;
        let size = object.approx_size();
        if size > MAX_OBJECT_BYTES {
            return Err(Error::ObjectTooLarge {
                size,
                limit: MAX_OBJECT_BYTES,
            });
        }
        match hint_for {
            Some(target) if target != self.me => self.storage.merge_hint(&target, &key, object)?,
            _ => {
                self.storage.merge(&key, object)?;
            }
        }
        self.storage.durable().await
    }

    /// Replica side of a read.
    pub fn read_replica(&self, key: &str) -> Result<Object> {
        check_key(key)?;
        self.storage.get(key)
    }
}

type WriteAttempt = BoxFuture<'static, (NodeId, NodeId, bool, std::result::Result<(), String>)>;

/// The copies of one write in flight: each attempt stores the object on a node for
/// a replica slot (a hint when the node stands in), and a failed attempt is
/// replaced by the next stand-in. Polled by the request until W acks, then (if
/// attempts remain) by a background task, so every reachable replica gets a copy.
struct WriteFanout {
    coord: Arc<Coordinator>,
    key: Key,
    object: Arc<Object>,
    /// Nodes outside the preference list, next one last.
    fallbacks: Vec<NodeId>,
    pending: FuturesUnordered<WriteAttempt>,
}

impl WriteFanout {
    /// Stores the object on `node` for replica `slot` (a hint when they differ).
    fn push(&mut self, slot: NodeId, node: NodeId) {
        let coord = self.coord.clone();
        let key = self.key.clone();
        let object = self.object.clone();
        self.pending.push(Box::pin(async move {
            let hint_for = (slot != node).then_some(&slot);
            let r = coord.store_on(&node, &key, &object, hint_for).await;
            let hinted = hint_for.is_some();
            (slot, node, hinted, r)
        }));
    }

    /// Sends the copy for `slot` to the next stand-in, if any is left.
    fn push_fallback(&mut self, slot: NodeId) {
        if let Some(f) = self.fallbacks.pop() {
            self.push(slot, f);
        }
    }

    /// The next outcome: the node, whether it held a hint, and its result.
    async fn next(&mut self) -> Option<(NodeId, bool, std::result::Result<(), String>)> {
        let (slot, node, hinted, result) = self.pending.next().await?;
        if result.is_err() && slot != self.coord.me {
            self.push_fallback(slot);
        }
        Some((node, hinted, result))
    }

    /// Drives the remaining attempts to completion.
    async fn finish(mut self) {
        while self.next().await.is_some() {}
    }
}

type ReadAttempt = BoxFuture<'static, (NodeId, bool, std::result::Result<Object, String>)>;

/// The reads of one get in flight; a failed read is replaced by the next stand-in.
struct ReadFanout {
    coord: Arc<Coordinator>,
    key: Key,
    fallbacks: Vec<NodeId>,
    pending: FuturesUnordered<ReadAttempt>,
}

impl ReadFanout {
    fn push(&mut self, node: NodeId, primary: bool) {
        let coord = self.coord.clone();
        let key = self.key.clone();
        self.pending.push(Box::pin(async move {
            let r = coord.fetch_from(&node, &key).await;
            (node, primary, r)
        }));
    }

    async fn next(&mut self) -> Option<(NodeId, bool, std::result::Result<Object, String>)> {
        let (node, primary, result) = self.pending.next().await?;
        if result.is_err() {
            if let Some(f) = self.fallbacks.pop() {
                self.push(f, false);
            }
        }
        Some((node, primary, result))
    }

    async fn finish(mut self) {
        while self.next().await.is_some() {}
    }
}
