//! What a transfer sends and how fast: one scan chunk's plan per receiver
//! ([`Plan`], and [`Checks`] for the digest pass), cut into `transfer` calls
//! of bounded keys and bytes ([`batches`]), under a token bucket of keys per
//! second ([`Bucket`], shared with anti-entropy).

use super::*;

/// One chunk's digest checks, per receiver: key, digest, stored bytes (decoded
/// only if the receiver asks for the object), and whether the item counts for
/// progress (once per key, at its first receiver).
#[derive(Default)]
pub(super) struct Checks {
    pub(super) per_target: BTreeMap<NodeId, Vec<(Key, u64, sled::IVec, bool)>>,
}

impl Checks {
    pub(super) fn add(&mut self, targets: &[NodeId], key: Key, raw: sled::IVec) {
        let digest = entry_digest(key.as_bytes(), &raw);
        for (i, t) in targets.iter().enumerate() {
            self.per_target.entry(t.clone()).or_default().push((
                key.clone(),
                digest,
                raw.clone(),
                i == 0,
            ));
        }
    }
}

/// How `me` sends `key` during the change in `ring`: in which pass, to which
/// pending owners. None when the change does not move the key or its only
/// pending owner is `me`. The first pass when `me` is the key's first replica.
pub(super) fn sending(ring: &Ring, me: &NodeId, key: &str) -> Option<(u8, Vec<NodeId>)> {
    let mut targets = ring.pending_owners(key.as_bytes());
    targets.retain(|n| n != me);
    if targets.is_empty() {
        return None;
    }
    let pass = if ring.owner(key.as_bytes()) == Some(me) {
        PRIMARY_PASS
    } else {
        SECONDARY_PASS
    };
    Some((pass, targets))
}

/// What one scan chunk sends, per receiver. Each key counts once for
/// progress and rate, in the batch of its first receiver.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) per_target: BTreeMap<NodeId, Vec<(Key, Arc<Object>, bool)>>,
}

impl Plan {
    pub(super) fn add(&mut self, targets: &[NodeId], key: Key, object: Arc<Object>) {
        for (i, t) in targets.iter().enumerate() {
            self.per_target.entry(t.clone()).or_default().push((
                key.clone(),
                object.clone(),
                i == 0,
            ));
        }
    }

    /// Makes every item count for no key (copies of keys counted elsewhere).
    pub(super) fn uncounted(&mut self) {
        for items in self.per_target.values_mut() {
            for item in items.iter_mut() {
                item.2 = false;
            }
        }
    }

    /// Cuts each receiver's list into batches ([`batches`]).
    pub(super) fn into_batches(self) -> Vec<Batch> {
        let mut out = Vec::new();
        for (target, items) in self.per_target {
            for items in batches(items, |(key, object, _)| item_size(key, object)) {
                let size: usize = items.iter().map(|(k, o, _)| item_size(k, o)).sum();
                out.push(Batch {
                    target: target.clone(),
                    counted: items.iter().map(|(_, _, counts)| u64::from(*counts)).sum(),
                    bytes: size as u64,
                    items: items.into_iter().map(|(k, o, _)| (k, o)).collect(),
                });
            }
        }
        out
    }
}

/// The bytes one item adds to a `transfer` call.
pub(crate) fn item_size(key: &str, object: &Object) -> usize {
    object.approx_size().saturating_add(key.len())
}

/// Cuts `items` into `transfer` calls of at most [`BATCH_KEYS`] items and
/// [`BATCH_BYTES`] bytes (`size` of each), in order; an item larger than
/// that goes alone.
pub(crate) fn batches<T>(
    items: impl IntoIterator<Item = T>,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut batch: Vec<T> = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let item_bytes = size(&item);
        if !batch.is_empty()
            && (batch.len() >= BATCH_KEYS || bytes.saturating_add(item_bytes) > BATCH_BYTES)
        {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes = bytes.saturating_add(item_bytes);
        batch.push(item);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// One transfer call.
pub(super) struct Batch {
    pub(super) target: NodeId,
    pub(super) items: Vec<(Key, Arc<Object>)>,
    pub(super) bytes: u64,
    /// Keys this batch counts for in progress and rate.
    pub(super) counted: u64,
}

/// A token bucket over keys per second (a rate of 0 never waits).
pub(crate) struct Bucket {
    rate: u64,
    started: Instant,
    taken: u64,
}

impl Bucket {
    pub(crate) fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            started: Instant::now(),
            taken: 0,
        }
    }

    /// Waits until `keys` more keys fit under the rate since the start.
    pub(crate) async fn take(&mut self, keys: u64) {
        if self.rate == 0 || keys == 0 {
            return;
        }
        self.taken = self.taken.saturating_add(keys);
        let due = Duration::from_secs_f64(self.taken as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_key_and_byte_bounds_and_keep_order() {
        let sizes: Vec<usize> = (0..600)
            .map(|i| if i == 10 { BATCH_BYTES * 2 } else { 10 })
            .collect();
        let items: Vec<(usize, usize)> = sizes.iter().copied().enumerate().collect();
        let out = batches(items.clone(), |(_, size)| *size);
        // The oversized item 10 goes alone, between items 0..10 and the rest.
        assert_eq!(out[0].len(), 10);
        assert_eq!(out[1], vec![(10, BATCH_BYTES * 2)]);
        assert!(out.iter().all(|b| !b.is_empty() && b.len() <= BATCH_KEYS));
        for b in &out {
            let bytes: usize = b.iter().map(|(_, s)| s).sum();
            assert!(b.len() == 1 || bytes <= BATCH_BYTES);
        }
        assert_eq!(out.into_iter().flatten().collect::<Vec<_>>(), items);
        assert!(batches(Vec::<(usize, usize)>::new(), |_| 1).is_empty());
    }
}
