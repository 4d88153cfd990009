//! How an idle ring's traffic grows with its size, in simulation
//! (`make sim-scale`): rings of each size are formed one `add-node` at a
//! time, left idle, and the bytes each node writes to the network over 20
//! simulated seconds are counted at the seam (`harness::bytes_sent`). The
//! leader is shown apart (every member pulls the ring from it). The nodes
//! run with a real node's defaults (ping and anti-entropy intervals).

use std::time::Duration;

use super::harness::{self, Cluster};

/// One ring size's numbers.
pub struct Row {
    pub nodes: usize,
    /// Mean bytes per second a member (not the leader) writes when idle.
    pub member_mean: f64,
    /// The busiest member's.
    pub member_max: f64,
    /// The leader's.
    pub leader: f64,
    /// Real seconds the simulation took per simulated second, idle.
    pub real_per_simulated: f64,
}

pub fn idle(nodes: usize) -> Result<Row, String> {
    let mut c = Cluster::new(7);
    let hosts: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
    // A real node's defaults (intervals, timeouts), but no flusher thread.
    let flags = dynamo::config::Flags {
        fsync: Some("never".into()),
        ..Default::default()
    };
    for h in &hosts {
        c.start(h, flags.clone());
    }
    let rest = hosts[1..].to_vec();
    c.call(async move { super::script::join(rest).await.map_err(|e| e.to_string()) })?;
    c.advance(Duration::from_secs(5))?;
    let before = harness::bytes_sent();
    let started = std::time::Instant::now();
    let window = Duration::from_secs(20);
    c.advance(window)?;
    let real = started.elapsed().as_secs_f64();
    let after = harness::bytes_sent();
    let rate = |h: &str| {
        (after.get(h).copied().unwrap_or(0) - before.get(h).copied().unwrap_or(0)) as f64
            / window.as_secs_f64()
    };
    let members: Vec<f64> = hosts[1..].iter().map(|h| rate(h)).collect();
    Ok(Row {
        nodes,
        member_mean: members.iter().sum::<f64>() / members.len().max(1) as f64,
        member_max: members.iter().copied().fold(0.0, f64::max),
        leader: rate("n0"),
        real_per_simulated: real / window.as_secs_f64(),
    })
}
