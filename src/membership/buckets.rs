//! `bucket create`, `bucket drop`, `bucket list`: the ring's buckets are part
//! of the ring state (see the `bucket` module of [`crate::ring`]), so a
//! change to them is a ring commit like any other, made by the leader
//! through the ring's Raft group and then pushed to every member. As with
//! `add-node`, a node that is not the leader refuses, naming it.

use super::*;
use crate::ring::{check_bucket_name, Bucket, BucketSpec, Buckets, DEFAULT_BUCKET};
use crate::rpc::{BucketEntry, BucketReply};

impl Membership {
    /// `bucket create NAME [settings]`: a new bucket, or new settings (W, R,
    /// quota, TTL) for an existing one.
    pub async fn bucket_create(&self, name: String, spec: BucketSpec) -> Result<BucketReply> {
        check_changeable(&name)?;
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        let mut buckets = current.buckets.clone();
        let (bucket, action) = match buckets.by_name.get(&name) {
            Some(old) => {
                let new = spec.change(old)?;
                let action = if new == *old { "unchanged" } else { "changed" };
                (new, action)
            }
            None => {
                // N may be at most the members of either side of a running change.
                let members = match &current.transition {
                    Some(t) => current.members.len().min(t.target.len()),
                    None => current.members.len(),
                };
                let b = spec.resolve(current.replication, members, buckets.next_id)?;
                buckets.next_id = buckets
                    .next_id
                    .checked_add(1)
                    .ok_or_else(|| Error::invalid("no bucket ids are left"))?;
                (b, "created")
            }
        };
        let epoch = if action == "unchanged" {
            current.epoch
        } else {
            buckets.by_name.insert(name.clone(), bucket.clone());
            self.commit_buckets(current, buckets).await?
        };
        tracing::info!(bucket = %name, action, epoch, "bucket {action}");
        Ok(BucketReply {
            bucket: entry(&name, &bucket, None),
            action: action.into(),
            epoch,
        })
    }

    /// `bucket drop NAME`: the bucket goes from the ring; every node removes
    /// its keys in the background (`Rebalance`).
    pub async fn bucket_drop(&self, name: String) -> Result<BucketReply> {
        check_changeable(&name)?;
        self.leader_ring()?;
        let _one_at_a_time = self.changes.lock().await;
        let current = self.leader_ring()?;
        let mut buckets = current.buckets.clone();
        let Some(bucket) = buckets.by_name.remove(&name) else {
            return Err(Error::NoSuchBucket { bucket: name });
        };
        let epoch = self.commit_buckets(current, buckets).await?;
        tracing::info!(bucket = %name, epoch, "bucket dropped");
        Ok(BucketReply {
            bucket: entry(&name, &bucket, None),
            action: "dropped".into(),
            epoch,
        })
    }

    /// `bucket list`: the buckets of the ring this node has, `default` first,
    /// each with the size this node estimates for it
    /// ([`Storage::bucket_estimate`], as the quota is checked).
    pub fn bucket_list(&self) -> Result<Vec<BucketEntry>> {
        let ring = self.ring.get().ok_or_else(|| Error::NoRing {
            leader: self.leader(),
        })?;
        let r = ring.replication();
        let default = Bucket {
            id: 0,
            n: r.n,
            w: r.w,
            r: r.r,
            storage: crate::ring::StorageKind::Disk,
            quota: None,
            ttl_ms: None,
        };
        let mut out = vec![entry(DEFAULT_BUCKET, &default, None)];
        for (name, b) in &ring.state().buckets.by_name {
            out.push(entry(
                name,
                b,
                Some(
                    self.storage
                        .bucket_estimate(b.id, ring.share_n(&self.me, b.n)),
                ),
            ));
        }
        Ok(out)
    }

    /// Commits the next epoch of the ring this node leads with `buckets`.
    async fn commit_buckets(&self, current: RingState, buckets: Buckets) -> Result<u64> {
        let next = current.with_buckets(buckets)?;
        let epoch = next.epoch;
        self.commit(current.epoch, next, Vec::new()).await?;
        Ok(epoch)
    }
}

/// Refuses a bad name and `default` (it always exists, with the ring's settings).
fn check_changeable(name: &str) -> Result<()> {
    check_bucket_name(name)?;
    if name == DEFAULT_BUCKET {
        return Err(Error::invalid(
            "the default bucket has the ring's settings (--qsize, --sq-write-n, --sq-read-n) \
             and cannot be created, changed or dropped",
        ));
    }
    Ok(())
}

fn entry(name: &str, b: &Bucket, bytes: Option<u64>) -> BucketEntry {
    BucketEntry {
        name: name.to_string(),
        n: b.n,
        w: b.w,
        r: b.r,
        storage: b.storage,
        quota: b.quota,
        ttl_ms: b.ttl_ms,
        bytes,
    }
}
