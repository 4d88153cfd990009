//! The client library: a connection to one node, a method per command, and
//! gets coordinated by the client itself.
//!
//! Any node accepts data commands, `status` and `locate`; membership commands
//! must go to the leader (a non-leader answers [`Error::NotLeader`] naming it),
//! and they only start a ring change, which settles in the background. Every call
//! carries a deadline of [`CLIENT_TIMEOUT`]. A connection the node closed since
//! the last call (it restarted) is reopened before the next call is sent; a call
//! lost with its connection fails with an unknown outcome and is never resent (a
//! put may or may not have been applied).
//!
//! # Client-driven reads
//!
//! A get coordinated by a node costs two round trips: client to node, node to the
//! other replicas. A client made with [`Client::connect`] learns the ring from its
//! node (`fetch_ring`) and coordinates a get itself, as the Dynamo paper's
//! client-driven coordination does: it asks every slot of the key's
//! [`Placement`] directly, waits for the same [`Quorum`] of R a node would,
//! merges the answers and repairs the replicas that answered with less, after
//! the reply. One round trip.
//!
//! The reads to one node travel in an outbox ([`crate::outbox`]): one
//! long-lived connection per node, and the reads queued for a node while its
//! last batch is on the way leave together in one `read_batch`. Clients made
//! with [`Client::connect_beside`] share the ring, the connections and the
//! outboxes, so a process with a client per node still sends each node one
//! stream of batches.
//!
//! It never answers from a ring the replicas do not share: each read carries the
//! client's ring epoch and a node under another epoch refuses it, so a client
//! whose ring is old cannot read from nodes a key has left. Whenever the direct
//! read cannot produce its quorum (a stale ring, a replica refilling, replicas
//! down or slow past [`DIRECT_READ_TIMEOUT`], a node it cannot reach) the client
//! asks its node to coordinate the get instead, as a client without a ring does.
//! A read may be asked again; a write may not, so:
//!
//! Writes always go to the client's node. The node knows which replicas its
//! failure detector holds down and forwards around them; a client that sent a
//! put to a hung replica itself could only report "outcome unknown" and may not
//! send it again. (The forward costs a hop only when the node is not a replica
//! of the key; with N equal to the ring's size every node is.) A client with a
//! ring sends them through a third outbox, to its node: the puts and deletes
//! its clients (and those beside it) issue while the last batch is on its way
//! leave together as one `write_batch`, which the node coordinates write by
//! write, all at once, answering each as `write` would. A batch that surely
//! never left fails its writes as unreachable; one lost on the way (the node
//! died, the deadline passed) is an unknown outcome for every write in it, and
//! none is sent again.
//!
//! A client-driven get is counted once in `/metrics`: by the client's node when
//! it is a replica of the key, else by the key's first replica.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tarpc::client::RpcError;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::outbox::{Outboxes, ReadAt, Write};
use crate::peers::{before, CallError, Expired, Peers};
use crate::ring::{Quorum, Ring};
use crate::rpc::{
    self, Addressee, Connection, ExportPage, ExportRequest, LocateReply, MembershipReply,
    NodeClient, ReadReply, ReplicaRead, RequestOption, ScanReply, ScanRequest, StatusReply,
    UserEntry, UserReply, WriteReply, WriteRequest,
};
use crate::types::{check_key, Key, NodeId, Value};
use crate::vclock::{Content, Object, VersionVector};

/// Deadline of one client call: longer than a node's request timeout (2 s) plus a
/// forward to a replica, so the node's own, more precise error arrives first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client-driven get waits for its quorum before it asks its node
/// instead (a node gives each replica the same time before a stand-in).
pub const DIRECT_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Connect timeout of a client's shared connections (to the replicas of a
/// client-driven get, and to its node for writes): a replica that takes longer
/// is left to the node's coordination; a write is refused as unreachable (it
/// was never sent).
const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Least time between two ring fetches (a ring the nodes refuse, or none yet).
const RING_REFRESH_INTERVAL: Duration = Duration::from_millis(200);
/// Read repairs one client runs at once after their replies; past that a repair
/// is dropped (anti-entropy converges the replicas anyway).
const MAX_REPAIRS: usize = 256;

/// What a client presents to the nodes: its token (none on an insecure
/// ring), and TLS if the nodes take clients over TLS.
#[derive(Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub tls: Option<Arc<crate::security::tls::ClientTls>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Credentials {
    /// The network a client with these credentials dials over.
    pub fn network(&self) -> Arc<dyn crate::net::Network> {
        Arc::new(crate::security::Secured::new(
            Arc::new(crate::net::Tcp),
            crate::security::Hello::Client(self.token.clone()),
            self.tls.clone(),
        ))
    }
}

/// A connection to one node.
pub struct Client {
    node: NodeId,
    net: Arc<dyn crate::net::Network>,
    conn: tokio::sync::Mutex<Option<Connection>>,
    timeout: Duration,
    /// Client-driven gets (None: the node coordinates everything).
    direct: Option<Arc<Direct>>,
}

impl Client {
    /// Connects to `node`; gets are coordinated by the client when it can (see
    /// the module docs).
    pub async fn connect(node: NodeId) -> Result<Client> {
        Client::connect_with(node, &Credentials::default()).await
    }

    /// [`Client::connect`] with `credentials`.
    pub async fn connect_with(node: NodeId, credentials: &Credentials) -> Result<Client> {
        let client = Client::connect_via_node_with(node, credentials).await?;
        let client = Client {
            direct: Some(Arc::new(Direct::new(client.net.clone()))),
            ..client
        };
        client.refresh_ring().await;
        Ok(client)
    }

    /// Connects to `node` as another client of `other`'s ring: both share one
    /// ring and one connection per replica for their client-driven gets (a
    /// process that talks to several nodes keeps one connection per node for
    /// its gets, and concurrent gets to a node travel together on it). Writes
    /// go to `node`. If `other` lets its node coordinate, so does this client.
    pub async fn connect_beside(node: NodeId, other: &Client) -> Result<Client> {
        let client = Client::connect_over(node, other.net.clone()).await?;
        let client = Client {
            direct: other.direct.clone(),
            ..client
        };
        if client.direct.is_some() {
            client.refresh_ring().await;
        }
        Ok(client)
    }

    /// Connects to `node`, which coordinates every request.
    pub async fn connect_via_node(node: NodeId) -> Result<Client> {
        Client::connect_via_node_with(node, &Credentials::default()).await
    }

    /// [`Client::connect_via_node`] with `credentials`.
    pub async fn connect_via_node_with(node: NodeId, credentials: &Credentials) -> Result<Client> {
        Client::connect_over(node, credentials.network()).await
    }

    /// A client of `node`, which coordinates every request, dialling over `net`.
    async fn connect_over(node: NodeId, net: Arc<dyn crate::net::Network>) -> Result<Client> {
        let c = rpc::connect_over(net.as_ref(), &node, CONNECT_TIMEOUT).await?;
        Ok(Client {
            node,
            net,
            conn: tokio::sync::Mutex::new(Some(c)),
            timeout: CLIENT_TIMEOUT,
            direct: None,
        })
    }

    /// Sets the per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Lets the work a get left behind end before the client goes: the reads
    /// still on their way when it returned (one may be the read its node
    /// counts in its metrics) and the read repair they lead to. Waits at most
    /// a read's timeout; a process that exits without this drops them.
    pub async fn finish(&self) {
        if let Some(direct) = &self.direct {
            direct.repairs.close();
            let _ = tokio::time::timeout(DIRECT_READ_TIMEOUT, direct.repairs.wait()).await;
        }
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
        let c = rpc::connect_over(self.net.as_ref(), &self.node, CONNECT_TIMEOUT).await?;
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

    /// A put or delete with per-request settings (`put --w N`): coordinated
    /// by the node, which checks them (an empty `opts` is a plain write).
    pub async fn write_with(
        &self,
        req: WriteRequest,
        opts: Vec<RequestOption>,
    ) -> Result<WriteReply> {
        if opts.is_empty() {
            return self.write(req).await;
        }
        self.call(|c, ctx| async move { c.write_with(ctx, req, opts).await })
            .await
    }

    /// `get KEY` with per-request settings (`get --r N`), coordinated by the
    /// node (an empty `opts` is a plain get).
    pub async fn get_with(&self, key: Key, opts: Vec<RequestOption>) -> Result<ReadReply> {
        if opts.is_empty() {
            return self.get(key).await;
        }
        self.call(|c, ctx| async move { c.read_with(ctx, key, opts).await })
            .await
    }

    /// `client backup`: one page of whole objects.
    pub async fn export(&self, req: ExportRequest) -> Result<ExportPage> {
        self.call(|c, ctx| async move { c.export(ctx, req).await })
            .await
    }

    /// `client restore`: merges one batch of objects into the ring.
    pub async fn restore_batch(&self, items: Vec<(Key, Object)>) -> Result<u64> {
        self.call(|c, ctx| async move { c.restore_batch(ctx, items).await })
            .await
    }

    /// `scan`: one page of keys in key order.
    pub async fn scan(&self, req: ScanRequest) -> Result<ScanReply> {
        self.call(|c, ctx| async move { c.scan(ctx, req).await })
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

    /// A put or delete: through the shared write outbox to the node when the
    /// client has one (see the module docs), else as a call of its own.
    async fn write(&self, req: WriteRequest) -> Result<WriteReply> {
        let Some(direct) = &self.direct else {
            return self
                .call(|c, ctx| {
                    let req = req.clone();
                    async move { c.write(ctx, req).await }
                })
                .await;
        };
        let to = Addressee {
            node: self.node.clone(),
            identity: None,
            from: None,
        };
        match direct.writes.send(to, req, self.timeout).await {
            Ok(reply) => Ok(reply),
            Err(CallError::Remote(e)) => Err(e),
            // Sent, maybe applied: say so, and never send it again.
            Err(CallError::Unknown(reason)) => Err(Error::Unreachable {
                node: self.node.clone(),
                reason: format!("{reason}; the outcome is unknown"),
            }),
            // Never sent (refused at connect, unreachable, queue full).
            Err(e) => Err(e.into_error(&self.node)),
        }
    }

    /// `get KEY`: coordinated by the client when it can, else by its node.
    pub async fn get(&self, key: Key) -> Result<ReadReply> {
        if let Some(direct) = &self.direct {
            check_key(&key)?;
            if let Some(ring) = self.ring().await {
                match direct.clone().read(ring, key.clone(), &self.node).await {
                    Ok(reply) => return Ok(reply),
                    Err(why) => {
                        tracing::debug!(%key, %why, "client-driven get fell back to the node");
                        if matches!(why, Fallback::StaleRing) {
                            self.refresh_ring().await;
                        }
                    }
                }
            }
        }
        self.call(|c, ctx| {
            let key = key.clone();
            async move { c.read(ctx, key).await }
        })
        .await
    }

    /// The ring client-driven gets use, fetched from the node when the client
    /// has none yet.
    async fn ring(&self) -> Option<Arc<Ring>> {
        let direct = self.direct.as_ref()?;
        if let Some(ring) = direct.ring() {
            return Some(ring);
        }
        self.refresh_ring().await;
        direct.ring()
    }

    /// Asks the node for its ring (at most once per [`RING_REFRESH_INTERVAL`]).
    /// Without an answer the client keeps what it had.
    async fn refresh_ring(&self) {
        let Some(direct) = &self.direct else { return };
        if !direct.may_fetch() {
            return;
        }
        match self
            .call(|c, ctx| async move { c.fetch_ring(ctx).await })
            .await
        {
            Ok(Some(state)) if !state.members.is_empty() => direct.set_ring(Ring::new(state)),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "no ring from the node"),
        }
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

    /// `abort-change` (leader only).
    pub async fn abort_change(&self) -> Result<MembershipReply> {
        self.call(|c, ctx| async move { c.abort_change(ctx).await })
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

    /// `user add NAME ROLE` (admin): the answer carries the new token.
    pub async fn user_add(&self, name: String, role: crate::types::Role) -> Result<UserReply> {
        self.call(|c, ctx| async move { c.user_add(ctx, name, role).await })
            .await
    }

    /// `user list` (admin).
    pub async fn user_list(&self) -> Result<Vec<UserEntry>> {
        self.call(|c, ctx| async move { c.user_list(ctx).await })
            .await
    }

    /// `user remove NAME` (admin).
    pub async fn user_remove(&self, name: String) -> Result<UserReply> {
        self.call(|c, ctx| async move { c.user_remove(ctx, name).await })
            .await
    }

    /// `bucket create NAME [settings]` (admin, at the leader).
    pub async fn bucket_create(
        &self,
        name: String,
        spec: crate::ring::BucketSpec,
    ) -> Result<crate::rpc::BucketReply> {
        self.call(|c, ctx| {
            let (name, spec) = (name.clone(), spec.clone());
            async move { c.bucket_create(ctx, name, spec).await }
        })
        .await
    }

    /// `bucket drop NAME` (admin, at the leader).
    pub async fn bucket_drop(&self, name: String) -> Result<crate::rpc::BucketReply> {
        self.call(|c, ctx| {
            let name = name.clone();
            async move { c.bucket_drop(ctx, name).await }
        })
        .await
    }

    /// `bucket list`.
    pub async fn bucket_list(&self) -> Result<Vec<crate::rpc::BucketEntry>> {
        self.call(|c, ctx| async move { c.bucket_list(ctx).await })
            .await
    }

    /// The prefix the ring stores the keys of `bucket` under (None for
    /// `default`, whose keys are stored as written): see
    /// [`crate::types::bucket_key`]. Asks the node for its ring when the
    /// client's does not have the bucket (it may be new).
    pub async fn bucket_prefix(&self, bucket: &str) -> Result<Option<String>> {
        if bucket == crate::ring::DEFAULT_BUCKET {
            return Ok(None);
        }
        let known = |ring: &Ring| {
            ring.bucket(bucket)
                .map(|b| crate::types::bucket_prefix(b.id))
        };
        if let Some(prefix) = self.ring().await.as_deref().and_then(known) {
            return Ok(Some(prefix));
        }
        let state = self
            .call(|c, ctx| async move { c.fetch_ring(ctx).await })
            .await?;
        let ring = state.map(Ring::new);
        match ring.as_ref().and_then(known) {
            Some(prefix) => {
                if let (Some(direct), Some(ring)) = (&self.direct, ring) {
                    direct.set_ring(ring);
                }
                Ok(Some(prefix))
            }
            None => Err(Error::NoSuchBucket {
                bucket: bucket.to_string(),
            }),
        }
    }
}

/// Why a client-driven get handed the request to the node.
#[derive(Debug)]
enum Fallback {
    /// A replica is under another ring than the client's.
    StaleRing,
    /// Too few replicas answered in time (down, refilling, unreachable).
    NoQuorum { answered: usize, needed: usize },
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::StaleRing => write!(f, "a replica is under another ring"),
            Fallback::NoQuorum { answered, needed } => {
                write!(f, "{answered} of {needed} replicas answered in time")
            }
        }
    }
}

/// One replica's answer to a client-driven get.
type Answer = (NodeId, std::result::Result<Object, CallError>);

/// What a client keeps to coordinate gets and batch its writes: the ring, a
/// connection per node, and per node an outbox that coalesces the reads sent
/// to it and one that coalesces the client's writes to it.
struct Direct {
    peers: Arc<Peers>,
    reads: Outboxes<ReadAt>,
    writes: Outboxes<Write>,
    ring: RwLock<Option<Arc<Ring>>>,
    last_fetch: Mutex<Option<Instant>>,
    /// Read repairs: they also carry the reads still on their way when a get
    /// returned, the one counted in its node's metrics among them.
    repairs: TaskTracker,
    repair_permits: Arc<Semaphore>,
}

impl Direct {
    fn new(net: Arc<dyn crate::net::Network>) -> Direct {
        let peers = Arc::new(Peers::over(net, DIRECT_CONNECT_TIMEOUT));
        let tasks = TaskTracker::new();
        Direct {
            reads: Outboxes::new(peers.clone(), tasks.clone()),
            writes: Outboxes::new(peers.clone(), tasks),
            peers,
            ring: RwLock::new(None),
            last_fetch: Mutex::new(None),
            repairs: TaskTracker::new(),
            repair_permits: Arc::new(Semaphore::new(MAX_REPAIRS)),
        }
    }

    fn ring(&self) -> Option<Arc<Ring>> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_ring(&self, ring: Ring) {
        let mut slot = self.ring.write().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|r| r.epoch() <= ring.epoch()) {
            *slot = Some(Arc::new(ring));
        }
    }

    /// True (and the time noted) if no fetch ran in the last interval.
    fn may_fetch(&self) -> bool {
        let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < RING_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Asks every slot of `key` under `ring` and answers once R of them (R of
    /// each side during a ring change) have answered. The get is counted in the
    /// metrics of `home` (the client's node) when it is a slot, else of the
    /// first slot.
    async fn read(
        self: Arc<Self>,
        ring: Arc<Ring>,
        key: Key,
        home: &NodeId,
    ) -> std::result::Result<ReadReply, Fallback> {
        let placement = ring.placement(key.as_bytes());
        let counter = if placement.is_slot(home) {
            home.clone()
        } else {
            placement
                .slots()
                .next()
                .cloned()
                .unwrap_or_else(|| home.clone())
        };
        let mut quorum = Quorum::new(&placement, ring.replication_of(key.as_bytes()).r);
        let epoch = ring.epoch();
        let mut pending: FuturesUnordered<BoxFuture<'static, Answer>> = FuturesUnordered::new();
        // One deadline and one timer for the whole get (the outbox's answers
        // have none of their own).
        let deadline = Instant::now() + DIRECT_READ_TIMEOUT;
        for slot in placement.slots() {
            let (this, to, key, slot) = (
                self.clone(),
                Addressee::in_ring(&ring, slot),
                key.clone(),
                slot.clone(),
            );
            let count = slot == counter;
            pending.push(Box::pin(async move {
                let read = ReplicaRead { epoch, key, count };
                let r = match this.reads.enqueue(to, read, deadline).await {
                    Ok(answer) => answer.await,
                    Err(e) => Err(e),
                };
                (slot, r)
            }));
        }
        let expired = tokio::time::sleep_until(deadline);
        tokio::pin!(expired);
        let mut answers: Vec<(NodeId, Object)> = Vec::new();
        while !quorum.reached() {
            match before(pending.next(), expired.as_mut()).await {
                Ok(Some((slot, Ok(object)))) => {
                    quorum.record(&slot);
                    answers.push((slot, object));
                }
                Ok(Some((_, Err(CallError::Remote(Error::StaleRing { .. }))))) => {
                    return Err(Fallback::StaleRing)
                }
                Ok(Some((_, Err(_)))) => {}
                Ok(None) | Err(Expired) => {
                    return Err(Fallback::NoQuorum {
                        answered: quorum.counted(),
                        needed: quorum.needed(),
                    })
                }
            }
        }
        let mut merged = Object::new();
        for (_, object) in &answers {
            merged.merge(object);
        }
        let reply = ReadReply::from_merged(
            key.clone(),
            &merged,
            answers.iter().map(|(n, _)| n.clone()).collect(),
            crate::runtime::now_ms(),
        );
        // Answers already in need no task to wait for them: under load the
        // last replica's often is, and then a get whose copies agree is done.
        while let Some(Some((node, result))) = pending.next().now_or_never() {
            if let Ok(object) = result {
                merged.merge(&object);
                answers.push((node, object));
            }
        }
        let consistent = answers.iter().all(|(_, o)| *o == merged);
        if !pending.is_empty() || !consistent {
            if let Ok(permit) = self.repair_permits.clone().try_acquire_owned() {
                let this = self.clone();
                let home = home.clone();
                self.repairs.spawn(async move {
                    this.repair(ring, home, key, merged, answers, pending).await;
                    drop(permit);
                });
            }
        }
        Ok(reply)
    }

    /// Read repair after a client-driven get: waits for the answers still on
    /// their way and, if any replica answered with less than the merge, asks
    /// the client's node to read the key, which repairs them.
    async fn repair(
        &self,
        ring: Arc<Ring>,
        node: NodeId,
        key: Key,
        mut merged: Object,
        mut answers: Vec<(NodeId, Object)>,
        mut pending: FuturesUnordered<BoxFuture<'static, Answer>>,
    ) {
        let expired = tokio::time::sleep(DIRECT_READ_TIMEOUT);
        tokio::pin!(expired);
        while let Ok(Some((node, result))) = before(pending.next(), expired.as_mut()).await {
            if let Ok(object) = result {
                merged.merge(&object);
                answers.push((node, object));
            }
        }
        if merged.is_empty() {
            return;
        }
        if answers.iter().all(|(_, o)| *o == merged) {
            return;
        }
        // A client is not a node of the ring, and nodes take copies only from
        // nodes of their ring (a client's copy may be older than a delete the
        // ring has since finished): its node reads the key itself, which
        // repairs every replica whose copy differs.
        drop(ring);
        let r = self
            .peers
            .call(&node, DIRECT_READ_TIMEOUT, |c, ctx| async move {
                c.read(ctx, key).await
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(%node, reason = %e.reason(), "client read repair failed");
        }
    }
}
