//! The failure detector on real processes: a hung node (SIGSTOP: its port stays
//! open, it just never answers) is shown `down` within seconds, requests stop
//! waiting on it, and it is `alive` again once it resumes.

mod common;

use std::time::{Duration, Instant};

use common::{node_status, run_script, Cluster};
use serde_json::Value;

/// How node `i` looks in node `via`'s `status`.
fn state(c: &Cluster, via: usize, i: usize) -> String {
    c.status(via)
        .map(|s| {
            node_status(&s, &c.nodes[i].id)["state"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// Waits until node `via` shows node `i` as `want`; returns how long it took.
fn wait_state(c: &Cluster, via: usize, i: usize, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = state(c, via, i);
        if now == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "node {i} still {now:?}, not {want:?}, after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Keys among `fd-0..fd-{scan}` whose first replica is node `first` and that
/// node `via` does not hold: a put through `via` is forwarded to `first`.
fn forwarded_to(c: &Cluster, via: usize, first: usize, scan: usize) -> Vec<String> {
    let lines: Vec<String> = (0..scan).map(|i| format!("locate fd-{i}")).collect();
    let out = run_script(c.nodes[via].port, &lines, Duration::from_secs(60));
    out.results
        .iter()
        .filter(|r| {
            let reps: Vec<&str> = r["replicas"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            reps.first() == Some(&c.nodes[first].id.as_str())
                && !reps.contains(&c.nodes[via].id.as_str())
        })
        .filter_map(|r| r["key"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_hung_node_is_held_down_and_routed_around_then_alive_again() {
    let c = Cluster::ring(5, (3, 2, 2));
    let keys: Vec<String> = forwarded_to(&c, 0, 2, 400).into_iter().take(30).collect();
    assert!(
        keys.len() >= 10,
        "too few keys forwarded to node 2: {keys:?}"
    );
    assert_eq!(state(&c, 0, 2), "alive");

    c.signal(2, "STOP");
    let took = wait_state(&c, 0, 2, "down", Duration::from_secs(10));
    eprintln!("a SIGSTOPped node was shown down after {took:?}");
    // `locate` reads the same view.
    let out = c.client(0, &[&format!("locate {}", keys[0])]);
    assert_eq!(
        out.results[0]["states"][&c.nodes[2].id], "down",
        "{}",
        out.stdout
    );

    // Every put through node 0 of a key whose first replica is the hung node
    // goes to the next replica instead of timing out on it, and reads back.
    let lines: Vec<String> = keys.iter().map(|k| format!("put {k} {{}} v-{k}")).collect();
    let started = Instant::now();
    let out = run_script(c.nodes[0].port, &lines, Duration::from_secs(120));
    let puts = started.elapsed();
    assert_eq!(out.results.len(), keys.len(), "{}", out.stderr);
    for r in &out.results {
        assert_eq!(r["ok"], true, "{r}");
        assert_ne!(r["coordinator"], c.nodes[2].id.as_str(), "{r}");
    }
    let lines: Vec<String> = keys.iter().map(|k| format!("get {k}")).collect();
    let out = run_script(c.nodes[0].port, &lines, Duration::from_secs(120));
    for (r, k) in out.results.iter().zip(&keys) {
        assert_eq!(r["values"], serde_json::json!([format!("v-{k}")]), "{r}");
    }
    eprintln!(
        "{} forwarded puts with their first replica hung took {puts:?} in all",
        keys.len()
    );

    c.signal(2, "CONT");
    let took = wait_state(&c, 0, 2, "alive", Duration::from_secs(10));
    eprintln!("alive again {took:?} after SIGCONT");
}
