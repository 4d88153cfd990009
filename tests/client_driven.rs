//! Gets coordinated by the client library itself (`dynamo::client`): real
//! `dynamo` processes on loopback, the library's `Client` held across a ring
//! change, and each node's `/metrics` read over HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{run_script, wait_for, Cluster};
use dynamo::client::Client;

/// `dynamo_requests_total{op="get",outcome="ok"}` of the node serving HTTP on
/// `port` (0 before its first get).
fn gets_counted(port: u16) -> f64 {
    counted(port, "get")
}

/// `dynamo_requests_total{op=OP,outcome="ok"}` of the node serving HTTP on
/// `port` (0 before the first).
fn counted(port: u16, op: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        format!(
            "GET /metrics HTTP/1.0\r\nHost: x\r\n{}\r\n\r\n",
            common::bearer()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                r#"dynamo_requests_total{{op="{op}",outcome="ok"}} "#
            ))
            .map(str::to_string)
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// With N=1 a key lives on one node, so a client that read a moved key from
/// the node it left would see nothing: the replicas refuse a get placed under
/// another ring, and the client asks its node and learns the new ring.
#[test]
fn a_client_holding_an_old_ring_reads_every_moved_key_from_its_new_owner() {
    let c = Cluster::ring_with(3, 2, (1, 1, 1), &[]);
    let keys: Vec<String> = (0..80).map(|i| format!("moving{i}")).collect();
    let puts: Vec<String> = keys.iter().map(|k| format!("put {k} {{}} v-{k}")).collect();
    let out = run_script(c.nodes[0].port, &puts, Duration::from_secs(60));
    assert!(out.results.iter().all(|r| r["ok"] == true), "{out:?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Client::connect_with(
            c.nodes[0].id.parse().unwrap(),
            &common::admin(),
        ))
        .unwrap();
    let read_all = |when: &str| {
        for k in &keys {
            let r = rt
                .block_on(client.get(k.clone()))
                .unwrap_or_else(|e| panic!("get {k} {when}: {e}"));
            assert_eq!(
                r.values,
                vec![bytes::Bytes::from(format!("v-{k}"))],
                "get {k} {when}: answered by {:?}",
                r.replicas
            );
        }
    };
    read_all("before the change");

    // Node 2 joins; once the ring settles its old owners drop the moved keys.
    c.add_settled(2);
    let held = wait_for("the moved keys dropped", Duration::from_secs(60), || {
        let s = c.status(0)?;
        let held: Vec<u64> = (0..3)
            .map(|i| common::node_status(&s, &c.nodes[i].id)["keys"].as_u64())
            .collect::<Option<_>>()?;
        (held.iter().sum::<u64>() == keys.len() as u64).then_some(held)
    });
    assert!(held[2] > 0, "nothing moved to the new node: {held:?}");

    // The client still holds the ring of two nodes.
    read_all("after the change, with the old ring");
    read_all("after the change, with the new ring");

    // A get is counted once: by the key's replica when the client's node is
    // not one, and the client's node counts nothing for it.
    let on_2 = keys
        .iter()
        .find(|k| {
            let r = rt.block_on(client.locate(k.to_string())).unwrap();
            r.replicas == vec![c.nodes[2].id.parse().unwrap()]
        })
        .expect("a key on node 2");
    let (home, owner) = (gets_counted(c.nodes[0].http), gets_counted(c.nodes[2].http));
    let r = rt.block_on(client.get(on_2.clone())).unwrap();
    assert_eq!(r.replicas, vec![c.nodes[2].id.parse().unwrap()]);
    assert_eq!(gets_counted(c.nodes[0].http), home, "the client's node");
    assert_eq!(
        gets_counted(c.nodes[2].http),
        owner + 1.0,
        "the key's replica"
    );
}

/// A client of node 0, and one of node 1 made beside it.
fn first_and_beside(rt: &tokio::runtime::Runtime, c: &Cluster) -> (Client, Client) {
    let first = rt
        .block_on(Client::connect_with(
            c.nodes[0].id.parse().unwrap(),
            &common::admin(),
        ))
        .unwrap();
    let beside = rt
        .block_on(Client::connect_beside(
            c.nodes[1].id.parse().unwrap(),
            &first,
        ))
        .unwrap();
    (first, beside)
}

/// A client made beside another shares its ring and replica connections: its
/// gets are coordinated by the client too (answered and counted by the key's
/// replica, not by its own node), and its writes go to its own node.
#[test]
fn a_client_beside_another_reads_directly_through_the_shared_ring() {
    let c = Cluster::ring_with(3, 3, (1, 1, 1), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (first, beside) = first_and_beside(&rt, &c);
    assert_eq!(beside.node().to_string(), c.nodes[1].id);
    // A key whose one replica is neither client's node.
    let key = (0..200)
        .map(|i| format!("beside{i}"))
        .find(|k| {
            let r = rt.block_on(first.locate(k.clone())).unwrap();
            r.replicas == vec![c.nodes[2].id.parse().unwrap()]
        })
        .expect("a key on node 2");
    let w = rt
        .block_on(beside.put(key.clone(), Default::default(), "v".into()))
        .unwrap();
    assert_eq!(w.acks, vec![c.nodes[2].id.parse().unwrap()]);

    let before: Vec<f64> = (0..3).map(|i| gets_counted(c.nodes[i].http)).collect();
    for client in [&beside, &first] {
        let r = rt.block_on(client.get(key.clone())).unwrap();
        assert_eq!(r.values, vec![bytes::Bytes::from("v")]);
        assert_eq!(r.replicas, vec![c.nodes[2].id.parse().unwrap()]);
    }
    let after: Vec<f64> = (0..3).map(|i| gets_counted(c.nodes[i].http)).collect();
    assert_eq!(
        (after[0], after[1], after[2]),
        (before[0], before[1], before[2] + 2.0),
        "each get counted once, by the replica"
    );
}

/// Puts issued at once by clients beside each other travel to each node in
/// batches (`write_batch`); each put still gets its own answer, and each node
/// counts each put it received once.
#[test]
fn concurrent_puts_through_the_write_outbox_each_get_their_own_answer() {
    let c = Cluster::ring_with(3, 3, (3, 2, 2), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (first, beside) = first_and_beside(&rt, &c);
    let clients = [&first, &beside];
    let puts = (0..400).map(|i| {
        let client = clients[i % 2];
        async move {
            let key = format!("batched{i}");
            let reply = client
                .put(key.clone(), Default::default(), format!("v{i}").into())
                .await;
            (key, i, reply)
        }
    });
    let replies = rt.block_on(futures::future::join_all(puts));
    for (key, i, reply) in &replies {
        let reply = reply.as_ref().unwrap_or_else(|e| panic!("put {key}: {e}"));
        assert_eq!(&reply.key, key);
        assert_eq!(reply.values, vec![bytes::Bytes::from(format!("v{i}"))]);
        assert!(reply.acks.len() >= 2, "{reply:?}");
    }
    let puts: Vec<f64> = (0..2).map(|n| counted(c.nodes[n].http, "put")).collect();
    assert_eq!((puts[0], puts[1]), (200.0, 200.0));
    for (key, i, _) in replies.iter().step_by(37) {
        let r = rt.block_on(first.get(key.clone())).unwrap();
        assert_eq!(r.values, vec![bytes::Bytes::from(format!("v{i}"))]);
    }
}
