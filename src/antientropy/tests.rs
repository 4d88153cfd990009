use super::*;
use crate::config::FsyncMode;
use crate::ring::RingState;
use crate::types::Replication;
use crate::vclock::{Content, VersionVector};

fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn nodes(n: usize) -> Vec<NodeId> {
    (0..n)
        .map(|i| id(&format!("127.0.0.1:{}", 20000 + i)))
        .collect()
}

fn ring_of(members: &[NodeId]) -> RingState {
    let mut state = RingState::bootstrap(members[0].clone(), Replication { n: 3, w: 2, r: 2 });
    for m in &members[1..] {
        state = state.with_member(m.clone()).unwrap();
    }
    state
}

fn val(s: &str) -> Content {
    Content::Value(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

fn holds(ring: &Ring, node: &NodeId, key: &str) -> bool {
    ring.owners_at(key_position(key.as_bytes())).contains(node)
}

#[test]
fn the_map_agrees_with_the_ring_key_by_key() {
    let members = nodes(5);
    let ring = Arc::new(Ring::new(ring_of(&members)));
    let me = &members[0];
    let map = SharedMap::new(&ring, me.clone());
    assert_eq!(map.peers().len(), 4, "with N=3 of 5 every pair shares keys");
    let mut splits = 0;
    for i in 0..20_000 {
        let key = format!("key-{i}");
        let seg = crate::storage::segment_of(&key);
        for peer in &members[1..] {
            let truth = holds(&ring, me, &key) && holds(&ring, peer, &key);
            match map.share(seg, peer) {
                Share::Whole => assert!(truth, "{key} in a whole segment is shared"),
                Share::None => assert!(!truth, "{key} in an unshared segment is not"),
                Share::Split => {
                    splits += 1;
                    assert_eq!(map.key_shared(&key, peer), truth);
                }
            }
        }
    }
    // 5 x 256 tokens in 65,536 segments: about 2% of keys land in a split segment.
    assert!(splits > 0 && splits < 20_000 * 4 / 10, "{splits}");
}

/// In a large ring a segment holds several tokens (1,000 nodes of 256 tokens
/// put about four in each of the 65,536 segments), so a node may share keys
/// with a peer only between two tokens inside split segments, never at a
/// segment's ends. The map must still name that peer, or no exchange ever
/// compares those keys with it: every node it shares a preference list
/// with ([`Ring::neighbours`], no change running) is a peer.
#[test]
fn the_map_names_every_peer_when_segments_hold_several_tokens() {
    let members = nodes(1000);
    let ring = Ring::new(ring_of(&members));
    for me in [&members[0], &members[500]] {
        let map = SharedMap::new(&ring, me.clone());
        assert_eq!(map.peers(), ring.neighbours(me).as_slice(), "{me}'s peers");
    }
}

/// With N equal to the ring's size every node keeps every key: no segment is
/// split, though tokens fall inside some (the order of the owners changes
/// there, not who they are), so an exchange scans no keys.
#[test]
fn with_n_equal_to_the_ring_size_no_segment_is_split() {
    let members = nodes(3);
    let ring = Arc::new(Ring::new(ring_of(&members)));
    assert!(
        !ring.same_owners(0, u64::MAX),
        "tokens fall inside the range"
    );
    let map = SharedMap::new(&ring, members[0].clone());
    for seg in all_segments() {
        for peer in &members[1..] {
            assert!(
                matches!(map.share(seg, peer), Share::Whole),
                "segment {seg} with {peer}"
            );
        }
    }
}

#[test]
fn during_a_change_only_the_current_owners_compare() {
    let members = nodes(4);
    let state = ring_of(&members[..3]);
    let joining = members[3].clone();
    let moving = Arc::new(Ring::new(
        state.begin_add(joining.clone(), None, 0).unwrap(),
    ));
    // The joining node owns nothing yet: the transfer fills it, not anti-entropy.
    assert!(SharedMap::new(&moving, joining.clone()).peers().is_empty());
    let map = SharedMap::new(&moving, members[0].clone());
    assert_eq!(map.peers(), &members[1..3]);
}

#[test]
fn key_diff_sends_what_the_peer_lacks_and_fetches_what_this_node_lacks() {
    let mine = vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)];
    let theirs = vec![("b".into(), 2), ("c".into(), 9), ("d".into(), 4)];
    assert_eq!(
        key_diff(mine, theirs),
        KeyDiff {
            push: vec!["a".into(), "c".into()],
            pull: vec!["c".into(), "d".into()],
        }
    );
    assert_eq!(differing(&[1, 2, 3], &[1, 5]), vec![1, 2]);
}

/// Runs the exchange's three levels between two stores in process, applying
/// the repairs the way the exchange does, and returns what moved.
fn exchange_locally(
    ring: &Arc<Ring>,
    (a, sa): (&NodeId, &Storage),
    (b, sb): (&NodeId, &Storage),
) -> (Vec<Key>, Vec<Key>) {
    let ma = SharedMap::new(ring, a.clone());
    let mb = SharedMap::new(ring, b.clone());
    let groups: Vec<u8> = differing(
        &ma.group_digests(sa, b).unwrap(),
        &mb.group_digests(sb, a).unwrap(),
    )
    .into_iter()
    .map(|g| u8::try_from(g).unwrap())
    .collect();
    let listed: Vec<Segment> = groups.iter().flat_map(|g| group_segments(*g)).collect();
    let segments: Vec<Segment> = differing(
        &ma.segment_digests(sa, b, &groups).unwrap(),
        &mb.segment_digests(sb, a, &groups).unwrap(),
    )
    .into_iter()
    .map(|i| listed[i])
    .collect();
    let diff = key_diff(
        ma.key_digests(sa, b, &segments).unwrap(),
        mb.key_digests(sb, a, &segments).unwrap(),
    );
    for key in &diff.pull {
        sa.merge(key, &sb.replica(key).unwrap().unwrap()).unwrap();
    }
    for key in &diff.push {
        sb.merge(key, &sa.replica(key).unwrap().unwrap()).unwrap();
    }
    (diff.push, diff.pull)
}

#[test]
fn an_exchange_moves_exactly_the_differing_shared_keys_both_ways() {
    let members = nodes(5);
    let ring = Arc::new(Ring::new(ring_of(&members)));
    let (a, b) = (&members[0], &members[1]);
    let sa = Storage::open(None, FsyncMode::Never).unwrap();
    let sb = Storage::open(None, FsyncMode::Never).unwrap();
    let writer = &members[2];
    let mut only_a = Vec::new();
    let mut only_b = Vec::new();
    let mut both_differ = Vec::new();
    let mut not_shared = Vec::new();
    for i in 0..3_000 {
        let key = format!("key-{i}");
        let (ha, hb) = (holds(&ring, a, &key), holds(&ring, b, &key));
        let mut obj = Object::new();
        obj.update(writer, &VersionVector::new(), val("v1"), 0)
            .unwrap();
        match (ha, hb, i % 4) {
            (true, true, 0) => {
                sa.merge(&key, &obj).unwrap();
                only_a.push(key);
            }
            (true, true, 1) => {
                sb.merge(&key, &obj).unwrap();
                only_b.push(key);
            }
            (true, true, 2) => {
                // Concurrent versions: each side has one.
                sa.merge(&key, &obj).unwrap();
                let mut other = Object::new();
                other
                    .update(a, &VersionVector::new(), val("v2"), 0)
                    .unwrap();
                sb.merge(&key, &other).unwrap();
                both_differ.push(key);
            }
            (true, true, _) => {
                sa.merge(&key, &obj).unwrap();
                sb.merge(&key, &obj).unwrap();
            }
            (true, false, _) => {
                sa.merge(&key, &obj).unwrap();
                not_shared.push(key);
            }
            _ => {}
        }
    }
    let (pushed, pulled) = exchange_locally(&ring, (a, &sa), (b, &sb));
    let sorted = |mut v: Vec<Key>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(pushed),
        sorted(only_a.iter().chain(&both_differ).cloned().collect())
    );
    assert_eq!(
        sorted(pulled),
        sorted(only_b.iter().chain(&both_differ).cloned().collect())
    );
    for key in &not_shared {
        assert!(sb.replica(key).unwrap().is_none(), "{key} is not B's");
    }
    for key in &both_differ {
        let got = sa.replica(key).unwrap().unwrap();
        assert_eq!(got.values().count(), 2, "concurrent versions are both kept");
        assert_eq!(Some(got), sb.replica(key).unwrap());
    }
    // A second exchange finds nothing.
    let (pushed, pulled) = exchange_locally(&ring, (a, &sa), (b, &sb));
    assert!(
        pushed.is_empty() && pulled.is_empty(),
        "{pushed:?} {pulled:?}"
    );
}

fn anti_entropy(me: &NodeId, storage: Arc<Storage>, cell: Arc<RingCell>) -> AntiEntropy {
    let node = crate::context::NodeContext {
        me: me.clone(),
        storage,
        peers: Arc::new(Peers::new(Duration::from_secs(1))),
        ring: cell,
        refused: Default::default(),
    };
    AntiEntropy::new(&node, 0, None, Duration::from_secs(10))
}

/// The map a peer's query builds is cached, with anti-entropy off too (no
/// exchange loop would ever rebuild it). It must not count as a request
/// holding the old ring, or a ring change's transfer waits for ever.
#[tokio::test]
async fn a_cached_map_does_not_hold_the_ring_it_was_built_for() {
    let members = nodes(4);
    let state = ring_of(&members[..3]);
    let cell = Arc::new(RingCell::new());
    cell.install(state.clone());
    let storage = Arc::new(Storage::open(None, FsyncMode::Never).unwrap());
    let ae = anti_entropy(&members[0], storage, cell.clone());
    let answer = ae
        .answer(state.epoch, members[1].clone(), AeQuery::Groups)
        .await
        .unwrap();
    assert!(matches!(answer, AeAnswer::Groups(_)));
    let next = state.begin_add(members[3].clone(), None, 0).unwrap();
    assert!(cell.install(next.clone()));
    assert!(
        !cell.older_in_use(next.epoch),
        "the cached map of epoch {} holds the old ring",
        state.epoch
    );
}

fn stored_object(v: &str) -> Object {
    let mut obj = Object::new();
    obj.update(&id("127.0.0.1:1"), &VersionVector::new(), val(v), 0)
        .unwrap();
    obj
}

/// One record that does not decode must not stop anti-entropy with a peer:
/// a fetch answers the other keys (it used to fail whole, every exchange).
#[tokio::test]
async fn a_fetch_skips_a_record_that_does_not_decode() {
    let members = nodes(3);
    let state = ring_of(&members);
    let cell = Arc::new(RingCell::new());
    cell.install(state.clone());
    let storage = Arc::new(Storage::open(None, FsyncMode::Never).unwrap());
    for k in ["a", "c"] {
        storage.merge(k, &stored_object(k)).unwrap();
    }
    storage
        .insert_raw("b", &[crate::storage::RECORD_FORMAT, 0xff, 0xff])
        .unwrap();
    assert!(storage.replica("b").is_err(), "b does not decode");
    let ae = anti_entropy(&members[0], storage, cell);
    let keys: Vec<Key> = ["a", "b", "c"].map(String::from).to_vec();
    let got = ae.fetch(state.epoch, keys).await.unwrap();
    let got: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, ["a", "c"]);
}

/// A push's copies leave out a record that does not decode, and the others go.
#[test]
fn a_push_skips_a_record_that_does_not_decode() {
    let storage = Storage::open(None, FsyncMode::Never).unwrap();
    for k in ["a", "c"] {
        storage.merge(k, &stored_object(k)).unwrap();
    }
    storage
        .insert_raw("b", &[crate::storage::RECORD_FORMAT, 0xff, 0xff])
        .unwrap();
    let keys: Vec<Key> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let got = readable_copies(&storage, keys, usize::MAX).unwrap();
    let got: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, ["a", "c"]);
}

/// A key listing larger than a page comes back in several pages, each within
/// the bound, whose union is the whole listing, in order (one answer used to
/// carry it all, past the frame limit on a large node).
#[test]
fn a_key_listing_comes_in_bounded_pages_that_make_the_whole() {
    let members = nodes(3);
    let ring = Arc::new(Ring::new(ring_of(&members)));
    let (a, b) = (&members[0], &members[1]);
    let storage = Storage::open(None, FsyncMode::Never).unwrap();
    let mut segments = std::collections::BTreeSet::new();
    for i in 0..2_000 {
        let key = format!("key-{i:05}-{}", "x".repeat(i % 40));
        storage.merge(&key, &stored_object("v")).unwrap();
        segments.insert(crate::storage::segment_of(&key));
    }
    // A few segments with nothing in them, listed too.
    segments.extend([0, 1, u16::MAX]);
    let segments: Vec<Segment> = segments.into_iter().collect();
    let map = SharedMap::new(&ring, a.clone());
    let whole = map.key_digests(&storage, b, &segments).unwrap();
    assert_eq!(whole.len(), 2_000, "N = 3 of 3: every key is shared");
    let bound = 4 * 1024;
    let mut pages = Vec::new();
    let mut after: Option<Key> = None;
    loop {
        let (page, next) = map
            .key_digests_page(&storage, b, &segments, after.as_deref(), bound)
            .unwrap();
        let bytes: usize = page.iter().map(|(k, _)| k.len() + KEY_ENTRY_BYTES).sum();
        assert!(bytes <= bound, "page of {bytes} bytes");
        assert!(
            bincode::serialized_size(&page).unwrap() as usize <= bound + 8,
            "the page's encoding is within the bound too"
        );
        assert!(!page.is_empty());
        if let Some(n) = &next {
            assert_eq!(Some(n), page.last().map(|(k, _)| k));
        }
        pages.push(page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(pages.len() > 5, "{} pages", pages.len());
    assert_eq!(pages.concat(), whole);
    // A cursor in none of the segments is refused, not guessed at.
    let stray = (0..)
        .map(|i| format!("stray-{i}"))
        .find(|k| !segments.contains(&crate::storage::segment_of(k)))
        .unwrap();
    assert!(map
        .key_digests_page(&storage, b, &segments, Some(&stray), bound)
        .is_err());
}

/// The answer to a paged query, at the real bound, lists a small node whole.
#[tokio::test]
async fn a_peer_answers_a_paged_key_query() {
    let members = nodes(3);
    let state = ring_of(&members);
    let cell = Arc::new(RingCell::new());
    cell.install(state.clone());
    let storage = Arc::new(Storage::open(None, FsyncMode::Never).unwrap());
    let mut segments = Vec::new();
    for k in ["a", "b", "c"] {
        storage.merge(k, &stored_object(k)).unwrap();
        segments.push(crate::storage::segment_of(k));
    }
    segments.sort();
    let ae = anti_entropy(&members[0], storage, cell);
    let query = AeQuery::KeysFrom {
        segments,
        after: None,
    };
    let AeAnswer::KeysPage { keys, next } = ae
        .answer(state.epoch, members[1].clone(), query)
        .await
        .unwrap()
    else {
        panic!("not a page");
    };
    assert_eq!(keys.len(), 3);
    assert_eq!(next, None);
}

/// Group digests walk only the segments the store has held a key of; they
/// must equal the walk over every segment, on a store written to and on the
/// same store reopened from its files (the set is rebuilt at open).
#[test]
fn group_digests_skip_only_segments_that_hold_nothing() {
    let members = nodes(5);
    let ring = Ring::new(ring_of(&members));
    let map = SharedMap::new(&ring, members[0].clone());
    let dir = tempfile::tempdir().unwrap();
    let check = |storage: &Storage| {
        let mut nonzero = 0;
        for peer in &members[1..] {
            let fast = map.group_digests(storage, peer).unwrap();
            let full = map.group_digests_of_every_segment(storage, peer).unwrap();
            assert_eq!(fast, full, "with {peer}");
            nonzero += fast.iter().filter(|d| **d != 0).count();
        }
        assert!(nonzero > 0, "the keys are shared with someone");
    };
    {
        let storage = Storage::open(Some(dir.path()), FsyncMode::Never).unwrap();
        for i in 0..400 {
            storage
                .merge(&format!("key-{i}"), &stored_object("v"))
                .unwrap();
        }
        assert!(storage.segments_held().count() <= 400);
        check(&storage);
        storage.flush().unwrap();
    }
    // sled's flusher thread may hold the directory's lock a moment after
    // the store is dropped: wait for it (up to 10 s) as a restart would.
    let started = std::time::Instant::now();
    let storage = loop {
        match Storage::open(Some(dir.path()), FsyncMode::Never) {
            Ok(s) => break s,
            Err(e) if started.elapsed() > std::time::Duration::from_secs(10) => {
                panic!("reopening the store: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert!(storage.segments_held().count() > 300);
    check(&storage);
}
