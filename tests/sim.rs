//! The real node code in a simulated cluster (turmoil): every node runs
//! `dynamo::server::start_over` on a simulated host, its connections go through
//! turmoil's network (`dynamo::net`), and tokio's clock is turmoil's, so a
//! partition or a pause is a call in the test and a run is repeatable from its
//! seed. Storage is sled in memory (`--in-memory`): the simulation says nothing
//! about disks (torn writes, lost flushes).
//!
//! Scenarios: a ring of three that writes, reads and rides out a partition
//! (it found that a connection whose packets vanish was never replaced); the
//! stalled leaving node, its messages held on the wire through the settle, the
//! deletes and the tombstones' removal, then released; the dead joiner,
//! aborted and added again (it found that a joiner could be re-added with
//! copies from before deletes the ring had finished); and kv679.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dynamo::config::{Flags, NodeConfig};
use dynamo::net::{BoxStream, Listener, Network};
use dynamo::rpc::{NodeClient, WriteRequest};
use dynamo::types::NodeId;
use dynamo::vclock::{Content, VersionVector};
use futures::future::BoxFuture;

const PORT: u16 = 13337;

/// turmoil's network, as a node dials it.
struct SimNet;

impl Network for SimNet {
    fn dial<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// turmoil's listener, as a node accepts from it.
struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (s, peer) = self.0.accept().await?;
            Ok((Box::new(s) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

fn id(host: &str) -> NodeId {
    NodeId::new(host, PORT).unwrap()
}

/// Runs node `host` (led by `n0`) until the simulation ends.
fn node(sim: &mut turmoil::Sim<'_>, host: &'static str) {
    node_with(sim, host, Flags::default());
}

/// [`node`] with other `flags` (host, port, leader and storage are set here).
fn node_with(sim: &mut turmoil::Sim<'_>, host: &'static str, flags: Flags) {
    sim.host(host, move || {
        let flags = flags.clone();
        async move {
            let config = NodeConfig::from_flags(Flags {
                host: Some(host.to_string()),
                port: Some(PORT),
                leader: Some(id("n0").to_string()),
                in_memory: true,
                ..flags
            })?;
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
            let node = dynamo::server::start_over(
                config,
                Box::new(SimListener(listener)),
                Arc::new(SimNet),
            )
            .await?;
            node.wait().await?;
            Ok(())
        }
    });
}

/// A client of node `host`.
async fn client(host: &str) -> io::Result<NodeClient> {
    let stream = turmoil::net::TcpStream::connect((host, PORT)).await?;
    Ok(NodeClient::new(Default::default(), dynamo::rpc::transport(stream)).spawn())
}

fn ctx() -> tarpc::context::Context {
    dynamo::rpc::context(Duration::from_secs(5))
}

/// Polls `status` at `host` until the ring has `members` and no change runs.
async fn settled(host: &str, members: usize) -> Result<u64, Box<dyn std::error::Error>> {
    let c = client(host).await?;
    for _ in 0..600 {
        if let Ok(Ok(s)) = c.status(ctx()).await {
            if s.transition.is_none() && s.nodes.len() == members {
                return Ok(s.epoch);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the ring at {host} did not settle with {members} members").into())
}

async fn put(host: &str, key: &str, value: &str) -> Result<(), Box<dyn std::error::Error>> {
    let content = Content::Value(bytes::Bytes::copy_from_slice(value.as_bytes()));
    write(host, key, VersionVector::new(), content).await
}

async fn write(
    host: &str,
    key: &str,
    context: VersionVector,
    content: Content,
) -> Result<(), Box<dyn std::error::Error>> {
    let req = WriteRequest {
        key: key.into(),
        context,
        content,
        forwarded: false,
    };
    client(host).await?.write(ctx(), req).await??;
    Ok(())
}

/// Deletes every key of `keys` through `host`, each with the context a get
/// just returned.
async fn delete_all(host: &str, keys: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    for k in keys {
        let seen = client(host).await?.read(ctx(), k.clone()).await??.context;
        write(host, k, seen, Content::Tombstone).await?;
    }
    Ok(())
}

/// Waits until no member (as `host`'s status sees them) keeps a tombstone.
async fn tombstones_gone(host: &str) -> Result<(), Box<dyn std::error::Error>> {
    let c = client(host).await?;
    for _ in 0..600 {
        let s = c.status(ctx()).await??;
        let left: u64 = s
            .nodes
            .iter()
            .map(|n| n.tombstones.unwrap_or(u64::MAX))
            .sum();
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("tombstones still on the members seen from {host}").into())
}

/// Adds `hosts` to the ring led by `n0`, one settled change at a time.
async fn form_ring(hosts: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let leader = loop {
        match client("n0").await {
            Ok(c) if c.status(ctx()).await.is_ok() => break c,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    for (i, host) in hosts.iter().enumerate() {
        loop {
            match leader.add_node(ctx(), id(host)).await? {
                Ok(_) => break,
                Err(e) if e.to_string().contains("does not answer") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        settled("n0", i + 2).await?;
    }
    Ok(())
}

async fn values(host: &str, key: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let r = client(host).await?.read(ctx(), key.into()).await??;
    Ok(r.values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect())
}

#[test]
fn a_simulated_ring_writes_reads_and_rides_out_a_partition() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .simulation_duration(Duration::from_secs(600))
        .build();
    for host in ["n0", "n1", "n2"] {
        node(&mut sim, host);
    }
    sim.client("test", async {
        form_ring(&["n1", "n2"]).await?;
        put("n1", "k", "v1").await?;
        assert_eq!(values("n2", "k").await?, ["v1"]);
        // n2 cut off from the others: W = 2 of n0 and n1 still acknowledge.
        turmoil::partition("n2", "n0");
        turmoil::partition("n2", "n1");
        put("n0", "k2", "v2").await?;
        assert_eq!(values("n1", "k2").await?, ["v2"]);
        turmoil::repair("n2", "n0");
        turmoil::repair("n2", "n1");
        // Anti-entropy (or the read itself) brings n2 the write it missed.
        let mut seen = Err("never read".to_string());
        for _ in 0..100 {
            seen = values("n2", "k2").await.map_err(|e| e.to_string());
            if seen.as_deref() == Ok(&["v2".to_string()][..]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(seen, Ok(vec!["v2".to_string()]));
        Ok(())
    });
    sim.run().unwrap();
}

/// The stalled leaving node, in simulation: `remove-node n4`, and at once every
/// message n4 sends or is sent is held on the wire (it runs on, cut off, with
/// its old ring). The leader settles without it, every key is deleted and the
/// tombstones leave the members. Then the held messages are released: n4's
/// transfer batches, hints and anything else it sent under its old ring land
/// on the members, and must bring nothing back (they are refused: n4 is no
/// longer in their ring). n4 learns it was removed.
#[test]
fn a_held_leaving_node_brings_no_deleted_key_back() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(11)
        .simulation_duration(Duration::from_secs(900))
        .build();
    let fast = Flags {
        tombstone_grace_ms: Some(4500),
        copy_timeout_ms: Some(1000),
        ..Flags::default()
    };
    for host in ["n0", "n1", "n2", "n3", "n4"] {
        node_with(&mut sim, host, fast.clone());
    }
    sim.client("test", async {
        form_ring(&["n1", "n2", "n3", "n4"]).await?;
        let keys: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        for k in &keys {
            put("n0", k, "old").await?;
        }
        let leader = client("n0").await?;
        leader.remove_node(ctx(), id("n4")).await??;
        for other in ["n0", "n1", "n2", "n3", "test"] {
            turmoil::hold("n4", other);
        }
        let epoch = settled("n0", 4).await?;
        delete_all("n0", &keys).await?;
        tombstones_gone("n0").await?;
        for other in ["n0", "n1", "n2", "n3", "test"] {
            turmoil::release("n4", other);
        }
        // n4 learns it was removed; what it sent meanwhile has landed.
        let mut removed = None;
        for _ in 0..300 {
            if let Ok(Ok(s)) = client("n4").await?.status(ctx()).await {
                removed = s.removed_at_epoch;
                if removed.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(removed, Some(epoch), "n4 does not say it was removed");
        tokio::time::sleep(Duration::from_secs(10)).await;
        for host in ["n0", "n1", "n2", "n3"] {
            for k in &keys {
                let v = values(host, k).await?;
                assert!(
                    v.is_empty(),
                    "deleted key {k} came back through {host}: {v:?}"
                );
            }
        }
        Ok(())
    });
    sim.run().unwrap();
}

/// The dead joiner, in simulation: `add-node n3`, and n3 is cut off from every
/// member once part of the keys reached it. The change cannot settle without
/// n3's report; the operator aborts it, the ring is back to its three members,
/// and every key reads back. Then half the keys are deleted and their
/// tombstones leave the members, while n3 still holds its old copies. Healed,
/// n3 must not rejoin with them: `add-node` refuses it while it holds them,
/// it learns its join was aborted and drops them, and only then joins. No
/// deleted key comes back through any node.
#[test]
fn a_dead_joiner_is_aborted_and_is_added_again_once_empty() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(13)
        .simulation_duration(Duration::from_secs(900))
        .build();
    let flags = Flags {
        transfer_rate: Some(100),
        tombstone_grace_ms: Some(4500),
        copy_timeout_ms: Some(1000),
        ..Flags::default()
    };
    for host in ["n0", "n1", "n2", "n3"] {
        node_with(&mut sim, host, flags.clone());
    }
    sim.client("test", async {
        form_ring(&["n1", "n2"]).await?;
        let keys: Vec<String> = (0..200).map(|i| format!("j{i}")).collect();
        for k in &keys {
            put("n0", k, "v").await?;
        }
        let leader = client("n0").await?;
        leader.add_node(ctx(), id("n3")).await??;
        // Part of the keys reach n3 before it is cut off.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for member in ["n0", "n1", "n2"] {
            turmoil::partition("n3", member);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = leader.status(ctx()).await??;
        assert!(s.transition.is_some(), "the change settled without n3");
        let r = leader.abort_change(ctx()).await??;
        assert_eq!(r.members, [id("n0"), id("n1"), id("n2")]);
        settled("n0", 3).await?;
        for k in &keys {
            assert_eq!(values("n1", k).await?, ["v"], "{k} after the abort");
        }
        let (deleted, kept) = keys.split_at(100);
        delete_all("n0", deleted).await?;
        tombstones_gone("n0").await?;
        for member in ["n0", "n1", "n2"] {
            turmoil::repair("n3", member);
        }
        let mut refused = 0;
        loop {
            match leader.add_node(ctx(), id("n3")).await? {
                Ok(_) => break,
                Err(e) if e.to_string().contains("still holds") => refused += 1,
                Err(e) if e.to_string().contains("does not answer") => {}
                Err(e) => return Err(e.into()),
            }
            assert!(refused < 100, "n3 never dropped its copies");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("add-node of n3 refused {refused} times while it still held its copies");
        settled("n0", 4).await?;
        // Anti-entropy has rounds to spread anything n3 brought.
        tokio::time::sleep(Duration::from_secs(10)).await;
        for host in ["n0", "n1", "n2", "n3"] {
            for k in deleted {
                let v = values(host, k).await?;
                assert!(
                    v.is_empty(),
                    "deleted key {k} came back through {host}: {v:?}"
                );
            }
            for k in kept {
                assert_eq!(values(host, k).await?, ["v"], "{k} through {host}");
            }
        }
        Ok(())
    });
    sim.run().unwrap();
}

/// kv679, in simulation: a node writes a key three times, loses its data (its
/// in-memory store goes with a restart of its host) and comes back under the
/// same address; it is readmitted under a new incarnation, and a write through
/// it afterwards must not be silently dropped by replicas that saw its old
/// writes (Riak's kv679: the new write reused a dot they had already seen).
#[test]
fn a_wiped_node_s_new_write_is_not_lost() {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: running; 1: the client asks for n1's restart; 2: restarted.
    let phase = Arc::new(AtomicU8::new(0));
    let mut sim = turmoil::Builder::new()
        .rng_seed(17)
        .simulation_duration(Duration::from_secs(600))
        .build();
    for host in ["n0", "n1", "n2"] {
        node(&mut sim, host);
    }
    let asked = phase.clone();
    sim.client("test", async move {
        form_ring(&["n1", "n2"]).await?;
        let mut seen = VersionVector::new();
        for v in ["old0", "old1", "old2"] {
            let value = Content::Value(bytes::Bytes::from(v));
            let req = WriteRequest {
                key: "k".into(),
                context: seen.clone(),
                content: value,
                forwarded: false,
            };
            seen = client("n1").await?.write(ctx(), req).await??.context;
        }
        asked.store(1, Ordering::SeqCst);
        while asked.load(Ordering::SeqCst) != 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The new n1 is readmitted (a new identity at a known address) and
        // then coordinates a blind write of the same key.
        let mut wrote = false;
        for _ in 0..300 {
            if put("n1", "k", "newest").await.is_ok() {
                wrote = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(wrote, "the wiped node never took a write");
        for host in ["n0", "n2"] {
            let v = values(host, "k").await?;
            assert!(
                v.iter().any(|v| v == "newest"),
                "the write through the wiped node is lost at {host}: {v:?}"
            );
        }
        Ok(())
    });
    loop {
        if phase.load(Ordering::SeqCst) == 1 {
            // A restart of the host: its in-memory store is gone.
            sim.bounce("n1");
            phase.store(2, Ordering::SeqCst);
        }
        if sim.step().unwrap() {
            break;
        }
    }
}
