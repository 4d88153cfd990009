//! A small data-driven test runner for the vclock module, in the spirit of
//! toydb's goldenscript but hand-rolled: each file in `testdata/` is one
//! scenario, a list of blocks
//!
//! ```text
//! # comments and blank lines between blocks are kept as they are
//! put r1 actor=n1:7000 seen={} value=a
//! ----
//! dot n1:7000#1
//! ```
//!
//! The runner executes every command against named objects (replicas), and
//! compares what it prints with the lines under `----`. Run with
//! `UPDATE_GOLDEN=1` to rewrite the files with the actual output, then review
//! the diff.
//!
//! Commands:
//!
//! * `put OBJ actor=NODE seen=CTX value=V [floor=N]` and
//!   `delete OBJ actor=NODE seen=CTX [floor=N]`: [`Object::update`]; CTX is a
//!   JSON context or `@OBJ` for the context a `get` of OBJ would return.
//!   Prints the new dot or `error: ...`.
//! * `merge DST SRC`: [`Object::merge`] of SRC into DST; prints whether DST changed.
//! * `show OBJ`: the context, then each sibling, then `deleted` if every
//!   sibling is a tombstone.
//! * `parse CTX`: [`VersionVector::parse_context`]; prints the normalised JSON
//!   or the error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::{Content, Object, VersionVector};
use crate::types::NodeId;

/// The line between a command and its expected output.
const SEPARATOR: &str = "----";

/// One piece of a script file: text kept as is, or a command and its output.
enum Piece {
    Verbatim(String),
    Block {
        line: usize,
        command: String,
        expected: Vec<String>,
    },
}

fn parse_script(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            pieces.push(Piece::Verbatim(line.to_string()));
            continue;
        }
        match lines.next() {
            Some((_, sep)) if sep == SEPARATOR => {}
            _ => panic!(
                "line {}: command {line:?} not followed by {SEPARATOR}",
                number + 1
            ),
        }
        let mut expected = Vec::new();
        while let Some((_, out)) = lines.peek() {
            if out.trim().is_empty() {
                break;
            }
            expected.push(out.to_string());
            lines.next();
        }
        pieces.push(Piece::Block {
            line: number + 1,
            command: line.to_string(),
            expected,
        });
    }
    pieces
}

/// The named objects of one scenario.
#[derive(Default)]
struct Runner {
    objects: BTreeMap<String, Object>,
}

impl Runner {
    fn object(&mut self, name: &str) -> &mut Object {
        self.objects.entry(name.to_string()).or_default()
    }

    /// Resolves `seen=`: JSON, or `@OBJ` for that object's context.
    fn context(&mut self, text: &str) -> Result<VersionVector, String> {
        match text.strip_prefix('@') {
            Some(name) => Ok(self.object(name).context().clone()),
            None => text.parse().map_err(|e| format!("error: {e}")),
        }
    }

    fn run(&mut self, command: &str) -> Vec<String> {
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let positional: Vec<&str> = words.clone().filter(|w| !w.contains('=')).collect();
        let options: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
        let arg = |i: usize| -> &str {
            positional
                .get(i)
                .copied()
                .unwrap_or_else(|| panic!("{command:?}: argument {} missing", i + 1))
        };
        let option = |name: &str| -> &str {
            options
                .get(name)
                .copied()
                .unwrap_or_else(|| panic!("{command:?}: option {name}= missing"))
        };
        match verb {
            "put" | "delete" => {
                let actor: NodeId = option("actor").parse().expect("actor is a node id");
                let floor: u64 = options
                    .get("floor")
                    .map(|f| f.parse().expect("floor is a number"))
                    .unwrap_or(0);
                let content = match verb {
                    "put" => Content::Value(option("value").to_string().into()),
                    _ => Content::Tombstone,
                };
                let seen = match self.context(option("seen")) {
                    Ok(seen) => seen,
                    Err(e) => return vec![e],
                };
                match self.object(arg(0)).update(&actor, &seen, content, floor) {
                    Ok(dot) => vec![format!("dot {dot}")],
                    Err(e) => vec![format!("error: {e}")],
                }
            }
            "merge" => {
                let source = self.object(arg(1)).clone();
                match self.object(arg(0)).merge(&source) {
                    true => vec!["changed".into()],
                    false => vec!["unchanged".into()],
                }
            }
            "show" => show(self.object(arg(0))),
            "parse" => match VersionVector::parse_context(
                command.strip_prefix("parse").unwrap_or_default(),
            ) {
                Ok(vv) => vec![format!("ok {vv}")],
                Err(e) => vec![format!("error: {e}")],
            },
            other => panic!("{command:?}: unknown command {other:?}"),
        }
    }
}

fn show(object: &Object) -> Vec<String> {
    let mut out = vec![format!("context {}", object.context())];
    for sibling in object.siblings() {
        let content = match &sibling.content {
            Content::Value(v) | Content::Typed { value: v, .. } => {
                String::from_utf8_lossy(v).into_owned()
            }
            Content::Tombstone => "<tombstone>".into(),
        };
        out.push(format!("sibling {} = {content}", sibling.dot));
    }
    if object.is_deleted() {
        out.push("deleted".into());
    }
    out
}

/// Runs one script file; panics with every mismatching block.
fn run_file(path: &Path) {
    let text = std::fs::read_to_string(path).expect("script readable");
    let mut runner = Runner::default();
    let mut actual_text = String::new();
    let mut mismatches = String::new();
    for piece in parse_script(&text) {
        match piece {
            Piece::Verbatim(line) => {
                let _ = writeln!(actual_text, "{line}");
            }
            Piece::Block {
                line,
                command,
                expected,
            } => {
                let actual = runner.run(&command);
                let _ = writeln!(actual_text, "{command}\n{SEPARATOR}");
                for out in &actual {
                    let _ = writeln!(actual_text, "{out}");
                }
                if actual != expected {
                    let _ = writeln!(
                        mismatches,
                        "{}:{line}: {command}\n  expected:\n    {}\n  actual:\n    {}",
                        path.display(),
                        expected.join("\n    "),
                        actual.join("\n    "),
                    );
                }
            }
        }
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual_text).expect("script writable");
        return;
    }
    assert!(mismatches.is_empty(), "script mismatches:\n{mismatches}");
}

#[test]
fn scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/vclock/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata directory")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    for file in files {
        run_file(&file);
    }
}
