//! Tests of the ring: balance and movement measured over many keys, preference
//! list properties (unit and proptest), the membership state, and the
//! data-driven scripts in `testdata/`: goldenscript files, one test each,
//! whose commands `script.rs` documents (`UPDATE_GOLDENFILES=1 cargo test
//! --lib ring::` rewrites their outputs; review the diff).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

mod script;
use script::run_script;

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

/// The five-node local ring of `make run-db`: 127.0.0.1:13337..13341.
fn local_nodes(count: u16) -> Vec<NodeId> {
    (0..count)
        .map(|i| NodeId::new("127.0.0.1", 13337 + i).unwrap())
        .collect()
}

/// A valid state with these members, led by the smallest, at epoch 1.
fn state_of(members: Vec<NodeId>, replication: Replication) -> RingState {
    let mut members = members;
    members.sort();
    members.dedup();
    RingState {
        epoch: 1,
        leader: members[0].clone(),
        members,
        replication,
        tokens_per_node: DEFAULT_TOKENS_PER_NODE,
        identities: BTreeMap::new(),
        transition: None,
        incarnations: Default::default(),
        departed: Default::default(),
        users: Default::default(),
        buckets: Default::default(),
    }
}

fn random_keys(count: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| rng.random()).collect()
}

const SAMPLE_KEYS: usize = 100_000;

// ---- balance and movement ------------------------------------------------

#[test]
fn balance_five_nodes_default_tokens() {
    let ring = Ring::new(state_of(local_nodes(5), Replication::default()));
    let mut owned: BTreeMap<NodeId, usize> = BTreeMap::new();
    for key in random_keys(SAMPLE_KEYS, 7) {
        *owned.entry(ring.owner(&key).unwrap().clone()).or_default() += 1;
    }
    assert_eq!(owned.len(), 5, "every node owns something");
    let fair = SAMPLE_KEYS as f64 / 5.0;
    let mut worst: f64 = 0.0;
    for (node, count) in &owned {
        let ratio = *count as f64 / fair;
        println!("{node}: {count} keys, {:.3}x fair share", ratio);
        worst = worst.max(ratio);
    }
    println!("max share ratio: {worst:.3}");
    assert!(worst <= 1.25, "a node owns {worst:.3}x its fair share");
}

#[test]
fn adding_a_node_moves_about_a_sixth_of_keys_all_to_it() {
    let five = state_of(local_nodes(5), Replication::default());
    let new = NodeId::new("127.0.0.1", 13342).unwrap();
    let six = five.with_member(new.clone()).unwrap();
    let (before, after) = (Ring::new(five), Ring::new(six));
    let keys = random_keys(SAMPLE_KEYS, 11);
    let mut moved = 0usize;
    for key in &keys {
        let (old, now) = (before.owner(key).unwrap(), after.owner(key).unwrap());
        if old != now {
            assert_eq!(now, &new, "a key moved to an old node");
            moved += 1;
        }
        // Beyond the owner: the new walk is the old walk with the new node
        // inserted, so every preference list changes only by the new node.
        let mut walk = after.walk(key);
        walk.retain(|n| n != &new);
        assert_eq!(walk, before.walk(key));
    }
    let fraction = moved as f64 / keys.len() as f64;
    println!("adding a sixth node moved {fraction:.4} of keys (1/6 = 0.1667)");
    assert!(fraction > 0.10, "too few keys moved: {fraction}");
    assert!(fraction <= 0.25, "too many keys moved: {fraction}");
}

#[test]
fn removing_a_node_moves_only_its_keys() {
    let five = state_of(local_nodes(5), Replication::default());
    let gone = NodeId::new("127.0.0.1", 13340).unwrap();
    let four = five.without_member(&gone).unwrap();
    let (before, after) = (Ring::new(five), Ring::new(four));
    let mut moved = 0usize;
    for key in random_keys(SAMPLE_KEYS, 13) {
        let (old, now) = (before.owner(&key).unwrap(), after.owner(&key).unwrap());
        if old == &gone {
            moved += 1;
        } else {
            assert_eq!(old, now, "a key not owned by the removed node moved");
        }
        let mut walk = before.walk(&key);
        walk.retain(|n| n != &gone);
        assert_eq!(walk, after.walk(&key));
    }
    println!(
        "removing a node moved {:.4} of keys (its own share)",
        moved as f64 / SAMPLE_KEYS as f64
    );
}

// ---- preference lists ----------------------------------------------------

#[test]
fn preference_list_has_n_distinct_nodes() {
    let ring = Ring::new(state_of(local_nodes(5), Replication::default()));
    for key in random_keys(1000, 17) {
        let list = ring.preference_list(&key);
        assert_eq!(list.len(), 3);
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "duplicates in {list:?}");
        assert_eq!(ring.owner(&key), list.first());
    }
}

#[test]
fn fewer_members_than_n_gives_every_member() {
    let replication = Replication { n: 3, w: 2, r: 2 };
    for count in 1..=3 {
        let ring = Ring::new(state_of(local_nodes(count), replication));
        for key in [&b"a"[..], b"b", b"some longer key"] {
            let mut list = ring.preference_list(key);
            assert_eq!(list.len(), usize::from(count));
            list.sort();
            assert_eq!(list, ring.members());
        }
    }
}

#[test]
fn walk_is_a_permutation_that_starts_with_the_preference_list() {
    let ring = Ring::new(state_of(local_nodes(7), Replication::default()));
    for key in random_keys(1000, 19) {
        let walk = ring.walk(&key);
        let list = ring.preference_list(&key);
        assert_eq!(walk.get(..list.len()), Some(&list[..]));
        let mut sorted = walk.clone();
        sorted.sort();
        assert_eq!(sorted, ring.members());
    }
}

#[test]
fn rings_are_deterministic_and_golden() {
    let a = Ring::new(state_of(local_nodes(5), Replication::default()));
    let b = Ring::new(state_of(local_nodes(5), Replication::default()));
    for key in random_keys(100, 23) {
        assert_eq!(a.walk(&key), b.walk(&key));
    }
    // Golden values: a change of hash function or token scheme changes where
    // every key lives and must not happen silently (it would strand data on
    // upgrade).
    assert_eq!(key_position(b"key1"), GOLDEN_KEY1_POSITION);
    let names = |list: Vec<NodeId>| list.iter().map(|n| n.port()).collect::<Vec<_>>();
    assert_eq!(names(a.walk(b"key1")), GOLDEN_KEY1_WALK);
    assert_eq!(names(a.walk(b"user:42")), GOLDEN_USER42_WALK);
    assert_eq!(names(a.preference_list(b"")), GOLDEN_EMPTY_PREFLIST);
}

const GOLDEN_KEY1_POSITION: u64 = 0x384d_070c_d5d8_29e2;
const GOLDEN_KEY1_WALK: [u16; 5] = [13340, 13341, 13339, 13337, 13338];
const GOLDEN_USER42_WALK: [u16; 5] = [13341, 13337, 13340, 13338, 13339];
const GOLDEN_EMPTY_PREFLIST: [u16; 3] = [13340, 13338, 13337];

#[test]
fn key_position_wraps_past_the_last_token() {
    let ring = Ring::new(state_of(local_nodes(3), Replication::default()));
    let first = *ring.current.tokens.first().unwrap();
    let last = *ring.current.tokens.last().unwrap();
    // A key after the last token belongs to the first token's node: find one.
    let key = (0u64..)
        .map(|i| i.to_be_bytes())
        .find(|k| key_position(k) > last.position)
        .unwrap();
    assert_eq!(
        ring.owner(&key),
        ring.members().get(first.member),
        "the walk wraps to the first token"
    );
    assert_eq!(ring.walk(&key).first(), ring.owner(&key));
}

#[test]
fn empty_and_unvalidated_states_never_panic() {
    let empty = Ring::new(RingState {
        epoch: 1,
        leader: node("a:1"),
        members: vec![],
        replication: Replication::default(),
        tokens_per_node: 256,
        identities: BTreeMap::new(),
        transition: None,
        incarnations: Default::default(),
        departed: Default::default(),
        users: Default::default(),
        buckets: Default::default(),
    });
    assert!(empty.preference_list(b"k").is_empty());
    assert!(empty.walk(b"k").is_empty());
    assert_eq!(empty.owner(b"k"), None);

    // Unsorted, duplicated members and zero tokens: normalised, still usable.
    let messy = Ring::new(RingState {
        epoch: 0,
        leader: node("z:1"),
        members: vec![node("c:1"), node("a:1"), node("c:1"), node("b:1")],
        replication: Replication { n: 9, w: 0, r: 0 },
        tokens_per_node: 0,
        identities: BTreeMap::new(),
        transition: None,
        incarnations: Default::default(),
        departed: Default::default(),
        users: Default::default(),
        buckets: Default::default(),
    });
    assert_eq!(messy.members(), [node("a:1"), node("b:1"), node("c:1")]);
    let mut walk = messy.walk(b"k");
    assert_eq!(messy.preference_list(b"k"), walk);
    walk.sort();
    assert_eq!(walk, messy.members());
}

#[test]
fn ring_accessors() {
    let state = state_of(local_nodes(3), Replication { n: 2, w: 1, r: 2 });
    let ring = Ring::new(state.clone());
    assert_eq!(ring.state(), &state);
    assert_eq!(ring.epoch(), 1);
    assert_eq!(ring.leader(), &node("127.0.0.1:13337"));
    assert_eq!(ring.replication(), Replication { n: 2, w: 1, r: 2 });
    assert!(ring.is_member(&node("127.0.0.1:13339")));
    assert!(!ring.is_member(&node("127.0.0.1:13340")));
    assert_eq!(ring.current.tokens.len(), 3 * 256);
    assert!(ring.current.tokens.windows(2).all(|w| w[0] <= w[1]));
}

proptest! {
    #[test]
    fn preference_list_is_the_walk_prefix(
        ports in proptest::collection::btree_set(1u16..=u16::MAX, 1..12),
        n in 1usize..6,
        tokens in 1u32..48,
        keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..16),
    ) {
        let members: Vec<NodeId> =
            ports.iter().map(|p| NodeId::new("10.0.0.1", *p).unwrap()).collect();
        let mut state = state_of(members, Replication { n, w: 1, r: 1 });
        state.tokens_per_node = tokens;
        prop_assert!(state.validate().is_ok());
        let ring = Ring::new(state);
        for key in keys {
            let list = ring.preference_list(&key);
            let walk = ring.walk(&key);
            prop_assert_eq!(list.len(), n.min(ring.members().len()));
            prop_assert_eq!(walk.get(..list.len()), Some(&list[..]));
            let mut sorted = walk.clone();
            sorted.sort();
            prop_assert_eq!(&sorted[..], ring.members());
            prop_assert_eq!(ring.owner(&key), list.first());
        }
    }
}

// ---- membership state ----------------------------------------------------

#[test]
fn bootstrap_add_remove_advance_the_epoch() {
    let leader = node("127.0.0.1:13337");
    let s1 = RingState::bootstrap(leader.clone(), Replication::default());
    assert_eq!(s1.epoch, 1);
    assert_eq!(s1.members, std::slice::from_ref(&leader));
    assert_eq!(s1.tokens_per_node, DEFAULT_TOKENS_PER_NODE);
    s1.validate().unwrap();

    let s2 = s1.with_member(node("127.0.0.1:13339")).unwrap();
    let s3 = s2.with_member(node("127.0.0.1:13338")).unwrap();
    assert_eq!((s2.epoch, s3.epoch), (2, 3));
    assert_eq!(
        s3.members,
        [
            leader.clone(),
            node("127.0.0.1:13338"),
            node("127.0.0.1:13339")
        ]
    );
    s3.validate().unwrap();

    let s4 = s3.without_member(&node("127.0.0.1:13338")).unwrap();
    assert_eq!(s4.epoch, 4);
    assert_eq!(s4.members, [leader.clone(), node("127.0.0.1:13339")]);
    assert_eq!(s4.leader, leader);
    assert_eq!(s4.replication, s1.replication);
    s4.validate().unwrap();
}

#[test]
fn membership_errors_are_clear() {
    let s = RingState::bootstrap(node("127.0.0.1:13337"), Replication::default())
        .with_member(node("127.0.0.1:13338"))
        .unwrap();
    let reason = |r: Result<RingState>| match r {
        Err(Error::Membership { reason }) => reason,
        other => panic!("expected a membership error, got {other:?}"),
    };
    assert_eq!(
        reason(s.with_member(node("127.0.0.1:13338"))),
        "127.0.0.1:13338 is already a member of the ring (epoch 2)"
    );
    assert_eq!(
        reason(s.without_member(&node("127.0.0.1:13339"))),
        "127.0.0.1:13339 is not a member of the ring (epoch 2)"
    );
    assert!(reason(s.without_member(&node("127.0.0.1:13337")))
        .starts_with("cannot remove the leader 127.0.0.1:13337"));

    let mut full = s.clone();
    full.members = (1..=u16::try_from(MAX_MEMBERS).unwrap())
        .map(|p| NodeId::new("10.0.0.1", p).unwrap())
        .collect();
    full.members.sort();
    assert!(reason(full.with_member(node("10.0.0.2:1"))).contains("the limit is 1024"));

    let mut last = s.clone();
    last.epoch = u64::MAX;
    assert!(reason(last.with_member(node("10.0.0.2:1"))).contains("epoch"));
}

#[test]
fn validate_rejects_bad_states() {
    let good = RingState::bootstrap(node("b:1"), Replication::default())
        .with_member(node("a:1"))
        .unwrap()
        .with_member(node("c:1"))
        .unwrap();
    good.validate().unwrap();

    type BreakIt = fn(&mut RingState);
    let cases: Vec<(&str, BreakIt)> = vec![
        ("epoch 0", |s| s.epoch = 0),
        ("not sorted", |s| s.members.reverse()),
        ("listed twice", |s| s.members.insert(1, node("b:1"))),
        ("is not a member", |s| s.leader = node("d:1")),
        ("no members", |s| s.members.clear()),
        ("tokens_per_node is 0", |s| s.tokens_per_node = 0),
        ("tokens_per_node is 4097", |s| s.tokens_per_node = 4097),
        ("(W) must be between", |s| s.replication.w = 4),
        ("(N) must be at least 1", |s| {
            s.replication = Replication { n: 0, w: 0, r: 0 }
        }),
        ("members, the limit is 1024", |s| {
            s.members = (1..=1025).map(|p| NodeId::new("h", p).unwrap()).collect();
            s.members.sort();
            s.leader = s.members[0].clone();
        }),
    ];
    for (want, break_it) in cases {
        let mut bad = good.clone();
        break_it(&mut bad);
        match bad.validate() {
            Err(Error::InvalidInput { reason }) => {
                assert!(
                    reason.starts_with("invalid ring state") && reason.contains(want)
                        || (want == "no members" && reason.contains("is not a member")),
                    "{want:?} not in {reason:?}"
                );
            }
            other => panic!("{want}: expected InvalidInput, got {other:?}"),
        }
    }
}

#[test]
fn state_json_round_trip() {
    let state = RingState::bootstrap(node("127.0.0.1:13337"), Replication::default())
        .with_member(node("127.0.0.1:13338"))
        .unwrap();
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(
        json,
        r#"{"epoch":2,"leader":"127.0.0.1:13337","members":["127.0.0.1:13337","127.0.0.1:13338"],"replication":{"n":3,"w":2,"r":2},"tokens_per_node":256,"identities":{},"transition":null,"incarnations":{},"departed":{},"users":{},"buckets":{"by_name":{},"next_id":0}}"#
    );
    let back: RingState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    back.validate().unwrap();
    // NodeId validates while decoding: a bad address never becomes a RingState.
    let bad = serde_json::from_str::<RingState>(&json.replace("127.0.0.1:13338", "nope"));
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("bad node address \"nope\""));
}

// ---- data-driven scripts ---------------------------------------------------

script_tests!(run_script, "src/ring/testdata", {
    script_preference => "preference.txt",
    script_transition => "transition.txt",
    script_abort => "abort.txt",
    script_membership => "membership.txt",
});

#[test]
fn pending_owners_agree_with_the_placement_during_a_change() {
    let five = state_of(local_nodes(5), Replication::default());
    let adding = five
        .begin_add(NodeId::new("127.0.0.1", 13342).unwrap(), None, 0)
        .unwrap();
    let removing = five.begin_remove(&node("127.0.0.1:13339"), 0).unwrap();
    for state in [five.clone(), adding, removing] {
        let ring = Ring::new(state);
        let mut moved = 0;
        for key in random_keys(2000, 5) {
            let p = ring.placement(&key);
            assert_eq!(ring.pending_owners(&key), p.pending);
            assert_eq!(p.moves(), !p.pending.is_empty());
            moved += usize::from(p.moves());
            // Slots and fallbacks never repeat a node.
            let mut all: Vec<&NodeId> = p.slots().chain(&p.fallbacks).collect();
            let count = all.len();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), count, "{p:?}");
        }
        if ring.transition().is_none() {
            assert_eq!(moved, 0);
        } else {
            assert!(moved > 0);
        }
    }
}

#[test]
fn an_address_back_with_a_new_data_directory_writes_under_a_new_actor() {
    let leader = node("127.0.0.1:13337");
    let b = node("127.0.0.1:13338");
    let (u1, u2, u3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let ring = RingState::bootstrap(leader.clone(), Replication::default());
    let ring = ring
        .with_member(node("127.0.0.1:13339"))
        .unwrap()
        .begin_add(b.clone(), Some(u1), 0)
        .unwrap()
        .settle(&[])
        .unwrap();
    // The first data directory at the address writes under the address.
    assert_eq!(ring.actor(&b, u1), Some(b.clone()));
    // Another data directory there is a stranger until readmitted.
    assert_eq!(ring.actor(&b, u2), None);
    let back = ring.readmit(&b, u2).unwrap();
    assert_eq!(back.epoch, ring.epoch + 1);
    assert_eq!(back.identities.get(&b), Some(&u2));
    let actor = back.actor(&b, u2).unwrap();
    assert_eq!(actor.as_str(), "127.0.0.1~1:13338");
    assert_eq!(
        back.actor(&b, u1),
        None,
        "the old directory is a stranger now"
    );
    // Readmitting the same identity twice is refused; a third directory is
    // the next incarnation, and so is the address after a removal and re-add.
    assert!(back.readmit(&b, u2).is_err());
    let third = back.readmit(&b, u3).unwrap();
    assert_eq!(third.actor(&b, u3).unwrap().as_str(), "127.0.0.1~2:13338");
    let removed = third.begin_remove(&b, 0).unwrap().settle(&[]).unwrap();
    let u4 = Uuid::new_v4();
    let again = removed.begin_add(b.clone(), Some(u4), 0).unwrap();
    assert_eq!(again.actor(&b, u4).unwrap().as_str(), "127.0.0.1~3:13338");
    // The same directory re-added keeps its actor.
    let same = removed.begin_add(b.clone(), Some(u3), 0).unwrap();
    assert_eq!(same.actor(&b, u3).unwrap().as_str(), "127.0.0.1~2:13338");
    // Refused: a non-member, another member's identity. A running change
    // does not stop it: the change goes on with the node's new directory.
    assert!(ring.readmit(&node("127.0.0.1:1"), u2).is_err());
    let changing = ring.begin_add(node("127.0.0.1:2"), None, 0).unwrap();
    let readmitted = changing.readmit(&b, u2).unwrap();
    assert_eq!(readmitted.transition, changing.transition);
    let with_c = ring
        .begin_add(node("127.0.0.1:3"), Some(u3), 0)
        .unwrap()
        .settle(&[])
        .unwrap();
    assert!(with_c.readmit(&b, u3).is_err());
    // A node the ring never admitted (or a ring from before identities) writes
    // under its address.
    assert_eq!(ring.actor(&leader, u2), Some(leader.clone()));
}

#[test]
fn neighbours_are_every_node_sharing_a_preference_list() {
    let nodes = local_nodes(12);
    let ring = Ring::new(state_of(nodes.clone(), Replication { n: 3, w: 2, r: 2 }));
    let keys = random_keys(20_000, 7);
    for me in &nodes {
        let mut shared = std::collections::BTreeSet::new();
        for k in &keys {
            let list = ring.preference_list(k);
            if list.contains(me) {
                shared.extend(list.into_iter().filter(|n| n != me));
            }
        }
        let neighbours: std::collections::BTreeSet<NodeId> =
            ring.neighbours(me).into_iter().collect();
        assert!(!neighbours.contains(me));
        // Every node met through a key is a neighbour (the keys sample the
        // ranges; a neighbour may share only a range no sampled key fell in).
        assert!(
            shared.is_subset(&neighbours),
            "{me}: {shared:?} vs {neighbours:?}"
        );
        assert!(neighbours.len() >= 2, "{me}: {neighbours:?}");
    }
}

#[test]
fn shares_sum_to_n_and_are_about_even() {
    let nodes = local_nodes(5);
    let ring = Ring::new(state_of(nodes.clone(), Replication { n: 3, w: 2, r: 2 }));
    let shares: Vec<f64> = nodes.iter().map(|n| ring.share(n)).collect();
    let total: f64 = shares.iter().sum();
    assert!((total - 3.0).abs() < 1e-9, "{shares:?}");
    for s in &shares {
        assert!((0.45..0.75).contains(s), "{shares:?}");
    }
    assert_eq!(ring.share(&node("10.9.9.9:1")), 0.0);
    let one = Ring::new(state_of(local_nodes(1), Replication { n: 1, w: 1, r: 1 }));
    assert_eq!(one.share(&local_nodes(1)[0]), 1.0);
}

#[test]
fn the_ring_knows_every_actor_it_ever_let_write_and_no_other() {
    let leader = node("127.0.0.1:13337");
    let b = node("127.0.0.1:13338");
    let c = node("127.0.0.1:13339");
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    let ring = RingState::bootstrap(leader.clone(), Replication::default())
        .begin_add(b.clone(), Some(u1), 0)
        .unwrap()
        .settle(&[])
        .unwrap()
        .readmit(&b, u2)
        .unwrap();
    // The leader (never admitted by identity), a member and its incarnations.
    assert!(ring.knows_actor(&leader));
    assert!(ring.knows_actor(&b));
    assert!(ring.knows_actor(&node("127.0.0.1~1:13338")));
    assert!(
        !ring.knows_actor(&node("127.0.0.1~2:13338")),
        "not yet issued"
    );
    assert!(
        !ring.knows_actor(&node("127.0.0.1~1:13337")),
        "leader has none"
    );
    // Never in the ring: a typo'd port, another host, a malformed suffix.
    assert!(!ring.knows_actor(&node("127.0.0.1:1333")));
    assert!(!ring.knows_actor(&node("10.0.0.1:13338")));
    assert!(!ring.knows_actor(&node("127.0.0.1~x:13338")));
    assert!(!ring.knows_actor(&node("127.0.0.1~0:13338")));
    // A node being added is known from the start of the change, and a removed
    // one stays known (its dots live on in stored contexts).
    let adding = ring.begin_add(c.clone(), Some(Uuid::new_v4()), 0).unwrap();
    assert!(adding.knows_actor(&c));
    let gone = adding
        .settle(&[])
        .unwrap()
        .begin_remove(&b, 0)
        .unwrap()
        .settle(&[])
        .unwrap();
    assert!(gone.knows_actor(&b));
    assert!(gone.knows_actor(&node("127.0.0.1~1:13338")));
    // A node added without an identity (a ring from before identities) is
    // known while it is a member.
    let old = RingState::bootstrap(leader, Replication::default())
        .begin_add(c.clone(), None, 0)
        .unwrap();
    assert!(old.knows_actor(&c));
}

#[test]
fn the_cell_names_the_older_rings_still_held() {
    let cell = RingCell::new();
    let mut state = state_of(local_nodes(3), Replication::default());
    cell.install(state.clone());
    let first = cell.get().unwrap();
    let again = cell.get().unwrap();
    state.epoch = 2;
    cell.install(state.clone());
    let second = cell.get().unwrap();
    state.epoch = 3;
    cell.install(state.clone());
    assert_eq!(cell.older_held(3), vec![(1, 2), (2, 1)]);
    assert_eq!(cell.older_held(2), vec![(1, 2)]);
    drop((first, again));
    assert_eq!(cell.older_held(3), vec![(2, 1)]);
    assert!(cell.older_in_use(3));
    drop(second);
    assert!(!cell.older_in_use(3));
    assert!(cell.older_held(3).is_empty());
}
