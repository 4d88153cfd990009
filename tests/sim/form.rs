//! Forming a ring in bulk, before any host starts: what `add-node` one at a
//! time would leave on every node's disk, written there directly, so a
//! 1,000-node ring takes one start instead of 999 changes.
//!
//! Each host's store is created in its simulated disk (which draws its
//! identity, seeded: `dynamo::runtime::new_uuid` under the simulation), the
//! ring is built as the leader builds it when it adds each node and the
//! change settles (`RingState::begin_add` with the node's identity, then
//! `settle`: the same identities, incarnations and epoch as `join`), and
//! saved in every store as membership saves a ring it installs. The stores
//! are closed (sled's lock released) before the hosts start, each of them a
//! member on that epoch with no change running.

use dynamo::config::{Flags, FsyncMode, NodeConfig};
use dynamo::ring::RingState;
use dynamo::storage::Storage;

use super::harness::{self, id, Cluster, PORT};

/// Writes the ring of `hosts` (the first is the leader, `n0`) with
/// `tokens` tokens per node into each host's disk, then starts every host
/// with `flags`. Returns the ring.
pub fn form(
    c: &mut Cluster,
    hosts: &[String],
    flags: &Flags,
    tokens: u32,
) -> Result<RingState, String> {
    let leader = hosts.first().ok_or("no hosts")?;
    if leader != "n0" {
        return Err(format!("the leader is n0, not {leader}"));
    }
    // N/W/R as the leader's flags give them.
    let config = NodeConfig::from_flags(Flags {
        host: Some(leader.clone()),
        port: Some(PORT),
        leader: Some(id(leader).to_string()),
        data_dir: Some(c.disk(leader)),
        ..flags.clone()
    })
    .map_err(|e| e.to_string())?;
    let open = |host: &str| {
        Storage::open(Some(&c.disk(host)), FsyncMode::Never)
            .map_err(|e| format!("{host}'s store: {e}"))
    };
    // Each store is opened twice (once for its identity, once for the ring),
    // one at a time: a thousand sled stores open at once would each keep a
    // page cache and a flusher thread.
    let mut ring = RingState::bootstrap(id(leader), config.replication);
    ring.tokens_per_node = tokens;
    // The leader's store first, then each node in turn: the identities are
    // drawn in that order.
    ring.record_identity(&id(leader), open(leader)?.uuid());
    for host in &hosts[1..] {
        let uuid = open(host)?.uuid();
        ring = ring
            .begin_add(id(host), Some(uuid), 0)
            .and_then(|r| r.settle(&[]))
            .map_err(|e| format!("adding {host}: {e}"))?;
    }
    ring.validate().map_err(|e| e.to_string())?;
    for host in hosts {
        let store = open(host)?;
        store.save_ring(&ring).map_err(|e| e.to_string())?;
        store.flush().map_err(|e| e.to_string())?;
    }
    for host in hosts {
        harness::wait_for_release(&c.disk(host));
        c.start(host, flags.clone());
    }
    Ok(ring)
}

/// The leader's ring, from the driver.
#[cfg(test)]
fn leader_ring(c: &mut Cluster) -> Result<RingState, String> {
    let json = c.call(async {
        let cl = harness::client("n0").await.map_err(|e| e.to_string())?;
        let ring = cl
            .fetch_ring(harness::ctx())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("the leader has no ring")?;
        serde_json::to_string(&ring).map_err(|e| e.to_string())
    })?;
    serde_json::from_str(&json).map_err(|e| e.to_string())
}

/// A ring formed in bulk is the ring `join` makes one add-node at a time:
/// same epoch, members, identities and incarnations (the identities are
/// drawn in the same order, n0 first), and every node comes up on it.
#[test]
fn a_formed_ring_is_the_ring_join_makes() {
    let hosts: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    let flags = harness::quick_flags();

    let mut joined = Cluster::new(3);
    for h in &hosts {
        joined.start(h, flags.clone());
    }
    let rest = hosts[1..].to_vec();
    joined
        .call(async move { super::script::join(rest).await.map_err(|e| e.to_string()) })
        .unwrap();
    let want = leader_ring(&mut joined).unwrap();

    let mut formed = Cluster::new(3);
    let ring = form(
        &mut formed,
        &hosts,
        &flags,
        dynamo::ring::DEFAULT_TOKENS_PER_NODE,
    )
    .unwrap();
    assert_eq!(ring, want);
    formed.advance(std::time::Duration::from_secs(1)).unwrap();
    assert_eq!(leader_ring(&mut formed).unwrap(), want);
    let epoch = want.epoch;
    formed
        .call(async move {
            for h in ["n0", "n1", "n2", "n3", "n4"] {
                let cl = harness::client(h).await.map_err(|e| e.to_string())?;
                let info = cl
                    .info(harness::ctx())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                if info.epoch != epoch {
                    return Err(format!("{h} is on epoch {}, not {epoch}", info.epoch));
                }
            }
            Ok(String::new())
        })
        .unwrap();
}
