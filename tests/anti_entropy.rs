//! Anti-entropy on real processes: replicas converge without reads, and a node
//! whose data directory is lost comes back whole.
//!
//! What each node holds is read straight from it (`read_replica`, node to
//! node), never through `get`: a get would repair what it reads and hide
//! whether anti-entropy did the work.

mod common;

use std::time::{Duration, Instant};

use common::{keys_placed, node_status, run_script, Cluster};
use serde_json::Value;

/// What node `port` holds for `key` as its own replica and hints, as text.
fn held(rt: &tokio::runtime::Runtime, port: u16, key: &str) -> Option<Vec<String>> {
    common::replica::replica_values(rt, port, key)
}

/// Waits until every node of `nodes` holds `value-of(key)` for every key;
/// returns how long it took, or the keys still missing after `limit`.
fn wait_held(
    rt: &tokio::runtime::Runtime,
    c: &Cluster,
    nodes: &[usize],
    keys: &[String],
    limit: Duration,
) -> Result<Duration, Vec<(usize, String)>> {
    let start = Instant::now();
    loop {
        let mut missing = Vec::new();
        for &n in nodes {
            for k in keys {
                let want = vec![format!("v-{k}")];
                if held(rt, c.nodes[n].port, k).as_ref() != Some(&want) {
                    missing.push((n, k.clone()));
                }
            }
        }
        if missing.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(missing);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Writes `keys` through node 0 while the replicas 1 and 2 are down (each put
/// is acknowledged by node 0 and by node 3 holding a hint), then kills node 3
/// and deletes its data directory, so the hints are gone, and restarts 1 and
/// 2. Returns the cluster and the keys.
fn diverge(extra: &[&str]) -> (Cluster, Vec<String>) {
    let c = Cluster::ring_with(4, 4, (3, 2, 2), extra);
    let mut c = c;
    let keys: Vec<String> = keys_placed(&c, "ae", &[0, 1, 2], 3, 600)
        .into_iter()
        .take(40)
        .collect();
    assert!(keys.len() >= 20, "too few keys placed on 0,1,2: {keys:?}");
    c.kill(1);
    c.kill(2);
    let lines: Vec<String> = keys.iter().map(|k| format!("put {k} {{}} v-{k}")).collect();
    let out = run_script(c.nodes[0].port, &lines, Duration::from_secs(60));
    for r in &out.results {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(
            r["hinted"], 1,
            "acknowledged by node 0 and a hint on node 3: {r}"
        );
    }
    assert_eq!(out.results.len(), keys.len());
    c.kill(3);
    std::fs::remove_dir_all(c.data_dir(3)).unwrap();
    c.start(1);
    c.start(2);
    (c, keys)
}

#[test]
fn a_write_whose_hints_were_lost_reaches_every_replica_without_reads() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (c, keys) = diverge(&[]);
    let took = wait_held(&rt, &c, &[0, 1, 2], &keys, Duration::from_secs(30))
        .unwrap_or_else(|missing| panic!("still missing after 30 s: {missing:?}"));
    eprintln!(
        "{} keys reached both returned replicas in {took:?}",
        keys.len()
    );
    let logs = c.log(0) + &c.log(1) + &c.log(2);
    assert!(
        logs.contains("anti-entropy repaired keys"),
        "an info line per repairing exchange"
    );
    // Status shows the counters of each node's last answer to a ping (at most
    // a ping interval old).
    common::wait_for(
        "status to count the repairs",
        Duration::from_secs(5),
        || {
            let status = c.status(0)?;
            let repaired: u64 = status["nodes"]
                .as_array()?
                .iter()
                .filter_map(|n| n["anti_entropy"]["keys_repaired"].as_u64())
                .sum();
            (repaired >= 2 * keys.len() as u64).then_some(())
        },
    );
}

#[test]
fn without_anti_entropy_the_same_replicas_stay_behind() {
    // The control: the scenario above with anti-entropy off. Nothing else
    // (no read, no hint, no ring change) brings the keys to nodes 1 and 2.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (c, keys) = diverge(&["--anti-entropy-interval-ms", "0"]);
    let missing = wait_held(&rt, &c, &[1, 2], &keys, Duration::from_secs(4))
        .expect_err("without anti-entropy the keys cannot arrive");
    assert_eq!(missing.len(), 2 * keys.len(), "{missing:?}");
}

/// Kills node `i`, deletes its data directory, starts it again and waits until
/// the leader has readmitted it under its new identity and every node has the
/// new ring.
fn wipe_and_restart(c: &mut Cluster, i: usize) {
    let before = c.status(0).expect("status")["epoch"].as_u64().unwrap();
    c.kill(i);
    std::fs::remove_dir_all(c.data_dir(i)).unwrap();
    c.start(i);
    let start = Instant::now();
    loop {
        let status = c.status(0);
        if let Some(s) = &status {
            if s["epoch"].as_u64().unwrap_or(0) > before
                && c.log(0).contains("readmitting a member")
            {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not readmitted: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.wait_settled(0, Duration::from_secs(30));
}

/// Waits until node `i` reports it has finished refilling; returns how long.
fn wait_refilled(c: &Cluster, i: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = c.status(0);
        if let Some(s) = &s {
            if node_status(s, &c.nodes[i].id)["restoring"] == false {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < limit,
            "node {i} still refilling after {limit:?}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_replica_whose_data_directory_was_deleted_comes_back_whole() {
    let keys: usize = std::env::var("AE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = Cluster::ring_with(4, 4, (3, 2, 2), &[]);
    let pairs = common::writeload::preload(c.nodes[0].port, "w", keys);
    // Which keys node 1 owns, and which of those live on 1, 2 and 3.
    let lines: Vec<String> = pairs.iter().map(|(k, _)| format!("locate {k}")).collect();
    let located = run_script(c.nodes[0].port, &lines, Duration::from_secs(120));
    assert_eq!(located.results.len(), keys);
    let owners = |r: &Value| -> Vec<String> {
        r["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone()).collect();
    let owned: Vec<(String, String)> = pairs
        .iter()
        .zip(&located.results)
        .filter(|(_, r)| owners(r).contains(&ids[1]))
        .map(|(p, _)| p.clone())
        .collect();
    let without_0: Vec<(String, String)> = pairs
        .iter()
        .zip(&located.results)
        .filter(|(_, r)| !owners(r).contains(&ids[0]))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(owned.len() > keys / 2 && !without_0.is_empty());

    wipe_and_restart(&mut c, 1);
    let took = wait_refilled(&c, 1, Duration::from_secs(120));
    eprintln!(
        "{} keys of {keys} refilled on the wiped node in {took:?} (no reads)",
        owned.len()
    );
    let status = c.status(0).unwrap();
    assert_eq!(
        node_status(&status, &ids[1])["keys"].as_u64(),
        Some(owned.len() as u64),
        "the wiped node holds exactly its keys again: {status}"
    );
    for (k, v) in &owned {
        assert_eq!(held(&rt, c.nodes[1].port, k), Some(vec![v.clone()]), "{k}");
    }
    // Only the restored node and a stand-in left for the keys of nodes 1, 2, 3.
    c.kill(2);
    c.kill(3);
    let lost = common::writeload::verify(&[c.nodes[1].port], &without_0);
    assert!(
        lost.is_empty(),
        "{}",
        common::writeload::describe_lost(&lost, without_0.len())
    );
}

/// The values and context of `get key` through node `i`.
fn get(c: &Cluster, i: usize, key: &str) -> (Vec<String>, String) {
    let out = c.client(i, &[&format!("get {key}")]);
    let r = &out.results[0];
    assert_eq!(r["ok"], true, "get {key} at node {i}: {r}");
    let mut values: Vec<String> = r["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    values.sort();
    (values, common::ctx(r))
}

/// The put through `i`; asserts it is acknowledged and coordinated by `i`.
fn put(c: &Cluster, i: usize, key: &str, context: &str, value: &str) -> Value {
    let out = c.client(i, &[&format!("put {key} {context} {value}")]);
    let r = out.results[0].clone();
    assert_eq!(r["ok"], true, "put at node {i}: {r}");
    r
}

/// A key whose replicas include every node of `nodes`.
fn key_on(c: &Cluster, nodes: &[usize]) -> String {
    for i in 0..1000 {
        let key = format!("k{i}");
        let out = c.client(0, &[&format!("locate {key}")]);
        let replicas = out.results[0]["replicas"].to_string();
        if nodes.iter().all(|&n| replicas.contains(&c.nodes[n].id)) {
            return key;
        }
    }
    panic!("no key of k0..k999 has its replicas on nodes {nodes:?}");
}

/// kv679: node 1 writes a key three times (dots 1..3 of its actor), loses its
/// data directory, comes back and writes again. `context` picks the last write:
/// blind (`None`) or with the context of a get (`Some(via)`). `down` is a
/// replica stopped before the wipe and started after the write; the ring then
/// has five members, so that a majority of the ring's voters (three of five)
/// still answers to readmit the wiped node (with three members, one down and
/// one wiped, no ring change can commit until one returns). Returns the
/// values read through nodes 0-2 once all are up.
fn kv679(context_from: Option<usize>, down: Option<usize>) -> Vec<Vec<String>> {
    let size = if down.is_some() { 5 } else { 3 };
    let mut c = Cluster::ring_with(size, size, (3, 2, 2), &[]);
    let a = 1;
    let k = match down {
        Some(d) => key_on(&c, &[a, d]),
        None => "k".to_string(),
    };
    let k = k.as_str();
    let mut ctx = "{}".to_string();
    for v in ["old0", "old1", "old2"] {
        let r = put(&c, a, k, &ctx, v);
        ctx = common::ctx(&r);
    }
    assert_eq!(ctx, format!("{{\"{}\":3}}", c.nodes[a].id));
    if let Some(d) = down {
        c.kill(d);
    }
    wipe_and_restart(&mut c, a);
    let context = match context_from {
        None => "{}".to_string(),
        Some(via) => get(&c, via, k).1,
    };
    let r = put(&c, a, k, &context, "newest");
    assert_eq!(r["coordinator"], c.nodes[a].id.as_str(), "{r}");
    // The new incarnation writes under a new actor.
    let actor = format!("127.0.0.1~1:{}", c.nodes[a].port);
    assert!(r["context"].get(&actor).is_some(), "{r}");
    if let Some(d) = down {
        c.start(d);
    }
    wait_refilled(&c, a, Duration::from_secs(60));
    (0..3).map(|i| get(&c, i, k).0).collect()
}

#[test]
fn kv679_a_blind_write_after_losing_the_data_directory_survives() {
    for values in kv679(None, None) {
        assert_eq!(
            values,
            vec!["newest", "old2"],
            "concurrent with old2: both stay"
        );
    }
}

#[test]
fn kv679_a_write_with_a_context_after_losing_the_data_directory_wins() {
    for values in kv679(Some(0), None) {
        assert_eq!(values, vec!["newest"]);
    }
}

#[test]
fn kv679_the_write_survives_while_another_replica_is_down() {
    for values in kv679(None, Some(2)) {
        assert_eq!(values, vec!["newest", "old2"]);
    }
}

#[test]
fn a_replica_wiped_under_a_write_load_holds_every_acknowledged_write_again() {
    // Three nodes, N = 3: every node holds every key.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = Cluster::ring_with(3, 3, (3, 2, 2), &[]);
    let pre = common::writeload::preload(c.nodes[0].port, "pre", 1000);
    let load = common::writeload::WriteLoad::start(&c.ports(&[0, 2]));
    load.wait_acked(20, Duration::from_secs(30));
    wipe_and_restart(&mut c, 1);
    let took = wait_refilled(&c, 1, Duration::from_secs(120));
    load.wait_acked(load.acked() + 50, Duration::from_secs(30));
    let report = load.stop();
    let mut all = pre;
    all.extend(report.acked.iter().cloned());
    eprintln!(
        "refilled in {took:?}; load: {} acknowledged, {} failed, over {:?}",
        report.acked.len(),
        report.failed,
        report.elapsed
    );
    // Every acknowledged write is on the wiped node again, read from it alone.
    let start = Instant::now();
    let missing = loop {
        let missing: Vec<&(String, String)> = all
            .iter()
            .filter(|(k, v)| held(&rt, c.nodes[1].port, k) != Some(vec![v.clone()]))
            .collect();
        if missing.is_empty() || start.elapsed() > Duration::from_secs(30) {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes not on the wiped node: {:?}",
        missing.len(),
        all.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "all {} acknowledged writes held by the wiped node",
        all.len()
    );
    // And they read back through it with one other replica.
    c.kill(2);
    let lost = common::writeload::verify(&[c.nodes[1].port], &all);
    assert!(
        lost.is_empty(),
        "{}",
        common::writeload::describe_lost(&lost, all.len())
    );
}
