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
    drop(open(leader)?);
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
