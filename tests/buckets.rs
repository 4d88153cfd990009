//! Buckets on real nodes, through the real client and over HTTP: each
//! bucket's N decides placement, hinted handoff, anti-entropy and a ring
//! change's moves; a quota refuses writes past it; a default TTL expires
//! keys; a memory bucket forgets its keys on a full restart (without reusing
//! a dot) while a disk bucket keeps them; a dropped bucket's keys leave
//! every node.
//!
//! What a node holds is read straight from it (`read_replica`), never
//! through `get`, which would repair what it reads.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::http::curl;
use common::{run_script, Cluster};
use serde_json::Value;

/// Runs `lines` through node `via` after `use BUCKET`; the results after the `use`.
fn in_bucket(c: &Cluster, via: usize, bucket: &str, lines: &[String]) -> Vec<Value> {
    let mut script = vec![format!("use {bucket}")];
    script.extend(lines.iter().cloned());
    let out = run_script(c.nodes[via].port, &script, Duration::from_secs(120));
    assert_eq!(out.results.len(), script.len(), "{out:?}");
    assert_eq!(out.results[0]["ok"], true, "use {bucket}: {out:?}");
    out.results[1..].to_vec()
}

/// The values node `port` holds as its own replica of the stored key `key`
/// (None: none, or no answer).
fn held(rt: &tokio::runtime::Runtime, port: u16, key: &str) -> Option<Vec<String>> {
    common::replica::replica_values(rt, port, key).filter(|values| !values.is_empty())
}

/// The members (indices) that hold `value` for the stored key `key`.
fn holders(
    rt: &tokio::runtime::Runtime,
    c: &Cluster,
    members: &[usize],
    key: &str,
    value: &str,
) -> BTreeSet<usize> {
    members
        .iter()
        .copied()
        .filter(|&i| held(rt, c.nodes[i].port, key) == Some(vec![value.to_string()]))
        .collect()
}

/// The replicas `locate` names for each key, as member indices.
fn located(c: &Cluster, bucket: &str, keys: &[String]) -> Vec<BTreeSet<usize>> {
    let lines: Vec<String> = keys.iter().map(|k| format!("locate {k}")).collect();
    in_bucket(c, 0, bucket, &lines)
        .iter()
        .zip(keys)
        .map(|(r, k)| {
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(
                r["key"],
                k.as_str(),
                "locate shows the key as the user wrote it"
            );
            r["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| {
                    c.nodes
                        .iter()
                        .position(|n| n.id == id.as_str().unwrap())
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

/// Puts `v-KEY` under each key in `bucket` through node `via`.
fn put_all(c: &Cluster, via: usize, bucket: &str, keys: &[String]) {
    let lines: Vec<String> = keys.iter().map(|k| format!("put {k} {{}} v-{k}")).collect();
    for r in in_bucket(c, via, bucket, &lines) {
        assert_eq!(r["ok"], true, "{r}");
    }
}

/// Waits until every key's value is held by exactly the members `want(i)` says.
fn wait_placed(
    rt: &tokio::runtime::Runtime,
    c: &Cluster,
    what: &str,
    members: &[usize],
    keys: &[(String, BTreeSet<usize>)],
) {
    common::wait_for(what, Duration::from_secs(60), || {
        let wrong: Vec<_> = keys
            .iter()
            .filter(|(stored, want)| {
                let value = format!("v-{}", dynamo::types::user_key(stored));
                holders(rt, c, members, stored, &value) != *want
            })
            .collect();
        wrong.is_empty().then_some(())
    });
}

#[test]
fn each_bucket_keeps_its_own_n_through_handoff_anti_entropy_and_a_ring_change() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Five members with the ring's N = 3, and a sixth node for the ring change.
    let c = Cluster::ring_with(6, 5, (3, 2, 2), &[]);
    let five: Vec<usize> = (0..5).collect();
    let out = c.at_leader("bucket create one n=1");
    assert_eq!(out.results[0]["bucket"]["n"], 1, "{out:?}");
    assert_eq!(out.results[0]["action"], "created", "{out:?}");
    let out = c.at_leader("bucket create all n=5");
    assert_eq!(
        (
            out.results[0]["bucket"]["w"].clone(),
            out.results[0]["bucket"]["r"].clone()
        ),
        (3.into(), 3.into()),
        "a majority of N by default: {out:?}"
    );
    // Ids are given in order from 0: one is 0, all is 1.
    let stored = |id: u32, k: &str| dynamo::types::bucket_key(id, k);
    let list = c.client(2, &["bucket list"]);
    let names: Vec<&str> = list.results[0]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "all", "one"],
        "every node knows the buckets: {list:?}"
    );

    // Placement: a key of `one` lives on exactly its one replica, a key of
    // `all` on every member; the same name in the default bucket is another key.
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    put_all(&c, 1, "one", &keys);
    put_all(&c, 1, "all", &keys);
    let out = c.client(0, &["put k0 {} plain", "get k0"]);
    assert_eq!(out.results[1]["values"][0], "plain", "{out:?}");
    let got = in_bucket(&c, 3, "one", &["get k0".to_string()]);
    assert_eq!(got[0]["values"][0], "v-k0", "{got:?}");
    assert_eq!(got[0]["key"], "k0");
    let ones = located(&c, "one", &keys);
    assert!(ones.iter().all(|r| r.len() == 1), "{ones:?}");
    let alls = located(&c, "all", &keys);
    assert!(alls.iter().all(|r| r.len() == 5), "{alls:?}");
    let one_keys: Vec<(String, BTreeSet<usize>)> = keys
        .iter()
        .zip(&ones)
        .map(|(k, r)| (stored(0, k), r.clone()))
        .collect();
    let all_keys: Vec<(String, BTreeSet<usize>)> = keys
        .iter()
        .map(|k| (stored(1, k), five.iter().copied().collect()))
        .collect();
    wait_placed(
        &rt,
        &c,
        "N=1 keys on their one replica only",
        &five,
        &one_keys,
    );
    wait_placed(&rt, &c, "N=5 keys on every member", &five, &all_keys);

    // Hinted handoff with N = 1: the owner of some keys is down; their puts
    // go to a stand-in as hints, and reach the owner once it is back.
    let mut c = c;
    let owner = 4;
    let owned: Vec<String> = (0..200)
        .map(|i| format!("h{i}"))
        .collect::<Vec<_>>()
        .into_iter()
        .zip(located(
            &c,
            "one",
            &(0..200).map(|i| format!("h{i}")).collect::<Vec<_>>(),
        ))
        .filter(|(_, r)| r.contains(&owner))
        .map(|(k, _)| k)
        .take(10)
        .collect();
    assert!(owned.len() >= 5, "node 4 owns few keys: {owned:?}");
    c.kill(owner);
    put_all(&c, 0, "one", &owned);
    // And N = 5 with one member down: no stand-in is left (every member is a
    // replica), so anti-entropy brings these to it.
    let late: Vec<String> = (0..20).map(|i| format!("late{i}")).collect();
    put_all(&c, 0, "all", &late);
    c.start(owner);
    let handed: Vec<(String, BTreeSet<usize>)> = owned
        .iter()
        .map(|k| (stored(0, k), BTreeSet::from([owner])))
        .collect();
    wait_placed(
        &rt,
        &c,
        "hints of N=1 keys handed to their owner, and only there",
        &five,
        &handed,
    );
    let late_keys: Vec<(String, BTreeSet<usize>)> = late
        .iter()
        .map(|k| (stored(1, k), five.iter().copied().collect()))
        .collect();
    wait_placed(
        &rt,
        &c,
        "anti-entropy brings N=5 keys to the member that missed them",
        &five,
        &late_keys,
    );

    // A ring change: a sixth member. Each key ends up on exactly its
    // owners under its bucket's N: one node for `one`, five of six for `all`.
    c.add_settled(5);
    let six: Vec<usize> = (0..6).collect();
    let ones = located(&c, "one", &keys);
    let alls = located(&c, "all", &keys);
    assert!(alls.iter().all(|r| r.len() == 5), "{alls:?}");
    assert!(
        ones.iter().any(|r| r.contains(&5)),
        "the new node owns no N=1 key: {ones:?}"
    );
    let one_keys: Vec<(String, BTreeSet<usize>)> = keys
        .iter()
        .zip(&ones)
        .map(|(k, r)| (stored(0, k), r.clone()))
        .collect();
    let all_keys: Vec<(String, BTreeSet<usize>)> = keys
        .iter()
        .zip(&alls)
        .map(|(k, r)| (stored(1, k), r.clone()))
        .collect();
    wait_placed(
        &rt,
        &c,
        "N=1 keys moved to their one new owner",
        &six,
        &one_keys,
    );
    wait_placed(
        &rt,
        &c,
        "N=5 keys on their five owners of six",
        &six,
        &all_keys,
    );
    // Every key still reads back.
    let gets: Vec<String> = keys.iter().map(|k| format!("get {k}")).collect();
    for bucket in ["one", "all"] {
        for (r, k) in in_bucket(&c, 5, bucket, &gets).iter().zip(&keys) {
            assert_eq!(r["values"][0], format!("v-{k}").as_str(), "{bucket}: {r}");
        }
    }
}

/// The sum of the `keys` every member reports in `status`.
fn total_keys(c: &Cluster) -> u64 {
    let s = c.status(0).expect("status");
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["keys"].as_u64())
        .sum()
}

#[test]
fn quotas_default_ttls_memory_buckets_and_drops() {
    let mut c = Cluster::ring(3, (3, 2, 2));
    for create in [
        "bucket create q quota=20KB",
        "bucket create t ttl=2s",
        "bucket create mem storage=memory",
        "bucket create disk",
    ] {
        let out = c.at_leader(create);
        assert_eq!(out.results[0]["ok"], true, "{create}: {out:?}");
    }
    // Bad settings are refused with a reason.
    let out = c.at_leader("bucket create big n=4");
    assert!(
        out.results[0]["error"]
            .as_str()
            .unwrap()
            .contains("more than the ring's 3 members"),
        "{out:?}"
    );
    let out = c.client(1, &["bucket create elsewhere"]);
    assert!(
        out.results[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("not the leader"),
        "{out:?}"
    );
    let out = c.client(0, &["use nosuch"]);
    assert_eq!(out.results[0]["error"], "no such bucket: nosuch", "{out:?}");

    // Quota: 1 KB values until the bucket is refused (N is the ring's size,
    // so every node holds every key and its estimate is exact).
    let value = "x".repeat(1000);
    let lines: Vec<String> = (0..40).map(|i| format!("put q{i} {{}} {value}")).collect();
    let results = in_bucket(&c, 0, "q", &lines);
    let taken = results.iter().take_while(|r| r["ok"] == true).count();
    assert!(
        (15..=20).contains(&taken),
        "{taken} puts of 1 KB under a 20 KB quota"
    );
    let refusal = results[taken]["error"].as_str().unwrap();
    assert!(
        refusal.starts_with("quota exceeded: bucket q holds about"),
        "{refusal}"
    );
    assert!(
        results[taken..].iter().all(|r| r["ok"] == false),
        "{results:?}"
    );
    // Over HTTP: the same bucket, and its refusal as 507.
    let http = c.nodes[0].http;
    let put = |path: &str, body: &str| curl(http, path, &["-X", "PUT", "--data-binary", body]);
    let (status, body) = put("/b/q/kv/over", &value);
    assert_eq!(status, 507, "{body}");
    // A delete is never refused, and frees room.
    let got = in_bucket(&c, 0, "q", &["get q0".to_string()]);
    let del = in_bucket(&c, 0, "q", &[format!("delete q0 {}", common::ctx(&got[0]))]);
    assert_eq!(del[0]["ok"], true, "{del:?}");
    let (status, body) = put("/b/q/kv/fits", &value);
    assert_eq!(status, 200, "{body}");
    let (status, body) = put("/b/disk/kv/a/b", "slashed");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"key\":\"a/b\""), "{body}");
    let (status, body) = curl(http, "/b/disk/kv/a/b", &[]);
    assert_eq!((status, body.as_str()), (200, "slashed"));
    let (status, _) = curl(http, "/kv/a/b", &[]);
    assert_eq!(status, 404, "the default bucket does not see it");
    let (status, _) = curl(http, "/b/nosuch/kv/a", &[]);
    assert_eq!(status, 404);
    // A read-only token reads a bucket's keys and may not write them.
    let out = c.at_leader("user add reader readonly");
    let token = out.results[0]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let as_reader = |method: &str, path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--data-binary", "x"])
            .arg(format!("http://127.0.0.1:{http}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(as_reader("GET", "/b/disk/kv/a/b"), "200");
    assert_eq!(as_reader("PUT", "/b/disk/kv/a/b"), "403");
    assert_eq!(as_reader("DELETE", "/b/disk/kv/a/b"), "403");
    let (status, body) = curl(http, "/b/disk/kv?prefix=a", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"keys\":[\"a/b\"]"), "{body}");

    // A default TTL.
    let r = in_bucket(
        &c,
        1,
        "t",
        &["put k {} soon gone".to_string(), "get k".to_string()],
    );
    assert_eq!(r[1]["values"][0], "soon gone", "{r:?}");
    std::thread::sleep(Duration::from_secs(3));
    let r = in_bucket(&c, 1, "t", &["get k".to_string()]);
    assert_eq!(
        r[0]["values"],
        serde_json::json!([]),
        "expired by the bucket's TTL: {r:?}"
    );

    // Memory and disk: 20 keys each, then every node restarts.
    let keys: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    put_all(&c, 0, "mem", &keys);
    put_all(&c, 0, "disk", &keys);
    for i in 0..3 {
        c.terminate(i);
    }
    for i in 0..3 {
        c.start(i);
    }
    c.wait_settled(0, Duration::from_secs(60));
    common::wait_for("every node seen alive", Duration::from_secs(30), || {
        let s = c.status(0)?;
        s["nodes"]
            .as_array()?
            .iter()
            .all(|n| n["state"] == "alive")
            .then_some(())
    });
    let gets: Vec<String> = keys.iter().map(|k| format!("get {k}")).collect();
    for (r, k) in in_bucket(&c, 0, "disk", &gets).iter().zip(&keys) {
        assert_eq!(
            r["values"][0],
            format!("v-{k}").as_str(),
            "disk keeps {k}: {r}"
        );
    }
    for r in in_bucket(&c, 0, "mem", &gets) {
        assert_eq!(r["values"], serde_json::json!([]), "memory forgets: {r}");
    }
    // A blind put after the restart gets a dot above every earlier boot's.
    let r = in_bucket(&c, 0, "mem", &["put m0 {} again".to_string()]);
    let counters: Vec<u64> = r[0]["context"]
        .as_object()
        .unwrap_or_else(|| panic!("{r:?}"))
        .values()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(counters.iter().all(|&n| n > 1 << 32), "{r:?}");

    // Dropping `disk` removes its 21 keys (with `a/b`) from all three nodes.
    let before = total_keys(&c);
    let out = c.at_leader("bucket drop disk");
    assert_eq!(out.results[0]["action"], "dropped", "{out:?}");
    common::wait_for(
        "the dropped bucket's keys gone",
        Duration::from_secs(60),
        || (total_keys(&c) + 63 == before).then_some(()),
    );
    let out = c.client(2, &["use disk"]);
    assert_eq!(out.results[0]["error"], "no such bucket: disk", "{out:?}");
    // A new bucket of the same name starts empty.
    c.at_leader("bucket create disk");
    let r = in_bucket(&c, 2, "disk", &["get m1".to_string()]);
    assert_eq!(r[0]["values"], serde_json::json!([]), "{r:?}");
}
