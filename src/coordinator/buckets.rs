//! What the coordinator does for buckets (see the `bucket` module of
//! [`crate::ring`]): naming a bucket's keys, refusing keys of buckets the
//! ring does not have, and the quota.

use super::*;

impl Coordinator {
    /// The prefix the keys of `bucket` are stored under (None for
    /// `default`), by the ring this node has; an unknown bucket is refused.
    pub fn bucket_prefix(&self, bucket: &str) -> Result<Option<String>> {
        if bucket == crate::ring::DEFAULT_BUCKET {
            return Ok(None);
        }
        match self.current_ring()?.bucket(bucket) {
            Some(b) => Ok(Some(crate::types::bucket_prefix(b.id))),
            None => Err(Error::NoSuchBucket {
                bucket: bucket.to_string(),
            }),
        }
    }

    /// The bucket of `key` under `ring` ([`Ring::bucket_of_key`]). A bucket
    /// id this ring has not given yet was made by a newer ring (a client
    /// learned it first): this node pulls the ring at once.
    pub(crate) fn bucket_in<'r>(
        &self,
        ring: &'r Ring,
        key: &str,
    ) -> Result<Option<(&'r str, &'r crate::ring::Bucket)>> {
        let found = ring.bucket_of_key(key);
        if found.is_err()
            && crate::types::split_bucket_key(key)
                .is_some_and(|(id, _)| id >= ring.state().buckets.next_id)
        {
            self.ring_news.notify_one();
        }
        found
    }

    /// Refuses a put of a value into bucket `name` that would take it past
    /// its quota. The bucket's size is estimated from this node's copies
    /// ([`Storage::bucket_estimate`]): it coordinates, so it is one of the
    /// key's replicas (or stands in for one).
    pub(super) fn check_quota(
        &self,
        ring: &Ring,
        name: &str,
        b: &crate::ring::Bucket,
        req: &WriteRequest,
    ) -> Result<()> {
        let (Some(quota), Some(value)) = (b.quota, req.content.value()) else {
            return Ok(());
        };
        let used = self
            .storage
            .bucket_estimate(b.id, ring.share_n(&self.me, b.n));
        let adding = (value.len() + req.key.len()) as u64;
        if used.saturating_add(adding) > quota {
            return Err(Error::QuotaExceeded {
                bucket: name.to_string(),
                used,
                quota,
            });
        }
        Ok(())
    }
}
