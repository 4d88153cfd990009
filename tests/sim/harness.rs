//! A simulated cluster: real nodes (`dynamo::server::start_over`) on turmoil's
//! hosts, driven one step at a time by the test thread.
//!
//! The test thread owns the [`turmoil::Sim`]. Work that must run inside the
//! simulation (a client call to a node) is sent to one client host, the
//! driver, which runs each job as its own task; [`Cluster::call`] then steps
//! the simulation until that job answers. Faults (partitions, held links,
//! crashes, restarts) are the test thread's own calls between two steps, so
//! the order of everything is the seed's.
//!
//! Storage is sled in a temporary directory per host (the host's "disk"): a
//! crash drops the node's process and keeps the directory, so a restart finds
//! what the node had written; a restart `wiped` starts on an empty directory.
//! Every write sled has accepted is on that disk (nothing is lost in a crash):
//! the simulation says nothing about torn or unflushed writes on power loss,
//! which the real-process tests cover.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dynamo::config::{Flags, NodeConfig};
use dynamo::net::{BoxStream, Listener, Network};
use dynamo::rpc::{NodeClient, StatusReply, WriteRequest};
use dynamo::types::NodeId;
use dynamo::vclock::{Content, VersionVector};
use futures::future::BoxFuture;

use super::traffic::{entry, Counted, Role, SENT};
pub use super::traffic::{traffic, Traffic, METHODS};
use tokio::sync::{mpsc, oneshot};

pub const PORT: u16 = 13337;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Outcome = Result<String, String>;
type Job = (BoxFuture<'static, Outcome>, oneshot::Sender<Outcome>);

/// turmoil's network, as node `host` dials it.
struct SimNet {
    host: Arc<str>,
}

impl Network for SimNet {
    fn dial<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let inner = turmoil::net::TcpStream::connect(addr).await?;
            let host = self.host.clone();
            SENT.with(|s| {
                if let Some(t) = entry(&mut s.borrow_mut(), &host) {
                    t.dials += 1;
                }
            });
            Ok(Box::new(Counted::new(inner, host, Role::Calls, false)) as BoxStream)
        })
    }
}

/// turmoil's listener, as node `host` accepts from it.
struct SimListener {
    inner: turmoil::net::TcpListener,
    host: Arc<str>,
}

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (inner, peer) = self.inner.accept().await?;
            let host = self.host.clone();
            let driver = peer.ip() == turmoil::lookup("driver");
            Ok((
                Box::new(Counted::new(inner, host, Role::Answers, driver)) as BoxStream,
                peer,
            ))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The identity of simulated host `host`.
pub fn id(host: &str) -> NodeId {
    NodeId::new(host, PORT).expect("a host name")
}

/// The flags every simulated node gets unless a scenario says otherwise:
/// short intervals, so that a change or a tombstone's removal takes simulated
/// seconds, not minutes.
pub fn quick_flags() -> Flags {
    Flags {
        tombstone_grace_ms: Some(4500),
        copy_timeout_ms: Some(1000),
        anti_entropy_interval_ms: Some(500),
        // No flusher thread: its real-time fsyncs would make a run depend on
        // the disk's speed, and a simulated crash loses nothing sled took.
        fsync: Some("never".into()),
        // The harness gives every node the simulated ring's secret (see
        // Cluster::start); the flag only gets the config past its check.
        insecure: true,
        ..Flags::default()
    }
}

/// The cluster secret of every simulated ring: members' connections run the
/// Noise handshake and encryption as on a real ring.
pub const SIM_SECRET: &str = "the simulated ring's cluster secret, 32+ characters";

thread_local! {
    /// Set by a measurement that names each frame's method (`make sim-scale`):
    /// the nodes this thread's simulation starts run `--insecure`, since a
    /// member's encrypted channel hides the frames from the counters.
    static PLAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The simulations this thread runs from now on use plain (insecure) rings.
pub fn plain_rings() {
    PLAIN.with(|p| p.set(true));
}

pub(crate) fn plain() -> bool {
    PLAIN.with(|p| p.get())
}

/// A simulated cluster and its driver.
pub struct Cluster {
    pub sim: turmoil::Sim<'static>,
    jobs: mpsc::UnboundedSender<Job>,
    disks: tempfile::TempDir,
    /// The hosts started so far, with the flags each runs with.
    pub nodes: BTreeMap<String, Flags>,
    /// Each host's current directory (a wiped restart gets a new one); the
    /// host's start-up reads it.
    dirs: BTreeMap<String, Arc<std::sync::Mutex<PathBuf>>>,
    wipes: u32,
    pub seed: u64,
}

/// How long one driver call may take in simulated time before the runner
/// calls it stuck.
pub const CALL_LIMIT: Duration = Duration::from_secs(300);

impl Cluster {
    /// An empty cluster whose randomness (message latencies, the nodes'
    /// identities) all comes from `seed`.
    pub fn new(seed: u64) -> Cluster {
        Cluster::with_tick(seed, Duration::from_millis(1))
    }

    /// [`Cluster::new`] stepping `tick` of simulated time per step (turmoil's
    /// default is 1 ms). Each step costs turmoil a pass over every link for
    /// every host (hosts × links), so a large ring is affordable only with
    /// a longer tick; timers and message latencies are then rounded up to it.
    pub fn with_tick(seed: u64, tick: Duration) -> Cluster {
        dynamo::runtime::simulate(seed);
        // RUST_LOG=info shows the nodes' logs, each line under its host.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            )
            .with_test_writer()
            .try_init();
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .tick_duration(tick)
            .simulation_duration(Duration::from_secs(24 * 3600))
            // Messages held on a link queue up at the receiver: room for a
            // node held through a ring change, not a limit of the node's.
            .tcp_capacity(1 << 16)
            .build();
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        sim.client("driver", async move {
            while let Some((job, reply)) = rx.recv().await {
                tokio::spawn(async move {
                    let _ = reply.send(job.await);
                });
            }
            Ok(())
        });
        Cluster {
            sim,
            jobs,
            disks: tempfile::tempdir().expect("a temporary directory"),
            nodes: BTreeMap::new(),
            dirs: BTreeMap::new(),
            wipes: 0,
            seed,
        }
    }

    /// Starts node `host` (led by `n0`) with `flags`.
    pub fn start(&mut self, host: &str, flags: Flags) {
        self.nodes.insert(host.to_string(), flags.clone());
        let dir = Arc::new(std::sync::Mutex::new(self.disks.path().join(host)));
        self.dirs.insert(host.to_string(), dir.clone());
        let name = host.to_string();
        let plain = plain();
        self.sim.host(host, move || {
            let flags = Flags {
                host: Some(name.clone()),
                port: Some(PORT),
                leader: Some(id("n0").to_string()),
                data_dir: Some(dir.lock().unwrap().clone()),
                in_memory: false,
                ..flags.clone()
            };
            let host: Arc<str> = name.as_str().into();
            async move {
                let mut config = NodeConfig::from_flags(flags)?;
                if !plain {
                    config.security = dynamo::security::Security::with_secret(SIM_SECRET);
                }
                let inner = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
                let node = dynamo::server::start_over(
                    config,
                    Box::new(SimListener {
                        inner,
                        host: host.clone(),
                    }),
                    Arc::new(SimNet { host }),
                )
                .await?;
                node.wait().await?;
                Ok(())
            }
        });
    }

    /// The directory `host` starts on (its disk), before any wiped restart.
    pub fn disk(&self, host: &str) -> PathBuf {
        self.disks.path().join(host)
    }

    /// Stops `host`'s process at once (its disk stays).
    pub fn crash(&mut self, host: &str) {
        self.sim.crash(host);
    }

    /// Starts `host` again, on its disk or (`wiped`) on an empty one.
    pub fn restart(&mut self, host: &str, wiped: bool) {
        if self.sim.is_host_running(host) {
            self.sim.crash(host);
        }
        if wiped {
            self.wipes += 1;
            let fresh = self.disks.path().join(format!("{host}.{}", self.wipes));
            *self.dirs[host].lock().unwrap() = fresh;
        } else {
            let dir = self.dirs[host].lock().unwrap().clone();
            wait_for_release(&dir);
        }
        self.sim.bounce(host);
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Steps the simulation for `d` of simulated time.
    pub fn advance(&mut self, d: Duration) -> Result<(), String> {
        let until = self.sim.elapsed() + d;
        while self.sim.elapsed() < until {
            self.sim.step().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Hands `job` to the driver and returns at once; its outcome arrives on
    /// the receiver once steps have run it.
    pub fn submit<F>(&mut self, job: F) -> oneshot::Receiver<Outcome>
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send((Box::pin(job), tx));
        rx
    }

    /// Runs `job` in the simulation and steps until it answers (or
    /// [`CALL_LIMIT`] of simulated time passes).
    pub fn call<F>(&mut self, job: F) -> Outcome
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let mut rx = self.submit(job);
        let limit = self.sim.elapsed() + CALL_LIMIT;
        loop {
            match rx.try_recv() {
                Ok(outcome) => return outcome,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err("the driver dropped the job".into())
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if self.sim.elapsed() > limit {
                return Err(format!("no answer within {}s", CALL_LIMIT.as_secs()));
            }
            self.sim.step().map_err(|e| e.to_string())?;
        }
    }
}

impl Cluster {
    /// Runs every job of `jobs` in the simulation at once and steps until all
    /// have answered (or [`CALL_LIMIT`] of simulated time passes); their
    /// outcomes in the order of `jobs`.
    pub fn call_all<F>(&mut self, jobs: Vec<F>) -> Vec<Outcome>
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let mut waiting: Vec<_> = jobs.into_iter().map(|job| self.submit(job)).collect();
        let mut out: Vec<Option<Outcome>> = waiting.iter().map(|_| None).collect();
        let limit = self.sim.elapsed() + CALL_LIMIT;
        loop {
            for (rx, slot) in waiting.iter_mut().zip(out.iter_mut()) {
                if slot.is_none() {
                    match rx.try_recv() {
                        Ok(outcome) => *slot = Some(outcome),
                        Err(oneshot::error::TryRecvError::Closed) => {
                            *slot = Some(Err("the driver dropped the job".into()))
                        }
                        Err(oneshot::error::TryRecvError::Empty) => {}
                    }
                }
            }
            if out.iter().all(Option::is_some) {
                return out.into_iter().flatten().collect();
            }
            if self.sim.elapsed() > limit {
                let late = format!("no answer within {}s", CALL_LIMIT.as_secs());
                return out
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(late.clone())))
                    .collect();
            }
            if let Err(e) = self.sim.step() {
                let e = e.to_string();
                return out
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(e.clone())))
                    .collect();
            }
        }
    }
}

/// Waits (in real time, which the simulation does not see) until no one
/// holds sled's lock on the store in `dir`: a crashed host's store is closed
/// by sled's own background thread, at a moment of its choosing, and a
/// restart that came first would find the store still locked.
pub fn wait_for_release(dir: &std::path::Path) {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    else {
        return;
    };
    let started = std::time::Instant::now();
    // The lock sled takes (fs2's, as sled itself uses).
    while fs2::FileExt::try_lock_exclusive(&file).is_err()
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = fs2::FileExt::unlock(&file);
}

/// A client of node `host` (a fresh connection: the simulated network makes
/// connecting cheap, and a crashed node's old connection is never reused).
pub async fn client(host: &str) -> io::Result<NodeClient> {
    // A held host's handshake waits on the wire: give up as a client would.
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        turmoil::net::TcpStream::connect((host, PORT)),
    )
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {host} timed out"),
        )
    })??;
    // The driver speaks as a member (it holds the simulated ring's secret):
    // the Noise handshake first, as every connection to a node makes it.
    let key = dynamo::security::ClusterKey::derive(SIM_SECRET.as_bytes());
    let hello = dynamo::security::Hello::Peer((!plain()).then_some(key));
    let handshake = dynamo::security::wire::dial(Box::new(stream), &hello);
    let (stream, _) = tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("handshake with {host} timed out"),
            )
        })?
        .map_err(|e| e.into_io())?;
    Ok(NodeClient::new(Default::default(), dynamo::rpc::transport(stream)).spawn())
}

pub fn ctx() -> tarpc::context::Context {
    dynamo::rpc::context(Duration::from_secs(5))
}

/// `status` of `host`.
pub async fn status(host: &str) -> Result<StatusReply, BoxError> {
    Ok(client(host).await?.status(ctx()).await??)
}

/// Writes `content` to `key` through `host` with `context`; the context the
/// write produced.
pub async fn write(
    host: &str,
    key: &str,
    context: VersionVector,
    content: Content,
) -> Result<VersionVector, BoxError> {
    let req = WriteRequest {
        key: key.into(),
        context,
        content,
        forwarded: false,
    };
    Ok(client(host).await?.write(ctx(), req).await??.context)
}

/// The values `host` reads for `key` (sorted), and their context.
pub async fn read(host: &str, key: &str) -> Result<(Vec<String>, VersionVector), BoxError> {
    let r = client(host).await?.read(ctx(), key.into()).await??;
    let mut values: Vec<String> = r
        .values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    values.sort();
    Ok((values, r.context))
}

pub fn value(v: &str) -> Content {
    Content::Value(bytes::Bytes::copy_from_slice(v.as_bytes()))
}
