//! Rendering a command's result, for people or as one line of JSON.
//!
//! Every command produces exactly one [`Outcome`], and every outcome renders to
//! exactly one result: with `--json` a single JSON object on a single line (SPEC
//! section 2, "`--json` results"), otherwise a few lines of text.
//!
//! # The JSON contract
//!
//! The fields SPEC lists come first, in SPEC's order, and are never renamed or
//! removed; extra fields (who coordinated, which replicas answered, hints) follow.
//! Contexts are real JSON objects keyed by node identity, exactly what `put` and
//! `delete` accept back as a CONTEXT token. Values are JSON strings: the stored
//! bytes decoded as UTF-8, with invalid sequences replaced by U+FFFD. Everything
//! goes through serde_json, so quotes, backslashes and control characters in keys
//! and values are escaped correctly and the output is always one line.
//!
//! # The human form
//!
//! Made to be read and to be copied from: after a `put`, `delete` or `get` the last
//! line is `context: {...}` written without spaces, so the braces can be pasted as
//! the CONTEXT token of the next command. A `get` prints each sibling value on its
//! own line, raw, announcing `N siblings:` first when there is more than one, and
//! says `(not found)` or `(deleted)` when there is no value. Errors are
//! `error: <message>` where the message is the [`Error`]'s `Display`.
//!
//! This module only formats; it performs no I/O.

use serde::Serialize;

use crate::error::Error;
use crate::rpc::{MemberStatus, MembershipReply, NodeState, ReadReply, StatusReply, WriteReply};
use crate::types::{Key, NodeId, Value};
use crate::vclock::VersionVector;

use super::parse::COMMANDS;

/// What one command produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `put`.
    Put(WriteReply),
    /// `delete`.
    Delete(WriteReply),
    Get(ReadReply),
    /// `add-node` or `remove-node`.
    Membership(MembershipReply),
    Status(StatusReply),
    /// The text `help` shows.
    Help(String),
    Error(Error),
}

impl Outcome {
    /// The outcome of a put (`delete == false`) or delete.
    pub fn write(reply: WriteReply, delete: bool) -> Outcome {
        if delete {
            Outcome::Delete(reply)
        } else {
            Outcome::Put(reply)
        }
    }

    /// True unless the command failed.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Outcome::Error(_))
    }

    /// The result as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        let rendered = match self {
            Outcome::Put(reply) | Outcome::Delete(reply) => serde_json::to_string(&JsonWrite {
                ok: true,
                key: &reply.key,
                context: &reply.context,
                values: reply.values.iter().map(lossy).collect(),
                coordinator: &reply.coordinator,
                acks: &reply.acks,
                hinted: reply.hinted,
            }),
            Outcome::Get(reply) => serde_json::to_string(&JsonRead {
                ok: true,
                key: &reply.key,
                values: reply.values.iter().map(lossy).collect(),
                context: &reply.context,
                replicas: &reply.replicas,
            }),
            Outcome::Membership(reply) => serde_json::to_string(&JsonMembership {
                ok: true,
                epoch: reply.epoch,
                members: &reply.members,
                unreached: &reply.unreached,
            }),
            Outcome::Status(reply) => serde_json::to_string(&JsonStatus {
                ok: true,
                leader: &reply.leader,
                epoch: reply.epoch,
                qsize: reply.replication.n,
                write_n: reply.replication.w,
                read_n: reply.replication.r,
                nodes: &reply.nodes,
                node: &reply.node,
                fsync: &reply.fsync,
            }),
            Outcome::Help(text) => serde_json::to_string(&JsonHelp {
                ok: true,
                help: text,
            }),
            Outcome::Error(e) => return error_json(&e.to_string()),
        };
        rendered.unwrap_or_else(|e| {
            error_json(&format!("internal error: cannot encode the result: {e}"))
        })
    }

    /// The result for people: one or more lines, without the final newline.
    pub fn to_human(&self) -> String {
        match self {
            Outcome::Put(reply) => write_human("ok", reply, false),
            Outcome::Delete(reply) => write_human("deleted", reply, true),
            Outcome::Get(reply) => read_human(reply),
            Outcome::Membership(reply) => membership_human(reply),
            Outcome::Status(reply) => status_human(reply),
            Outcome::Help(text) => text.clone(),
            Outcome::Error(e) => format!("error: {e}"),
        }
    }

    /// [`Outcome::to_json`] or [`Outcome::to_human`].
    pub fn render(&self, json: bool) -> String {
        if json {
            self.to_json()
        } else {
            self.to_human()
        }
    }
}

/// The error object. Encoding a struct of a bool and a string cannot fail, but
/// the fallback keeps even that impossible case one line of valid JSON.
fn error_json(message: &str) -> String {
    serde_json::to_string(&JsonError {
        ok: false,
        error: message,
    })
    .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error: cannot encode the error"}"#.into())
}

#[derive(Serialize)]
struct JsonError<'a> {
    ok: bool,
    error: &'a str,
}

fn lossy(value: &Value) -> String {
    String::from_utf8_lossy(value).into_owned()
}

#[derive(Serialize)]
struct JsonWrite<'a> {
    ok: bool,
    key: &'a Key,
    context: &'a VersionVector,
    values: Vec<String>,
    coordinator: &'a NodeId,
    acks: &'a [NodeId],
    hinted: usize,
}

#[derive(Serialize)]
struct JsonRead<'a> {
    ok: bool,
    key: &'a Key,
    values: Vec<String>,
    context: &'a VersionVector,
    replicas: &'a [NodeId],
}

#[derive(Serialize)]
struct JsonMembership<'a> {
    ok: bool,
    epoch: u64,
    members: &'a [NodeId],
    unreached: &'a [NodeId],
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    ok: bool,
    leader: &'a NodeId,
    epoch: u64,
    qsize: usize,
    write_n: usize,
    read_n: usize,
    /// Each member: `id`, `state`, `keys` (null when it did not answer), `hints`, `epoch`.
    nodes: &'a [MemberStatus],
    node: &'a NodeId,
    fsync: &'a str,
}

#[derive(Serialize)]
struct JsonHelp<'a> {
    ok: bool,
    help: &'a str,
}

fn context_line(context: &VersionVector) -> String {
    format!("context: {}", context.to_json())
}

fn write_human(verb: &str, reply: &WriteReply, delete: bool) -> String {
    let mut head = verb.to_string();
    if reply.hinted > 0 {
        head.push_str(&format!(
            " ({} of {} acks from stand-ins holding a hint)",
            reply.hinted,
            reply.acks.len()
        ));
    }
    let mut lines = vec![head];
    // A put's own value is the one just typed; show the versions only when others
    // (writes this context had not seen) stand beside it.
    let shown_from = if delete { 1 } else { 2 };
    if reply.values.len() >= shown_from {
        lines.push(format!(
            "{} {} now (concurrent writes this context had not seen stay beside {}):",
            reply.values.len(),
            if reply.values.len() == 1 {
                "version"
            } else {
                "siblings"
            },
            if delete { "the delete" } else { "yours" },
        ));
        lines.extend(reply.values.iter().map(lossy));
    }
    lines.push(context_line(&reply.context));
    lines.join("\n")
}

fn read_human(reply: &ReadReply) -> String {
    let mut lines = Vec::new();
    match reply.values.len() {
        0 if reply.context.is_empty() => lines.push("(not found)".to_string()),
        0 => lines.push("(deleted)".to_string()),
        1 => {}
        n => lines.push(format!("{n} siblings:")),
    }
    lines.extend(reply.values.iter().map(lossy));
    lines.push(context_line(&reply.context));
    lines.join("\n")
}

fn join_ids(ids: &[NodeId]) -> String {
    ids.iter()
        .map(NodeId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn membership_human(reply: &MembershipReply) -> String {
    let mut out = format!(
        "ok: ring epoch {}, {} member{}: {}",
        reply.epoch,
        reply.members.len(),
        if reply.members.len() == 1 { "" } else { "s" },
        join_ids(&reply.members)
    );
    if !reply.unreached.is_empty() {
        out.push_str(&format!(
            "\nnot reached yet (they learn the ring when they return): {}",
            join_ids(&reply.unreached)
        ));
    }
    out
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Alive => "alive",
        NodeState::Suspect => "suspect",
        NodeState::Down => "down",
    }
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

fn status_human(reply: &StatusReply) -> String {
    let r = &reply.replication;
    let mut lines = vec![
        format!("node:   {} (fsync {})", reply.node, reply.fsync),
        format!("leader: {}", reply.leader),
        format!("epoch:  {}", reply.epoch),
        format!("N/W/R:  {}/{}/{}", r.n, r.w, r.r),
        String::new(),
    ];
    let mut rows = vec![[
        "ID".to_string(),
        "STATE".to_string(),
        "KEYS".to_string(),
        "HINTS".to_string(),
        "EPOCH".to_string(),
    ]];
    rows.extend(reply.nodes.iter().map(|m| {
        [
            m.id.to_string(),
            state_name(m.state).to_string(),
            opt(m.keys),
            opt(m.hints),
            opt(m.epoch),
        ]
    }));
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        lines.push(cells.join("  ").trim_end().to_string());
    }
    lines.join("\n")
}

/// The text of `help`, or of `help COMMAND`.
pub fn help_text(topic: Option<&str>) -> String {
    if let Some(info) = topic.and_then(super::parse::command_info) {
        return format!("usage: {}\n  {}", info.usage, info.summary);
    }
    let width = COMMANDS.iter().map(|c| c.usage.len()).max().unwrap_or(0);
    let mut lines = vec!["commands:".to_string()];
    lines.extend(
        COMMANDS
            .iter()
            .map(|c| format!("  {:<width$}  {}", c.usage, c.summary)),
    );
    lines.extend(
        [
            "",
            "Tokens are separated by spaces. A token that begins with \" runs to the closing \"",
            "and may hold spaces (\\\" and \\\\ escape inside it); quotes inside other tokens are",
            "literal. VALUE is one quoted token or the rest of the line, as typed.",
            "A CONTEXT is {} for a new key, or the context printed by get, written without",
            "spaces, e.g. {\"127.0.0.1:13337\":2}. Siblings are resolved by a put with the",
            "context of a get that showed them all.",
        ]
        .map(String::from),
    );
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReplicaFailure;
    use crate::types::Replication;

    fn id(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    fn vv(s: &str) -> VersionVector {
        VersionVector::parse_context(s).unwrap()
    }

    fn write(context: &str, values: &[&str], hinted: usize) -> WriteReply {
        WriteReply {
            key: "k".into(),
            context: vv(context),
            values: values
                .iter()
                .map(|v| Value::copy_from_slice(v.as_bytes()))
                .collect(),
            coordinator: id("127.0.0.1:13337"),
            acks: vec![id("127.0.0.1:13337"), id("127.0.0.1:13338")],
            hinted,
        }
    }

    fn read(key: &str, values: &[&[u8]], context: &str) -> ReadReply {
        ReadReply {
            key: key.into(),
            values: values.iter().map(|v| Value::copy_from_slice(v)).collect(),
            context: vv(context),
            replicas: vec![id("127.0.0.1:13337")],
        }
    }

    fn status() -> StatusReply {
        StatusReply {
            node: id("127.0.0.1:13338"),
            leader: id("127.0.0.1:13337"),
            epoch: 7,
            replication: Replication { n: 3, w: 2, r: 2 },
            fsync: "batch".into(),
            nodes: vec![
                MemberStatus {
                    id: id("127.0.0.1:13337"),
                    state: NodeState::Alive,
                    keys: Some(120),
                    hints: Some(0),
                    epoch: Some(7),
                },
                MemberStatus {
                    id: id("10.0.0.2:13338"),
                    state: NodeState::Down,
                    keys: None,
                    hints: None,
                    epoch: None,
                },
            ],
        }
    }

    #[test]
    fn put_and_delete_json() {
        assert_eq!(
            Outcome::write(write(r#"{"127.0.0.1:13337":1}"#, &["v"], 0), false).to_json(),
            r#"{"ok":true,"key":"k","context":{"127.0.0.1:13337":1},"values":["v"],"coordinator":"127.0.0.1:13337","acks":["127.0.0.1:13337","127.0.0.1:13338"],"hinted":0}"#
        );
        assert_eq!(
            Outcome::write(write(r#"{"127.0.0.1:13337":2}"#, &[], 1), true).to_json(),
            r#"{"ok":true,"key":"k","context":{"127.0.0.1:13337":2},"values":[],"coordinator":"127.0.0.1:13337","acks":["127.0.0.1:13337","127.0.0.1:13338"],"hinted":1}"#
        );
    }

    #[test]
    fn get_json() {
        assert_eq!(
            Outcome::Get(read(
                "k",
                &[b"v1", b"v2"],
                r#"{"127.0.0.1:13337":1,"127.0.0.1:13338":1}"#
            ))
            .to_json(),
            r#"{"ok":true,"key":"k","values":["v1","v2"],"context":{"127.0.0.1:13337":1,"127.0.0.1:13338":1},"replicas":["127.0.0.1:13337"]}"#
        );
        assert_eq!(
            Outcome::Get(read("missing", &[], "{}")).to_json(),
            r#"{"ok":true,"key":"missing","values":[],"context":{},"replicas":["127.0.0.1:13337"]}"#
        );
    }

    #[test]
    fn json_escapes_and_decodes_lossily() {
        assert_eq!(
            Outcome::Get(read("a \"b\"", &[b"line\nbreak\t\\", b"\xffok"], "{}")).to_json(),
            r#"{"ok":true,"key":"a \"b\"","values":["line\nbreak\t\\","\ufffdok"],"context":{},"replicas":["127.0.0.1:13337"]}"#
                .replace(r"\ufffd", "\u{fffd}")
        );
    }

    #[test]
    fn error_json() {
        let e = Error::WriteQuorum {
            needed: 2,
            acked: 1,
            failures: vec![ReplicaFailure {
                node: id("127.0.0.1:13338"),
                reason: "connection refused".into(),
            }],
        };
        assert_eq!(
            Outcome::Error(e).to_json(),
            r#"{"ok":false,"error":"write quorum not reached: 1 of 2 acks (127.0.0.1:13338: connection refused)"}"#
        );
        assert_eq!(
            Outcome::Error(Error::invalid(r#"unknown command "foo"; type help"#)).to_json(),
            r#"{"ok":false,"error":"unknown command \"foo\"; type help"}"#
        );
    }

    #[test]
    fn membership_json() {
        let reply = MembershipReply {
            epoch: 7,
            members: vec![id("127.0.0.1:13337"), id("127.0.0.1:13338")],
            unreached: vec![],
        };
        assert_eq!(
            Outcome::Membership(reply).to_json(),
            r#"{"ok":true,"epoch":7,"members":["127.0.0.1:13337","127.0.0.1:13338"],"unreached":[]}"#
        );
    }

    #[test]
    fn status_json() {
        assert_eq!(
            Outcome::Status(status()).to_json(),
            concat!(
                r#"{"ok":true,"leader":"127.0.0.1:13337","epoch":7,"qsize":3,"write_n":2,"read_n":2,"#,
                r#""nodes":[{"id":"127.0.0.1:13337","state":"alive","keys":120,"hints":0,"epoch":7},"#,
                r#"{"id":"10.0.0.2:13338","state":"down","keys":null,"hints":null,"epoch":null}],"#,
                r#""node":"127.0.0.1:13338","fsync":"batch"}"#
            )
        );
    }

    #[test]
    fn help_json_is_one_line() {
        let json = Outcome::Help(help_text(None)).to_json();
        assert!(
            json.starts_with(r#"{"ok":true,"help":"commands:\n"#),
            "{json}"
        );
        assert!(!json.contains('\n'));
    }

    #[test]
    fn human_write_and_read() {
        assert_eq!(
            Outcome::write(write(r#"{"127.0.0.1:13337":1}"#, &["v"], 0), false).to_human(),
            "ok\ncontext: {\"127.0.0.1:13337\":1}"
        );
        assert_eq!(
            Outcome::write(write(r#"{"127.0.0.1:13337":2}"#, &["a", "b"], 0), false).to_human(),
            "ok\n2 siblings now (concurrent writes this context had not seen stay beside yours):\n\
             a\nb\ncontext: {\"127.0.0.1:13337\":2}"
        );
        assert_eq!(
            Outcome::write(write(r#"{"127.0.0.1:13337":2}"#, &[], 1), true).to_human(),
            "deleted (1 of 2 acks from stand-ins holding a hint)\ncontext: {\"127.0.0.1:13337\":2}"
        );
        assert_eq!(
            Outcome::write(write(r#"{"127.0.0.1:13337":3}"#, &["x"], 0), true).to_human(),
            "deleted\n1 version now (concurrent writes this context had not seen stay beside the delete):\n\
             x\ncontext: {\"127.0.0.1:13337\":3}"
        );
        assert_eq!(
            Outcome::Get(read("k", &[b"hello   world"], r#"{"127.0.0.1:13337":1}"#)).to_human(),
            "hello   world\ncontext: {\"127.0.0.1:13337\":1}"
        );
        assert_eq!(
            Outcome::Get(read("k", &[b"v1", b"v2"], r#"{"a:1":1,"b:1":1}"#)).to_human(),
            "2 siblings:\nv1\nv2\ncontext: {\"a:1\":1,\"b:1\":1}"
        );
        assert_eq!(
            Outcome::Get(read("k", &[], "{}")).to_human(),
            "(not found)\ncontext: {}"
        );
        assert_eq!(
            Outcome::Get(read("k", &[], r#"{"a:1":3}"#)).to_human(),
            "(deleted)\ncontext: {\"a:1\":3}"
        );
        assert_eq!(
            Outcome::Error(Error::NotLeader {
                leader: id("127.0.0.1:13337")
            })
            .to_human(),
            "error: not the leader: the leader is 127.0.0.1:13337"
        );
    }

    #[test]
    fn human_status_is_a_table() {
        assert_eq!(
            Outcome::Status(status()).to_human(),
            "node:   127.0.0.1:13338 (fsync batch)\n\
             leader: 127.0.0.1:13337\n\
             epoch:  7\n\
             N/W/R:  3/2/2\n\
             \n\
             ID               STATE  KEYS  HINTS  EPOCH\n\
             127.0.0.1:13337  alive  120   0      7\n\
             10.0.0.2:13338   down   -     -      -"
        );
    }

    #[test]
    fn human_membership() {
        let reply = MembershipReply {
            epoch: 3,
            members: vec![id("a:1"), id("b:1")],
            unreached: vec![id("b:1")],
        };
        assert_eq!(
            Outcome::Membership(reply).to_human(),
            "ok: ring epoch 3, 2 members: a:1, b:1\n\
             not reached yet (they learn the ring when they return): b:1"
        );
    }

    #[test]
    fn help_for_one_command() {
        assert_eq!(
            help_text(Some("get")),
            "usage: get KEY\n  every current version (sibling) of KEY and their merged context"
        );
    }
}
