//! The detector's shared view: what this node has heard of every node's
//! liveness, and the news it still passes on. Pure: no clock, no network;
//! the detector feeds it what probes and answers carry.
//!
//! The rules are SWIM's (Das, Gupta and Motivala, 2002, §4.2), without its
//! suspect messages (suspicion stays local, see the module above):
//!
//! - Every node has an **incarnation**, a number only it raises. News of a
//!   node is `alive(i)` or `down(i)`.
//! - `alive(i)` replaces what is known of a node if `i` is higher than the
//!   known incarnation; `down(i)` replaces `alive(j)` if `i >= j` and `down(j)`
//!   if `i > j`. So a later word from the node itself (a higher incarnation)
//!   beats a down, and a down beats the alive it was declared against.
//! - A node that hears it is held `down(i)` (a probe or an answer tells it, or
//!   the news reaches it) raises its incarnation above `i` and spreads
//!   `alive`: a live node always clears itself.
//! - Each change of what is known is passed on, a few at a time on every
//!   probe and answer, `retransmit` times (`RETRANSMIT_FACTOR` × log2 of the
//!   ring's size): infection-style dissemination reaches every node in
//!   O(log n) rounds with high probability.

use std::collections::{BTreeMap, HashMap};

use crate::rpc::Rumour;
use crate::types::NodeId;

/// Most pieces of news one probe or answer carries.
pub const MAX_RUMOURS_PER_MESSAGE: usize = 6;
/// Each piece of news is passed on this many times log2 of the ring's size
/// (at least once per member of a small ring).
pub const RETRANSMIT_FACTOR: u32 = 3;

/// What is known of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    incarnation: u64,
    down: bool,
}

/// A change of a node's disseminated state, for the caller to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub node: NodeId,
    pub down: bool,
}

/// One node's view (see the module docs).
#[derive(Debug)]
pub struct Gossip {
    me: NodeId,
    incarnation: u64,
    known: HashMap<NodeId, Known>,
    /// News still to pass on: the node it is about, and how many more times.
    /// What is sent is what is known of it when it is sent.
    pending: BTreeMap<NodeId, u32>,
    retransmit: u32,
}

impl Gossip {
    /// A view with nothing heard yet, at incarnation 0.
    pub fn new(me: NodeId) -> Gossip {
        Gossip {
            me,
            incarnation: 0,
            known: HashMap::new(),
            pending: BTreeMap::new(),
            retransmit: RETRANSMIT_FACTOR,
        }
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// True when the news holds `node` down.
    pub fn is_down(&self, node: &NodeId) -> bool {
        self.known.get(node).is_some_and(|k| k.down)
    }

    /// The incarnation `node` is held down at, if it is: what a probe to it or
    /// an answer to it tells it, so that it can clear itself.
    pub fn held_down_at(&self, node: &NodeId) -> Option<u64> {
        self.known
            .get(node)
            .filter(|k| k.down)
            .map(|k| k.incarnation)
    }

    /// Sizes the retransmission count for a ring of `nodes` and forgets what
    /// is known of nodes no longer in it (`keep` says which are).
    pub fn resize(&mut self, nodes: usize, keep: impl Fn(&NodeId) -> bool) {
        let log2 = usize::BITS - nodes.max(1).leading_zeros();
        self.retransmit = RETRANSMIT_FACTOR * log2.max(1);
        self.known.retain(|n, _| keep(n));
        self.pending.retain(|n, _| *n == self.me || keep(n));
    }

    /// `node` spoke for itself at `incarnation` (it probed us or answered).
    pub fn heard_from(&mut self, node: &NodeId, incarnation: u64) -> Option<Change> {
        self.apply(&Rumour {
            node: node.clone(),
            incarnation,
            down: false,
        })
    }

    /// This node's own probes hold `node` down: declared at the incarnation
    /// known for it. Nothing happens if the news already says so.
    pub fn declare_down(&mut self, node: &NodeId) -> Option<Change> {
        if *node == self.me || self.is_down(node) {
            return None;
        }
        let incarnation = self.known.get(node).map_or(0, |k| k.incarnation);
        self.apply(&Rumour {
            node: node.clone(),
            incarnation,
            down: true,
        })
    }

    /// Someone holds this node down at `incarnation`: rise above it and say
    /// so (nothing if the incarnation is already higher).
    pub fn told_down(&mut self, incarnation: u64) {
        if incarnation >= self.incarnation {
            self.incarnation = incarnation.saturating_add(1);
            self.pending.insert(self.me.clone(), self.retransmit);
        }
    }

    /// Takes in one piece of news; returns the change of the node's state it
    /// makes, if any. News that changes what is known is passed on.
    pub fn apply(&mut self, r: &Rumour) -> Option<Change> {
        if r.node == self.me {
            if r.down {
                self.told_down(r.incarnation);
            } else if r.incarnation > self.incarnation {
                // A word from an earlier life of this node's address: carry on
                // from it, so the next down declared against it is refuted.
                self.incarnation = r.incarnation;
            }
            return None;
        }
        let before = self.known.get(&r.node).copied();
        let newer = match before {
            None => true,
            Some(k) if r.down && !k.down => r.incarnation >= k.incarnation,
            Some(k) => r.incarnation > k.incarnation,
        };
        if !newer {
            return None;
        }
        self.known.insert(
            r.node.clone(),
            Known {
                incarnation: r.incarnation,
                down: r.down,
            },
        );
        // Only news that says something: a first alive at 0 is what every
        // node assumes of every other and is not worth a message.
        if before.is_some() || r.down || r.incarnation > 0 {
            self.pending.insert(r.node.clone(), self.retransmit);
        }
        let was_down = before.is_some_and(|k| k.down);
        (was_down != r.down).then(|| Change {
            node: r.node.clone(),
            down: r.down,
        })
    }

    /// The news to put on the next probe or answer: at most
    /// [`MAX_RUMOURS_PER_MESSAGE`], the least passed on first; each counts as
    /// passed on once more.
    pub fn outgoing(&mut self) -> Vec<Rumour> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<(&NodeId, &u32)> = self.pending.iter().collect();
        order.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let chosen: Vec<NodeId> = order
            .into_iter()
            .take(MAX_RUMOURS_PER_MESSAGE)
            .map(|(n, _)| n.clone())
            .collect();
        let mut out = Vec::with_capacity(chosen.len());
        for node in chosen {
            let rumour = if node == self.me {
                Rumour {
                    node: node.clone(),
                    incarnation: self.incarnation,
                    down: false,
                }
            } else {
                match self.known.get(&node) {
                    Some(k) => Rumour {
                        node: node.clone(),
                        incarnation: k.incarnation,
                        down: k.down,
                    },
                    None => {
                        self.pending.remove(&node);
                        continue;
                    }
                }
            };
            out.push(rumour);
            if let Some(left) = self.pending.get_mut(&node) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.pending.remove(&node);
                }
            }
        }
        out
    }

    /// How many pieces of news are still being passed on.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
