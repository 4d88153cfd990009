//! The ring state as older versions encoded it, read and converted to
//! [`RingState`] with what they lacked left empty (the ring record in
//! `storage::meta`, the Raft log in `consensus::store`).

use super::*;

/// The ring state as encoded before it held buckets (ring record format 5,
/// and the Raft log and state machine written by that version): read, then
/// converted with no buckets.
#[derive(Clone, Debug, Deserialize)]
pub struct RingStateV5 {
    pub epoch: u64,
    pub leader: NodeId,
    pub members: Vec<NodeId>,
    pub replication: Replication,
    pub tokens_per_node: u32,
    pub identities: BTreeMap<NodeId, Uuid>,
    pub transition: Option<Transition>,
    pub incarnations: BTreeMap<NodeId, Incarnation>,
    pub departed: BTreeMap<NodeId, Departure>,
    pub users: BTreeMap<String, crate::types::User>,
}

impl From<RingStateV5> for RingState {
    fn from(v: RingStateV5) -> RingState {
        RingState {
            epoch: v.epoch,
            leader: v.leader,
            members: v.members,
            replication: v.replication,
            tokens_per_node: v.tokens_per_node,
            identities: v.identities,
            transition: v.transition,
            incarnations: v.incarnations,
            departed: v.departed,
            users: v.users,
            buckets: Default::default(),
        }
    }
}

/// The ring state as encoded before it held users (ring record format 4,
/// and the Raft log and state machine written by that version): read, then
/// converted with no users.
#[derive(Clone, Debug, Deserialize)]
pub struct RingStateV4 {
    pub epoch: u64,
    pub leader: NodeId,
    pub members: Vec<NodeId>,
    pub replication: Replication,
    pub tokens_per_node: u32,
    pub identities: BTreeMap<NodeId, Uuid>,
    pub transition: Option<Transition>,
    pub incarnations: BTreeMap<NodeId, Incarnation>,
    pub departed: BTreeMap<NodeId, Departure>,
}

impl From<RingStateV4> for RingState {
    fn from(v: RingStateV4) -> RingState {
        RingState {
            epoch: v.epoch,
            leader: v.leader,
            members: v.members,
            replication: v.replication,
            tokens_per_node: v.tokens_per_node,
            identities: v.identities,
            transition: v.transition,
            incarnations: v.incarnations,
            departed: v.departed,
            users: BTreeMap::new(),
            buckets: Default::default(),
        }
    }
}
