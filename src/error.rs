//! The one error type of dynamo. It crosses the wire inside RPC responses
//! (`Result<T, Error>`), so every variant is serialisable and carries its data in
//! named fields; its `Display` text is what users see after `error:` in the REPL
//! and in the `"error"` field of `--json` output.
//!
//! Expected outcomes are not errors: a missing key is an empty `get`, concurrent
//! versions are siblings. Errors are for requests that could not be carried out.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one replica (or stand-in) did not take part in a quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFailure {
    /// The node that failed.
    pub node: NodeId,
    /// What went wrong, for people.
    pub reason: String,
}

impl fmt::Display for ReplicaFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.reason)
    }
}

/// Renders failures as `a: why; b: why`, or `no other node to try` when empty.
fn list(failures: &[ReplicaFailure]) -> String {
    if failures.is_empty() {
        return "no other node to try".into();
    }
    failures
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a failed write's message adds when some node acknowledged it: the
/// write is not undone there, so it can still be read later.
fn stored_note(acked: usize) -> &'static str {
    if acked == 0 {
        ""
    } else {
        "; the write may still have been stored on the nodes that acked it and be read later"
    }
}

/// Everything that can go wrong, named after what the user asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// Fewer than W nodes of the whole ring acknowledged a write.
    #[error(
        "write quorum not reached: {acked} of {needed} acks ({}){}",
        list(.failures),
        stored_note(*.acked)
    )]
    WriteQuorum {
        needed: usize,
        acked: usize,
        failures: Vec<ReplicaFailure>,
    },
    /// Fewer than R nodes answered a read.
    #[error("read quorum not reached: {answered} of {needed} answers ({})", list(.failures))]
    ReadQuorum {
        needed: usize,
        answered: usize,
        failures: Vec<ReplicaFailure>,
    },
    /// A membership change was sent to a node that is not the leader.
    #[error("not the leader: the leader is {leader}")]
    NotLeader { leader: NodeId },
    /// The request was malformed (bad token, bad address, bad command).
    #[error("{reason}")]
    InvalidInput { reason: String },
    /// A context could not be parsed or is out of bounds.
    #[error("bad context: {reason}")]
    BadContext { reason: String },
    /// Key longer than `MAX_KEY_BYTES`.
    #[error("key too large: {size} bytes, the limit is {limit} bytes")]
    KeyTooLarge { size: usize, limit: usize },
    /// Value longer than `MAX_VALUE_BYTES`.
    #[error("value too large: {size} bytes, the limit is {limit} bytes")]
    ValueTooLarge { size: usize, limit: usize },
    /// The write would leave more than `MAX_SIBLINGS` versions of the key.
    #[error(
        "too many siblings: the key would have {count} versions, the limit is {limit}; \
         get the key and put with its merged context to resolve them"
    )]
    TooManySiblings { count: usize, limit: usize },
    /// All versions of the key together would exceed `MAX_OBJECT_BYTES`.
    #[error(
        "object too large: the key's versions would take {size} bytes, the limit is {limit} bytes; \
         resolve its siblings first"
    )]
    ObjectTooLarge { size: usize, limit: usize },
    /// This node does not know the ring yet (it has not been added, or the leader
    /// has not been reached).
    #[error("no ring yet: this node has not learned the ring from the leader {leader}")]
    NoRing { leader: NodeId },
    /// A membership request that cannot be carried out as asked.
    #[error("{reason}")]
    Membership { reason: String },
    /// A node could not be reached or did not answer.
    #[error("{node}: {reason}")]
    Unreachable { node: NodeId, reason: String },
    /// The request ran out of time.
    #[error("timed out after {millis} ms: {what}")]
    Timeout { what: String, millis: u64 },
    /// A settings problem found at start-up.
    #[error("{reason}")]
    Config { reason: String },
    /// The local store failed (disk full, corrupt record, ...).
    #[error("storage error: {reason}")]
    Storage { reason: String },
    /// A node-to-node write placed under an older ring than the receiver's: the
    /// ring changed while the request ran. The coordinator learns the new ring;
    /// the client may retry (the write may already be stored on some nodes).
    #[error("the ring changed while the request ran: it was placed under epoch {sent}, {node} is at epoch {current}")]
    StaleRing {
        node: NodeId,
        sent: u64,
        current: u64,
    },
    /// A node-to-node call reached a node that is not the member it was meant
    /// for (another data directory at the address, or another address).
    #[error("{node} is not the member the ring knows at that address: {reason}")]
    Stranger { node: NodeId, reason: String },
    /// The node lost its data directory and is refilling from its peers: its
    /// copy may lack acknowledged writes, so a read must not count it.
    #[error("{node} is refilling after losing its data directory; its copy does not count for reads yet")]
    Restoring { node: NodeId },
    /// The node is shutting down and takes no new requests.
    #[error("node is shutting down")]
    ShuttingDown,
    /// A bug or an impossible state, reported instead of panicking.
    #[error("internal error: {reason}")]
    Internal { reason: String },
    /// A node-to-node call that stores data came from a node that is not in
    /// the receiver's ring (it was removed, its join was aborted, or it was
    /// never added): a node outside the ring never writes into it.
    #[error("{node} may not write into the ring: {reason}")]
    Fenced { node: NodeId, reason: String },
    /// This node was removed from the ring at `epoch` while it was away: it
    /// keeps its data untouched for the operator and serves nothing.
    #[error(
        "{node} was removed from the ring at epoch {epoch} while it was away; it serves \
         nothing and hands nothing off. Delete its data directory before adding it again"
    )]
    Removed { node: NodeId, epoch: u64 },
    /// A ring was not persisted because this node has already stored one of
    /// the same or a newer epoch (two installs raced; the newer one stays).
    #[error("ring of epoch {sent} not saved: epoch {current} is already stored")]
    RingNotNewer { sent: u64, current: u64 },
    /// No credential, or one the ring does not know (see [`crate::security`]).
    #[error("unauthorized: {reason}")]
    Unauthorized { reason: String },
    /// A known credential whose role may not make this request.
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    /// A key addressed in a bucket the ring does not have (never created, or dropped).
    #[error("no such bucket: {bucket}")]
    NoSuchBucket { bucket: String },
    /// A write that would take a bucket past its quota.
    #[error(
        "quota exceeded: bucket {bucket} holds about {used} bytes of its {quota}-byte quota; \
         delete keys or raise the quota (bucket create {bucket} quota=SIZE)"
    )]
    QuotaExceeded {
        bucket: String,
        used: u64,
        quota: u64,
    },
}

impl Error {
    /// Builds [`Error::InvalidInput`].
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Storage`].
    pub fn storage(reason: impl fmt::Display) -> Self {
        Error::Storage {
            reason: reason.to_string(),
        }
    }

    /// Builds [`Error::Internal`].
    pub fn internal(reason: impl fmt::Display) -> Self {
        Error::Internal {
            reason: reason.to_string(),
        }
    }

    /// Whether the same call may succeed if sent again later: true for
    /// failures of the moment (a node down or behind, a ring that changed, a
    /// refill, a disk error that may clear), false for a refusal that the
    /// same request will always get (bad or oversized input, a sender the
    /// ring does not admit, a node removed from the ring). Background work
    /// (a ring change's transfer, anti-entropy, handoff) retries the first
    /// kind and reports the second instead of retrying it for ever.
    pub fn retryable(&self) -> bool {
        match self {
            Error::WriteQuorum { .. }
            | Error::ReadQuorum { .. }
            | Error::NotLeader { .. }
            | Error::NoRing { .. }
            | Error::Unreachable { .. }
            | Error::Timeout { .. }
            | Error::Storage { .. }
            | Error::StaleRing { .. }
            | Error::Stranger { .. }
            | Error::Restoring { .. }
            | Error::ShuttingDown
            | Error::RingNotNewer { .. }
            | Error::Internal { .. } => true,
            Error::InvalidInput { .. }
            | Error::BadContext { .. }
            | Error::KeyTooLarge { .. }
            | Error::ValueTooLarge { .. }
            | Error::TooManySiblings { .. }
            | Error::ObjectTooLarge { .. }
            | Error::Membership { .. }
            | Error::Config { .. }
            | Error::Fenced { .. }
            | Error::Removed { .. }
            | Error::Unauthorized { .. }
            | Error::Forbidden { .. }
            | Error::NoSuchBucket { .. }
            | Error::QuotaExceeded { .. } => false,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::storage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_error_names_each_failure() {
        let e = Error::WriteQuorum {
            needed: 2,
            acked: 1,
            failures: vec![ReplicaFailure {
                node: "127.0.0.1:13338".parse().unwrap(),
                reason: "connection refused".into(),
            }],
        };
        assert_eq!(
            e.to_string(),
            "write quorum not reached: 1 of 2 acks (127.0.0.1:13338: connection refused); \
             the write may still have been stored on the nodes that acked it and be read later"
        );
        let none = Error::WriteQuorum {
            needed: 2,
            acked: 0,
            failures: vec![],
        };
        assert_eq!(
            none.to_string(),
            "write quorum not reached: 0 of 2 acks (no other node to try)"
        );
    }

    #[test]
    fn refusals_for_good_are_not_worth_retrying() {
        let node: NodeId = "127.0.0.1:1".parse().unwrap();
        let again = [
            Error::Unreachable {
                node: node.clone(),
                reason: "connection refused".into(),
            },
            Error::StaleRing {
                node: node.clone(),
                sent: 3,
                current: 4,
            },
            Error::Restoring { node: node.clone() },
            Error::storage("disk full"),
        ];
        assert!(again.iter().all(Error::retryable));
        let never = [
            Error::ObjectTooLarge { size: 9, limit: 8 },
            Error::KeyTooLarge { size: 9, limit: 8 },
            Error::Fenced {
                node: node.clone(),
                reason: "not in the ring".into(),
            },
            Error::Removed { node, epoch: 7 },
        ];
        assert!(!never.iter().any(Error::retryable));
    }

    #[test]
    fn not_leader_names_the_leader() {
        let e = Error::NotLeader {
            leader: "10.0.0.1:13337".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "not the leader: the leader is 10.0.0.1:13337"
        );
    }
}
