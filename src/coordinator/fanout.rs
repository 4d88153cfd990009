//! The calls of one request in flight ([`Fanout`]), shared by the write and
//! read paths of [`super::Coordinator`]: one attempt per slot, a failed one
//! replaced by the next stand-in.

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::error::{Error, ReplicaFailure};
use crate::peers::{CallError, Peers};
use crate::ring::Placement;
use crate::types::NodeId;
use crate::vclock::Object;

/// One answer to a read.
pub(super) struct Answer {
    pub(super) slot: NodeId,
    pub(super) node: NodeId,
    pub(super) object: Object,
}

/// The outcome of one attempt: the slot it served, the node that served it, and
/// what happened.
pub(super) struct Outcome<T> {
    pub(super) slot: NodeId,
    pub(super) node: NodeId,
    pub(super) result: std::result::Result<T, CallError>,
}

/// The failure recorded for a slot skipped because its node is held down.
pub(super) fn held_down(node: &NodeId) -> ReplicaFailure {
    ReplicaFailure {
        node: node.clone(),
        reason: format!(
            "down: no answer to pings for {} ms (failure detector)",
            crate::peers::DOWN_AFTER.as_millis()
        ),
    }
}

pub(super) type Attempt<T> =
    BoxFuture<'static, (NodeId, NodeId, std::result::Result<T, CallError>)>;
pub(super) type Launch<T> = Box<dyn Fn(NodeId, NodeId) -> Attempt<T> + Send + Sync>;

/// The calls of one request in flight, one per slot: a failed attempt is
/// replaced by the next stand-in, which serves the same slot. Polled by the
/// request until its quorum, then (if attempts remain) in the background. The
/// same machinery serves writes (`T = ()`) and reads (`T = Object`).
pub(super) struct Fanout<T> {
    /// Stand-ins not yet used, next one last.
    fallbacks: Vec<NodeId>,
    pending: FuturesUnordered<Attempt<T>>,
    launch: Launch<T>,
    /// The coordinator's own slot: a local failure is not handed to a stand-in.
    me: NodeId,
}

impl<T: Send + 'static> Fanout<T> {
    /// A fan-out over `placement`'s fallbacks; `skip_me` leaves this node out of
    /// them (a write's coordinator has stored its copy already).
    /// Stand-ins the failure detector holds down are used last.
    pub(super) fn new(
        placement: &Placement,
        me: &NodeId,
        skip_me: bool,
        peers: &Peers,
        launch: Launch<T>,
    ) -> Fanout<T> {
        let mut fallbacks: Vec<NodeId> = placement
            .fallbacks
            .iter()
            .filter(|n| !skip_me || *n != me)
            .cloned()
            .collect();
        // Stable: the ring's order among the live ones and among the down ones.
        fallbacks.sort_by_key(|n| n != me && peers.is_down(n));
        fallbacks.reverse();
        Fanout {
            fallbacks,
            pending: FuturesUnordered::new(),
            launch,
            me: me.clone(),
        }
    }

    /// Starts an attempt on `node` for `slot` (a hint when they differ).
    pub(super) fn push(&mut self, slot: NodeId, node: NodeId) {
        self.pending.push((self.launch)(slot, node));
    }

    /// Adds an attempt made elsewhere (the coordinator's own flush).
    pub(super) fn push_future(&mut self, attempt: Attempt<T>) {
        self.pending.push(attempt);
    }

    /// Sends `slot` to the next stand-in, if any is left.
    pub(super) fn push_fallback(&mut self, slot: NodeId) {
        if let Some(f) = self.fallbacks.pop() {
            self.push(slot, f);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next outcome; a failure starts the slot's next stand-in. A refusal
    /// for a stale ring does not (every node with the newer ring would refuse),
    /// nor does a failure of the coordinator's own copy of its own slot.
    pub(super) async fn next(&mut self) -> Option<Outcome<T>> {
        let (slot, node, result) = self.pending.next().await?;
        if let Err(e) = &result {
            let stale = matches!(e, CallError::Remote(Error::StaleRing { .. }));
            let own = node == self.me && slot == self.me;
            if !own && !stale {
                self.push_fallback(slot.clone());
            }
        }
        Some(Outcome { slot, node, result })
    }

    /// Drives the remaining attempts to completion.
    pub(super) async fn finish(mut self) {
        while self.next().await.is_some() {}
    }
}
