use super::*;
use crate::vclock::Content;

fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn val(s: &str) -> Content {
    Content::Value(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

fn values(obj: &Object) -> Vec<String> {
    obj.values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[test]
fn coordinate_twice_blind_keeps_both_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    {
        let s = Storage::open(Some(dir.path()), FsyncMode::Batch).unwrap();
        let (_, d1) = s
            .coordinate("k", &me, &VersionVector::new(), val("a"), None)
            .unwrap();
        let (obj, d2) = s
            .coordinate("k", &me, &VersionVector::new(), val("b"), None)
            .unwrap();
        assert_ne!(d1, d2);
        assert_eq!(values(&obj), vec!["a", "b"]);
        block_on(s.durable()).unwrap();
        assert_eq!(s.key_count(), 1);
    }
    let s = Storage::open(Some(dir.path()), FsyncMode::Batch).unwrap();
    let obj = s.get("k").unwrap();
    assert_eq!(values(&obj), vec!["a", "b"]);
    assert_eq!(s.key_count(), 1);
}

#[test]
fn hints_are_kept_per_target_and_read_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    let target = id("127.0.0.1:2");
    let s = Storage::open(Some(dir.path()), FsyncMode::Never).unwrap();
    let (obj, _) = s
        .coordinate("k", &me, &VersionVector::new(), val("x"), Some(&target))
        .unwrap();
    // Not the node's own replica, but visible to reads of the key.
    assert_eq!(s.key_count(), 0);
    assert_eq!(values(&s.get("k").unwrap()), vec!["x"]);
    let hints = s.hints().unwrap();
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].target, target);
    assert_eq!(hints[0].key, "k");
    assert_eq!(*hints[0].object, obj);
    // A write merged into the hint after it was read is not deleted with it.
    let mut newer = obj.clone();
    newer
        .update(&me, &VersionVector::new(), val("y"), 0)
        .unwrap();
    s.merge_hint(&target, "k", &newer).unwrap();
    assert!(!s.remove_hint(&hints[0]).unwrap());
    let hints = s.hints().unwrap();
    assert!(s.remove_hint(&hints[0]).unwrap());
    assert_eq!(s.hint_count(), 0);
}

#[test]
fn floor_prevents_dot_reuse_after_a_hint_is_delivered() {
    let me = id("127.0.0.1:1");
    let target = id("127.0.0.1:2");
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let (_, d1) = s
        .coordinate("k", &me, &VersionVector::new(), val("x"), Some(&target))
        .unwrap();
    for h in s.hints().unwrap() {
        assert!(s.remove_hint(&h).unwrap());
    }
    let (_, d2) = s
        .coordinate("k", &me, &VersionVector::new(), val("y"), Some(&target))
        .unwrap();
    assert!(d2.counter > d1.counter, "{d1:?} reused as {d2:?}");
}

#[test]
fn ring_persists() {
    let dir = tempfile::tempdir().unwrap();
    let state = RingState::bootstrap(id("127.0.0.1:1"), crate::types::Replication::default())
        .with_member(id("127.0.0.1:2"))
        .unwrap();
    {
        let s = Storage::open(Some(dir.path()), FsyncMode::Always).unwrap();
        assert_eq!(s.ring().unwrap(), None);
        s.save_ring(&state).unwrap();
        block_on(s.durable()).unwrap();
    }
    let s = Storage::open(Some(dir.path()), FsyncMode::Always).unwrap();
    assert_eq!(s.ring().unwrap(), Some(state));
}

#[test]
fn unknown_record_versions_and_garbage_are_errors_not_panics() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    s.values.insert("future", vec![99u8, 1, 2, 3]).unwrap();
    s.values
        .insert("garbage", vec![RECORD_FORMAT, 0xff, 0xff])
        .unwrap();
    s.values.insert("empty", Vec::<u8>::new()).unwrap();
    let e = s.get("future").unwrap_err().to_string();
    assert!(e.contains("format version 99"), "{e}");
    assert!(s.get("garbage").is_err());
    assert!(s.get("empty").is_err());
    // A write to a corrupt key is refused instead of overwriting it blindly.
    assert!(s.merge("garbage", &Object::new()).is_err());
}

#[test]
fn group_commit_serves_concurrent_writers_with_few_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Storage::open(Some(dir.path()), FsyncMode::Batch).unwrap());
    let me = id("127.0.0.1:1");
    let writers = 64;
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let s = s.clone();
            let me = me.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    let key = format!("k{i}-{j}");
                    s.coordinate(&key, &me, &VersionVector::new(), val("v"), None)
                        .unwrap();
                    block_on(s.durable()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let flushes = s.flush_count();
    assert_eq!(s.key_count(), 640);
    // 640 acknowledged writes; group commit must have shared flushes among them.
    assert!(flushes < 640, "{flushes} flushes for 640 writes");
    println!("640 writes, {flushes} flushes");
}

#[test]
fn always_flushes_once_per_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(Some(dir.path()), FsyncMode::Always).unwrap();
    let me = id("127.0.0.1:1");
    for i in 0..5 {
        s.coordinate(&format!("k{i}"), &me, &VersionVector::new(), val("v"), None)
            .unwrap();
        block_on(s.durable()).unwrap();
    }
    assert_eq!(s.flush_count(), 5);
}
