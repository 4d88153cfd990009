//! The state every part of a node shares: who it is, its store, its
//! connections to other nodes, the ring it has, and what its background work
//! could not hand off. One value, cheap to clone (all `Arc`s but the name),
//! passed to each part when the node starts instead of the same arguments
//! written out in every constructor.
//!
//! Each part keeps the fields it needs; nothing here is locked or mutable on
//! its own: the store, the connection table, the ring cell and the refusals
//! guard their own state.

use std::sync::Arc;

use crate::net::Network;
use crate::peers::{Peers, Refusals};
use crate::ring::RingCell;
use crate::storage::Storage;
use crate::types::NodeId;

/// A node's shared state.
#[derive(Clone)]
pub struct NodeContext {
    /// This node's identity, `HOST:PORT`.
    pub me: NodeId,
    /// Its store.
    pub storage: Arc<Storage>,
    /// Its connections to other nodes, and how it sees their liveness.
    pub peers: Arc<Peers>,
    /// The ring it has.
    pub ring: Arc<RingCell>,
    /// Keys its background work could not hand off because a peer refused
    /// them for good (shown in `status`).
    pub refused: Arc<Refusals>,
}

impl NodeContext {
    /// The context of node `me` over `storage`, with a fresh connection table,
    /// no ring yet and nothing refused.
    pub fn new(me: NodeId, storage: Arc<Storage>) -> NodeContext {
        NodeContext::over(me, storage, Arc::new(crate::net::Tcp))
    }

    /// [`NodeContext::new`] with connections made over `net`.
    pub fn over(me: NodeId, storage: Arc<Storage>, net: Arc<dyn Network>) -> NodeContext {
        NodeContext {
            me,
            storage,
            peers: Arc::new(Peers::over(net, crate::peers::CONNECT_TIMEOUT)),
            ring: Arc::new(RingCell::new()),
            refused: Arc::new(Refusals::default()),
        }
    }
}
