//! The nemesis against real `dynamo` processes (`make chaos`): five nodes,
//! each in a network namespace of its own, faults made by the kernel (`kill
//! -9`, SIGSTOP/SIGCONT, packets dropped by firewall rules, a data directory
//! deleted), client operations over real TCP, and the simulation's checker
//! (tests/sim/checker.rs) judging the history.
//!
//! - `net.rs`: the namespaces, the bridge, the partitions, the clean-up;
//! - `nodes.rs`: the processes;
//! - `nemesis.rs`: the schedule, the records, the heal and the checks.
//!
//! `CHAOS_SECONDS` is the schedule's length (60 unless set; `make chaos`
//! runs 300), `CHAOS_SEED` its seed (random unless set, printed). A seed
//! draws the same choices, but real time decides the interleaving, so a run
//! does not replay: each run keeps its events and the nodes' logs in
//! target/chaos/TIME-SEED/.
//!
//! It needs root, `ip` and iptables (or nft). Without them it prints
//! `SKIPPED chaos: <reason>` and passes, unless `CI` is set: then it fails.

#[path = "../sim/checker.rs"]
mod checker;
// The run's cluster secret and admin token: the nodes run secured, as users
// run them (the rest of the shared helpers goes unused here).
#[path = "../common/mod.rs"]
mod common;
mod nemesis;
mod net;
mod nodes;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Schedule length unless `CHAOS_SECONDS` says otherwise (the short form
/// `make test` runs).
const SHORT_FORM_SECONDS: u64 = 60;
/// Run directories kept under target/chaos/.
const KEEP_RUNS: usize = 20;

/// Writes `line` to the test's stderr past the test harness's capture, so
/// `cargo test` shows it for a passing test too.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "chaos must run under CI, but cannot: {why}"
    );
    say(&format!("SKIPPED chaos: {why}"));
}

/// target/chaos/TIME-SEED, after removing all but the newest runs.
fn run_dir(seed: u64) -> PathBuf {
    // target/debug/dynamo -> target
    let target = std::path::Path::new(nodes::dynamo_bin())
        .ancestors()
        .nth(2)
        .expect("the target directory")
        .join("chaos");
    std::fs::create_dir_all(&target).expect("target/chaos");
    let mut old: Vec<PathBuf> = std::fs::read_dir(&target)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    old.sort();
    for d in old.iter().rev().skip(KEEP_RUNS - 1) {
        let _ = std::fs::remove_dir_all(d);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = target.join(format!("{now}-{seed}"));
    std::fs::create_dir_all(&dir).expect("the run's directory");
    dir
}

#[test]
fn chaos() {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seconds = var("CHAOS_SECONDS").unwrap_or(SHORT_FORM_SECONDS);
    let seed = var("CHAOS_SEED").unwrap_or_else(|| rand::random_range(1..1u64 << 32));
    if let Some(why) = net::cannot_run() {
        return skip(&why);
    }
    let _lock = net::Lock::take(Duration::from_secs(900)).unwrap_or_else(|e| panic!("{e}"));
    let net = match net::Net::build() {
        Ok(net) => net,
        Err(net::SetupError::Skip(why)) => return skip(&why),
        Err(net::SetupError::Fail(why)) => panic!("chaos: building the network failed: {why}"),
    };
    let dir = run_dir(seed);
    say(&format!(
        "chaos: seed {seed} (CHAOS_SEED={seed} draws the same choices; real time decides the \
         interleaving, so a run does not replay), {seconds}s of schedule, partitions with {:?}, \
         events and logs in {}",
        net.firewall,
        dir.display()
    ));
    match nemesis::run(seed, Duration::from_secs(seconds), &net, dir) {
        Ok(run) => {
            let faults: Vec<String> = run.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
            say(&format!(
                "chaos: seed {seed} passed: {} operations, {} acknowledged writes, {} of \
                 unknown outcome; faults: {}; {:.0}s",
                run.ops,
                run.acked_writes,
                run.unknown_writes,
                faults.join(", "),
                run.elapsed.as_secs_f64()
            ));
        }
        Err(failure) => panic!("{failure}"),
    }
}
