//! End-to-end tests of the `client` binary against a real node.
//!
//! Each test starts one node in-process on `127.0.0.1:0` (N = W = R = 1, in
//! memory) and runs the real `client` binary as a child process, in script mode
//! (stdin piped), with `-c`, and with `--json`, asserting on exact output lines and
//! on the exit status. The node runs on a multi-thread runtime so it keeps serving
//! while the test thread waits for the child. Waits are bounded: a child that does
//! not finish within [`CHILD_DEADLINE`] fails the test instead of hanging it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dynamo::config::{Flags, NodeConfig};
use dynamo::server::{self, NodeHandle};
use serde_json::Value as Json;

/// How long one run of the client may take: a handful of local round trips, with
/// room for a loaded CI machine.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// What one run of the client printed, and how it exited.
struct Run {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn json(&self) -> Vec<Json> {
        self.lines()
            .into_iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }
}

/// Runs `client` with `args`, feeding `stdin` (if any) through a pipe, and waits
/// for it on a helper thread so the runtime's workers stay free for the node.
async fn client(args: &[&str], stdin: Option<&str>) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_client"))
            .args(&args)
            .env("DYNAMO_HISTORY", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).expect("write stdin");
            }
            // Dropping the pipe closes stdin: the end of the script.
        }
        let _ = tx.send(child.wait_with_output());
    });
    let output = tokio::task::spawn_blocking(move || rx.recv_timeout(CHILD_DEADLINE))
        .await
        .expect("join")
        .expect("client did not finish in time")
        .expect("client output");
    Run {
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code(),
    }
}

/// A single in-memory node, the leader of its own ring, with N = W = R = 1.
async fn start_node() -> NodeHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = NodeConfig::from_flags(Flags {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        in_memory: true,
        qsize: Some(1),
        write_n: Some(1),
        read_n: Some(1),
        insecure: true,
        ..Default::default()
    })
    .expect("config");
    server::start_on(config, listener)
        .await
        .expect("start node")
}

/// A port on which nothing listens (bound, then released).
async fn dead_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_script_put_get_siblings_resolve_delete() {
    let node = start_node().await;
    let id = node.id.to_string();
    let script = "\
# two blind puts make two siblings
put k {} v1

put k {} v2
get k
get missing
";
    let run = client(&["--node", &id, "--json"], Some(script)).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let lines = run.lines();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert_eq!(
        lines[0],
        format!(
            r#"{{"ok":true,"key":"k","context":{{"{id}":1}},"values":["v1"],"coordinator":"{id}","acks":["{id}"],"hinted":0}}"#
        )
    );
    // The second blind put does not replace v1: its answer shows both versions,
    // and the context that covers them.
    assert_eq!(
        lines[1],
        format!(
            r#"{{"ok":true,"key":"k","context":{{"{id}":2}},"values":["v1","v2"],"coordinator":"{id}","acks":["{id}"],"hinted":0}}"#
        )
    );
    let get = &run.json()[2];
    let mut values: Vec<&str> = get["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_str().expect("string value"))
        .collect();
    values.sort_unstable();
    assert_eq!(
        values,
        ["v1", "v2"],
        "both blind puts survive: {}",
        lines[2]
    );
    assert_eq!(get["ok"], Json::Bool(true));
    assert_eq!(get["key"], "k");
    assert_eq!(get["context"], serde_json::json!({ id.as_str(): 2 }));
    assert_eq!(
        lines[3],
        format!(r#"{{"ok":true,"key":"missing","values":[],"context":{{}},"replicas":["{id}"]}}"#)
    );

    // The merged context replaces both siblings; a delete then hides the value.
    let context = get["context"].to_string();
    let script = format!("put k {context} merged\nget k\n");
    let run = client(&["--node", &id, "--json"], Some(&script)).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let results = run.json();
    let context = results[0]["context"].to_string();
    assert_eq!(
        run.lines()[1],
        format!(
            r#"{{"ok":true,"key":"k","values":["merged"],"context":{context},"replicas":["{id}"]}}"#
        )
    );

    let delete = format!("delete k {context}");
    let run = client(
        &["--node", &id, "--json", "-c", &delete, "-c", "get k"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let results = run.json();
    assert_eq!(results.len(), 2, "{}", run.stdout);
    assert_eq!(results[0]["ok"], Json::Bool(true));
    assert_eq!(results[0]["key"], "k");
    assert_eq!(results[1]["values"], serde_json::json!([]));
    assert_ne!(
        results[1]["context"],
        serde_json::json!({}),
        "a deleted key keeps a context so it can be written again"
    );
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_output_with_dash_c() {
    let node = start_node().await;
    let id = node.id.to_string();
    let run = client(
        &[
            "--node",
            &id,
            "-c",
            "put k {} hello   world",
            "-c",
            "get k",
            "-c",
            r#"put q {} "  quoted \"value\"  ""#,
            "-c",
            "get q",
            "-c",
            "put s {} one",
            "-c",
            "put s {} two",
            "-c",
            "get s",
            "-c",
            "get nothing",
        ],
        None,
    )
    .await;
    assert_eq!(
        run.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    let c1 = format!(r#"context: {{"{id}":1}}"#);
    let c2 = format!(r#"context: {{"{id}":2}}"#);
    let lines = run.lines();
    assert_eq!(
        lines[..4],
        ["ok", c1.as_str(), "hello   world", c1.as_str()]
    );
    assert_eq!(
        lines[4..8],
        ["ok", c1.as_str(), r#"  quoted "value"  "#, c1.as_str()]
    );
    assert_eq!(lines[8..10], ["ok", c1.as_str()]);
    assert_eq!(lines[10], "ok");
    assert!(
        lines[11].starts_with("2 siblings now (concurrent writes"),
        "{}",
        lines[11]
    );
    assert_eq!(lines[12..15], ["one", "two", c2.as_str()]);
    assert_eq!(lines[15], "2 siblings:");
    let mut siblings = [lines[16], lines[17]];
    siblings.sort_unstable();
    assert_eq!(siblings, ["one", "two"]);
    assert_eq!(lines[18..], [c2.as_str(), "(not found)", "context: {}"]);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_set_the_exit_status_and_do_not_stop_the_script() {
    let node = start_node().await;
    let id = node.id.to_string();
    let ghost = format!("127.0.0.1:{}", dead_port().await);
    let script = format!(
        "put k nope v\nadd-node {ghost}\nfrobnicate\nput k {{}}\nget k\nquit\nget never-run\n"
    );
    let run = client(&["--node", &id, "--json"], Some(&script)).await;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    let results = run.json();
    assert_eq!(
        results.len(),
        5,
        "one result per command, none after quit: {}",
        run.stdout
    );
    for failed in &results[..4] {
        assert_eq!(failed["ok"], Json::Bool(false), "{failed}");
    }
    let error = |i: usize| {
        results[i]["error"]
            .as_str()
            .expect("error text")
            .to_string()
    };
    assert!(error(0).starts_with("bad context: "), "{}", error(0));
    assert!(error(1).contains(&ghost), "{}", error(1));
    assert_eq!(error(2), r#"unknown command "frobnicate"; type help"#);
    assert!(
        error(3).starts_with("usage: put KEY CONTEXT VALUE"),
        "{}",
        error(3)
    );
    assert_eq!(results[4]["ok"], Json::Bool(true));

    // Human form of the same kind of failure.
    let run = client(&["--node", &id, "-c", "get"], None).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "error: usage: get [-v] [--r N] KEY\n");
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_naming_a_node_never_in_the_ring_is_refused() {
    let node = start_node().await;
    let id = node.id.to_string();
    // A typo'd port and a context from another cluster: refused, nothing
    // stored; the real node's context (written with spaces) is accepted.
    let script = format!(
        "put k {{\"127.0.0.1:1\":1}} v1\n\
         put k {{\"{id}\":0, \"10.9.9.9~1:13337\":3}} v2\n\
         get k\n\
         put k {{}} v3\n\
         put k {{\"{id}\": 1}} v4\n\
         get k\n"
    );
    let run = client(&["--node", &id, "--json"], Some(&script)).await;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    let r = run.json();
    assert_eq!(r.len(), 6, "{}", run.stdout);
    assert_eq!(r[0]["ok"], Json::Bool(false));
    assert_eq!(
        r[0]["error"],
        Json::String(
            "bad context: it names 127.0.0.1:1, which was never a node of this ring; \
             pass {} or the context printed by get k"
                .into()
        )
    );
    let e1 = r[1]["error"].as_str().expect("error");
    assert!(
        e1.contains("it names 10.9.9.9~1:13337, which was never"),
        "{e1}"
    );
    assert_eq!(r[2]["values"], serde_json::json!([]), "nothing was stored");
    assert_eq!(r[3]["ok"], Json::Bool(true));
    assert_eq!(r[4]["ok"], Json::Bool(true), "{}", r[4]);
    assert_eq!(r[5]["values"], serde_json::json!(["v4"]), "v4 replaced v3");
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_membership_in_json() {
    let node = start_node().await;
    let id = node.id.to_string();
    let run = client(&["--node", &id, "--json", "-c", "status"], None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let status = &run.json()[0];
    assert_eq!(status["ok"], Json::Bool(true));
    assert_eq!(status["leader"], id.as_str());
    assert_eq!(status["node"], id.as_str());
    assert_eq!(status["qsize"], 1);
    assert_eq!(status["write_n"], 1);
    assert_eq!(status["read_n"], 1);
    assert!(status["epoch"].is_u64());
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["id"], id.as_str());
    assert_eq!(nodes[0]["state"], "alive");
    assert!(nodes[0]["keys"].is_u64());

    // --node HOST with --port gives the same node; the human form is a table.
    let port = node.id.port().to_string();
    let run = client(
        &["--node", "127.0.0.1", "--port", &port, "-c", "status"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(
        run.stdout.contains(&format!("leader: {id}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("ID "), "{}", run.stdout);

    // Removing a node that is not a member is refused with ok:false.
    let run = client(
        &["--node", &id, "--json", "-c", "remove-node 127.0.0.1:1"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(1), "stdout: {}", run.stdout);
    assert_eq!(run.json()[0]["ok"], Json::Bool(false));
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_listening_fails_each_command_but_not_help() {
    let dead = format!("127.0.0.1:{}", dead_port().await);
    let run = client(
        &[
            "--node", &dead, "--json", "-c", "help", "-c", "get k", "-c", "status",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, Some(1));
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].starts_with(r#"{"ok":true,"help":"#));
    let refused = format!(r#"{{"ok":false,"error":"{dead}: connection refused"}}"#);
    // The connect is retried by the next command, which fails the same way.
    assert_eq!(lines[1..], [refused.as_str(), refused.as_str()]);

    let run = client(&["--node", &dead, "-c", "help"], None).await;
    assert_eq!(run.code, Some(0), "help needs no node");
    let run = client(&["--node", &dead], Some("")).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), ""),
        "an empty script"
    );
}
