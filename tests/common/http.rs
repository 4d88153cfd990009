//! HTTP requests from the tests, through `curl`.

use std::process::Command;

use super::bearer;

/// `curl` with the admin token against `127.0.0.1:PORT`: the status and the body.
#[allow(dead_code)]
pub fn curl(port: u16, path: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(["-H", &bearer()])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}
