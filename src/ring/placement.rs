//! Where a key lives in one epoch ([`Placement`]) and when enough of those
//! nodes have answered ([`Quorum`]).
//!
//! A placement names *slots*: the key's replicas (its owners in the current
//! ring) and, while a ring change runs, its pending owners (owners in the
//! target ring that are not replicas now). Each slot is served by the node
//! itself or, when it fails, by a stand-in from `fallbacks` holding a hint;
//! an answer counts for the slot it was sent for.
//!
//! A quorum of `need` is reached when `need` slots of the current owners have
//! answered and, during a change, `need` slots of the target owners as well
//! (a slot may count for both: a node that owns the key before and after).
//! This is the rule that keeps ring changes safe: a write acknowledged during
//! a change is on a write quorum of whichever ring ends up owning the key,
//! and a read sees it from either.

use crate::types::NodeId;

/// The nodes that hold a key in one epoch, in the order they are tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The key's preference list in the current ring: the nodes that own it now.
    pub replicas: Vec<NodeId>,
    /// Owners in the target ring of a running change that are not replicas
    /// now, in the target preference list's order (empty when no change runs).
    pub pending: Vec<NodeId>,
    /// Stand-ins for slots that fail, nearest first.
    pub fallbacks: Vec<NodeId>,
    /// The owners once the change settles (None when no change runs).
    next: Option<Vec<NodeId>>,
}

impl Placement {
    /// A placement with no change running.
    pub fn settled(replicas: Vec<NodeId>, fallbacks: Vec<NodeId>) -> Placement {
        Placement {
            replicas,
            pending: Vec::new(),
            fallbacks,
            next: None,
        }
    }

    /// A placement during a change: `next` are the owners after it.
    pub fn moving(
        replicas: Vec<NodeId>,
        pending: Vec<NodeId>,
        next: Vec<NodeId>,
        fallbacks: Vec<NodeId>,
    ) -> Placement {
        Placement {
            replicas,
            pending,
            fallbacks,
            next: Some(next),
        }
    }

    /// True while a change runs (even if it does not move this key).
    pub fn in_transition(&self) -> bool {
        self.next.is_some()
    }

    /// True if the running change gives this key other owners.
    pub fn moves(&self) -> bool {
        match &self.next {
            Some(next) => {
                next.len() != self.replicas.len() || next.iter().any(|n| !self.replicas.contains(n))
            }
            None => false,
        }
    }

    /// The owners once the change settles (the replicas when none runs).
    pub fn owners_after(&self) -> &[NodeId] {
        self.next.as_deref().unwrap_or(&self.replicas)
    }

    /// Every slot: the replicas, then the pending owners.
    pub fn slots(&self) -> impl Iterator<Item = &NodeId> {
        self.replicas.iter().chain(&self.pending)
    }

    /// True if `node` is a slot (a replica or a pending owner).
    pub fn is_slot(&self, node: &NodeId) -> bool {
        self.replicas.contains(node) || self.pending.contains(node)
    }

    /// The nodes that may coordinate a write, in order: replicas first (they
    /// hold the key's data), then pending owners.
    pub fn coordinators(&self) -> impl Iterator<Item = &NodeId> {
        self.slots()
    }

    fn counts_now(&self, slot: &NodeId) -> bool {
        self.replicas.contains(slot)
    }

    fn counts_next(&self, slot: &NodeId) -> bool {
        self.owners_after().contains(slot)
    }
}

/// Counts answers per slot until `need` current owners and (during a change)
/// `need` target owners have answered.
#[derive(Clone, Debug)]
pub struct Quorum {
    need: usize,
    /// Each slot, whether it counts now and after the change, and whether it
    /// has answered.
    slots: Vec<(NodeId, bool, bool, bool)>,
    moving: bool,
}

impl Quorum {
    /// A quorum of `need` over `placement`'s slots.
    pub fn new(placement: &Placement, need: usize) -> Quorum {
        Quorum {
            need,
            slots: placement
                .slots()
                .map(|s| {
                    (
                        s.clone(),
                        placement.counts_now(s),
                        placement.counts_next(s),
                        false,
                    )
                })
                .collect(),
            moving: placement.in_transition(),
        }
    }

    /// Records an answer for `slot` (once per slot; unknown slots are
    /// ignored). Returns true when the quorum is reached.
    pub fn record(&mut self, slot: &NodeId) -> bool {
        if let Some(entry) = self.slots.iter_mut().find(|(s, ..)| s == slot) {
            entry.3 = true;
        }
        self.reached()
    }

    /// Answers among the current owners.
    pub fn now(&self) -> usize {
        self.slots
            .iter()
            .filter(|(_, now, _, a)| *now && *a)
            .count()
    }

    /// Answers among the owners after the change (the current owners when no
    /// change runs).
    pub fn next(&self) -> usize {
        self.slots
            .iter()
            .filter(|(_, _, next, a)| *next && *a)
            .count()
    }

    /// The answers that count, for errors: during a change the smaller of
    /// the two sides.
    pub fn counted(&self) -> usize {
        if self.moving {
            self.now().min(self.next())
        } else {
            self.now()
        }
    }

    /// How many answers each side needs.
    pub fn needed(&self) -> usize {
        self.need
    }

    /// True once both sides have `need` answers.
    pub fn reached(&self) -> bool {
        self.now() >= self.need && (!self.moving || self.next() >= self.need)
    }
}
