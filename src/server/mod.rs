//! The node process: opens storage, loads the ring, serves the RPC port, runs the
//! background tasks, and shuts down gracefully.
//!
//! One listener serves clients and peers alike. Each accepted connection first
//! makes its handshake ([`crate::security`]: a member proves the cluster
//! secret, a client presents its token) in the gate's handshake room
//! ([`crate::security::gate`]), then becomes a tarpc channel served by one task
//! (tracked by a [`TaskTracker`]) that runs the connection's requests
//! concurrently inside itself, at most [`MAX_IN_FLIGHT_PER_CONNECTION`] at a
//! time, each judged by [`crate::security::Access::check`] before it runs. A
//! connection that sends a malformed or oversized frame is closed; nothing a
//! peer sends can stop the listener.
//!
//! With `--http-port`, the HTTP API ([`crate::http`]) runs beside it on the
//! same runtime, over the same coordinator and membership, and stops with it.
//!
//! Shutdown (SIGINT/SIGTERM in the binary, [`NodeHandle::shutdown`] in tests):
//! stop accepting, stop reading new requests, let in-flight requests finish (up to
//! [`SHUTDOWN_GRACE`]), flush sled, return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::antientropy::reaper::Reaper;
use crate::antientropy::AntiEntropy;
use crate::config::{DataDir, NodeConfig};
use crate::consensus::net::RaftAnswer;
use crate::consensus::{Consensus, RingRaft};
use crate::context::NodeContext;
use crate::coordinator::Coordinator;
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::handoff::Handoff;
use crate::membership::{Membership, Reports};
use crate::metrics::{Metrics, Op, Outcome};
use crate::net::{Listener, Network};
use crate::rebalance::Rebalance;
use crate::ring::RingState;
use crate::rpc::{
    self, Addressee, AeAnswer, AeQuery, LocateReply, MembershipReply, Node as _, NodeInfo, Probe,
    ProbeAck, ReadReply, ReplicaRead, ReplicaWrite, StatusReply, TombstoneCheck, WriteReply,
    WriteRequest,
};
use crate::security::gate::Gate;
use crate::security::{wire, Access, Caller, Need, HANDSHAKE_TIMEOUT};
use crate::storage::Storage;
use crate::types::{Key, NodeId};
use crate::vclock::Object;

/// Requests one connection may have in flight; more are answered with an error.
/// A load generator multiplexing many clients over one connection stays under it.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

mod door;
mod handler;

use door::handshake;
use handler::Handler;

/// Everything a request handler needs.
struct State {
    coordinator: Arc<Coordinator>,
    membership: Arc<Membership>,
    anti_entropy: Arc<AntiEntropy>,
    reaper: Arc<Reaper>,
    metrics: Arc<Metrics>,
    detector: Arc<Detector>,
    consensus: Arc<Consensus>,
    access: Arc<Access>,
}

/// A running node.
pub struct NodeHandle {
    /// The node's identity.
    pub id: NodeId,
    /// The address the listener is bound to.
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    main: tokio::task::JoinHandle<Result<()>>,
    /// What the HTTP routes call, kept whether or not the node serves HTTP,
    /// so a caller can drive the routes in process ([`NodeHandle::http_router`]).
    http: crate::http::HttpState,
    detector: Arc<Detector>,
    peers: Arc<crate::peers::Peers>,
    consensus: Arc<Consensus>,
}

impl NodeHandle {
    /// The node's part in the ring's Raft group.
    pub fn consensus(&self) -> &Arc<Consensus> {
        &self.consensus
    }

    /// Asks the node to stop and waits until it has.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the node stops.
    pub async fn wait(self) -> Result<()> {
        self.main
            .await
            .map_err(|e| Error::internal(format!("node task failed: {e}")))?
    }

    /// A sender that stops the node when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// The node's HTTP routes ([`crate::http::router`]) over its coordinator and
    /// membership, to call in process without a socket (the fuzz target
    /// [`crate::fuzz::http_routes`] does); `--http-port` serves the same routes.
    pub fn http_router(&self) -> axum::Router {
        crate::http::router(self.http.clone())
    }

    /// What the node's failure detector has sent and answered so far.
    pub fn detector_stats(&self) -> crate::detector::DetectorStats {
        self.detector.stats()
    }

    /// How the node's failure detector sees `node` now.
    pub fn peer_state(&self, node: &NodeId) -> crate::rpc::NodeState {
        self.peers.state(node)
    }
}

/// Binds `config.listen` and starts the node.
pub async fn start(config: NodeConfig) -> Result<NodeHandle> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::Config {
            reason: format!("cannot listen on {}: {e}", config.listen),
        })?;
    start_on(config, listener).await
}

/// Starts the node on an already bound listener (tests bind `127.0.0.1:0`).
pub async fn start_on(config: NodeConfig, listener: TcpListener) -> Result<NodeHandle> {
    start_over(config, Box::new(listener), Arc::new(crate::net::Tcp)).await
}

/// Starts the node on `listener`, dialling other nodes over `net`: TCP for a
/// real node, a simulated network in tests (see [`crate::net`]).
pub async fn start_over(
    config: NodeConfig,
    listener: Box<dyn Listener>,
    net: Arc<dyn Network>,
) -> Result<NodeHandle> {
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener has no address: {e}")))?;
    let dir = match &config.data_dir {
        DataDir::Path(p) => Some(p.clone()),
        DataDir::InMemory => None,
    };
    let fsync = config.fsync;
    let storage = Arc::new(
        crate::runtime::spawn(move || Storage::open(dir.as_deref(), fsync))
            .await
            .map_err(|e| Error::internal(e.to_string()))??,
    );
    let http_listener = match &config.http_listen {
        None => None,
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| Error::Config {
            reason: format!("cannot listen for HTTP on {addr}: {e}"),
        })?),
    };
    // Every connection to a peer opens with this node's handshake (the Noise
    // handshake keyed by the cluster secret, or the insecure hello).
    let security = config.security.clone();
    if security.is_secure() {
        tracing::info!(
            keys = security.keys.len(),
            admin_token = security.admin.is_some(),
            tls = security.tls.is_some(),
            "secure: members prove the cluster secret, clients present tokens"
        );
    } else {
        tracing::warn!(
            "INSECURE (--insecure): no cluster secret and no tokens; anyone who reaches this \
             node's port can read, write and change the ring"
        );
    }
    let net: Arc<dyn Network> = Arc::new(crate::security::Secured::new(
        net,
        security.peer_hello(),
        None,
    ));
    let node = NodeContext::over(config.id.clone(), storage.clone(), net);
    let access = Arc::new(Access::new(security, node.ring.clone()));
    let ring_news = Arc::new(tokio::sync::Notify::new());
    let rebalance = Arc::new(Rebalance::new(
        &node,
        config.transfer_rate,
        config.copy_timeout,
    ));
    let anti_entropy = Arc::new(AntiEntropy::new(
        &node,
        config.repair_rate,
        config.anti_entropy_interval,
        config.copy_timeout,
    ));
    let reaper = Arc::new(Reaper::new(
        &node,
        config.tombstone_grace,
        config.anti_entropy_interval.is_some(),
    ));
    let reports = {
        let rebalance = rebalance.clone();
        let ae = anti_entropy.clone();
        let reaper = reaper.clone();
        Reports {
            transfer: Arc::new(move || rebalance.progress()),
            anti_entropy: Arc::new(move || {
                let mut stats = ae.stats();
                stats.tombstones_removed = reaper.removed();
                stats
            }),
        }
    };
    let membership = Arc::new(
        Membership::new(
            &node,
            config.leader.clone(),
            config.replication,
            reports,
            ring_news.clone(),
        )
        .with_secure(access.is_secure()),
    );
    let consensus = {
        let weak = Arc::downgrade(&membership);
        let on_ring: crate::consensus::store::OnRing = Arc::new(move |ring| {
            let weak = weak.clone();
            Box::pin(async move {
                if let Some(m) = weak.upgrade() {
                    let epoch = ring.epoch;
                    if let Err(e) = m.install(ring).await {
                        tracing::error!(epoch, error = %e, "cannot install a committed ring");
                    }
                }
            })
        });
        Arc::new(
            Consensus::start(
                config.id.clone(),
                storage.clone(),
                node.peers.clone(),
                Some(on_ring),
            )
            .await?,
        )
    };
    membership.set_consensus(consensus.clone());
    membership.load().await?;
    let background = TaskTracker::new();
    let coordinator = Arc::new(Coordinator::new(
        &node,
        config.leader.clone(),
        config.request_timeout,
        background.clone(),
        ring_news.clone(),
    ));
    let detector = Arc::new(Detector::new(&node, config.ping_interval, ring_news));
    let handoff = Arc::new(Handoff::new(&node));
    let metrics = Metrics::new();
    let state = Arc::new(State {
        coordinator: coordinator.clone(),
        membership: membership.clone(),
        anti_entropy: anti_entropy.clone(),
        reaper: reaper.clone(),
        metrics: metrics.clone(),
        detector: detector.clone(),
        consensus: consensus.clone(),
        access: access.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    background.spawn(metrics.clone().run_upkeep(stop_rx.clone()));
    let http = crate::http::HttpState {
        coordinator,
        membership: membership.clone(),
        metrics,
        access: access.clone(),
    };
    if let Some(listener) = http_listener {
        let addr = listener.local_addr().ok();
        let http = http.clone();
        let stop_http = stop_rx.clone();
        background.spawn(async move {
            if let Err(e) = crate::http::serve(listener, http, stop_http).await {
                tracing::error!(error = %e, "the HTTP server failed");
            }
        });
        tracing::info!(addr = ?addr, "HTTP API listening");
    }
    background.spawn(membership.clone().run_sync(stop_rx.clone()));
    background.spawn(membership.clone().run_transitions(stop_rx.clone()));
    background.spawn(membership.clone().run_leadership(stop_rx.clone()));
    background.spawn(rebalance.run(stop_rx.clone()));
    background.spawn(handoff.run(stop_rx.clone()));
    background.spawn(anti_entropy.run(stop_rx.clone()));
    background.spawn(reaper.run(stop_rx.clone()));
    background.spawn(detector.clone().run(stop_rx.clone()));
    tracing::info!(id = %config.id, addr = %local_addr, fsync = %storage.fsync(), "node listening");
    let main = tokio::spawn(serve(listener, state, storage, stop_rx, background));
    Ok(NodeHandle {
        id: config.id,
        local_addr,
        stop,
        main,
        http,
        detector,
        peers: node.peers.clone(),
        consensus,
    })
}

async fn serve(
    mut listener: Box<dyn Listener>,
    state: Arc<State>,
    storage: Arc<Storage>,
    mut stop: watch::Receiver<bool>,
    background: TaskTracker,
) -> Result<()> {
    let connections_in_flight = TaskTracker::new();
    let gate = Arc::new(Gate::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let gate = gate.clone();
        let mut stop = stop.clone();
        // The connection's requests run inside its own task, up to
        // MAX_IN_FLIGHT_PER_CONNECTION at once: no task spawn and no cross-thread
        // wake-up per request (20% more YCSB A throughput than a task per request,
        // BENCHMARKS.md). After a stop the stream ends and the task finishes the
        // requests already in flight, so tracking the task tracks them.
        connections_in_flight.spawn(async move {
            let Some((stream, caller, _admission)) =
                handshake(stream, peer, &state, &gate, &mut stop).await
            else {
                return;
            };
            let handler = Handler { state, caller };
            BaseChannel::with_defaults(rpc::server_transport(stream))
                .max_concurrent_requests(MAX_IN_FLIGHT_PER_CONNECTION)
                .execute(handler.serve())
                .take_until(async move {
                    let _ = stop.changed().await;
                })
                .for_each_concurrent(MAX_IN_FLIGHT_PER_CONNECTION, |response| response)
                .await;
            tracing::debug!(%peer, "connection closed");
        });
    }
    tracing::info!("shutting down: waiting for in-flight requests");
    drop(listener);
    background.close();
    connections_in_flight.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections_in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish in time");
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, background.wait()).await;
    state.consensus.shutdown().await;
    crate::runtime::spawn(move || storage.flush())
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::handler::unexpired;
    use crate::rpc::context;
    use std::time::Duration;

    /// A call's deadline passes on tokio's clock, not the machine's: under
    /// paused (or simulated) time, a call whose second has passed there is
    /// refused though the machine took no time at all, and one whose second
    /// has not is served though the machine took longer.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_passes_in_tokios_time() {
        let ctx = context(Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(unexpired(&ctx).is_ok());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(unexpired(&ctx).is_err(), "the deadline passed 100 ms ago");

        let ctx = context(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(100));
        assert!(unexpired(&ctx).is_ok(), "no time passed on tokio's clock");
        // tarpc sends the time left on the same clock (and arms its timers
        // from it): 400 ms after a call of one second, 600 ms are left.
        let ctx = context(Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(400)).await;
        let wire = bincode::serialize(&ctx).unwrap();
        let received: tarpc::context::Context = bincode::deserialize(&wire).unwrap();
        let left = received.deadline.duration_since(tarpc::context::now());
        assert_eq!(left, Duration::from_millis(600));
    }
}
