//! Connections to other nodes: one long-lived tarpc connection per peer, shared by
//! every request, with a deadline on every call.
//!
//! A peer's connection is opened on first use and kept; concurrent first uses share
//! one connect. A connection whose dispatch has ended (the peer closed it) is
//! replaced before anything is sent on it; a call that fails on a connection that
//! was open when it was sent is an unknown outcome (see [`rpc::Connection`]), and
//! the connection is dropped so the next call reconnects.
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
use crate::rpc::{self, Connection, NodeClient};
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
    conn: RwLock<Option<Connection>>,
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

    /// The connection to `node`, opened if needed; one found closed is replaced.
    async fn connection(&self, node: &NodeId) -> Result<Connection, CallError> {
        let peer = self.peer(node);
        let open = |peer: &Peer| {
            read(&peer.conn)
                .as_ref()
                .filter(|c| !c.is_closed())
                .cloned()
        };
        if let Some(c) = open(&peer) {
            return Ok(c);
        }
        let _connecting = peer.connecting.lock().await;
        if let Some(c) = open(&peer) {
            return Ok(c);
        }
        if let Some((at, reason)) = lock(&peer.last_failure).as_ref() {
            if at.elapsed() < RECONNECT_BACKOFF {
                return Err(CallError::Unreachable(reason.clone()));
            }
        }
        match rpc::connect(node, self.connect_timeout).await {
            Ok(c) => {
                *write(&peer.conn) = Some(c.clone());
                *lock(&peer.last_failure) = None;
                Ok(c)
            }
            Err(e) => {
                *write(&peer.conn) = None;
                let reason = match e {
                    Error::Unreachable { reason, .. } => reason,
                    other => other.to_string(),
                };
                *lock(&peer.last_failure) = Some((Instant::now(), reason.clone()));
                Err(CallError::Unreachable(reason))
            }
        }
    }

    /// Drops `conn` from the table unless another call has replaced it already.
    fn forget(&self, node: &NodeId, conn: &Connection) {
        if let Some(p) = read(&self.peers).get(node) {
            let mut slot = write(&p.conn);
            if slot.as_ref().is_some_and(|c| c.same(conn)) {
                *slot = None;
            }
        }
    }

    /// Calls `node` with a deadline of `timeout`: `f` gets the connection and a tarpc
    /// context carrying the deadline. A connection already closed when the call
    /// starts (the peer restarted since it was opened) is replaced first; a call lost
    /// with its connection is reported as an unknown outcome, never resent.
    pub async fn call<T, F, Fut>(
        &self,
        node: &NodeId,
        timeout: Duration,
        f: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(NodeClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = Result<crate::Result<T>, RpcError>>,
    {
        let started = Instant::now();
        let timed_out =
            || CallError::Unknown(format!("timed out after {} ms", timeout.as_millis()));
        let conn = match tokio::time::timeout(timeout, self.connection(node)).await {
            Ok(c) => c?,
            Err(_) => {
                return Err(CallError::Unreachable(format!(
                    "connect timed out after {} ms",
                    timeout.as_millis()
                )))
            }
        };
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, f(conn.client(), rpc::context(remaining))).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(CallError::Remote(e)),
            Ok(Err(RpcError::DeadlineExceeded)) => Err(timed_out()),
            Ok(Err(RpcError::Server(e))) => Err(CallError::Unknown(format!(
                "server aborted the request: {e}"
            ))),
            Ok(Err(e)) => {
                self.forget(node, &conn);
                Err(CallError::Unknown(match e {
                    RpcError::Shutdown => "connection closed by peer during the call".into(),
                    e => format!("connection lost: {e}"),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Reads until the peer has sent something, then returns how much.
    async fn read_some(s: &mut tokio::net::TcpStream) -> usize {
        let mut buf = [0u8; 4096];
        s.read(&mut buf).await.unwrap_or(0)
    }

    /// The address of a bound listener, as a node id.
    fn node_of(listener: &TcpListener) -> NodeId {
        listener.local_addr().unwrap().to_string().parse().unwrap()
    }

    async fn status(peers: &Peers, node: &NodeId) -> Result<crate::rpc::StatusReply, CallError> {
        peers
            .call(node, Duration::from_secs(2), |c, ctx| async move {
                c.status(ctx).await
            })
            .await
    }

    #[tokio::test]
    async fn a_call_lost_with_its_connection_is_unknown_and_not_resent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = node_of(&listener);
        let server = tokio::spawn(async move {
            // The request arrives; the peer dies before answering.
            let (mut s, _) = listener.accept().await.unwrap();
            assert!(read_some(&mut s).await > 0);
            drop(s);
            // Anything resent would be a second connection.
            let again = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
            again.is_ok()
        });
        let peers = Peers::default();
        let e = status(&peers, &node).await.unwrap_err();
        assert!(matches!(e, CallError::Unknown(_)), "{e:?}");
        assert!(!e.never_delivered());
        assert!(!server.await.unwrap(), "the call was sent a second time");
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_call_is_replaced_before_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = node_of(&listener);
        let peers = Peers::default();
        // Open the connection; the peer closes it at once (it restarted).
        let (first, accepted) = tokio::join!(peers.connection(&node), listener.accept());
        let first = first.unwrap();
        drop(accepted.unwrap());
        tokio::time::timeout(Duration::from_secs(2), async {
            while !first.is_closed() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the closed connection is noticed");
        // The next call goes out on a new connection, which receives it.
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_some(&mut s).await
        });
        let e = status(&peers, &node).await.unwrap_err();
        assert!(matches!(e, CallError::Unknown(_)), "{e:?}");
        assert!(
            server.await.unwrap() > 0,
            "the new connection got the request"
        );
    }
}
