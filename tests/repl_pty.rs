//! The interactive client on a real pseudo-terminal (rexpect): Ctrl-C abandons
//! a command that hangs and returns to the prompt, and the history file keeps
//! the commands typed but not a pasted line over the limit, and a value pasted
//! over the value limit key by key (no bracketed paste) is refused, not redrawn
//! for minutes.

mod common;

use std::time::{Duration, Instant};

use common::{client_cmd, Cluster};

/// A one-node ring and the client on a pseudo-terminal, at its first prompt,
/// its history in `DIR/history`; `timeout_ms` bounds each expectation.
fn repl_on_one_node(
    timeout_ms: u64,
) -> (
    Cluster,
    tempfile::TempDir,
    rexpect::session::PtySession,
    String,
) {
    let c = Cluster::ring(1, (1, 1, 1));
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = client_cmd();
    cmd.args(["--port", &c.nodes[0].port.to_string()])
        .env("DYNAMO_HISTORY", dir.path().join("history"));
    let mut p = rexpect::session::spawn_command(cmd, Some(timeout_ms)).expect("spawn client");
    let prompt = format!("dynamo 127.0.0.1:{}> ", c.nodes[0].port);
    p.exp_string(&prompt).unwrap();
    (c, dir, p, prompt)
}

/// The pty tests run one at a time: run side by side, the node the Ctrl-C test
/// SIGSTOPs was seen answering (1 run in 4; never when run alone, nor under a
/// CPU hog), an interaction of the two tests' terminals not yet understood.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn ctrl_c_abandons_a_hung_command_and_history_keeps_short_lines() {
    let _serial = one_at_a_time();
    let (c, dir, mut p, prompt) = repl_on_one_node(15_000);
    let history = dir.path().join("history");
    p.send_line("put k {} v1").unwrap();
    p.exp_string("ok").unwrap();
    p.exp_string(&prompt).unwrap();

    // The node hangs: the get would wait for the client's 10 s deadline.
    c.signal(0, "STOP");
    p.send_line("get k").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    p.send_control('c').unwrap();
    p.exp_string("cancelled").unwrap();
    p.exp_string(&prompt).unwrap();
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "Ctrl-C took {took:?} to give the prompt back"
    );
    c.signal(0, "CONT");
    p.send_line("get k").unwrap();
    p.exp_string("v1").unwrap();
    p.exp_string(&prompt).unwrap();

    // A line over the history limit runs but is not kept.
    let big = "x".repeat(dynamo::repl::HISTORY_MAX_LINE_BYTES + 100);
    p.send_line(&format!("put big {{}} {big}")).unwrap();
    p.exp_string("ok").unwrap();
    p.exp_string(&prompt).unwrap();
    p.send_line("quit").unwrap();
    p.exp_eof().unwrap();

    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("put k {} v1"), "{kept}");
    assert!(kept.contains("get k"), "{kept}");
    assert!(!kept.contains(&big), "the long line was kept");
}

#[test]
fn a_value_pasted_over_the_limit_without_bracketing_is_refused_and_not_kept() {
    let _serial = one_at_a_time();
    // 60 s for each expectation: without the spill, 20 KB took over 100 s to
    // redraw key by key, and this test did not end within 15 minutes.
    let (_c, dir, mut p, prompt) = repl_on_one_node(60_000);
    let history = dir.path().join("history");
    // rexpect writes raw bytes to the terminal: rustyline sees keys, as from
    // a terminal that does not bracket pastes.
    let big = "y".repeat(dynamo::types::MAX_VALUE_BYTES + 10);
    p.send_line(&format!("put huge {{}} {big}")).unwrap();
    p.exp_string("more bytes pasted, not shown").unwrap();
    p.exp_string("value too large").unwrap();
    p.exp_string(&prompt).unwrap();
    // The prompt still works, and nothing was stored.
    p.send_line("get huge").unwrap();
    p.exp_string("not found").unwrap();
    p.exp_string(&prompt).unwrap();
    p.send_line("quit").unwrap();
    p.exp_eof().unwrap();
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("get huge"), "{kept}");
    assert!(!kept.contains("put huge"), "the pasted line was kept");
}
