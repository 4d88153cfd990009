//! Unit tests and property tests for the vclock module. The scenario scripts
//! are goldenscript files in `testdata/`, run by `script.rs`.

use proptest::prelude::*;

use super::*;

fn node(s: &str) -> NodeId {
    s.parse().expect("test node id")
}

fn vv(s: &str) -> VersionVector {
    VersionVector::parse_context(s).expect("test context")
}

fn value(s: &str) -> Content {
    Content::Value(Value::from(s.to_string()))
}

fn dot(n: &str, counter: u64) -> Dot {
    Dot {
        node: node(n),
        counter,
    }
}

fn values(object: &Object) -> Vec<String> {
    object
        .values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn bad_reason(input: &str) -> String {
    match VersionVector::parse_context(input) {
        Err(Error::BadContext { reason }) => reason,
        other => panic!("{input:?} gave {other:?}, expected BadContext"),
    }
}

// ---------------------------------------------------------------------------
// Version vectors
// ---------------------------------------------------------------------------

#[test]
fn version_vector_basics() {
    let mut a = VersionVector::new();
    assert!(a.is_empty());
    assert_eq!(a.get(&node("n1:1")), 0);
    a.add(&dot("n1:1", 3));
    a.add(&dot("n1:1", 2));
    a.add(&dot("n2:1", 0));
    assert_eq!(a.get(&node("n1:1")), 3);
    assert_eq!(a.len(), 1, "a zero dot adds no entry");
    assert!(a.covers(&dot("n1:1", 1)));
    assert!(a.covers(&dot("n1:1", 3)));
    assert!(!a.covers(&dot("n1:1", 4)));
    assert!(!a.covers(&dot("n2:1", 1)));

    let b = vv(r#"{"n1:1":1,"n2:1":5}"#);
    assert!(!a.descends(&b) && !b.descends(&a));
    let mut m = a.clone();
    m.merge(&b);
    assert_eq!(m, vv(r#"{"n1:1":3,"n2:1":5}"#));
    assert!(m.descends(&a) && m.descends(&b) && m.descends(&VersionVector::new()));
    assert_eq!(
        m.iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect::<Vec<_>>(),
        vec![("n1:1".to_string(), 3), ("n2:1".to_string(), 5)]
    );
}

#[test]
fn context_json_round_trips() {
    let empty = VersionVector::new();
    assert_eq!(empty.to_json(), "{}");
    let c = vv(r#" { "127.0.0.1:13338" : 1 , "127.0.0.1:13337" : 2 } "#);
    let json = r#"{"127.0.0.1:13337":2,"127.0.0.1:13338":1}"#;
    assert_eq!(c.to_json(), json);
    assert_eq!(c.to_string(), json);
    assert_eq!(serde_json::to_string(&c).expect("serialise"), json);
    assert_eq!(json.parse::<VersionVector>().expect("parse"), c);
    let decoded: VersionVector = serde_json::from_str(json).expect("decode");
    assert_eq!(decoded, c);
}

#[test]
fn context_zero_counters_are_dropped() {
    assert_eq!(vv(r#"{"127.0.0.1:13337":0}"#), VersionVector::new());
    let decoded: VersionVector =
        serde_json::from_str(r#"{"a:1":0,"b:1":2}"#).expect("decode zero entry");
    assert_eq!(decoded, vv(r#"{"b:1":2}"#));
    assert_eq!(decoded.len(), 1);
}

#[test]
fn to_json_escapes_like_serde_json() {
    // Node ids are validated while decoding, so an id that would need escaping
    // never reaches to_json from a peer or the disk.
    let odd = serde_json::from_str::<VersionVector>(r#"{"a\"b\\c\n\u0001é:1":1}"#);
    assert!(odd.is_err());
    let plain = VersionVector::parse_context(r#"{"h-é.x:1":1}"#).expect("parse");
    assert_eq!(
        plain.to_json(),
        serde_json::to_string(&plain).expect("serialise")
    );
}

#[test]
fn context_parse_errors() {
    let example = r#"expected a JSON object such as {} or {"127.0.0.1:13337":1}"#;
    for not_object in ["[1,2]", "5", r#""127.0.0.1:13337""#, "null", "true"] {
        let reason = bad_reason(not_object);
        assert!(reason.starts_with(example), "{not_object}: {reason}");
    }
    assert!(bad_reason("").contains("empty"));
    assert!(bad_reason("   ").contains(example));
    assert!(bad_reason(r#"{"a:1":-1}"#).contains("negative"));
    assert!(bad_reason(r#"{"a:1":1.5}"#).contains("not a whole number"));
    assert!(bad_reason(r#"{"a:1":1e2}"#).contains("not a whole number"));
    assert!(bad_reason(r#"{"a:1":18446744073709551616}"#).contains("not a whole number"));
    assert!(bad_reason(r#"{"a:1":"1"}"#).contains("not a string"));
    assert!(bad_reason(r#"{"a:1":null}"#).contains("not null"));
    assert!(bad_reason(r#"{"a:1":[1]}"#).contains("not an array"));
    assert!(bad_reason(r#"{"localhost":1}"#).contains("bad node address"));
    assert!(bad_reason(r#"{"h:0":1}"#).contains("port must be"));
    assert!(bad_reason(r#"{"h:1":1,"h:1":2}"#).contains("appears twice"));
    let trailing = bad_reason(r#"{"h:1":1} x"#);
    assert!(trailing.contains("not valid JSON") && trailing.contains("trailing"));
    assert!(bad_reason(r#"{"h:1":1"#).contains("not valid JSON"));
    assert!(bad_reason("{'h:1':1}").contains("not valid JSON"));
    // Error's Display puts the variant's prefix in front.
    let shown = VersionVector::parse_context("[]")
        .expect_err("array refused")
        .to_string();
    assert!(
        shown.starts_with("bad context: expected a JSON object"),
        "{shown}"
    );
}

fn context_with(entries: usize) -> String {
    let body: Vec<String> = (1..=entries).map(|p| format!(r#""h:{p}":1"#)).collect();
    format!("{{{}}}", body.join(","))
}

#[test]
fn context_entry_limit() {
    let full = vv(&context_with(MAX_CONTEXT_ENTRIES));
    assert_eq!(full.len(), MAX_CONTEXT_ENTRIES);
    let reason = bad_reason(&context_with(MAX_CONTEXT_ENTRIES + 1));
    assert!(
        reason.contains(&format!("{} nodes", MAX_CONTEXT_ENTRIES + 1)),
        "{reason}"
    );
    // Over the limit is refused even when the extra entries are zero counters.
    let mut zeros: Vec<String> = (1..=MAX_CONTEXT_ENTRIES + 5)
        .map(|p| format!(r#""h:{p}":0"#))
        .collect();
    zeros.push(r#""z:1":1"#.into());
    assert!(VersionVector::parse_context(&format!("{{{}}}", zeros.join(","))).is_err());
}

// ---------------------------------------------------------------------------
// Objects: update
// ---------------------------------------------------------------------------

#[test]
fn blind_puts_on_one_coordinator_are_siblings() {
    let n1 = node("127.0.0.1:13337");
    let mut o = Object::new();
    assert!(o.is_empty());
    let a = o
        .update(&n1, &VersionVector::new(), value("a"), 0)
        .expect("put a");
    let b = o
        .update(&n1, &VersionVector::new(), value("b"), 0)
        .expect("put b");
    assert_ne!(a, b);
    assert_eq!((a.counter, b.counter), (1, 2));
    assert_eq!(values(&o), ["a", "b"]);
    assert_eq!(o.context(), &vv(r#"{"127.0.0.1:13337":2}"#));
    assert!(!o.is_empty() && !o.is_deleted());
    assert_eq!(o.counter_of(&n1), 2);

    // A put with the merged context replaces both.
    let seen = o.context().clone();
    let c = o.update(&n1, &seen, value("c"), 0).expect("put c");
    assert_eq!(c.counter, 3);
    assert_eq!(values(&o), ["c"]);
    assert_eq!(o.siblings().len(), 1);
}

#[test]
fn put_with_partial_context_keeps_unseen_siblings() {
    let n1 = node("n1:1");
    let n2 = node("n2:1");
    let mut o = Object::new();
    o.update(&n1, &VersionVector::new(), value("a"), 0)
        .expect("put");
    o.update(&n2, &VersionVector::new(), value("b"), 0)
        .expect("put");
    // The client saw only a.
    o.update(&n2, &vv(r#"{"n1:1":1}"#), value("c"), 0)
        .expect("put");
    assert_eq!(values(&o), ["b", "c"]);
    assert_eq!(o.context(), &vv(r#"{"n1:1":1,"n2:1":2}"#));
}

#[test]
fn delete_leaves_a_tombstone() {
    let n1 = node("n1:1");
    let mut o = Object::new();
    o.update(&n1, &VersionVector::new(), value("a"), 0)
        .expect("put");
    let seen = o.context().clone();
    let d = o.update(&n1, &seen, Content::Tombstone, 0).expect("delete");
    assert_eq!(d, dot("n1:1", 2));
    assert!(o.is_deleted());
    assert_eq!(o.values().count(), 0);
    assert_eq!(o.siblings().len(), 1);
    // A concurrent put (blind) survives next to the tombstone.
    o.update(&n1, &VersionVector::new(), value("b"), 0)
        .expect("put");
    assert!(!o.is_deleted());
    assert_eq!(values(&o), ["b"]);
}

#[test]
fn update_counter_takes_the_highest_of_context_seen_and_floor() {
    let n1 = node("n1:1");
    let mut o = Object::new();
    assert_eq!(
        o.update(&n1, &VersionVector::new(), value("a"), 7)
            .expect("put"),
        dot("n1:1", 8)
    );
    assert_eq!(
        o.update(&n1, &vv(r#"{"n1:1":20}"#), value("b"), 3)
            .expect("put"),
        dot("n1:1", 21)
    );
    assert_eq!(
        o.update(&n1, &VersionVector::new(), value("c"), 0)
            .expect("put"),
        dot("n1:1", 22)
    );
}

#[test]
fn update_counter_overflow_is_refused() {
    let n1 = node("n1:1");
    let mut o = Object::new();
    let seen = vv(&format!(r#"{{"n1:1":{}}}"#, u64::MAX));
    let before = o.clone();
    assert!(matches!(
        o.update(&n1, &seen, value("a"), 0),
        Err(Error::BadContext { .. })
    ));
    assert!(matches!(
        o.update(&n1, &VersionVector::new(), value("a"), u64::MAX),
        Err(Error::BadContext { .. })
    ));
    assert_eq!(o, before);
}

#[test]
fn too_many_siblings_is_refused_and_changes_nothing() {
    let n1 = node("n1:1");
    let mut o = Object::new();
    for i in 0..MAX_SIBLINGS {
        o.update(&n1, &VersionVector::new(), value(&i.to_string()), 0)
            .expect("under the limit");
    }
    let before = o.clone();
    let err = o
        .update(&n1, &VersionVector::new(), value("one more"), 0)
        .expect_err("over the limit");
    assert_eq!(
        err,
        Error::TooManySiblings {
            count: MAX_SIBLINGS + 1,
            limit: MAX_SIBLINGS
        }
    );
    assert_eq!(o, before);
    // Resolving with the full context works.
    let seen = o.context().clone();
    o.update(&n1, &seen, value("resolved"), 0).expect("resolve");
    assert_eq!(values(&o), ["resolved"]);
}

#[test]
fn update_refuses_a_context_that_grows_past_the_entry_limit() {
    let n1 = node("n1:1");
    let mut o = Object::new();
    o.update(&n1, &VersionVector::new(), value("a"), 0)
        .expect("put");
    let before = o.clone();
    // 256 other nodes plus n1 itself is one too many.
    let seen = vv(&context_with(MAX_CONTEXT_ENTRIES));
    assert!(matches!(
        o.update(&n1, &seen, value("b"), 0),
        Err(Error::BadContext { .. })
    ));
    assert_eq!(o, before);
}

// ---------------------------------------------------------------------------
// Objects: merge, normalisation, encoding
// ---------------------------------------------------------------------------

#[test]
fn merge_reports_change_and_drops_replaced_versions() {
    let n1 = node("n1:1");
    let n2 = node("n2:1");
    let mut r1 = Object::new();
    r1.update(&n1, &VersionVector::new(), value("x"), 0)
        .expect("put");
    let mut r2 = Object::new();
    assert!(r2.merge(&r1));
    assert!(!r2.merge(&r1), "merging the same state twice is a no-op");
    let seen = r2.context().clone();
    r2.update(&n2, &seen, value("y"), 0).expect("put");
    // r1 learns that x was replaced by y.
    assert!(r1.merge(&r2));
    assert_eq!(values(&r1), ["y"]);
    assert_eq!(r1, r2);
    // A stale copy does not bring x back.
    let mut stale = Object::new();
    stale
        .update(&n1, &VersionVector::new(), value("x"), 0)
        .expect("put");
    assert!(!r1.merge(&stale));
    assert_eq!(values(&r1), ["y"]);
}

#[test]
fn from_parts_restores_the_invariants() {
    let sib = |n: &str, c: u64, v: &str| Sibling {
        dot: dot(n, c),
        content: value(v),
    };
    let o = Object::from_parts(
        vv(r#"{"a:1":1}"#),
        vec![
            sib("b:1", 2, "late"),
            sib("a:1", 1, "first"),
            sib("b:1", 2, "duplicate"),
            sib("a:1", 0, "impossible"),
        ],
    );
    assert_eq!(values(&o), ["first", "late"]);
    assert_eq!(o.context(), &vv(r#"{"a:1":1,"b:1":2}"#));
    for s in o.siblings() {
        assert!(o.context().covers(&s.dot));
    }
}

#[test]
fn deserialize_normalises_objects() {
    let json = r#"{"context":{"a:1":0},"siblings":[
        {"dot":{"node":"b:1","counter":3},"content":{"Value":[98]}},
        {"dot":{"node":"a:1","counter":1},"content":"Tombstone"},
        {"dot":{"node":"b:1","counter":3},"content":"Tombstone"}]}"#;
    let o: Object = serde_json::from_str(json).expect("decode");
    assert_eq!(o.siblings().len(), 2);
    assert_eq!(o.siblings().first().map(|s| &s.dot), Some(&dot("a:1", 1)));
    assert_eq!(values(&o), ["b"]);
    assert_eq!(o.context(), &vv(r#"{"a:1":1,"b:1":3}"#));

    let encoded = serde_json::to_string(&o).expect("encode");
    let back: Object = serde_json::from_str(&encoded).expect("decode again");
    assert_eq!(back, o);
}

#[test]
fn approx_size_counts_values_and_overheads() {
    let n1 = node("n1:1");
    let mut o = Object::new();
    assert_eq!(o.approx_size(), 0);
    o.update(&n1, &VersionVector::new(), value("a"), 0)
        .expect("put");
    let small = o.approx_size();
    assert!(small > 1);
    o.update(
        &n1,
        &VersionVector::new(),
        Content::Value(Value::from(vec![0u8; 10_000])),
        0,
    )
    .expect("put");
    assert!(o.approx_size() >= small + 10_000);
    let encoded = serde_json::to_vec(&o).expect("encode").len();
    assert!(o.approx_size() <= encoded, "an estimate, not above JSON");
}

// ---------------------------------------------------------------------------
// Property tests over realistic histories
// ---------------------------------------------------------------------------

/// Replicas in a simulated history; replica `i` coordinates as node `n{i}:7000`.
const REPLICAS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    /// A put (or delete) coordinated by replica `at`, with the context the
    /// client read from replica `read` (or `{}` for a blind write).
    Write {
        at: usize,
        read: Option<usize>,
        delete: bool,
    },
    /// Anti-entropy / read repair: merge replica `from` into replica `to`.
    Sync { from: usize, to: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..REPLICAS, prop::option::of(0..REPLICAS), prop::bool::weighted(0.2))
            .prop_map(|(at, read, delete)| Op::Write { at, read, delete }),
        2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

fn history() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..40)
}

fn actor(i: usize) -> NodeId {
    node(&format!("n{i}:7000"))
}

/// An acknowledged write: its dot and the context its client sent.
struct Write {
    dot: Dot,
    seen: VersionVector,
}

/// What running a history leaves: the replicas, every state any replica went
/// through, and the acknowledged writes in order.
struct Run {
    replicas: Vec<Object>,
    snapshots: Vec<Object>,
    writes: Vec<Write>,
}

fn run(ops: &[Op]) -> Run {
    let mut replicas = vec![Object::new(); REPLICAS];
    let mut snapshots = vec![Object::new()];
    let mut writes = Vec::new();
    for op in ops {
        match *op {
            Op::Write { at, read, delete } => {
                let seen = read
                    .and_then(|r| replicas.get(r))
                    .map(|o| o.context().clone())
                    .unwrap_or_default();
                let Some(replica) = replicas.get_mut(at) else {
                    continue;
                };
                let next = replica.counter_of(&actor(at)) + 1;
                // Content is a function of the dot: same dot, same content.
                let content = if delete {
                    Content::Tombstone
                } else {
                    Content::Value(Value::from(format!("n{at}#{next}")))
                };
                if let Ok(dot) = replica.update(&actor(at), &seen, content, 0) {
                    assert_eq!(dot.counter, next);
                    writes.push(Write { dot, seen });
                    snapshots.push(replica.clone());
                }
            }
            Op::Sync { from, to } => {
                let Some(source) = replicas.get(from).cloned() else {
                    continue;
                };
                if let Some(target) = replicas.get_mut(to) {
                    target.merge(&source);
                    snapshots.push(target.clone());
                }
            }
        }
    }
    Run {
        replicas,
        snapshots,
        writes,
    }
}

fn pick(run: &Run, i: &prop::sample::Index) -> Object {
    run.snapshots
        .get(i.index(run.snapshots.len()))
        .cloned()
        .unwrap_or_default()
}

fn merged(a: &Object, b: &Object) -> Object {
    let mut m = a.clone();
    m.merge(b);
    m
}

fn assert_well_formed(o: &Object) {
    let dots: Vec<&Dot> = o.siblings().iter().map(|s| &s.dot).collect();
    assert!(dots.windows(2).all(|w| matches!(w, [x, y] if x < y)));
    assert!(dots.iter().all(|d| o.context().covers(d)));
    assert!(o.context().iter().all(|(_, c)| c > 0));
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_idempotent(
        ops in history(),
        i in any::<prop::sample::Index>(),
        j in any::<prop::sample::Index>(),
        k in any::<prop::sample::Index>(),
    ) {
        let run = run(&ops);
        let (a, b, c) = (pick(&run, &i), pick(&run, &j), pick(&run, &k));
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        let mut same = a.clone();
        prop_assert!(!same.merge(&a));
        prop_assert_eq!(&same, &a);
        // Merging again what was merged changes nothing.
        let mut ab = merged(&a, &b);
        prop_assert!(!ab.merge(&b));
        assert_well_formed(&ab);
    }

    #[test]
    fn merge_discards_only_versions_the_other_side_replaced(
        ops in history(),
        i in any::<prop::sample::Index>(),
        j in any::<prop::sample::Index>(),
    ) {
        let run = run(&ops);
        let (a, b) = (pick(&run, &i), pick(&run, &j));
        let m = merged(&a, &b);
        let holds = |o: &Object, d: &Dot| o.siblings().iter().any(|s| &s.dot == d);
        for (side, other) in [(&a, &b), (&b, &a)] {
            for s in side.siblings() {
                if !holds(&m, &s.dot) {
                    prop_assert!(!holds(other, &s.dot), "{} dropped though both hold it", s.dot);
                    prop_assert!(other.context().covers(&s.dot), "{} dropped unseen", s.dot);
                }
            }
        }
        for s in m.siblings() {
            prop_assert!(
                a.siblings().contains(s) || b.siblings().contains(s),
                "{} came from nowhere", s.dot
            );
        }
        let mut context = a.context().clone();
        context.merge(b.context());
        prop_assert_eq!(m.context(), &context);
    }

    #[test]
    fn no_acknowledged_write_is_silently_lost(ops in history()) {
        let run = run(&ops);
        let mut all = Object::new();
        for r in &run.replicas {
            all.merge(r);
            assert_well_formed(r);
        }
        for (n, w) in run.writes.iter().enumerate() {
            let kept = all.siblings().iter().any(|s| s.dot == w.dot);
            let replaced = run.writes.iter().skip(n + 1).any(|later| later.seen.covers(&w.dot));
            // Exactly one: kept unless a later client saw it, and then gone.
            prop_assert!(kept != replaced, "{}: kept {} replaced {}", w.dot, kept, replaced);
        }
        // Nothing but acknowledged writes survives.
        prop_assert!(all.siblings().iter().all(|s| run.writes.iter().any(|w| w.dot == s.dot)));
        // Every dot ever issued is in the final context.
        prop_assert!(run.writes.iter().all(|w| all.context().covers(&w.dot)));
    }

    #[test]
    fn parse_context_round_trips(entries in prop::collection::btree_map(1u16..=u16::MAX, 0u64..=u64::MAX, 0..8)) {
        let mut expected = VersionVector::new();
        let body: Vec<String> = entries.iter().map(|(port, c)| {
            expected.add(&Dot { node: node(&format!("10.0.0.1:{port}")), counter: *c });
            format!(r#""10.0.0.1:{port}":{c}"#)
        }).collect();
        let parsed = vv(&format!("{{{}}}", body.join(",")));
        prop_assert_eq!(&parsed, &expected);
        prop_assert_eq!(vv(&parsed.to_json()), parsed);
    }
}

#[test]
fn an_expiring_version_reads_until_its_instant_then_the_object_is_dead() {
    let mut o = Object::new();
    let d = o
        .update(&node("a:1"), &vv("{}"), value("v").expiring(1_000), 0)
        .unwrap();
    assert_eq!(d.counter, 1);
    assert_eq!(o.values_at(999).count(), 1);
    assert_eq!(o.values_at(1_000).count(), 0, "expired at its instant");
    assert!(!o.is_dead_at(999) && o.is_dead_at(1_000));
    assert!(o.is_dead_at(u64::MAX) && !o.is_deleted());
    assert_eq!(o.dies_at(), Some(1_000));
    // A sibling without expiry keeps the key alive for good.
    o.update(&node("b:1"), &vv("{}"), value("w"), 0).unwrap();
    assert_eq!(o.dies_at(), None);
    assert!(!o.is_dead_at(u64::MAX));
    assert_eq!(o.values_at(5_000).count(), 1);
    // The expiry travels with the version: a replica that merges it in
    // expires it at the same instant.
    let mut other = Object::new();
    other.merge(&o);
    assert_eq!(other.values_at(5_000).count(), 1);
    assert_eq!(other.values_at(999).count(), 2);
    // Without values, for a scan: the expiry is kept.
    assert!(o.without_values().is_live_at(5_000));
    let mut gone = Object::new();
    gone.update(&node("a:1"), &vv("{}"), value("x").expiring(10), 0)
        .unwrap();
    assert!(!gone.without_values().is_live_at(10));
    assert!(gone.without_values().is_live_at(9));
}

#[test]
fn an_expiring_version_round_trips_through_bincode() {
    let c = Content::Typed {
        value: Value::from("v".to_string()),
        media_type: "text/plain".into(),
    }
    .expiring(42);
    let bytes = bincode::serialize(&c).unwrap();
    let back: Content = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.media_type(), Some("text/plain"));
    assert_eq!(back.expires_at(), Some(42));
    // A record written before expiry existed decodes as it did.
    let old = bincode::serialize(&Content::Value(Value::from("v".to_string()))).unwrap();
    let back: Content = bincode::deserialize(&old).unwrap();
    assert_eq!(back.expires_at(), None);
}
