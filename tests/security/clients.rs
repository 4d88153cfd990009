//! Tokens and roles, through the real client and over HTTP.

use std::time::Duration;

use super::common::{secrets, wait_for, Cluster};
use super::{client_as, curl_as, logs_hold_none_of, token_file};

/// The error of a client run's first result.
fn error_of(run: &super::common::ClientRun) -> String {
    run.results
        .first()
        .and_then(|r| r["error"].as_str())
        .unwrap_or("")
        .to_string()
}

/// No token, a wrong one, a readonly one writing or changing the ring, a
/// readwrite one changing the ring or listing users: each refused with
/// `unauthorized:` or `forbidden:` and exit status 1, over the RPC port and
/// HTTP (401 and 403); each role does what it may. Users are added at any
/// node, rotated (a second credential, then the first removed), and a
/// removed token stops working on every node.
#[test]
fn clients_are_held_to_their_tokens_and_roles() {
    let c = Cluster::ring(3, (3, 2, 2));
    let dir = tempfile::tempdir().unwrap();
    let admin = secrets().admin_token_file.clone();
    let (p0, p2) = (c.nodes[0].port, c.nodes[2].port);

    // No token, a wrong token.
    let none = client_as(p2, None, &["get k"]);
    assert_eq!(none.status, 1, "{none:?}");
    assert!(
        error_of(&none).starts_with("unauthorized: this ring requires a token"),
        "{none:?}"
    );
    let wrong = token_file(dir.path(), "wrong", "dyn_not_a_token_this_ring_knows");
    let bad = client_as(p2, Some(&wrong), &["get k"]);
    assert_eq!(bad.status, 1);
    assert_eq!(
        error_of(&bad),
        "unauthorized: the token is not known to this ring"
    );

    // Users, added at a member that is not the leader (it passes the
    // command on), tokens printed once.
    let add = client_as(
        p2,
        Some(&admin),
        &["user add reader readonly", "user add writer readwrite"],
    );
    assert_eq!(add.status, 0, "{add:?}");
    let reader = add.results[0]["token"].as_str().unwrap().to_string();
    let writer = add.results[1]["token"].as_str().unwrap().to_string();
    assert_eq!(add.results[0]["user"], "reader");
    assert_eq!(add.results[0]["role"], "readonly");
    let reader_f = token_file(dir.path(), "reader", &reader);
    let writer_f = token_file(dir.path(), "writer", &writer);
    // Known on every node once the ring carrying them arrives.
    for n in &c.nodes {
        wait_for("the users on every node", Duration::from_secs(10), || {
            (client_as(n.port, Some(&reader_f), &["status"]).status == 0).then_some(())
        });
    }
    let dup = client_as(p0, Some(&admin), &["user add reader admin"]);
    assert!(error_of(&dup).contains("exists"), "{dup:?}");

    // readwrite: puts and gets; not the ring, not users.
    let w = client_as(p2, Some(&writer_f), &["put k {} by-writer", "get k"]);
    assert_eq!(w.status, 0, "{w:?}");
    let w = client_as(p0, Some(&writer_f), &["add-node 127.0.0.1:1"]);
    assert_eq!(w.status, 1);
    assert_eq!(
        error_of(&w),
        "forbidden: role readwrite may not change the ring (it needs admin)"
    );
    let w = client_as(p0, Some(&writer_f), &["user list"]);
    assert!(error_of(&w).starts_with("forbidden:"), "{w:?}");

    // readonly: gets; not puts, deletes or ring changes.
    let r = client_as(p2, Some(&reader_f), &["get k"]);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.results[0]["values"][0], "by-writer");
    for cmd in [
        "put k {} by-reader",
        "delete k {}",
        &format!("remove-node {}", c.nodes[2].id),
    ] {
        let r = client_as(p0, Some(&reader_f), &[cmd]);
        assert_eq!(r.status, 1, "{cmd}: {r:?}");
        assert!(
            error_of(&r).starts_with("forbidden: role readonly may not"),
            "{cmd}: {r:?}"
        );
    }
    let members = c.status(0).unwrap()["nodes"].as_array().unwrap().len();
    assert_eq!(members, 3, "a refused remove-node changed the ring");

    // The same over HTTP.
    let h = c.nodes[1].http;
    let (code, body) = curl_as(h, None, &[], "/kv/k");
    assert_eq!(code, 401, "{body}");
    let (missing, _) = curl_as(h, None, &[], "/kv/never-written");
    assert_eq!(
        missing, 401,
        "an unauthorized caller learns whether a key exists"
    );
    assert_eq!(curl_as(h, Some("dyn_wrong"), &[], "/kv/k").0, 401);
    assert_eq!(curl_as(h, None, &[], "/metrics").0, 401);
    assert_eq!(curl_as(h, Some(&reader), &[], "/metrics").0, 200);
    assert_eq!(
        curl_as(h, Some(&reader), &[], "/kv/k"),
        (200, "by-writer".to_string())
    );
    let (code, body) = curl_as(h, Some(&reader), &["-X", "PUT", "--data", "x"], "/kv/k");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("forbidden: role readonly may not put or delete"),
        "{body}"
    );
    let (code, _) = curl_as(h, Some(&writer), &["-X", "PUT", "--data", "y"], "/kv/h");
    assert_eq!(code, 200);
    let (code, body) = curl_as(h, Some(&writer), &["-X", "DELETE"], "/ring/transition");
    assert_eq!(code, 403, "{body}");
    assert_eq!(curl_as(h, None, &[], "/").0, 200, "the page itself is open");
    assert_eq!(curl_as(h, None, &[], "/openapi.json").0, 200);

    // Rotating the writer's credential: a second one, then the first goes.
    let add = client_as(p0, Some(&admin), &["user add writer-2 readwrite"]);
    let writer2 = add.results[0]["token"].as_str().unwrap().to_string();
    let writer2_f = token_file(dir.path(), "writer2", &writer2);
    wait_for(
        "the new credential everywhere",
        Duration::from_secs(10),
        || {
            c.nodes
                .iter()
                .all(|n| client_as(n.port, Some(&writer2_f), &["put r {} v2"]).status == 0)
                .then_some(())
        },
    );
    assert_eq!(client_as(p2, Some(&writer_f), &["put r {} v1"]).status, 0);
    let rm = client_as(p2, Some(&admin), &["user remove writer"]);
    assert_eq!(rm.status, 0, "{rm:?}");
    assert_eq!(rm.results[0]["removed"], true);
    for n in &c.nodes {
        wait_for(
            "the removed token refused everywhere",
            Duration::from_secs(10),
            || {
                let out = client_as(n.port, Some(&writer_f), &["get r"]);
                (out.status == 1 && error_of(&out).starts_with("unauthorized:")).then_some(())
            },
        );
        assert_eq!(client_as(n.port, Some(&writer2_f), &["get r"]).status, 0);
    }
    let list = client_as(p2, Some(&admin), &["user list"]);
    assert_eq!(
        list.results[0]["users"],
        serde_json::json!([{"user":"reader","role":"readonly"},{"user":"writer-2","role":"readwrite"}])
    );
    assert!(
        !list.stdout.contains("dyn_"),
        "user list shows a token: {}",
        list.stdout
    );
    logs_hold_none_of(&c, &[&reader, &writer, &writer2]);
}

/// `--open-metrics` leaves /metrics readable without a token, and only it.
#[test]
fn open_metrics_opens_only_the_metrics() {
    let c = Cluster::spawn_with(1, (1, 1, 1), &["--open-metrics"]);
    let h = c.nodes[0].http;
    let (code, body) = curl_as(h, None, &[], "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("dynamo_"), "{body}");
    assert_eq!(curl_as(h, None, &[], "/status").0, 401);
}

/// `--insecure`: said at start-up and in `status`; no token needed; users
/// refused, since nothing would check them.
#[test]
fn insecure_mode_says_so_and_checks_nothing() {
    let c = Cluster::spawn_with(1, (1, 1, 1), &["--insecure"]);
    let p = c.nodes[0].port;
    let out = client_as(p, None, &["put k {} v", "status"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.results[1]["secure"], false);
    let human = super::common::run_client_human(p, &["status"]);
    assert!(human.contains("INSECURE"), "{human}");
    let out = client_as(p, None, &["user add a readonly"]);
    assert!(error_of(&out).contains("--insecure"), "{out:?}");
    assert!(c.log(0).contains("INSECURE"), "{}", c.log(0));
    assert_eq!(curl_as(c.nodes[0].http, None, &[], "/kv/k").0, 200);
    // A secured node says secure:true.
    let s = Cluster::spawn(1, (1, 1, 1));
    assert_eq!(s.status(0).unwrap()["secure"], true);
}
