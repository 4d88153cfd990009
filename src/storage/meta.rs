//! The node's own records in the `meta` tree: the ring (format 4, older
//! formats read up one version at a time; saved only over an older epoch),
//! the ring-change markers and the transfer cursor.

use super::*;
use crate::ring::RingStateV4;

impl Storage {
    /// The trees Raft keeps its log (`raft_log`) and its vote and state
    /// machine (`raft_state`) in ([`crate::consensus::store`]).
    pub fn raft_trees(&self) -> Result<(sled::Tree, sled::Tree)> {
        Ok((
            self.db.open_tree("raft_log")?,
            self.db.open_tree("raft_state")?,
        ))
    }

    /// The ring this node last installed.
    pub fn ring(&self) -> Result<Option<RingState>> {
        match self.meta.get(RING_KEY)? {
            Some(raw) => Ok(Some(decode_ring(&raw)?)),
            None => Ok(None),
        }
    }

    /// Persists a ring if its epoch is above the stored one's, atomically (a
    /// compare-and-swap loop on the record), so of two racing saves the newer
    /// always stays. A ring not newer than the stored one is refused with
    /// [`Error::RingNotNewer`]. Call [`Storage::durable`] before relying on it.
    pub fn save_ring(&self, ring: &RingState) -> Result<()> {
        let mut out = vec![RING_FORMAT];
        bincode::serialize_into(&mut out, ring).map_err(Error::storage)?;
        let mut stored = self.meta.get(RING_KEY)?;
        loop {
            if let Some(raw) = &stored {
                let current = decode_ring(raw)?.epoch;
                if ring.epoch <= current {
                    return Err(Error::RingNotNewer {
                        sent: ring.epoch,
                        current,
                    });
                }
            }
            match self
                .meta
                .compare_and_swap(RING_KEY, stored.as_ref(), Some(out.as_slice()))?
            {
                Ok(()) => return Ok(()),
                Err(changed) => stored = changed.current,
            }
        }
    }

    /// The epoch stored under a progress marker (0 when never set).
    pub fn marker(&self, marker: Marker) -> Result<u64> {
        match self.meta.get(marker.key())? {
            Some(raw) => decode(&raw, "meta"),
            None => Ok(0),
        }
    }

    /// Sets a progress marker. Call [`Storage::durable`] before relying on it.
    pub fn set_marker(&self, marker: Marker, epoch: u64) -> Result<()> {
        self.meta.insert(marker.key(), encode(&epoch)?)?;
        Ok(())
    }

    /// How far the transfer of a ring change got: `(epoch, pass, where the
    /// last confirmed chunk ended)`. A record that does not decode reads as
    /// none: the cursor only saves work, and starting over is always safe.
    pub fn transfer_cursor(&self) -> Result<Option<(u64, u8, ScanCursor)>> {
        match self.meta.get(CURSOR_KEY)? {
            Some(raw) => Ok(decode_cursor(&raw)),
            None => Ok(None),
        }
    }

    /// Records how far pass `pass` of the transfer of epoch `epoch` got.
    pub fn set_transfer_cursor(&self, epoch: u64, pass: u8, at: &ScanCursor) -> Result<()> {
        let mut out = vec![CURSOR_FORMAT];
        bincode::serialize_into(&mut out, &(epoch, pass, &at.0)).map_err(Error::storage)?;
        self.meta.insert(CURSOR_KEY, out)?;
        Ok(())
    }
}

/// The ring record as version 1 wrote it (before identities and transitions).
#[derive(serde::Deserialize)]
pub(super) struct RingStateV1 {
    epoch: u64,
    leader: NodeId,
    members: Vec<NodeId>,
    replication: crate::types::Replication,
    tokens_per_node: u32,
}

/// The ring record as version 2 wrote it (before incarnations).
#[derive(serde::Deserialize)]
pub(super) struct RingStateV2 {
    epoch: u64,
    leader: NodeId,
    members: Vec<NodeId>,
    replication: crate::types::Replication,
    tokens_per_node: u32,
    identities: std::collections::BTreeMap<NodeId, uuid::Uuid>,
    transition: Option<crate::ring::Transition>,
}

/// Decodes the transfer cursor record, of version 1 (the key) or
/// [`CURSOR_FORMAT`] (the raw stored key); None if it does not decode.
pub(super) fn decode_cursor(raw: &[u8]) -> Option<(u64, u8, ScanCursor)> {
    match raw.split_first()? {
        (&RECORD_FORMAT, body) => {
            let (epoch, pass, key) = bincode::deserialize::<(u64, u8, String)>(body).ok()?;
            Some((epoch, pass, ScanCursor::at(&key)))
        }
        (&CURSOR_FORMAT, body) => {
            let (epoch, pass, at) = bincode::deserialize::<(u64, u8, Vec<u8>)>(body).ok()?;
            Some((epoch, pass, ScanCursor(at)))
        }
        _ => None,
    }
}

/// The ring record as version 3 wrote it (before departures).
#[derive(serde::Deserialize)]
pub(super) struct RingStateV3 {
    epoch: u64,
    leader: NodeId,
    members: Vec<NodeId>,
    replication: crate::types::Replication,
    tokens_per_node: u32,
    identities: std::collections::BTreeMap<NodeId, uuid::Uuid>,
    transition: Option<crate::ring::Transition>,
    incarnations: std::collections::BTreeMap<NodeId, crate::ring::Incarnation>,
}

/// Decodes the ring record, of version 1 to [`RING_FORMAT`].
pub(super) fn decode_ring(raw: &[u8]) -> Result<RingState> {
    let corrupt = |e: bincode::Error| Error::storage(format!("corrupt ring record: {e}"));
    // An older record is read as the next version up, with what that version
    // added left empty, until it is the current one.
    let v3 = match raw.split_first() {
        Some((&RING_FORMAT, body)) => return bincode::deserialize(body).map_err(corrupt),
        Some((5, body)) => {
            return Ok(RingState::from(
                bincode::deserialize::<crate::ring::RingStateV5>(body).map_err(corrupt)?,
            ))
        }
        Some((4, body)) => {
            return Ok(RingState::from(
                bincode::deserialize::<RingStateV4>(body).map_err(corrupt)?,
            ))
        }
        Some((3, body)) => bincode::deserialize::<RingStateV3>(body).map_err(corrupt)?,
        Some((2, body)) => RingStateV3::from(bincode::deserialize::<RingStateV2>(body).map_err(corrupt)?),
        Some((1, _)) => RingStateV3::from(RingStateV2::from(decode::<RingStateV1>(raw, "meta")?)),
        Some((v, _)) => {
            return Err(Error::storage(format!(
                "the ring record has format version {v}, this dynamo reads versions 1 to {RING_FORMAT}: \
                 was the data written by a newer dynamo?"
            )))
        }
        None => return Err(Error::storage("empty ring record")),
    };
    Ok(RingState::from(RingStateV4 {
        epoch: v3.epoch,
        leader: v3.leader,
        members: v3.members,
        replication: v3.replication,
        tokens_per_node: v3.tokens_per_node,
        identities: v3.identities,
        transition: v3.transition,
        incarnations: v3.incarnations,
        departed: Default::default(),
    }))
}

impl From<RingStateV1> for RingStateV2 {
    fn from(v1: RingStateV1) -> RingStateV2 {
        RingStateV2 {
            epoch: v1.epoch,
            leader: v1.leader,
            members: v1.members,
            replication: v1.replication,
            tokens_per_node: v1.tokens_per_node,
            identities: Default::default(),
            transition: None,
        }
    }
}

impl From<RingStateV2> for RingStateV3 {
    fn from(v2: RingStateV2) -> RingStateV3 {
        RingStateV3 {
            epoch: v2.epoch,
            leader: v2.leader,
            members: v2.members,
            replication: v2.replication,
            tokens_per_node: v2.tokens_per_node,
            identities: v2.identities,
            transition: v2.transition,
            incarnations: Default::default(),
        }
    }
}
