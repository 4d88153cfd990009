//! Listing keys and per-request consistency on real nodes, through the real
//! client and over HTTP: `scan` pages through every acknowledged key in key
//! order with one replica of every range down, leaves deleted keys out even
//! where the live replica missed the delete, and `get --r` / `put --w` say
//! what they asked and reached.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::http::curl;
use common::{run_script, Cluster};
use serde_json::Value;

/// Every page of `scan ARGS --limit LIMIT` at node `via`, following `next`.
fn scan_all(c: &Cluster, via: usize, args: &str, limit: u32) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let mut command = format!("scan {args} --limit {limit}");
        if let Some(a) = &after {
            command.push_str(&format!(" --after {a}"));
        }
        let out = c.client(via, &[&command]);
        let page = out.results.first().cloned().unwrap_or(Value::Null);
        assert_eq!(page["ok"], true, "{command}: {out:?}");
        let listed = page["keys"].as_array().expect("keys");
        assert!(
            listed.len() <= limit as usize,
            "{command}: a page over its limit"
        );
        keys.extend(listed.iter().map(|k| k.as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return keys,
        }
    }
    panic!("scan did not end in 1000 pages");
}

/// Puts `keys` (value = key) through node `via`; returns each put's context.
fn put_all(c: &Cluster, via: usize, keys: &[String]) -> Vec<String> {
    let lines: Vec<String> = keys.iter().map(|k| format!("put {k} {{}} {k}")).collect();
    let out = run_script(c.nodes[via].port, &lines, Duration::from_secs(120));
    assert_eq!(out.results.len(), keys.len(), "{}", out.stderr);
    out.results
        .iter()
        .map(|r| {
            assert_eq!(r["ok"], true, "{r}");
            common::ctx(r)
        })
        .collect()
}

#[test]
fn scan_lists_every_acknowledged_key_with_one_replica_of_each_range_down() {
    // Three members, N = 3: every range has a replica on every node, so one
    // node down is one replica of each range down.
    let mut c = Cluster::ring(3, (3, 2, 2));
    let first: Vec<String> = (0..120).map(|i| format!("key/{i:03}")).collect();
    let contexts = put_all(&c, 0, &first);

    // Node 2 is down while more keys are written and some are deleted: only
    // nodes 0 and 1 acknowledge them.
    c.kill(2);
    let second: Vec<String> = (120..200).map(|i| format!("key/{i:03}")).collect();
    put_all(&c, 0, &second);
    let deletes: Vec<String> = (0..10)
        .map(|i| format!("delete {} {}", first[i], contexts[i]))
        .collect();
    let out = run_script(c.nodes[0].port, &deletes, Duration::from_secs(60));
    assert!(out.results.iter().all(|r| r["ok"] == true), "{out:?}");

    // Node 2 comes back without them; node 1 goes down. Every range now has
    // one replica that holds the writes (node 0) and one that may not (node 2).
    c.start(2);
    let back = c.nodes[2].id.clone();
    common::wait_for("node 2 seen alive again", Duration::from_secs(30), || {
        let status = c.status(0)?;
        (common::node_status(&status, &back)["state"] == "alive").then_some(())
    });
    c.kill(1);

    let expected: Vec<String> = first[10..].iter().chain(&second).cloned().collect();
    for via in [0, 2] {
        let listed = scan_all(&c, via, "--consistent", 37);
        assert_eq!(
            listed, expected,
            "scan --consistent at node {via}: every acknowledged key, in order, \
             none deleted, none twice"
        );
    }
    // One replica per range: keys in order, never twice, never a deleted one
    // that node 0 answers for.
    let quick = scan_all(&c, 0, "", 50);
    let unique: BTreeSet<&String> = quick.iter().collect();
    assert_eq!(unique.len(), quick.len(), "a key listed twice");
    assert!(quick.windows(2).all(|w| w[0] < w[1]), "not in key order");

    // A prefix, and the same page over HTTP.
    let prefixed = scan_all(&c, 0, "key/15 --consistent", 4);
    let want: Vec<String> = (150..160).map(|i| format!("key/{i}")).collect();
    assert_eq!(prefixed, want);
    let page = http_json(
        c.nodes[0].http,
        "/kv?prefix=key%2F15&limit=4&consistent=true",
    );
    assert_eq!(page["ok"], true, "{page}");
    assert_eq!(page["keys"], serde_json::json!(want[..4]));
    assert_eq!(page["next"], "key/153");

    // With two of three replicas down, a consistent page cannot be had.
    c.kill(2);
    let out = c.client(0, &["scan --consistent"]);
    let error = out.results[0]["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("read quorum not reached"), "{out:?}");
}

#[test]
fn per_request_r_and_w_say_what_was_asked_and_reached() {
    let c = Cluster::ring(3, (3, 2, 2));
    let out = c.client(0, &["put --w 3 k {} v", "get --r 3 k", "get --r 1 k"]);
    let (put, all, one) = (&out.results[0], &out.results[1], &out.results[2]);
    assert_eq!(put["ok"], true, "{out:?}");
    assert_eq!(put["w"], 3);
    assert_eq!(put["acked"], 3, "w=3 waits for all three: {put}");
    assert_eq!(all["r"], 3);
    assert_eq!(all["answered"], 3, "{all}");
    assert_eq!(all["values"], serde_json::json!(["v"]));
    assert_eq!(one["r"], 1);
    assert!(one["answered"].as_u64().unwrap() >= 1, "{one}");

    let out = c.client(1, &["put --w 4 k {} v", "get --r 4 k"]);
    assert_eq!(out.status, 1);
    for r in &out.results {
        let e = r["error"].as_str().unwrap_or("");
        assert!(e.contains("out of range: 1 to N (3)"), "{r}");
    }

    // Over HTTP: ?w= and ?r=, and a bad one is a 400.
    let http = c.nodes[2].http;
    let (status, body) = curl(http, "/kv/h?w=1", &["-X", "PUT", "--data-binary", "x"]);
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["w"], 1);
    let (status, body) = curl(http, "/kv/h?r=2", &["-H", "Accept: application/json"]);
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["r"], 2);
    assert_eq!(body["answered"], 2, "{body}");
    let context = format!("X-Dynamo-Context: {}", body["context"]);
    let (status, deleted) = curl(http, "/kv/h?w=3", &["-X", "DELETE", "-H", &context]);
    assert_eq!(status, 200, "{deleted}");
    let deleted: Value = serde_json::from_str(&deleted).unwrap();
    assert_eq!(
        (deleted["w"].clone(), deleted["acked"].clone()),
        (3.into(), 3.into()),
        "{deleted}"
    );
    let (status, body) = curl(http, "/kv/h?r=0", &[]);
    assert_eq!(status, 400, "{body}");
    let (status, body) = curl(http, "/kv/h?r=9", &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("out of range"), "{body}");
}

fn http_json(port: u16, path: &str) -> Value {
    let (status, body) = curl(port, path, &[]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}
