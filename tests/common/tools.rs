//! Tools from outside cargo that some tests drive.

use std::process::Command;

/// True if `tool` runs; false (after saying so) when it is missing outside CI,
/// where a test that needs it then passes without running. Under CI (`CI` set)
/// a missing tool fails the test: `.ci/run` installs every one.
#[allow(dead_code)]
pub fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed (.ci/run installs it)"
        );
        // Past the test harness's capture (eprintln! is captured, and a
        // passing test's output is not shown), so `make test` shows it.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {tool} is not installed (.ci/run installs it)"
        );
    }
    found
}
