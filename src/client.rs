//! The client library: one connection to one node, a method per command.
//!
//! It depends on the wire contract ([`crate::rpc`]) only. Any node accepts data
//! commands, `status` and `locate`; membership commands must go to the leader (a
//! non-leader answers [`Error::NotLeader`] naming it), and they only start a ring
//! change, which settles in the background. Every call carries a deadline of
//! [`CLIENT_TIMEOUT`]. A connection the node closed since the last call (it
//! restarted) is reopened before the next call is sent; a call lost with its
//! connection fails with an unknown outcome and is never resent (a put may or may
//! not have been applied).

use std::time::Duration;

use tarpc::client::RpcError;

use crate::error::{Error, Result};
use crate::rpc::{
    self, Connection, LocateReply, MembershipReply, NodeClient, ReadReply, StatusReply, WriteReply,
    WriteRequest,
};
use crate::types::{Key, NodeId, Value};
use crate::vclock::{Content, VersionVector};

/// Deadline of one client call: longer than a node's request timeout (2 s) plus a
/// forward to a replica, so the node's own, more precise error arrives first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to one node.
pub struct Client {
    node: NodeId,
    conn: tokio::sync::Mutex<Option<Connection>>,
    timeout: Duration,
}

impl Client {
    /// Connects to `node`.
    pub async fn connect(node: NodeId) -> Result<Client> {
        let c = rpc::connect(&node, CONNECT_TIMEOUT).await?;
        Ok(Client {
            node,
            conn: tokio::sync::Mutex::new(Some(c)),
            timeout: CLIENT_TIMEOUT,
        })
    }

    /// Sets the per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The node this client talks to.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    async fn conn(&self) -> Result<Connection> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *guard = None;
        let c = rpc::connect(&self.node, CONNECT_TIMEOUT).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(NodeClient, tarpc::context::Context) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Result<T>, RpcError>>,
    {
        let conn = self.conn().await?;
        match f(conn.client(), rpc::context(self.timeout)).await {
            Ok(r) => r,
            Err(RpcError::DeadlineExceeded) => Err(Error::Timeout {
                what: format!("no answer from {}", self.node),
                millis: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            Err(e) => {
                let mut guard = self.conn.lock().await;
                if guard.as_ref().is_some_and(|c| c.same(&conn)) {
                    *guard = None;
                }
                Err(Error::Unreachable {
                    node: self.node.clone(),
                    reason: match e {
                        RpcError::Shutdown => {
                            "the connection closed during the call; its outcome is unknown".into()
                        }
                        e => format!("connection lost: {e}; the outcome is unknown"),
                    },
                })
            }
        }
    }

    /// `put KEY CONTEXT VALUE`.
    pub async fn put(&self, key: Key, context: VersionVector, value: Value) -> Result<WriteReply> {
        self.write(WriteRequest {
            key,
            context,
            content: Content::Value(value),
            forwarded: false,
        })
        .await
    }

    /// `delete KEY CONTEXT`.
    pub async fn delete(&self, key: Key, context: VersionVector) -> Result<WriteReply> {
        self.write(WriteRequest {
            key,
            context,
            content: Content::Tombstone,
            forwarded: false,
        })
        .await
    }

    async fn write(&self, req: WriteRequest) -> Result<WriteReply> {
        self.call(|c, ctx| {
            let req = req.clone();
            async move { c.write(ctx, req).await }
        })
        .await
    }

    /// `get KEY`.
    pub async fn get(&self, key: Key) -> Result<ReadReply> {
        self.call(|c, ctx| {
            let key = key.clone();
            async move { c.read(ctx, key).await }
        })
        .await
    }

    /// `add-node HOST:PORT` (leader only).
    pub async fn add_node(&self, node: NodeId) -> Result<MembershipReply> {
        self.call(|c, ctx| {
            let node = node.clone();
            async move { c.add_node(ctx, node).await }
        })
        .await
    }

    /// `remove-node HOST:PORT` (leader only).
    pub async fn remove_node(&self, node: NodeId) -> Result<MembershipReply> {
        self.call(|c, ctx| {
            let node = node.clone();
            async move { c.remove_node(ctx, node).await }
        })
        .await
    }

    /// `status`.
    pub async fn status(&self) -> Result<StatusReply> {
        self.call(|c, ctx| async move { c.status(ctx).await }).await
    }

    /// `locate KEY`: the key's replicas, pending owners and fallbacks (any node).
    pub async fn locate(&self, key: Key) -> Result<LocateReply> {
        self.call(|c, ctx| {
            let key = key.clone();
            async move { c.locate(ctx, key).await }
        })
        .await
    }
}
