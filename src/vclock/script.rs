//! The vclock's script tests: every file in `src/vclock/testdata/` is a
//! [goldenscript](https://docs.rs/goldenscript/0.7) run against [`Runner`],
//! one test per file, like every data-driven test of the crate (the ring's,
//! the simulation's scenarios). Each file is one scenario over named objects
//! (replicas), a list of blocks:
//!
//! ```text
//! # comments and blank lines between blocks are kept as they are
//! put r1 actor="n1:7000" seen="{}" value=a
//! ---
//! dot n1:7000#1
//! ```
//!
//! The test fails with a diff when what the commands print differs from the
//! output recorded under `---`; `UPDATE_GOLDENFILES=1 cargo test --lib
//! vclock::` rewrites the files with the actual output instead, and the diff is
//! then reviewed like code.
//!
//! Arguments are positional or `key=value`. Goldenscript takes bare only
//! `[A-Za-z0-9_-./@]`, so node ids, contexts and `@OBJ` are quoted: `"n1:7000"`,
//! `'{"n1:7000":2}'`, `"@r1"`. An unknown command or argument fails the test;
//! an error of the vclock prints `error: ...`. Commands:
//!
//! * `put OBJ actor=NODE seen=CTX value=V [floor=N]` and
//!   `delete OBJ actor=NODE seen=CTX [floor=N]`: [`Object::update`]; CTX is a
//!   JSON context or `@OBJ` for the context a `get` of OBJ would return.
//!   Prints the new dot or `error: ...`.
//! * `merge DST SRC`: [`Object::merge`] of SRC into DST; prints whether DST changed.
//! * `show OBJ`: the context, then each sibling, then `deleted` if every
//!   sibling is a tombstone.
//! * `parse [CTX]`: [`VersionVector::parse_context`] of CTX (of the empty
//!   string if none); prints the normalised JSON or the error.

use std::collections::BTreeMap;
use std::error::Error as StdError;

use goldenscript::{ArgumentConsumer, Command};

use super::{Content, Object, VersionVector};
use crate::types::NodeId;

/// What a command returns: its output, or why it could not run.
type Outcome<T> = std::result::Result<T, Box<dyn StdError>>;

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

    fn lines(&mut self, command: &Command) -> Outcome<Vec<String>> {
        let mut args = command.consume_args();
        match command.name.as_str() {
            verb @ ("put" | "delete") => {
                let name = positional(&mut args, "OBJ")?;
                let actor = keyed(&mut args, "actor")?;
                let actor: NodeId = actor
                    .parse()
                    .map_err(|e| format!("bad actor {actor:?}: {e}"))?;
                let seen = keyed(&mut args, "seen")?;
                let content = match verb {
                    "put" => Content::Value(keyed(&mut args, "value")?.to_string().into()),
                    _ => Content::Tombstone,
                };
                let floor: u64 = args.lookup_parse("floor")?.unwrap_or(0);
                args.reject_rest()?;
                let seen = match self.context(seen) {
                    Ok(seen) => seen,
                    Err(e) => return Ok(vec![e]),
                };
                Ok(
                    match self.object(name).update(&actor, &seen, content, floor) {
                        Ok(dot) => vec![format!("dot {dot}")],
                        Err(e) => vec![format!("error: {e}")],
                    },
                )
            }
            "merge" => {
                let destination = positional(&mut args, "DST")?;
                let source = positional(&mut args, "SRC")?;
                args.reject_rest()?;
                let source = self.object(source).clone();
                Ok(match self.object(destination).merge(&source) {
                    true => vec!["changed".into()],
                    false => vec!["unchanged".into()],
                })
            }
            "show" => {
                let name = positional(&mut args, "OBJ")?;
                args.reject_rest()?;
                Ok(show(self.object(name)))
            }
            "parse" => {
                let text = args.next_pos().map_or("", |a| a.value.as_str());
                args.reject_rest()?;
                Ok(match VersionVector::parse_context(text) {
                    Ok(vv) => vec![format!("ok {vv}")],
                    Err(e) => vec![format!("error: {e}")],
                })
            }
            other => Err(format!("unknown command {other:?}").into()),
        }
    }
}

impl goldenscript::Runner for Runner {
    fn run(&mut self, command: &Command) -> Outcome<String> {
        let mut out = self.lines(command)?.join("\n");
        out.push('\n');
        Ok(out)
    }
}

/// The next positional argument.
fn positional<'a>(args: &mut ArgumentConsumer<'a>, what: &str) -> Outcome<&'a str> {
    match args.next_pos() {
        Some(arg) => Ok(&arg.value),
        None => Err(format!("{what} missing").into()),
    }
}

/// The argument `key=...`.
fn keyed<'a>(args: &mut ArgumentConsumer<'a>, key: &str) -> Outcome<&'a str> {
    match args.lookup(key) {
        Some(arg) => Ok(&arg.value),
        None => Err(format!("{key}= missing").into()),
    }
}

fn show(object: &Object) -> Vec<String> {
    let mut out = vec![format!("context {}", object.context())];
    for sibling in object.siblings() {
        let content = match &sibling.content {
            Content::Value(v) | Content::Typed { value: v, .. } => {
                String::from_utf8_lossy(v).into_owned()
            }
            Content::Expiring {
                value, expires_at, ..
            } => format!(
                "{} (expires at {expires_at})",
                String::from_utf8_lossy(value)
            ),
            Content::Tombstone => "<tombstone>".into(),
        };
        out.push(format!("sibling {} = {content}", sibling.dot));
    }
    if object.is_deleted() {
        out.push("deleted".into());
    }
    out
}

/// Runs `testdata/NAME` against its recorded output, with a runner of its own.
fn run_script(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/vclock/testdata")
        .join(name);
    goldenscript::run(&mut Runner::default(), &path)
        .unwrap_or_else(|e| panic!("src/vclock/testdata/{name}: {e}"));
}

/// A mistake in a script fails it and says where, rather than printing
/// something that could be recorded as expected output.
#[test]
fn unknown_commands_and_arguments_fail_the_script() {
    for (input, want) in [
        (
            "put r1 actor=\"n1:7000\" seen=\"{}\"\n---\n",
            "value= missing",
        ),
        (
            "put r1 actor=\"n1:7000\" seen=\"{}\" value=a ttl=3\n---\n",
            "invalid argument 'ttl'",
        ),
        (
            "put r1 actor=n1 seen=\"{}\" value=a\n---\n",
            "bad actor \"n1\"",
        ),
        ("merge r1\n---\n", "SRC missing"),
        ("show r1 r2\n---\n", "invalid argument 'r2'"),
        ("parse \"{}\" \"{}\"\n---\n", "invalid argument '{}'"),
        ("get r1\n---\n", "unknown command \"get\""),
    ] {
        match goldenscript::generate(&mut Runner::default(), input) {
            Ok(out) => panic!("{input:?} ran: {out}"),
            Err(e) => assert!(e.to_string().contains(want), "{input:?}: {e}"),
        }
    }
}

script_tests!(run_script, "src/vclock/testdata", {
    script_contexts => "contexts.txt",
    script_replicas => "replicas.txt",
    script_siblings => "siblings.txt",
});
