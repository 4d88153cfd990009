//! `scripts/ring.sh`, the local ring of `make run-db` and `make testcase`, run
//! as a terminal would run it: the nodes must not share the terminal's
//! process group, or the Ctrl-C a user types at `make testcase`'s REPL (sent
//! to the whole foreground group) stops all five nodes at once (issue 28:
//! every later command got `connection refused`).

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::free_port;

/// True if process `pid` exists.
fn alive(pid: i32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The state letter of process `pid` (`T` when stopped), from /proc.
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn ctrl_c_at_the_terminal_does_not_stop_the_local_ring() {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(common::dynamo_bin())
        .parent()
        .unwrap()
        .to_path_buf();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ring.sh");
    let ring = |action: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(script)
            .arg(action)
            .env("BIN", &bin)
            .env("DATA", dir.path().join("data"))
            .env("LOGS", dir.path().join("logs"))
            .env("LEADER_PORT", ports[0].to_string())
            .env(
                "MEMBER_PORTS",
                ports[1..]
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .env("HTTP_OFFSET", "0");
        cmd
    };
    // The script runs as a terminal's foreground job: a process group of
    // its own, which a Ctrl-C at the terminal signals as a whole.
    let mut start = ring("start");
    start.process_group(0);
    let mut terminal = start.spawn().expect("run ring.sh start");
    let group = i32::try_from(terminal.id()).unwrap();
    assert!(terminal.wait().unwrap().success(), "ring.sh start failed");
    let pids: Vec<i32> = ports
        .iter()
        .map(|p| {
            let f = dir.path().join(format!("logs/{p}.pid"));
            std::fs::read_to_string(&f).unwrap().trim().parse().unwrap()
        })
        .collect();
    assert!(pids.iter().all(|&p| alive(p)), "the ring did not start");

    let status = || {
        let out = Command::new(common::client_bin())
            .args(["--port", &ports[0].to_string(), "--json", "-c", "status"])
            .arg("--token-file")
            .arg(dir.path().join("data/secrets/admin.token"))
            .output()
            .expect("run client");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Once the ring answers, every node has set up its signal handling
    // (a node takes SIGINT as a shutdown from then on).
    common::wait_for("the ring answers", Duration::from_secs(30), || {
        status().starts_with("{\"ok\":true").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));

    // Ctrl-C at the terminal: SIGINT to its group. A node that took it
    // would shut down gracefully within a second or two.
    let signal_group = |signal: &str| {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{group}")])
            .status();
    };
    signal_group("-INT");
    std::thread::sleep(Duration::from_secs(3));
    let stopped: Vec<i32> = pids.iter().copied().filter(|&p| !alive(p)).collect();
    // Ctrl-Z: SIGTSTP to the group must not freeze the nodes.
    signal_group("-TSTP");
    std::thread::sleep(Duration::from_millis(300));
    let frozen: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| state_of(p) == Some('T'))
        .collect();
    for &p in &frozen {
        let _ = Command::new("kill")
            .args(["-CONT", &p.to_string()])
            .status();
    }
    let answer = status();
    let began = Instant::now();
    let stop = ring("stop").output().expect("run ring.sh stop");
    let took = began.elapsed();
    assert!(
        stopped.is_empty(),
        "nodes {stopped:?} died of the terminal's Ctrl-C"
    );
    assert!(
        frozen.is_empty(),
        "nodes {frozen:?} froze on the terminal's Ctrl-Z"
    );
    assert!(
        answer.starts_with("{\"ok\":true"),
        "the leader did not answer: {answer}"
    );
    assert!(String::from_utf8_lossy(&stop.stdout).contains("ring stopped"));
    assert!(
        pids.iter().all(|&p| !alive(p)),
        "ring.sh stop left nodes running"
    );
    eprintln!("ring.sh stop took {took:?} for five nodes");
}
