//! Raft's messages over the node's own RPC service: each goes through the
//! node's [`Peers`] (one kept connection per peer, the same dialling seam as
//! every other call) as one of the service's `raft_*` methods, addressed to
//! the receiver's Raft id, which the receiver checks against its own (a node
//! that answers at a voter's address with another data directory is not that
//! voter).

// openraft's network trait fixes the error type (`RPCError`, 360 bytes); the
// helpers here return it as the trait does.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::RingRaft;
use crate::peers::{CallError, Peers};
use crate::types::NodeId;

/// A Raft call's outcome as the receiver answers it.
pub type RaftAnswer<T, E = openraft::error::Infallible> = Result<T, RaftError<u128, E>>;

/// Hands openraft a [`RaftPeer`] per target.
#[derive(Clone)]
pub struct RaftNet {
    pub peers: Arc<Peers>,
}

/// The calls to one Raft peer.
pub struct RaftPeer {
    peers: Arc<Peers>,
    target: u128,
    addr: Option<NodeId>,
    raw_addr: String,
}

impl RaftNetworkFactory<RingRaft> for RaftNet {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u128, node: &BasicNode) -> RaftPeer {
        RaftPeer {
            peers: self.peers.clone(),
            target,
            addr: node.addr.parse().ok(),
            raw_addr: node.addr.clone(),
        }
    }
}

/// How a failed call reaches openraft: never delivered is `Unreachable` (it
/// backs off before the next try), anything else a network error (the call
/// may have landed; openraft retries as its protocol allows).
fn failed<E: std::error::Error>(e: CallError) -> RPCError<u128, BasicNode, RaftError<u128, E>> {
    let reason = std::io::Error::other(e.reason());
    if e.never_delivered() {
        RPCError::Unreachable(Unreachable::new(&reason))
    } else {
        RPCError::Network(NetworkError::new(&reason))
    }
}

impl RaftPeer {
    fn addr<E: std::error::Error>(
        &self,
    ) -> Result<&NodeId, RPCError<u128, BasicNode, RaftError<u128, E>>> {
        self.addr.as_ref().ok_or_else(|| {
            let reason = std::io::Error::other(format!("not a node address: {}", self.raw_addr));
            RPCError::Unreachable(Unreachable::new(&reason))
        })
    }

    fn answer<T, E: std::error::Error>(
        &self,
        out: Result<RaftAnswer<T, E>, CallError>,
    ) -> Result<T, RPCError<u128, BasicNode, RaftError<u128, E>>> {
        match out {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(failed(e)),
        }
    }
}

/// The deadline of one Raft call: openraft's own when it sets one.
fn deadline(option: &RPCOption) -> Duration {
    option.hard_ttl().max(Duration::from_millis(50))
}

impl RaftNetwork<RingRaft> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<RingRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u128>, RPCError<u128, BasicNode, RaftError<u128>>> {
        let addr = self.addr()?.clone();
        let to = self.target;
        let out = self
            .peers
            .call(&addr, deadline(&option), |c, ctx| async move {
                c.raft_append(ctx, to, rpc).await
            })
            .await;
        self.answer(out)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<RingRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u128>,
        RPCError<u128, BasicNode, RaftError<u128, InstallSnapshotError>>,
    > {
        let addr = self.addr()?.clone();
        let to = self.target;
        let out = self
            .peers
            .call(&addr, deadline(&option), |c, ctx| async move {
                c.raft_snapshot(ctx, to, rpc).await
            })
            .await;
        self.answer(out)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u128>,
        option: RPCOption,
    ) -> Result<VoteResponse<u128>, RPCError<u128, BasicNode, RaftError<u128>>> {
        let addr = self.addr()?.clone();
        let to = self.target;
        let out = self
            .peers
            .call(&addr, deadline(&option), |c, ctx| async move {
                c.raft_vote(ctx, to, rpc).await
            })
            .await;
        self.answer(out)
    }
}
