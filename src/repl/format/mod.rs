//! Rendering a command's result, for people or as one line of JSON.
//!
//! Every command produces exactly one [`Outcome`], and every outcome renders to
//! exactly one result: with `--json` a single JSON object on a single line (the
//! shapes the README's "The client" section lists), otherwise a few lines of text.
//!
//! # The JSON contract
//!
//! The documented fields come first, in their documented order, and are never renamed or
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
//! `add-node` and `remove-node` only start a ring change (the data moves in the
//! background and the leader settles it later), so their result says what started
//! and the members once it settles, and points at `status`. `status` prints the
//! member table, then a line when the answering node is not a member, then either
//! `ring settled` or the running change: overall progress (keys, bytes, rate, time
//! left) and one line per sender. `locate` lists the key's replicas, pending owners
//! and fallbacks, each with its state as the answering node sees it.
//!
//! This module only formats; it performs no I/O.

use serde::Serialize;

use crate::error::Error;
use std::collections::BTreeMap;

use crate::rpc::{
    LocateReply, MemberStatus, MembershipReply, NodeState, ReadReply, Refusal, ScanReply,
    StatusReply, TransitionStatus, UserEntry, UserReply, WriteReply,
};
use crate::types::{Key, NodeId, Value};
use crate::vclock::VersionVector;

use super::parse::COMMANDS;

mod buckets;
mod status;
#[cfg(test)]
use status::{bytes_human, duration_human, percent};
use status::{locate_human, status_human};

/// What one command produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `put`.
    Put(WriteReply),
    /// `delete`.
    Delete(WriteReply),
    Get(ReadReply),
    /// `get -v`: also which replicas answered.
    GetVerbose(ReadReply),
    /// `put --w N`: the reply and the W asked for.
    PutWith(WriteReply, u32),
    /// A delete with a per-request W (`DELETE /kv/KEY?w=N`).
    DeleteWith(WriteReply, u32),
    /// `get --r N`: the reply and the R asked for.
    GetWith(ReadReply, u32),
    /// `scan`: one page.
    Scan(ScanReply),
    /// `add-node` or `remove-node`.
    Membership(MembershipReply),
    /// `abort-change`.
    Aborted(MembershipReply),
    Status(StatusReply),
    /// `locate`.
    Locate(LocateReply),
    /// `wait-settled`: the epoch of the settled ring.
    Settled(u64),
    /// `user add`: the new user and its token.
    UserAdded(UserReply),
    /// `user remove`.
    UserRemoved(UserReply),
    /// `user list`.
    Users(Vec<UserEntry>),
    /// `use BUCKET`.
    Using(String),
    /// `bucket create` or `bucket drop`.
    Bucket(crate::rpc::BucketReply),
    /// `bucket list`.
    Buckets(Vec<crate::rpc::BucketEntry>),
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
            Outcome::Put(reply) | Outcome::Delete(reply) => json_write(reply, None),
            Outcome::PutWith(reply, w) | Outcome::DeleteWith(reply, w) => {
                json_write(reply, Some(*w))
            }
            Outcome::Get(reply) | Outcome::GetVerbose(reply) => json_read(reply, None),
            Outcome::GetWith(reply, r) => json_read(reply, Some(*r)),
            Outcome::Scan(page) => serde_json::to_string(&JsonScan {
                ok: true,
                keys: &page.keys,
                next: page.next.as_deref(),
                r: page.r,
                nodes: &page.nodes,
            }),
            Outcome::Membership(reply) | Outcome::Aborted(reply) => {
                serde_json::to_string(&JsonMembership {
                    ok: true,
                    epoch: reply.epoch,
                    members: &reply.members,
                    joining: &reply.joining,
                    leaving: &reply.leaving,
                    unreached: &reply.unreached,
                })
            }
            Outcome::Status(reply) => serde_json::to_string(&JsonStatus {
                ok: true,
                leader: &reply.leader,
                term: reply.term,
                epoch: reply.epoch,
                qsize: reply.replication.n,
                write_n: reply.replication.w,
                read_n: reply.replication.r,
                nodes: &reply.nodes,
                node: &reply.node,
                fsync: &reply.fsync,
                transition: reply.transition.as_ref(),
                member: reply.member,
                removed_at_epoch: reply.removed_at_epoch,
                refused: &reply.refused,
                secure: reply.secure,
            }),
            Outcome::Locate(reply) => serde_json::to_string(&JsonLocate {
                ok: true,
                key: &reply.key,
                epoch: reply.epoch,
                replicas: &reply.replicas,
                pending: &reply.pending,
                fallbacks: &reply.fallbacks,
                states: &reply.states,
            }),
            Outcome::Settled(epoch) => Ok(format!(
                "{{\"ok\":true,\"settled\":true,\"epoch\":{epoch}}}"
            )),
            Outcome::Help(text) => serde_json::to_string(&JsonHelp {
                ok: true,
                help: text,
            }),
            Outcome::UserAdded(reply) => serde_json::to_string(&JsonUser {
                ok: true,
                user: &reply.user,
                role: reply.role.as_str(),
                token: reply.token.as_deref(),
                removed: None,
                epoch: reply.epoch,
            }),
            Outcome::UserRemoved(reply) => serde_json::to_string(&JsonUser {
                ok: true,
                user: &reply.user,
                role: reply.role.as_str(),
                token: None,
                removed: Some(true),
                epoch: reply.epoch,
            }),
            Outcome::Users(users) => serde_json::to_string(&JsonUsers { ok: true, users }),
            Outcome::Using(bucket) => buckets::using_json(bucket),
            Outcome::Bucket(reply) => buckets::bucket_json(reply),
            Outcome::Buckets(list) => buckets::buckets_json(list),
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
            Outcome::PutWith(reply, w) => write_human(
                &format!("ok (w={w} asked, {} acknowledged)", reply.acks.len()),
                reply,
                false,
            ),
            Outcome::DeleteWith(reply, w) => write_human(
                &format!("deleted (w={w} asked, {} acknowledged)", reply.acks.len()),
                reply,
                true,
            ),
            Outcome::GetWith(reply, r) => format!(
                "{}\nr={r} asked, {} answered: {}",
                read_human(reply),
                reply.replicas.len(),
                ids_or_dash(&reply.replicas)
            ),
            Outcome::Scan(page) => scan_human(page),
            Outcome::Delete(reply) => write_human("deleted", reply, true),
            Outcome::Get(reply) => read_human(reply),
            Outcome::GetVerbose(reply) => format!(
                "{}\nanswered by: {}",
                read_human(reply),
                if reply.replicas.is_empty() {
                    "-".to_string()
                } else {
                    join_ids(&reply.replicas)
                }
            ),
            Outcome::Membership(reply) => membership_human(reply),
            Outcome::Aborted(reply) => format!(
                "ring change aborted (epoch {}): the ring is back to {}",
                reply.epoch,
                ids_or_dash(&reply.members)
            ),
            Outcome::Status(reply) => status_human(reply),
            Outcome::Locate(reply) => locate_human(reply),
            Outcome::Settled(epoch) => format!("ring settled (epoch {epoch})"),
            Outcome::UserAdded(reply) => format!(
                "user {} added with role {} (epoch {}). Its token, shown only now:\n{}",
                reply.user,
                reply.role,
                reply.epoch,
                reply.token.as_deref().unwrap_or("-")
            ),
            Outcome::UserRemoved(reply) => format!(
                "user {} ({}) removed (epoch {}): its token no longer works",
                reply.user, reply.role, reply.epoch
            ),
            Outcome::Users(users) if users.is_empty() => {
                "no users (a node's --admin-token-file is the only admin)".to_string()
            }
            Outcome::Users(users) => {
                let width = users
                    .iter()
                    .map(|u| u.user.chars().count())
                    .max()
                    .unwrap_or(0);
                let width = width.max(4);
                let mut lines = vec![format!("{:<width$}  ROLE", "USER")];
                lines.extend(
                    users
                        .iter()
                        .map(|u| format!("{:<width$}  {}", u.user, u.role)),
                );
                lines.join("\n")
            }
            Outcome::Using(bucket) => format!("using bucket {bucket}"),
            Outcome::Bucket(reply) => buckets::bucket_human(reply),
            Outcome::Buckets(list) => buckets::buckets_human(list),
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

/// A value as people read it: its text, and `""` for the empty value (which
/// would otherwise show as nothing at all).
fn shown(value: &Value) -> String {
    if value.is_empty() {
        return "\"\"".to_string();
    }
    lossy(value)
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
    /// The W asked for (`put --w N`) and how many acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acked: Option<usize>,
}

#[derive(Serialize)]
struct JsonRead<'a> {
    ok: bool,
    key: &'a Key,
    values: Vec<String>,
    context: &'a VersionVector,
    replicas: &'a [NodeId],
    /// The R asked for (`get --r N`); `replicas` are the answers reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answered: Option<usize>,
}

#[derive(Serialize)]
struct JsonScan<'a> {
    ok: bool,
    keys: &'a [Key],
    next: Option<&'a str>,
    /// Replicas asked per range: 1, or R with `--consistent`.
    r: u32,
    nodes: &'a [NodeId],
}

/// The `--json` object of a put or delete (`w`: the W asked for, if any).
fn json_write(reply: &WriteReply, w: Option<u32>) -> serde_json::Result<String> {
    serde_json::to_string(&JsonWrite {
        ok: true,
        key: &reply.key,
        context: &reply.context,
        values: reply.values.iter().map(lossy).collect(),
        coordinator: &reply.coordinator,
        acks: &reply.acks,
        hinted: reply.hinted,
        w,
        acked: w.map(|_| reply.acks.len()),
    })
}

/// The `--json` object of a get (`r`: the R asked for, if any).
fn json_read(reply: &ReadReply, r: Option<u32>) -> serde_json::Result<String> {
    serde_json::to_string(&JsonRead {
        ok: true,
        key: &reply.key,
        values: reply.values.iter().map(lossy).collect(),
        context: &reply.context,
        replicas: &reply.replicas,
        r,
        answered: r.map(|_| reply.replicas.len()),
    })
}

/// A scan page for people: one key a line, then how to get the next page.
fn scan_human(page: &ScanReply) -> String {
    let mut lines: Vec<String> = page.keys.clone();
    if page.keys.is_empty() {
        lines.push("(no keys on this page)".to_string());
    }
    match &page.next {
        Some(next) => lines.push(format!(
            "more: pass --after {} for the next page",
            quote_if_needed(next)
        )),
        None => lines.push("(end of keys)".to_string()),
    }
    lines.join("\n")
}

/// `text` as one REPL token: as is when it holds no space, quote or
/// backslash, else in double quotes with `\"` and `\\` escaped.
fn quote_if_needed(text: &str) -> String {
    if !text.is_empty()
        && !text.starts_with("--")
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        return text.to_string();
    }
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[derive(Serialize)]
struct JsonMembership<'a> {
    ok: bool,
    epoch: u64,
    /// The members once the change settles.
    members: &'a [NodeId],
    joining: &'a [NodeId],
    leaving: &'a [NodeId],
    unreached: &'a [NodeId],
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    ok: bool,
    leader: &'a NodeId,
    /// The Raft term of the leader.
    term: u64,
    epoch: u64,
    qsize: usize,
    write_n: usize,
    read_n: usize,
    /// Each member: `id`, `state`, `keys` (null when it did not answer), `hints`, `epoch`.
    nodes: &'a [MemberStatus],
    node: &'a NodeId,
    fsync: &'a str,
    /// The running ring change (null when the ring is settled).
    transition: Option<&'a TransitionStatus>,
    /// Whether the answering node is in the ring.
    member: bool,
    /// Only on a node removed while it was away: the epoch that removed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_at_epoch: Option<u64>,
    /// Keys a node could not hand off because a peer refused them for good.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    refused: &'a [Refusal],
    /// False on a node run `--insecure` (no secret, no tokens).
    secure: bool,
}

#[derive(Serialize)]
struct JsonLocate<'a> {
    ok: bool,
    key: &'a Key,
    epoch: u64,
    replicas: &'a [NodeId],
    pending: &'a [NodeId],
    fallbacks: &'a [NodeId],
    /// `alive`, `suspect` or `down` for each node above.
    states: &'a BTreeMap<NodeId, NodeState>,
}

#[derive(Serialize)]
struct JsonUser<'a> {
    ok: bool,
    user: &'a str,
    role: &'a str,
    /// Only from `user add`: the new token, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    /// Only from `user remove`.
    #[serde(skip_serializing_if = "Option::is_none")]
    removed: Option<bool>,
    epoch: u64,
}

#[derive(Serialize)]
struct JsonUsers<'a> {
    ok: bool,
    users: &'a [UserEntry],
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
        lines.extend(reply.values.iter().map(shown));
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
    lines.extend(reply.values.iter().map(shown));
    lines.push(context_line(&reply.context));
    lines.join("\n")
}

fn join_ids(ids: &[NodeId]) -> String {
    ids.iter()
        .map(NodeId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `-` for an empty list, else the ids joined by commas.
fn ids_or_dash(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        "-".to_string()
    } else {
        join_ids(ids)
    }
}

/// What a ring change does: `adding a:1`, `removing b:1`, or both.
fn describe_change(joining: &[NodeId], leaving: &[NodeId]) -> String {
    let mut parts = Vec::new();
    if !joining.is_empty() {
        parts.push(format!("adding {}", join_ids(joining)));
    }
    if !leaving.is_empty() {
        parts.push(format!("removing {}", join_ids(leaving)));
    }
    if parts.is_empty() {
        return "no node joins or leaves".to_string();
    }
    parts.join("; ")
}

fn membership_human(reply: &MembershipReply) -> String {
    if reply.joining.is_empty() && reply.leaving.is_empty() {
        // remove-node of the only node a change was adding ends the change.
        return format!(
            "ring change ended (epoch {}): members {}",
            reply.epoch,
            ids_or_dash(&reply.members)
        );
    }
    let mut lines = vec![
        format!(
            "ring change started (epoch {}): {}",
            reply.epoch,
            describe_change(&reply.joining, &reply.leaving)
        ),
        format!("members when it settles: {}", ids_or_dash(&reply.members)),
        "data is moving in the background; 'status' shows the progress".to_string(),
    ];
    if !reply.unreached.is_empty() {
        lines.push(format!(
            "not reached yet (they learn the ring when they return): {}",
            join_ids(&reply.unreached)
        ));
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
mod tests;
