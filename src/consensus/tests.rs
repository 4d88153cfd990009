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
