//! Shared names used by every layer: node identities, keys, values, replication
//! settings and the documented limits.
//!
//! This module is layer 0: it depends on nothing else in the crate. Anything that
//! arrives from a user, a peer or the disk is validated against the limits here
//! before it is stored, so the numbers below are part of the user-visible contract
//! (README "Limits").

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest TTL a put may ask for (about ten years).
pub const MAX_TTL_MS: u64 = 10 * 366 * 24 * 3600 * 1000;
/// The longest key accepted, in bytes. Keys are single REPL tokens; 1 KiB is far
/// beyond any sensible key and keeps the preference-list hash cheap.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value accepted, in bytes. Dynamo-style stores are built for small
/// objects; 1 MiB keeps a full sibling set inside one RPC frame.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The most versions (values and tombstones) one key may hold at once. A put that
/// would create more is refused: the client must read and write back with the
/// merged context, which resolves the siblings (Riak's "sibling explosion" guard).
pub const MAX_SIBLINGS: usize = 64;
/// The most entries a context (version vector) may carry. A context names the
/// nodes that coordinated writes of one key: its owners and stand-ins over its
/// life, a few nodes per ring change that moved it, whatever the ring's size.
pub const MAX_CONTEXT_ENTRIES: usize = 256;
/// The largest encoded object (all siblings of one key) a put may produce. Keeps
/// every object well inside [`MAX_FRAME_BYTES`].
pub const MAX_OBJECT_BYTES: usize = 8 * 1024 * 1024;
/// The largest object a node takes from another node as a copy of data already
/// stored elsewhere (a replica write, a hint, read repair, a ring change's
/// transfer, anti-entropy). A put never makes an object above
/// [`MAX_OBJECT_BYTES`], but merges are not capped: two concurrent puts through
/// two coordinators can each stay under the limit while their merge on a
/// replica does not, and refusing the merge would leave the replicas apart for
/// good. So copies are taken up to this bound, with a logged warning above
/// [`MAX_OBJECT_BYTES`]; it leaves room for the key and the framing inside
/// [`MAX_FRAME_BYTES`], and an object above it (it cannot travel in one frame
/// anyway) is refused for good and reported with its key by the sender.
pub const MAX_COPY_BYTES: usize = 12 * 1024 * 1024;
/// The largest RPC frame read from or written to a socket. A length prefix above
/// this closes the connection before anything is allocated.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// The longest node identity (`HOST:PORT`) accepted.
pub const MAX_NODE_ID_BYTES: usize = 255;

/// The stored and transported form of a value: reference-counted bytes, so the
/// fan-out to N replicas shares one buffer instead of copying it.
pub type Value = bytes::Bytes;

/// A key as users type it: one token of UTF-8 text.
pub type Key = String;

/// A node's identity: `HOST:PORT`, the address other nodes and clients reach it at.
///
/// Identities are compared as strings: `localhost:13337` and `127.0.0.1:13337` are
/// different nodes as far as the ring is concerned.
///
/// Deserialising validates, so an identity decoded from a peer, a context or the
/// disk is always well formed. The text is shared (`Arc<str>`): identities are
/// cloned into every preference list, context and reply, and a clone must not
/// allocate. Nor, mostly, must a decode: every object carries the identities of
/// its writers, and a ring has a handful, so each thread keeps the last
/// [`KNOWN_NODE_IDS`] it decoded and hands out those again (no allocation, no
/// second validation).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Identities each thread keeps for decoding (see [`NodeId`]); more than a ring
/// has members in practice, few enough to search one by one.
pub const KNOWN_NODE_IDS: usize = 32;

thread_local! {
    static KNOWN: std::cell::RefCell<Vec<NodeId>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl NodeId {
    /// `s` parsed, or the identity with that text this thread decoded before.
    fn decode(s: &str) -> Result<NodeId> {
        let known = KNOWN.with(|k| k.borrow().iter().find(|n| &*n.0 == s).cloned());
        if let Some(n) = known {
            return Ok(n);
        }
        let n: NodeId = s.parse()?;
        KNOWN.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= KNOWN_NODE_IDS {
                k.remove(0);
            }
            k.push(n.clone());
        });
        Ok(n)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node address HOST:PORT")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<NodeId, E> {
                NodeId::decode(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

impl NodeId {
    /// Builds an identity from a host and a port.
    pub fn new(host: &str, port: u16) -> Result<Self> {
        format!("{host}:{port}").parse()
    }

    /// The identity as written, `HOST:PORT`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part (everything before the last `:`).
    pub fn host(&self) -> &str {
        self.0.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.0)
    }

    /// The port part. Always valid: it was checked on parse.
    pub fn port(&self) -> u16 {
        self.0
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }
}

impl FromStr for NodeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidInput {
            reason: format!("bad node address {s:?}: {why} (expected HOST:PORT)"),
        };
        if s.len() > MAX_NODE_ID_BYTES {
            return Err(bad("too long"));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            return Err(bad("host has spaces, quotes or control characters"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("port must be 1-65535")),
        }
        Ok(NodeId(Arc::from(s)))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The cluster's replication settings: N replicas per key, W acks for a write,
/// R answers for a read. The leader's values are the cluster's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// Replicas per key (`--qsize`).
    pub n: usize,
    /// Acknowledgements a write needs (`--sq-write-n`).
    pub w: usize,
    /// Answers a read needs (`--sq-read-n`).
    pub r: usize,
}

/// N (replicas per key) when none is given: the Dynamo paper's and Riak's.
pub const DEFAULT_N: usize = 3;
/// W (acks a write needs) when none is given: a majority of [`DEFAULT_N`].
pub const DEFAULT_W: usize = 2;
/// R (answers a read needs) when none is given: a majority of [`DEFAULT_N`], so
/// R + W > N and every read overlaps every acknowledged write.
pub const DEFAULT_R: usize = 2;

impl Default for Replication {
    fn default() -> Self {
        Replication {
            n: DEFAULT_N,
            w: DEFAULT_W,
            r: DEFAULT_R,
        }
    }
}

impl Replication {
    /// Checks `1 <= W <= N` and `1 <= R <= N`.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::Config {
                reason: "--qsize (N) must be at least 1".into(),
            });
        }
        if self.w == 0 || self.w > self.n {
            return Err(Error::Config {
                reason: format!(
                    "--sq-write-n (W) must be between 1 and --qsize (N = {}), got {}",
                    self.n, self.w
                ),
            });
        }
        if self.r == 0 || self.r > self.n {
            return Err(Error::Config {
                reason: format!(
                    "--sq-read-n (R) must be between 1 and --qsize (N = {}), got {}",
                    self.n, self.r
                ),
            });
        }
        Ok(())
    }
}

/// A duration as people write it (`500ms`, `30s`, `5m`, `12h`, `7d`; a bare
/// number is seconds), in milliseconds. Zero and overflow are refused.
pub fn parse_duration(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "bad duration {text:?}: write a whole number with a unit, e.g. 500ms, 30s, 5m, 12h, 7d"
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

/// The character that starts a key of a bucket other than `default` (see
/// [`bucket_key`]). A user's key may not begin with it.
pub const BUCKET_MARK: char = '\0';

/// The key the ring stores `key` of the bucket with id `id` under: the
/// [`BUCKET_MARK`], the id in decimal, the mark again, then the key. Keys of
/// the default bucket are stored as they are written, so nothing stored
/// before buckets existed moves.
pub fn bucket_key(id: u32, key: &str) -> Key {
    format!("{BUCKET_MARK}{id}{BUCKET_MARK}{key}")
}

/// The bucket id and the user's key of a stored key made by [`bucket_key`];
/// None for a key of the default bucket (or one that is not well formed).
pub fn split_bucket_key(key: &str) -> Option<(u32, &str)> {
    let rest = key.strip_prefix(BUCKET_MARK)?;
    let (id, user) = rest.split_once(BUCKET_MARK)?;
    if id.is_empty() || id.len() > 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id.parse().ok()?, user))
}

/// The part of a stored key the user wrote (the key itself in the default bucket).
pub fn user_key(key: &str) -> &str {
    split_bucket_key(key).map_or(key, |(_, k)| k)
}

/// The prefix every stored key of bucket `id` starts with.
pub fn bucket_prefix(id: u32) -> String {
    bucket_key(id, "")
}

/// Checks a key a user typed: [`check_key`], and not the [`BUCKET_MARK`]
/// first (that would address a bucket by its internal id).
pub fn check_user_key(key: &str) -> Result<()> {
    if key.starts_with(BUCKET_MARK) {
        return Err(Error::invalid(
            "a key may not begin with a NUL character (it is reserved for buckets)",
        ));
    }
    check_key(key)
}

/// Checks a key against [`MAX_KEY_BYTES`]; empty keys are refused too. In a
/// bucket the limits apply to the user's part of the key.
pub fn check_key(key: &str) -> Result<()> {
    let key = user_key(key);
    if key.is_empty() {
        return Err(Error::InvalidInput {
            reason: "empty key".into(),
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::KeyTooLarge {
            size: key.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// Checks a value against [`MAX_VALUE_BYTES`].
pub fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::ValueTooLarge {
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// The longest media type a value may carry (`Content-Type` of an HTTP put).
pub const MAX_MEDIA_TYPE_BYTES: usize = 256;

/// Checks a value's media type: at most [`MAX_MEDIA_TYPE_BYTES`] of visible
/// ASCII and spaces (what an HTTP header may hold), not empty.
pub fn check_media_type(media_type: &str) -> Result<()> {
    if media_type.is_empty()
        || media_type.len() > MAX_MEDIA_TYPE_BYTES
        || !media_type
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Err(Error::InvalidInput {
            reason: format!(
                "bad content type: it must be 1 to {MAX_MEDIA_TYPE_BYTES} bytes of visible ASCII"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded identity is shared with the one this thread decoded before
    /// (no allocation); decoding still validates, with more distinct
    /// identities than a thread keeps too.
    #[test]
    fn decoded_node_ids_are_shared_and_still_validated() {
        let wire = |s: &str| bincode::serialize(s).unwrap();
        let a: NodeId = bincode::deserialize(&wire("10.0.0.1:7000")).unwrap();
        let b: NodeId = bincode::deserialize(&wire("10.0.0.1:7000")).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        for i in 0..3 * KNOWN_NODE_IDS {
            let text = format!("h{i}:{}", 1000 + i);
            let id: NodeId = bincode::deserialize(&wire(&text)).unwrap();
            assert_eq!(id.as_str(), text);
            assert!(bincode::deserialize::<NodeId>(&wire(&format!("h{i}"))).is_err());
        }
        let json: NodeId = serde_json::from_str(r#""10.0.0.1:7000""#).unwrap();
        assert_eq!(json, a);
        assert!(serde_json::from_str::<NodeId>(r#""a b:1""#).is_err());
    }

    #[test]
    fn node_ids_parse_and_reject() {
        let id: NodeId = "127.0.0.1:13337".parse().unwrap();
        assert_eq!(id.host(), "127.0.0.1");
        assert_eq!(id.port(), 13337);
        for bad in [
            "", "host", ":1", "h:0", "h:70000", "h:x", "a b:1", "\"h\":1",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn media_types_are_short_visible_ascii() {
        assert!(check_media_type("image/png").is_ok());
        assert!(check_media_type("text/plain; charset=utf-8").is_ok());
        assert!(check_media_type("").is_err());
        assert!(check_media_type("a\nb").is_err());
        assert!(check_media_type(&"x".repeat(MAX_MEDIA_TYPE_BYTES + 1)).is_err());
    }

    #[test]
    fn replication_bounds() {
        assert!(Replication { n: 3, w: 2, r: 2 }.validate().is_ok());
        assert!(Replication { n: 3, w: 4, r: 2 }.validate().is_err());
        assert!(Replication { n: 3, w: 2, r: 0 }.validate().is_err());
        assert!(Replication { n: 0, w: 0, r: 0 }.validate().is_err());
    }
}

// ---------------------------------------------------------------------------
// Users and roles (checked in crate::security; kept in the ring state)
// ---------------------------------------------------------------------------

/// What a token may do. Ordered: each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `get`, `status`, `locate`, `scan`.
    Readonly,
    /// And `put`, `delete`.
    Readwrite,
    /// And ring changes and users.
    Admin,
}

impl Role {
    /// The role's byte in the handshake.
    pub fn code(self) -> u8 {
        match self {
            Role::Readonly => 0,
            Role::Readwrite => 1,
            Role::Admin => 2,
        }
    }

    /// The role of a handshake byte.
    pub fn from_code(code: u8) -> Option<Role> {
        match code {
            0 => Some(Role::Readonly),
            1 => Some(Role::Readwrite),
            2 => Some(Role::Admin),
            _ => None,
        }
    }

    /// Its name, as written in commands and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::Readwrite => "readwrite",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Role> {
        match s {
            "admin" => Ok(Role::Admin),
            "readwrite" => Ok(Role::Readwrite),
            "readonly" => Ok(Role::Readonly),
            other => Err(crate::error::Error::invalid(format!(
                "unknown role {other:?}: roles are admin, readwrite and readonly"
            ))),
        }
    }
}

/// A user as the ring keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub role: Role,
    /// [`TokenDigest::to_hex`] of the user's token.
    pub token_sha256: String,
}

/// The longest user name.
pub const MAX_USER_NAME: usize = 64;
/// The most users a ring holds.
pub const MAX_USERS: usize = 1000;

/// Checks a user name: 1 to [`MAX_USER_NAME`] letters, digits, `_`, `-`, `.`.
pub fn check_user_name(name: &str) -> crate::error::Result<()> {
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return Err(crate::error::Error::invalid(format!(
            "a user name has 1 to {MAX_USER_NAME} characters"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(crate::error::Error::invalid(format!(
            "user name {name:?}: use letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations_are_read_with_their_units() {
        assert_eq!(parse_duration("500ms").unwrap(), 500);
        assert_eq!(parse_duration("30s").unwrap(), 30_000);
        assert_eq!(parse_duration("30").unwrap(), 30_000);
        assert_eq!(parse_duration("5m").unwrap(), 300_000);
        assert_eq!(parse_duration("12h").unwrap(), 43_200_000);
        assert_eq!(parse_duration("7d").unwrap(), 604_800_000);
        for bad in ["", "0s", "s", "5x", "-5s", "1.5s", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains("bad duration"), "{bad}: {e}");
        }
    }
}
