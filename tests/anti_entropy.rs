//! Anti-entropy on real processes: replicas converge without reads, and a node
//! whose data directory is lost comes back whole.
//!
//! What each node holds is read straight from it (`read_replica`, node to
//! node), never through `get`: a get would repair what it reads and hide
//! whether anti-entropy did the work.

mod common;

use std::time::{Duration, Instant};

use common::{run_script, Cluster};
use serde_json::Value;

/// What node `port` holds for `key` as its own replica and hints, as text.
fn held(rt: &tokio::runtime::Runtime, port: u16, key: &str) -> Option<Vec<String>> {
    rt.block_on(async {
        let node: dynamo::types::NodeId = format!("127.0.0.1:{port}").parse().unwrap();
        let conn = dynamo::rpc::connect(&node, Duration::from_secs(2))
            .await
            .ok()?;
        let obj = conn
            .client()
            .read_replica(
                dynamo::rpc::context(Duration::from_secs(5)),
                dynamo::rpc::Addressee {
                    node,
                    identity: None,
                },
                key.to_string(),
            )
            .await
            .ok()?
            .ok()?;
        Some(
            obj.values()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
        )
    })
}

/// The keys among `ae-0..ae-{scan}` whose replicas are exactly `replicas` (any
/// order) and whose first fallback is `fallback`, asked with `locate`.
fn keys_placed(c: &Cluster, replicas: &[usize], fallback: usize, scan: usize) -> Vec<String> {
    let ids: Vec<&str> = replicas.iter().map(|&i| c.nodes[i].id.as_str()).collect();
    let lines: Vec<String> = (0..scan).map(|i| format!("locate ae-{i}")).collect();
    let out = run_script(c.nodes[0].port, &lines, Duration::from_secs(60));
    out.results
        .iter()
        .filter(|r| {
            let reps: Vec<&str> = r["replicas"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            reps.len() == ids.len()
                && ids.iter().all(|id| reps.contains(id))
                && r["fallbacks"][0] == c.nodes[fallback].id.as_str()
        })
        .filter_map(|r| r["key"].as_str().map(str::to_string))
        .collect()
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
    let keys: Vec<String> = keys_placed(&c, &[0, 1, 2], 3, 600)
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
    let status = c.status(0).unwrap();
    let repaired: u64 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["anti_entropy"]["keys_repaired"].as_u64())
        .sum();
    assert!(
        repaired >= 2 * keys.len() as u64,
        "status counts the repairs: {status}"
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
