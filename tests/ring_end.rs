//! Every ring change can end, on real processes and the real client, each under
//! a write load that records every acknowledged put and reads all back:
//!
//! - a joining node killed for good mid-change: `abort-change` (or
//!   `remove-node` of the joiner) returns the ring to its members, and the
//!   next `add-node` works;
//! - a joining node, and separately a sending member, wiped mid-change: each is
//!   readmitted under a new identity and the change settles;
//! - `abort-change` of an add and of a remove at several points of the transfer;
//! - a key a receiver refuses for good (an object over the copy limit): the
//!   change still settles and `status` names the key.
//!
//! The nodes move keys at `--transfer-rate 200` so that a change of 2,000 keys
//! lasts long enough to be caught in the middle.

mod common;

use std::time::Duration;

use common::writeload::{describe_lost, preload, verify, WriteLoad};
use common::{wait_for, Cluster};
use serde_json::Value;

const SLOW: &[&str] = &["--transfer-rate", "200"];
const SETTLE: Duration = Duration::from_secs(90);

/// The members `status` at the leader lists (the nodes of both rings during a
/// change).
fn members(s: &Value) -> Vec<String> {
    let mut ids: Vec<String> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn ids(c: &Cluster, idx: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = idx.iter().map(|&i| c.nodes[i].id.clone()).collect();
    v.sort();
    v
}

/// Runs one command at the leader and returns its result, asserting it is ok.
fn at_leader(c: &Cluster, command: &str) -> Value {
    let out = c.at_leader(command);
    let r = out.results.first().cloned().unwrap_or(Value::Null);
    assert_eq!(r["ok"], true, "{command}: {out:?}");
    r
}

/// Waits until the leader's status shows a change whose transfer has moved at
/// least `moved` keys (so the change is caught in the middle).
fn wait_moving(c: &Cluster, moved: u64) -> Value {
    wait_for(
        "the change to be under way",
        Duration::from_secs(60),
        || {
            let s = c.status(0)?;
            let t = &s["transition"];
            (!t.is_null() && t["keys_moved"].as_u64()? >= moved).then_some(s)
        },
    )
}

/// Stops the load and asserts every preloaded and acknowledged key reads back.
fn assert_nothing_lost(
    c: &Cluster,
    via: &[usize],
    preloaded: Vec<(String, String)>,
    load: WriteLoad,
) {
    let report = load.stop();
    eprintln!(
        "write load: {} acknowledged, {} failed (outcome unknown), samples {:?}",
        report.acked.len(),
        report.failed,
        report.samples
    );
    assert!(!report.acked.is_empty(), "the load wrote nothing");
    let mut all = preloaded;
    all.extend(report.acked);
    let lost = verify(&c.ports(via), &all);
    assert!(lost.is_empty(), "{}", describe_lost(&lost, all.len()));
}

/// `locate` of a few keys names only `allowed` nodes.
fn assert_located_on(c: &Cluster, allowed: &[String], keys: &[(String, String)]) {
    let commands: Vec<String> = keys.iter().map(|(k, _)| format!("locate {k}")).collect();
    let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
    for r in c.client(0, &refs).results {
        for field in ["replicas", "pending", "fallbacks"] {
            for n in r[field].as_array().unwrap() {
                let n = n.as_str().unwrap().to_string();
                assert!(allowed.contains(&n), "locate names {n} in {field}: {r}");
            }
        }
    }
}

fn wipe(c: &Cluster, i: usize) {
    let dir = c.data_dir(i).to_path_buf();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A joining node dies for good in the middle of its change: nothing can
/// settle the change, so the operator ends it, with `abort-change` or with
/// `remove-node` of the joiner. The ring is back to its members, nothing
/// acknowledged is lost, and the next `add-node` works.
#[test]
fn a_joining_node_dead_for_good_is_aborted_and_the_ring_moves_on() {
    for how in ["abort-change", "remove-node"] {
        let mut c = Cluster::ring_with(5, 4, (3, 2, 2), SLOW);
        let preloaded = preload(c.nodes[0].port, "j", 2000);
        let load = WriteLoad::start_with("jl", &c.ports(&[0, 1, 2]), Duration::from_millis(5));
        at_leader(&c, &format!("add-node {}", c.nodes[4].id));
        wait_moving(&c, 100);
        c.kill(4);
        wipe(&c, 4);
        load.wait_acked(20, Duration::from_secs(30));
        // The change cannot settle without the joiner's report.
        std::thread::sleep(Duration::from_secs(3));
        assert!(!c.status(0).unwrap()["transition"].is_null());
        let command = match how {
            "abort-change" => "abort-change".to_string(),
            _ => format!("remove-node {}", c.nodes[4].id),
        };
        let r = at_leader(&c, &command);
        let old = ids(&c, &[0, 1, 2, 3]);
        let mut back: Vec<String> = r["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        back.sort();
        assert_eq!(back, old, "{how}: {r}");
        let s = c.wait_settled(0, SETTLE);
        assert_eq!(members(&s), old, "{how}: {s}");
        load.wait_acked(20, Duration::from_secs(30));
        assert_located_on(&c, &old, &preloaded[..50]);
        assert_nothing_lost(&c, &[0, 1, 2, 3], preloaded, load);

        // The dead node comes back on a new data directory and is added.
        c.start(4);
        at_leader(&c, &format!("add-node {}", c.nodes[4].id));
        let s = c.wait_settled(0, SETTLE);
        assert_eq!(members(&s), ids(&c, &[0, 1, 2, 3, 4]), "{how}: {s}");
    }
}

/// A joining node, and separately a member sending its keys, lose their data
/// directory in the middle of the change and come back empty: each is
/// readmitted under a new identity while the change runs, the change settles,
/// and nothing acknowledged is lost.
#[test]
fn a_node_wiped_mid_change_is_readmitted_and_the_change_settles() {
    for wiped in [4usize, 2] {
        let mut c = Cluster::ring_with(5, 4, (3, 2, 2), SLOW);
        let preloaded = preload(c.nodes[0].port, "w", 2000);
        let load = WriteLoad::start_with("wl", &c.ports(&[0, 1]), Duration::from_millis(5));
        at_leader(&c, &format!("add-node {}", c.nodes[4].id));
        wait_moving(&c, 100);
        c.kill(wiped);
        wipe(&c, wiped);
        c.start(wiped);
        let s = c.wait_settled(0, SETTLE);
        assert_eq!(members(&s), ids(&c, &[0, 1, 2, 3, 4]), "{s}");
        assert!(
            c.log(0)
                .contains("readmitting a member that lost its data directory"),
            "node {wiped} was not readmitted"
        );
        // A wiped member refills by anti-entropy before its reads count.
        wait_for("the wiped node to refill", Duration::from_secs(60), || {
            let s = c.status(0)?;
            let n = common::node_status(&s, &c.nodes[wiped].id);
            (n["restoring"] == false).then_some(())
        });
        assert_nothing_lost(&c, &[0, 1, 2, 3, 4], preloaded, load);
    }
}

/// `abort-change` of an add and of a remove, early and late in the transfer:
/// the ring returns to the members before the change, `locate` names only
/// them, and every acknowledged write reads back.
#[test]
fn abort_change_of_an_add_and_of_a_remove_loses_nothing() {
    for (change, moved) in [
        ("add", 50u64),
        ("add", 600),
        ("remove", 50),
        ("remove", 400),
    ] {
        let c = Cluster::ring_with(5, 4, (3, 2, 2), SLOW);
        let preloaded = preload(c.nodes[0].port, "a", 2000);
        let load = WriteLoad::start_with("al", &c.ports(&[1, 0]), Duration::from_millis(5));
        let command = match change {
            "add" => format!("add-node {}", c.nodes[4].id),
            _ => format!("remove-node {}", c.nodes[3].id),
        };
        at_leader(&c, &command);
        let s = wait_moving(&c, moved);
        eprintln!(
            "aborting the {change} at {} of {} keys moved",
            s["transition"]["keys_moved"], s["transition"]["keys_to_move"]
        );
        let r = at_leader(&c, "abort-change");
        let old = ids(&c, &[0, 1, 2, 3]);
        assert_eq!(r["epoch"].as_u64(), Some(s["epoch"].as_u64().unwrap() + 1));
        let s = c.wait_settled(0, SETTLE);
        assert_eq!(members(&s), old, "{change} at {moved}: {s}");
        // Nothing to abort any more.
        let out = c.client(0, &["abort-change"]);
        assert_eq!(out.results[0]["ok"], false, "{out:?}");
        assert!(
            out.results[0]["error"]
                .as_str()
                .unwrap()
                .contains("no ring change is running"),
            "{out:?}"
        );
        assert_located_on(&c, &old, &preloaded[..50]);
        if change == "add" {
            // The aborted joiner held only copies: it drops them, sending nothing.
            wait_for(
                "the aborted joiner to drop its copies",
                Duration::from_secs(30),
                || {
                    c.log(4)
                        .contains("dropped its copies without handing them off")
                        .then_some(())
                },
            );
        }
        assert_nothing_lost(&c, &[0, 1, 2, 3], preloaded, load);
    }
}

/// A key that a receiver refuses for good (here an object of 13 siblings of
/// 1 MiB, over the 12 MiB a node takes as a copy: concurrent puts through two
/// coordinators can make such a merge) must not hold a change for ever: the
/// sender reports it and goes on, the change settles, `status` names the key,
/// and every acknowledged write still reads back.
#[test]
fn a_key_refused_for_good_is_reported_and_the_change_settles() {
    use dynamo::ring::{Ring, RingState};
    use dynamo::types::{NodeId, Replication};
    use dynamo::vclock::{Content, Object, VersionVector};

    let mut c = Cluster::ring_with(4, 3, (3, 2, 2), &[]);
    // A key the fourth node will own once it joins.
    let id = |i: usize| -> NodeId { c.nodes[i].id.parse().unwrap() };
    let mut state = RingState::bootstrap(id(0), Replication { n: 3, w: 2, r: 2 });
    for i in 1..4 {
        state = state.with_member(id(i)).unwrap();
    }
    let after = Ring::new(state);
    let key = (0..)
        .map(|i| format!("big-{i}"))
        .find(|k| after.preference_list(k.as_bytes()).contains(&id(3)))
        .unwrap();
    // Node 2 holds it, written into its data directory while it is stopped.
    c.terminate(2);
    {
        let storage =
            dynamo::storage::Storage::open(Some(c.data_dir(2)), dynamo::config::FsyncMode::Always)
                .unwrap();
        let mut object = Object::new();
        for i in 0..13u16 {
            let actor: NodeId = format!("127.0.0.1:{}", 20_000 + i).parse().unwrap();
            let value = bytes::Bytes::from(vec![b'x'; 1 << 20]);
            object
                .update(&actor, &VersionVector::new(), Content::Value(value), 0)
                .unwrap();
        }
        storage.merge(&key, &object).unwrap();
        storage.flush().unwrap();
    }
    c.start(2);
    let preloaded = preload(c.nodes[0].port, "r", 500);
    let load = WriteLoad::start_with("rl", &c.ports(&[0, 1]), Duration::from_millis(5));
    at_leader(&c, &format!("add-node {}", c.nodes[3].id));
    let s = c.wait_settled(0, SETTLE);
    assert_eq!(members(&s), ids(&c, &[0, 1, 2, 3]), "{s}");
    let refused = s["refused"].as_array().cloned().unwrap_or_default();
    assert!(
        refused
            .iter()
            .any(|r| r["key"] == key.as_str() && r["during"] == "transfer"),
        "status does not name the refused key {key}: {s}"
    );
    assert!(c.log(2).contains("a peer refused a key for good"));
    // The people's form says it too.
    let out = common::run_client_human(c.nodes[0].port, &["status"]);
    assert!(out.contains(&format!("key {key:?}")), "{out}");
    assert_nothing_lost(&c, &[0, 1, 2, 3], preloaded, load);
}

/// A member sending its keys dies for good in the middle of a change (it stays
/// in the target, so the change waits for its report for ever): `remove-node`
/// of it is then accepted (it does not answer) and takes it out of the change,
/// which settles without it; its keys come from the other replicas.
#[test]
fn a_sending_member_dead_for_good_is_removed_from_the_change() {
    let mut c = Cluster::ring_with(5, 4, (3, 2, 2), SLOW);
    let preloaded = preload(c.nodes[0].port, "d", 2000);
    let load = WriteLoad::start_with("dl", &c.ports(&[0, 1]), Duration::from_millis(5));
    at_leader(&c, &format!("add-node {}", c.nodes[4].id));
    // While node 2 answers, removing it is a second change, refused.
    let out = c.client(0, &[&format!("remove-node {}", c.nodes[2].id)]);
    assert!(
        out.results[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already running"),
        "{out:?}"
    );
    wait_moving(&c, 100);
    c.kill(2);
    load.wait_acked(20, Duration::from_secs(30));
    let r = at_leader(&c, &format!("remove-node {}", c.nodes[2].id));
    assert_eq!(r["leaving"][0], c.nodes[2].id.as_str(), "{r}");
    let s = c.wait_settled(0, SETTLE);
    assert_eq!(members(&s), ids(&c, &[0, 1, 3, 4]), "{s}");
    assert_nothing_lost(&c, &[0, 1, 3, 4], preloaded, load);
}
