use super::*;
use crate::vclock::Content;

pub(super) fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

pub(super) fn val(s: &str) -> Content {
    Content::Value(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

pub(super) fn values(obj: &Object) -> Vec<String> {
    obj.values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Opens the store in `dir`. A store dropped just before in this process may
/// still hold sled's file lock for a moment (its flusher thread is finishing),
/// so a reopen waits for it, up to five seconds, as a restarted node would.
pub(super) fn open_dir(dir: &std::path::Path, fsync: FsyncMode) -> Storage {
    let started = std::time::Instant::now();
    loop {
        match Storage::open(Some(dir), fsync) {
            Ok(s) => return s,
            Err(e) if started.elapsed() > std::time::Duration::from_secs(5) => {
                panic!("cannot open {}: {e}", dir.display())
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[test]
fn coordinate_twice_blind_keeps_both_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    {
        let s = open_dir(dir.path(), FsyncMode::Batch);
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
    let s = open_dir(dir.path(), FsyncMode::Batch);
    let obj = s.get("k").unwrap();
    assert_eq!(values(&obj), vec!["a", "b"]);
    assert_eq!(s.key_count(), 1);
}

#[test]
fn hints_are_kept_per_target_and_read_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    let target = id("127.0.0.1:2");
    let s = open_dir(dir.path(), FsyncMode::Never);
    let (obj, _) = s
        .coordinate("k", &me, &VersionVector::new(), val("x"), Some(&target))
        .unwrap();
    // Not the node's own replica, but visible to reads of the key.
    assert_eq!(s.key_count(), 0);
    assert_eq!(values(&s.get("k").unwrap()), vec!["x"]);
    let hints = s.hints().unwrap().hints;
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
    let hints = s.hints().unwrap().hints;
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
    for h in s.hints().unwrap().hints {
        assert!(s.remove_hint(&h).unwrap());
    }
    let (_, d2) = s
        .coordinate("k", &me, &VersionVector::new(), val("y"), Some(&target))
        .unwrap();
    assert!(d2.counter > d1.counter, "{d1:?} reused as {d2:?}");
}

#[test]
fn unknown_record_versions_and_garbage_are_errors_not_panics() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    s.values
        .insert(stored_key("future"), vec![99u8, 1, 2, 3])
        .unwrap();
    s.values
        .insert(stored_key("garbage"), vec![RECORD_FORMAT, 0xff, 0xff])
        .unwrap();
    s.values
        .insert(stored_key("empty"), Vec::<u8>::new())
        .unwrap();
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
    let s = std::sync::Arc::new(open_dir(dir.path(), FsyncMode::Batch));
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
    let s = open_dir(dir.path(), FsyncMode::Always);
    let me = id("127.0.0.1:1");
    for i in 0..5 {
        s.coordinate(&format!("k{i}"), &me, &VersionVector::new(), val("v"), None)
            .unwrap();
        block_on(s.durable()).unwrap();
    }
    assert_eq!(s.flush_count(), 5);
}

#[test]
fn identity_is_created_once_with_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = open_dir(dir.path(), FsyncMode::Never).uuid();
    let again = open_dir(dir.path(), FsyncMode::Never).uuid();
    assert_eq!(first, again, "a restart keeps the identity");
    let other = tempfile::tempdir().unwrap();
    let fresh = open_dir(other.path(), FsyncMode::Never).uuid();
    assert_ne!(first, fresh, "a new data directory is a new identity");
}

/// A cursor written before cursors kept the raw stored key (version 1: the
/// key as a string) still reads, as the position of that key.
#[test]
fn a_version_1_transfer_cursor_is_still_read() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    s.meta
        .insert(CURSOR_KEY, encode(&(4u64, 2u8, "k7".to_string())).unwrap())
        .unwrap();
    assert_eq!(
        s.transfer_cursor().unwrap(),
        Some((4, 2, ScanCursor::at("k7")))
    );
    s.meta.insert(CURSOR_KEY, vec![9u8, 1]).unwrap();
    assert_eq!(s.transfer_cursor().unwrap(), None, "unreadable: start over");
}

/// Paging on a store holding keys that are not UTF-8: every good key is
/// visited exactly once, each bad one is reported, and the scan ends. The
/// cursor used to be rebuilt from the lossy text of the last key, whose
/// segment is another one: the next page started elsewhere (looping or
/// skipping).
#[test]
fn paging_moves_past_keys_that_are_not_utf8() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    let good: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for k in &good {
        s.coordinate(k, &me, &VersionVector::new(), val("v"), None)
            .unwrap();
        // Right after the good key in stored order: its segment, its bytes, 0xff.
        let mut bad = stored_key(k);
        bad.push(0xff);
        s.values
            .insert(bad, encode(&Object::new()).unwrap())
            .unwrap();
    }
    for limit in [1, 3] {
        let mut seen = Vec::new();
        let mut corrupt = 0;
        let mut after: Option<ScanCursor> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 100, "the scan does not end (limit {limit})");
            let page = s.scan(after.as_ref(), limit).unwrap();
            seen.extend(page.items.iter().map(|i| i.key.clone()));
            corrupt += page.corrupt.len();
            if !page.more {
                break;
            }
            after = page.last;
        }
        let mut want = good.clone();
        want.sort_by_key(|k| (segment_of(k), k.clone()));
        assert_eq!(seen, want, "limit {limit}");
        assert_eq!(corrupt, good.len(), "limit {limit}");
    }
}

#[test]
fn scans_page_in_segment_order_and_report_corrupt_records() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    for i in 0..10 {
        s.coordinate(&format!("k{i}"), &me, &VersionVector::new(), val("v"), None)
            .unwrap();
    }
    s.values
        .insert(stored_key("k5x"), vec![RECORD_FORMAT, 0xff])
        .unwrap();
    let mut seen = Vec::new();
    let mut corrupt = Vec::new();
    let mut after: Option<ScanCursor> = None;
    loop {
        let page = s.scan(after.as_ref(), 4).unwrap();
        seen.extend(page.items.iter().map(|i| i.key.clone()));
        corrupt.extend(page.corrupt);
        if !page.more {
            break;
        }
        after = page.last;
    }
    let mut want: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    want.sort_by_key(|k| (segment_of(k), k.clone()));
    assert_eq!(seen, want);
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert!(corrupt[0].contains("k5x"), "{corrupt:?}");
}

#[test]
fn dropping_a_key_is_refused_if_it_changed_and_keeps_its_dot_floor() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    for v in ["a", "b", "c"] {
        let ctx = s.get("k").unwrap().context().clone();
        s.coordinate("k", &me, &ctx, val(v), None).unwrap();
    }
    let page = s.scan(None, 10).unwrap();
    let stored = page.items[0].clone();
    assert_eq!(stored.object.counter_of(&me), 3);

    // A write lands after the scan: the drop must not lose it.
    s.coordinate("k", &me, &VersionVector::new(), val("late"), None)
        .unwrap();
    assert!(!s.drop_value(&me, &stored).unwrap());
    assert_eq!(values(&s.get("k").unwrap()), vec!["c", "late"]);

    let stored = s.scan(None, 10).unwrap().items[0].clone();
    assert!(s.drop_value(&me, &stored).unwrap());
    assert_eq!(s.key_count(), 0);
    assert!(s.get("k").unwrap().is_empty());
    // The key comes back (a later change gives it to this node again): the next
    // dot this node issues is above every dot it issued before the drop.
    let (_, dot) = s
        .coordinate("k", &me, &VersionVector::new(), val("again"), None)
        .unwrap();
    assert_eq!(dot.counter, 5);
}

#[test]
fn merge_many_counts_changed_keys() {
    let a = Storage::open(None, FsyncMode::Never).unwrap();
    let b = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    for i in 0..5 {
        a.coordinate(&format!("k{i}"), &me, &VersionVector::new(), val("v"), None)
            .unwrap();
    }
    let items: Vec<(Key, Arc<Object>)> = a
        .scan(None, 100)
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.key, s.object))
        .collect();
    assert_eq!(b.merge_many(&items).unwrap(), 5);
    assert_eq!(
        b.merge_many(&items).unwrap(),
        0,
        "a second copy changes nothing"
    );
    assert_eq!(b.key_count(), 5);
}

#[test]
fn a_corrupt_hint_is_set_aside_not_fatal() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    let target = id("127.0.0.1:2");
    for k in ["a", "b", "c"] {
        s.coordinate(k, &me, &VersionVector::new(), val(k), Some(&target))
            .unwrap();
    }
    // One hint record's bytes rot, and one hint key is garbage.
    s.hints
        .insert(
            hint_key("b", &target).unwrap(),
            vec![RECORD_FORMAT, 0xff, 0xff],
        )
        .unwrap();
    s.hints.insert(vec![0xff, 0xff, 1], vec![1u8]).unwrap();
    s.hint_records.fetch_add(1, Ordering::Relaxed);
    // Reads of the key skip the rotten hint instead of failing.
    assert!(s.get("b").unwrap().is_empty());
    assert_eq!(values(&s.get("a").unwrap()), vec!["a"]);

    let scan = s.hints().unwrap();
    let keys: Vec<&str> = scan.hints.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(keys, vec!["a", "c"], "the good hints are still delivered");
    assert_eq!(scan.corrupt.len(), 2, "{:?}", scan.corrupt);
    // The bad records were moved aside: reported once, kept for inspection.
    assert_eq!(s.hints().unwrap().corrupt.len(), 0);
    assert_eq!(s.hint_count(), 2);
    assert_eq!(s.quarantine.len(), 2);
    // A new write held for the target under the rotten key starts afresh.
    s.coordinate("b", &me, &VersionVector::new(), val("b2"), Some(&target))
        .unwrap();
    assert_eq!(values(&s.get("b").unwrap()), vec!["b2"]);
}

#[test]
fn tombstones_are_counted_through_writes_drops_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    {
        let s = open_dir(dir.path(), FsyncMode::Never);
        for k in ["a", "b", "c"] {
            s.coordinate(k, &me, &VersionVector::new(), val(k), None)
                .unwrap();
        }
        assert_eq!(s.tombstone_count(), 0);
        for k in ["a", "b"] {
            let ctx = s.get(k).unwrap().context().clone();
            s.coordinate(k, &me, &ctx, Content::Tombstone, None)
                .unwrap();
        }
        assert_eq!(s.tombstone_count(), 2);
        // Written again over its tombstone: a live key once more.
        let ctx = s.get("b").unwrap().context().clone();
        s.coordinate("b", &me, &ctx, val("again"), None).unwrap();
        assert_eq!(s.tombstone_count(), 1);
        // A replica merge that brings a delete counts too.
        let other = Storage::open(None, FsyncMode::Never).unwrap();
        other.merge("c", &s.get("c").unwrap()).unwrap();
        let ctx = other.get("c").unwrap().context().clone();
        let (deleted, _) = other
            .coordinate("c", &id("127.0.0.1:2"), &ctx, Content::Tombstone, None)
            .unwrap();
        s.merge("c", &deleted).unwrap();
        assert_eq!(s.tombstone_count(), 2);
        s.flush().unwrap();
    }
    let s = open_dir(dir.path(), FsyncMode::Never);
    assert_eq!(s.tombstone_count(), 2, "recounted at open");
    let stored = s
        .scan(None, 10)
        .unwrap()
        .items
        .into_iter()
        .find(|i| i.key == "a")
        .unwrap();
    assert!(s.drop_value(&me, &stored).unwrap());
    assert_eq!(s.tombstone_count(), 1);
    assert_eq!(s.key_count(), 2);
}

/// The digests every segment would have if computed from scratch.
fn recomputed(s: &Storage) -> std::collections::BTreeMap<Segment, u64> {
    let mut out = std::collections::BTreeMap::new();
    for item in s.values.iter() {
        let (k, raw) = item.unwrap();
        let (seg, key) = split_stored_key(&k).unwrap();
        *out.entry(seg).or_insert(0) ^= entry_digest(key, &raw);
    }
    out.retain(|_, d| *d != 0);
    out
}

fn kept(s: &Storage) -> std::collections::BTreeMap<Segment, u64> {
    (0..SEGMENTS)
        .map(|i| Segment::try_from(i).unwrap())
        .map(|seg| (seg, s.segment_digest(seg)))
        .filter(|(_, d)| *d != 0)
        .collect()
}

#[test]
fn segment_digests_follow_every_write_and_drop_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    let other = id("127.0.0.1:2");
    {
        let s = open_dir(dir.path(), FsyncMode::Batch);
        assert!(kept(&s).is_empty());
        for i in 0..300 {
            s.coordinate(&format!("k{i}"), &me, &VersionVector::new(), val("a"), None)
                .unwrap();
        }
        // Overwrites, merges from a peer, hints (not part of the replica) and drops.
        for i in 0..100 {
            s.coordinate(&format!("k{i}"), &me, &VersionVector::new(), val("b"), None)
                .unwrap();
        }
        let mut theirs = Object::new();
        theirs
            .update(&other, &VersionVector::new(), val("c"), 0)
            .unwrap();
        for i in 50..150 {
            s.merge(&format!("k{i}"), &theirs).unwrap();
        }
        s.merge_hint(&other, "k7", &theirs).unwrap();
        let page = s.scan(None, 40).unwrap();
        for stored in &page.items {
            assert!(s.drop_value(&me, stored).unwrap());
        }
        assert_eq!(kept(&s), recomputed(&s));
        // One segment's entries add up to its digest.
        let seg = segment_of("k200");
        let entries = s.segment_entries(seg).unwrap();
        assert!(entries.iter().any(|(k, _)| k == "k200"));
        assert_eq!(
            entries.iter().fold(0, |acc, (_, d)| acc ^ d),
            s.segment_digest(seg)
        );
        block_on(s.durable()).unwrap();
    }
    let s = open_dir(dir.path(), FsyncMode::Batch);
    assert_eq!(kept(&s), recomputed(&s));
    assert_eq!(s.key_count(), 260);
}

#[test]
fn equal_replicas_have_equal_segment_digests() {
    let a = Storage::open(None, FsyncMode::Never).unwrap();
    let b = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    for i in 0..50 {
        let (obj, _) = a
            .coordinate(&format!("k{i}"), &me, &VersionVector::new(), val("v"), None)
            .unwrap();
        b.merge(&format!("k{i}"), &obj).unwrap();
    }
    assert_eq!(kept(&a), kept(&b));
    a.coordinate("k3", &me, &VersionVector::new(), val("w"), None)
        .unwrap();
    let differ: Vec<Segment> = kept(&a)
        .into_iter()
        .filter(|(seg, d)| b.segment_digest(*seg) != *d)
        .map(|(seg, _)| seg)
        .collect();
    assert_eq!(differ, vec![segment_of("k3")]);
}

#[test]
fn a_data_directory_from_before_segments_is_moved_once() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    // Write the old layout by hand: tree `values` keyed by the key alone.
    let mut want = Vec::new();
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let old = db.open_tree("values").unwrap();
        for i in 0..25 {
            let mut obj = Object::new();
            obj.update(&me, &VersionVector::new(), val(&format!("v{i}")), 0)
                .unwrap();
            old.insert(format!("k{i}"), encode(&obj).unwrap()).unwrap();
            want.push((format!("k{i}"), format!("v{i}")));
        }
        db.open_tree("meta")
            .unwrap()
            .insert(CURSOR_KEY, encode(&(3u64, 1u8, "k9".to_string())).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    for _ in 0..2 {
        let s = open_dir(dir.path(), FsyncMode::Batch);
        assert_eq!(s.key_count(), 25);
        for (k, v) in &want {
            assert_eq!(values(&s.get(k).unwrap()), vec![v.clone()]);
        }
        assert_eq!(kept(&s), recomputed(&s));
        assert!(
            s.transfer_cursor().unwrap().is_none(),
            "the old cursor is dropped"
        );
        assert!(!s.db.tree_names().iter().any(|n| &n[..] == b"values"));
    }
}

#[test]
fn the_refilling_mark_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_dir(dir.path(), FsyncMode::Batch);
        assert!(!s.restoring());
        s.set_restoring(true).unwrap();
        block_on(s.durable()).unwrap();
    }
    let s = open_dir(dir.path(), FsyncMode::Batch);
    assert!(s.restoring());
    s.set_restoring(false).unwrap();
    assert!(!s.restoring());
}

#[test]
fn graves_are_listed_reaped_only_unchanged_and_leave_a_segment_floor() {
    let dir = tempfile::tempdir().unwrap();
    let me = id("127.0.0.1:1");
    let old_context;
    {
        let s = open_dir(dir.path(), FsyncMode::Never);
        for k in ["a", "b", "c", "d"] {
            s.coordinate(k, &me, &VersionVector::new(), val(k), None)
                .unwrap();
        }
        old_context = s.get("a").unwrap().context().clone();
        for k in ["a", "b", "c"] {
            let ctx = s.get(k).unwrap().context().clone();
            s.coordinate(k, &me, &ctx, Content::Tombstone, None)
                .unwrap();
        }
        let mut graves = s.tombstone_keys(None, 100);
        graves.sort();
        assert_eq!(graves, ["a", "b", "c"]);
        // Paging: the first two, then what follows the second.
        let first = s.tombstone_keys(None, 2);
        assert_eq!(first.len(), 2);
        let rest = s.tombstone_keys(Some(&first[1]), 100);
        assert_eq!(rest.len(), 1);
        assert!(!first.contains(&rest[0]));
        s.flush().unwrap();
    }
    // Rebuilt at open.
    let s = open_dir(dir.path(), FsyncMode::Never);
    assert_eq!(s.tombstone_keys(None, 100).len(), 3);
    let digest = |k: &str| s.digest(k).unwrap().unwrap();

    // A digest that is not the current copy's: refused.
    assert!(!s.reap(&me, "a", digest("a") ^ 1).unwrap());
    // A live key: refused, whatever the digest.
    assert!(!s.reap(&me, "d", digest("d")).unwrap());
    // A hint for the key kept here: refused.
    s.merge_hint(&id("127.0.0.1:9"), "b", &s.get("b").unwrap())
        .unwrap();
    assert!(!s.reap(&me, "b", digest("b")).unwrap());

    assert!(s.reap(&me, "a", digest("a")).unwrap());
    assert_eq!(s.replica("a").unwrap(), None);
    assert_eq!(s.tombstone_count(), 2);
    assert_eq!(s.key_count(), 3);
    assert!(!s.tombstone_keys(None, 100).contains(&"a".to_string()));
    assert_eq!(recomputed(&s), kept(&s), "segment digests follow a reap");

    // A blind put after the removal starts above every counter issued before
    // it, so the context of a client that read the key before the delete does
    // not cover the new version.
    let (_, dot) = s
        .coordinate("a", &me, &VersionVector::new(), val("new"), None)
        .unwrap();
    assert!(
        dot.counter > old_context.get(&me),
        "{dot:?} vs {old_context:?}"
    );
    let (after, _) = s
        .coordinate("a", &id("127.0.0.1:2"), &old_context, val("late"), None)
        .unwrap();
    let mut vals = values(&after);
    vals.sort();
    assert_eq!(vals, ["late", "new"], "the new write survives as a sibling");
    s.flush().unwrap();
    drop(s);

    // The floor is durable.
    let s = open_dir(dir.path(), FsyncMode::Never);
    assert!(s.reap(&me, "c", s.digest("c").unwrap().unwrap()).unwrap());
    s.flush().unwrap();
    drop(s);
    let s = open_dir(dir.path(), FsyncMode::Never);
    let (_, dot) = s
        .coordinate("c", &me, &VersionVector::new(), val("again"), None)
        .unwrap();
    assert!(dot.counter > 2, "{dot:?}");
}

#[test]
fn hints_are_counted_per_target_through_delivery_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (id("127.0.0.1:2"), id("127.0.0.1:3"));
    let me = id("127.0.0.1:1");
    {
        let s = open_dir(dir.path(), FsyncMode::Never);
        for k in ["x", "y"] {
            s.coordinate(k, &me, &VersionVector::new(), val(k), Some(&a))
                .unwrap();
        }
        s.coordinate("z", &me, &VersionVector::new(), val("z"), Some(&b))
            .unwrap();
        // A second write of the same key for the same target is one hint.
        let ctx = s.get("x").unwrap().context().clone();
        s.coordinate("x", &me, &ctx, val("x2"), Some(&a)).unwrap();
        let want: std::collections::BTreeMap<NodeId, u64> =
            [(a.clone(), 2), (b.clone(), 1)].into_iter().collect();
        assert_eq!(s.hints_by_target(), want);
        let delivered = s.hints().unwrap().hints.into_iter().find(|h| h.target == b);
        assert!(s.remove_hint(&delivered.unwrap()).unwrap());
        s.flush().unwrap();
    }
    let s = open_dir(dir.path(), FsyncMode::Never);
    let want: std::collections::BTreeMap<NodeId, u64> = [(a, 2)].into_iter().collect();
    assert_eq!(s.hints_by_target(), want, "recounted at open");
}

/// A transfer or an anti-entropy push that carries a key whose record here
/// does not decode merges every other key of the batch: the bad one is
/// logged and left as it is (refused, never overwritten blindly).
#[test]
fn merge_many_skips_a_key_whose_record_does_not_decode() {
    let s = Storage::open(None, FsyncMode::Never).unwrap();
    let me = id("127.0.0.1:1");
    s.values
        .insert(stored_key("b"), vec![RECORD_FORMAT, 0xff])
        .unwrap();
    let items: Vec<(Key, Arc<Object>)> = ["a", "b", "c"]
        .into_iter()
        .map(|k| {
            let mut obj = Object::new();
            obj.update(&me, &VersionVector::new(), val(k), 0).unwrap();
            (k.to_string(), Arc::new(obj))
        })
        .collect();
    assert_eq!(s.merge_many(&items).unwrap(), 2);
    assert_eq!(values(&s.get("a").unwrap()), vec!["a"]);
    assert_eq!(values(&s.get("c").unwrap()), vec!["c"]);
    assert!(s.get("b").is_err(), "the bad record is left as it was");
}

mod rings;
