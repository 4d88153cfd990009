//! The runner of the ring's script tests (`testdata/*.txt`): each command's
//! output is compared with the output recorded under it.

use super::*;

/// Runs `testdata/NAME` and compares its output with the expected output
/// recorded in the file. With `UPDATE_GOLDEN=1` the file is rewritten instead.
///
/// Format: lines starting with `#` and blank lines are comments. Every other
/// line is a command, followed by a `---` line and its expected output, up to
/// the next blank line; so a new command goes after a blank line (a command
/// right under recorded output would be read as output). Commands:
///
/// - `members ID... [n=N] [w=W] [r=R] [tokens=T]`: a fresh epoch-1 state led
///   by the first ID listed (W and R default to min(2, N)).
/// - `add ID`, `remove ID`: the next epoch (or `error: ...`).
/// - `preflist KEY... [n=N]`: each key's preference list (n= overrides N).
/// - `walk KEY...`: each key's walk, `|` after the preference list.
/// - `moved COUNT`: owner changes of keys `key0..keyCOUNT` since the ring
///   before the last change.
/// - `balance COUNT`: owned keys per node among `key0..keyCOUNT`.
/// - `state`: the state as JSON; `validate JSON`: decode and validate.
pub(super) fn run_script(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/ring/testdata")
        .join(name);
    let input = std::fs::read_to_string(&path).unwrap();
    let mut script = Script::default();
    let mut output = String::new();
    let mut lines = input.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            output.push_str(line);
            output.push('\n');
            continue;
        }
        // Skip the recorded output, if any, up to (not including) the blank
        // line that ends it.
        if lines.peek() == Some(&"---") {
            while lines.next_if(|l| !l.trim().is_empty()).is_some() {}
        }
        output.push_str(line);
        output.push_str("\n---\n");
        output.push_str(&script.run(line));
        // A command written right after another gets its separator.
        if lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            output.push('\n');
        }
    }
    let (want, got) = (input.trim_end(), output.trim_end());
    if want != got {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, format!("{got}\n")).unwrap();
        } else {
            panic!(
                "{name}: output differs (rerun with UPDATE_GOLDEN=1 to accept)\n\
                 --- want\n{want}\n--- got\n{got}"
            );
        }
    }
}

#[derive(Default)]
struct Script {
    current: Option<Ring>,
    previous: Option<Ring>,
}

impl Script {
    /// Runs one command; returns its output lines, each ending in `\n`.
    fn run(&mut self, line: &str) -> String {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap();
        let (args, opts): (Vec<&str>, Vec<&str>) = words.partition(|w| !w.contains('='));
        let opt = |name: &str| -> Option<usize> {
            opts.iter()
                .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.parse().unwrap())
        };
        let mut out = String::new();
        match command {
            "members" => {
                let n = opt("n").unwrap_or(3);
                let replication = Replication {
                    n,
                    w: opt("w").unwrap_or(n.min(2)),
                    r: opt("r").unwrap_or(n.min(2)),
                };
                let ids: Vec<NodeId> = args.iter().map(|a| node(a)).collect();
                let mut state = state_of(ids.clone(), replication);
                state.leader = ids[0].clone();
                if let Some(t) = opt("tokens") {
                    state.tokens_per_node = u32::try_from(t).unwrap();
                }
                match state.validate() {
                    Ok(()) => {
                        out = describe(&state);
                        self.previous = self.current.replace(Ring::new(state));
                    }
                    Err(e) => out = format!("error: {e}\n"),
                }
            }
            "add" | "remove" => {
                let ring = self.ring();
                let id = node(args[0]);
                let next = if command == "add" {
                    ring.state().with_member(id)
                } else {
                    ring.state().without_member(&id)
                };
                match next {
                    Ok(state) => {
                        out = describe(&state);
                        self.previous = self.current.replace(Ring::new(state));
                    }
                    Err(e) => out = format!("error: {e}\n"),
                }
            }
            "begin-add" | "begin-remove" => {
                let ring = self.ring();
                let id = node(args[0]);
                let next = if command == "begin-add" {
                    let uuid = opts
                        .iter()
                        .find_map(|o| o.strip_prefix("uuid="))
                        .map(|u| uuid::Uuid::parse_str(u).unwrap());
                    ring.state().begin_add(id, uuid, 0)
                } else {
                    ring.state().begin_remove(&id, 0)
                };
                match next {
                    Ok(state) => {
                        out = describe(&state);
                        self.previous = self.current.replace(Ring::new(state));
                    }
                    Err(e) => out = format!("error: {e}\n"),
                }
            }
            "settle" | "abort" | "readmit" => {
                let state = self.ring().state();
                let next = match command {
                    // settle [unreported=a:1,b:1]
                    "settle" => {
                        let unreported: Vec<NodeId> = opts
                            .iter()
                            .find_map(|o| o.strip_prefix("unreported="))
                            .map(|l| l.split(',').map(node).collect())
                            .unwrap_or_default();
                        state.settle(&unreported)
                    }
                    "abort" => state.abort(),
                    // readmit ID uuid=UUID
                    _ => {
                        let uuid = opts
                            .iter()
                            .find_map(|o| o.strip_prefix("uuid="))
                            .map(|u| uuid::Uuid::parse_str(u).unwrap())
                            .unwrap();
                        state.readmit(&node(args[0]), uuid)
                    }
                };
                match next {
                    Ok(state) => {
                        out = describe(&state);
                        self.previous = self.current.replace(Ring::new(state));
                    }
                    Err(e) => out = format!("error: {e}\n"),
                }
            }
            "placement" => {
                let ring = self.ring();
                for key in args {
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
                    )
                    .unwrap();
                }
            }
            "quorum" => {
                // quorum KEY need=W acks=a:1,b:1
                let ring = self.ring();
                let p = ring.placement(args[0].as_bytes());
                let mut q = Quorum::new(&p, opt("need").unwrap());
                let acks = opts
                    .iter()
                    .find_map(|o| o.strip_prefix("acks="))
                    .unwrap_or("");
                for a in acks.split(',').filter(|a| !a.is_empty()) {
                    q.record(&node(a));
                }
                writeln!(
                    out,
                    "now {} next {} counted {} reached {}",
                    q.now(),
                    q.next(),
                    q.counted(),
                    q.reached()
                )
                .unwrap();
            }
            "moving" => {
                // How many of COUNT keys the change moves, and to whom.
                let count: usize = args[0].parse().unwrap();
                let ring = self.ring();
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
                writeln!(out, "{moved} of {count} keys move").unwrap();
                for (n, c) in to {
                    writeln!(out, "  to {n}: {c}").unwrap();
                }
            }
            "preflist" => {
                let mut ring = self.ring().clone();
                if let Some(n) = opt("n") {
                    let mut state = ring.state().clone();
                    state.replication = Replication { n, w: 1, r: 1 };
                    ring = Ring::new(state);
                }
                for key in args {
                    let list = ring.preference_list(key.as_bytes());
                    writeln!(out, "{key}: {}", join(&list)).unwrap();
                }
            }
            "walk" => {
                let ring = self.ring();
                for key in args {
                    let walk = ring.walk(key.as_bytes());
                    let n = ring.replication().n.min(walk.len());
                    let (list, fallbacks) = walk.split_at(n);
                    let fallbacks = if fallbacks.is_empty() {
                        "-".to_string()
                    } else {
                        join(fallbacks)
                    };
                    writeln!(out, "{key}: {} | {fallbacks}", join(list)).unwrap();
                }
            }
            "moved" => {
                let count: usize = args[0].parse().unwrap();
                let (before, after) = (self.previous.as_ref().unwrap(), self.ring());
                let mut moves: BTreeMap<(String, String), usize> = BTreeMap::new();
                for i in 0..count {
                    let key = format!("key{i}");
                    let old = before.owner(key.as_bytes()).unwrap();
                    let now = after.owner(key.as_bytes()).unwrap();
                    if old != now {
                        *moves.entry((old.to_string(), now.to_string())).or_default() += 1;
                    }
                }
                let total: usize = moves.values().sum();
                writeln!(out, "{total} of {count} keys changed owner").unwrap();
                for ((from, to), n) in moves {
                    writeln!(out, "  {from} -> {to}: {n}").unwrap();
                }
            }
            "balance" => {
                let count: usize = args[0].parse().unwrap();
                let ring = self.ring();
                let mut owned: BTreeMap<&NodeId, usize> = BTreeMap::new();
                for i in 0..count {
                    let key = format!("key{i}");
                    *owned
                        .entry(ring.owner(key.as_bytes()).unwrap())
                        .or_default() += 1;
                }
                for (id, n) in owned {
                    writeln!(out, "{id}: {n}").unwrap();
                }
            }
            "state" => {
                out = serde_json::to_string(self.ring().state()).unwrap();
                out.push('\n');
            }
            "validate" => {
                let json = line.trim_start().strip_prefix("validate").unwrap().trim();
                out = match serde_json::from_str::<RingState>(json) {
                    Err(e) => format!("decode error: {e}\n"),
                    Ok(state) => match state.validate() {
                        Ok(()) => "ok\n".into(),
                        Err(e) => format!("error: {e}\n"),
                    },
                };
            }
            other => panic!("unknown script command {other:?}"),
        }
        out
    }

    fn ring(&self) -> &Ring {
        self.current
            .as_ref()
            .expect("no ring yet: start with `members`")
    }
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
