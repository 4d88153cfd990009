//! Removing the keys of dropped buckets (see the `bucket` module of
//! [`crate::ring`]): each node removes what it holds of them in the
//! background, at each new epoch and every [`PURGE_RECHECK`].

use super::*;

/// Keys of a dropped bucket removed per blocking job.
pub const PURGE_CHUNK: usize = 1000;
/// How often a node looks again for keys of dropped buckets on one epoch.
pub(super) const PURGE_RECHECK: Duration = Duration::from_secs(30);

impl Rebalance {
    /// Removes the keys of every bucket the ring dropped that this node still
    /// holds, [`PURGE_CHUNK`] keys at a time.
    pub(super) async fn purge_dropped(&self, stop: &watch::Receiver<bool>) -> Result<(), String> {
        let storage = self.storage.clone();
        let ids = crate::runtime::spawn(move || storage.dropped_ids_held())
            .await
            .map_err(|e| e.to_string())?;
        for id in ids {
            let mut total = 0usize;
            loop {
                if *stop.borrow() {
                    return Ok(());
                }
                let storage = self.storage.clone();
                let n = crate::runtime::spawn(move || storage.purge_bucket(id, PURGE_CHUNK))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                total += n;
                if n == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            tracing::info!(
                bucket_id = id,
                keys = total,
                "removed the keys of a dropped bucket"
            );
        }
        Ok(())
    }
}
