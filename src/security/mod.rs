//! Who may talk to a node, and what they may do.
//!
//! # What must hold
//!
//! * **Only members speak as members.** On a ring with a cluster secret,
//!   every connection between nodes is mutually authenticated and encrypted
//!   by a Noise handshake keyed by the secret ([`wire`], [`noise`]). A
//!   process without the secret is refused before a single RPC frame is
//!   decoded: it cannot answer as a member (its answers never arrive), it
//!   cannot be added (`add-node` dials it and the handshake fails), and every
//!   call it makes is refused at the door.
//! * **Clients prove who they are, every call is judged.** A client presents
//!   a token when it connects; the node keeps only the token's SHA-256
//!   ([`TokenDigest`]). The token's role (`admin` > `readwrite` >
//!   `readonly`) is looked up again for every call ([`Access::check`]), so a
//!   user removed from the ring loses its open connections' rights at once.
//!   Calls that only members make (replication, transfer, anti-entropy,
//!   Raft) are refused to every client whatever its role.
//! * **Users live in the ring.** The table of users (name, role, token
//!   digest) is part of the ring state ([`crate::ring::RingState::users`]):
//!   committed through the ring's Raft group, pushed and pulled with the
//!   ring, persisted with it. Every node knows every token without a second
//!   replication path. A node's own `--admin-token-file` is a bootstrap
//!   admin that needs no ring.
//! * **No secret is ever written anywhere but its file.** Secrets and tokens
//!   never reach a log, an error text or `status`: their types print a
//!   fingerprint at most, and a refusal names what was wrong, not what was
//!   sent.
//! * **A flood cannot take a node off the ring.** A connection must finish
//!   its handshake within [`HANDSHAKE_TIMEOUT`]; connections still in their
//!   handshake are few ([`gate::MAX_HANDSHAKING`]) and the oldest is closed
//!   to make room for a new one, so idle sockets cannot hold the door shut;
//!   members and clients have separate room ([`gate`]), and one address may
//!   hold only so many client connections.
//!
//! # Why Noise with a pre-shared key, and not TLS, between nodes
//!
//! The ring's members share one secret; they do not each have a certificate.
//! TLS would need a certificate authority, a certificate per node and its
//! renewal, for what is a single shared key: rustls has no TLS-PSK. The Noise
//! protocol framework has exactly this case, `NNpsk0`: two ephemeral
//! Diffie-Hellman keys (forward secrecy: a secret stolen later does not
//! decrypt traffic recorded earlier) mixed with the pre-shared key (only a
//! holder can complete the handshake, in either direction). `snow` is the
//! well-kept Rust implementation (used by libp2p and others). The handshake
//! is one round trip on a connection that then lives for the node's life.
//! Clients do use TLS ([`tls`]): they authenticate a node by its
//! certificate, as any database client does, and prove themselves with a
//! token.
//!
//! # Insecure mode
//!
//! A node started with `--insecure` has no secret and checks no token: every
//! caller is let in with every right, it says so when it starts, and `status`
//! shows `"secure":false`. A node given neither a secret nor `--insecure`
//! refuses to start.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::{BoxStream, Network};
use crate::ring::RingCell;
use futures::future::BoxFuture;

pub mod gate;
pub mod noise;
pub mod secret;
pub mod tls;
pub mod wire;

pub use crate::types::{check_user_name, Role, User, MAX_USERS, MAX_USER_NAME};
pub use secret::{new_token, ClusterKey, TokenDigest};
pub use wire::{Caller, Hello};

/// How long a new connection may take to finish its handshake before the
/// node closes it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A client with at least this role (members may do anything).
    Role(Role, &'static str),
    /// A member of the ring: the calls between nodes.
    Member(&'static str),
}

impl Need {
    /// Reading data or the ring.
    pub const fn read(what: &'static str) -> Need {
        Need::Role(Role::Readonly, what)
    }
    /// Writing data.
    pub const fn write(what: &'static str) -> Need {
        Need::Role(Role::Readwrite, what)
    }
    /// Changing the ring or its users.
    pub const fn admin(what: &'static str) -> Need {
        Need::Role(Role::Admin, what)
    }
}

/// A node's security settings, from its flags.
#[derive(Clone, Default)]
pub struct Security {
    /// The cluster keys accepted from peers, the first one dialled with
    /// (empty: `--insecure`).
    pub keys: Vec<ClusterKey>,
    /// The bootstrap admin token (`--admin-token-file`).
    pub admin: Option<TokenDigest>,
    /// `/metrics` answers without a token.
    pub open_metrics: bool,
    /// TLS for clients on the RPC and HTTP ports.
    pub tls: Option<Arc<tls::ServerTls>>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("secure", &self.is_secure())
            .field("keys", &self.keys.len())
            .field("admin_token", &self.admin.is_some())
            .field("open_metrics", &self.open_metrics)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Security {
    /// Nothing checked: `--insecure`.
    pub fn insecure() -> Security {
        Security::default()
    }

    /// A ring with this secret (tests and the simulation).
    pub fn with_secret(secret: &str) -> Security {
        Security {
            keys: vec![ClusterKey::derive(secret.as_bytes())],
            ..Security::default()
        }
    }

    /// True unless `--insecure`.
    pub fn is_secure(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How this node introduces itself to its peers.
    pub fn peer_hello(&self) -> Hello {
        Hello::Peer(self.keys.first().cloned())
    }
}

/// The judge of every call: the node's settings and the ring's users.
pub struct Access {
    security: Security,
    ring: Arc<RingCell>,
}

impl Access {
    pub fn new(security: Security, ring: Arc<RingCell>) -> Access {
        Access { security, ring }
    }

    /// The node's settings.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// True unless `--insecure`.
    pub fn is_secure(&self) -> bool {
        self.security.is_secure()
    }

    /// The role of a token, if this ring knows it.
    pub fn role_of(&self, digest: &TokenDigest) -> Option<Role> {
        if self.security.admin.as_ref() == Some(digest) {
            return Some(Role::Admin);
        }
        let ring = self.ring.get()?;
        ring.state()
            .users
            .values()
            .find(|u| TokenDigest::from_hex(&u.token_sha256).as_ref() == Some(digest))
            .map(|u| u.role)
    }

    /// The role a connecting client gets, or why it is refused.
    pub fn admit(&self, caller: &Caller) -> std::result::Result<Role, Error> {
        match caller {
            Caller::Peer | Caller::Client(None) => Ok(Role::Admin),
            Caller::Client(Some(d)) => self.role_of(d).ok_or_else(|| Error::Unauthorized {
                reason: "the token is not known to this ring".into(),
            }),
        }
    }

    /// May `caller` make a call that needs `need`?
    pub fn check(&self, caller: &Caller, need: Need) -> Result<()> {
        match caller {
            // A member, or anyone on an insecure ring.
            Caller::Peer | Caller::Client(None) => Ok(()),
            Caller::Client(Some(d)) => {
                self.judge(d, need, "the token is no longer known to this ring")
            }
        }
    }

    /// Whether an HTTP request's bearer token (`None`: no header) may make a
    /// request that needs `need`.
    pub fn check_bearer(&self, token: Option<&str>, need: Need) -> Result<()> {
        if !self.is_secure() {
            return Ok(());
        }
        let Some(token) = token else {
            return Err(Error::Unauthorized {
                reason: "this ring requires a token: send Authorization: Bearer TOKEN".into(),
            });
        };
        self.judge(
            &TokenDigest::of(token),
            need,
            "the token is not known to this ring",
        )
    }

    /// May the client with token `digest` make a call that needs `need`?
    /// `unknown`: why a token the ring does not know is refused.
    fn judge(&self, digest: &TokenDigest, need: Need, unknown: &str) -> Result<()> {
        let role = self.role_of(digest).ok_or_else(|| Error::Unauthorized {
            reason: unknown.into(),
        })?;
        match need {
            Need::Member(what) => Err(Error::Forbidden {
                reason: format!("{what} is a call between members of the ring"),
            }),
            Need::Role(needed, what) if role < needed => Err(Error::Forbidden {
                reason: format!("role {role} may not {what} (it needs {needed})"),
            }),
            Need::Role(..) => Ok(()),
        }
    }
}

/// A network whose connections open with a handshake: how a node dials its
/// peers (`Hello::Peer`) and a client dials nodes (`Hello::Client`).
pub struct Secured {
    inner: Arc<dyn Network>,
    hello: Hello,
    tls: Option<Arc<tls::ClientTls>>,
}

impl Secured {
    pub fn new(inner: Arc<dyn Network>, hello: Hello, tls: Option<Arc<tls::ClientTls>>) -> Secured {
        Secured { inner, hello, tls }
    }
}

impl Network for Secured {
    fn dial<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, std::io::Result<BoxStream>> {
        Box::pin(async move {
            let mut stream = self.inner.dial(addr).await?;
            if let Some(tls) = &self.tls {
                stream = tls.connect(addr, stream).await?;
            }
            let handshake = wire::dial(stream, &self.hello);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok((s, _role))) => Ok(s),
                Ok(Err(e)) => Err(e.into_io()),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the handshake did not finish within {} ms",
                        HANDSHAKE_TIMEOUT.as_millis()
                    ),
                )),
            }
        })
    }
}
