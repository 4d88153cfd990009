//! `client backup` and `client restore` on real processes: a backup taken
//! under a write load holds every key acknowledged before it began (siblings
//! and contexts included, deleted keys left out), restores into a ring of
//! another size, restoring twice changes nothing, and a file with a flipped
//! byte is refused before anything is written.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{client_cmd, ctx, run_script, Cluster};
use serde_json::Value;

/// Runs `client ACTION FILE --json` against `port`: exit status and its one line.
fn client_action(port: u16, action: &str, file: &Path) -> (i32, Value) {
    let out = client_cmd()
        .args([action])
        .arg(file)
        .args(["--node", "127.0.0.1", "--port", &port.to_string(), "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("{}");
    let value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

/// Every key's values (sorted) through node `via` of `c`.
fn values_of(c: &Cluster, via: usize, keys: &[String]) -> BTreeMap<String, Vec<String>> {
    let lines: Vec<String> = keys.iter().map(|k| format!("get {k}")).collect();
    let out = run_script(c.nodes[via].port, &lines, Duration::from_secs(120));
    assert_eq!(out.results.len(), keys.len(), "{}", out.stderr);
    keys.iter()
        .zip(&out.results)
        .map(|(k, r)| {
            assert_eq!(r["ok"], true, "{r}");
            let mut v: Vec<String> = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            v.sort();
            (k.clone(), v)
        })
        .collect()
}

/// (keys, tombstones) summed over every node of `c`.
fn stored(c: &Cluster) -> (u64, u64) {
    let status = c.status(0).expect("status");
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(k, t), n| {
            (
                k + n["keys"].as_u64().unwrap_or(0),
                t + n["tombstones"].as_u64().unwrap_or(0),
            )
        })
}

#[test]
fn a_backup_under_load_restores_into_a_ring_of_another_size() {
    let a = Cluster::ring(3, (3, 2, 2));
    // 300 keys, 20 of them with two siblings, 10 deleted.
    let keys: Vec<String> = (0..300).map(|i| format!("item/{i:03}")).collect();
    let mut lines: Vec<String> = keys.iter().map(|k| format!("put {k} {{}} v-{k}")).collect();
    lines.extend(keys[..20].iter().map(|k| format!("put {k} {{}} other-{k}")));
    let out = run_script(a.nodes[0].port, &lines, Duration::from_secs(120));
    assert!(
        out.results.iter().all(|r| r["ok"] == true),
        "{}",
        out.stdout
    );
    let contexts: Vec<String> = out.results[..300].iter().map(ctx).collect();
    let deletes: Vec<String> = (290..300)
        .map(|i| format!("delete {} {}", keys[i], contexts[i]))
        .collect();
    let out = run_script(a.nodes[1].port, &deletes, Duration::from_secs(60));
    assert!(
        out.results.iter().all(|r| r["ok"] == true),
        "{}",
        out.stdout
    );
    let before = values_of(&a, 2, &keys);
    assert_eq!(
        before[&keys[0]].len(),
        2,
        "siblings: {:?}",
        before[&keys[0]]
    );
    assert!(before[&keys[295]].is_empty());

    // A write load runs while the backup is taken.
    let port = a.nodes[1].port;
    let load = std::thread::spawn(move || {
        let lines: Vec<String> = (0..400).map(|i| format!("put load/{i} {{}} x")).collect();
        run_script(port, &lines, Duration::from_secs(120))
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ring.backup");
    let (status, summary) = client_action(a.nodes[0].port, "backup", &file);
    assert_eq!(status, 0, "{summary}");
    assert_eq!(summary["ok"], true);
    let load = load.join().unwrap();
    assert!(
        load.results.iter().all(|r| r["ok"] == true),
        "{}",
        load.stdout
    );
    let backed_up = summary["keys"].as_u64().unwrap();
    assert!(
        (290..=690).contains(&backed_up),
        "290 keys before the backup, up to 400 during it: {summary}"
    );

    // Into a ring of five.
    let b = Cluster::ring(5, (3, 2, 2));
    let (status, summary) = client_action(b.nodes[3].port, "restore", &file);
    assert_eq!(status, 0, "{summary}");
    assert_eq!(summary["keys"].as_u64(), Some(backed_up), "{summary}");
    let after = values_of(&b, 4, &keys);
    assert_eq!(
        after, before,
        "every key back with its siblings, none deleted back"
    );
    // The contexts came along: a put with the context read on the new ring
    // replaces both siblings.
    let read = b.client(0, &[&format!("get {}", keys[0])]);
    let context = ctx(&read.results[0]);
    let out = b.client(1, &[&format!("put {} {context} merged", keys[0])]);
    assert_eq!(
        out.results[0]["values"],
        serde_json::json!(["merged"]),
        "{}",
        out.stdout
    );

    // Restoring again changes nothing: not the new value, not the counts.
    std::thread::sleep(Duration::from_secs(1));
    let counts = stored(&b);
    let (status, summary) = client_action(b.nodes[2].port, "restore", &file);
    assert_eq!(status, 0, "{summary}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        stored(&b),
        counts,
        "a second restore changed what is stored"
    );
    let again = values_of(&b, 0, &keys[..1]);
    assert_eq!(
        again[&keys[0]],
        ["merged"],
        "the restore brought back what a put replaced"
    );

    // One flipped byte: refused, nothing written.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, &bytes).unwrap();
    let c = Cluster::ring(1, (1, 1, 1));
    let (status, answer) = client_action(c.nodes[0].port, "restore", &damaged);
    assert_eq!(status, 1, "{answer}");
    let error = answer["error"].as_str().unwrap_or("");
    assert!(error.contains("checksum mismatch"), "{answer}");
    assert_eq!(stored(&c), (0, 0), "a refused file wrote nothing");
}
