//! End-to-end tests: real `dynamo` processes on loopback, killed with SIGKILL and
//! restarted on their data directories, driven by the real `client` binary in
//! `--json` mode: writes, reads, deletes, failures and membership as a user sees them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::writeload::{describe_lost, verify, WriteLoad};
use common::{ctx, run_client, run_script, wait_for, Cluster};
use dynamo::ring::{Ring, RingState, DEFAULT_TOKENS_PER_NODE};
use dynamo::types::{NodeId, Replication};
use serde_json::Value;

const NWR: (usize, usize, usize) = (3, 2, 2);

fn values(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no values in {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// The ring the cluster has, rebuilt from `status` (for preference lists).
fn ring_of(c: &Cluster, via: usize) -> Ring {
    let s = &c.client(via, &["status"]).results[0];
    let members: Vec<NodeId> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().parse().unwrap())
        .collect();
    Ring::new(RingState {
        epoch: s["epoch"].as_u64().unwrap(),
        leader: s["leader"].as_str().unwrap().parse().unwrap(),
        members,
        replication: Replication {
            n: NWR.0,
            w: NWR.1,
            r: NWR.2,
        },
        tokens_per_node: DEFAULT_TOKENS_PER_NODE,
        identities: Default::default(),
        transition: None,
        incarnations: Default::default(),
        departed: Default::default(),
        users: Default::default(),
        buckets: Default::default(),
    })
}

#[test]
fn five_nodes_keep_serving_with_one_then_two_killed() {
    let mut c = Cluster::ring(5, NWR);
    let puts: Vec<String> = (0..20)
        .map(|i| format!("put before{i} {{}} value-{i}"))
        .collect();
    let refs: Vec<&str> = puts.iter().map(|s| s.as_str()).collect();
    let out = c.client(0, &refs);
    assert_eq!(out.status, 0, "{out:?}");

    c.kill(3);
    for round in ["one", "two"] {
        let puts: Vec<String> = (0..20)
            .map(|i| format!("put {round}{i} {{}} v-{round}-{i}"))
            .collect();
        let refs: Vec<&str> = puts.iter().map(|s| s.as_str()).collect();
        let out = c.client(0, &refs);
        assert_eq!(out.status, 0, "puts with {round} node(s) down: {out:?}");
        for r in &out.results {
            assert_eq!(r["ok"], true, "{r}");
        }
        // Everything written so far reads back, through two different nodes.
        for via in [0, 1] {
            let gets: Vec<String> = (0..20)
                .map(|i| format!("get before{i}"))
                .chain((0..20).map(|i| format!("get {round}{i}")))
                .collect();
            let refs: Vec<&str> = gets.iter().map(|s| s.as_str()).collect();
            let out = c.client(via, &refs);
            assert_eq!(out.status, 0, "{out:?}");
            for (i, r) in out.results.iter().take(20).enumerate() {
                assert_eq!(values(r), vec![format!("value-{i}")], "before{i} via {via}");
            }
            for (i, r) in out.results.iter().skip(20).enumerate() {
                assert_eq!(
                    values(r),
                    vec![format!("v-{round}-{i}")],
                    "{round}{i} via {via}"
                );
            }
        }
        if round == "one" {
            c.kill(4);
        }
    }

    // With three of five down, fewer than W = 2 nodes of the ring can take a write
    // only when a single node is left: kill two more and check the error.
    c.kill(2);
    c.kill(1);
    let out = c.client(0, &["put lonely {} v"]);
    assert_eq!(out.status, 1, "{out:?}");
    let err = out.results[0]["error"].as_str().unwrap();
    assert!(
        err.starts_with("write quorum not reached: 1 of 2 acks ("),
        "{err}"
    );
    for i in 1..5 {
        assert!(err.contains(&c.nodes[i].id), "{err} does not name node {i}");
    }
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn hinted_writes_reach_restarted_replicas() {
    let mut c = Cluster::ring(5, NWR);
    let ring = ring_of(&c, 0);
    let (a, b) = (3, 4);
    let ida: NodeId = c.nodes[a].id.parse().unwrap();
    let idb: NodeId = c.nodes[b].id.parse().unwrap();
    c.kill(a);
    c.kill(b);
    let keys: Vec<String> = (0..40).map(|i| format!("hinted{i}")).collect();
    let puts: Vec<String> = keys
        .iter()
        .map(|k| format!("put {k} {{}} for-{k}"))
        .collect();
    let refs: Vec<&str> = puts.iter().map(|s| s.as_str()).collect();
    let out = c.client(0, &refs);
    assert_eq!(out.status, 0, "{out:?}");
    let hinted: usize = out
        .results
        .iter()
        .map(|r| r["hinted"].as_u64().unwrap_or(0) as usize)
        .sum();
    assert!(hinted > 0, "no write was hinted: {out:?}");

    c.start(a);
    c.start(b);
    // Wait until every stand-in has handed its hints off.
    wait_for("hints to be delivered", Duration::from_secs(30), || {
        let s = c.client(0, &["status"]);
        let nodes = s.results.first()?["nodes"].as_array()?.clone();
        let pending: u64 = nodes.iter().map(|n| n["hints"].as_u64().unwrap_or(1)).sum();
        (pending == 0).then_some(())
    });

    // The restarted replicas' detectors saw each other refuse while the other
    // was down; wait (bounded) until each holds the other alive again, as the
    // reads below need both.
    for (via, other) in [(a, b), (b, a)] {
        let id = c.nodes[other].id.clone();
        wait_for(
            &format!("node {via} to see node {other} alive"),
            Duration::from_secs(15),
            || {
                let s = c.client(via, &["status"]);
                let nodes = s.results.first()?["nodes"].as_array()?.clone();
                nodes
                    .iter()
                    .any(|n| n["id"] == id.as_str() && n["state"] == "alive")
                    .then_some(())
            },
        );
    }
    // Stop the stand-ins: only the restarted replicas remain.
    for i in 0..3 {
        c.kill(i);
    }
    let mut checked = 0;
    for k in &keys {
        let pref = ring.preference_list(k.as_bytes());
        let has_a = pref.contains(&ida);
        let has_b = pref.contains(&idb);
        if !has_a && !has_b {
            continue;
        }
        let via = if has_a { a } else { b };
        let out = c.client(via, &[&format!("get {k}")]);
        assert_eq!(out.status, 0, "get {k}: {out:?}");
        assert_eq!(values(&out.results[0]), vec![format!("for-{k}")], "{k}");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} keys had a restarted replica");
}

#[test]
fn siblings_merge_and_delete() {
    let c = Cluster::ring(5, NWR);
    let out = c.client(2, &["put s {} one", "put s {} two", "get s"]);
    assert_eq!(out.status, 0, "{out:?}");
    let got = &out.results[2];
    assert_eq!(
        values(got),
        vec!["one", "two"],
        "two blind puts must both survive"
    );
    let merged = ctx(got);
    let out = c.client(4, &[&format!("put s {merged} three"), "get s"]);
    assert_eq!(values(&out.results[1]), vec!["three"], "{out:?}");
    let out = c.client(0, &[&format!("delete s {}", ctx(&out.results[1])), "get s"]);
    assert_eq!(out.status, 0, "{out:?}");
    let after = &out.results[1];
    assert!(values(after).is_empty(), "{after}");
    assert_ne!(
        after["context"],
        serde_json::json!({}),
        "a deleted key keeps its context"
    );
    let out = c.client(1, &[&format!("put s {} again", ctx(after)), "get s"]);
    assert_eq!(values(&out.results[1]), vec!["again"]);
}

#[test]
fn every_node_restarted_keeps_values_and_ring() {
    let mut c = Cluster::ring(5, NWR);
    let puts: Vec<String> = (0..50)
        .map(|i| format!("put durable{i} {{}} v{i}"))
        .collect();
    let refs: Vec<&str> = puts.iter().map(|s| s.as_str()).collect();
    assert_eq!(c.client(1, &refs).status, 0);
    let before = c.client(0, &["status"]).results[0].clone();
    for i in 0..5 {
        c.kill(i);
    }
    for i in 0..5 {
        c.start(i);
    }
    let after = c.client(0, &["status"]).results[0].clone();
    assert_eq!(after["epoch"], before["epoch"]);
    assert_eq!(after["leader"], before["leader"]);
    let ids = |s: &Value| -> Vec<String> {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].to_string())
            .collect()
    };
    assert_eq!(ids(&after), ids(&before));
    // A member restarted alone knows the ring from its own disk, too.
    let member = c.client(3, &["status"]).results[0].clone();
    assert_eq!(member["epoch"], before["epoch"]);
    assert_eq!(member["leader"], before["leader"]);
    let gets: Vec<String> = (0..50).map(|i| format!("get durable{i}")).collect();
    let refs: Vec<&str> = gets.iter().map(|s| s.as_str()).collect();
    let out = c.client(4, &refs);
    assert_eq!(out.status, 0, "{out:?}");
    for (i, r) in out.results.iter().enumerate() {
        assert_eq!(values(r), vec![format!("v{i}")]);
    }
    // The leader's role survived: it still accepts membership changes.
    let out = c.client(0, &[&format!("remove-node {}", c.nodes[4].id)]);
    assert_eq!(out.results[0]["ok"], true, "{out:?}");
}

#[test]
fn membership_at_a_non_leader_is_refused_with_the_leader() {
    let c = Cluster::ring(3, NWR);
    let out = c.client(1, &[&format!("add-node {}", c.nodes[2].id)]);
    assert_eq!(out.status, 1);
    assert_eq!(
        out.results[0]["error"],
        format!("not the leader: the leader is {}", c.nodes[0].id)
    );
    let out = c.client(2, &[&format!("remove-node {}", c.nodes[1].id)]);
    assert_eq!(
        out.results[0]["error"],
        format!("not the leader: the leader is {}", c.nodes[0].id)
    );
}

#[test]
fn members_follow_the_leaders_replication_and_catch_up() {
    let mut c = Cluster::spawn(4, NWR);
    // Node 3 was started with other settings: it must follow the leader's.
    c.kill(3);
    for flag in ["--qsize", "--sq-write-n", "--sq-read-n"] {
        c.set_arg(3, flag, "1");
    }
    c.start(3);
    for i in 1..4 {
        let out = c.client(0, &[&format!("add-node {}", c.nodes[i].id)]);
        assert_eq!(out.results[0]["ok"], true, "{out:?}");
        c.wait_settled(0, common::SETTLE_LIMIT);
    }
    let s = c.client(3, &["status"]).results[0].clone();
    assert_eq!(
        (
            s["qsize"].clone(),
            s["write_n"].clone(),
            s["read_n"].clone()
        ),
        (3.into(), 2.into(), 2.into())
    );

    // A member that is down during a change learns it when it returns.
    c.kill(2);
    let out = c.client(0, &[&format!("remove-node {}", c.nodes[1].id)]);
    assert_eq!(out.results[0]["ok"], true, "{out:?}");
    let epoch = out.results[0]["epoch"].as_u64().unwrap();
    c.start(2);
    wait_for("node 2 to catch up", Duration::from_secs(20), || {
        let s = c.client(2, &["status"]);
        (s.results.first()?["epoch"].as_u64()? >= epoch).then_some(())
    });
    // Adding a node that is not running is refused.
    let out = c.client(0, &[&format!("add-node 127.0.0.1:{}", common::free_port())]);
    assert_eq!(out.status, 1);
    assert!(
        out.results[0]["error"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{out:?}"
    );
}

#[test]
fn garbage_on_the_port_does_not_hurt_the_node() {
    let mut c = Cluster::ring(3, NWR);
    assert_eq!(c.client(0, &["put g {} before"]).status, 0);
    let port = c.nodes[0].port;
    let send = |bytes: &[u8]| {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let _ = s.write_all(bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    };
    // Random bytes (deterministic xorshift), many sizes.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in [1usize, 3, 4, 7, 64, 1000, 70_000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        send(&bytes);
    }
    // A length prefix far above the frame limit.
    send(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    // A truncated frame: announces 100 bytes, sends 10, hangs up.
    let mut t = 100u32.to_be_bytes().to_vec();
    t.extend_from_slice(&[0u8; 10]);
    send(&t);
    // A well-framed body that is not a valid request.
    let mut f = 16u32.to_be_bytes().to_vec();
    f.extend_from_slice(&[0xfe; 16]);
    send(&f);
    // An HTTP request, as a curious user might send.
    send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // Half-open connections left hanging while the node serves others.
    let idle: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();

    assert!(!c.log(0).contains("panicked"), "{}", c.log(0));
    // A well-formed request whose deadline overflows the clock (tarpc decodes the
    // deadline as now + duration): at worst that connection dies, never the node.
    let mut body = vec![0u8]; // ClientMessage::Request
    body.push(0xfd); // varint u64 follows: deadline seconds
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    body.push(0); // nanos
    body.extend_from_slice(&[0; 16]); // trace id
    body.extend_from_slice(&[0, 1]); // span id, sampling decision
    body.push(1); // request id
    body.push(4); // NodeRequest::Status
                  // (If the layout ever changes the frame is merely malformed, which the node
                  // must survive too; the unit test in rpc.rs pins the layout.)
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    send(&frame);

    assert!(c.alive(0), "node died: {}", c.log(0));
    let out = c.client(0, &["get g", "put g2 {} after", "get g2"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(values(&out.results[0]), vec!["before"]);
    assert_eq!(values(&out.results[2]), vec!["after"]);
    drop(idle);
    assert!(!c.log(0).contains("panicked"), "{}", c.log(0));
}

#[test]
fn sigterm_stops_gracefully_and_bad_flags_exit_nonzero() {
    let mut c = Cluster::ring(1, (1, 1, 1));
    assert_eq!(c.client(0, &["put t {} v"]).status, 0);
    let status = c.terminate(0);
    assert!(status.success(), "exit status {status:?}");
    c.start(0);
    let out = c.client(0, &["get t"]);
    assert_eq!(values(&out.results[0]), vec!["v"]);

    let out = std::process::Command::new(common::dynamo_bin())
        .args(["--qsize", "3", "--sq-write-n", "4", "--in-memory"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sq-write-n"), "{err}");
    let out = std::process::Command::new(common::dynamo_bin())
        .args(["--sq_read_n", "0", "--in-memory"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let _ = run_client; // used by other tests through Cluster::client
}

/// How many times the node under the write load is killed.
const KILLS: usize = 6;

/// A put sent before its node died may have been applied: the client must call
/// its outcome unknown, never resend it and report what the resend met (the
/// client once answered "connection refused" for puts that were stored). A put
/// refused at connect was never sent, so it must be nowhere; every
/// acknowledged put must read back. Reads use R = N = 3, so a get sees all
/// three copies.
#[test]
fn puts_in_flight_when_their_node_is_killed_are_unknown_and_refused_ones_are_absent() {
    let mut c = Cluster::ring(3, (3, 2, 3));
    let via = 1;
    let port = c.nodes[via].port;
    let load = WriteLoad::start_with("k9", &[port], Duration::ZERO);
    for _ in 0..KILLS {
        load.wait_acked(40, Duration::from_secs(120));
        c.kill(via);
        std::thread::sleep(Duration::from_millis(300));
        c.start(via);
    }
    load.wait_acked(40, Duration::from_secs(120));
    let report = load.stop();

    let refused_msg = format!("127.0.0.1:{port}: connection refused");
    let refused: Vec<&str> = report
        .failures
        .iter()
        .filter(|(_, e)| *e == refused_msg)
        .map(|(k, _)| k.as_str())
        .collect();
    let unknown = report
        .failures
        .iter()
        .filter(|(_, e)| e.contains("outcome is unknown"))
        .count();
    eprintln!(
        "{KILLS} kills: {} puts acked, {} failed ({} refused at connect, {unknown} with an unknown outcome); samples {:?}",
        report.acked.len(),
        report.failed,
        refused.len(),
        report.samples
    );
    assert!(
        !refused.is_empty(),
        "the node was down and no put was refused"
    );

    let lost = verify(&c.ports(&[0, 1, 2]), &report.acked);
    assert!(
        lost.is_empty(),
        "{}",
        describe_lost(&lost, report.acked.len())
    );

    let gets: Vec<String> = refused.iter().map(|k| format!("get {k}")).collect();
    let out = run_script(c.nodes[0].port, &gets, Duration::from_secs(60));
    assert_eq!(out.results.len(), gets.len(), "{out:?}");
    for (key, r) in refused.iter().zip(&out.results) {
        assert_eq!(r["ok"], true, "get {key}: {r}");
        assert_eq!(
            r["values"],
            serde_json::json!([]),
            "{key} was refused at connect (never sent) but is stored: {r}"
        );
    }
}

/// An acknowledged put has been through `fdatasync` on the node's log: a node
/// run under `strace`, five sequential puts (one writer, so each is a flush
/// of its own), and the trace holds at least five `fdatasync` calls and no
/// `sync_file_range`. sled 0.34.7 as published made its flushes durable with
/// `sync_file_range`, which writes neither the file's size nor the device's
/// write cache: a put acknowledged "on disk" could be lost to a power cut.
/// (A kill -9 cannot show the difference: the page cache survives it.)
#[test]
fn an_acknowledged_put_has_been_through_fdatasync() {
    if !common::have("strace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let trace = dir.path().join("trace");
    let mut strace = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fdatasync,sync_file_range,fsync",
            "-o",
        ])
        .arg(&trace)
        .arg(common::dynamo_bin())
        .args([
            "--port",
            &port.to_string(),
            "--qsize",
            "1",
            "--sq-write-n",
            "1",
        ])
        .args([
            "--sq-read-n",
            "1",
            "--fsync",
            "batch",
            "--insecure",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start strace");
    wait_for("the traced node to listen", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    for i in 0..5 {
        let out = run_client(port, &[&format!("put key{i} {{}} value{i}")]);
        assert_eq!(out.status, 0, "put {i}: {}{}", out.stdout, out.stderr);
        assert_eq!(out.results[0]["ok"], true, "{}", out.stdout);
    }
    // SIGTERM to the node (strace's child): it flushes and exits, then strace does.
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let node_pid = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok());
    let Some(pid) = node_pid else {
        let _ = strace.kill();
        panic!("no system call traced:\n{text}");
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exited = wait_for("strace to exit", Duration::from_secs(20), || {
        strace.try_wait().ok().flatten()
    });
    assert!(exited.success(), "the node did not stop cleanly: {exited}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = |name: &str| {
        text.lines()
            .filter(|l| l.contains(&format!(" {name}(")))
            .count()
    };
    assert!(
        calls("fdatasync") >= 5,
        "5 acknowledged puts but {} fdatasync calls:\n{text}",
        calls("fdatasync")
    );
    assert_eq!(calls("sync_file_range"), 0, "sync_file_range used:\n{text}");
}
