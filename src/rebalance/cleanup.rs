//! After a ring settles: a member hands off and drops the keys the settled
//! ring gives to others ([`Rebalance::cleanup`]); a node outside the ring
//! drops its copies or keeps them, by how it left ([`Rebalance::outside`]).

use super::*;

impl Rebalance {
    /// What a node outside the ring does with what it holds, by how it left
    /// (see [`crate::ring::Departure`]): a node that left after reporting its
    /// transfer, or whose join was aborted, holds only copies of what the
    /// members hold and drops them, here and without sending anything
    /// (receivers refuse data from outside their ring); a node removed while
    /// it was away keeps everything untouched for the operator; a node that
    /// was never in the ring has nothing to do. Ok(true) if it dropped keys.
    pub(super) async fn outside(
        &self,
        ring: Arc<Ring>,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool, Stop> {
        use crate::ring::DepartureKind;
        let failed = |e: crate::Error| Stop::Failed(e.to_string());
        let departure = ring.state().departure(&self.me, self.storage.uuid());
        match departure.map(|d| d.kind) {
            Some(DepartureKind::Left | DepartureKind::Aborted) => {}
            Some(DepartureKind::Removed) | None => return Ok(false),
        }
        if self.storage.marker(Marker::CleanupDone).map_err(failed)? >= ring.epoch() {
            return Ok(false);
        }
        self.drain(&ring, stop).await?;
        let actor = self.actor(&ring);
        let mut after: Option<ScanCursor> = None;
        let mut dropped = 0u64;
        loop {
            self.check(&ring, stop)?;
            let page = self.scan_page(after.clone()).await?;
            for stored in &page.items {
                // The floor is recorded first: were the node added again on
                // this data directory, it never reissues a counter.
                if self.storage.drop_value(&actor, stored).map_err(failed)? {
                    dropped += 1;
                }
            }
            if !page.more {
                break;
            }
            after = page.last;
        }
        let scan = self.storage.hints().map_err(failed)?;
        for hint in &scan.hints {
            self.storage.remove_hint(hint).map_err(failed)?;
        }
        self.storage
            .set_marker(Marker::CleanupDone, ring.epoch())
            .map_err(failed)?;
        self.storage.durable().await.map_err(failed)?;
        tracing::info!(
            epoch = ring.epoch(),
            dropped,
            hints = scan.hints.len(),
            "this node is no longer in the ring: dropped its copies without handing them off"
        );
        Ok(true)
    }

    /// The actor this node writes under in `ring` (the incarnation it was
    /// admitted as, which the ring keeps after it leaves): the floor a drop
    /// records is for that actor.
    fn actor(&self, ring: &Ring) -> NodeId {
        ring.state()
            .actor(&self.me, self.storage.uuid())
            .unwrap_or_else(|| self.me.clone())
    }

    /// After a settle: every key this node holds that the ring gives to others
    /// goes to all of its owners, then leaves this node's disk.
    pub(super) async fn cleanup(
        &self,
        ring: Arc<Ring>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        self.drain(&ring, stop).await?;
        let failed = |e: crate::Error| Stop::Failed(e.to_string());
        let actor = self.actor(&ring);
        let mut after: Option<ScanCursor> = None;
        let (mut dropped, mut kept) = (0u64, 0u64);
        let mut bucket = Bucket::new(self.rate);
        loop {
            self.check(&ring, stop)?;
            let page = self.scan_page(after.clone()).await?;
            let mut plan = Plan::default();
            let mut leaving: Vec<Stored> = Vec::new();
            for stored in page.items {
                let owners = ring.preference_list(stored.key.as_bytes());
                if owners.contains(&self.me) || owners.is_empty() {
                    continue;
                }
                plan.add(&owners, stored.key.clone(), stored.object.clone());
                leaving.push(stored);
            }
            if !leaving.is_empty() {
                let refused = self
                    .send_plan(&ring, plan, &mut bucket, false, stop)
                    .await?;
                for stored in &leaving {
                    if refused.contains(&stored.key) {
                        // An owner refused it for good: keeping the copy here
                        // is all that keeps it (status names the key).
                        continue;
                    }
                    if self.storage.drop_value(&actor, stored).map_err(failed)? {
                        dropped += 1;
                    } else {
                        // Written meanwhile: the next clean-up pass takes it.
                        kept += 1;
                    }
                }
            }
            if !page.more {
                break;
            }
            after = page.last;
        }
        self.storage.durable().await.map_err(failed)?;
        if dropped > 0 || kept > 0 {
            tracing::info!(
                epoch = ring.epoch(),
                dropped,
                "handed off and dropped keys the settled ring gives to other nodes"
            );
        }
        if kept > 0 {
            return Err(Stop::Failed(format!(
                "{kept} keys changed while being handed off; another pass follows"
            )));
        }
        Ok(())
    }
}
