//! The HTTP API checked by tools from outside: schemathesis generates requests
//! from `/openapi.json` against a live ring and checks every answer, and
//! headless Chromium renders the web page as a person would see it.
//!
//! Both tools come from outside cargo (`pip install schemathesis`, Debian's
//! `chromium`); `.ci/run` installs them. Where one is missing the test says so
//! and passes, except under CI (`CI` set), where a missing tool fails it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{have, Cluster};

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    if !have("schemathesis") {
        return;
    }
    let c = Cluster::ring(3, (3, 2, 2));
    let url = format!("http://127.0.0.1:{}/openapi.json", c.nodes[0].http);
    // Every check but positive_data_acceptance: whether a context or a node
    // is acceptable depends on the ring (a context naming a node the ring
    // never had is refused), which a schema cannot say.
    // Run where its cache directory (.schemathesis) does not land in the checkout.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("schemathesis")
        .current_dir(scratch.path())
        .args(["run", &url, "--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "40", "--seed", "1", "--no-color"])
        .args(["-H", &common::bearer()])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = report.lines().rev().take(80).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    eprintln!("{}", tail.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{}\n{}",
        tail.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "no test case ran:\n{report}");
}

/// Where the screenshot is kept for people to look at.
fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1280,1000",
            // Lets the page's scripts run (status poll, the get of ?key=)
            // before the DOM is dumped or the picture taken.
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[test]
fn the_page_shows_the_ring_and_a_stored_value_in_a_real_browser() {
    if !have("chromium") {
        return;
    }
    let c = Cluster::ring(3, (3, 2, 2));
    let http = c.nodes[1].http;
    let value = "a value stored for the browser test";
    let put = Command::new("curl")
        .args(["-sS", "-X", "PUT", "-H", "Content-Type: text/plain"])
        .args(["-H", &common::bearer()])
        .args(["--data-binary", value])
        .arg(format!("http://127.0.0.1:{http}/kv/page%20key"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&put.stdout).contains("\"ok\":true"));
    // The token travels in the fragment, which the page keeps for the tab
    // and the browser never sends.
    let url = format!(
        "http://127.0.0.1:{http}/?key=page%20key#token={}",
        common::secrets().admin_token
    );

    let dom = chromium(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for n in &c.nodes {
        assert!(
            dom.contains(&n.id),
            "the page does not show member {}:\n{dom}",
            n.id
        );
    }
    assert!(
        dom.contains(value),
        "the page does not show the stored value:\n{dom}"
    );
    assert!(dom.contains("ring settled"), "{dom}");
    assert!(dom.contains("alive"), "{dom}");

    let png = artifact("page.png");
    let _ = std::fs::remove_file(&png);
    let shot = chromium(&[&format!("--screenshot={}", png.display())], &url);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&shot.stderr)
        )
    });
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(bytes.len() > 20_000, "a blank page? {} bytes", bytes.len());
    eprintln!("screenshot: {}", png.display());

    // The key browser: ?list=PREFIX lists the keys, each a link that opens it.
    let url = format!(
        "http://127.0.0.1:{http}/?list=page#token={}",
        common::secrets().admin_token
    );
    let dom = chromium(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(r#"href="?key=page%20key">page key</a>"#),
        "the page does not list the key:\n{dom}"
    );
}
