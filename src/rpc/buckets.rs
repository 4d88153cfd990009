//! The messages of `bucket create`, `bucket drop` and `bucket list`.

use serde::{Deserialize, Serialize};

/// A bucket as `bucket list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEntry {
    pub name: String,
    pub n: usize,
    pub w: usize,
    pub r: usize,
    pub storage: crate::ring::StorageKind,
    pub quota: Option<u64>,
    pub ttl_ms: Option<u64>,
    /// About how many bytes the bucket's keys take (one copy each), as the
    /// answering node estimates it from the copies it holds (not counted for
    /// `default`, nor in the answer to `bucket create` and `bucket drop`).
    pub bytes: Option<u64>,
}

/// The answer to `bucket create` and `bucket drop`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BucketReply {
    pub bucket: BucketEntry,
    /// `created`, `changed`, `unchanged` or `dropped`.
    pub action: String,
    /// The ring epoch that holds the change.
    pub epoch: u64,
}
