//! The real node code in a simulated cluster (turmoil): every node runs
//! `dynamo::server::start_over` on a simulated host, its connections go
//! through turmoil's network (`dynamo::net`), tokio's clock is turmoil's, and
//! blocking jobs and identities come from `dynamo::runtime::simulate`, so a
//! partition or a pause is a step of the test and a run is a function of its
//! seed. See `harness.rs` for what the simulation can and cannot show.
//!
//! - `scenarios/*.txt`: the faults met in this project's history, one
//!   readable script each (`script.rs` documents the commands);
//! - `nemesis.rs`: seeded random schedules of operations and faults
//!   (`make sim SEEDS=N`), judged by `checker.rs` over what the clients saw.

#[path = "../../src/script_tests.rs"]
#[macro_use]
mod script_tests;

mod checker;
mod form;
mod harness;
mod nemesis;
mod scale;
mod script;
mod traffic;

script_tests!(script::run, "tests/sim/scenarios", {
    partition => "partition.txt",
    stalled_leaver => "stalled-leaver.txt",
    dead_joiner => "dead-joiner.txt",
    kv679 => "kv679.txt",
    forward_to_cut_off_replica => "forward-to-cut-off-replica.txt",
    ring_install_race => "ring-install-race.txt",
    leader_commit_cancelled => "leader-commit-cancelled.txt",
    hint_for_moved_key => "hint-for-moved-key.txt",
    detector_news => "detector-news.txt",
    leader_partition => "leader-partition.txt",
});

/// The nemesis over a range of seeds: `SIM_SEED=S` runs that one seed (a
/// replay, printing its events), else `SIM_SEEDS=N` seeds from `SIM_FIRST`
/// (default 1; `make sim` draws it at random and prints it) on `SIM_JOBS`
/// threads, each `SIM_STEPS` steps long (default 80). Without `SIM_SEED` or
/// `SIM_SEEDS`, the short form run by `make test`: [`SHORT_FORM_SEEDS`] seeds
/// of [`SHORT_FORM_STEPS`] steps on every core.
#[test]
fn nemesis_seeds() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (first, count) = match var("SIM_SEED") {
        Some(seed) => (seed, 1),
        None => (
            var("SIM_FIRST").unwrap_or(1),
            var("SIM_SEEDS").unwrap_or(SHORT_FORM_SEEDS),
        ),
    };
    let short = var("SIM_SEED").is_none() && var("SIM_SEEDS").is_none();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let jobs = var("SIM_JOBS")
        .unwrap_or(if short { cores } else { 1 })
        .clamp(1, 64);
    let steps = var("SIM_STEPS").map_or(
        if short {
            SHORT_FORM_STEPS
        } else {
            nemesis::Plan::default().steps
        },
        |s| s as usize,
    );
    let started = std::time::Instant::now();
    let next = Arc::new(AtomicU64::new(first));
    let totals = Arc::new(Mutex::new((0usize, 0usize, std::time::Duration::ZERO)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, totals, failures) = (next.clone(), totals.clone(), failures.clone());
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= first + count || !failures.lock().unwrap().is_empty() {
                    return;
                }
                let t = std::time::Instant::now();
                let plan = nemesis::Plan { steps };
                match nemesis::run(seed, &plan) {
                    Ok(run) => {
                        if count == 1 {
                            for line in &run.trace {
                                println!("{line}");
                            }
                        }
                        println!(
                            "seed {seed}: ok, {} acknowledged writes, {} of unknown outcome, \
                             {:.0}s simulated in {:.2}s",
                            run.acked_writes,
                            run.unknown_writes,
                            run.simulated.as_secs_f64(),
                            t.elapsed().as_secs_f64()
                        );
                        let mut tot = totals.lock().unwrap();
                        tot.0 += run.acked_writes;
                        tot.1 += run.unknown_writes;
                        tot.2 += run.simulated;
                    }
                    Err(failure) => failures.lock().unwrap().push(failure.to_string()),
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a nemesis worker panicked");
    }
    if let Some(f) = failures.lock().unwrap().first() {
        panic!("{f}");
    }
    let (acked, unknown, simulated) = *totals.lock().unwrap();
    println!(
        "{count} seeds of {steps} steps from {first} passed: {acked} acknowledged writes, \
         {unknown} of unknown outcome, {:.0}s simulated in {:.1}s on {jobs} threads \
         ({:.2}s per seed)",
        simulated.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() / count as f64
    );
}

/// How many seeds `make test` runs: about a minute on two cores in the test
/// build (0.3 s a seed on each core; a seed of the default 80 steps takes
/// about twice as long, most of it the heal, convergence and tombstone
/// removal every seed ends with).
const SHORT_FORM_SEEDS: u64 = 200;
/// How many steps each seed of the short form runs.
const SHORT_FORM_STEPS: usize = 30;

/// A seed is a replay: the same seed twice gives the same events in the same
/// order at the same simulated times.
#[test]
fn a_seed_replays_exactly() {
    let plan = nemesis::Plan::default();
    let a = nemesis::run(1001, &plan).map(|r| r.trace);
    let b = nemesis::run(1001, &plan).map(|r| r.trace);
    let (a, b) = (
        a.unwrap_or_else(|f| panic!("{f}")),
        b.unwrap_or_else(|f| panic!("{f}")),
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "the two runs of one seed differ");
    }
    assert_eq!(a.len(), b.len());
}

/// Traffic and cost as the ring grows, idle and through one add-node and
/// one remove-node: `make sim-scale` (sizes from `SIM_SCALE`, default
/// `10 100`; the options in `scale.rs`). One table per measurement.
#[test]
#[ignore = "a measurement: make sim-scale"]
fn idle_traffic_as_the_ring_grows() {
    let sizes = std::env::var("SIM_SCALE").unwrap_or_else(|_| "10 100".into());
    let opts = scale::Options::from_env();
    let mut measured = Vec::new();
    for n in sizes
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let m = scale::measure(n, &opts).unwrap_or_else(|e| panic!("{n} nodes: {e}"));
        println!(
            "{n} nodes measured: idle {:.2} real s per simulated s, peak RSS {:.0} MiB",
            m.idle.real_per_simulated, m.idle.peak_rss_mib
        );
        measured.push(m);
    }
    println!("\nIdle, bytes each node writes to other nodes:\n");
    println!(
        "| nodes | tokens/node | pinged peers/node | connections dialled/node | member B/s (mean) \
         | member B/s (max) | leader B/s | window (sim s) | tick (ms) | real s per sim s \
         | form + start + status (real s) | leader status (real s, answer bytes) \
         | RSS after the window, peak so far (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for m in &measured {
        let i = &m.idle;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {:.1} | {:.2}, {} | {:.0}, {:.0} |",
            i.nodes,
            i.tokens,
            i.neighbours,
            i.dials,
            i.member_mean,
            i.member_max,
            i.leader,
            i.window.as_secs(),
            i.tick.as_millis(),
            i.real_per_simulated,
            i.form_real,
            i.status_real,
            i.status_bytes,
            i.rss_mib,
            i.peak_rss_mib
        );
    }
    println!(
        "\nIdle, by RPC method (calls and the answers to them; a member is the mean member):\n"
    );
    println!("| nodes | method | member calls/s | member B/s | leader calls/s | leader B/s |");
    println!("|---|---|---|---|---|---|");
    for m in &measured {
        let i = &m.idle;
        let mut names: Vec<&str> = i.member_methods.iter().map(|x| x.0).collect();
        names.extend(i.leader_methods.iter().map(|x| x.0));
        names.sort();
        names.dedup();
        let find = |v: &[(&str, f64, f64)], name: &str| {
            v.iter()
                .find(|x| x.0 == name)
                .map_or((0.0, 0.0), |x| (x.1, x.2))
        };
        for name in names {
            let (mc, mb) = find(&i.member_methods, name);
            let (lc, lb) = find(&i.leader_methods, name);
            println!(
                "| {} | {name} | {mc:.1} | {mb:.0} | {lc:.1} | {lb:.0} |",
                i.nodes
            );
        }
    }
    if measured.iter().all(|m| m.changes.is_empty()) {
        return;
    }
    println!(
        "\nOne change on a ring holding keys (N copies each): ideal = keys × N / ring size \
         (the copies the added node gets, or the removed node held):\n"
    );
    println!(
        "| nodes | change | keys | ideal copies | copies moved | moved / ideal | others' copies Δ \
         | copies before → after | transfer keys_to_move / keys_moved (per holder) \
         | to_move / ideal | bytes to settle (all nodes) | of which transfer | bytes in clean-up \
         | most transfer calls (node: calls) | last transfer done (sim s, node) | settled (sim s) \
         | cleaned up (sim s) | real s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for m in &measured {
        for ch in &m.changes {
            println!(
                "| {} | {} | {} | {:.0} | {} | {:.2} | {:+} | {} → {} | {} / {} | {:.2} | {} | {} | {} | {}: {} | {:.1}, {} | {:.1} | {:.1} | {:.1} |",
                ch.nodes,
                ch.what,
                ch.keys,
                ch.ideal,
                ch.copies,
                ch.copies as f64 / ch.ideal,
                ch.others_delta,
                ch.total_before,
                ch.total_after,
                ch.keys_to_move,
                ch.keys_moved,
                ch.keys_to_move as f64 / ch.ideal,
                ch.bytes_change,
                ch.bytes_transfer,
                ch.bytes_cleanup,
                ch.busiest.0,
                ch.busiest.1,
                ch.last_done.1,
                ch.last_done.0,
                ch.settle_s,
                ch.clean_s,
                ch.real_s
            );
        }
    }
    println!(
        "\nBytes all nodes wrote from a change's start until it settled, and then \
         until clean-up, by RPC method:\n"
    );
    println!("| nodes | change | method | calls to settle | bytes to settle | calls in clean-up | bytes in clean-up |");
    println!("|---|---|---|---|---|---|---|");
    for m in &measured {
        for ch in &m.changes {
            let mut names: Vec<&str> = ch.by_method.iter().map(|x| x.0).collect();
            names.extend(ch.cleanup_by_method.iter().map(|x| x.0));
            names.sort();
            names.dedup();
            let find = |v: &[(&str, u64, u64)], name: &str| {
                v.iter()
                    .find(|x| x.0 == name)
                    .map_or((0, 0), |x| (x.1, x.2))
            };
            for name in names {
                let (c1, b1) = find(&ch.by_method, name);
                let (c2, b2) = find(&ch.cleanup_by_method, name);
                println!(
                    "| {} | {} | {name} | {c1} | {b1} | {c2} | {b2} |",
                    ch.nodes, ch.what
                );
            }
        }
    }
}
