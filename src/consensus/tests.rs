use std::collections::BTreeSet;
use std::sync::Arc;

use super::store::{LogStore, Machine, RingMachine};
use super::*;
use crate::config::FsyncMode;
use crate::storage::Storage;
use crate::types::Replication;

fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn members(n: usize) -> Vec<NodeId> {
    (0..n)
        .map(|i| id(&format!("127.0.0.1:{}", 20000 + i)))
        .collect()
}

/// The log store and state machine pass openraft's own storage suite (every
/// case on a fresh in-memory sled store).
#[test]
fn the_store_passes_openrafts_suite() {
    struct Builder;
    impl openraft::testing::StoreBuilder<RingRaft, LogStore, RingMachine, ()> for Builder {
        async fn build(&self) -> Result<((), LogStore, RingMachine), openraft::StorageError<u128>> {
            let storage = Arc::new(Storage::open(None, FsyncMode::Never).unwrap());
            Ok((
                (),
                LogStore::open(storage.clone()).unwrap(),
                RingMachine::open(storage, None).unwrap(),
            ))
        }
    }
    openraft::testing::Suite::test_all(Builder).unwrap();
}

/// A proposal applies only on the ring it was computed from.
#[test]
fn a_proposal_from_another_ring_than_the_applied_one_is_stale() {
    let m = members(3);
    let first = RingState::bootstrap(m[0].clone(), Replication { n: 3, w: 2, r: 2 });
    let second = first.with_member(m[1].clone()).unwrap();
    let third = second.with_member(m[2].clone()).unwrap();
    let mut machine = Machine::default();
    let propose = |from: Option<u64>, next: &RingState| RingCmd::Propose {
        from,
        next: next.clone(),
    };
    // Nothing can be built on a ring the machine does not have.
    assert_eq!(
        machine.apply(&propose(Some(first.epoch), &second)),
        Applied::Stale { applied: None }
    );
    assert_eq!(
        machine.apply(&propose(None, &first)),
        Applied::Ring { epoch: first.epoch }
    );
    // A second founding ring, or one computed from a ring since replaced.
    assert_eq!(
        machine.apply(&propose(None, &first)),
        Applied::Stale {
            applied: Some(first.epoch)
        }
    );
    assert_eq!(
        machine.apply(&propose(Some(first.epoch), &second)),
        Applied::Ring {
            epoch: second.epoch
        }
    );
    assert_eq!(
        machine.apply(&propose(Some(first.epoch), &third)),
        Applied::Stale {
            applied: Some(second.epoch)
        }
    );
    // Never backwards, even from the applied epoch.
    assert_eq!(
        machine.apply(&propose(Some(second.epoch), &first)),
        Applied::Stale {
            applied: Some(second.epoch)
        }
    );
    assert_eq!(machine.ring.as_ref().map(|r| r.epoch), Some(second.epoch));
}

#[test]
fn voters_are_an_odd_number_up_to_five_keeping_current_ones() {
    let m = members(8);
    let none = BTreeSet::new();
    let set = |v: &[usize]| v.iter().map(|i| m[*i].clone()).collect::<BTreeSet<_>>();
    assert_eq!(choose_voters(&m[..1], &none), set(&[0]));
    assert_eq!(choose_voters(&m[..2], &none), set(&[0]));
    assert_eq!(choose_voters(&m[..3], &none), set(&[0, 1, 2]));
    assert_eq!(choose_voters(&m[..4], &none), set(&[0, 1, 2]));
    assert_eq!(choose_voters(&m, &none), set(&[0, 1, 2, 3, 4]));
    assert!(choose_voters(&[], &none).is_empty());
    // Current voters stay; the rest come in order.
    assert_eq!(choose_voters(&m, &set(&[7, 6])), set(&[0, 1, 2, 6, 7]));
    // A voter that left is replaced by the first member not voting.
    let without_1: Vec<NodeId> = m.iter().filter(|n| **n != m[1]).cloned().collect();
    assert_eq!(
        choose_voters(&without_1, &set(&[0, 1, 2, 3, 4])),
        set(&[0, 2, 3, 4, 5])
    );
    // The same set whatever order the members come in.
    let mut reversed = m.clone();
    reversed.reverse();
    assert_eq!(choose_voters(&reversed, &none), choose_voters(&m, &none));
}

/// The generator openraft draws election timeouts from is seeded in the
/// simulation: two runs of one seed draw the same timeouts.
#[test]
fn election_timeouts_draw_from_the_seeded_generator() {
    use rand_core_06::RngCore;
    let draw = |seed| {
        std::thread::spawn(move || {
            crate::runtime::simulate(seed);
            let mut rng = <NodeRuntime as openraft::AsyncRuntime>::thread_rng();
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

/// A restart finds the vote, the log and the applied ring where they were:
/// each was durable before openraft was told so.
#[tokio::test]
async fn the_vote_log_and_ring_survive_a_reopen() {
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    use openraft::RaftLogReader;
    let dir = tempfile::tempdir().unwrap();
    let m = members(1);
    let ring = RingState::bootstrap(m[0].clone(), Replication { n: 3, w: 2, r: 2 });
    let lid = |i: u64| openraft::LogId::new(openraft::CommittedLeaderId::new(2, 9u128), i);
    let vote = openraft::Vote::new(2, 9u128);
    let installed = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let storage = Arc::new(Storage::open(Some(dir.path()), FsyncMode::Always).unwrap());
        let mut log = LogStore::open(storage.clone()).unwrap();
        log.save_vote(&vote).await.unwrap();
        let seen = installed.clone();
        let on_ring: store::OnRing = Arc::new(move |r: RingState| {
            seen.lock().unwrap().push(r.epoch);
            Box::pin(async {})
        });
        let mut sm = RingMachine::open(storage, Some(on_ring)).unwrap();
        let entry = openraft::Entry::<RingRaft> {
            log_id: lid(1),
            payload: openraft::EntryPayload::Normal(RingCmd::Propose {
                from: None,
                next: ring.clone(),
            }),
        };
        let out = sm.apply([entry]).await.unwrap();
        assert_eq!(out, vec![Applied::Ring { epoch: ring.epoch }]);
    }
    assert_eq!(
        *installed.lock().unwrap(),
        vec![ring.epoch],
        "the node was handed the ring"
    );
    let storage = Arc::new(Storage::open(Some(dir.path()), FsyncMode::Always).unwrap());
    let mut log = LogStore::open(storage.clone()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert!(log.try_get_log_entries(0..10).await.unwrap().is_empty());
    let mut sm = RingMachine::open(storage, None).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(1)));
    assert_eq!(sm.machine().ring.as_ref(), Some(&ring));
}

/// The Raft log and state machine written by the version before users were
/// part of the ring state are read and converted (no users), not refused:
/// a node upgraded in place keeps its place in the ring's election.
#[tokio::test]
async fn a_log_and_machine_from_before_users_are_read_and_converted() {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftLogReader;
    use serde::Serialize;
    #[derive(Serialize)]
    struct RingV4 {
        epoch: u64,
        leader: NodeId,
        members: Vec<NodeId>,
        replication: Replication,
        tokens_per_node: u32,
        identities: std::collections::BTreeMap<NodeId, uuid::Uuid>,
        transition: Option<crate::ring::Transition>,
        incarnations: std::collections::BTreeMap<NodeId, crate::ring::Incarnation>,
        departed: std::collections::BTreeMap<NodeId, crate::ring::Departure>,
    }
    #[derive(Serialize)]
    enum CmdV4 {
        Propose { from: Option<u64>, next: RingV4 },
    }
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum PayloadV4 {
        Blank,
        Normal(CmdV4),
    }
    #[derive(Serialize)]
    struct EntryV4 {
        log_id: openraft::LogId<u128>,
        payload: PayloadV4,
    }
    #[derive(Serialize)]
    struct MachineV4 {
        applied: Option<openraft::LogId<u128>>,
        membership: openraft::StoredMembership<u128, openraft::BasicNode>,
        ring: Option<RingV4>,
    }
    let ring = RingState::bootstrap(id("a:1"), Replication { n: 3, w: 2, r: 2 })
        .with_member(id("b:1"))
        .unwrap();
    let v4 = |r: &RingState| RingV4 {
        epoch: r.epoch,
        leader: r.leader.clone(),
        members: r.members.clone(),
        replication: r.replication,
        tokens_per_node: r.tokens_per_node,
        identities: r.identities.clone(),
        transition: r.transition.clone(),
        incarnations: r.incarnations.clone(),
        departed: r.departed.clone(),
    };
    let lid = |i: u64| openraft::LogId::new(openraft::CommittedLeaderId::new(3, 7u128), i);
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(Some(dir.path()), FsyncMode::Always).unwrap();
        let (log, state) = storage.raft_trees().unwrap();
        let entries = [
            EntryV4 {
                log_id: lid(1),
                payload: PayloadV4::Blank,
            },
            EntryV4 {
                log_id: lid(2),
                payload: PayloadV4::Normal(CmdV4::Propose {
                    from: Some(1),
                    next: v4(&ring),
                }),
            },
        ];
        for e in &entries {
            let raw = bincode::serialize(e).unwrap();
            log.insert(e.log_id.index.to_be_bytes(), raw).unwrap();
        }
        let machine = MachineV4 {
            applied: Some(lid(2)),
            membership: Default::default(),
            ring: Some(v4(&ring)),
        };
        state
            .insert(b"machine", bincode::serialize(&machine).unwrap())
            .unwrap();
        storage.flush().unwrap();
    }
    let storage = Arc::new(Storage::open(Some(dir.path()), FsyncMode::Always).unwrap());
    let mut log = LogStore::open(storage.clone()).unwrap();
    let entries = log.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(matches!(entries[0].payload, openraft::EntryPayload::Blank));
    match &entries[1].payload {
        openraft::EntryPayload::Normal(RingCmd::Propose { from, next }) => {
            assert_eq!(*from, Some(1));
            assert_eq!(next, &ring);
            assert!(next.users.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let mut sm = RingMachine::open(storage, None).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(2)));
    assert_eq!(sm.machine().ring.as_ref(), Some(&ring));
}
