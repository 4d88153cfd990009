//! A node's settings, checked once at start-up.
//!
//! The binary (`src/bin/dynamo.rs`) turns command-line flags into a [`NodeConfig`]
//! with [`NodeConfig::from_flags`]; everything below it takes the validated struct.
//! Invalid combinations (W > N, a malformed leader address) are refused here with a
//! message that names the flag, so the node exits before touching any data.
//!
//! Replication settings given to a non-leader are only a fallback: the cluster's
//! N/W/R are the leader's and arrive with the ring.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::{NodeId, Replication};

/// Default port of a node, as in the seed.
pub const DEFAULT_PORT: u16 = 13337;
/// Default host of a node.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// How long a coordinator waits for a quorum before giving up. Two seconds is long
/// enough for a loaded 2-core machine to flush a batch, short enough that a client
/// hears about a partition quickly.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 2000;
/// [`DEFAULT_REQUEST_TIMEOUT_MS`] as a duration.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS);
/// Keys per second a node sends to new owners during a ring change
/// (`--transfer-rate`). Measured in BENCHMARKS.md: well above the move rate
/// the issue asks for, while foreground p99 stays within its bound.
pub const DEFAULT_TRANSFER_RATE: u64 = 50_000;
/// Keys per second anti-entropy repairs on one node, sent plus fetched
/// (`--repair-rate`): a node that lost its disk is refilled at this pace (10,000
/// keys in seconds) instead of in a repair storm.
pub const DEFAULT_REPAIR_RATE: u64 = 5_000;
/// Pause between two anti-entropy exchanges of one node
/// (`--anti-entropy-interval-ms`). With five nodes each pair is compared every
/// few seconds, at one small round trip when nothing differs.
pub const DEFAULT_EXCHANGE_INTERVAL_MS: u64 = 500;
/// How long every owner must have held a tombstone identically, with no hint
/// for it anywhere, before it is removed (`--tombstone-grace-ms`). A copy read
/// before that proof can still be on its way in a call; the longest calls that
/// carry copies (anti-entropy and transfer batches) give up after 10 s, and a
/// receiver refuses a copy whose deadline has passed when it arrives, so a
/// grace above twice that leaves no such copy in flight when the tombstone
/// goes. The grace must exceed twice the longest of the request timeout, the
/// copy timeout and the hint delivery deadline, or the node refuses to start.
pub const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 25_000;
/// Deadline of a call that carries copies of stored objects in bulk: a ring
/// change's transfer batch and an anti-entropy call (`--copy-timeout-ms`). A
/// receiver merging 256 keys and flushing takes milliseconds; ten seconds
/// means it is gone or overloaded.
pub const DEFAULT_COPY_TIMEOUT_MS: u64 = 10_000;
/// Deadline of a hint delivery (kept here: the tombstone grace is checked
/// against it).
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two rounds of failure-detector pings (`--ping-interval-ms`):
/// four a second keeps a hung node's `down` within about two seconds at one
/// small call per neighbour.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 250;

/// When a write's acknowledgement means "on disk".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Each write waits for its own flush.
    Always,
    /// Concurrent writes share one flush (group commit). The default.
    #[default]
    Batch,
    /// Acknowledge from memory; sled flushes in the background.
    Never,
}

impl FromStr for FsyncMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "batch" => Ok(FsyncMode::Batch),
            "never" => Ok(FsyncMode::Never),
            other => Err(Error::Config {
                reason: format!("--fsync must be always, batch or never, got {other:?}"),
            }),
        }
    }
}

impl fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncMode::Always => "always",
            FsyncMode::Batch => "batch",
            FsyncMode::Never => "never",
        })
    }
}

/// Where a node keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// A sled database in this directory.
    Path(PathBuf),
    /// Nothing touches disk (`--in-memory`).
    InMemory,
}

/// The flags of `dynamo`, as typed (see SPEC section 1).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub leader: Option<String>,
    pub qsize: Option<usize>,
    pub write_n: Option<usize>,
    pub read_n: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub in_memory: bool,
    pub fsync: Option<String>,
    pub http_port: Option<u16>,
    pub listen: Option<String>,
    pub request_timeout_ms: Option<u64>,
    pub transfer_rate: Option<u64>,
    pub repair_rate: Option<u64>,
    pub anti_entropy_interval_ms: Option<u64>,
    pub tombstone_grace_ms: Option<u64>,
    pub ping_interval_ms: Option<u64>,
    pub copy_timeout_ms: Option<u64>,
    /// `--cluster-secret-file`.
    pub cluster_secret_file: Option<PathBuf>,
    /// `--insecure`.
    pub insecure: bool,
    /// `--admin-token-file`.
    pub admin_token_file: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `--open-metrics`.
    pub open_metrics: bool,
}

/// A node's validated settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's identity, `HOST:PORT`.
    pub id: NodeId,
    /// The address the listener binds (defaults to the identity).
    pub listen: String,
    /// The leader this node was told about (itself when it is the leader).
    pub leader: NodeId,
    /// N/W/R given on the command line (the leader's become the cluster's).
    pub replication: Replication,
    /// Where data lives.
    pub data_dir: DataDir,
    /// Durability of acknowledgements.
    pub fsync: FsyncMode,
    /// Coordinator deadline for one client request.
    pub request_timeout: Duration,
    /// Where the HTTP API listens (`--http-port` on the listener's host);
    /// None: no HTTP.
    pub http_listen: Option<String>,
    /// Keys per second this node sends during a ring change (0: no cap).
    pub transfer_rate: u64,
    /// Keys per second anti-entropy repairs (0: no cap).
    pub repair_rate: u64,
    /// Pause between two anti-entropy exchanges (None: anti-entropy is off,
    /// and tombstones are never removed).
    pub anti_entropy_interval: Option<Duration>,
    /// How long a tombstone must be proven held everywhere before it goes.
    pub tombstone_grace: Duration,
    /// Deadline of a call that carries copies in bulk (transfer batches,
    /// anti-entropy).
    pub copy_timeout: Duration,
    /// Pause between two rounds of failure-detector pings (None: no pings,
    /// every peer counts as alive until a call to it fails).
    pub ping_interval: Option<Duration>,
    /// The cluster secret, the bootstrap admin token and TLS (see
    /// [`crate::security`]).
    pub security: crate::security::Security,
}

/// The security settings the flags give (see [`crate::security`]): a secret,
/// or `--insecure`, never neither.
fn security_of(flags: &Flags) -> Result<crate::security::Security> {
    use crate::security::{secret, tls::ServerTls, Security, TokenDigest};
    let config = |reason: &str| Error::Config {
        reason: reason.to_string(),
    };
    let keys = match (&flags.cluster_secret_file, flags.insecure) {
        (Some(_), true) => {
            return Err(config(
                "--cluster-secret-file and --insecure contradict each other; give one",
            ))
        }
        (None, false) => {
            return Err(config(
                "no security configured: give --cluster-secret-file FILE (the secret every \
                 node of the ring shares; with --admin-token-file FILE for a first admin), or \
                 --insecure to run with no secret and no tokens, where anyone who reaches the \
                 node's port can read, write and change the ring",
            ))
        }
        (Some(path), false) => secret::read_cluster_keys(path)?,
        (None, true) => Vec::new(),
    };
    let admin =
        match &flags.admin_token_file {
            Some(_) if flags.insecure => return Err(config(
                "--admin-token-file needs a ring with a secret: an --insecure node checks no token",
            )),
            Some(path) => Some(TokenDigest::of(&secret::read_token_file(
                path,
                "--admin-token-file",
                true,
            )?)),
            None => None,
        };
    let tls = match (&flags.tls_cert, &flags.tls_key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(ServerTls::from_files(cert, key)?)),
        (None, None) => None,
        _ => return Err(config("--tls-cert and --tls-key go together")),
    };
    Ok(Security {
        keys,
        admin,
        open_metrics: flags.open_metrics,
        tls,
    })
}

impl NodeConfig {
    /// Validates flags into a config.
    pub fn from_flags(flags: Flags) -> Result<NodeConfig> {
        let security_flags = flags.clone();
        let host = flags.host.unwrap_or_else(|| DEFAULT_HOST.to_string());
        let port = flags.port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(Error::Config {
                reason: "--port must be 1-65535".into(),
            });
        }
        let id = NodeId::new(&host, port).map_err(|e| Error::Config {
            reason: format!("--host/--port: {e}"),
        })?;
        let leader = match flags.leader.as_deref() {
            None | Some("") => id.clone(),
            Some(l) => parse_leader(l, port)?,
        };
        let replication = Replication {
            n: flags.qsize.unwrap_or(crate::types::DEFAULT_N),
            w: flags.write_n.unwrap_or(crate::types::DEFAULT_W),
            r: flags.read_n.unwrap_or(crate::types::DEFAULT_R),
        };
        replication.validate()?;
        // A secret file is read only once the flags before it are good.
        let security = security_of(&security_flags)?;
        let data_dir = if flags.in_memory {
            DataDir::InMemory
        } else {
            DataDir::Path(flags.data_dir.unwrap_or_else(|| {
                PathBuf::from("data").join(format!("{}_{}", id.host(), id.port()))
            }))
        };
        let fsync = match flags.fsync.as_deref() {
            None => FsyncMode::default(),
            Some(s) => s.parse()?,
        };
        let request_timeout = match flags.request_timeout_ms {
            None => DEFAULT_REQUEST_TIMEOUT,
            Some(0) => {
                return Err(Error::Config {
                    reason: "--request-timeout-ms must be positive".into(),
                })
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let tombstone_grace = Duration::from_millis(
            flags
                .tombstone_grace_ms
                .unwrap_or(DEFAULT_TOMBSTONE_GRACE_MS),
        );
        let copy_timeout = match flags.copy_timeout_ms.unwrap_or(DEFAULT_COPY_TIMEOUT_MS) {
            0 => {
                return Err(Error::Config {
                    reason: "--copy-timeout-ms must be positive".into(),
                })
            }
            ms => Duration::from_millis(ms),
        };
        // A copy read before a tombstone's proof may still be in a call; it
        // lands or is dropped within that call's deadline.
        let longest = request_timeout.max(copy_timeout).max(HANDOFF_TIMEOUT);
        if tombstone_grace <= longest * 2 {
            return Err(Error::Config {
                reason: format!(
                    "--tombstone-grace-ms must be longer than twice the longest deadline of a \
                     call that carries copies ({} ms: the largest of --request-timeout-ms, \
                     --copy-timeout-ms and the {} ms of a hint delivery), so more than {} ms",
                    longest.as_millis(),
                    HANDOFF_TIMEOUT.as_millis(),
                    (longest * 2).as_millis()
                ),
            });
        }
        let listen = flags.listen.unwrap_or_else(|| id.to_string());
        let http_listen = match flags.http_port {
            None => None,
            Some(p) if p == id.port() => {
                return Err(Error::Config {
                    reason: format!("--http-port {p} is the node's own port; pick another"),
                })
            }
            Some(p) => {
                let host = listen.rsplit_once(':').map_or(listen.as_str(), |(h, _)| h);
                Some(format!("{host}:{p}"))
            }
        };
        Ok(NodeConfig {
            id,
            listen,
            leader,
            replication,
            data_dir,
            fsync,
            request_timeout,
            http_listen,
            transfer_rate: flags.transfer_rate.unwrap_or(DEFAULT_TRANSFER_RATE),
            repair_rate: flags.repair_rate.unwrap_or(DEFAULT_REPAIR_RATE),
            anti_entropy_interval: match flags
                .anti_entropy_interval_ms
                .unwrap_or(DEFAULT_EXCHANGE_INTERVAL_MS)
            {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            tombstone_grace,
            copy_timeout,
            ping_interval: match flags.ping_interval_ms.unwrap_or(DEFAULT_PING_INTERVAL_MS) {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            security,
        })
    }

    /// True when this node was told it is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader == self.id
    }
}

/// `HOST` alone means `HOST` on the node's own port (the seed's convention).
pub fn parse_leader(s: &str, own_port: u16) -> Result<NodeId> {
    let bad = |e: Error| Error::Config {
        reason: format!("--leader: {e}"),
    };
    match s.rsplit_once(':') {
        Some((_, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            s.parse().map_err(bad)
        }
        _ => NodeId::new(s, own_port).map_err(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = NodeConfig::from_flags(Flags {
            insecure: true,
            ..Flags::default()
        })
        .unwrap();
        assert_eq!(c.id.as_str(), "127.0.0.1:13337");
        assert!(c.is_leader());
        assert_eq!(c.replication, Replication { n: 3, w: 2, r: 2 });
        assert_eq!(c.fsync, FsyncMode::Batch);
        assert_eq!(c.data_dir, DataDir::Path("data/127.0.0.1_13337".into()));
    }

    #[test]
    fn leader_host_alone_takes_own_port() {
        assert_eq!(
            parse_leader("leader", 14000).unwrap().as_str(),
            "leader:14000"
        );
        assert_eq!(
            parse_leader("leader:1", 14000).unwrap().as_str(),
            "leader:1"
        );
        assert!(parse_leader("a b", 1).is_err());
    }

    #[test]
    fn bad_quorums_are_refused() {
        let flags = Flags {
            qsize: Some(3),
            write_n: Some(4),
            insecure: true,
            ..Flags::default()
        };
        let e = NodeConfig::from_flags(flags).unwrap_err().to_string();
        assert!(e.contains("--sq-write-n"), "{e}");
    }

    #[test]
    fn a_node_needs_a_secret_or_insecure_and_never_both() {
        let e = NodeConfig::from_flags(Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--cluster-secret-file") && e.contains("--insecure"),
            "{e}"
        );
        let both = Flags {
            insecure: true,
            cluster_secret_file: Some("/nonexistent".into()),
            ..Flags::default()
        };
        let e = NodeConfig::from_flags(both).unwrap_err().to_string();
        assert!(e.contains("contradict"), "{e}");
        let c = NodeConfig::from_flags(Flags {
            insecure: true,
            ..Flags::default()
        })
        .unwrap();
        assert!(!c.security.is_secure());
    }
}
