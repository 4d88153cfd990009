//! The detector's news rules ([`super::gossip`]), and how news spreads among
//! many views exchanging it the way probes do.

use super::gossip::{Change, Gossip, MAX_RUMOURS_PER_MESSAGE};
use crate::rpc::Rumour;
use crate::types::NodeId;

fn id(port: u16) -> NodeId {
    NodeId::new("10.0.0.1", port).unwrap()
}

fn news(node: u16, incarnation: u64, down: bool) -> Rumour {
    Rumour {
        node: id(node),
        incarnation,
        down,
    }
}

#[test]
fn down_beats_the_alive_it_was_declared_against_and_a_higher_alive_beats_down() {
    let mut g = Gossip::new(id(1));
    assert_eq!(g.heard_from(&id(2), 3), None, "alive to alive: no change");
    assert!(!g.is_down(&id(2)));
    // A down at a lower incarnation than known is stale.
    assert_eq!(g.apply(&news(2, 2, true)), None);
    assert!(!g.is_down(&id(2)));
    // At the known incarnation it wins.
    assert_eq!(
        g.apply(&news(2, 3, true)),
        Some(Change {
            node: id(2),
            down: true
        })
    );
    assert_eq!(g.held_down_at(&id(2)), Some(3));
    // An alive at the same incarnation does not clear it; a higher one does.
    assert_eq!(g.apply(&news(2, 3, false)), None);
    assert!(g.is_down(&id(2)));
    assert_eq!(
        g.heard_from(&id(2), 4),
        Some(Change {
            node: id(2),
            down: false
        })
    );
    assert_eq!(g.held_down_at(&id(2)), None);
    // A down against the newer incarnation wins again.
    assert!(g.apply(&news(2, 4, true)).is_some());
    // A second down at the same incarnation changes nothing.
    assert_eq!(g.apply(&news(2, 4, true)), None);
}

#[test]
fn a_node_told_it_is_down_rises_above_and_says_it_is_alive() {
    let mut g = Gossip::new(id(1));
    g.resize(10, |_| true);
    assert_eq!(g.incarnation(), 0);
    g.told_down(0);
    assert_eq!(g.incarnation(), 1);
    let out = g.outgoing();
    assert_eq!(out, vec![news(1, 1, false)]);
    // A stale down (below its incarnation) is ignored.
    g.told_down(0);
    assert_eq!(g.incarnation(), 1);
    // News of itself held down, heard from others, is refuted the same way.
    assert_eq!(g.apply(&news(1, 5, true)), None);
    assert_eq!(g.incarnation(), 6);
    // An alive from an earlier life at a higher incarnation is carried on.
    assert_eq!(g.apply(&news(1, 9, false)), None);
    assert_eq!(g.incarnation(), 9);
    // It never holds itself down.
    assert_eq!(g.declare_down(&id(1)), None);
    assert!(!g.is_down(&id(1)));
}

#[test]
fn declaring_down_uses_the_known_incarnation_and_is_said_once() {
    let mut g = Gossip::new(id(1));
    g.heard_from(&id(2), 7);
    assert!(g.declare_down(&id(2)).is_some());
    assert_eq!(g.held_down_at(&id(2)), Some(7));
    assert_eq!(g.declare_down(&id(2)), None, "already down");
    // Never heard of: declared at 0.
    assert!(g.declare_down(&id(3)).is_some());
    assert_eq!(g.held_down_at(&id(3)), Some(0));
}

#[test]
fn news_is_passed_on_a_bounded_number_of_times_a_few_per_message() {
    let mut g = Gossip::new(id(1));
    g.resize(1000, |_| true);
    // 3 * log2(1000) rounded up = 3 * 10.
    for port in 2..20 {
        g.apply(&news(port, 1, true));
    }
    assert_eq!(g.pending(), 18);
    let mut sent = 0;
    let mut messages = 0;
    loop {
        let out = g.outgoing();
        if out.is_empty() {
            break;
        }
        assert!(out.len() <= MAX_RUMOURS_PER_MESSAGE);
        sent += out.len();
        messages += 1;
    }
    assert_eq!(sent, 18 * 30, "each piece passed on 30 times");
    assert_eq!(messages, 90);
    // Nothing new: nothing to say.
    assert!(g.outgoing().is_empty());
    // A first alive at incarnation 0 is what everyone assumes: not news.
    g.heard_from(&id(40), 0);
    assert_eq!(g.pending(), 0);
}

#[test]
fn resizing_forgets_nodes_out_of_the_ring() {
    let mut g = Gossip::new(id(1));
    g.apply(&news(2, 1, true));
    g.apply(&news(3, 1, true));
    g.resize(2, |n| *n == id(1) || *n == id(2));
    assert!(g.is_down(&id(2)));
    assert!(!g.is_down(&id(3)));
    assert_eq!(g.pending(), 1);
}

/// n views, each round every view "probes" `fanout` others chosen by a
/// simple generator: the probe carries the prober's news, the answer the
/// target's. Returns the rounds until every view but the subject's holds
/// the subject down (None if it never happens within `limit`).
fn rounds_to_spread(n: u16, fanout: usize, limit: usize) -> Option<usize> {
    let mut views: Vec<Gossip> = (1..=n).map(|p| Gossip::new(id(p))).collect();
    for v in &mut views {
        v.resize(n as usize, |_| true);
    }
    // View 1 declares node n down (its own probes held it down).
    views[0].declare_down(&id(n));
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 1..=limit {
        for from in 0..(n as usize - 1) {
            for _ in 0..fanout {
                let to = (next() % u64::from(n - 1)) as usize;
                if to == from {
                    continue;
                }
                let carried = views[from].outgoing();
                for r in &carried {
                    views[to].apply(r);
                }
                let back = views[to].outgoing();
                for r in &back {
                    views[from].apply(r);
                }
            }
        }
        if views[..n as usize - 1].iter().all(|v| v.is_down(&id(n))) {
            return Some(round);
        }
    }
    None
}

#[test]
fn news_reaches_every_node_in_a_few_rounds_at_any_size() {
    let small = rounds_to_spread(10, 3, 50).expect("spreads in 10");
    let large = rounds_to_spread(1000, 3, 50).expect("spreads in 1,000");
    assert!(small <= 4, "{small} rounds for 10 nodes");
    assert!(large <= 8, "{large} rounds for 1,000 nodes");
}

/// A probe's news about a name outside the ring is dropped; news about a
/// member is taken in (before the fix, any name a probe carried was kept).
#[test]
fn news_of_names_outside_the_ring_is_dropped() {
    use crate::config::FsyncMode;
    use crate::context::NodeContext;
    use crate::ring::RingState;
    use crate::rpc::{NodeState, Probe};
    use crate::storage::Storage;
    use crate::types::Replication;
    use std::sync::Arc;

    let (me, peer, member, stranger) = (id(1), id(2), id(3), id(9));
    let mut state = RingState::bootstrap(me.clone(), Replication { n: 3, w: 2, r: 2 });
    for m in [&peer, &member] {
        state = state.with_member(m.clone()).unwrap();
    }
    let storage = Arc::new(Storage::open(None, FsyncMode::Never).unwrap());
    let node = NodeContext::new(me.clone(), storage);
    node.ring.install(state.clone());
    let detector = super::Detector::new(
        &node,
        Some(std::time::Duration::from_millis(250)),
        Arc::new(tokio::sync::Notify::new()),
    );
    detector.answer(Probe {
        from: peer.clone(),
        incarnation: 0,
        epoch: state.epoch,
        you_are_down_at: None,
        rumours: vec![news(9, 0, true), news(3, 0, true)],
    });
    assert_eq!(node.peers.state(&member), NodeState::Down);
    assert_ne!(node.peers.state(&stranger), NodeState::Down);
    let outgoing = super::lock(&detector.gossip).outgoing();
    assert!(outgoing.iter().all(|r| r.node != stranger), "{outgoing:?}");
}
