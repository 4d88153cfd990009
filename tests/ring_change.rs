//! Ring changes move data: end-to-end tests on real `dynamo` processes, driven by
//! the real `client` binary in `--json` mode.
//!
//! Every scenario preloads a few thousand keys, runs a write load (one long-lived
//! client in script mode, write-once keys) from before the change until after it
//! settled, and then reads back every acknowledged key: none may be lost. A put
//! that failed has an unknown outcome and is never checked either way.
//!
//! The kill tests run the nodes with a low `--transfer-rate` so a change takes
//! several seconds and can be caught in flight (`status` shows the transition
//! with `keys_moved < keys_to_move`), then `kill -9` a node and restart it on its
//! data directory: the change must still settle and nothing acknowledged be lost.
//!
//! When a test fails, the node logs are copied to
//! `target/tmp/node-logs/<test>/` (see [`Logs`]).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::writeload::{describe_lost, preload, verify, LoadReport, WriteLoad};
use common::{run_script, Cluster, Logs, SETTLE_LIMIT};
use serde_json::Value;

const NWR: (usize, usize, usize) = (3, 2, 2);
/// Keys written before each scenario's change.
const PRELOAD: usize = 2000;
/// Transfer rate (keys per second per sender) of the scenarios that do not kill:
/// a change takes a second or two, long enough to overlap the load.
const MODERATE: &str = "1000";
/// Transfer rate of the kill scenarios: a change takes several seconds.
const SLOW: &str = "150";
/// How long a change interrupted by a kill may take to settle.
const KILL_SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Runs one membership command at the leader and returns its (successful) result.
fn change(c: &Cluster, command: &str) -> Value {
    let out = c.at_leader(command);
    let r = out.results.first().cloned().unwrap_or(Value::Null);
    assert_eq!(r["ok"], true, "{command}: {out:?}");
    println!("{command} -> {r}");
    r
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

/// The member ids `status` lists.
fn member_ids(status: &Value) -> BTreeSet<String> {
    status["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {status}"))
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect()
}

/// Asserts the transition object has the documented keys.
fn check_transition_shape(t: &Value) {
    for k in [
        "epoch",
        "joining",
        "leaving",
        "keys_to_move",
        "keys_moved",
        "bytes_moved",
        "elapsed_ms",
        "keys_per_sec",
        "eta_s",
        "senders",
    ] {
        assert!(t.get(k).is_some(), "the transition has no {k:?}: {t}");
    }
    assert!(t["epoch"].is_u64(), "{t}");
    assert!(t["joining"].is_array() && t["leaving"].is_array(), "{t}");
    assert!(
        t["keys_to_move"].is_u64() && t["keys_moved"].is_u64(),
        "{t}"
    );
    for s in t["senders"].as_array().expect("senders") {
        for k in ["node", "state", "keys_to_move", "keys_moved", "bytes_moved"] {
            assert!(s.get(k).is_some(), "a sender has no {k:?}: {s}");
        }
    }
}

/// Polls `status` at node `via` until the running change is in flight —
/// `keys_moved < keys_to_move`, with at least one node in the `sending` state —
/// and `pick` accepts the transition; returns `pick`'s answer and the
/// transition. Panics if the change settles first (the transfer rate is too
/// high for the test) or after 60 s.
fn catch_in_flight<T>(
    c: &Cluster,
    via: usize,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> (T, Value) {
    let start = Instant::now();
    let mut seen_running = false;
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(s) = c.status(via) {
            let t = &s["transition"];
            if t.is_null() {
                assert!(
                    !seen_running,
                    "the change settled before the test caught it in flight; last: {last}"
                );
            } else {
                seen_running = true;
                check_transition_shape(t);
                let to_move = t["keys_to_move"].as_u64().unwrap_or(0);
                let moved = t["keys_moved"].as_u64().unwrap_or(0);
                let some_sending = t["senders"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["state"] == "sending"));
                if to_move > 0 && moved < to_move && some_sending {
                    if let Some(x) = pick(t) {
                        println!("caught in flight after {:?}: {t}", start.elapsed());
                        return (x, t.clone());
                    }
                }
                last = t.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("never caught the change in flight; last transition: {last}");
}

/// The sender line of node `id` in a transition, if it is sending and not done.
fn sending<'a>(t: &'a Value, id: &str) -> Option<&'a Value> {
    t["senders"].as_array()?.iter().find(|s| {
        s["node"] == id
            && s["state"] == "sending"
            && s["keys_moved"].as_u64() < s["keys_to_move"].as_u64()
    })
}

/// Waits for the change to settle, printing how long it took.
fn settle(c: &Cluster, what: &str, began: Instant, limit: Duration) -> Value {
    let s = c.wait_settled(0, limit);
    println!(
        "{what}: settled at epoch {} after {:?}",
        s["epoch"],
        began.elapsed()
    );
    s
}

/// Stops the load, prints what it did, and checks that every preloaded and
/// every acknowledged key reads back through `via_ports`.
fn stop_and_verify(
    name: &str,
    load: WriteLoad,
    preloaded: &[(String, String)],
    via_ports: &[u16],
) -> LoadReport {
    let report = load.stop();
    println!(
        "{name}: load ran {:?}: {} puts acknowledged, {} failed, {} client restarts; samples {:?}",
        report.elapsed,
        report.acked.len(),
        report.failed,
        report.restarts,
        report.samples
    );
    assert!(
        !report.acked.is_empty(),
        "{name}: the load had no acknowledged put at all; samples {:?}",
        report.samples
    );
    let mut all = preloaded.to_vec();
    all.extend(report.acked.iter().cloned());
    let began = Instant::now();
    let lost = verify(via_ports, &all);
    println!(
        "{name}: verified {} keys through ports {via_ports:?} in {:?}",
        all.len(),
        began.elapsed()
    );
    assert!(
        lost.is_empty(),
        "{name}: {}(load: {} acknowledged, {} failed; samples {:?})",
        describe_lost(&lost, all.len()),
        report.acked.len(),
        report.failed,
        report.samples
    );
    report
}

fn timed_preload(c: &Cluster, via: usize) -> Vec<(String, String)> {
    let began = Instant::now();
    let pre = preload(c.nodes[via].port, "pre", PRELOAD);
    println!("preloaded {PRELOAD} keys in {:?}", began.elapsed());
    pre
}

// ---------------------------------------------------------------------------
// a. Remove two of five, one after the other
// ---------------------------------------------------------------------------

#[test]
fn removing_two_of_five_members_loses_nothing() {
    let mut c = Cluster::ring_with(5, 5, NWR, &["--transfer-rate", MODERATE]);
    let _logs = Logs::keep("removing_two_of_five_members_loses_nothing", &c);
    let pre = timed_preload(&c, 0);
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    for i in [3, 4] {
        let id = c.nodes[i].id.clone();
        let began = Instant::now();
        let r = change(&c, &format!("remove-node {id}"));
        assert_eq!(strs(&r["leaving"]), vec![id.clone()], "{r}");
        assert!(strs(&r["joining"]).is_empty(), "{r}");
        assert!(!strs(&r["members"]).contains(&id), "{r}");
        let s = settle(&c, &format!("remove {id}"), began, SETTLE_LIMIT);
        assert!(s["epoch"].as_u64() > r["epoch"].as_u64(), "{s} after {r}");
        assert!(!member_ids(&s).contains(&id), "{s}");
        // Its change settled: the removed node is no longer needed.
        c.kill(i);
        load.wait_acked(20, Duration::from_secs(30));
    }
    let s = c.status(0).expect("status");
    assert_eq!(member_ids(&s).len(), 3, "{s}");
    stop_and_verify("remove two of five", load, &pre, &c.ports(&[0, 1, 2]));
}

// ---------------------------------------------------------------------------
// b. Add two, remove two originals, delete their data
// ---------------------------------------------------------------------------

#[test]
fn adding_two_and_removing_two_originals_loses_nothing() {
    let mut c = Cluster::ring_with(7, 5, NWR, &["--transfer-rate", MODERATE]);
    let _logs = Logs::keep("adding_two_and_removing_two_originals_loses_nothing", &c);
    let pre = timed_preload(&c, 0);
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    for (verb, i) in [("add", 5), ("add", 6), ("remove", 3), ("remove", 4)] {
        let id = c.nodes[i].id.clone();
        let began = Instant::now();
        let r = change(&c, &format!("{verb}-node {id}"));
        let (moving, other) = if verb == "add" {
            ("joining", "leaving")
        } else {
            ("leaving", "joining")
        };
        assert_eq!(strs(&r[moving]), vec![id.clone()], "{r}");
        assert!(strs(&r[other]).is_empty(), "{r}");
        assert_eq!(strs(&r["members"]).contains(&id), verb == "add", "{r}");
        let s = settle(&c, &format!("{verb} {id}"), began, SETTLE_LIMIT);
        assert_eq!(member_ids(&s).contains(&id), verb == "add", "{s}");
        load.wait_acked(20, Duration::from_secs(30));
    }
    for i in [3, 4] {
        c.kill(i);
        std::fs::remove_dir_all(c.data_dir(i)).expect("delete the data directory");
    }
    let live: BTreeSet<String> = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| c.nodes[i].id.clone())
        .collect();
    let report = stop_and_verify(
        "add two, remove two",
        load,
        &pre,
        &c.ports(&[0, 1, 2, 5, 6]),
    );

    // The placement names only live members, and nothing is pending.
    let s = c.status(0).expect("status");
    assert!(s["transition"].is_null(), "{s}");
    assert_eq!(member_ids(&s), live, "{s}");
    let epoch = s["epoch"].clone();
    let mut all: Vec<&String> = pre.iter().map(|(k, _)| k).collect();
    all.extend(report.acked.iter().map(|(k, _)| k));
    let step = (all.len() / 200).max(1);
    let sample: Vec<&String> = all.iter().step_by(step).take(200).copied().collect();
    for (n, via) in [1usize, 5].into_iter().enumerate() {
        let lines: Vec<String> = sample
            .iter()
            .skip(n)
            .step_by(2)
            .map(|k| format!("locate {k}"))
            .collect();
        let out = run_script(c.nodes[via].port, &lines, Duration::from_secs(60));
        assert_eq!(out.results.len(), lines.len(), "{out:?}");
        for r in &out.results {
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["epoch"], epoch, "locate at node {via}: {r}");
            let replicas = strs(&r["replicas"]);
            assert_eq!(replicas.len(), NWR.0, "{r}");
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), NWR.0, "{r}");
            for x in &replicas {
                assert!(live.contains(x), "{x} is not a live member: {r}");
            }
            assert!(strs(&r["pending"]).is_empty(), "{r}");
        }
    }
    println!("locate: {} keys placed on live members only", sample.len());
}

// ---------------------------------------------------------------------------
// c. kill -9 during a change
// ---------------------------------------------------------------------------

/// The member of [`slow_ring_of_five_plus_one`] that sends fast.
const FAST: usize = 1;

/// A ring of five (nodes 0-4) plus node 5 running outside it, preloaded. Every
/// node sends slowly except node [`FAST`]: when node 5 is added, node 1 has
/// its keys confirmed on node 5 within a second while the others still send for
/// several seconds, so the test can act after node 5 durably took some keys and
/// before the change can settle.
fn slow_ring_of_five_plus_one(name: &'static str) -> (Cluster, Logs, Vec<(String, String)>) {
    let mut c = Cluster::ring_with(6, 5, NWR, &["--transfer-rate", SLOW]);
    let logs = Logs::keep(name, &c);
    c.terminate(FAST);
    c.set_arg(FAST, "--transfer-rate", "5000");
    c.start(FAST);
    let pre = timed_preload(&c, 0);
    (c, logs, pre)
}

/// Accepts a transition in which node `fast` is done having moved keys while
/// another node still sends.
fn fast_one_done(t: &Value, fast: &str) -> Option<()> {
    let senders = t["senders"].as_array()?;
    let fast_done = senders.iter().any(|s| {
        s["node"] == fast && s["state"] == "done" && s["keys_moved"].as_u64().unwrap_or(0) > 0
    });
    let other_sending = senders
        .iter()
        .any(|s| s["node"] != fast && s["state"] == "sending");
    (fast_done && other_sending).then_some(())
}

#[test]
fn killing_the_receiving_node_during_an_add_loses_nothing() {
    let (mut c, _logs, pre) =
        slow_ring_of_five_plus_one("killing_the_receiving_node_during_an_add_loses_nothing");
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    let id = c.nodes[5].id.clone();
    let began = Instant::now();
    let r = change(&c, &format!("add-node {id}"));
    assert_eq!(strs(&r["joining"]), vec![id.clone()], "{r}");
    // Node 5 has durably taken the keys of the fast sender, which is done.
    let fast = c.nodes[FAST].id.clone();
    let ((), t) = catch_in_flight(&c, 0, |t| fast_one_done(t, &fast));
    assert_eq!(strs(&t["joining"]), vec![id.clone()], "{t}");
    c.kill(5);
    println!("killed the receiving node {id}");
    std::thread::sleep(Duration::from_millis(1500));
    // The change cannot settle without the node it adds.
    let s = c.status(0).expect("status");
    assert!(!s["transition"].is_null(), "settled without {id}: {s}");
    c.start(5);
    println!("restarted {id}");
    settle(
        &c,
        &format!("add {id} (receiver killed)"),
        began,
        KILL_SETTLE_LIMIT,
    );
    load.wait_acked(20, Duration::from_secs(30));
    stop_and_verify("receiver killed", load, &pre, &c.ports(&[0, 1, 2, 3, 4, 5]));
}

/// Keys preloaded for the sender kill: more than one scan chunk of the transfer
/// (4096 keys) on each sender, so the sender is killed after it confirmed its
/// first chunk and must resume from its recorded cursor.
const SENDER_PRELOAD: usize = 5000;

#[test]
fn killing_a_sending_member_during_an_add_loses_nothing() {
    // Three members (each holds every key with N = 3) and node 3 outside.
    let mut c = Cluster::ring_with(4, 3, NWR, &["--transfer-rate", "500"]);
    let _logs = Logs::keep("killing_a_sending_member_during_an_add_loses_nothing", &c);
    let began = Instant::now();
    let pre = preload(c.nodes[0].port, "pre", SENDER_PRELOAD);
    println!("preloaded {SENDER_PRELOAD} keys in {:?}", began.elapsed());
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    let id = c.nodes[3].id.clone();
    let began = Instant::now();
    change(&c, &format!("add-node {id}"));
    // A member (not the leader) in the middle of sending: part of its keys
    // confirmed on their new owner, part not.
    let candidates = [(1, c.nodes[1].id.clone()), (2, c.nodes[2].id.clone())];
    let (victim, t) = catch_in_flight(&c, 0, |t| {
        candidates
            .iter()
            .find(|(_, vid)| {
                sending(t, vid).is_some_and(|s| s["keys_moved"].as_u64().unwrap_or(0) > 0)
            })
            .map(|(i, _)| *i)
    });
    let vid = c.nodes[victim].id.clone();
    println!(
        "killing the sender {vid}: {}",
        sending(&t, &vid).expect("sending")
    );
    // Give its recorded cursor (written after the first chunk) time to reach
    // the disk, then kill it in the middle of its second chunk.
    std::thread::sleep(Duration::from_millis(700));
    c.kill(victim);
    std::thread::sleep(Duration::from_millis(1500));
    c.start(victim);
    println!("restarted {vid}");
    settle(
        &c,
        &format!("add {id} (sender killed)"),
        began,
        KILL_SETTLE_LIMIT,
    );
    // How the restarted sender resumed (its log; informative only).
    for line in c.log(victim).lines() {
        if line.contains("sending keys to their new owners") {
            println!("{vid} log: {line}");
        }
    }
    load.wait_acked(20, Duration::from_secs(30));
    stop_and_verify("sender killed", load, &pre, &c.ports(&[0, 1, 2, 3]));
}

#[test]
fn killing_the_leaving_node_during_a_remove_loses_nothing() {
    let mut c = Cluster::ring_with(5, 5, NWR, &["--transfer-rate", SLOW]);
    let _logs = Logs::keep("killing_the_leaving_node_during_a_remove_loses_nothing", &c);
    let pre = timed_preload(&c, 0);
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    let id = c.nodes[4].id.clone();
    let began = Instant::now();
    change(&c, &format!("remove-node {id}"));
    let ((), t) = catch_in_flight(&c, 0, |t| sending(t, &id).map(|_| ()));
    assert_eq!(strs(&t["leaving"]), vec![id.clone()], "{t}");
    c.kill(4);
    println!("killed the leaving node {id}");
    std::thread::sleep(Duration::from_millis(1000));
    c.start(4);
    println!("restarted {id}");
    let s = settle(
        &c,
        &format!("remove {id} (leaving node killed)"),
        began,
        KILL_SETTLE_LIMIT,
    );
    assert!(!member_ids(&s).contains(&id), "{s}");
    // Nothing depends on the removed node any more.
    c.kill(4);
    load.wait_acked(20, Duration::from_secs(30));
    stop_and_verify("leaving node killed", load, &pre, &c.ports(&[0, 1, 2, 3]));
}

#[test]
fn killing_the_leader_during_an_add_loses_nothing() {
    let (mut c, _logs, pre) =
        slow_ring_of_five_plus_one("killing_the_leader_during_an_add_loses_nothing");
    // The load starts on the leader: when it is killed, the load's client fails
    // and the load moves on to node 1.
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    let id = c.nodes[5].id.clone();
    let began = Instant::now();
    change(&c, &format!("add-node {id}"));
    let fast = c.nodes[FAST].id.clone();
    catch_in_flight(&c, 0, |t| fast_one_done(t, &fast));
    c.kill(0);
    println!("killed the leader {}", c.nodes[0].id);
    std::thread::sleep(Duration::from_millis(1500));
    // Without its leader the change cannot settle; writes go on meanwhile.
    load.wait_acked(5, Duration::from_secs(30));
    let s = c.status(1).expect("status at a member");
    assert!(
        !s["transition"].is_null(),
        "settled without the leader: {s}"
    );
    c.start(0);
    println!("restarted the leader");
    settle(
        &c,
        &format!("add {id} (leader killed)"),
        began,
        KILL_SETTLE_LIMIT,
    );
    load.wait_acked(20, Duration::from_secs(30));
    stop_and_verify("leader killed", load, &pre, &c.ports(&[0, 1, 2, 3, 4, 5]));
}

// ---------------------------------------------------------------------------
// d. Removing dead nodes
// ---------------------------------------------------------------------------

#[test]
fn removing_dead_members_whose_data_is_gone_loses_nothing() {
    let mut c = Cluster::ring_with(5, 5, NWR, &["--transfer-rate", MODERATE]);
    let _logs = Logs::keep("removing_dead_members_whose_data_is_gone_loses_nothing", &c);
    let pre = timed_preload(&c, 0);
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    for i in [4, 3] {
        let id = c.nodes[i].id.clone();
        c.kill(i);
        std::fs::remove_dir_all(c.data_dir(i)).expect("delete the data directory");
        println!("killed {id} and deleted its data");
        load.wait_acked(20, Duration::from_secs(30));
        let began = Instant::now();
        let r = change(&c, &format!("remove-node {id}"));
        assert_eq!(strs(&r["leaving"]), vec![id.clone()], "{r}");
        let s = settle(&c, &format!("remove dead {id}"), began, SETTLE_LIMIT);
        assert!(!member_ids(&s).contains(&id), "{s}");
        load.wait_acked(20, Duration::from_secs(30));
    }
    let s = c.status(0).expect("status");
    let left: BTreeSet<String> = [0, 1, 2].iter().map(|&i| c.nodes[i].id.clone()).collect();
    assert_eq!(member_ids(&s), left, "{s}");
    // Stop the load first: it writes through node 2 too.
    let report = load.stop();
    println!(
        "remove dead: load ran {:?}: {} acknowledged, {} failed; samples {:?}",
        report.elapsed,
        report.acked.len(),
        report.failed,
        report.samples
    );
    assert!(!report.acked.is_empty(), "{:?}", report.samples);
    // Three members, N = 3: each holds every key, so two of them answer R = 2.
    c.kill(2);
    println!("killed {}", c.nodes[2].id);
    let mut all = pre.clone();
    all.extend(report.acked.iter().cloned());
    let began = Instant::now();
    let lost = verify(&c.ports(&[0, 1]), &all);
    println!(
        "remove dead: verified {} keys in {:?}",
        all.len(),
        began.elapsed()
    );
    assert!(
        lost.is_empty(),
        "remove dead: {}(load: {} acknowledged, {} failed; samples {:?})",
        describe_lost(&lost, all.len()),
        report.acked.len(),
        report.failed,
        report.samples
    );
}

// ---------------------------------------------------------------------------
// e. Refusals: an alias of a member, a second change while one runs
// ---------------------------------------------------------------------------

#[test]
fn an_alias_and_a_second_change_are_refused() {
    let c = Cluster::ring_with(5, 3, NWR, &["--transfer-rate", MODERATE]);
    let _logs = Logs::keep("an_alias_and_a_second_change_are_refused", &c);
    let pre = timed_preload(&c, 0);
    let load = WriteLoad::start(&c.ports(&[0, 1, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    let before = c.status(0).expect("status");

    // A member under another name, and a fresh node under another name.
    for i in [1, 3] {
        let port = c.nodes[i].port;
        let alias = format!("localhost:{port}");
        let real = format!("127.0.0.1:{port}");
        let out = c.client(0, &[&format!("add-node {alias}")]);
        let r = &out.results[0];
        assert_eq!(r["ok"], false, "{r}");
        let err = r["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(&alias) && err.contains(&real),
            "the refusal must name {alias} and {real}: {err}"
        );
        println!("add-node {alias} -> {err}");
    }
    let s = c.status(0).expect("status");
    assert_eq!(
        s["epoch"], before["epoch"],
        "a refusal changed the ring: {s}"
    );
    assert!(s["transition"].is_null(), "{s}");

    // Start adding node 3; a second add and a remove right behind it are refused.
    let id3 = c.nodes[3].id.clone();
    let began = Instant::now();
    let out = c.client(
        0,
        &[
            &format!("add-node {id3}"),
            &format!("add-node {}", c.nodes[4].id),
            &format!("remove-node {}", c.nodes[1].id),
        ],
    );
    assert_eq!(out.results.len(), 3, "{out:?}");
    assert_eq!(out.results[0]["ok"], true, "{out:?}");
    for r in &out.results[1..] {
        assert_eq!(r["ok"], false, "{r}");
        let err = r["error"].as_str().unwrap_or_default();
        assert!(
            err.contains("already running") && err.contains(&id3),
            "expected a refusal naming the running change (adding {id3}): {err}"
        );
        println!("refused: {err}");
    }
    let ((), t) = catch_in_flight(&c, 0, |_| Some(()));
    assert_eq!(strs(&t["joining"]), vec![id3.clone()], "{t}");
    // Still refused while it runs (now caught in flight).
    let out = c.client(0, &[&format!("add-node {}", c.nodes[4].id)]);
    let err = out.results[0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("already running") && err.contains(&id3),
        "{out:?}"
    );
    settle(&c, &format!("add {id3}"), began, SETTLE_LIMIT);
    // Settled: the next change is accepted.
    let began = Instant::now();
    change(&c, &format!("add-node {}", c.nodes[4].id));
    let s = settle(&c, "add node 4", began, SETTLE_LIMIT);
    assert_eq!(member_ids(&s).len(), 5, "{s}");
    load.wait_acked(20, Duration::from_secs(30));
    stop_and_verify("refusals", load, &pre, &c.ports(&[0, 1, 2, 3, 4]));
}
