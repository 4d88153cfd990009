//! The merge of replicas' scan parts into a page (see the module documentation).

use super::*;
use crate::rpc::ReplicaScanReply;
use crate::vclock::{Content, Dot, Sibling, VersionVector};

const NOW: u64 = 1_000_000;

fn node(port: u16) -> NodeId {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// A copy holding one version written by `port` with `counter`: a value, or
/// a tombstone that has seen the value of counter - 1.
fn copy(port: u16, counter: u64, live: bool) -> Object {
    let dot = Dot {
        node: node(port),
        counter,
    };
    let content = if live {
        Content::Value(crate::types::Value::new())
    } else {
        Content::Tombstone
    };
    Object::from_parts(VersionVector::new(), vec![Sibling { dot, content }])
}

fn part(items: &[(&str, Object)], resume: Option<&str>) -> ReplicaScanReply {
    ReplicaScanReply {
        items: items
            .iter()
            .map(|(k, o)| (k.to_string(), o.clone()))
            .collect(),
        resume: resume.map(str::to_string),
    }
}

#[test]
fn parts_are_merged_in_key_order_and_each_key_listed_once() {
    let a = part(&[("a", copy(1, 1, true)), ("c", copy(1, 1, true))], None);
    let b = part(&[("b", copy(2, 1, true)), ("c", copy(1, 1, true))], None);
    let page = merge_page(vec![a, b], vec![node(1), node(2)], 2, 10, NOW);
    assert_eq!(page.keys, ["a", "b", "c"]);
    assert_eq!(page.next, None, "every replica reached the end");
}

#[test]
fn a_delete_one_replica_missed_hides_the_key() {
    // Replica 1 has the value (1,1); replica 2 the tombstone (1,2) that saw it.
    let mut deleted = copy(1, 1, true);
    deleted.merge(&copy(1, 2, false));
    let tomb = Object::from_parts(
        deleted.context().clone(),
        deleted
            .siblings()
            .iter()
            .filter(|s| s.content == Content::Tombstone)
            .cloned()
            .collect(),
    );
    let page = merge_page(
        vec![
            part(&[("k", copy(1, 1, true))], None),
            part(&[("k", tomb)], None),
        ],
        vec![node(1), node(2)],
        2,
        10,
        NOW,
    );
    assert!(page.keys.is_empty(), "{:?}", page.keys);
}

#[test]
fn keys_past_the_lowest_resume_wait_for_the_next_page() {
    // Replica 1 stopped at "b": it has not looked past it, so "c" from
    // replica 2 may not be all there is before "d".
    let a = part(
        &[("a", copy(1, 1, true)), ("b", copy(1, 1, true))],
        Some("b"),
    );
    let b = part(&[("c", copy(2, 1, true)), ("d", copy(2, 1, true))], None);
    let page = merge_page(vec![a, b], vec![node(1), node(2)], 1, 10, NOW);
    assert_eq!(page.keys, ["a", "b"]);
    assert_eq!(page.next.as_deref(), Some("b"));
}

#[test]
fn a_full_page_points_past_its_last_key() {
    let a = part(
        &[
            ("a", copy(1, 1, true)),
            ("b", copy(1, 1, true)),
            ("c", copy(1, 1, true)),
        ],
        None,
    );
    let page = merge_page(vec![a], vec![node(1)], 1, 2, NOW);
    assert_eq!(page.keys, ["a", "b"]);
    assert_eq!(page.next.as_deref(), Some("b"));
    // Exactly full and nothing after: the last page.
    let a = part(&[("a", copy(1, 1, true)), ("b", copy(1, 1, true))], None);
    let page = merge_page(vec![a], vec![node(1)], 1, 2, NOW);
    assert_eq!(page.next, None);
}

#[test]
fn a_page_of_only_deleted_keys_is_empty_but_goes_on() {
    let a = part(&[("a", copy(1, 1, false))], Some("a"));
    let page = merge_page(vec![a], vec![node(1)], 1, 10, NOW);
    assert!(page.keys.is_empty());
    assert_eq!(page.next.as_deref(), Some("a"));
}

#[test]
fn scan_arguments_are_checked() {
    let req = |limit, prefix: &str| ScanRequest {
        prefix: prefix.into(),
        after: None,
        limit,
        consistent: false,
    };
    assert!(check_scan(&req(1, "")).is_ok());
    assert!(check_scan(&req(0, "")).is_err());
    assert!(check_scan(&req(MAX_SCAN_LIMIT + 1, "")).is_err());
    assert!(check_scan(&req(1, &"x".repeat(MAX_KEY_BYTES + 1))).is_err());
}

#[test]
fn an_expired_version_is_not_listed() {
    let dot = Dot {
        node: node(1),
        counter: 1,
    };
    let expiring = |at| {
        Object::from_parts(
            VersionVector::new(),
            vec![Sibling {
                dot: dot.clone(),
                content: Content::Value(crate::types::Value::new()).expiring(at),
            }],
        )
    };
    let a = part(
        &[("old", expiring(NOW)), ("young", expiring(NOW + 1))],
        None,
    );
    let page = merge_page(vec![a], vec![node(1)], 1, 10, NOW);
    assert_eq!(page.keys, ["young"]);
}
