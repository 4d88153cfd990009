//! The node's Prometheus metrics, served at `GET /metrics` by [`crate::http`].
//!
//! Two kinds of series:
//!
//! - **Request series**, updated on the request path: `dynamo_requests_total`
//!   and the `dynamo_request_duration_seconds` histogram, both labelled
//!   `{op, outcome}`, and `dynamo_quorum_failures_total{op}`. They count the
//!   requests this node took from clients (REPL, load generator, HTTP), not the
//!   node-to-node calls a request makes. Every handle is registered once, when
//!   the node starts ([`Metrics::new`]), so recording a request is two atomic
//!   adds and a push into the histogram's lock-free bucket: no label hashing,
//!   no map lookup, no lock.
//! - **State series**, read from the node when scraped ([`Metrics::render`]):
//!   keys, tombstones, hints pending per target, the ring epoch, whether a ring
//!   change runs and this node's part of it, anti-entropy exchanges and keys
//!   repaired, tombstones removed. Nothing on the request path keeps them.
//!
//! Histogram samples wait in the recorder until they are folded into the
//! buckets. A scrape folds them, and so does [`Metrics::run_upkeep`] every
//! [`UPKEEP_INTERVAL`], so a node nobody scrapes keeps bounded memory.
//!
//! Each node has its own recorder (no global one), so nodes running in one
//! process (the in-process tests) keep apart.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::error::Error;
use crate::rpc::NodeInfo;

/// How often buffered histogram samples are folded into their buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Bucket bounds of `dynamo_request_duration_seconds`: 250 us to 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Delete,
    Status,
    Locate,
    AddNode,
    RemoveNode,
    AbortChange,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::Put,
        Op::Get,
        Op::Delete,
        Op::Status,
        Op::Locate,
        Op::AddNode,
        Op::RemoveNode,
        Op::AbortChange,
    ];

    /// The `op` label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Delete => "delete",
            Op::Status => "status",
            Op::Locate => "locate",
            Op::AddNode => "add_node",
            Op::RemoveNode => "remove_node",
            Op::AbortChange => "abort_change",
        }
    }
}

/// How a request ended: the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Carried out (a get of a missing key included).
    Ok,
    /// Refused for what the client sent (bad key, value, context, not the leader).
    Invalid,
    /// Fewer than W (R) nodes answered.
    Quorum,
    /// Ran out of time.
    Timeout,
    /// Any other failure (a node unreachable, no ring yet, storage, shutdown).
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::Quorum,
        Outcome::Timeout,
        Outcome::Error,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Quorum => "quorum_failed",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a request that ended in `result`.
    pub fn of<T>(result: &Result<T, Error>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => match e {
                Error::WriteQuorum { .. } | Error::ReadQuorum { .. } => Outcome::Quorum,
                Error::Timeout { .. } => Outcome::Timeout,
                Error::InvalidInput { .. }
                | Error::BadContext { .. }
                | Error::KeyTooLarge { .. }
                | Error::ValueTooLarge { .. }
                | Error::TooManySiblings { .. }
                | Error::ObjectTooLarge { .. }
                | Error::NotLeader { .. }
                | Error::Membership { .. } => Outcome::Invalid,
                _ => Outcome::Error,
            },
        }
    }
}

/// One node's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Indexed by `[op][outcome]`.
    requests: Vec<Vec<(Counter, Histogram)>>,
    quorum_failures: Vec<Counter>,
    /// Hint targets seen at earlier scrapes (shown at 0 once drained).
    hint_targets: Mutex<BTreeSet<String>>,
}

// The recorder keeps each histogram's unfolded samples in blocks of a
// metrics-util `AtomicBucket`, which has no `Drop`: a recorder dropped with
// samples still waiting leaked their blocks (up to one upkeep interval's
// worth, per node stopped in a process that goes on: found by the HTTP fuzz
// target, which replaces its node every few thousand requests, under
// LeakSanitizer). Folding them first leaves every bucket empty. Nothing else
// holds the histograms by then, so no sample can land after the fold.
impl Drop for Metrics {
    fn drop(&mut self) {
        self.handle.run_upkeep();
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new("dynamo", metrics::Level::INFO, Some(module_path!()))
}

impl Metrics {
    /// A recorder with every request series registered.
    pub fn new() -> Arc<Metrics> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("dynamo_request_duration_seconds".into()),
                &DURATION_BUCKETS,
            )
            .expect("the duration buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        recorder.describe_counter(
            "dynamo_requests_total".into(),
            None,
            "Requests this node took from clients, by operation and outcome".into(),
        );
        recorder.describe_histogram(
            "dynamo_request_duration_seconds".into(),
            Some(metrics::Unit::Seconds),
            "Time to answer a client's request, by operation and outcome".into(),
        );
        recorder.describe_counter(
            "dynamo_quorum_failures_total".into(),
            None,
            "Puts, deletes and gets that did not reach their quorum".into(),
        );
        let requests = Op::ALL
            .iter()
            .map(|op| {
                Outcome::ALL
                    .iter()
                    .map(|outcome| {
                        let labels = vec![
                            Label::new("op", op.label()),
                            Label::new("outcome", outcome.label()),
                        ];
                        let c = recorder.register_counter(
                            &Key::from_parts("dynamo_requests_total", labels.clone()),
                            &metadata(),
                        );
                        let h = recorder.register_histogram(
                            &Key::from_parts("dynamo_request_duration_seconds", labels),
                            &metadata(),
                        );
                        (c, h)
                    })
                    .collect()
            })
            .collect();
        let quorum_failures = Op::ALL
            .iter()
            .map(|op| {
                recorder.register_counter(
                    &Key::from_parts(
                        "dynamo_quorum_failures_total",
                        vec![Label::new("op", op.label())],
                    ),
                    &metadata(),
                )
            })
            .collect();
        Arc::new(Metrics {
            recorder,
            handle,
            requests,
            quorum_failures,
            hint_targets: Mutex::new(BTreeSet::new()),
        })
    }

    /// Records one client request that took `elapsed` and ended as `outcome`.
    pub fn record(&self, op: Op, outcome: Outcome, elapsed: Duration) {
        let (count, duration) = &self.requests[op as usize][outcome as usize];
        count.increment(1);
        duration.record(elapsed.as_secs_f64());
        if outcome == Outcome::Quorum {
            self.quorum_failures[op as usize].increment(1);
        }
    }

    /// Runs `f` (a client request), records it, and returns its result.
    pub async fn time<T>(
        &self,
        op: Op,
        f: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let start = std::time::Instant::now();
        let out = f.await;
        self.record(op, Outcome::of(&out), start.elapsed());
        out
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &metadata())
    }

    fn counter(&self, name: &'static str) -> Counter {
        self.recorder
            .register_counter(&Key::from_static_name(name), &metadata())
    }

    /// The exposition text: the request series, and the state series set from
    /// `info` (this node's counters) and `ring` (epoch, whether a change runs).
    pub fn render(&self, info: &NodeInfo, transition_running: bool) -> String {
        let as_f = |n: u64| n as f64;
        self.gauge("dynamo_keys", vec![]).set(as_f(info.keys));
        self.gauge("dynamo_tombstones", vec![])
            .set(as_f(info.tombstones));
        self.gauge("dynamo_hints_pending_total", vec![])
            .set(as_f(info.hints));
        {
            let mut seen = self.hint_targets.lock().unwrap_or_else(|e| e.into_inner());
            seen.extend(info.hints_by_target.keys().map(|t| t.to_string()));
            for target in seen.iter() {
                let pending = info
                    .hints_by_target
                    .iter()
                    .find(|(t, _)| t.as_str() == target)
                    .map_or(0, |(_, n)| *n);
                self.gauge(
                    "dynamo_hints_pending",
                    vec![Label::new("target", target.clone())],
                )
                .set(as_f(pending));
            }
        }
        self.gauge("dynamo_ring_epoch", vec![])
            .set(as_f(info.epoch));
        self.gauge("dynamo_transition_running", vec![])
            .set(if transition_running { 1.0 } else { 0.0 });
        let (to_move, moved) = info
            .transfer
            .as_ref()
            .map_or((0, 0), |t| (t.keys_to_move, t.keys_moved));
        self.gauge("dynamo_transition_keys_to_move", vec![])
            .set(as_f(to_move));
        self.gauge("dynamo_transition_keys_moved", vec![])
            .set(as_f(moved));
        self.counter("dynamo_anti_entropy_exchanges_total")
            .absolute(info.anti_entropy.exchanges);
        self.counter("dynamo_anti_entropy_keys_repaired_total")
            .absolute(info.anti_entropy.keys_repaired);
        self.counter("dynamo_tombstones_removed_total")
            .absolute(info.anti_entropy.tombstones_removed);
        self.gauge("dynamo_uptime_seconds", vec![])
            .set(info.uptime_ms as f64 / 1000.0);
        self.gauge("dynamo_restoring", vec![])
            .set(if info.restoring { 1.0 } else { 0.0 });
        self.handle.render()
    }

    /// Folds buffered histogram samples into their buckets, every
    /// [`UPKEEP_INTERVAL`], until `stop`.
    pub async fn run_upkeep(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.handle.run_upkeep(),
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_error_kind() {
        assert_eq!(Outcome::of::<()>(&Ok(())), Outcome::Ok);
        let quorum = Error::WriteQuorum {
            needed: 2,
            acked: 1,
            failures: vec![],
        };
        assert_eq!(Outcome::of::<()>(&Err(quorum)), Outcome::Quorum);
        let big = Error::ValueTooLarge { size: 2, limit: 1 };
        assert_eq!(Outcome::of::<()>(&Err(big)), Outcome::Invalid);
    }

    #[test]
    fn a_recorded_request_shows_in_the_text() {
        let m = Metrics::new();
        m.record(Op::Put, Outcome::Ok, Duration::from_millis(3));
        m.record(Op::Get, Outcome::Quorum, Duration::from_millis(30));
        let info = NodeInfo {
            id: "127.0.0.1:1".parse().unwrap(),
            identity: uuid::Uuid::nil(),
            epoch: 3,
            keys: 0,
            tombstones: 0,
            hints: 0,
            fsync: "batch".into(),
            transfer: None,
            anti_entropy: Default::default(),
            restoring: false,
            hints_by_target: Default::default(),
            uptime_ms: 0,
            version: "0".into(),
            removed_at_epoch: None,
            refused: Vec::new(),
            role: "learner".into(),
            term: 0,
            voters: Vec::new(),
        };
        let text = m.render(&info, false);
        assert!(
            text.contains(r#"dynamo_requests_total{op="put",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dynamo_quorum_failures_total{op="get"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"dynamo_request_duration_seconds_bucket{op="put",outcome="ok",le="0.005"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("dynamo_keys 0"), "{text}");
        assert!(text.contains("dynamo_ring_epoch 3"), "{text}");
        assert!(
            text.contains("# TYPE dynamo_request_duration_seconds histogram"),
            "{text}"
        );
    }
}
