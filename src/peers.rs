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
//! # Liveness
//!
//! The table also keeps each peer's [`Liveness`]: what the failure detector
//! ([`crate::detector`]) learned from probing it itself, and whether the
//! detector's news (other nodes' probes, passed on) holds it down. The request
//! path reads it ([`Peers::state`]) to send a slot whose replica is held `down`
//! straight to a stand-in, and `status` reads it instead of calling a node held
//! down. A peer nobody probed or heard of yet is `alive`: the detector is a
//! hint for routing, never a reason to refuse a request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use tarpc::client::RpcError;

use crate::error::Error;
use crate::rpc::{self, Connection, NodeClient, NodeState};
use crate::types::NodeId;

/// How long to wait for a TCP connect. Loopback and LAN connects take well under a
/// millisecond; a second means the host is gone or partitioned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a peer whose connect failed is left alone before the next attempt.
/// Short enough that a restarted node is used again within a second.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// A peer that has not answered a probe for this long is `suspect`: one probe
/// missed (a failing peer is probed every [`crate::detector::PING_INTERVAL`],
/// each probe giving up after its timeout).
pub const SUSPECT_AFTER: Duration = Duration::from_millis(500);
/// A peer that has not answered a probe for this long is `down`: four probes in a
/// row missed, long enough that a GC pause or a busy moment on a 2-core box does
/// not flap it, short enough that requests stop waiting on it within seconds.
pub const DOWN_AFTER: Duration = Duration::from_secs(2);

/// What the failure detector knows of one peer. Pure: the caller passes the
/// time, so the rules are tested without a clock.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    /// When the first ping of the current run of failures was sent (None while
    /// the last ping was answered, or before the first).
    failing_since: Option<Instant>,
    /// The last failure was a refused connection: nothing listens at the port.
    refused: bool,
    /// When the last answered ping was sent.
    last_ok: Option<Instant>,
    /// Why the last ping failed.
    reason: Option<String>,
    /// The detector's news holds the peer down (another node's probes, or
    /// this node's own, passed on; see [`crate::detector`]).
    reported_down: bool,
}

impl Liveness {
    /// A ping sent at `sent` was answered.
    pub fn answered(&mut self, sent: Instant) {
        self.failing_since = None;
        self.refused = false;
        self.reason = None;
        self.last_ok = Some(sent);
    }

    /// The detector's news now holds the peer down (`true`) or not.
    pub fn reported(&mut self, down: bool) {
        self.reported_down = down;
    }

    /// A ping sent at `sent` failed; `refused` when the connection was refused.
    pub fn failed(&mut self, sent: Instant, refused: bool, reason: String) {
        // An answer to a later ping wins over this late failure.
        if self.last_ok.is_some_and(|ok| ok > sent) {
            return;
        }
        self.failing_since = Some(self.failing_since.map_or(sent, |t| t.min(sent)));
        self.refused = refused;
        self.reason = Some(reason);
    }

    /// The peer's state at `now`: what this node's own pings say while they
    /// are fresh (the last one answered, less than [`DOWN_AFTER`] ago), else
    /// down if the news says so, else what its own pings say. A node that
    /// reaches a peer itself routes to it whatever others say: with a link
    /// cut between two other nodes, each routes by what it sees.
    pub fn state(&self, now: Instant) -> NodeState {
        if self.reported_down && !self.fresh(now) {
            return NodeState::Down;
        }
        self.own_state(now)
    }

    /// True when this node's own last ping was answered less than
    /// [`DOWN_AFTER`] ago.
    fn fresh(&self, now: Instant) -> bool {
        self.failing_since.is_none()
            && self
                .last_ok
                .is_some_and(|t| now.saturating_duration_since(t) < DOWN_AFTER)
    }

    /// The peer's state at `now` from this node's own pings alone.
    pub fn own_state(&self, now: Instant) -> NodeState {
        match self.failing_since {
            None => NodeState::Alive,
            Some(_) if self.refused => NodeState::Down,
            Some(since) if now.saturating_duration_since(since) >= DOWN_AFTER => NodeState::Down,
            Some(since) if now.saturating_duration_since(since) >= SUSPECT_AFTER => {
                NodeState::Suspect
            }
            Some(_) => NodeState::Alive,
        }
    }

    /// True while this node's own last ping of the peer failed: the detector
    /// probes it again every round until its own pings hold it down, then
    /// about once a second until it answers.
    pub fn failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// Why its last ping failed, if it did.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// True when this node's own pings hold the peer down on grounds worth
    /// telling others: it answered once and does no longer, or it has not
    /// answered for [`DOWN_AFTER`]. A refused connection to a peer that never
    /// answered is what every node sees while a ring starts up (a process not
    /// listening yet): down here at once, but not news.
    pub fn down_is_news(&self, now: Instant) -> bool {
        self.own_state(now) == NodeState::Down
            && (self.last_ok.is_some()
                || self
                    .failing_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= DOWN_AFTER))
    }

    /// True once a ping to it has been answered or has failed, or news of it
    /// held it down.
    pub fn known(&self) -> bool {
        self.last_ok.is_some() || self.failing_since.is_some() || self.reported_down
    }
}

/// A request's deadline passed (see [`before`]).
pub struct Expired;

/// `f`'s output, or [`Expired`] once `expired` has fired. A request that waits
/// for several answers keeps one pinned sleep for its deadline and passes it
/// to every wait: one timer per request, not one per wait (tokio's timer wheel
/// is one lock per runtime).
pub async fn before<F: Future>(
    f: F,
    expired: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<F::Output, Expired> {
    tokio::select! {
        biased;
        out = f => Ok(out),
        () = expired => Err(Expired),
    }
}

/// Why a call to a peer did not produce an answer.
#[derive(Clone, Debug)]
pub enum CallError {
    /// The request never reached the peer (connect failed, or backoff).
    Unreachable(String),
    /// The request never reached the peer: nothing listens at its address.
    Refused(String),
    /// The request may or may not have been applied (timeout, lost connection).
    Unknown(String),
    /// The peer answered with an error.
    Remote(Error),
}

impl CallError {
    /// The reason as people read it in quorum errors.
    pub fn reason(&self) -> String {
        match self {
            CallError::Unreachable(r) | CallError::Refused(r) | CallError::Unknown(r) => r.clone(),
            CallError::Remote(e) => e.to_string(),
        }
    }

    /// True when the caller may safely try another node with the same request.
    pub fn never_delivered(&self) -> bool {
        matches!(self, CallError::Unreachable(_) | CallError::Refused(_))
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
    last_failure: Mutex<Option<(Instant, CallError)>>,
    liveness: Mutex<Liveness>,
}

/// Keys a node's background work could not hand to a peer because the peer
/// refused them for good (the same call would be refused again): kept so that
/// `status` can name them, newest last, at most [`Refusals::KEPT`]. The work
/// goes on without them; an operator resolves the key (for an object over the
/// size limit: get it and put with the merged context).
#[derive(Default)]
pub struct Refusals {
    kept: std::sync::Mutex<std::collections::VecDeque<crate::rpc::Refusal>>,
}

impl Refusals {
    /// How many refusals are kept (the oldest go first).
    pub const KEPT: usize = 16;

    /// Records one refusal, and logs it the first time (a hint is tried again
    /// every round).
    pub fn record(&self, key: &str, node: &NodeId, reason: String, during: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let before = kept.len();
        kept.retain(|r| !(r.key == key && r.node == *node && r.during == during));
        if kept.len() == before {
            tracing::error!(
                key,
                %node,
                %reason,
                during,
                "a peer refused a key for good; going on without it (status lists it)"
            );
        }
        if kept.len() >= Self::KEPT {
            kept.pop_front();
        }
        kept.push_back(crate::rpc::Refusal {
            key: key.to_string(),
            node: node.clone(),
            reason,
            during: during.to_string(),
        });
    }

    /// The refusals kept, oldest first.
    pub fn list(&self) -> Vec<crate::rpc::Refusal> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().cloned().collect()
    }
}

/// The connection table.
pub struct Peers {
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    connect_timeout: Duration,
    /// How connections are made (TCP, or a simulated network in tests).
    net: Arc<dyn crate::net::Network>,
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
        Peers::over(Arc::new(crate::net::Tcp), connect_timeout)
    }

    /// An empty table whose connections are made over `net`.
    pub fn over(net: Arc<dyn crate::net::Network>, connect_timeout: Duration) -> Peers {
        Peers {
            peers: RwLock::new(HashMap::new()),
            connect_timeout,
            net,
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
        if let Some((at, failure)) = lock(&peer.last_failure).as_ref() {
            if at.elapsed() < RECONNECT_BACKOFF {
                return Err(failure.clone());
            }
        }
        match rpc::connect_over(self.net.as_ref(), node, self.connect_timeout).await {
            Ok(c) => {
                *write(&peer.conn) = Some(c.clone());
                *lock(&peer.last_failure) = None;
                Ok(c)
            }
            Err(e) => {
                *write(&peer.conn) = None;
                let reason = match e.error {
                    Error::Unreachable { reason, .. } => reason,
                    other => other.to_string(),
                };
                let failure = if e.refused {
                    CallError::Refused(reason)
                } else {
                    CallError::Unreachable(reason)
                };
                *lock(&peer.last_failure) = Some((Instant::now(), failure.clone()));
                Err(failure)
            }
        }
    }

    /// The failure detector's view of `node` now (`alive` if never pinged).
    pub fn state(&self, node: &NodeId) -> NodeState {
        match read(&self.peers).get(node) {
            Some(p) => lock(&p.liveness).state(Instant::now()),
            None => NodeState::Alive,
        }
    }

    /// True if the failure detector holds `node` down.
    pub fn is_down(&self, node: &NodeId) -> bool {
        self.state(node) == NodeState::Down
    }

    /// A copy of what the failure detector knows of `node`.
    pub fn liveness(&self, node: &NodeId) -> Liveness {
        match read(&self.peers).get(node) {
            Some(p) => lock(&p.liveness).clone(),
            None => Liveness::default(),
        }
    }

    /// Records the outcome of a ping to `node` sent at `sent`; returns the
    /// peer's state from this node's own pings afterwards.
    pub fn record_ping<T>(
        &self,
        node: &NodeId,
        sent: Instant,
        outcome: &Result<T, CallError>,
    ) -> NodeState {
        let peer = self.peer(node);
        let mut l = lock(&peer.liveness);
        match outcome {
            Ok(_) => l.answered(sent),
            Err(e) => l.failed(sent, matches!(e, CallError::Refused(_)), e.reason()),
        }
        l.own_state(Instant::now())
    }

    /// Records whether the detector's news holds `node` down.
    pub fn record_reported(&self, node: &NodeId, down: bool) {
        lock(&self.peer(node).liveness).reported(down);
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
        // A timeout on a connection that has answered nothing else for a while
        // gives it up: the next call opens a new one (rpc::SILENT_CONNECTION).
        let silent = |conn: &Connection| {
            if conn.timed_out() {
                tracing::info!(%node, "replacing a connection that has answered nothing for a while");
                self.forget(node, conn);
            }
            timed_out()
        };
        match tokio::time::timeout(remaining, f(conn.client(), rpc::context(remaining))).await {
            Err(_) => Err(silent(&conn)),
            Ok(Ok(Ok(v))) => {
                conn.answered();
                Ok(v)
            }
            Ok(Ok(Err(e))) => {
                conn.answered();
                Err(CallError::Remote(e))
            }
            Ok(Err(RpcError::DeadlineExceeded)) => Err(silent(&conn)),
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

    #[test]
    fn refusals_keep_the_newest_once_each() {
        let r = Refusals::default();
        let node: NodeId = "127.0.0.1:1".parse().unwrap();
        for round in 0..3 {
            r.record("k", &node, format!("too large {round}"), "handoff");
        }
        let kept = r.list();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].reason, "too large 2");
        for i in 0..(Refusals::KEPT + 5) {
            r.record(&format!("k{i}"), &node, "x".into(), "transfer");
        }
        let kept = r.list();
        assert_eq!(kept.len(), Refusals::KEPT);
        assert_eq!(kept.last().unwrap().key, format!("k{}", Refusals::KEPT + 4));
    }
    use tokio::net::TcpListener;

    #[test]
    fn liveness_goes_suspect_then_down_on_misses_and_alive_on_an_answer() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = Liveness::default();
        assert!(!l.known());
        assert_eq!(l.state(t0), NodeState::Alive, "never pinged: alive");

        l.answered(t0);
        // A ping sent at 250 ms is not answered in time.
        l.failed(ms(250), false, "timed out".into());
        assert!(l.failing(), "probed again");
        assert!(!l.down_is_news(ms(250)));
        assert_eq!(l.state(ms(700)), NodeState::Alive);
        assert_eq!(l.state(ms(750)), NodeState::Suspect, "one ping missed");
        // More misses keep the start of the run.
        l.failed(ms(500), false, "timed out".into());
        l.failed(ms(1000), false, "timed out".into());
        assert_eq!(l.state(ms(2249)), NodeState::Suspect);
        assert_eq!(
            l.state(ms(2250)),
            NodeState::Down,
            "no answer for DOWN_AFTER"
        );
        // A late failure of an old ping does not undo a newer answer.
        l.answered(ms(2500));
        l.failed(ms(2000), false, "timed out".into());
        assert_eq!(l.state(ms(5000)), NodeState::Alive);
        // A refused connection: nothing listens, down at once.
        l.failed(ms(5000), true, "connection refused".into());
        assert_eq!(l.state(ms(5000)), NodeState::Down);
        assert_eq!(l.reason(), Some("connection refused"));
        assert!(l.down_is_news(ms(5000)), "it answered before: news");
        // A peer that never answered and refuses: down here, not news.
        let mut fresh = Liveness::default();
        fresh.failed(ms(5000), true, "connection refused".into());
        assert_eq!(fresh.state(ms(5000)), NodeState::Down);
        assert!(!fresh.down_is_news(ms(5000)));
        assert!(
            fresh.down_is_news(ms(7000)),
            "no answer for DOWN_AFTER: news"
        );
        l.answered(ms(5250));
        assert_eq!(l.state(ms(5250)), NodeState::Alive);
        // The news holds it down, but this node's own answer is fresh: its
        // own view stands until the answer is DOWN_AFTER old.
        l.reported(true);
        assert_eq!(l.state(ms(5250)), NodeState::Alive);
        assert_eq!(l.state(ms(7249)), NodeState::Alive);
        assert_eq!(l.state(ms(7250)), NodeState::Down, "stale: the news holds");
        assert_eq!(l.own_state(ms(7250)), NodeState::Alive);
        // A failing ping makes its own view stale at once.
        l.failed(ms(5500), false, "timed out".into());
        assert_eq!(l.state(ms(5500)), NodeState::Down);
        l.answered(ms(5750));
        l.reported(false);
        assert_eq!(l.state(ms(9000)), NodeState::Alive);
    }

    #[tokio::test]
    async fn a_refused_connect_is_typed_and_held_down() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = node_of(&listener);
        drop(listener);
        let peers = Peers::default();
        let sent = Instant::now();
        let out = peers
            .call(&node, Duration::from_secs(1), |c, ctx| async move {
                c.info(ctx).await
            })
            .await;
        assert!(matches!(out, Err(CallError::Refused(_))), "{out:?}");
        peers.record_ping(&node, sent, &out);
        assert!(peers.is_down(&node));
        // The backoff answers with the same typed failure.
        let again = peers
            .call(&node, Duration::from_secs(1), |c, ctx| async move {
                c.info(ctx).await
            })
            .await;
        assert!(matches!(again, Err(CallError::Refused(_))), "{again:?}");
    }

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
