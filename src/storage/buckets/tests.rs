use super::*;
use crate::config::FsyncMode;
use crate::ring::{Bucket, BucketSpec, StorageKind};
use crate::storage::tests::{block_on, id, open_dir, val, values};
use crate::types::{bucket_key, Replication};
use crate::vclock::VersionVector;

/// A ring of one node with buckets `disk` (id 0) and `mem` (id 1, memory).
fn ring_with_buckets() -> RingState {
    let mut ring = RingState::bootstrap(id("127.0.0.1:1"), Replication::default());
    let mut add = |name: &str, storage: StorageKind| {
        let spec = BucketSpec {
            storage: Some(storage),
            ..BucketSpec::default()
        };
        let b: Bucket = spec
            .resolve(ring.replication, 1, ring.buckets.next_id)
            .unwrap();
        ring.buckets.next_id += 1;
        ring.buckets.by_name.insert(name.into(), b);
    };
    add("disk", StorageKind::Disk);
    add("mem", StorageKind::Memory);
    ring
}

#[test]
fn bucket_keys_stay_out_of_the_segment_digests_and_are_listed_apart() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    let plain = "k";
    let in_bucket = bucket_key(0, "k");
    s.coordinate(plain, &me, &VersionVector::new(), val("a"), None)
        .unwrap();
    let seg = segment_of(&in_bucket);
    let before = s.segment_digest(seg);
    s.coordinate(&in_bucket, &me, &VersionVector::new(), val("b"), None)
        .unwrap();
    assert_eq!(
        s.segment_digest(seg),
        before,
        "a bucket key left the segment digest alone"
    );
    assert_ne!(s.bucket_digest(seg), 0);
    let entries = s.bucket_entries(seg).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, in_bucket);
    assert!(s.bucket_bytes(0) > 0);
    // A listing of the default bucket does not see the bucket's key; one of
    // the bucket does.
    let listed = s.list("", None, 10, 100, false, |_| true).unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["k"]
    );
    let listed = s
        .list(&bucket_key(0, ""), None, 10, 100, false, |_| true)
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].0, in_bucket);
}

#[test]
fn a_dropped_buckets_keys_are_purged_and_never_stored_again() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    let mut ring = ring_with_buckets();
    s.learn_buckets(&ring);
    for i in 0..2500 {
        s.coordinate(
            &bucket_key(0, &format!("k{i}")),
            &me,
            &VersionVector::new(),
            val("v"),
            None,
        )
        .unwrap();
    }
    s.coordinate("plain", &me, &VersionVector::new(), val("v"), None)
        .unwrap();
    assert!(s.dropped_ids_held().is_empty());
    ring.buckets.by_name.remove("disk");
    s.learn_buckets(&ring);
    assert_eq!(s.dropped_ids_held(), [0]);
    let key = bucket_key(0, "k1");
    assert!(s.is_dropped(&key));
    assert!(s
        .coordinate(&key, &me, &VersionVector::new(), val("w"), None)
        .is_err());
    let mut removed = 0;
    loop {
        let n = s.purge_bucket(0, 1000).unwrap();
        if n == 0 {
            break;
        }
        removed += n;
    }
    assert_eq!(removed, 2500);
    assert!(s.dropped_ids_held().is_empty());
    assert_eq!(s.key_count(), 1, "only the default key is left");
    assert_eq!(s.bucket_bytes(0), 0);
    // A copy that arrives late is taken as merged into nothing.
    let mut copy = Object::new();
    copy.update(&id("127.0.0.1:2"), &VersionVector::new(), val("late"), 0)
        .unwrap();
    assert!(!s.merge(&key, &copy).unwrap());
    s.merge_hint(&id("127.0.0.1:3"), &key, &copy).unwrap();
    assert_eq!(s.key_count(), 1);
    assert_eq!(s.hint_count(), 0);
}

#[test]
fn a_memory_bucket_is_forgotten_at_open_without_reusing_a_dot() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    let mem = bucket_key(1, "m");
    let disk = bucket_key(0, "d");
    let first_counter;
    {
        let s = open_dir(dir.path(), FsyncMode::Always);
        let ring = ring_with_buckets();
        s.save_ring(&ring).unwrap();
        s.learn_buckets(&ring);
        assert!(s.is_volatile(&mem) && !s.is_volatile(&disk));
        let (_, dot) = s
            .coordinate(&mem, &me, &VersionVector::new(), val("a"), None)
            .unwrap();
        first_counter = dot.counter;
        s.coordinate(&disk, &me, &VersionVector::new(), val("b"), None)
            .unwrap();
        block_on(s.durable()).unwrap();
    }
    let s = open_dir(dir.path(), FsyncMode::Always);
    assert_eq!(
        s.replica(&mem).unwrap(),
        None,
        "the memory bucket's key is gone"
    );
    assert_eq!(values(&s.replica(&disk).unwrap().unwrap()), ["b"]);
    assert_eq!(s.key_count(), 1);
    let (_, dot) = s
        .coordinate(&mem, &me, &VersionVector::new(), val("c"), None)
        .unwrap();
    assert!(
        dot.counter > first_counter && dot.counter > 1 << 32,
        "a dot above every earlier boot's: {} after {first_counter}",
        dot.counter
    );
}

#[test]
fn a_ring_record_from_before_buckets_is_still_read() {
    let ring = RingState::bootstrap(id("127.0.0.1:1"), Replication::default());
    let body = bincode::serialize(&ring).unwrap();
    // Version 5 ended where the buckets (an empty map, 8 bytes, and the
    // next id, 4) begin.
    let mut v5 = vec![5u8];
    v5.extend_from_slice(&body[..body.len() - 12]);
    assert_eq!(crate::storage::decode_ring(&v5).unwrap(), ring);
    let mut v6 = vec![crate::storage::RING_FORMAT];
    v6.extend_from_slice(&body);
    assert_eq!(crate::storage::decode_ring(&v6).unwrap(), ring);
}
