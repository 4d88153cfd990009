//! In-process cluster tests: real nodes as tasks on 127.0.0.1:0, driven through
//! the client library. They exercise the request path (quorums, sloppy quorum,
//! read repair, membership catch-up) without process management.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{wait_for_async, InProcess};
use dynamo::ring::Ring;
use dynamo::vclock::VersionVector;
use dynamo::Error;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Blind puts of `value` to keys `PREFIX{i}` for each `i` of `range`, through
/// `client`; each must be acknowledged.
async fn put_range(
    client: &dynamo::client::Client,
    prefix: &str,
    range: std::ops::Range<usize>,
    value: &str,
) {
    for i in range {
        client
            .put(format!("{prefix}{i}"), VersionVector::new(), b(value))
            .await
            .unwrap();
    }
}

/// A node-to-node connection to `node` and the addressee naming it.
async fn node_conn(
    node: &dynamo::types::NodeId,
) -> (dynamo::rpc::Connection, dynamo::rpc::Addressee) {
    let conn = dynamo::rpc::connect(node, Duration::from_secs(2))
        .await
        .unwrap();
    let to = dynamo::rpc::Addressee {
        node: node.clone(),
        identity: None,
        from: None,
    };
    (conn, to)
}

fn strs(values: &[Bytes]) -> Vec<String> {
    let mut v: Vec<String> = values
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_blind_puts_make_siblings() {
    let c = InProcess::start(3, (3, 2, 2)).await;
    let cl = c.client(1).await;
    let w1 = cl
        .put("k".into(), VersionVector::new(), b("v1"))
        .await
        .unwrap();
    assert!(w1.acks.len() >= 2);
    assert_eq!(strs(&w1.values), vec!["v1"]);
    let w2 = cl
        .put("k".into(), VersionVector::new(), b("v2"))
        .await
        .unwrap();
    // The second blind put does not replace the first: its answer shows both,
    // with the context that covers them.
    assert_eq!(strs(&w2.values), vec!["v1", "v2"]);
    assert!(w2.context.descends(&w1.context));
    let r = cl.get("k".into()).await.unwrap();
    assert_eq!(strs(&r.values), vec!["v1", "v2"]);
    let w3 = cl
        .put("k".into(), r.context.clone(), b("v3"))
        .await
        .unwrap();
    let r = c.client(2).await.get("k".into()).await.unwrap();
    assert_eq!(strs(&r.values), vec!["v3"]);
    // A put with the context it was answered replaces exactly that write.
    cl.put("k".into(), w3.context, b("v4")).await.unwrap();
    let r = cl.get("k".into()).await.unwrap();
    assert_eq!(strs(&r.values), vec!["v4"]);
    cl.delete("k".into(), r.context).await.unwrap();
    let r = cl.get("k".into()).await.unwrap();
    assert!(r.values.is_empty());
    assert!(!r.context.is_empty(), "a deleted key keeps a context");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_fixes_a_replica_that_missed_a_write() {
    let mut c = InProcess::start(3, (3, 2, 2)).await;
    c.stop(2).await;
    let cl = c.client(0).await;
    cl.put("rr".into(), VersionVector::new(), b("x"))
        .await
        .unwrap();
    c.restart(2).await;
    // N = 3 on 3 nodes: there is no stand-in, so no hint; node 2 missed the write
    // and only read repair can bring it.
    let raw = dynamo::rpc::connect(&c.ids[2], Duration::from_secs(2))
        .await
        .unwrap()
        .client();
    let id2 = c.ids[2].clone();
    let held = |raw: dynamo::rpc::NodeClient| {
        let id2 = id2.clone();
        async move {
            let obj = raw
                .read_replica(
                    dynamo::rpc::context(Duration::from_secs(2)),
                    dynamo::rpc::Addressee {
                        node: id2,
                        identity: None,
                        from: None,
                    },
                    "rr".into(),
                )
                .await
                .ok()?
                .ok()?;
            Some(strs(&obj.values().cloned().collect::<Vec<_>>()))
        }
    };
    assert_eq!(held(raw.clone()).await, Some(vec![]));
    // Read through the node that misses the write: R = 2 can be met without it,
    // but its stale answer is repaired after the reply.
    let r = cl.get("rr".into()).await.unwrap();
    assert_eq!(strs(&r.values), vec!["x"]);
    wait_for_async("node 2 to be repaired", Duration::from_secs(15), || {
        let raw = raw.clone();
        async move {
            let _ = c_get(&raw).await;
            (held(raw).await? == vec!["x"]).then_some(())
        }
    })
    .await;
    c.shutdown().await;
}

/// A get coordinated by the node behind `raw` (which asks every replica).
async fn c_get(raw: &dynamo::rpc::NodeClient) -> Option<()> {
    raw.read(dynamo::rpc::context(Duration::from_secs(2)), "rr".into())
        .await
        .ok()?
        .ok()?;
    Some(())
}

/// Waits until the node behind `cl` shows every node of `ids` as down.
async fn wait_down(cl: &dynamo::client::Client, ids: &[dynamo::types::NodeId]) {
    wait_for_async(
        "the failure detector to hold nodes down",
        Duration::from_secs(10),
        || async {
            let s = cl.status().await.ok()?;
            ids.iter()
                .all(|id| {
                    s.nodes
                        .iter()
                        .any(|n| n.id == *id && n.state == dynamo::rpc::NodeState::Down)
                })
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_quorum_uses_stand_ins_and_fails_below_w() {
    let mut c = InProcess::start(4, (3, 2, 2)).await;
    // Find a key whose preference list excludes node 0, then stop two of its replicas.
    let state = c.client(0).await.status().await.unwrap();
    assert_eq!(state.nodes.len(), 4);
    c.stop(2).await;
    c.stop(3).await;
    let cl = c.client(0).await;
    // A forward sent in the instant a node closes its connections has an
    // unknown outcome (and is reported so); once node 0's failure detector
    // holds them down it routes around them.
    wait_down(&cl, &[c.ids[2].clone(), c.ids[3].clone()]).await;
    for i in 0..20 {
        let key = format!("key{i}");
        cl.put(key.clone(), VersionVector::new(), b("v"))
            .await
            .unwrap();
        let r = cl.get(key).await.unwrap();
        assert_eq!(strs(&r.values), vec!["v"]);
    }
    c.stop(1).await;
    wait_down(&cl, &c.ids[1..4]).await;
    let e = cl
        .put("k".into(), VersionVector::new(), b("v"))
        .await
        .unwrap_err();
    match &e {
        Error::WriteQuorum {
            needed,
            acked,
            failures,
        } => {
            assert_eq!((*needed, *acked), (2, 1), "{e}");
            assert!(failures.len() >= 2, "{e}");
        }
        other => panic!("expected a quorum error, got {other}"),
    }
    assert!(
        e.to_string()
            .starts_with("write quorum not reached: 1 of 2 acks ("),
        "{e}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_down_during_a_change_catches_up() {
    let mut c = InProcess::start(3, (2, 1, 1)).await;
    c.stop(2).await;
    let r = c
        .client(0)
        .await
        .remove_node(c.ids[1].clone())
        .await
        .unwrap();
    assert_eq!(r.unreached, vec![c.ids[2].clone()]);
    let epoch = r.epoch;
    c.restart(2).await;
    let cl = c.client(2).await;
    wait_for_async("node 2 to learn the ring", Duration::from_secs(15), || {
        let cl = &cl;
        async move {
            let s = cl.status().await.ok()?;
            (s.epoch > epoch && s.transition.is_none()).then_some(())
        }
    })
    .await;
    let s = cl.status().await.unwrap();
    assert_eq!(s.nodes.len(), 2);
    // A non-leader refuses membership changes and names the leader.
    let e = cl.add_node(c.ids[1].clone()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("not the leader: the leader is {}", c.ids[0])
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preference_lists_agree_with_the_library_ring() {
    let c = InProcess::start(5, (3, 2, 2)).await;
    let cl = c.client(0).await;
    let w = cl
        .put("pl".into(), VersionVector::new(), b("v"))
        .await
        .unwrap();
    let status = cl.status().await.unwrap();
    let state = dynamo::ring::RingState {
        epoch: status.epoch,
        leader: status.leader.clone(),
        members: status.nodes.iter().map(|n| n.id.clone()).collect(),
        replication: status.replication,
        tokens_per_node: dynamo::ring::DEFAULT_TOKENS_PER_NODE,
        identities: Default::default(),
        transition: None,
        incarnations: Default::default(),
        departed: Default::default(),
        users: Default::default(),
        buckets: Default::default(),
    };
    let pref = Ring::new(state).preference_list(b"pl");
    assert!(pref.contains(&w.coordinator), "{pref:?} {}", w.coordinator);
    for a in &w.acks {
        // Acks come from replicas (every node is up, so no stand-ins).
        assert!(pref.contains(a), "{a} not in {pref:?}");
    }
    assert_eq!(w.hinted, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_under_another_address_does_not_count_as_it() {
    let mut c = InProcess::start(3, (3, 2, 2)).await;
    // Node 2 comes back on its data directory and port, but as localhost:PORT;
    // with node 1 down, a write needs node 2's ack as 127.0.0.1:PORT.
    c.stop(1).await;
    c.stop(2).await;
    c.restart_as(2, "localhost").await;
    let cl = c.client(0).await;
    let e = cl
        .put("k".into(), VersionVector::new(), b("v"))
        .await
        .unwrap_err();
    match &e {
        Error::WriteQuorum {
            acked, failures, ..
        } => {
            assert_eq!(*acked, 1, "{e}");
            let f = failures
                .iter()
                .find(|f| f.node == c.ids[2])
                .unwrap_or_else(|| panic!("{e}"));
            assert!(
                f.reason.contains("not the member") && f.reason.contains("localhost"),
                "{e}"
            );
        }
        other => panic!("expected a quorum error, got {other}"),
    }
    // Called directly: refused as a stranger, by address and by identity.
    let raw = dynamo::rpc::connect(&c.ids[2], Duration::from_secs(2))
        .await
        .unwrap()
        .client();
    let as_member = dynamo::rpc::Addressee {
        node: c.ids[2].clone(),
        identity: None,
        from: None,
    };
    // Its own address, but the identity of another data directory.
    let other_dir = dynamo::rpc::Addressee {
        node: dynamo::types::NodeId::new("localhost", c.ids[2].port()).unwrap(),
        identity: Some(uuid::Uuid::new_v4()),
        from: None,
    };
    for to in [as_member, other_dir] {
        let e = raw
            .read_replica(dynamo::rpc::context(Duration::from_secs(2)), to, "k".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, Error::Stranger { .. }), "{e}");
    }
    c.shutdown().await;
}

/// A replica applies each write of a batch on its own and answers them in
/// order: one bad write does not fail the others, and only good ones land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_batch_answers_each_write_in_order() {
    use dynamo::rpc::{self, Addressee, ReplicaWrite};
    use dynamo::vclock::{Content, Object};
    use std::sync::Arc;

    let c = InProcess::start(2, (2, 1, 1)).await;
    let epoch = c.client(0).await.status().await.unwrap().epoch;
    assert!(epoch > 1, "the ring changed at least once: {epoch}");
    let mut object = Object::new();
    object
        .update(&c.ids[0], &VersionVector::new(), Content::Value(b("v")), 0)
        .unwrap();
    let object = Arc::new(object);
    let w = |epoch: u64, key: String, hint_for: Option<&str>| ReplicaWrite {
        epoch,
        key,
        object: object.clone(),
        hint_for: hint_for.map(|h| h.parse().unwrap()),
    };
    let writes = vec![
        w(epoch, "good".into(), None),
        w(epoch, "k".repeat(5000), None),
        w(epoch - 1, "stale".into(), None),
        w(0, "handed-off".into(), None),
    ];
    let (conn, mut to) = node_conn(&c.ids[1]).await;
    // A write into a node names its sender, which must be in the receiver's
    // ring: unnamed, or a node outside the ring, the batch is refused whole.
    let stranger = rpc::Sender {
        node: "127.0.0.1:1".parse().unwrap(),
        identity: uuid::Uuid::new_v4(),
        epoch,
    };
    for from in [None, Some(stranger)] {
        to.from = from;
        let out = conn
            .client()
            .replicate_batch(
                rpc::context(Duration::from_secs(5)),
                to.clone(),
                vec![w(epoch, "fenced".into(), None)],
            )
            .await
            .unwrap();
        assert!(matches!(out, Err(Error::Fenced { .. })), "{out:?}");
    }
    // As the member node 0 (the leader, its identity its Raft id), each
    // write is judged alone.
    let identity = uuid::Uuid::from_u128(c.handles[0].as_ref().unwrap().consensus().id);
    to.from = Some(rpc::Sender {
        node: c.ids[0].clone(),
        identity,
        epoch,
    });
    let answers = conn
        .client()
        .replicate_batch(rpc::context(Duration::from_secs(5)), to.clone(), writes)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert!(answers[0].is_ok(), "{answers:?}");
    assert!(
        matches!(answers[1], Err(Error::KeyTooLarge { .. })),
        "{answers:?}"
    );
    assert!(
        matches!(answers[2], Err(Error::StaleRing { .. })),
        "{answers:?}"
    );
    assert!(answers[3].is_ok(), "{answers:?}");
    let held = |key: &'static str| {
        let conn = &conn;
        let to = to.clone();
        async move {
            conn.client()
                .read_replica(rpc::context(Duration::from_secs(2)), to, key.into())
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(held("good").await.values().count(), 1);
    assert_eq!(held("handed-off").await.values().count(), 1);
    assert!(held("stale").await.is_empty(), "a refused write landed");
    assert!(held("fenced").await.is_empty(), "a fenced write landed");
    // A batch meant for another node is refused whole.
    let wrong = Addressee {
        node: c.ids[0].clone(),
        identity: None,
        from: None,
    };
    let out = conn
        .client()
        .replicate_batch(
            rpc::context(Duration::from_secs(2)),
            wrong,
            vec![w(epoch, "x".into(), None)],
        )
        .await
        .unwrap();
    assert!(matches!(out, Err(Error::Stranger { .. })), "{out:?}");
}

/// A batch of client reads (`read_batch`, the client's read outbox) is
/// answered read by read, in order: a read under another ring or of a bad key
/// fails alone, and a batch meant for another node is refused whole; it can
/// be no longer than a replica batch.
#[tokio::test]
async fn a_read_batch_answers_each_read_in_order() {
    use dynamo::rpc::{self, Addressee, ReplicaRead};

    let c = InProcess::start(2, (2, 1, 1)).await;
    let client = c.client(0).await;
    client
        .put("there".into(), VersionVector::new(), b("v"))
        .await
        .unwrap();
    let epoch = client.status().await.unwrap().epoch;
    let r = |epoch: u64, key: String| ReplicaRead {
        epoch,
        key,
        count: false,
    };
    let reads = vec![
        r(epoch, "there".into()),
        r(epoch + 1, "there".into()),
        r(epoch, "k".repeat(5000)),
        r(epoch, "absent".into()),
    ];
    let (conn, to) = node_conn(&c.ids[1]).await;
    let answers = conn
        .client()
        .read_batch(rpc::context(Duration::from_secs(5)), to.clone(), reads)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answers.len(), 4, "{answers:?}");
    let values =
        |i: usize| -> Vec<Bytes> { answers[i].as_ref().unwrap().values().cloned().collect() };
    assert_eq!(values(0), vec![b("v")], "{answers:?}");
    assert!(
        matches!(answers[1], Err(Error::StaleRing { .. })),
        "{answers:?}"
    );
    assert!(
        matches!(answers[2], Err(Error::KeyTooLarge { .. })),
        "{answers:?}"
    );
    assert!(values(3).is_empty(), "{answers:?}");

    let too_many = (0..=dynamo::outbox::MAX_ITEMS)
        .map(|i| r(epoch, format!("k{i}")))
        .collect();
    let out = conn
        .client()
        .read_batch(rpc::context(Duration::from_secs(2)), to, too_many)
        .await
        .unwrap();
    assert!(matches!(out, Err(Error::InvalidInput { .. })), "{out:?}");
    let wrong = Addressee {
        node: c.ids[0].clone(),
        identity: None,
        from: None,
    };
    let out = conn
        .client()
        .read_batch(
            rpc::context(Duration::from_secs(2)),
            wrong,
            vec![r(epoch, "there".into())],
        )
        .await
        .unwrap();
    assert!(matches!(out, Err(Error::Stranger { .. })), "{out:?}");
}

/// A batch of client writes (`write_batch`, the client's write outbox) is
/// coordinated write by write and answered in order: a bad key fails alone,
/// two blind puts of one key in the same batch both survive as siblings, and a
/// batch longer than the outbox sends is refused whole.
#[tokio::test]
async fn a_write_batch_answers_each_write_in_order() {
    use dynamo::rpc::{self, WriteRequest};
    use dynamo::vclock::Content;

    let c = InProcess::start(2, (2, 2, 1)).await;
    let w = |key: String, value: &'static str| WriteRequest {
        key,
        context: VersionVector::new(),
        content: Content::Value(b(value)),
        forwarded: false,
    };
    let writes = vec![
        w("one".into(), "a"),
        w("k".repeat(5000), "x"),
        w("two".into(), "b"),
        w("one".into(), "c"),
    ];
    let (conn, _) = node_conn(&c.ids[1]).await;
    let answers = conn
        .client()
        .write_batch(rpc::context(Duration::from_secs(5)), writes)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answers.len(), 4, "{answers:?}");
    let reply = |i: usize| answers[i].as_ref().unwrap();
    assert_eq!(reply(0).key, "one");
    assert_eq!(reply(2).key, "two");
    assert_eq!(reply(2).values, vec![b("b")]);
    assert_eq!(reply(3).key, "one");
    assert!(
        matches!(answers[1], Err(Error::KeyTooLarge { .. })),
        "{answers:?}"
    );
    let client = c.client(0).await;
    let one = client.get("one".into()).await.unwrap();
    assert_eq!(strs(&one.values), vec!["a", "c"], "{one:?}");

    let too_many = (0..=dynamo::outbox::MAX_ITEMS)
        .map(|i| w(format!("k{i}"), "v"))
        .collect();
    let out = conn
        .client()
        .write_batch(rpc::context(Duration::from_secs(2)), too_many)
        .await
        .unwrap();
    assert!(matches!(out, Err(Error::InvalidInput { .. })), "{out:?}");
    assert!(client.get("k0".into()).await.unwrap().values.is_empty());
}

/// The ring outlives its leader (issue 25): five members, the leader's node
/// stops for good. Within 10 s every live member's `status` names the same
/// new leader, elected by the ring's Raft group; that leader removes the dead
/// one and the change settles; writes and reads go on throughout, and a
/// member that is not the leader refuses ring changes naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_outlives_its_leader() {
    let mut c = InProcess::start(5, (3, 2, 2)).await;
    let consensus = |c: &InProcess, i: usize| c.handles[i].as_ref().unwrap().consensus().clone();
    wait_for_async("five voters", Duration::from_secs(30), || {
        let n = consensus(&c, 0).voters().len();
        async move { (n == 5).then_some(()) }
    })
    .await;
    let writer = c.client(1).await;
    put_range(&writer, "k", 0..50, "before").await;
    let old = c.ids[0].clone();
    let stopped = tokio::time::Instant::now();
    c.stop(0).await;
    let leader = wait_for_async(
        "every live member names one new leader",
        Duration::from_secs(10),
        || {
            let (c, old) = (&c, &old);
            async move {
                let mut named = Vec::new();
                for i in 1..5 {
                    named.push(c.client(i).await.status().await.ok()?.leader);
                }
                let first = named[0].clone();
                (first != *old && named.iter().all(|l| *l == first)).then_some(first)
            }
        },
    )
    .await;
    eprintln!("{leader} leads after {:?}", stopped.elapsed());
    let at = c.ids.iter().position(|id| *id == leader).unwrap();
    let other = (1..5).find(|i| *i != at).unwrap();
    match c.client(other).await.remove_node(old.clone()).await {
        Err(Error::NotLeader { leader: named }) => assert_eq!(named, leader),
        other => panic!("a member that does not lead: {other:?}"),
    }
    let reply = c.client(at).await.remove_node(old.clone()).await.unwrap();
    assert!(reply.leaving.contains(&old), "{reply:?}");
    put_range(&writer, "k", 50..80, "during").await;
    wait_for_async("the removal settles", Duration::from_secs(60), || {
        let (c, old) = (&c, &old);
        async move {
            let s = c.client(at).await.status().await.ok()?;
            (s.transition.is_none() && !s.nodes.iter().any(|n| n.id == *old)).then_some(())
        }
    })
    .await;
    for i in 0..80 {
        let r = c
            .client(1 + i % 4)
            .await
            .get(format!("k{i}"))
            .await
            .unwrap();
        assert_eq!(r.values.len(), 1, "k{i}: {:?}", r.values);
    }
    c.shutdown().await;
}

/// Data directories from before the ring had consensus (a ring saved, no Raft
/// log or vote) are upgraded in place: the leader founds the group with the
/// ring it has, its epoch unchanged, the members become voters, the data is
/// all there and the ring can change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_from_before_consensus_are_upgraded_in_place() {
    use dynamo::config::FsyncMode;
    use dynamo::storage::Storage;

    let mut c = InProcess::start(3, (3, 2, 2)).await;
    let writer = c.client(1).await;
    put_range(&writer, "u", 0..30, "kept").await;
    let before = c.client(0).await.status().await.unwrap().epoch;
    for i in 0..3 {
        c.stop(i).await;
    }
    // What an earlier version left: the same directories without the trees
    // Raft keeps its log, vote and state machine in.
    for i in 0..3 {
        let dir = c.dir.path().join(format!("n{i}"));
        let storage = wait_for_async("the store to be free", Duration::from_secs(10), || {
            let opened = Storage::open(Some(&dir), FsyncMode::Batch).ok();
            async move { opened }
        })
        .await;
        let (log, state) = storage.raft_trees().unwrap();
        log.clear().unwrap();
        state.clear().unwrap();
        storage.durable().await.unwrap();
    }
    for i in 0..3 {
        c.restart(i).await;
    }
    let s = wait_for_async("three voters", Duration::from_secs(30), || {
        let c = &c;
        async move {
            let s = c.client(0).await.status().await.ok()?;
            let voting = s
                .nodes
                .iter()
                .filter(|n| matches!(n.role.as_deref(), Some("leader" | "voter")))
                .count();
            (voting == 3).then_some(s)
        }
    })
    .await;
    assert_eq!(s.epoch, before, "{s:?}");
    assert_eq!(s.leader, c.ids[0]);
    assert!(s.term >= 1, "{s:?}");
    for i in 0..30 {
        let r = c.client(2).await.get(format!("u{i}")).await.unwrap();
        assert_eq!(r.values.len(), 1, "u{i}: {:?}", r.values);
    }
    let reply = c
        .client(0)
        .await
        .remove_node(c.ids[2].clone())
        .await
        .unwrap();
    assert_eq!(reply.leaving, vec![c.ids[2].clone()]);
    c.shutdown().await;
}
