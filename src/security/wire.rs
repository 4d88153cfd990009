//! The first bytes of every connection to a node's RPC port: who is calling,
//! and the proof.
//!
//! ```text
//! dialer                                   node
//! "DYNAMO" kind version  ───────────────▶  (8 bytes)
//!   kind 'P', a member of a ring with a secret:
//!     key id (8) + len (2) + Noise message 1  ─▶
//!                        ◀─  0 + len (2) + Noise message 2   (then Noise transport)
//!   kind 'p', a member of a ring run --insecure:  (nothing more)
//!                        ◀─  0                               (then plain frames)
//!   kind 'C', a client: len (2) + token (len 0: none)  ─▶
//!                        ◀─  0 + role (1)                     (then plain frames)
//! a refusal, at any of these points:
//!                        ◀─  1 (unauthorized) or 2 (refused) + len (2) + reason
//! ```
//!
//! The Noise pattern is `NNpsk0` over 25519, ChaChaPoly and BLAKE2s: both
//! sides bring a fresh ephemeral key (forward secrecy) and the pre-shared
//! cluster key is mixed in before the first message, so message 1 proves the
//! dialer holds the key and message 2 proves the node does. A node that holds
//! several cluster keys (a rotation) picks the one the key id names.
//!
//! A client connection that reaches a node with TLS configured arrives inside
//! TLS (see [`crate::security::tls`]); the bytes above then run inside it.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::noise::{NoiseStream, MAX_MESSAGE};
use super::secret::{ClusterKey, MAX_TOKEN_BYTES};
use super::tls::{ServerTls, TLS_RECORD};
use super::Role;
use crate::net::BoxStream;

/// The first six bytes of every connection.
pub const MAGIC: &[u8; 6] = b"DYNAMO";
/// The version of this exchange.
pub const VERSION: u8 = 1;
/// The Noise protocol of a member's connection.
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

const KIND_PEER: u8 = b'P';
const KIND_PEER_INSECURE: u8 = b'p';
const KIND_CLIENT: u8 = b'C';
const OK: u8 = 0;
const UNAUTHORIZED: u8 = 1;
const REFUSED: u8 = 2;
/// The longest refusal text read back.
const MAX_REASON: usize = 1024;
/// The longest Noise handshake message accepted (both are 48 to 64 bytes).
const MAX_HANDSHAKE_MESSAGE: usize = 256;

/// What a dialer presents.
#[derive(Clone)]
pub enum Hello {
    /// A member: the cluster key it dials with, or none on an insecure ring.
    Peer(Option<ClusterKey>),
    /// A client, with its token if it has one.
    Client(Option<String>),
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hello::Peer(k) => write!(f, "Hello::Peer({k:?})"),
            Hello::Client(t) => write!(f, "Hello::Client(token: {})", t.is_some()),
        }
    }
}

/// Who a node's connection turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A member of the ring (it proved the cluster key, or the ring is
    /// insecure).
    Peer,
    /// A client, with the digest of its token (None on an insecure ring).
    Client(Option<super::TokenDigest>),
}

/// Why a handshake failed, as the dialer sees it.
#[derive(Debug)]
pub enum DialError {
    /// The node said no: `unauthorized` for a missing or unknown token.
    Refused { unauthorized: bool, reason: String },
    /// The connection failed or spoke something else.
    Io(io::Error),
}

impl From<io::Error> for DialError {
    fn from(e: io::Error) -> DialError {
        DialError::Io(e)
    }
}

impl DialError {
    /// As an `io::Error`, for [`crate::net::Network::dial`]: a refusal is
    /// `PermissionDenied` and carries the node's reason.
    pub fn into_io(self) -> io::Error {
        match self {
            DialError::Io(e) => e,
            DialError::Refused {
                unauthorized,
                reason,
            } => io::Error::new(
                io::ErrorKind::PermissionDenied,
                if unauthorized {
                    format!("unauthorized: {reason}")
                } else {
                    format!("refused the connection: {reason}")
                },
            ),
        }
    }
}

fn noise() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PATTERN.parse().expect("a valid Noise pattern"))
}

fn noise_failed(e: snow::Error) -> io::Error {
    io::Error::other(format!("noise: {e}"))
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

async fn read_u16<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<usize> {
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await?;
    Ok(u16::from_be_bytes(b) as usize)
}

async fn read_sized<S: AsyncRead + Unpin>(s: &mut S, max: usize) -> io::Result<Vec<u8>> {
    let len = read_u16(s).await?;
    if len > max {
        return Err(bad(format!(
            "a handshake field of {len} bytes (the limit is {max})"
        )));
    }
    let mut v = vec![0u8; len];
    s.read_exact(&mut v).await?;
    Ok(v)
}

fn sized(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The node's answer: OK, or a refusal read and returned as an error.
async fn read_status<S: AsyncRead + Unpin>(s: &mut S) -> Result<(), DialError> {
    let mut status = [0u8; 1];
    s.read_exact(&mut status).await?;
    match status[0] {
        OK => Ok(()),
        code @ (UNAUTHORIZED | REFUSED) => {
            let reason = read_sized(s, MAX_REASON).await?;
            Err(DialError::Refused {
                unauthorized: code == UNAUTHORIZED,
                reason: String::from_utf8_lossy(&reason).into_owned(),
            })
        }
        other => Err(bad(format!("an unknown handshake answer {other}")).into()),
    }
}

/// Opens a connection as `hello` says, on a stream just connected. Returns
/// the stream the RPC frames then travel on, and the role the node granted a
/// client (peers: `Admin`).
pub async fn dial(mut s: BoxStream, hello: &Hello) -> Result<(BoxStream, Role), DialError> {
    let mut first = Vec::with_capacity(128);
    first.extend_from_slice(MAGIC);
    match hello {
        Hello::Peer(None) => {
            first.extend_from_slice(&[KIND_PEER_INSECURE, VERSION]);
            s.write_all(&first).await?;
            s.flush().await?;
            read_status(&mut s).await?;
            Ok((s, Role::Admin))
        }
        Hello::Peer(Some(key)) => {
            let mut hs = noise()
                .psk(0, key.psk())
                .build_initiator()
                .map_err(noise_failed)?;
            let mut msg = [0u8; MAX_HANDSHAKE_MESSAGE];
            let n = hs.write_message(&[], &mut msg).map_err(noise_failed)?;
            first.extend_from_slice(&[KIND_PEER, VERSION]);
            first.extend_from_slice(&key.id());
            sized(&mut first, &msg[..n]);
            s.write_all(&first).await?;
            s.flush().await?;
            read_status(&mut s).await?;
            let reply = read_sized(&mut s, MAX_HANDSHAKE_MESSAGE).await?;
            let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
            hs.read_message(&reply, &mut payload)
                .map_err(|_| DialError::Refused {
                    unauthorized: false,
                    reason: "its answer to the handshake does not prove the cluster secret".into(),
                })?;
            let session = hs.into_transport_mode().map_err(noise_failed)?;
            Ok((
                Box::new(NoiseStream::new(s, session, Vec::new())),
                Role::Admin,
            ))
        }
        Hello::Client(token) => {
            first.extend_from_slice(&[KIND_CLIENT, VERSION]);
            sized(&mut first, token.as_deref().unwrap_or("").as_bytes());
            s.write_all(&first).await?;
            s.flush().await?;
            read_status(&mut s).await?;
            let mut role = [0u8; 1];
            s.read_exact(&mut role).await?;
            let role = Role::from_code(role[0])
                .ok_or_else(|| bad(format!("an unknown role {} in the handshake", role[0])))?;
            Ok((s, role))
        }
    }
}

/// What the node decides about a caller once it knows who it is.
pub enum Verdict<T> {
    /// Let it in: `T` travels with the connection (its admission).
    Admit(T, Role),
    /// `unauthorized` (no or unknown token) or refused (anything else).
    Refuse { unauthorized: bool, reason: String },
}

/// The node's side of [`dial`]. `keys`: the cluster keys this node accepts
/// (empty: the ring is insecure). `decide` judges the caller once the
/// handshake has shown who it is. `Ok(Err(reason))`: the caller was refused
/// and told `reason`; the connection is to be closed.
pub async fn accept<T>(
    mut s: BoxStream,
    keys: &[ClusterKey],
    tls: Option<&ServerTls>,
    decide: impl FnOnce(&Caller) -> Verdict<T>,
) -> io::Result<Accepted<T>> {
    let mut first = [0u8; 8];
    s.read_exact(&mut first[..1]).await?;
    let over_tls = first[0] == TLS_RECORD;
    if over_tls {
        let Some(tls) = tls else {
            return Err(bad("a TLS handshake, and this node has no --tls-cert"));
        };
        s = tls.accept(first[0], s).await?;
        s.read_exact(&mut first).await?;
    } else {
        s.read_exact(&mut first[1..]).await?;
    }
    if &first[..6] != MAGIC {
        return Err(bad(
            "a connection that does not start with the dynamo handshake",
        ));
    }
    if first[7] != VERSION {
        return refused(
            &mut s,
            false,
            format!(
                "handshake version {} is not spoken here (this node speaks {VERSION})",
                first[7]
            ),
        )
        .await;
    }
    match first[6] {
        KIND_PEER_INSECURE => {
            if !keys.is_empty() {
                return refused(
                    &mut s,
                    false,
                    "this ring has a cluster secret and the caller offered none \
                     (start it with the ring's --cluster-secret-file)",
                )
                .await;
            }
            admit(s, Caller::Peer, decide, |_| Vec::new(), |s, _| s).await
        }
        KIND_PEER => {
            let mut id = [0u8; 8];
            s.read_exact(&mut id).await?;
            let msg = read_sized(&mut s, MAX_HANDSHAKE_MESSAGE).await?;
            if keys.is_empty() {
                return refused(
                    &mut s,
                    false,
                    "this node runs --insecure: it has no cluster secret to prove",
                )
                .await;
            }
            let Some(key) = keys.iter().find(|k| k.id() == id) else {
                return refused(
                    &mut s,
                    false,
                    "this node does not hold the cluster secret the caller dials with",
                )
                .await;
            };
            let mut hs = noise()
                .psk(0, key.psk())
                .build_responder()
                .map_err(noise_failed)?;
            let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
            if hs.read_message(&msg, &mut payload).is_err() {
                return refused(
                    &mut s,
                    false,
                    "the handshake does not prove the cluster secret",
                )
                .await;
            }
            let mut reply = [0u8; MAX_HANDSHAKE_MESSAGE];
            let n = hs.write_message(&[], &mut reply).map_err(noise_failed)?;
            let session = hs.into_transport_mode().map_err(noise_failed)?;
            let reply = reply[..n].to_vec();
            admit(
                s,
                Caller::Peer,
                decide,
                move |_| {
                    let mut out = Vec::with_capacity(reply.len() + 2);
                    sized(&mut out, &reply);
                    out
                },
                move |s, _| Box::new(NoiseStream::new(s, session, Vec::new())) as BoxStream,
            )
            .await
        }
        KIND_CLIENT => {
            let token = read_sized(&mut s, MAX_TOKEN_BYTES).await?;
            if tls.is_some() && !over_tls {
                return refused(
                    &mut s,
                    false,
                    "this node takes clients over TLS only: connect with client --tls \
                     (and --ca FILE for a private certificate authority)",
                )
                .await;
            }
            let caller = if keys.is_empty() {
                Caller::Client(None)
            } else if token.is_empty() {
                return refused(
                    &mut s,
                    true,
                    "this ring requires a token: give the client --token-file FILE \
                     (or set DYNAMO_TOKEN_FILE)",
                )
                .await;
            } else {
                let text = String::from_utf8_lossy(&token);
                Caller::Client(Some(super::TokenDigest::of(&text)))
            };
            admit(s, caller, decide, |role| vec![role.code()], |s, _| s).await
        }
        other => refused(&mut s, false, format!("an unknown kind of caller {other}")).await,
    }
}

/// What [`accept`] made of a connection: the stream, who called and its
/// admission, or the reason it was refused (the caller was told).
pub type Accepted<T> = Result<(BoxStream, Caller, T), String>;

/// Asks `decide`, answers the caller, and wraps the stream.
async fn admit<T>(
    mut s: BoxStream,
    caller: Caller,
    decide: impl FnOnce(&Caller) -> Verdict<T>,
    tail: impl FnOnce(Role) -> Vec<u8>,
    wrap: impl FnOnce(BoxStream, Role) -> BoxStream,
) -> io::Result<Accepted<T>> {
    match decide(&caller) {
        Verdict::Refuse {
            unauthorized,
            reason,
        } => refused(&mut s, unauthorized, reason).await,
        Verdict::Admit(admission, role) => {
            let mut out = vec![OK];
            out.extend(tail(role));
            s.write_all(&out).await?;
            s.flush().await?;
            Ok(Ok((wrap(s, role), caller, admission)))
        }
    }
}

/// Refuses the caller with `reason`, and says so to [`accept`]'s caller.
async fn refused<T, S: AsyncWrite + Unpin>(
    s: &mut S,
    unauthorized: bool,
    reason: impl Into<String>,
) -> io::Result<Accepted<T>> {
    let reason = reason.into();
    refuse(s, unauthorized, &reason).await?;
    Ok(Err(reason))
}

async fn refuse<S: AsyncWrite + Unpin>(
    s: &mut S,
    unauthorized: bool,
    reason: &str,
) -> io::Result<()> {
    let mut out = vec![if unauthorized { UNAUTHORIZED } else { REFUSED }];
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    sized(&mut out, reason);
    s.write_all(&out).await?;
    s.flush().await
}

/// Messages longer than a Noise message cannot be handshake messages.
const _: () = assert!(MAX_HANDSHAKE_MESSAGE < MAX_MESSAGE);
