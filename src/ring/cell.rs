//! The ring a node currently uses, shared by the request path and the background
//! tasks. Readers take a cheap `Arc` clone and never hold the lock across an
//! `.await`; a new ring replaces the old one only if its epoch is higher, so a
//! stale push can never roll a node back.

use std::sync::{Arc, RwLock};

use super::{Ring, RingState};

/// Holder of the current [`Ring`] (none before the node has learned one).
#[derive(Default)]
pub struct RingCell {
    current: RwLock<Option<Arc<Ring>>>,
}

impl RingCell {
    /// An empty cell.
    pub fn new() -> RingCell {
        RingCell::default()
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
        *cur = Some(Arc::new(Ring::new(state)));
        true
    }
}
