//! The ring's script tests: every file in `src/ring/testdata/` is a
//! [goldenscript](https://docs.rs/goldenscript/0.7) run against [`Script`],
//! one test per file, like every data-driven test of the crate (the vclock's,
//! the simulation's scenarios).
//!
//! A file is a list of blocks: command lines, a `---` line, the output the
//! commands print, and a blank line; `#` starts a comment. The test fails with
//! a diff when the output differs from the one recorded;
//! `UPDATE_GOLDENFILES=1 cargo test --lib ring::` rewrites the files with the
//! actual output instead, and the diff is then reviewed like code.
//!
//! Arguments are positional or `key=value`. Goldenscript takes bare only
//! `[A-Za-z0-9_-./@]`, so node ids and keys with a `:` are quoted (`"a:1"`,
//! `acks="a:1,b:1"`), and so is the JSON of `validate` (`'{"epoch":1,...}'`).
//! An unknown command or argument fails the test; a change the ring refuses
//! prints `error: ...`. Commands:
//!
//! - `members ID... [n=N] [w=W] [r=R] [tokens=T]`: a fresh epoch-1 state led
//!   by the first ID listed (N defaults to 3, W and R to min(2, N)).
//! - `add ID`, `remove ID`: the next epoch at once (or `error: ...`).
//! - `begin-add ID [uuid=UUID]`, `begin-remove ID`: start a ring change;
//!   `settle [unreported=ID,...]`: end it (the nodes listed never reported
//!   their transfer); `abort`; `readmit ID uuid=UUID`: a wiped node back
//!   under a new identity.
//! - `placement KEY...`: each key's replicas, pending owners and fallbacks.
//! - `quorum KEY need=W [acks=ID,...]`: the write quorum of the key's
//!   placement after these acknowledgements.
//! - `moving COUNT`: how many of keys `key0..keyCOUNT` the running change
//!   moves, and to whom.
//! - `preflist KEY... [n=N]`: each key's preference list (n= overrides N).
//! - `walk KEY...`: each key's walk, `|` after the preference list.
//! - `moved COUNT`: owner changes of keys `key0..keyCOUNT` since the ring
//!   before the last change.
//! - `balance COUNT`: owned keys per node among `key0..keyCOUNT`.
//! - `state`: the state as JSON; `validate JSON`: decode and validate.

use std::error::Error as StdError;

use goldenscript::{Argument, ArgumentConsumer, Command};

use super::*;

/// What a command returns: its output, or why it could not run.
type Outcome<T> = std::result::Result<T, Box<dyn StdError>>;

/// Runs `testdata/NAME` against its recorded output.
pub(super) fn run_script(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/ring/testdata")
        .join(name);
    goldenscript::run(&mut Script::default(), &path)
        .unwrap_or_else(|e| panic!("src/ring/testdata/{name}: {e}"));
}

/// A mistake in a script fails it and says where, rather than printing
/// something that could be recorded as expected output.
#[test]
fn unknown_commands_and_arguments_fail_the_script() {
    let fails = |input: &str| -> String {
        match goldenscript::generate(&mut Script::default(), input) {
            Ok(out) => panic!("{input:?} ran: {out}"),
            Err(e) => e.to_string(),
        }
    };
    let setup = "members \"a:1\" \"b:1\"\n---\n\n";
    for (input, want) in [
        ("members \"a:1\" x=1\n---\n", "invalid argument 'x'"),
        ("frobnicate\n---\n", "unknown command \"frobnicate\""),
        ("add \"c:1\"\n---\n", "no ring yet"),
        ("members a\n---\n", "bad node id \"a\""),
        (
            &format!("{setup}add \"c:1\" \"d:1\"\n---\n"),
            "invalid argument 'd:1'",
        ),
        (
            &format!("{setup}quorum key1 acks=\"a:1\"\n---\n"),
            "need= missing",
        ),
        (
            &format!("{setup}preflist key1 m=2\n---\n"),
            "invalid argument 'm'",
        ),
        (&format!("{setup}placement\n---\n"), "no key given"),
        (
            &format!("{setup}balance many\n---\n"),
            "invalid argument 'many'",
        ),
        (
            &format!("{setup}moved 10\n---\n"),
            "no ring before the last change",
        ),
    ] {
        let error = fails(input);
        assert!(error.contains(want), "{input:?}: {error}");
    }
}

/// One script's rings: the current one, and the one before the last change.
#[derive(Default)]
pub(super) struct Script {
    current: Option<Ring>,
    previous: Option<Ring>,
}

impl goldenscript::Runner for Script {
    fn run(&mut self, command: &Command) -> Outcome<String> {
        let mut args = command.consume_args();
        let mut out = String::new();
        match command.name.as_str() {
            "members" => {
                let n = args.lookup_parse("n")?.unwrap_or(3);
                let replication = Replication {
                    n,
                    w: args.lookup_parse("w")?.unwrap_or(n.min(2)),
                    r: args.lookup_parse("r")?.unwrap_or(n.min(2)),
                };
                let tokens: Option<u32> = args.lookup_parse("tokens")?;
                let ids = nodes(args.rest_pos())?;
                args.reject_rest()?;
                let Some(first) = ids.first() else {
                    return Err("members: no node given".into());
                };
                let mut state = state_of(ids.clone(), replication);
                state.leader = first.clone();
                if let Some(t) = tokens {
                    state.tokens_per_node = t;
                }
                match state.validate() {
                    Ok(()) => out = self.advance(state),
                    Err(e) => out = format!("error: {e}\n"),
                }
            }
            "add" | "remove" => {
                let id = node_arg(&mut args, "ID")?;
                args.reject_rest()?;
                let state = self.ring()?.state();
                let next = if command.name == "add" {
                    state.with_member(id)
                } else {
                    state.without_member(&id)
                };
                out = self.apply(next);
            }
            "begin-add" => {
                let id = node_arg(&mut args, "ID")?;
                let uuid: Option<Uuid> = args.lookup_parse("uuid")?;
                args.reject_rest()?;
                let next = self.ring()?.state().begin_add(id, uuid, 0);
                out = self.apply(next);
            }
            "begin-remove" => {
                let id = node_arg(&mut args, "ID")?;
                args.reject_rest()?;
                let next = self.ring()?.state().begin_remove(&id, 0);
                out = self.apply(next);
            }
            "settle" => {
                let unreported = match args.lookup("unreported") {
                    Some(list) => node_list(&list.value)?,
                    None => Vec::new(),
                };
                args.reject_rest()?;
                let next = self.ring()?.state().settle(&unreported);
                out = self.apply(next);
            }
            "abort" => {
                args.reject_rest()?;
                let next = self.ring()?.state().abort();
                out = self.apply(next);
            }
            "readmit" => {
                let id = node_arg(&mut args, "ID")?;
                let uuid: Uuid = args.lookup_parse("uuid")?.ok_or("readmit: uuid= missing")?;
                args.reject_rest()?;
                let next = self.ring()?.state().readmit(&id, uuid);
                out = self.apply(next);
            }
            "placement" => {
                let keys = keys(&mut args)?;
                let ring = self.ring()?;
                for key in keys {
                    let p = ring.placement(key.as_bytes());
                    let list = |l: &[NodeId]| {
                        if l.is_empty() {
                            "-".to_string()
                        } else {
                            join(l)
                        }
                    };
                    writeln!(
                        out,
                        "{key}: replicas {} | pending {} | fallbacks {}{}",
                        list(&p.replicas),
                        list(&p.pending),
                        list(&p.fallbacks),
                        if p.moves() { " (moves)" } else { "" }
                    )?;
                }
            }
            "quorum" => {
                let key = &args.next_pos().ok_or("quorum: KEY missing")?.value;
                let need = args.lookup_parse("need")?.ok_or("quorum: need= missing")?;
                let acks = match args.lookup("acks") {
                    Some(list) => node_list(&list.value)?,
                    None => Vec::new(),
                };
                args.reject_rest()?;
                let p = self.ring()?.placement(key.as_bytes());
                let mut q = Quorum::new(&p, need);
                for a in &acks {
                    q.record(a);
                }
                writeln!(
                    out,
                    "now {} next {} counted {} reached {}",
                    q.now(),
                    q.next(),
                    q.counted(),
                    q.reached()
                )?;
            }
            "moving" => {
                let count = count(&mut args)?;
                let ring = self.ring()?;
                let mut to: BTreeMap<NodeId, usize> = BTreeMap::new();
                let mut moved = 0;
                for i in 0..count {
                    let key = format!("key{i}");
                    let p = ring.placement(key.as_bytes());
                    if p.moves() {
                        moved += 1;
                        for n in &p.pending {
                            *to.entry(n.clone()).or_default() += 1;
                        }
                    }
                }
                writeln!(out, "{moved} of {count} keys move")?;
                for (n, c) in to {
                    writeln!(out, "  to {n}: {c}")?;
                }
            }
            "preflist" => {
                let n: Option<usize> = args.lookup_parse("n")?;
                let keys = keys(&mut args)?;
                let mut ring = self.ring()?.clone();
                if let Some(n) = n {
                    let mut state = ring.state().clone();
                    state.replication = Replication { n, w: 1, r: 1 };
                    ring = Ring::new(state);
                }
                for key in keys {
                    let list = ring.preference_list(key.as_bytes());
                    writeln!(out, "{key}: {}", join(&list))?;
                }
            }
            "walk" => {
                let keys = keys(&mut args)?;
                let ring = self.ring()?;
                for key in keys {
                    let walk = ring.walk(key.as_bytes());
                    let n = ring.replication().n.min(walk.len());
                    let (list, fallbacks) = walk.split_at(n);
                    let fallbacks = if fallbacks.is_empty() {
                        "-".to_string()
                    } else {
                        join(fallbacks)
                    };
                    writeln!(out, "{key}: {} | {fallbacks}", join(list))?;
                }
            }
            "moved" => {
                let count = count(&mut args)?;
                let after = self.ring()?;
                let before = self
                    .previous
                    .as_ref()
                    .ok_or("moved: no ring before the last change")?;
                let mut moves: BTreeMap<(String, String), usize> = BTreeMap::new();
                for i in 0..count {
                    let key = format!("key{i}");
                    let (old, now) = (before.owner(key.as_bytes()), after.owner(key.as_bytes()));
                    let (Some(old), Some(now)) = (old, now) else {
                        return Err(format!("moved: {key} has no owner").into());
                    };
                    if old != now {
                        *moves.entry((old.to_string(), now.to_string())).or_default() += 1;
                    }
                }
                let total: usize = moves.values().sum();
                writeln!(out, "{total} of {count} keys changed owner")?;
                for ((from, to), n) in moves {
                    writeln!(out, "  {from} -> {to}: {n}")?;
                }
            }
            "balance" => {
                let count = count(&mut args)?;
                let ring = self.ring()?;
                let mut owned: BTreeMap<&NodeId, usize> = BTreeMap::new();
                for i in 0..count {
                    let key = format!("key{i}");
                    let owner = ring
                        .owner(key.as_bytes())
                        .ok_or_else(|| format!("balance: {key} has no owner"))?;
                    *owned.entry(owner).or_default() += 1;
                }
                for (id, n) in owned {
                    writeln!(out, "{id}: {n}")?;
                }
            }
            "state" => {
                args.reject_rest()?;
                out = serde_json::to_string(self.ring()?.state())?;
                out.push('\n');
            }
            "validate" => {
                let json = &args.next_pos().ok_or("validate: JSON missing")?.value;
                args.reject_rest()?;
                out = match serde_json::from_str::<RingState>(json) {
                    Err(e) => format!("decode error: {e}\n"),
                    Ok(state) => match state.validate() {
                        Ok(()) => "ok\n".into(),
                        Err(e) => format!("error: {e}\n"),
                    },
                };
            }
            other => return Err(format!("unknown command {other:?}").into()),
        }
        Ok(out)
    }
}

impl Script {
    fn ring(&self) -> Outcome<&Ring> {
        self.current
            .as_ref()
            .ok_or_else(|| "no ring yet: start with `members`".into())
    }

    /// Makes `state` the current ring; returns its description.
    fn advance(&mut self, state: RingState) -> String {
        let out = describe(&state);
        self.previous = self.current.replace(Ring::new(state));
        out
    }

    /// The ring after a change, or the ring's refusal (the ring stays).
    fn apply(&mut self, next: Result<RingState>) -> String {
        match next {
            Ok(state) => self.advance(state),
            Err(e) => format!("error: {e}\n"),
        }
    }
}

fn parse_node(text: &str) -> Outcome<NodeId> {
    text.parse::<NodeId>()
        .map_err(|e| format!("bad node id {text:?}: {e}").into())
}

/// The next positional argument, a node id.
fn node_arg(args: &mut ArgumentConsumer, what: &str) -> Outcome<NodeId> {
    let arg = args.next_pos().ok_or_else(|| format!("{what} missing"))?;
    parse_node(&arg.value)
}

/// Every remaining positional argument, each a node id.
fn nodes(args: Vec<&Argument>) -> Outcome<Vec<NodeId>> {
    args.iter().map(|a| parse_node(&a.value)).collect()
}

/// `a:1,b:1`: node ids separated by commas (none if empty).
fn node_list(list: &str) -> Outcome<Vec<NodeId>> {
    list.split(',')
        .filter(|a| !a.is_empty())
        .map(parse_node)
        .collect()
}

/// Every remaining positional argument, each a key (at least one), and
/// nothing else.
fn keys(args: &mut ArgumentConsumer) -> Outcome<Vec<String>> {
    let keys: Vec<String> = args
        .rest_pos()
        .into_iter()
        .map(|a| a.value.clone())
        .collect();
    args.reject_rest()?;
    if keys.is_empty() {
        return Err("no key given".into());
    }
    Ok(keys)
}

/// The one positional argument COUNT, and nothing else.
fn count(args: &mut ArgumentConsumer) -> Outcome<usize> {
    let count = args.next_pos().ok_or("COUNT missing")?.parse()?;
    args.reject_rest()?;
    Ok(count)
}

fn describe(state: &RingState) -> String {
    let r = state.replication;
    let mut out = format!(
        "epoch={} leader={} members={} n={} w={} r={} tokens={}\n",
        state.epoch,
        state.leader,
        join(&state.members),
        r.n,
        r.w,
        r.r,
        state.tokens_per_node
    );
    if let Some(t) = &state.transition {
        out.push_str(&format!(
            "transition: target={} joining={} leaving={}\n",
            join(&t.target),
            join(&state.joining()),
            join(&state.leaving())
        ));
    }
    for (n, id) in &state.identities {
        out.push_str(&format!("identity {n} {id}\n"));
    }
    for (n, inc) in &state.incarnations {
        if inc.number > 0 {
            out.push_str(&format!("incarnation {n} {}\n", inc.number));
        }
    }
    for (n, d) in &state.departed {
        out.push_str(&format!(
            "departed {n} {} at epoch {}\n",
            d.kind.name(),
            d.epoch
        ));
    }
    out
}

fn join(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(NodeId::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}
