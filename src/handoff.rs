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
//! A hint goes to its target only while the target is one of the key's owners
//! in the current ring (a replica or, during a change, a pending owner). One
//! whose target has left the ring, or no longer owns the key, goes to every
//! current owner of the key instead (merged locally when this node is one of
//! them): a copy on a node that does not own the key would be a stray one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::context::NodeContext;
use crate::peers::Peers;
use crate::ring::{Ring, RingCell};
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
    /// Hints a receiver refused for good, for `status`.
    refused: Arc<crate::peers::Refusals>,
}

impl Handoff {
    /// A handoff task for node `me`.
    /// Hints a receiver refuses for good are kept (they are writes) and
    /// recorded in `refused`.
    pub fn new(node: &NodeContext) -> Self {
        let NodeContext {
            me,
            storage,
            peers,
            ring,
            refused,
        } = node.clone();
        Handoff {
            me,
            storage,
            peers,
            ring,
            refused,
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
                let uuid = self.storage.uuid();
                delivery_targets(&r, &hint.target, hint.key.as_bytes())
                    .into_iter()
                    .map(|node| Addressee::from_me(&r, &node, &self.me, uuid))
                    .collect()
            }
            None => return Err("this node has no ring yet".into()),
        };
        if targets.is_empty() {
            return Err("the ring gives the key to no node".into());
        }
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
                .map_err(|e| {
                    // Kept (it is a write), reported, and tried again next round.
                    if let crate::peers::CallError::Remote(err) = &e {
                        if !err.retryable()
                            && !matches!(
                                err,
                                crate::Error::Fenced { .. } | crate::Error::Removed { .. }
                            )
                        {
                            self.refused
                                .record(&hint.key, &target, err.to_string(), "handoff");
                        }
                    }
                    e.reason()
                })?;
        }
        Ok(())
    }
}

/// Where a hint for `target` of `key` goes under `ring`: to `target` while it
/// is one of the key's owners (a replica or, during a change, a pending
/// owner), else to every owner (the preference list, then the pending
/// owners). A member that no longer owns the key must not get it: the copy
/// would be a stray one, which no clean-up removes and the tombstone reaper
/// refuses for ever.
fn delivery_targets(ring: &Ring, target: &NodeId, key: &[u8]) -> Vec<NodeId> {
    let mut owners = ring.preference_list(key);
    owners.extend(ring.pending_owners(key));
    if owners.contains(target) {
        vec![target.clone()]
    } else {
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingState;
    use crate::types::Replication;

    fn nodes(n: u16) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId::new("127.0.0.1", 21000 + i).unwrap())
            .collect()
    }

    fn ring_of(members: &[NodeId]) -> RingState {
        let mut state = RingState::bootstrap(members[0].clone(), Replication { n: 3, w: 2, r: 2 });
        for m in &members[1..] {
            state = state.with_member(m.clone()).unwrap();
        }
        state
    }

    /// A key of `ring` whose preference list `wanted` accepts.
    fn key_where(ring: &Ring, wanted: impl Fn(&[NodeId]) -> bool) -> Vec<u8> {
        (0..10_000)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|k| wanted(&ring.preference_list(k)))
            .unwrap()
    }

    #[test]
    fn a_hint_goes_to_its_target_while_it_owns_the_key() {
        let members = nodes(5);
        let ring = Ring::new(ring_of(&members));
        let t = &members[1];
        let key = key_where(&ring, |owners| owners.contains(t));
        assert_eq!(delivery_targets(&ring, t, &key), vec![t.clone()]);
    }

    /// A target that is still a member but no longer owns the key (a change
    /// moved it) does not get it: a copy there would be a stray one, which
    /// the tombstone reaper then refuses for ever. The owners get it.
    #[test]
    fn a_hint_for_a_member_that_no_longer_owns_the_key_goes_to_the_owners() {
        let members = nodes(5);
        let ring = Ring::new(ring_of(&members));
        let t = &members[1];
        let key = key_where(&ring, |owners| !owners.contains(t));
        assert!(ring.is_member(t));
        assert_eq!(delivery_targets(&ring, t, &key), ring.preference_list(&key));
    }

    #[test]
    fn a_hint_for_a_node_that_left_goes_to_the_owners() {
        let members = nodes(5);
        let ring = Ring::new(ring_of(&members[..4]));
        let gone = &members[4];
        let key = b"some-key".to_vec();
        assert_eq!(
            delivery_targets(&ring, gone, &key),
            ring.preference_list(&key)
        );
    }

    /// During a change the key's owners are its replicas and its pending
    /// owners: a pending owner gets its hint, and a hint for a node that owns
    /// the key in neither ring goes to all of them.
    #[test]
    fn during_a_change_pending_owners_count_as_owners() {
        let members = nodes(5);
        let state = ring_of(&members[..4]);
        let joining = members[4].clone();
        let ring = Ring::new(state.begin_add(joining.clone(), None, 0).unwrap());
        let key = (0..10_000)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|k| ring.pending_owners(k).contains(&joining))
            .unwrap();
        assert_eq!(
            delivery_targets(&ring, &joining, &key),
            vec![joining.clone()]
        );
        let mut owners = ring.preference_list(&key);
        owners.extend(ring.pending_owners(&key));
        let outsider = members[..4].iter().find(|n| !owners.contains(n)).unwrap();
        assert_eq!(delivery_targets(&ring, outsider, &key), owners);
    }
}
