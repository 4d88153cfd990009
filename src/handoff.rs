//! Hinted handoff (SPEC 3.3): a stand-in delivers the writes it holds for a
//! replica once that replica answers again, then deletes them.
//!
//! Every [`HANDOFF_INTERVAL`] the task reads the pending hints and sends each to
//! its target with `replicate`; the target merges it durably and acknowledges. The
//! hint is then deleted only if it did not change meanwhile (compare-and-swap on
//! the stored bytes), so a write that arrived during delivery is delivered on the
//! next round. Deliveries are bounded ([`HANDOFF_CONCURRENCY`]) and a target that
//! fails is skipped for the rest of the round.
//!
//! A hint whose target has left the ring goes to the key's current replicas
//! instead (merged locally when this node is one of them).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::peers::Peers;
use crate::ring::RingCell;
use crate::rpc::Addressee;
use crate::storage::{Hint, Storage};
use crate::types::NodeId;

/// How often pending hints are retried. One second: a restarted replica gets its
/// writes back within about a second, and an idle node does one cheap scan.
pub const HANDOFF_INTERVAL: Duration = Duration::from_secs(1);
/// Hints delivered at once.
pub const HANDOFF_CONCURRENCY: usize = 32;
/// Deadline of one delivery.
pub use crate::config::HANDOFF_TIMEOUT;

/// The handoff task of one node.
pub struct Handoff {
    me: NodeId,
    storage: Arc<Storage>,
    peers: Arc<Peers>,
    ring: Arc<RingCell>,
}

impl Handoff {
    /// A handoff task for node `me`.
    pub fn new(me: NodeId, storage: Arc<Storage>, peers: Arc<Peers>, ring: Arc<RingCell>) -> Self {
        Handoff {
            me,
            storage,
            peers,
            ring,
        }
    }

    /// Runs rounds until `stop` changes.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HANDOFF_INTERVAL) => {}
                _ = stop.changed() => return,
            }
            let delivered = self.round().await;
            if delivered > 0 {
                tracing::info!(delivered, "hinted handoff");
            }
        }
    }

    /// One pass over the pending hints. Returns how many were delivered.
    ///
    /// A node outside its ring delivers nothing: receivers refuse data from a
    /// node that is not in their ring, and a node that left holds nothing the
    /// ring needs (its hints went with its transfer) or must not hand off
    /// what it holds (it was removed while away).
    pub async fn round(&self) -> usize {
        match self.ring.get() {
            Some(r) if r.is_member(&self.me) => {}
            _ => return 0,
        }
        let hints = match self.storage.hints() {
            Ok(scan) => {
                for bad in &scan.corrupt {
                    tracing::error!(record = %bad, "skipping a hint that does not decode");
                }
                scan.hints
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read hints");
                return 0;
            }
        };
        if hints.is_empty() {
            return 0;
        }
        let failed = std::sync::Mutex::new(HashSet::<NodeId>::new());
        let failed = &failed;
        futures::stream::iter(hints)
            .map(|hint| async move {
                if failed
                    .lock()
                    .map(|f| f.contains(&hint.target))
                    .unwrap_or(false)
                {
                    return 0;
                }
                match self.deliver(&hint).await {
                    Ok(()) => match self.storage.remove_hint(&hint) {
                        Ok(true) => 1,
                        Ok(false) => 0,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot delete a delivered hint");
                            0
                        }
                    },
                    Err(reason) => {
                        tracing::debug!(target = %hint.target, %reason, "hint not delivered yet");
                        if let Ok(mut f) = failed.lock() {
                            f.insert(hint.target.clone());
                        }
                        0
                    }
                }
            })
            .buffer_unordered(HANDOFF_CONCURRENCY)
            .fold(0, |acc, n| async move { acc + n })
            .await
    }

    async fn deliver(&self, hint: &Hint) -> Result<(), String> {
        // Computed up front: the ring is not held across the calls (a ring
        // change's transfer waits for requests that hold an older ring).
        let targets: Vec<Addressee> = match self.ring.get() {
            Some(r) => {
                let nodes = if r.is_member(&hint.target) {
                    vec![hint.target.clone()]
                } else {
                    r.preference_list(hint.key.as_bytes())
                };
                let uuid = self.storage.uuid();
                nodes
                    .into_iter()
                    .map(|node| Addressee::from_me(&r, &node, &self.me, uuid))
                    .collect()
            }
            None => return Err("this node has no ring yet".into()),
        };
        for to in targets {
            let target = to.node.clone();
            if target == self.me {
                self.storage
                    .merge(&hint.key, &hint.object)
                    .map_err(|e| e.to_string())?;
                self.storage.durable().await.map_err(|e| e.to_string())?;
                continue;
            }
            self.peers
                .call(&target, HANDOFF_TIMEOUT, |c, ctx| {
                    let to = to.clone();
                    let key = hint.key.clone();
                    let object = hint.object.clone();
                    // Epoch 0: a delivery of a write already acknowledged, not
                    // placed under any ring.
                    async move { c.replicate(ctx, to, 0, key, object, None).await }
                })
                .await
                .map_err(|e| e.reason())?;
        }
        Ok(())
    }
}
