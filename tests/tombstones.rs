//! Tombstone removal on real processes: deleted keys leave every disk, and no
//! deleted value comes back, whether a replica or a hint holder missed the
//! delete.
//!
//! The nodes run with `--tombstone-grace-ms 4500` and `--copy-timeout-ms 1000`
//! (the defaults are 25 s and 10 s; the grace must exceed twice the longest
//! deadline of a call that carries copies, here the 2 s of a hint delivery) so
//! a test takes seconds; the proof asked of every member is the same.

mod common;

use std::time::{Duration, Instant};

use common::{ctx, keys_placed, node_status, run_script, Cluster};
use serde_json::Value;

const GRACE: &[&str] = &["--tombstone-grace-ms", "4500", "--copy-timeout-ms", "1000"];

/// `get` of every key through node `via`: (values, context) per key.
fn get_all(c: &Cluster, via: usize, keys: &[String]) -> Vec<(Vec<String>, String)> {
    let lines: Vec<String> = keys.iter().map(|k| format!("get {k}")).collect();
    let out = run_script(c.nodes[via].port, &lines, Duration::from_secs(120));
    assert_eq!(out.results.len(), keys.len(), "{}", out.stderr);
    out.results
        .iter()
        .zip(keys)
        .map(|(r, k)| {
            assert_eq!(r["ok"], true, "get {k}: {r}");
            let values = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            (values, ctx(r))
        })
        .collect()
}

/// Deletes every key through node `via` with the context a get just returned;
/// returns those contexts (what a client saw before the delete).
fn delete_all(c: &Cluster, via: usize, keys: &[String]) -> Vec<String> {
    let seen: Vec<String> = get_all(c, via, keys).into_iter().map(|(_, c)| c).collect();
    let lines: Vec<String> = keys
        .iter()
        .zip(&seen)
        .map(|(k, c)| format!("delete {k} {c}"))
        .collect();
    let out = run_script(c.nodes[via].port, &lines, Duration::from_secs(120));
    assert_eq!(out.results.len(), keys.len(), "{}", out.stderr);
    for r in &out.results {
        assert_eq!(r["ok"], true, "{r}");
    }
    seen
}

/// Asserts that no key of `keys` reads back with a value through any of `via`.
fn assert_all_deleted(c: &Cluster, via: &[usize], keys: &[String], when: &str) {
    for &i in via {
        for ((values, _), k) in get_all(c, i, keys).iter().zip(keys) {
            assert!(
                values.is_empty(),
                "{when}: deleted key {k} came back through node {i}: {values:?}"
            );
        }
    }
}

/// (keys, tombstones, tombstones removed) of node `i`, from node `via`'s status.
fn counts(status: &Value, c: &Cluster, i: usize) -> (u64, u64, u64) {
    let n = node_status(status, &c.nodes[i].id);
    (
        n["keys"].as_u64().unwrap_or(u64::MAX),
        n["tombstones"].as_u64().unwrap_or(u64::MAX),
        n["anti_entropy"]["tombstones_removed"]
            .as_u64()
            .unwrap_or(0),
    )
}

/// Waits until every node of `nodes` holds no key at all (nothing deleted is
/// left, and nothing came back); returns how long it took.
fn wait_empty(c: &Cluster, nodes: &[usize], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let status = c.status(0);
        if let Some(s) = &status {
            if nodes.iter().all(|&i| {
                let (keys, tombstones, _) = counts(s, c, i);
                keys == 0 && tombstones == 0
            }) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < limit,
            "tombstones still on disk after {limit:?}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With a member down, no node removes a tombstone: watched for three graces.
fn assert_nothing_removed_while_down(c: &Cluster, up: &[usize]) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        let s = c.status(0).expect("status");
        for &i in up {
            let (_, tombstones, removed) = counts(&s, c, i);
            assert_eq!(
                removed, 0,
                "node {i} removed tombstones with a member down: {s}"
            );
            if i == 0 {
                assert!(tombstones > 0, "the coordinator keeps its tombstones: {s}");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn deleted_keys_leave_every_disk_and_a_later_write_is_not_lost() {
    let c = Cluster::ring_with(3, 3, (3, 2, 2), GRACE);
    let keys: Vec<String> = common::writeload::preload(c.nodes[0].port, "t", 1000)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let seen = delete_all(&c, 0, &keys);
    // The third replica of each delete may land just after its reply.
    common::wait_for("every copy deleted", Duration::from_secs(10), || {
        let status = c.status(0)?;
        (0..3)
            .all(|i| {
                let (keys, tombstones, removed) = counts(&status, &c, i);
                keys == tombstones && tombstones + removed >= 1000
            })
            .then_some(())
    });
    let took = wait_empty(&c, &[0, 1, 2], Duration::from_secs(60));
    eprintln!("1000 tombstones left all 3 nodes {took:?} after the deletes (grace 3 s)");
    // At least 1000 each: an owner that removed its copy before another did may
    // get the tombstone back by anti-entropy, and remove it again. (Status shows
    // each node's last answer to a ping, so wait for it.)
    common::wait_for(
        "every node to count its removals",
        Duration::from_secs(5),
        || {
            let status = c.status(0)?;
            (0..3)
                .all(|i| counts(&status, &c, i).2 >= 1000)
                .then_some(())
        },
    );
    assert_all_deleted(&c, &[0, 1, 2], &keys[..100], "after removal");

    // A blind put after the removal, then a put made with a context a client
    // read before the delete: the first must survive as a sibling, not be
    // replaced by a write whose client never saw it.
    let k = &keys[0];
    let out = c.client(0, &[&format!("put {k} {{}} new")]);
    assert_eq!(out.results[0]["ok"], true, "{}", out.stdout);
    let out = c.client(1, &[&format!("put {k} {} late", seen[0])]);
    assert_eq!(out.results[0]["ok"], true, "{}", out.stdout);
    let (mut values, _) = get_all(&c, 2, std::slice::from_ref(k)).remove(0);
    values.sort();
    assert_eq!(
        values,
        ["late", "new"],
        "the write after the removal was lost"
    );
}

#[test]
fn a_replica_down_during_the_deletes_brings_no_value_back() {
    let mut c = Cluster::ring_with(4, 4, (3, 2, 2), GRACE);
    let keys: Vec<String> = common::writeload::preload(c.nodes[0].port, "d", 300)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // Node 1 keeps the old values of its keys while the others delete them.
    c.kill(1);
    delete_all(&c, 0, &keys);
    assert_nothing_removed_while_down(&c, &[0, 2, 3]);
    assert_all_deleted(&c, &[0], &keys, "with the replica down");

    c.start(1);
    assert_all_deleted(&c, &[1], &keys, "right after the replica returned");
    let took = wait_empty(&c, &[0, 1, 2, 3], Duration::from_secs(90));
    eprintln!("tombstones removed {took:?} after the replica returned");
    assert_all_deleted(&c, &[0, 1, 2, 3], &keys, "after removal");
    // Anti-entropy keeps running: still nothing anywhere a few rounds later.
    std::thread::sleep(Duration::from_secs(3));
    wait_empty(&c, &[0, 1, 2, 3], Duration::from_secs(1));
}

#[test]
fn a_hint_holder_that_was_down_brings_no_value_back() {
    let mut c = Cluster::ring_with(4, 4, (3, 2, 2), GRACE);
    let keys: Vec<String> = keys_placed(&c, "h", &[0, 1, 2], 3, 600)
        .into_iter()
        .take(40)
        .collect();
    assert!(keys.len() >= 20, "too few keys placed on 0,1,2: {keys:?}");
    // Old values written while replica 2 is down: node 3 holds them as hints.
    c.kill(2);
    let lines: Vec<String> = keys.iter().map(|k| format!("put {k} {{}} old")).collect();
    let out = run_script(c.nodes[0].port, &lines, Duration::from_secs(60));
    assert_eq!(out.results.len(), keys.len());
    for r in &out.results {
        assert_eq!(r["ok"], true, "{r}");
    }
    // The reply may come before the stand-in's ack: wait for the hints.
    common::wait_for("hints on node 3", Duration::from_secs(30), || {
        let s = c.status(0)?;
        (node_status(&s, &c.nodes[3].id)["hints"].as_u64()? >= keys.len() as u64).then_some(())
    });
    // The hint holder goes down with them; the replica returns and the keys
    // are deleted on all three owners.
    c.kill(3);
    c.start(2);
    delete_all(&c, 0, &keys);
    assert_nothing_removed_while_down(&c, &[0, 1, 2]);

    // The hint holder returns and delivers its old values: the tombstones
    // dominate them, and only then are the tombstones removed.
    c.start(3);
    let took = wait_empty(&c, &[0, 1, 2, 3], Duration::from_secs(90));
    eprintln!("tombstones removed {took:?} after the hint holder returned");
    assert!(
        c.log(3).contains("hinted handoff"),
        "node 3 delivered its hints"
    );
    assert_all_deleted(&c, &[0, 1, 2, 3], &keys, "after removal");
}

/// The fault that made the ring's administration unsafe: a node removed while
/// it is stalled (a long pause, a cut cable) is settled without, the keys are
/// deleted and their tombstones leave the disks, and then the node wakes up
/// with every old value. Before fencing it handed them all to the owners (324
/// of 600 deleted keys came back). Now it learns it was removed while away,
/// hands nothing off (the members refuse it anyway), keeps its data for the
/// operator, serves nothing, and cannot be added back on that data directory.
#[test]
fn a_stalled_leaving_node_brings_no_deleted_key_back() {
    let mut c = Cluster::ring_with(5, 5, (3, 2, 2), GRACE);
    let keys: Vec<String> = common::writeload::preload(c.nodes[0].port, "s", 600)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // A write load while the node is removed and settled without.
    let load =
        common::writeload::WriteLoad::start_with("sl", &c.ports(&[0, 1]), Duration::from_millis(5));
    let out = c.at_leader(&format!("remove-node {}", c.nodes[4].id));
    assert_eq!(out.results[0]["ok"], true, "{out:?}");
    c.signal(4, "STOP");
    // The leader settles without the silent leaving node.
    let settled = c.wait_settled(0, Duration::from_secs(60));
    let removed_at = settled["epoch"].as_u64().unwrap();
    assert!(
        settled["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"] != c.nodes[4].id.as_str()),
        "{settled}"
    );
    let report = load.stop();

    // Every key deleted, and every tombstone gone from the members' disks.
    delete_all(&c, 0, &keys);
    let held = common::wait_for(
        "the tombstones to leave nodes 0-3",
        Duration::from_secs(90),
        || {
            let s = c.status(0)?;
            let counted: Vec<(u64, u64, u64)> = (0..4).map(|i| counts(&s, &c, i)).collect();
            let removed: u64 = counted.iter().map(|n| n.2).sum();
            (counted.iter().all(|n| n.1 == 0) && removed >= 3 * 600)
                .then(|| counted.iter().map(|n| n.0).collect::<Vec<u64>>())
        },
    );
    eprintln!("the 600 tombstones left nodes 0-3; they hold {held:?} keys of the load");

    c.signal(4, "CONT");
    common::wait_for(
        "the woken node to learn it was removed",
        Duration::from_secs(30),
        || {
            let out = c.client(4, &["status"]);
            let s = out.results.first()?;
            (s["removed_at_epoch"].as_u64()? == removed_at).then_some(())
        },
    );
    // Give whatever it would hand off (its transfer, hints, anti-entropy, its
    // clean-up) time to arrive, watching that nothing lands meanwhile: a value
    // it handed to a member would read back, and the deleted keys would count
    // on the members' disks again.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        assert_all_deleted(&c, &[0], &keys, "while the removed node ran");
        let s = c.status(0).expect("status");
        for (i, before) in held.iter().enumerate() {
            let (now, tombstones, _) = counts(&s, &c, i);
            assert!(
                tombstones == 0 && now <= before + 5,
                "node {i} holds {now} keys and {tombstones} tombstones, {before} keys \
                 before the removed node woke: {s}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_all_deleted(&c, &[0, 1, 2, 3], &keys, "after the removed node woke");
    let log = c.log(4);
    assert!(
        log.contains(&format!("removed from the ring at epoch {removed_at}")),
        "the node does not say it was removed: {log}"
    );
    // It coordinates nothing, and says why.
    let out = c.client(4, &["put after-removal {} v"]);
    let error = out.results[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("was removed from the ring"), "{out:?}");
    // Its data is untouched, for the operator; adding it back on that
    // directory is refused, with what to do.
    let out = c.at_leader(&format!("add-node {}", c.nodes[4].id));
    let error = out.results[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("delete its data directory"), "{out:?}");
    // Wiped, it is a new node and joins.
    c.kill(4);
    std::fs::remove_dir_all(c.data_dir(4)).unwrap();
    c.start(4);
    let out = c.at_leader(&format!("add-node {}", c.nodes[4].id));
    assert_eq!(out.results[0]["ok"], true, "{out:?}");
    c.wait_settled(0, Duration::from_secs(60));
    assert_all_deleted(&c, &[0, 4], &keys, "after the wiped node joined");

    let lost = common::writeload::verify(&c.ports(&[0, 1, 2, 3, 4]), &report.acked);
    assert!(
        lost.is_empty(),
        "{}",
        common::writeload::describe_lost(&lost, report.acked.len())
    );
}

#[test]
fn expired_keys_read_as_absent_with_a_replica_down_and_leave_every_disk() {
    let mut c = Cluster::ring_with(3, 3, (3, 2, 2), GRACE);
    // 200 keys expire in 3 s; 50 more are kept.
    let expiring: Vec<String> = (0..200).map(|i| format!("ttl-{i}")).collect();
    let lines: Vec<String> = expiring
        .iter()
        .map(|k| format!("put --ttl 3s {k} {{}} soon gone"))
        .chain((0..50).map(|i| format!("put kept-{i} {{}} stays")))
        .collect();
    let out = run_script(c.nodes[0].port, &lines, Duration::from_secs(120));
    assert!(
        out.results.iter().all(|r| r["ok"] == true),
        "{}",
        out.stdout
    );
    assert!(
        get_all(&c, 1, &expiring[..10])
            .iter()
            .all(|(v, _)| v == &["soon gone"]),
        "readable before the TTL"
    );

    // Node 2 is down while the keys expire, and comes back after.
    c.kill(2);
    std::thread::sleep(Duration::from_secs(4));
    assert_all_deleted(&c, &[0, 1], &expiring, "after the TTL, a replica down");
    // With a member down nothing is proven, so nothing leaves a disk.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(6) {
        let s = c.status(0).expect("status");
        for i in [0, 1] {
            let (keys, _, removed) = counts(&s, &c, i);
            assert_eq!(
                (keys, removed),
                (250, 0),
                "node {i} removed with a member down: {s}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    c.start(2);
    assert_all_deleted(&c, &[2], &expiring, "through the replica that was down");

    // They leave every disk; the kept keys stay, and a scan lists only them.
    let start = Instant::now();
    loop {
        if let Some(s) = c.status(0) {
            if (0..3).all(|i| counts(&s, &c, i).0 == 50) {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "expired keys still on disk: {:?}",
            c.status(0)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "200 expired keys left all 3 disks {:?} after node 2 returned",
        start.elapsed()
    );
    assert_all_deleted(&c, &[0, 1, 2], &expiring, "after removal");
    let out = c.client(2, &["scan --limit 1000 --consistent"]);
    let listed = out.results[0]["keys"].as_array().expect("keys").len();
    assert_eq!(listed, 50, "{}", out.stdout);
}
