//! Connections to other nodes: one long-lived tarpc connection per peer, shared by
//! every request, with a deadline on every call.
//!
//! A peer's connection is opened on first use and kept; concurrent first uses share
//! one connect. When a call finds the connection dead (tarpc reports `Shutdown`
//! or a channel error) the connection is dropped and the next call reconnects.
//! After a failed connect the peer is not dialled again for [`RECONNECT_BACKOFF`]:
//! calls fail at once with the last reason, so a dead replica costs the request
//! path nothing and the coordinator moves on to a stand-in.
//!
//! Call outcomes are split by what the caller may conclude ([`CallError`]): the
//! request surely did not reach the peer, the peer answered with an error, or the
//! outcome is unknown (timeout, connection lost mid-call).
//!
//! Left out: failure detection beyond "the last connect failed" (a later issue
//! adds a detector with suspect/down states).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tarpc::client::RpcError;

use crate::error::Error;
use crate::rpc::{self, NodeClient};
use crate::types::NodeId;

/// How long to wait for a TCP connect. Loopback and LAN connects take well under a
/// millisecond; a second means the host is gone or partitioned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a peer whose connect failed is left alone before the next attempt.
/// Short enough that a restarted node is used again within a second.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// Why a call to a peer did not produce an answer.
#[derive(Clone, Debug)]
pub enum CallError {
    /// The request never reached the peer (connect failed, or backoff).
    Unreachable(String),
    /// The request may or may not have been applied (timeout, lost connection).
    Unknown(String),
    /// The peer answered with an error.
    Remote(Error),
}

impl CallError {
    /// The reason as people read it in quorum errors.
    pub fn reason(&self) -> String {
        match self {
            CallError::Unreachable(r) | CallError::Unknown(r) => r.clone(),
            CallError::Remote(e) => e.to_string(),
        }
    }

    /// True when the caller may safely try another node with the same request.
    pub fn never_delivered(&self) -> bool {
        matches!(self, CallError::Unreachable(_))
    }

    /// Converts to the crate error, naming the node.
    pub fn into_error(self, node: &NodeId) -> Error {
        match self {
            CallError::Remote(e) => e,
            other => Error::Unreachable {
                node: node.clone(),
                reason: other.reason(),
            },
        }
    }
}

#[derive(Default)]
struct Peer {
    client: RwLock<Option<NodeClient>>,
    connecting: tokio::sync::Mutex<()>,
    last_failure: Mutex<Option<(Instant, String)>>,
}

/// The connection table.
pub struct Peers {
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    connect_timeout: Duration,
}

impl Default for Peers {
    fn default() -> Self {
        Peers::new(CONNECT_TIMEOUT)
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl Peers {
    /// An empty table.
    pub fn new(connect_timeout: Duration) -> Peers {
        Peers {
            peers: RwLock::new(HashMap::new()),
            connect_timeout,
        }
    }

    fn peer(&self, node: &NodeId) -> Arc<Peer> {
        if let Some(p) = read(&self.peers).get(node) {
            return p.clone();
        }
        write(&self.peers).entry(node.clone()).or_default().clone()
    }

    /// The connection to `node`, opened if needed.
    pub async fn client(&self, node: &NodeId) -> Result<NodeClient, CallError> {
        let peer = self.peer(node);
        if let Some(c) = read(&peer.client).as_ref() {
            return Ok(c.clone());
        }
        let _connecting = peer.connecting.lock().await;
        if let Some(c) = read(&peer.client).as_ref() {
            return Ok(c.clone());
        }
        if let Some((at, reason)) = lock(&peer.last_failure).as_ref() {
            if at.elapsed() < RECONNECT_BACKOFF {
                return Err(CallError::Unreachable(reason.clone()));
            }
        }
        match rpc::connect(node, self.connect_timeout).await {
            Ok(c) => {
                *write(&peer.client) = Some(c.clone());
                *lock(&peer.last_failure) = None;
                Ok(c)
            }
            Err(e) => {
                let reason = match e {
                    Error::Unreachable { reason, .. } => reason,
                    other => other.to_string(),
                };
                *lock(&peer.last_failure) = Some((Instant::now(), reason.clone()));
                Err(CallError::Unreachable(reason))
            }
        }
    }

    /// Forgets the connection to `node` so the next call reconnects.
    pub fn disconnect(&self, node: &NodeId) {
        if let Some(p) = read(&self.peers).get(node) {
            *write(&p.client) = None;
        }
    }

    /// Calls `node` with a deadline of `timeout`: `f` gets the connection and a tarpc
    /// context carrying the deadline. A connection found dead before the request
    /// left (the peer restarted since it was opened) is replaced and the call made
    /// once more on the new one.
    pub async fn call<T, F, Fut>(
        &self,
        node: &NodeId,
        timeout: Duration,
        f: F,
    ) -> Result<T, CallError>
    where
        F: Fn(NodeClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = Result<crate::Result<T>, RpcError>>,
    {
        let started = Instant::now();
        let timed_out =
            || CallError::Unknown(format!("timed out after {} ms", timeout.as_millis()));
        for attempt in 0..2 {
            let remaining = timeout.saturating_sub(started.elapsed());
            let client = match tokio::time::timeout(remaining, self.client(node)).await {
                Ok(c) => c?,
                Err(_) => {
                    return Err(CallError::Unreachable(format!(
                        "connect timed out after {} ms",
                        timeout.as_millis()
                    )))
                }
            };
            let remaining = timeout.saturating_sub(started.elapsed());
            return match tokio::time::timeout(remaining, f(client, rpc::context(remaining))).await {
                Err(_) => Err(timed_out()),
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err(CallError::Remote(e)),
                Ok(Err(RpcError::DeadlineExceeded)) => Err(timed_out()),
                Ok(Err(RpcError::Server(e))) => Err(CallError::Unknown(format!(
                    "server aborted the request: {e}"
                ))),
                Ok(Err(RpcError::Shutdown)) => {
                    // The connection's dispatch had ended: the peer went away. The
                    // request was not written; reconnect and try once more.
                    self.disconnect(node);
                    if attempt == 0 {
                        continue;
                    }
                    Err(CallError::Unreachable("connection closed by peer".into()))
                }
                Ok(Err(e)) => {
                    self.disconnect(node);
                    Err(CallError::Unknown(format!("connection lost: {e}")))
                }
            };
        }
        Err(CallError::Unreachable("connection closed by peer".into()))
    }
}
