//! The ring a node currently uses, shared by the request path and the background
//! tasks. Readers take a cheap `Arc` clone and never hold the lock across an
//! `.await`; a new ring replaces the old one only if its epoch is higher, so a
//! stale push can never roll a node back.
//!
//! The cell also remembers the rings it replaced (weakly), so a ring change's
//! transfer can wait until no request that began under an older ring is still
//! running on this node ([`RingCell::older_in_use`]): from then on every write
//! this node stores was placed with the new ring. Every strong reference to a
//! retired ring counts, so only requests may keep one: a long-lived holder
//! (anti-entropy's cached map) keeps a copy of its own instead.
//! [`RingCell::older_held`] tells who is still waited for, for the log.

use std::sync::{Arc, Mutex, RwLock, Weak};

use super::{Ring, RingState};

/// Holder of the current [`Ring`] (none before the node has learned one).
#[derive(Default)]
pub struct RingCell {
    current: RwLock<Option<Arc<Ring>>>,
    /// The rings replaced, with their epochs.
    retired: Mutex<Vec<(u64, Weak<Ring>)>>,
    /// The last peer seen with a newer epoch than this cell's ring (see
    /// [`RingCell::seen_newer`]).
    newer_at: Mutex<Option<crate::types::NodeId>>,
}

impl RingCell {
    /// An empty cell.
    pub fn new() -> RingCell {
        RingCell::default()
    }

    /// Notes that `peer` has a ring newer than this cell's: a node that does
    /// not know its ring's other members (one that founded a ring of its own
    /// on an empty directory) can ask that peer for it.
    pub fn seen_newer(&self, peer: &crate::types::NodeId) {
        *self.newer_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer.clone());
    }

    /// The peer last noted by [`RingCell::seen_newer`], forgotten as it is taken.
    pub fn take_newer(&self) -> Option<crate::types::NodeId> {
        self.newer_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The current ring.
    pub fn get(&self) -> Option<Arc<Ring>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current epoch (0 before any ring).
    pub fn epoch(&self) -> u64 {
        self.get().map(|r| r.epoch()).unwrap_or(0)
    }

    /// Installs `state` if it is newer than the current ring. Returns true if it was.
    pub fn install(&self, state: RingState) -> bool {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_some_and(|r| r.epoch() >= state.epoch) {
            return false;
        }
        let old = cur.replace(Arc::new(Ring::new(state)));
        drop(cur);
        if let Some(old) = old {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            retired.retain(|(_, w)| w.strong_count() > 0);
            retired.push((old.epoch(), Arc::downgrade(&old)));
        }
        true
    }

    /// True while anything (a request, a task) still holds a ring older than
    /// `epoch`.
    pub fn older_in_use(&self, epoch: u64) -> bool {
        !self.older_held(epoch).is_empty()
    }

    /// Each retired ring older than `epoch` that is still held, as `(its
    /// epoch, how many references hold it)`, oldest first.
    pub fn older_held(&self, epoch: u64) -> Vec<(u64, usize)> {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|(_, w)| w.strong_count() > 0);
        let mut held: Vec<(u64, usize)> = retired
            .iter()
            .filter(|(e, _)| *e < epoch)
            .map(|(e, w)| (*e, w.strong_count()))
            .filter(|(_, n)| *n > 0)
            .collect();
        held.sort_unstable();
        held
    }
}
