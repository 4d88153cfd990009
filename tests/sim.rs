//! The real node code in a simulated cluster (turmoil): every node runs
//! `dynamo::server::start_over` on a simulated host, its connections go through
//! turmoil's network (`dynamo::net`), and tokio's clock is turmoil's, so a
//! partition or a pause is a call in the test and a run is repeatable from its
//! seed. Storage is sled in memory (`--in-memory`): the simulation says nothing
//! about disks (torn writes, lost flushes).
//!
//! This is the seam's first scenario: a ring of three is formed, a write
//! through one node reads back through another, a node cut off from the rest
//! does not stop a write quorum, and after the partition heals the cut-off
//! node holds the write.

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
    sim.host(host, move || async move {
        let config = NodeConfig::from_flags(Flags {
            host: Some(host.to_string()),
            port: Some(PORT),
            leader: Some(id("n0").to_string()),
            in_memory: true,
            ..Flags::default()
        })?;
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
        let node =
            dynamo::server::start_over(config, Box::new(SimListener(listener)), Arc::new(SimNet))
                .await?;
        node.wait().await?;
        Ok(())
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
    let req = WriteRequest {
        key: key.into(),
        context: VersionVector::new(),
        content: Content::Value(bytes::Bytes::copy_from_slice(value.as_bytes())),
        forwarded: false,
    };
    client(host).await?.write(ctx(), req).await??;
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
        // Nodes come up in any order: wait for the leader to answer.
        let leader = loop {
            match client("n0").await {
                Ok(c) if c.status(ctx()).await.is_ok() => break c,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        for host in ["n1", "n2"] {
            loop {
                match leader.add_node(ctx(), id(host)).await? {
                    Ok(_) => break,
                    Err(e) if e.to_string().contains("does not answer") => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            settled("n0", if host == "n1" { 2 } else { 3 }).await?;
        }
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
