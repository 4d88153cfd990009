//! The human form of `status` and `locate`: the member table, a running
//! change's progress, each node's state.

use std::collections::BTreeMap;

use super::describe_change;
use crate::rpc::{AeStats, LocateReply, NodeState, StatusReply, TransitionStatus};
use crate::types::NodeId;

pub(super) fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Alive => "alive",
        NodeState::Suspect => "suspect",
        NodeState::Down => "down",
    }
}

pub(super) fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// "3.2 s ago with HOST:PORT", "never", or "-" when the node did not answer.
pub(super) fn last_exchange(ae: Option<&AeStats>) -> String {
    match ae {
        None => "-".into(),
        Some(AeStats {
            last_exchange: None,
            ..
        }) => "never".into(),
        Some(AeStats {
            last_exchange: Some(last),
            ..
        }) => format!(
            "{:.1} s ago with {}",
            last.ago_ms as f64 / 1000.0,
            last.peer
        ),
    }
}

pub(super) fn status_human(reply: &StatusReply) -> String {
    let r = &reply.replication;
    let mut lines = Vec::new();
    if let Some(epoch) = reply.removed_at_epoch {
        lines.push(format!(
            "THIS NODE WAS REMOVED from the ring at epoch {epoch} while it was away: it serves \
             nothing and hands nothing off. Delete its data directory before adding it again."
        ));
        lines.push(String::new());
    }
    lines.extend([
        if reply.secure {
            format!("node:   {} (fsync {})", reply.node, reply.fsync)
        } else {
            format!(
                "node:   {} (fsync {}; INSECURE: no cluster secret, no tokens)",
                reply.node, reply.fsync
            )
        },
        format!("leader: {} (term {})", reply.leader, reply.term),
        format!("epoch:  {}", reply.epoch),
        format!("N/W/R:  {}/{}/{}", r.n, r.w, r.r),
        String::new(),
    ]);
    let mut rows = vec![[
        "ID".to_string(),
        "STATE".to_string(),
        "KEYS".to_string(),
        "TOMBSTONES".to_string(),
        "HINTS".to_string(),
        "EPOCH".to_string(),
        "REPAIRED".to_string(),
        "LAST ANTI-ENTROPY".to_string(),
        "SHARE".to_string(),
        "UP".to_string(),
        "VERSION".to_string(),
    ]];
    rows.extend(reply.nodes.iter().map(|m| {
        [
            m.id.to_string(),
            match m.restoring {
                // Readmitted after losing its data directory: reads skip it.
                Some(true) => format!("{} (refilling)", state_name(m.state)),
                _ => state_name(m.state).to_string(),
            },
            opt(m.keys),
            opt(m.tombstones),
            opt(m.hints),
            opt(m.epoch),
            opt(m.anti_entropy.as_ref().map(|a| a.keys_repaired)),
            last_exchange(m.anti_entropy.as_ref()),
            format!("{:.0}%", m.share * 100.0),
            m.uptime_ms
                .map_or("-".to_string(), |ms| duration_human(ms / 1000)),
            m.version.clone().unwrap_or_else(|| "-".to_string()),
        ]
    }));
    let mut widths = [0usize; 11];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        lines.push(cells.join("  ").trim_end().to_string());
    }
    lines.push(String::new());
    for r in &reply.refused {
        lines.push(format!(
            "refused for good ({}): key {:?} by {}: {}",
            r.during, r.key, r.node, r.reason
        ));
    }
    // Hints waiting for their replicas, per holder and target.
    for m in &reply.nodes {
        for (target, count) in m.hints_by_target.iter().flatten() {
            lines.push(format!("hints: {} holds {count} for {target}", m.id));
        }
    }
    if !reply.member {
        lines.push(format!(
            "this node ({}) is not a member of the ring",
            reply.node
        ));
    }
    match &reply.transition {
        None => lines.push("ring settled".to_string()),
        Some(t) => lines.extend(transition_human(t)),
    }
    lines.join("\n")
}

/// The running change in `status`: what it does, its progress, one line per sender.
pub(super) fn transition_human(t: &TransitionStatus) -> Vec<String> {
    let mut progress = format!(
        "  moved {} of {} keys ({}%), {}, {} keys/s",
        t.keys_moved,
        t.keys_to_move,
        percent(t.keys_moved, t.keys_to_move),
        bytes_human(t.bytes_moved),
        t.keys_per_sec
    );
    if let Some(eta) = t.eta_s {
        progress.push_str(&format!(", about {} left", duration_human(eta)));
    }
    let mut lines = vec![
        format!(
            "ring change in progress (epoch {}): {}",
            t.epoch,
            describe_change(&t.joining, &t.leaving)
        ),
        progress,
    ];
    let node_width = t
        .senders
        .iter()
        .map(|s| s.node.as_str().chars().count())
        .max()
        .unwrap_or(0);
    let state_width = t
        .senders
        .iter()
        .map(|s| s.state.chars().count())
        .max()
        .unwrap_or(0);
    lines.extend(t.senders.iter().map(|s| {
        format!(
            "  {:<node_width$}  {:<state_width$}  {}/{} keys",
            s.node.as_str(),
            s.state,
            s.keys_moved,
            s.keys_to_move
        )
    }));
    lines
}

/// `done` of `total` in whole percent, rounded down (so 100% means finished);
/// nothing to move is 100%.
pub(super) fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    let p = u128::from(done.min(total)) * 100 / u128::from(total);
    u64::try_from(p).unwrap_or(100)
}

/// A byte count for people: `512 B`, `1.2 MiB`.
pub(super) fn bytes_human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit_bytes: u128 = 1;
    let mut shown = (0u128, "B");
    for unit in UNITS {
        unit_bytes *= 1024;
        // Tenths of the unit, rounded to nearest.
        let tenths = (u128::from(bytes) * 10 + unit_bytes / 2) / unit_bytes;
        shown = (tenths, unit);
        if tenths < 10 * 1024 {
            break;
        }
    }
    let (tenths, unit) = shown;
    format!("{}.{} {unit}", tenths / 10, tenths % 10)
}

/// Seconds for people: `42 s`, `3 min 5 s`, `2 h 10 min`.
pub(super) fn duration_human(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// Each id with its state as the answering node sees it, or `-` for none.
pub(super) fn ids_with_states(ids: &[NodeId], states: &BTreeMap<NodeId, NodeState>) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter()
        .map(|id| {
            let state = states.get(id).map_or("unknown", |s| state_name(*s));
            format!("{id} ({state})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn locate_human(reply: &LocateReply) -> String {
    [
        format!(
            "replicas:  {}",
            ids_with_states(&reply.replicas, &reply.states)
        ),
        format!(
            "pending:   {}",
            ids_with_states(&reply.pending, &reply.states)
        ),
        format!(
            "fallbacks: {}",
            ids_with_states(&reply.fallbacks, &reply.states)
        ),
        format!("epoch {}", reply.epoch),
    ]
    .join("\n")
}
