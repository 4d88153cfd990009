//! How bucket commands (`use`, `bucket create`, `bucket drop`, `bucket
//! list`) read, for people and as JSON, and the keys of a bucket's replies
//! shown without the bucket's prefix.

use super::status::bytes_human;
use super::*;
use crate::rpc::{BucketEntry, BucketReply};

impl Outcome {
    /// The outcome with every key it names shown without `prefix` (a
    /// bucket's: see [`crate::types::bucket_key`]).
    pub fn strip_prefix(self, prefix: &str) -> Outcome {
        let strip = |key: &mut Key| {
            if let Some(rest) = key.strip_prefix(prefix) {
                *key = rest.to_string();
            }
        };
        let mut outcome = self;
        match &mut outcome {
            Outcome::Put(reply)
            | Outcome::Delete(reply)
            | Outcome::PutWith(reply, _)
            | Outcome::DeleteWith(reply, _) => strip(&mut reply.key),
            Outcome::Get(reply) | Outcome::GetVerbose(reply) | Outcome::GetWith(reply, _) => {
                strip(&mut reply.key)
            }
            Outcome::Scan(page) => {
                page.keys.iter_mut().for_each(strip);
                if let Some(next) = &mut page.next {
                    strip(next);
                }
            }
            Outcome::Locate(reply) => strip(&mut reply.key),
            _ => {}
        }
        outcome
    }
}

#[derive(Serialize)]
struct JsonBucket<'a> {
    ok: bool,
    bucket: &'a BucketEntry,
    action: &'a str,
    epoch: u64,
}

#[derive(Serialize)]
struct JsonBuckets<'a> {
    ok: bool,
    buckets: &'a [BucketEntry],
}

#[derive(Serialize)]
struct JsonUsing<'a> {
    ok: bool,
    bucket: &'a str,
}

pub(super) fn using_json(bucket: &str) -> serde_json::Result<String> {
    serde_json::to_string(&JsonUsing { ok: true, bucket })
}

pub(super) fn bucket_json(reply: &BucketReply) -> serde_json::Result<String> {
    serde_json::to_string(&JsonBucket {
        ok: true,
        bucket: &reply.bucket,
        action: &reply.action,
        epoch: reply.epoch,
    })
}

pub(super) fn buckets_json(list: &[BucketEntry]) -> serde_json::Result<String> {
    serde_json::to_string(&JsonBuckets {
        ok: true,
        buckets: list,
    })
}

/// `bucket logs created (epoch 9): n=3 w=2 r=2 storage=disk quota=100.0 MB ttl=7d`.
pub(super) fn bucket_human(reply: &BucketReply) -> String {
    format!(
        "bucket {} {} (epoch {}): {}",
        reply.bucket.name,
        reply.action,
        reply.epoch,
        settings(&reply.bucket)
    )
}

fn settings(b: &BucketEntry) -> String {
    let mut out = format!("n={} w={} r={} storage={}", b.n, b.w, b.r, b.storage);
    if let Some(q) = b.quota {
        out.push_str(&format!(" quota={}", size_human(q)));
    }
    if let Some(t) = b.ttl_ms {
        out.push_str(&format!(" ttl={}", ttl_human(t)));
    }
    out
}

/// A quota as it was most likely written: in the largest decimal (`100MB`)
/// or binary (`64MiB`) unit that divides it, else as [`bytes_human`] shows it.
fn size_human(bytes: u64) -> String {
    let units: [(&str, u64); 8] = [
        ("TiB", 1 << 40),
        ("TB", 1_000_000_000_000),
        ("GiB", 1 << 30),
        ("GB", 1_000_000_000),
        ("MiB", 1 << 20),
        ("MB", 1_000_000),
        ("KiB", 1 << 10),
        ("KB", 1000),
    ];
    for (unit, scale) in units {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes_human(bytes)
}

/// A TTL in the largest unit that divides it.
fn ttl_human(ms: u64) -> String {
    for (unit, scale) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % scale == 0 {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

/// One line per bucket, `default` first.
pub(super) fn buckets_human(list: &[BucketEntry]) -> String {
    let width = list
        .iter()
        .map(|b| b.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut lines = vec![format!(
        "{:<width$}  {:>2} {:>2} {:>2}  {:<7} {:>10} {:>6}  {:>10}",
        "BUCKET", "N", "W", "R", "STORAGE", "QUOTA", "TTL", "SIZE"
    )];
    for b in list {
        lines.push(format!(
            "{:<width$}  {:>2} {:>2} {:>2}  {:<7} {:>10} {:>6}  {:>10}",
            b.name,
            b.n,
            b.w,
            b.r,
            b.storage.to_string(),
            b.quota.map_or("-".into(), size_human),
            b.ttl_ms.map_or("-".into(), ttl_human),
            b.bytes
                .map_or("-".into(), |s| format!("~{}", bytes_human(s))),
        ));
    }
    lines.join("\n")
}
