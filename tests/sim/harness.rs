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
use tokio::sync::{mpsc, oneshot};

pub const PORT: u16 = 13337;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Outcome = Result<String, String>;
type Job = (BoxFuture<'static, Outcome>, oneshot::Sender<Outcome>);

/// What each host has written to the network so far (this thread's
/// simulation only), split by RPC method: the scale measurements.
pub fn traffic() -> BTreeMap<String, Traffic> {
    SENT.with(|s| {
        s.borrow()
            .iter()
            .map(|(h, t)| (h.to_string(), t.clone()))
            .collect()
    })
}

/// What one host wrote: every byte, and the frames by the method they
/// belong to (a frame is counted once it is wholly written).
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// To other nodes (not to the driver).
    pub bytes: u64,
    /// Answers to the driver's calls, apart: a measurement's own polls.
    pub driver_bytes: u64,
    /// Connections this host dialled.
    pub dials: u64,
    /// Requests this host sent, per method: (frames, bytes with the frame
    /// header), indexed like [`METHODS`].
    pub calls: Vec<(u64, u64)>,
    /// Answers this host sent, per method, indexed like [`METHODS`].
    pub answers: Vec<(u64, u64)>,
}

impl Traffic {
    /// `self - before`, method by method.
    pub fn since(&self, before: Option<&Traffic>) -> Traffic {
        let minus = |now: &[(u64, u64)], then: Option<&Vec<(u64, u64)>>| -> Vec<(u64, u64)> {
            now.iter()
                .enumerate()
                .map(|(i, (f, b))| {
                    let (f0, b0) = then.and_then(|t| t.get(i)).copied().unwrap_or((0, 0));
                    (f - f0, b - b0)
                })
                .collect()
        };
        Traffic {
            bytes: self.bytes - before.map_or(0, |b| b.bytes),
            driver_bytes: self.driver_bytes - before.map_or(0, |b| b.driver_bytes),
            dials: self.dials - before.map_or(0, |b| b.dials),
            calls: minus(&self.calls, before.map(|b| &b.calls)),
            answers: minus(&self.answers, before.map(|b| &b.answers)),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Traffic) {
        self.bytes += other.bytes;
        self.driver_bytes += other.driver_bytes;
        self.dials += other.dials;
        for (mine, theirs) in [
            (&mut self.calls, &other.calls),
            (&mut self.answers, &other.answers),
        ] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), (0, 0));
            }
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.0 += t.0;
                m.1 += t.1;
            }
        }
    }
}

/// The node service's methods in the order `dynamo::rpc::Node` declares
/// them (a request names its method by that position), then what a frame
/// that is not a call of one of them is counted as.
pub const METHODS: &[&str] = &[
    "write",
    "read",
    "add_node",
    "remove_node",
    "status",
    "locate",
    "replicate",
    "replicate_batch",
    "read_replica",
    "read_at",
    "read_batch",
    "transfer",
    "install_ring",
    "fetch_ring",
    "info",
    "transfer_check",
    "ae_digests",
    "ae_fetch",
    "rejoin",
    "tombstone_check",
    "reap",
    "write_batch",
    "abort_change",
    "fetch_ring_newer",
    "probe",
    "raft_append",
    "raft_vote",
    "raft_snapshot",
    "user_add",
    "user_list",
    "user_remove",
    // Not methods: a cancelled call, a server error, a frame not understood.
    "(cancel)",
    "(server error)",
    "(unknown)",
];
const CANCEL: usize = METHODS.len() - 3;
const SERVER_ERROR: usize = METHODS.len() - 2;
const UNKNOWN: usize = METHODS.len() - 1;

thread_local! {
    static SENT: std::cell::RefCell<BTreeMap<Arc<str>, Traffic>> = const {
        std::cell::RefCell::new(BTreeMap::new())
    };
}

/// Which frames a stream carries from its host: calls (a connection it
/// dialled) or answers (one it accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Calls,
    Answers,
}

/// Cuts what a host writes on one stream into the frames of
/// `dynamo::rpc::codec` (a 4-byte big-endian length, then bincode with
/// varint integers, as tarpc's transport writes them) and names the method
/// of each from its first bytes.
#[derive(Debug)]
pub struct Frames {
    role: Role,
    header: [u8; 4],
    have_header: usize,
    remaining: usize,
    size: usize,
    head: Vec<u8>,
}

/// Bytes of a frame kept to find its method: a request's context and id come
/// before it (at most 1 + 9 + 5 + 16 + 9 + 5 + 9 bytes), then the method.
const HEAD_BYTES: usize = 64;

impl Frames {
    pub fn new(role: Role) -> Frames {
        Frames {
            role,
            header: [0; 4],
            have_header: 0,
            remaining: 0,
            size: 0,
            head: Vec::with_capacity(HEAD_BYTES),
        }
    }

    /// Feeds written bytes; `done(method, frame bytes)` for every frame they
    /// complete.
    pub fn feed(&mut self, mut data: &[u8], mut done: impl FnMut(usize, u64)) {
        while !data.is_empty() {
            if self.have_header < 4 {
                let k = (4 - self.have_header).min(data.len());
                self.header[self.have_header..self.have_header + k].copy_from_slice(&data[..k]);
                self.have_header += k;
                data = &data[k..];
                if self.have_header == 4 {
                    self.size = u32::from_be_bytes(self.header) as usize;
                    self.remaining = self.size;
                    self.head.clear();
                }
            } else {
                let k = self.remaining.min(data.len());
                let keep = (HEAD_BYTES - self.head.len()).min(k);
                self.head.extend_from_slice(&data[..keep]);
                self.remaining -= k;
                data = &data[k..];
            }
            if self.have_header == 4 && self.remaining == 0 {
                let method = match self.role {
                    Role::Calls => request_method(&self.head),
                    Role::Answers => answer_method(&self.head),
                };
                done(method.unwrap_or(UNKNOWN), 4 + self.size as u64);
                self.have_header = 0;
            }
        }
    }
}

/// One of bincode's varint integers (`DefaultOptions`): a byte below 251, or
/// a marker (251, 252, 253, 254) and 2, 4, 8 or 16 little-endian bytes.
fn varint(b: &mut &[u8]) -> Option<u128> {
    let (&first, rest) = b.split_first()?;
    let width = match first {
        0..=250 => {
            *b = rest;
            return Some(u128::from(first));
        }
        251 => 2,
        252 => 4,
        253 => 8,
        254 => 16,
        _ => return None,
    };
    let bytes = rest.get(..width)?;
    *b = &rest[width..];
    let mut v = [0u8; 16];
    v[..width].copy_from_slice(bytes);
    Some(u128::from_le_bytes(v))
}

fn method_index(v: u128) -> Option<usize> {
    usize::try_from(v).ok().filter(|&i| i < CANCEL)
}

/// The method of a `tarpc::ClientMessage<NodeRequest>`: `Request { context:
/// { deadline: Duration { secs, nanos }, trace_context: { trace_id: [u8; 16],
/// span_id, sampling } }, id, message }`, the message an enum whose variant
/// is the method; or `Cancel`.
fn request_method(mut b: &[u8]) -> Option<usize> {
    match varint(&mut b)? {
        0 => {}
        1 => return Some(CANCEL),
        _ => return None,
    }
    varint(&mut b)?; // deadline: seconds
    varint(&mut b)?; // deadline: nanoseconds
    b = b.get(16..)?; // trace id
    varint(&mut b)?; // span id
    varint(&mut b)?; // sampling decision
    varint(&mut b)?; // request id
    method_index(varint(&mut b)?)
}

/// The method of a `tarpc::Response<NodeResponse>`: `{ request_id, message:
/// Result<NodeResponse, ServerError> }`, the response an enum whose variant
/// is the method.
fn answer_method(mut b: &[u8]) -> Option<usize> {
    varint(&mut b)?; // request id
    match varint(&mut b)? {
        0 => method_index(varint(&mut b)?),
        1 => Some(SERVER_ERROR),
        _ => None,
    }
}

/// `host`'s counters, made on first use.
fn entry<'a>(
    sent: &'a mut BTreeMap<Arc<str>, Traffic>,
    host: &Arc<str>,
) -> Option<&'a mut Traffic> {
    if !sent.contains_key(host) {
        let empty = Traffic {
            calls: vec![(0, 0); METHODS.len()],
            answers: vec![(0, 0); METHODS.len()],
            ..Traffic::default()
        };
        sent.insert(host.clone(), empty);
    }
    sent.get_mut(host)
}

/// A stream that counts what its host writes.
struct Counted<S> {
    inner: S,
    host: Arc<str>,
    frames: Frames,
    /// The stream answers the driver: counted apart.
    driver: bool,
    /// Bytes of the handshake still to come before the first frame: a plain
    /// ring's hello (8 bytes) or its answer (1 byte); on a ring with a
    /// secret every frame is encrypted and counted as unknown.
    handshake: usize,
}

impl<S> Counted<S> {
    fn new(inner: S, host: Arc<str>, role: Role, driver: bool) -> Counted<S> {
        let handshake = match (plain(), role) {
            (false, _) => 0,
            (true, Role::Calls) => 8,
            (true, Role::Answers) => 1,
        };
        Counted {
            inner,
            host,
            frames: Frames::new(role),
            driver,
            handshake,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let out = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &out {
            let n = *n;
            let this = &mut *self;
            SENT.with(|s| {
                let mut s = s.borrow_mut();
                let Some(t) = entry(&mut s, &this.host) else {
                    return;
                };
                if this.driver {
                    t.driver_bytes += n as u64;
                    return;
                }
                t.bytes += n as u64;
                let per = match this.frames.role {
                    Role::Calls => &mut t.calls,
                    Role::Answers => &mut t.answers,
                };
                let skip = this.handshake.min(n);
                this.handshake -= skip;
                this.frames.feed(&buf[skip..n], |m, bytes| {
                    per[m].0 += 1;
                    per[m].1 += bytes;
                });
            });
        }
        out
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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

fn plain() -> bool {
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

#[cfg(test)]
mod frames {
    use super::*;
    use bincode::Options;

    fn method_of(role: Role, frame: &[u8]) -> Vec<(&'static str, u64)> {
        let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(frame);
        // Twice, the second time a byte at a time: a frame cut anywhere.
        let mut out = Vec::new();
        let mut f = Frames::new(role);
        f.feed(&framed, |m, b| out.push((METHODS[m], b)));
        for byte in &framed {
            f.feed(std::slice::from_ref(byte), |m, b| out.push((METHODS[m], b)));
        }
        out
    }

    /// The methods are named as tarpc writes them: the variant's position in
    /// `dynamo::rpc::Node`, after a context whose size varies.
    #[test]
    fn frames_are_named_by_their_method() {
        let opts = bincode::DefaultOptions::new();
        for id in [7u64, 300, 1 << 40] {
            let call = tarpc::ClientMessage::Request(tarpc::Request {
                context: dynamo::rpc::context(Duration::from_secs(5)),
                id,
                message: dynamo::rpc::NodeRequest::Info {},
            });
            let bytes = opts.serialize(&call).unwrap();
            let n = bytes.len() as u64 + 4;
            assert_eq!(method_of(Role::Calls, &bytes), [("info", n), ("info", n)]);
            let call = tarpc::ClientMessage::Request(tarpc::Request {
                context: dynamo::rpc::context(Duration::from_secs(1)),
                id,
                message: dynamo::rpc::NodeRequest::FetchRingNewer { epoch: 1 << 33 },
            });
            let bytes = opts.serialize(&call).unwrap();
            assert_eq!(method_of(Role::Calls, &bytes)[0].0, "fetch_ring_newer");
            let answer = tarpc::Response {
                request_id: id,
                message: Ok(dynamo::rpc::NodeResponse::FetchRingNewer(Ok(None))),
            };
            let bytes = opts.serialize(&answer).unwrap();
            assert_eq!(method_of(Role::Answers, &bytes)[0].0, "fetch_ring_newer");
            let answer = tarpc::Response {
                request_id: id,
                message: Ok(dynamo::rpc::NodeResponse::Write(Err(
                    dynamo::error::Error::internal("x"),
                ))),
            };
            let bytes = opts.serialize(&answer).unwrap();
            assert_eq!(method_of(Role::Answers, &bytes)[0].0, "write");
        }
    }
}
