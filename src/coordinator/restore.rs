//! `client restore`: objects from a backup merged into the ring.
//!
//! A restore is a merge, never an overwrite: each object goes to the key's
//! slots as a replica's copy does in anti-entropy or a ring change's transfer
//! (`transfer`, [`crate::storage::Storage::merge`]), so a version the ring
//! already holds or has replaced (its context covers the backup's dot) stays
//! as the ring has it, and a version concurrent with the ring's becomes a
//! sibling. Merging is idempotent: restoring the same file twice changes
//! nothing the second time. The dots of the backup keep their actors (the
//! nodes of the ring it was taken from); they are ordinary actors to this
//! ring, and a later put with the context `get` prints replaces them.
//!
//! A key counts as restored once a write quorum of its slots merged it
//! durably, as a put counts ([`Quorum`]: W of its owners, and during a ring
//! change W of its owners after it too); the others catch up by anti-entropy. A batch with a key short of W
//! fails as a whole with the reasons; sending it again is safe.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::time::Instant;

use super::replica::check_copies;
use super::Coordinator;
use crate::error::{Error, ReplicaFailure, Result};
use crate::ring::Quorum;
use crate::rpc::Addressee;
use crate::types::{Key, NodeId};
use crate::vclock::Object;

/// Most objects one `restore_batch` may carry.
pub const MAX_RESTORE_BATCH: usize = 1024;

impl Coordinator {
    /// Merges `items` into their keys' slots; answers how many keys a write
    /// quorum took (all of them, or an error).
    pub async fn restore_batch(self: &Arc<Self>, items: Vec<(Key, Object)>) -> Result<u64> {
        if items.len() > MAX_RESTORE_BATCH {
            return Err(Error::invalid(format!(
                "{} objects in one restore batch, the limit is {MAX_RESTORE_BATCH}",
                items.len()
            )));
        }
        check_copies(items.iter().map(|(k, o)| (k, o)))?;
        let ring = self.current_ring()?;
        let deadline = Instant::now() + self.request_timeout * 2;
        // Each slot's share of the batch, and each key's slots.
        let mut shares: HashMap<NodeId, Vec<(Key, Arc<Object>)>> = HashMap::new();
        let mut quorums: Vec<Quorum> = Vec::with_capacity(items.len());
        for (key, object) in items {
            // A key of a bucket this ring does not have is refused with the batch.
            self.bucket_in(&ring, &key)?;
            let w = ring.replication_of(key.as_bytes()).w;
            let placement = ring.placement(key.as_bytes());
            let object = Arc::new(object);
            for slot in placement.slots() {
                shares
                    .entry(slot.clone())
                    .or_default()
                    .push((key.clone(), object.clone()));
            }
            quorums.push(Quorum::new(&placement, w));
        }
        let mut calls = FuturesUnordered::new();
        for (node, share) in shares {
            let coord = self.clone();
            let ring = ring.clone();
            calls.push(async move {
                let to = Addressee::from_me(&ring, &node, &coord.me, coord.storage.uuid());
                // This node's share goes through the same replica side a
                // peer's `transfer` runs.
                let out = if node == coord.me {
                    coord.transfer(to, share).await.map_err(|e| e.to_string())
                } else {
                    let left = deadline.saturating_duration_since(Instant::now());
                    coord
                        .peers
                        .call(&node, left, |c, ctx| async move {
                            c.transfer(ctx, to, share).await
                        })
                        .await
                        .map_err(|e| e.reason())
                };
                (node, out)
            });
        }
        let mut took: Vec<NodeId> = Vec::new();
        let mut failures: Vec<ReplicaFailure> = Vec::new();
        while let Some((node, out)) = calls.next().await {
            match out {
                Ok(_) => took.push(node),
                Err(reason) => failures.push(ReplicaFailure { node, reason }),
            }
        }
        // W of the key's owners, and during a ring change W of its owners
        // after it too: what a put needs.
        for quorum in &mut quorums {
            for node in &took {
                quorum.record(node);
            }
            if !quorum.reached() {
                return Err(Error::WriteQuorum {
                    acked: quorum.counted(),
                    needed: quorum.needed(),
                    failures,
                });
            }
        }
        Ok(u64::try_from(quorums.len()).unwrap_or(u64::MAX))
    }
}
