//! The replica side of the request path: what a node does when another node
//! (or a client reading for itself) calls it as a replica. It checks that the
//! call is meant for it (`Addressee`) and, for calls that store data, that the
//! sender is a node of its ring under the identity the ring admitted (a node
//! removed while away, or whose join was aborted, never writes into the ring);
//! then it merges replica writes, hints, transfers and read repairs durably,
//! and answers replica reads. A node that the ring says was removed while it
//! was away serves none of it.

use super::*;

impl Coordinator {
    /// Refuses to serve once the ring says this node was removed while it was
    /// away: its copies may hold versions the ring has deleted since.
    pub(super) fn refuse_if_removed(&self, ring: &Ring) -> Result<()> {
        match ring.state().removed_at(&self.me, self.storage.uuid()) {
            Some(epoch) => Err(Error::Removed {
                node: self.me.clone(),
                epoch,
            }),
            None => Ok(()),
        }
    }

    /// Refuses a call that stores data here unless it comes from a node of
    /// this node's ring (current or target) under the identity the ring
    /// admitted (see [`Addressee`]). A sender whose ring is newer than this
    /// node's may be one this node does not know yet: that is refused as a
    /// stale ring (worth retrying) and this node pulls the ring.
    fn check_sender(&self, ring: Option<&Ring>, to: &Addressee) -> Result<()> {
        let Some(from) = &to.from else {
            return Err(Error::Fenced {
                node: to.node.clone(),
                reason: "the call does not name the node that sends it".into(),
            });
        };
        let Some(ring) = ring else {
            self.ring_news.notify_one();
            return Err(Error::StaleRing {
                node: self.me.clone(),
                sent: from.epoch,
                current: 0,
            });
        };
        self.refuse_if_removed(ring)?;
        if from.epoch > ring.epoch() {
            self.ring_news.notify_one();
        }
        let admitted = ring.identity(&from.node);
        if ring.is_member(&from.node) && admitted.is_none_or(|id| id == from.identity) {
            return Ok(());
        }
        if from.epoch > ring.epoch() {
            return Err(Error::StaleRing {
                node: self.me.clone(),
                sent: from.epoch,
                current: ring.epoch(),
            });
        }
        let reason = if ring.is_member(&from.node) {
            format!(
                "its data directory (identity {}) is not the one the ring admitted there",
                from.identity
            )
        } else {
            match ring.state().departed.get(&from.node) {
                Some(d) => format!(
                    "it is not in the ring at epoch {} ({} at epoch {})",
                    ring.epoch(),
                    d.kind.name(),
                    d.epoch
                ),
                None => format!("it is not in the ring at epoch {}", ring.epoch()),
            }
        };
        Err(Error::Fenced {
            node: from.node.clone(),
            reason,
        })
    }

    /// `Coordinator::check_sender` under the current ring, for calls that
    /// change data outside the request path (a tombstone's removal).
    pub fn check_writer(&self, to: &Addressee) -> Result<()> {
        self.check_addressee(to)?;
        self.check_sender(self.ring.get().as_deref(), to)
    }

    /// How this node names itself in calls that store data under `ring`.
    pub(super) fn addressee(&self, ring: &Ring, node: &NodeId) -> Addressee {
        Addressee::from_me(ring, node, &self.me, self.storage.uuid())
    }

    /// Refuses a node-to-node call meant for another node (see [`Addressee`]).
    pub fn check_addressee(&self, to: &Addressee) -> Result<()> {
        if to.node != self.me {
            return Err(Error::Stranger {
                node: to.node.clone(),
                reason: format!(
                    "the process there runs as {} (started with another --host/--port)",
                    self.me
                ),
            });
        }
        match to.identity {
            Some(id) if id != self.storage.uuid() => Err(Error::Stranger {
                node: to.node.clone(),
                reason: format!(
                    "it has identity {}, the ring knows identity {id} (another data directory)",
                    self.storage.uuid()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Replica side of a write: merge `object` into this node's copy of `key` (or
    /// into the hint for `hint_for`) and answer once it is durable. A write placed
    /// under an older ring than this node's is refused (`epoch` 0 is a delivery of
    /// data already stored elsewhere, and is not checked).
    pub async fn replicate(
        &self,
        to: Addressee,
        epoch: u64,
        key: Key,
        object: &Object,
        hint_for: Option<NodeId>,
    ) -> Result<()> {
        self.check_addressee(&to)?;
        {
            // The ring is held while the write is applied, so a transfer that
            // starts for a newer ring sees this write (RingCell::older_in_use),
            // and a node cannot vouch for a tombstone while it runs.
            let ring = self.ring.get();
            self.check_sender(ring.as_deref(), &to)?;
            self.apply_replica_write(ring.as_deref(), epoch, &key, object, hint_for.as_ref())?;
        }
        self.storage.durable_for(&key).await
    }

    /// Replica side of a batch of writes (see [`crate::outbox`]): each applied
    /// as [`Coordinator::replicate`] applies one, then one flush wait for all;
    /// the answers in the order of `writes`.
    pub async fn replicate_batch(
        &self,
        to: Addressee,
        writes: Vec<ReplicaWrite>,
    ) -> Result<Vec<Result<()>>> {
        self.check_batch(&to, writes.len(), "writes")?;
        let mut answers: Vec<Result<()>> = {
            let ring = self.ring.get();
            self.check_sender(ring.as_deref(), &to)?;
            writes
                .iter()
                .map(|w| {
                    self.apply_replica_write(
                        ring.as_deref(),
                        w.epoch,
                        &w.key,
                        &w.object,
                        w.hint_for.as_ref(),
                    )
                })
                .collect()
        };
        // Keys of memory buckets do not wait for the disk.
        let must_flush = answers
            .iter()
            .zip(&writes)
            .any(|(a, w)| a.is_ok() && !self.storage.is_volatile(&w.key));
        if must_flush {
            if let Err(e) = self.storage.durable().await {
                for a in answers.iter_mut().filter(|a| a.is_ok()) {
                    *a = Err(e.clone());
                }
            }
        }
        Ok(answers)
    }

    /// Checks and applies one replica write under `ring` (held by the caller),
    /// without waiting for the flush.
    fn apply_replica_write(
        &self,
        ring: Option<&Ring>,
        epoch: u64,
        key: &str,
        object: &Object,
        hint_for: Option<&NodeId>,
    ) -> Result<()> {
        check_key(key)?;
        check_copy_size(key, object)?;
        let current = ring.map(|r| r.epoch()).unwrap_or(0);
        if epoch != 0 && epoch < current {
            return Err(Error::StaleRing {
                node: self.me.clone(),
                sent: epoch,
                current,
            });
        }
        if epoch > current {
            self.ring_news.notify_one();
        }
        match hint_for {
            Some(target) if *target != self.me => self.storage.merge_hint(target, key, object),
            _ => self.storage.merge(key, object).map(|_| ()),
        }
    }

    /// Replica side of a read.
    pub fn read_replica(&self, to: &Addressee, key: &str) -> Result<Object> {
        self.read_in(self.ring.get().as_deref(), to, key)
    }

    /// [`Coordinator::read_replica`] under `ring` (taken once by the caller).
    fn read_in(&self, ring: Option<&Ring>, to: &Addressee, key: &str) -> Result<Object> {
        self.check_addressee(to)?;
        check_key(key)?;
        if let Some(ring) = ring {
            self.refuse_if_removed(ring)?;
        }
        if self.storage.restoring() {
            return Err(Error::Restoring {
                node: self.me.clone(),
            });
        }
        self.storage.get(key)
    }

    /// Replica side of a get a client coordinates itself: `read_replica`, only
    /// under the ring `epoch` the client placed the key with. A client whose
    /// ring is older could be reading nodes the key has left; one whose ring is
    /// newer shows this node is behind (it pulls the ring).
    pub fn read_at(&self, to: &Addressee, epoch: u64, key: &str) -> Result<Object> {
        self.read_at_in(self.ring.get().as_deref(), to, epoch, key)
    }

    /// [`Coordinator::read_at`] under `ring` (taken once by the caller).
    fn read_at_in(
        &self,
        ring: Option<&Ring>,
        to: &Addressee,
        epoch: u64,
        key: &str,
    ) -> Result<Object> {
        let current = ring.map_or(0, |r| r.epoch());
        if epoch != current {
            if epoch > current {
                self.ring_news.notify_one();
            }
            return Err(Error::StaleRing {
                node: self.me.clone(),
                sent: epoch,
                current,
            });
        }
        self.read_in(ring, to, key)
    }

    /// The receiving side's checks of a batch (see [`crate::outbox`]): it is
    /// meant for this node and holds at most [`crate::outbox::MAX_ITEMS`]
    /// `what`; else the whole batch is refused.
    fn check_batch(&self, to: &Addressee, len: usize, what: &str) -> Result<()> {
        self.check_addressee(to)?;
        crate::outbox::check_len(len, what)
    }

    /// Replica side of a batch of client reads (see [`crate::outbox`]): each
    /// answered as [`Coordinator::read_at`] answers one, in order.
    pub fn read_batch(&self, to: &Addressee, reads: &[ReplicaRead]) -> Result<Vec<Result<Object>>> {
        self.check_batch(to, reads.len(), "reads")?;
        let ring = self.ring.get();
        Ok(reads
            .iter()
            .map(|r| self.read_at_in(ring.as_deref(), to, r.epoch, &r.key))
            .collect())
    }

    /// Receiving side of a ring change's transfer: merges every object, durably.
    ///
    /// The sender must be a node of this node's ring ([`Addressee`]) whose
    /// ring is not older than this node's: a transfer placed under a ring
    /// this node has replaced (a change since settled or aborted) could bring
    /// back what the newer ring has since deleted, so it is refused as stale
    /// and the sender starts over under the new ring. The ring is held until
    /// the merge is durable, so a tombstone check here waits for it.
    pub async fn transfer(&self, to: Addressee, items: Vec<(Key, Arc<Object>)>) -> Result<u64> {
        self.check_addressee(&to)?;
        check_copies(items.iter().map(|(k, o)| (k, &**o)))?;
        let ring = self.ring.get();
        self.check_sender(ring.as_deref(), &to)?;
        let current = ring.as_ref().map_or(0, |r| r.epoch());
        let sent = to.from.as_ref().map_or(0, |f| f.epoch);
        if sent < current {
            return Err(Error::StaleRing {
                node: self.me.clone(),
                sent,
                current,
            });
        }
        let storage = self.storage.clone();
        let changed = crate::runtime::spawn(move || storage.merge_many(&items))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        self.storage.durable().await?;
        drop(ring);
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    /// Receiving side of a transfer's digest check: the indices of the keys
    /// whose stored object here does not have the sender's digest.
    pub async fn transfer_check(
        &self,
        to: Addressee,
        digests: Vec<(Key, u64)>,
    ) -> Result<Vec<u32>> {
        self.check_addressee(&to)?;
        if digests.len() > MAX_DIGESTS_PER_CHECK {
            return Err(Error::invalid(format!(
                "{} digests in one check, the limit is {MAX_DIGESTS_PER_CHECK}",
                digests.len()
            )));
        }
        for (key, _) in &digests {
            check_key(key)?;
        }
        let storage = self.storage.clone();
        crate::runtime::spawn(move || {
            let mut differ = Vec::new();
            for (i, (key, digest)) in digests.iter().enumerate() {
                if storage.digest(key)? != Some(*digest) {
                    differ.push(u32::try_from(i).unwrap_or(u32::MAX));
                }
            }
            Ok(differ)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }
}

/// Checks each copy a sender asks this node to merge (a transfer, a
/// restore): its key, and its size ([`check_copy_size`]).
pub(super) fn check_copies<'a>(items: impl Iterator<Item = (&'a Key, &'a Object)>) -> Result<()> {
    for (key, object) in items {
        check_key(key)?;
        check_copy_size(key, object)?;
    }
    Ok(())
}

/// Refuses a copy of `key` above [`MAX_COPY_BYTES`] and warns about one above
/// [`MAX_OBJECT_BYTES`] (a merge of concurrent versions; see the limits).
fn check_copy_size(key: &str, object: &Object) -> Result<()> {
    let size = object.approx_size();
    if size > MAX_COPY_BYTES {
        return Err(Error::ObjectTooLarge {
            size,
            limit: MAX_COPY_BYTES,
        });
    }
    if size > MAX_OBJECT_BYTES {
        tracing::warn!(
            key,
            size,
            limit = MAX_OBJECT_BYTES,
            "taking a copy above the object limit (a merge of concurrent versions); \
             get the key and put with its merged context to resolve its siblings"
        );
    }
    Ok(())
}

/// Most keys one `transfer_check` may carry (bounds the receiver's work per call).
pub const MAX_DIGESTS_PER_CHECK: usize = 8192;
