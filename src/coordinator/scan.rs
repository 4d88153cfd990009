//! `scan`: the ring's keys in key order, a page at a time.
//!
//! # What a page promises
//!
//! A page lists, in key order, keys after `after` that start with `prefix`,
//! leaving out keys whose every version is a tombstone (deleted). With
//! `consistent`, a key acknowledged by a write quorum before the page was asked
//! for is listed even when one replica of its range is down: each range is read
//! from R of its replicas and R + W > N, the same argument as a get's. Without
//! it each range is read from one replica, which is cheaper and may miss a
//! write that replica has not received yet (anti-entropy closes that gap).
//!
//! # The covering set and who lists what
//!
//! The coordinator (the node the client asked) takes as the *covering set*
//! every member the failure detector does not hold down, and checks that every
//! arc of the ring keeps at least `r` of its owners in it (else the page fails
//! like a read quorum, naming the range). Each key is then listed by exactly
//! the first `r` members of the covering set in its preference list: the
//! replicas compute that themselves, from the same ring (the request carries
//! its epoch; a replica on another epoch refuses, and the coordinator retries
//! under the newer ring). So each part of the ring is asked once (r times with
//! `consistent`), and no key is listed twice. A replica that fails leaves the
//! covering set and the page is asked again, up to [`ATTEMPTS`] times: a scan
//! only reads, so asking again is always safe. A replica refilling after it
//! lost its data directory refuses (its copy is not whole yet) and is left out
//! the same way; one on another ring is asked again once this node has pulled
//! the newer ring.
//!
//! During a ring change the preference list is the current owners', which
//! keep every key until the change settles (see [`crate::rebalance`]).
//!
//! # Merging and the page's end
//!
//! Each replica walks its own keys in key order ([`crate::storage::Storage::list`]),
//! returns at most `limit` of its assigned keys, examines at most
//! [`SCAN_BUDGET`] keys, and says where it stopped (`resume`) if it did not
//! reach the end. Copies of one key from several replicas are merged as
//! objects without their values ([`Object::without_values`]), so a delete one
//! replica missed still hides the key when another holds the tombstone. The
//! page keeps only keys up to the lowest `resume` of all replicas: beyond it
//! some replica has not looked yet. Its `next` is the last key listed when the
//! page is full, else that lowest `resume` (a page may then hold fewer keys,
//! even none, and still have a `next`), else nothing: every replica reached the
//! end.
//!
//! # Cost
//!
//! A page asks every node of the covering set, and each examines up to
//! [`SCAN_BUDGET`] keys of its own: a full listing touches every node and
//! reads every key once per replica asked. Pages are bounded
//! ([`MAX_SCAN_LIMIT`] keys), so a listing never holds a node for long.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::time::Instant;

use super::Coordinator;
use crate::error::{Error, ReplicaFailure, Result};
use crate::peers::CallError;
use crate::ring::Ring;
use crate::rpc::{
    Addressee, ExportPage, ExportRequest, ReplicaScan, ReplicaScanReply, ScanReply, ScanRequest,
};
use crate::types::{Key, NodeId, MAX_KEY_BYTES};
use crate::vclock::Object;

/// Most keys one page may ask for.
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// Keys a page holds when the client names no limit.
pub const DEFAULT_SCAN_LIMIT: u32 = 100;
/// Most keys one replica examines for one page (listed or not).
pub const SCAN_BUDGET: usize = 20_000;
/// How many times a page is asked with a smaller covering set after a
/// replica failed to answer.
pub const ATTEMPTS: usize = 3;
/// The pause before a page is asked again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The replicas' parts of a page, the nodes that sent them, and r.
type Page = (Vec<ReplicaScanReply>, Vec<NodeId>, usize);

/// Most bytes of objects one page of a backup carries (replicas' parts are
/// cut to a share of it), well under the frame limit.
pub const EXPORT_PAGE_BYTES: usize = 8 << 20;
/// The least share of [`EXPORT_PAGE_BYTES`] one replica's part may take.
const MIN_PART_BYTES: usize = 64 << 10;

impl Coordinator {
    /// Coordinates one page of a scan (see the module documentation).
    pub async fn scan(self: &Arc<Self>, req: ScanRequest) -> Result<ScanReply> {
        check_scan(&req)?;
        let (replies, nodes, r) = self.gather(&req, false).await?;
        let now = crate::runtime::now_ms();
        Ok(merge_page(replies, nodes, r, req.limit, now))
    }

    /// Coordinates one page of a backup: whole objects from R replicas of
    /// every range, merged, in key order, at most `limit` keys and about
    /// [`EXPORT_PAGE_BYTES`].
    pub async fn export(self: &Arc<Self>, req: ExportRequest) -> Result<ExportPage> {
        let scan = ScanRequest {
            consistent: true,
            ..req.scan
        };
        check_scan(&scan)?;
        let (replies, _, _) = self.gather(&scan, true).await?;
        let now = crate::runtime::now_ms();
        let (objects, frontier) = merge_parts(replies);
        let mut kept = objects
            .into_iter()
            .filter(|(k, _)| frontier.as_ref().is_none_or(|f| k <= f))
            .filter(|(_, o)| req.tombstones || !o.is_dead_at(now));
        let limit = usize::try_from(scan.limit).unwrap_or(usize::MAX);
        let (mut items, mut bytes, mut full) = (Vec::new(), 0usize, false);
        for (key, object) in kept.by_ref() {
            bytes = bytes.saturating_add(object.approx_size() + key.len());
            items.push((key, object));
            if items.len() >= limit || bytes >= EXPORT_PAGE_BYTES {
                full = true;
                break;
            }
        }
        let more = kept.next().is_some();
        let last = items.last().map(|(k, _)| k);
        Ok(ExportPage {
            next: next_of(last, full, more, frontier),
            items,
        })
    }

    /// Asks a covering set for its parts of one page (objects whole when
    /// `values`), leaving out replicas that fail, at most [`ATTEMPTS`] times.
    async fn gather(self: &Arc<Self>, req: &ScanRequest, values: bool) -> Result<Page> {
        let deadline = Instant::now() + self.request_timeout * 2;
        let mut failures: Vec<ReplicaFailure> = Vec::new();
        let mut last_stale: Vec<ReplicaFailure> = Vec::new();
        let mut out = None;
        for attempt in 0..ATTEMPTS {
            last_stale.clear();
            if attempt > 0 {
                // A replica on another ring makes this node pull it; give
                // that a moment before asking again.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let ring = self.current_ring()?;
            // A bucket's scan (its prefix is the bucket's) takes its N and R.
            self.bucket_in(&ring, &req.prefix)?;
            let replication = ring.replication_of(req.prefix.as_bytes());
            let r = if req.consistent { replication.r } else { 1 };
            let covering: Vec<NodeId> = ring
                .members()
                .iter()
                .filter(|n| **n == self.me || !self.peers.is_down(n))
                .filter(|n| !failures.iter().any(|f| &f.node == *n))
                .cloned()
                .collect();
            check_coverage(&ring, &covering, replication.n, r, &failures)?;
            match self
                .scan_page(&ring, &covering, r, req, values, deadline)
                .await
            {
                Ok(page) => {
                    out = Some(page);
                    break;
                }
                Err(failed) => {
                    for (failure, stale) in failed {
                        // A replica on another ring is asked again under
                        // the newer one, not left out.
                        if stale {
                            last_stale.push(failure);
                        } else {
                            failures.push(failure);
                        }
                    }
                }
            }
        }
        out.ok_or_else(|| {
            failures.append(&mut last_stale);
            Error::ReadQuorum {
                answered: 0,
                needed: 1,
                failures,
            }
        })
    }

    /// Asks every node of `covering` for its part of the page. Err: the
    /// nodes that failed (the page is asked again without them).
    async fn scan_page(
        self: &Arc<Self>,
        ring: &Arc<Ring>,
        covering: &[NodeId],
        r: usize,
        req: &ScanRequest,
        values: bool,
        deadline: Instant,
    ) -> std::result::Result<Page, Vec<(ReplicaFailure, bool)>> {
        let ask = ReplicaScan {
            epoch: ring.epoch(),
            covering: covering.to_vec(),
            r: u32::try_from(r).unwrap_or(u32::MAX),
            prefix: req.prefix.clone(),
            after: req.after.clone(),
            limit: req.limit,
            values,
        };
        let mut calls = FuturesUnordered::new();
        for node in covering {
            let ask = ask.clone();
            let node = node.clone();
            let to = Addressee::in_ring(ring, &node);
            let coord = self.clone();
            calls.push(async move {
                let out = if node == coord.me {
                    coord
                        .scan_replica(&to, ask)
                        .await
                        .map_err(CallError::Remote)
                } else {
                    let left = deadline.saturating_duration_since(Instant::now());
                    coord
                        .peers
                        .call(&node, left, |c, ctx| async move {
                            c.scan_replica(ctx, to, ask).await
                        })
                        .await
                };
                (node, out)
            });
        }
        let mut replies = Vec::with_capacity(covering.len());
        let mut nodes = Vec::with_capacity(covering.len());
        let mut failed = Vec::new();
        while let Some((node, out)) = calls.next().await {
            match out {
                Ok(reply) => {
                    replies.push(reply);
                    nodes.push(node);
                }
                Err(e) => {
                    self.note_failure(&e);
                    let stale = matches!(e, CallError::Remote(Error::StaleRing { .. }));
                    let failure = ReplicaFailure {
                        reason: e.reason(),
                        node,
                    };
                    failed.push((failure, stale));
                }
            }
        }
        if failed.is_empty() {
            nodes.sort();
            Ok((replies, nodes, r))
        } else {
            Err(failed)
        }
    }

    /// The replica side of a scan page: the keys of this node's replica that
    /// the request assigns to it (see the module documentation), without
    /// their values.
    pub async fn scan_replica(&self, to: &Addressee, req: ReplicaScan) -> Result<ReplicaScanReply> {
        self.check_addressee(to)?;
        if self.storage.restoring() {
            // Refilling after losing its data directory: what it holds is
            // not yet all it should, so another replica lists its ranges.
            return Err(Error::Restoring {
                node: self.me.clone(),
            });
        }
        let ring = self.ring.get();
        let current = ring.as_ref().map_or(0, |r| r.epoch());
        let Some(ring) = ring.filter(|_| req.epoch == current) else {
            if req.epoch > current {
                self.ring_news.notify_one();
            }
            return Err(Error::StaleRing {
                node: self.me.clone(),
                sent: req.epoch,
                current,
            });
        };
        check_page(&req.prefix, req.after.as_deref(), req.limit)?;
        let r = usize::try_from(req.r).unwrap_or(usize::MAX).max(1);
        let part_bytes = (EXPORT_PAGE_BYTES / req.covering.len().max(1)).max(MIN_PART_BYTES);
        let values = req.values;
        let me = self.me.clone();
        let storage = self.storage.clone();
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let listing = crate::runtime::spawn(move || {
            storage.list(
                &req.prefix,
                req.after.as_deref(),
                limit,
                SCAN_BUDGET,
                r > 1,
                |key| assigned(&ring, &req.covering, r, &me, key),
            )
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        if !values {
            return Ok(ReplicaScanReply {
                items: listing
                    .items
                    .into_iter()
                    .map(|(k, o)| (k, o.without_values()))
                    .collect(),
                resume: listing.resume,
            });
        }
        // Whole objects: cut the part at its share of the page's bytes (at
        // least one object); what was left out is after `resume`.
        let mut items = Vec::with_capacity(listing.items.len());
        let mut bytes = 0usize;
        let mut resume = listing.resume;
        let mut listed = listing.items.into_iter();
        for (key, object) in listed.by_ref() {
            bytes = bytes.saturating_add(object.approx_size() + key.len());
            items.push((key, object));
            if bytes >= part_bytes {
                break;
            }
        }
        if listed.next().is_some() {
            resume = items.last().map(|(k, _)| k.clone());
        }
        Ok(ReplicaScanReply { items, resume })
    }
}

/// True if `me` is among the first `r` nodes of `covering` in `key`'s
/// preference list: the key is `me`'s to list.
pub fn assigned(ring: &Ring, covering: &[NodeId], r: usize, me: &NodeId, key: &str) -> bool {
    ring.preference_list(key.as_bytes())
        .iter()
        .filter(|n| covering.contains(n))
        .take(r)
        .any(|n| n == me)
}

/// Fails unless every arc of the ring keeps at least `r` of its `n` owners
/// (all of them when it has fewer) in `covering`.
fn check_coverage(
    ring: &Ring,
    covering: &[NodeId],
    n: usize,
    r: usize,
    failures: &[ReplicaFailure],
) -> Result<()> {
    for owners in ring.owner_lists_in_n(0, u64::MAX, n) {
        let needed = r.min(owners.len());
        let reached = owners.iter().filter(|n| covering.contains(n)).count();
        if reached < needed {
            let mut failures = failures.to_vec();
            failures.extend(
                owners
                    .iter()
                    .filter(|n| !covering.contains(n))
                    .filter(|n| !failures.iter().any(|f| &f.node == *n))
                    .map(|n| ReplicaFailure {
                        node: n.clone(),
                        reason: "held down by the failure detector".into(),
                    })
                    .collect::<Vec<_>>(),
            );
            return Err(Error::ReadQuorum {
                answered: reached,
                needed,
                failures,
            });
        }
    }
    Ok(())
}

/// Checks a scan's arguments.
pub fn check_scan(req: &ScanRequest) -> Result<()> {
    check_page(&req.prefix, req.after.as_deref(), req.limit)
}

/// Checks a page's prefix, `after` and limit (a client's scan, a replica's part).
fn check_page(prefix: &str, after: Option<&str>, limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_SCAN_LIMIT {
        return Err(Error::invalid(format!(
            "scan limit {limit} is out of range: 1 to {MAX_SCAN_LIMIT}"
        )));
    }
    if prefix.len() > MAX_KEY_BYTES {
        return Err(Error::KeyTooLarge {
            size: prefix.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    if let Some(after) = after {
        if after.len() > MAX_KEY_BYTES {
            return Err(Error::KeyTooLarge {
                size: after.len(),
                limit: MAX_KEY_BYTES,
            });
        }
    }
    Ok(())
}

/// The `next` of a page whose last key is `last`: past it when the page is
/// full and something may follow, else the lowest place a replica stopped
/// (`frontier`), else none: the listing is done.
fn next_of(last: Option<&Key>, full: bool, more: bool, frontier: Option<Key>) -> Option<Key> {
    if full && (more || frontier.is_some()) {
        last.cloned()
    } else {
        frontier
    }
}

/// One page of a scan from the replicas' parts, at `now` (see the module
/// documentation).
pub fn merge_page(
    replies: Vec<ReplicaScanReply>,
    nodes: Vec<NodeId>,
    r: usize,
    limit: u32,
    now: u64,
) -> ScanReply {
    let (objects, frontier) = merge_parts(replies);
    let mut live = objects
        .into_iter()
        .filter(|(k, _)| frontier.as_ref().is_none_or(|f| k <= f))
        .filter(|(_, o)| o.is_live_at(now))
        .map(|(k, _)| k);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let keys: Vec<Key> = live.by_ref().take(limit).collect();
    let more = live.next().is_some();
    ScanReply {
        next: next_of(keys.last(), keys.len() == limit, more, frontier),
        keys,
        r: u32::try_from(r).unwrap_or(u32::MAX),
        nodes,
    }
}

/// The replicas' parts merged by key, and the lowest place a replica stopped
/// (keys past it are not complete yet; see the module documentation).
pub fn merge_parts(replies: Vec<ReplicaScanReply>) -> (BTreeMap<Key, Object>, Option<Key>) {
    let frontier: Option<Key> = replies.iter().filter_map(|p| p.resume.clone()).min();
    let mut merged: BTreeMap<Key, Object> = BTreeMap::new();
    for reply in replies {
        for (key, object) in reply.items {
            match merged.get_mut(&key) {
                Some(held) => {
                    held.merge(&object);
                }
                None => {
                    merged.insert(key, object);
                }
            }
        }
    }
    (merged, frontier)
}

#[cfg(test)]
mod tests;
