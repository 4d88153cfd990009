//! The cluster secret: only its holders are members.

use std::time::Duration;

use dynamo::rpc::{self, Addressee};
use dynamo::security::{new_token, ClusterKey, Hello};

use super::common::{secrets, wait_for, write_private, Cluster};
use super::logs_hold_none_of;

/// A dial to `port` presenting `hello`: the refusal's text, or None if the
/// node let it in.
fn refusal(port: u16, hello: Hello) -> Option<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = format!("127.0.0.1:{port}").parse().unwrap();
    rt.block_on(async move {
        match rpc::connect_as(&node, Duration::from_secs(3), hello).await {
            Ok(_) => None,
            Err(e) => Some(e.error.to_string()),
        }
    })
}

fn run_secret() -> String {
    std::fs::read_to_string(&secrets().secret_file)
        .unwrap()
        .trim()
        .to_string()
}

/// A process started with another secret is refused by `add-node`, and
/// every member refuses it before any handler runs: as a member with the
/// wrong secret, as a member with none, and as a client (no token) calling
/// what only members may call. A member's own secret gets in.
#[test]
fn a_process_without_the_secret_is_refused_by_every_member() {
    let c = Cluster::ring(3, (3, 2, 2));
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.secret");
    write_private(&wrong, &new_token());
    let wrong_arg = wrong.display().to_string();
    let stranger = Cluster::spawn_with(1, (3, 2, 2), &["--cluster-secret-file", &wrong_arg]);

    let add = c.at_leader(&format!("add-node {}", stranger.nodes[0].id));
    assert_eq!(add.status, 1, "{add:?}");
    let e = add.results[0]["error"].as_str().unwrap();
    assert!(
        e.contains("cannot add") && e.contains("cluster secret"),
        "add-node of a node with another secret: {e}"
    );
    let status = c.status(0).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3, "{status}");

    let wrong_key = ClusterKey::derive(std::fs::read_to_string(&wrong).unwrap().trim().as_bytes());
    for n in &c.nodes {
        let e = refusal(n.port, Hello::Peer(Some(wrong_key.clone())))
            .unwrap_or_else(|| panic!("{} let in a member with the wrong secret", n.id));
        assert!(e.contains("does not hold the cluster secret"), "{e}");
        let e = refusal(n.port, Hello::Peer(None))
            .unwrap_or_else(|| panic!("{} let in a member with no secret", n.id));
        assert!(e.contains("offered none"), "{e}");
        let e = refusal(n.port, Hello::Client(None))
            .unwrap_or_else(|| panic!("{} let in a client with no token", n.id));
        assert!(e.starts_with("unauthorized:"), "{e}");
        let right = ClusterKey::derive(run_secret().as_bytes());
        assert_eq!(refusal(n.port, Hello::Peer(Some(right))), None, "{}", n.id);
    }

    // A client with the admin token may not make the calls between members.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node: dynamo::types::NodeId = c.nodes[1].id.parse().unwrap();
    let admin = Hello::Client(Some(secrets().admin_token.clone()));
    let conn = rt
        .block_on(rpc::connect_as(&node, Duration::from_secs(3), admin))
        .unwrap();
    let to = Addressee {
        node: node.clone(),
        identity: None,
        from: None,
    };
    let e = rt
        .block_on(
            conn.client()
                .transfer(rpc::context(Duration::from_secs(5)), to, Vec::new()),
        )
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().starts_with("forbidden:"), "{e}");

    // The refusals are in the members' logs; no secret is.
    wait_for(
        "a refusal in a member's log",
        Duration::from_secs(10),
        || {
            c.nodes
                .iter()
                .enumerate()
                .any(|(i, _)| c.log(i).contains("refused a connection"))
                .then_some(())
        },
    );
    logs_hold_none_of(&c, &[std::fs::read_to_string(&wrong).unwrap().trim()]);
}

/// Waits until every node sees every member alive.
fn all_alive(c: &Cluster) {
    wait_for(
        "every member alive at every node",
        Duration::from_secs(20),
        || {
            (0..c.nodes.len())
                .all(|j| {
                    c.status(j).is_some_and(|s| {
                        s["nodes"]
                            .as_array()
                            .is_some_and(|ns| ns.iter().all(|n| n["state"] == "alive"))
                    })
                })
                .then_some(())
        },
    );
}

/// The cluster secret is replaced on a running ring without a moment where
/// the ring cannot write: every node first accepts the new secret beside the
/// old (rolling restart), then dials with the new one, then forgets the old.
/// At the end a process with only the old secret is refused.
#[test]
fn the_cluster_secret_rotates_node_by_node_without_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.secret");
    let (old, new) = (new_token(), new_token());
    write_private(&file, &format!("{old}\n"));
    let arg = file.display().to_string();
    let admin_arg = secrets().admin_token_file.display().to_string();
    let mut c = Cluster::spawn_with(
        3,
        (3, 2, 2),
        &[
            "--cluster-secret-file",
            &arg,
            "--admin-token-file",
            &admin_arg,
        ],
    );
    for i in 1..3 {
        c.add_settled(i);
    }
    let mut written = 0;
    let mut write_all = |c: &Cluster, step: &str| {
        for i in 0..3 {
            let key = format!("rot-{written}");
            written += 1;
            let out = c.client(i, &[&format!("put {key} {{}} {step}")]);
            assert_eq!(out.status, 0, "{step}: put through node {i}: {out:?}");
        }
    };
    write_all(&c, "before");
    for (step, lines) in [
        ("both-old-first", format!("{old}\n{new}\n")),
        ("both-new-first", format!("{new}\n{old}\n")),
        ("new-only", format!("{new}\n")),
    ] {
        write_private(&file, &lines);
        for i in 0..3 {
            assert!(c.terminate(i).success(), "node {i} stopped badly");
            // Two of three run: W=2 still holds while one restarts.
            let out = c.client((i + 1) % 3, &[&format!("put during-{step}-{i} {{}} v")]);
            assert_eq!(out.status, 0, "{step}, node {i} down: {out:?}");
            c.start(i);
            // The next node stops only once every node sees this one again
            // (its failure detector's news takes a ping round or two).
            all_alive(&c);
            write_all(&c, step);
        }
    }
    // Every key written reads back through every node.
    for i in 0..3 {
        let gets: Vec<String> = (0..written).map(|k| format!("get rot-{k}")).collect();
        let gets: Vec<&str> = gets.iter().map(String::as_str).collect();
        let out = c.client(i, &gets);
        assert_eq!(out.status, 0, "{out:?}");
        for (k, r) in out.results.iter().enumerate() {
            assert_eq!(
                r["values"].as_array().map(Vec::len),
                Some(1),
                "rot-{k}: {r}"
            );
        }
    }
    let old_key = ClusterKey::derive(old.as_bytes());
    for n in &c.nodes {
        let e = refusal(n.port, Hello::Peer(Some(old_key.clone())))
            .unwrap_or_else(|| panic!("{} still takes the old secret", n.id));
        assert!(e.contains("does not hold the cluster secret"), "{e}");
    }
    logs_hold_none_of(&c, &[&old, &new]);
}
