//! The ring record: saved only over an older epoch, and every older format
//! still read.

use super::*;

#[test]
fn ring_persists() {
    let dir = tempfile::tempdir().unwrap();
    let state = RingState::bootstrap(id("127.0.0.1:1"), crate::types::Replication::default())
        .with_member(id("127.0.0.1:2"))
        .unwrap();
    {
        let s = open_dir(dir.path(), FsyncMode::Always);
        assert_eq!(s.ring().unwrap(), None);
        s.save_ring(&state).unwrap();
        block_on(s.durable()).unwrap();
    }
    let s = open_dir(dir.path(), FsyncMode::Always);
    assert_eq!(s.ring().unwrap(), Some(state));
}

fn ring_at(epoch: u64) -> RingState {
    let mut state = RingState::bootstrap(id("127.0.0.1:1"), crate::types::Replication::default());
    state.epoch = epoch;
    state
}

#[test]
fn a_ring_is_saved_only_over_an_older_epoch() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    s.save_ring(&ring_at(5)).unwrap();
    for stale in [4, 5] {
        assert_eq!(
            s.save_ring(&ring_at(stale)),
            Err(Error::RingNotNewer {
                sent: stale,
                current: 5
            })
        );
        assert_eq!(s.ring().unwrap().unwrap().epoch, 5);
    }
    s.save_ring(&ring_at(6)).unwrap();
    assert_eq!(s.ring().unwrap().unwrap().epoch, 6);
}

/// Racing saves (two installs that both passed the in-memory epoch check)
/// leave the newest epoch stored, whatever order they land in.
#[test]
fn racing_ring_saves_keep_the_newest() {
    let s = std::sync::Arc::new(Storage::open(None, FsyncMode::Never).unwrap());
    for round in 0..20u64 {
        let base = round * 100;
        let threads: Vec<_> = (1..=8u64)
            .map(|i| {
                let s = s.clone();
                // Newest first, so without the check an older save lands last.
                let epoch = base + 9 - i;
                std::thread::spawn(move || {
                    let _ = s.save_ring(&ring_at(epoch));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.ring().unwrap().unwrap().epoch, base + 8, "round {round}");
    }
}

#[test]
fn version_1_rings_are_still_read() {
    #[derive(serde::Serialize)]
    struct V1 {
        epoch: u64,
        leader: NodeId,
        members: Vec<NodeId>,
        replication: crate::types::Replication,
        tokens_per_node: u32,
    }
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let v1 = V1 {
        epoch: 3,
        leader: id("127.0.0.1:1"),
        members: vec![id("127.0.0.1:1"), id("127.0.0.1:2")],
        replication: crate::types::Replication::default(),
        tokens_per_node: 256,
    };
    let mut raw = vec![1u8];
    bincode::serialize_into(&mut raw, &v1).unwrap();
    s.meta.insert(RING_KEY, raw).unwrap();
    let ring = s.ring().unwrap().unwrap();
    assert_eq!(ring.epoch, 3);
    assert_eq!(ring.members, v1.members);
    assert_eq!(ring.transition, None);
    assert!(ring.identities.is_empty());
    s.meta.insert(RING_KEY, vec![7u8, 1, 2]).unwrap();
    let e = s.ring().unwrap_err().to_string();
    assert!(e.contains("format version 7"), "{e}");
}

#[test]
fn a_ring_with_a_transition_persists() {
    let dir = tempfile::tempdir().unwrap();
    let uuid = uuid::Uuid::new_v4();
    let state = RingState::bootstrap(id("127.0.0.1:1"), crate::types::Replication::default())
        .begin_add(id("127.0.0.1:2"), Some(uuid), 42)
        .unwrap();
    {
        let s = open_dir(dir.path(), FsyncMode::Always);
        s.save_ring(&state).unwrap();
        s.set_marker(Marker::TransferDone, 2).unwrap();
        s.set_transfer_cursor(2, 1, &ScanCursor::at("k9")).unwrap();
        block_on(s.durable()).unwrap();
    }
    let s = open_dir(dir.path(), FsyncMode::Always);
    assert_eq!(s.ring().unwrap(), Some(state));
    assert_eq!(s.marker(Marker::TransferDone).unwrap(), 2);
    assert_eq!(s.marker(Marker::CleanupDone).unwrap(), 0);
    assert_eq!(
        s.transfer_cursor().unwrap(),
        Some((2, 1, ScanCursor::at("k9")))
    );
}

#[test]
fn version_2_rings_are_still_read() {
    #[derive(serde::Serialize)]
    struct V2 {
        epoch: u64,
        leader: NodeId,
        members: Vec<NodeId>,
        replication: crate::types::Replication,
        tokens_per_node: u32,
        identities: std::collections::BTreeMap<NodeId, uuid::Uuid>,
        transition: Option<crate::ring::Transition>,
    }
    let leader = id("127.0.0.1:1");
    let uuid = uuid::Uuid::new_v4();
    let v2 = V2 {
        epoch: 5,
        leader: leader.clone(),
        members: vec![leader.clone()],
        replication: crate::types::Replication::default(),
        tokens_per_node: 8,
        identities: [(leader.clone(), uuid)].into(),
        transition: None,
    };
    let mut raw = vec![2u8];
    bincode::serialize_into(&mut raw, &v2).unwrap();
    let ring = decode_ring(&raw).unwrap();
    assert_eq!(ring.epoch, 5);
    assert_eq!(ring.identities.get(&leader), Some(&uuid));
    assert!(ring.incarnations.is_empty());
    // With no incarnation recorded, the identity alone decides.
    assert_eq!(ring.actor(&leader, uuid), Some(leader.clone()));
    assert_eq!(ring.actor(&leader, uuid::Uuid::new_v4()), None);
}

#[test]
fn version_3_rings_are_still_read_without_departures() {
    #[derive(serde::Serialize)]
    struct V3 {
        epoch: u64,
        leader: NodeId,
        members: Vec<NodeId>,
        replication: crate::types::Replication,
        tokens_per_node: u32,
        identities: std::collections::BTreeMap<NodeId, uuid::Uuid>,
        transition: Option<crate::ring::Transition>,
        incarnations: std::collections::BTreeMap<NodeId, crate::ring::Incarnation>,
    }
    let leader = id("127.0.0.1:1");
    let uuid = uuid::Uuid::new_v4();
    let inc = crate::ring::Incarnation {
        identity: uuid,
        number: 2,
    };
    let v3 = V3 {
        epoch: 9,
        leader: leader.clone(),
        members: vec![leader.clone()],
        replication: crate::types::Replication::default(),
        tokens_per_node: 8,
        identities: [(leader.clone(), uuid)].into(),
        transition: None,
        incarnations: [(leader.clone(), inc)].into(),
    };
    let mut raw = vec![3u8];
    bincode::serialize_into(&mut raw, &v3).unwrap();
    let ring = decode_ring(&raw).unwrap();
    assert_eq!(ring.epoch, 9);
    assert_eq!(ring.incarnations.get(&leader), Some(&inc));
    assert!(ring.departed.is_empty());
    ring.validate().unwrap();
}
