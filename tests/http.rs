//! The HTTP API on real nodes, driven by `curl` as a user would: every route
//! and the status codes it answers with (values byte for byte with their
//! type, siblings as 300, delete then 404, a binary file round trip, a
//! non-leader refusing a ring change with 409, 413 over the value limit, 503
//! with the reason when a quorum fails, 400 for bad input, 404 for unknown
//! routes), `/metrics` counting what was asked, and `/openapi.json`.

mod common;

use std::process::Command;

use common::Cluster;
use serde_json::Value;

/// What curl got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A response header's value (names are case-insensitive).
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// `curl -s ARGS http://127.0.0.1:PORT PATH`: status, headers, body.
fn curl(port: u16, path: &str, args: &[&str]) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(["-H", &common::bearer()])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {path} {args:?} failed (a dropped connection?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Answer {
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn put(port: u16, key: &str, value: &str, context: Option<&str>) -> Answer {
    let mut args = vec![
        "-X",
        "PUT",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        value,
    ];
    let header;
    if let Some(c) = context {
        header = format!("X-Dynamo-Context: {c}");
        args.extend(["-H", &header]);
    }
    curl(port, &format!("/kv/{key}"), &args)
}

#[test]
fn values_siblings_deletes_and_files_over_http() {
    let c = Cluster::ring(3, (3, 2, 2));
    let (a, b) = (c.nodes[0].http, c.nodes[1].http);

    // One value, byte for byte with its type, readable through another node.
    let r = put(a, "greeting", "hello", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ok"], true);
    assert_eq!(r.json()["key"], "greeting");
    let ctx1 = r.header("x-dynamo-context").expect("context header");
    assert_eq!(
        serde_json::from_str::<Value>(&ctx1).unwrap(),
        r.json()["context"]
    );
    let g = curl(b, "/kv/greeting", &[]);
    assert_eq!((g.status, g.text().as_str()), (200, "hello"));
    assert_eq!(g.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(g.header("x-dynamo-context"), Some(ctx1.clone()));
    let gj = curl(b, "/kv/greeting", &["-H", "Accept: application/json"]);
    assert_eq!(gj.status, 200);
    assert_eq!(gj.json()["values"], serde_json::json!(["hello"]));

    // Two puts without a context: siblings, answered 300; a put with the
    // merged context resolves them.
    assert_eq!(put(a, "s", "one", None).status, 200);
    assert_eq!(put(b, "s", "two", None).status, 200);
    let s = curl(a, "/kv/s", &[]);
    assert_eq!(s.status, 300, "{}", s.text());
    let mut values: Vec<String> = serde_json::from_value(s.json()["values"].clone()).unwrap();
    values.sort();
    assert_eq!(values, ["one", "two"]);
    let merged = s.header("x-dynamo-context").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&merged).unwrap(),
        s.json()["context"]
    );
    assert_eq!(put(a, "s", "both", Some(&merged)).status, 200);
    let s = curl(b, "/kv/s", &[]);
    assert_eq!((s.status, s.text().as_str()), (200, "both"));

    // Delete with the context, then 404 (with the tombstone's context).
    let ctx = s.header("x-dynamo-context").unwrap();
    let d = curl(
        a,
        "/kv/s",
        &["-X", "DELETE", "-H", &format!("X-Dynamo-Context: {ctx}")],
    );
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.json()["ok"], true);
    let gone = curl(b, "/kv/s", &[]);
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert_eq!(gone.json()["ok"], false);
    let never = curl(b, "/kv/never-written", &[]);
    assert_eq!(never.status, 404);
    assert_eq!(never.json()["error"], "not found: never-written");

    // A binary file: curl -T up, curl -o down, same bytes and type.
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("photo.jpg");
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&photo, &bytes).unwrap();
    let up = curl(
        a,
        "/kv/photos%2Fphoto.jpg",
        &[
            "-T",
            photo.to_str().unwrap(),
            "-H",
            "Content-Type: image/jpeg",
        ],
    );
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(
        up.json()["key"],
        "photos/photo.jpg",
        "the path is percent-decoded"
    );
    let back = curl(b, "/kv/photos%2Fphoto.jpg", &[]);
    assert_eq!(back.status, 200);
    assert_eq!(back.header("content-type").as_deref(), Some("image/jpeg"));
    assert!(
        back.body == bytes,
        "the file came back changed ({} bytes)",
        back.body.len()
    );

    // A value stored from the REPL has no type: served as octet-stream.
    let out = c.client(0, &["put plain {} from-the-repl"]);
    assert_eq!(out.results[0]["ok"], true);
    let p = curl(a, "/kv/plain", &[]);
    assert_eq!(p.text(), "from-the-repl");
    assert_eq!(
        p.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    // ... and a value put over HTTP reads back in the REPL.
    let out = c.client(1, &["get greeting"]);
    assert_eq!(out.results[0]["values"], serde_json::json!(["hello"]));

    // Empty values are values.
    assert_eq!(put(a, "empty", "", None).status, 200);
    let e = curl(b, "/kv/empty", &[]);
    assert_eq!((e.status, e.body.len()), (200, 0));
}

#[test]
fn bad_input_gets_a_clear_4xx_and_quorum_failures_a_503() {
    let mut c = Cluster::ring(3, (3, 2, 2));
    let a = c.nodes[0].http;
    let check = |r: &Answer, status: u16, says: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.json()["ok"], false, "{}", r.text());
        let e = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains(says), "{e:?} does not say {says:?}");
    };

    check(&curl(a, "/nowhere", &[]), 404, "no such route");
    check(&curl(a, "/kv/k", &["-X", "PATCH"]), 405, "not allowed");
    check(
        &put(a, "k", "v", Some("{\"127.0.0.1:1\":")),
        400,
        "bad context",
    );
    check(&put(a, "k", "v", Some("not json")), 400, "bad context");
    let long_key = "k".repeat(2000);
    check(
        &curl(a, &format!("/kv/{long_key}"), &[]),
        400,
        "key too large",
    );
    check(&curl(a, "/kv/%FF%FE", &[]), 400, "bad key");
    check(
        &curl(a, "/ring/nodes/nonsense", &["-X", "POST"]),
        400,
        "bad node",
    );

    // Over the value limit: 413, whether the length is declared or streamed.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; dynamo::types::MAX_VALUE_BYTES + 1]).unwrap();
    let big_arg = format!("@{}", big.display());
    check(
        &curl(a, "/kv/big", &["-X", "PUT", "--data-binary", &big_arg]),
        413,
        "value too large",
    );
    check(
        &curl(
            a,
            "/kv/big",
            &[
                "-X",
                "PUT",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &big_arg,
            ],
        ),
        413,
        "value too large",
    );
    assert_eq!(curl(a, "/kv/big", &[]).status, 404, "nothing was stored");
    // A client that sends the whole body without waiting (no `Expect:
    // 100-continue`, as Python's http.client and most libraries do) must
    // read its 413, not a reset connection, five times out of five.
    for _ in 0..5 {
        let status = put_without_expect(a, dynamo::types::MAX_VALUE_BYTES + 1);
        assert!(status.starts_with("HTTP/1.1 413"), "{status:?}");
    }

    // Headers over the limit.
    let huge = format!("X-Filler: {}", "f".repeat(20_000));
    check(
        &curl(a, "/status", &["-H", &huge]),
        431,
        "headers too large",
    );

    // Ring changes go to the leader: elsewhere 409, naming it.
    let r = curl(c.nodes[1].http, "/ring/nodes/127.0.0.1:1", &["-X", "POST"]);
    check(&r, 409, "not the leader");
    assert_eq!(r.json()["leader"], c.nodes[0].id.as_str());
    // abort-change likewise; at the leader with no change running, 409 too.
    let r = curl(c.nodes[1].http, "/ring/transition", &["-X", "DELETE"]);
    check(&r, 409, "not the leader");
    let r = curl(c.nodes[0].http, "/ring/transition", &["-X", "DELETE"]);
    check(&r, 409, "no ring change is running");

    // Two of three replicas gone: a put cannot reach W = 2.
    c.kill(1);
    c.kill(2);
    let r = put(a, "q", "v", None);
    check(&r, 503, "write quorum not reached: 1 of 2 acks");
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains(&c.nodes[1].id) || e.contains(&c.nodes[2].id),
        "{e}"
    );
    assert!(e.contains("may still have been stored"), "{e}");
    check(&curl(a, "/kv/q", &[]), 503, "read quorum not reached");
}

#[test]
fn status_locate_ring_changes_metrics_openapi_and_the_page() {
    let c = Cluster::ring_with(3, 2, (2, 1, 1), &[]);
    let a = c.nodes[0].http;

    // Probes, without a token: every node is live; a member is ready, the
    // node not yet added is not.
    let probe = |port: u16, path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for n in &c.nodes {
        assert_eq!(
            probe(n.http, "/health/live"),
            "{\"ok\":true,\"live\":true}\n\n200"
        );
    }
    let ready = probe(c.nodes[1].http, "/health/ready");
    assert!(
        ready.starts_with("{\"ok\":true,\"ready\":true,\"epoch\":") && ready.ends_with("200"),
        "{ready}"
    );
    let outside = probe(c.nodes[2].http, "/health/ready");
    assert!(
        outside.contains("not ready: it is not a member") && outside.ends_with("503"),
        "{outside}"
    );

    let s = curl(a, "/status", &[]);
    assert_eq!(s.status, 200);
    let s = s.json();
    assert_eq!(s["leader"], c.nodes[0].id.as_str());
    assert_eq!(
        (s["qsize"].as_u64(), s["write_n"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(s["nodes"].as_array().unwrap().len(), 2);
    assert!(s["transition"].is_null());

    let l = curl(c.nodes[1].http, "/locate/some%20key", &[]);
    assert_eq!(l.status, 200);
    let l = l.json();
    assert_eq!(l["key"], "some key");
    assert_eq!(l["replicas"].as_array().unwrap().len(), 2);

    // add-node over HTTP at the leader; the change settles.
    let r = curl(
        a,
        &format!("/ring/nodes/{}", c.nodes[2].id),
        &["-X", "POST"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 3);
    c.wait_settled(0, common::SETTLE_LIMIT);
    let r = curl(
        a,
        &format!("/ring/nodes/{}", c.nodes[2].id),
        &["-X", "DELETE"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["leaving"], serde_json::json!([c.nodes[2].id]));
    c.wait_settled(0, common::SETTLE_LIMIT);

    // Metrics count what was asked, by operation and outcome.
    put(a, "m", "v", None);
    curl(a, "/kv/m", &[]);
    curl(a, "/kv/m", &["-X", "PUT", "-H", "X-Dynamo-Context: nope"]);
    let run = c.client(0, &["get m", "get m"]);
    assert_eq!(run.status, 0, "{run:?}");
    let m = curl(a, "/metrics", &[]);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    let sample = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert_eq!(
        sample(r#"dynamo_requests_total{op="put",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"dynamo_requests_total{op="put",outcome="invalid"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"dynamo_requests_total{op="get",outcome="ok"}"#),
        3.0
    );
    // One add from the client when the ring was made, one over HTTP.
    assert_eq!(
        sample(r#"dynamo_requests_total{op="add_node",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        sample(r#"dynamo_request_duration_seconds_count{op="get",outcome="ok"}"#),
        3.0
    );
    assert!(sample("dynamo_keys") >= 1.0);
    assert!(sample("dynamo_ring_epoch") >= 3.0);
    for series in [
        "dynamo_tombstones ",
        "dynamo_hints_pending_total ",
        "dynamo_transition_running ",
        "dynamo_anti_entropy_exchanges_total ",
        "dynamo_anti_entropy_keys_repaired_total ",
        "# TYPE dynamo_request_duration_seconds histogram",
        "dynamo_quorum_failures_total{op=\"put\"}",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }

    // The OpenAPI document names every route.
    let o = curl(a, "/openapi.json", &[]).json();
    assert!(o["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/kv/{key}",
        "/b/{bucket}/kv/{key}",
        "/health/live",
        "/health/ready",
        "/locate/{key}",
        "/status",
        "/ring/nodes/{node}",
        "/metrics",
        "/",
    ] {
        assert!(o["paths"].get(path).is_some(), "{path} missing");
    }

    // The page is the node's own, with nothing fetched from elsewhere.
    let p = curl(a, "/", &[]);
    assert_eq!(p.status, 200);
    assert!(p.header("content-type").unwrap().starts_with("text/html"));
    let html = p.text();
    assert!(html.contains("id=\"members\""));
    for remote in ["http://", "https://", "//cdn"] {
        assert!(
            !html.contains(&format!("src=\"{remote}"))
                && !html.contains(&format!("href=\"{remote}")),
            "the page loads {remote} assets"
        );
    }
}

/// PUTs `len` bytes to `/kv/big` the way a client that never waits for
/// `100 Continue` does: headers and the whole body, then the answer. Returns
/// the status line, or what went wrong.
fn put_without_expect(port: u16, len: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "PUT /kv/big HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\nContent-Length: {len}\r\n\r\n",
        common::bearer()
    );
    if let Err(e) = s.write_all(head.as_bytes()) {
        return format!("writing the headers failed: {e}");
    }
    let body = vec![b'x'; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(body.len());
        if let Err(e) = s.write_all(&body[..n]) {
            return format!("writing the body failed after {} bytes: {e}", len - left);
        }
        left -= n;
    }
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(_) => line,
        Err(e) => format!("reading the answer failed: {e}"),
    }
}
