//! The interactive client, `client`: a read-eval-print loop over one node.
//!
//! # Shape
//!
//! A line becomes a [`Command`] ([`parse`]), the [`Session`] carries it out against
//! one node through the client library ([`crate::client`]) and gets an
//! [`Outcome`], and the outcome is rendered for people or as one JSON line
//! ([`format`]). Every command yields exactly one outcome, errors included, so a
//! script that sends K commands reads back K results. `quit` and `exit` are not
//! results: they stop the loop and print nothing.
//!
//! # Three ways in
//!
//! * **Interactive**, when stdin is a terminal: a rustyline prompt naming the node,
//!   history kept across sessions (`$DYNAMO_HISTORY`, else `~/.dynamo_history`; a
//!   history file that cannot be read or written is a warning, never fatal), tab
//!   completion of command names (which are case-insensitive), errors printed
//!   without leaving. Ctrl-C drops the line being typed, or abandons the command
//!   running and returns to the prompt (a put or delete may still have been
//!   applied, and the message says so); Ctrl-D, `quit` and `exit` leave. Lines
//!   longer than [`HISTORY_MAX_LINE_BYTES`] are not kept in the history. The exit
//!   status is 0.
//! * **Script**, when stdin is not a terminal: one command per line, no prompt, no
//!   echo. Blank lines and lines starting with `#` are skipped. A line that is not
//!   UTF-8 is a failed command, not the end of the script.
//! * **`-c COMMAND`**, repeatable: the given commands in order; stdin is not read.
//!
//! In the last two the exit status is 1 if any command failed, else 0. Results,
//! errors included, go to stdout, so a script's output keeps its order; warnings
//! about the client itself (history) go to stderr.
//!
//! # The connection
//!
//! The client connects lazily, on the first command that needs the node (`help`
//! and `quit` do not). A failed connect fails only that command, with the node's
//! address and the reason (`127.0.0.1:13337: connection refused`); the next command
//! tries again. Once connected, [`Client`] reopens a connection the node closed.
//!
//! Left out: TLS, authentication, switching nodes inside a session, and following a
//! `not the leader` answer to the leader (the error names it; the user decides).

pub mod format;
pub mod parse;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Editor, Event, EventContext, EventHandler, Helper, Highlighter,
    Hinter, KeyCode, KeyEvent, Modifiers, RepeatCount, Validator,
};

use crate::client::{Client, Credentials};
use crate::error::{Error, Result};
use crate::rpc::{RequestOption, ScanRequest, WriteRequest};
use crate::types::NodeId;
use crate::vclock::Content;

pub use format::{help_text, Outcome};
pub use parse::{is_blank_or_comment, parse, Command, COMMANDS};

/// The environment variable naming the history file.
pub const HISTORY_ENV: &str = "DYNAMO_HISTORY";
/// The history file in the home directory when [`HISTORY_ENV`] is not set.
pub const HISTORY_FILE: &str = ".dynamo_history";
/// How often `wait-settled` asks for `status`.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Lines of history kept: enough for weeks of sessions, small enough to load at once.
pub const HISTORY_LINES: usize = 1000;
/// Longer lines (a pasted value, say) are run but not kept in the history file:
/// it stays small and never holds a large value.
pub const HISTORY_MAX_LINE_BYTES: usize = 4096;
/// What Ctrl-C during a command prints.
pub const CANCELLED: &str =
    "cancelled: the command was abandoned; a put or delete may still have been applied";

/// Past this many bytes on the prompt line, further characters typed at its
/// end are kept aside instead of drawn (see [`Spill`]).
pub const SPILL_AFTER_BYTES: usize = HISTORY_MAX_LINE_BYTES;

/// Keeps a long pasted line off the screen.
///
/// A terminal that does not bracket a paste hands the line editor one key at a
/// time, and once the line wraps, rustyline redraws the whole line for each
/// key: a pasted 20 KB line took over 100 s to appear, and 1 MiB did not
/// appear within 15 minutes. Past [`SPILL_AFTER_BYTES`],
/// with the cursor at the end of the line, each further character is appended
/// here (no redraw) and Enter submits the line; [`Spill::take`] gives the
/// characters back to be joined to what rustyline returns. A bracketed paste
/// arrives as one insertion and is left to rustyline.
#[derive(Clone, Default)]
pub struct Spill(std::sync::Arc<std::sync::Mutex<String>>);

impl Spill {
    /// What to do with `key` typed on a line of `len` bytes with the cursor at
    /// `pos`: None leaves it to rustyline.
    pub fn on_key(&self, key: &KeyEvent, len: usize, pos: usize) -> Option<Cmd> {
        let mut spilled = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pos < len || len + spilled.len() < SPILL_AFTER_BYTES {
            return None;
        }
        match *key {
            KeyEvent(KeyCode::Char(c), Modifiers::NONE | Modifiers::SHIFT) => {
                spilled.push(c);
                Some(Cmd::Noop)
            }
            KeyEvent(KeyCode::Tab, Modifiers::NONE) => {
                spilled.push('\t');
                Some(Cmd::Noop)
            }
            KeyEvent(KeyCode::Enter, Modifiers::NONE)
            | KeyEvent(KeyCode::Char('J'), Modifiers::CTRL) => Some(Cmd::AcceptLine),
            _ => None,
        }
    }

    /// The characters kept aside since the last call.
    pub fn take(&self) -> String {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ConditionalEventHandler for Spill {
    fn handle(&self, evt: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        match evt {
            Event::KeySeq(keys) if keys.len() == 1 => {
                self.on_key(&keys[0], ctx.line().len(), ctx.pos())
            }
            _ => None,
        }
    }
}

/// What the binary hands over after parsing its flags.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node to talk to.
    pub node: NodeId,
    /// One JSON object per result.
    pub json: bool,
    /// `-c` commands; empty means read stdin.
    pub commands: Vec<String>,
    /// The token and TLS the client connects with.
    pub credentials: Credentials,
    /// The bucket commands address until `use` says otherwise (`--bucket`).
    pub bucket: String,
}

/// What the loop should do after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Print this result and go on.
    Result(String, bool),
    /// Nothing to print (blank line, comment); go on.
    Skip,
    /// `quit` / `exit`.
    Quit,
}

/// One user's session with one node.
pub struct Session {
    node: NodeId,
    json: bool,
    client: Option<Client>,
    credentials: Credentials,
    /// The bucket key commands address (`use BUCKET`).
    bucket: String,
}

impl Session {
    /// Lets the client's background work end (see [`Client::finish`]).
    pub async fn finish(&self) {
        if let Some(client) = &self.client {
            client.finish().await;
        }
    }

    /// A session with `node`; nothing is connected yet.
    pub fn new(node: NodeId, json: bool) -> Self {
        Session::with_credentials(node, json, Credentials::default())
    }

    /// A session with `node` that connects with `credentials`.
    pub fn with_credentials(node: NodeId, json: bool, credentials: Credentials) -> Self {
        Session {
            node,
            json,
            client: None,
            credentials,
            bucket: crate::ring::DEFAULT_BUCKET.to_string(),
        }
    }

    /// The same session addressing `bucket` (the client's `--bucket`).
    pub fn in_bucket(mut self, bucket: String) -> Self {
        self.bucket = bucket;
        self
    }

    /// The bucket key commands address.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The node this session talks to.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Parses and runs one line, and renders its result.
    pub async fn line(&mut self, line: &str) -> Step {
        if is_blank_or_comment(line) {
            return Step::Skip;
        }
        let outcome = match parse(line) {
            Ok(Command::Quit) => return Step::Quit,
            Ok(command) => self.execute(command).await,
            Err(e) => Outcome::Error(e),
        };
        Step::Result(outcome.render(self.json), outcome.is_ok())
    }

    /// Runs one parsed command (`quit` never gets here: [`Session::line`] stops first).
    async fn execute(&mut self, command: Command) -> Outcome {
        match self.run(command).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Error(e),
        }
    }

    async fn run(&mut self, command: Command) -> Result<Outcome> {
        if !command.needs_node() {
            return Ok(match command {
                Command::Help { topic } => Outcome::Help(help_text(topic.as_deref())),
                _ => Outcome::Help(String::new()),
            });
        }
        let bucket = self.bucket.clone();
        let client = self.client().await?;
        // A bucket's keys are addressed under its prefix, and shown without it.
        let prefix = if command.addresses_keys() {
            client.bucket_prefix(&bucket).await?
        } else {
            None
        };
        let command = match &prefix {
            Some(p) => command.in_bucket(p),
            None => command,
        };
        let outcome = self.run_on_node(command).await?;
        Ok(match &prefix {
            Some(p) => outcome.strip_prefix(p),
            None => outcome,
        })
    }

    /// Runs a command that needs the node.
    async fn run_on_node(&mut self, command: Command) -> Result<Outcome> {
        let client = self.client().await?;
        Ok(match command {
            Command::Put {
                key,
                context,
                value,
                w: None,
                ttl_ms: None,
            } => Outcome::write(client.put(key, context, value).await?, false),
            Command::Put {
                key,
                context,
                value,
                w,
                ttl_ms,
            } => {
                let req = WriteRequest {
                    key,
                    context,
                    content: Content::Value(value),
                    forwarded: false,
                };
                let mut opts: Vec<RequestOption> = w.map(RequestOption::W).into_iter().collect();
                opts.extend(ttl_ms.map(RequestOption::Ttl));
                let reply = client.write_with(req, opts).await?;
                match w {
                    Some(w) => Outcome::PutWith(reply, w),
                    None => Outcome::write(reply, false),
                }
            }
            Command::Get { key, r: None } => Outcome::Get(client.get(key).await?),
            Command::GetVerbose { key, r: None } => Outcome::GetVerbose(client.get(key).await?),
            Command::Get { key, r: Some(r) } | Command::GetVerbose { key, r: Some(r) } => {
                Outcome::GetWith(client.get_with(key, vec![RequestOption::R(r)]).await?, r)
            }
            Command::Scan {
                prefix,
                after,
                limit,
                consistent,
            } => Outcome::Scan(
                client
                    .scan(ScanRequest {
                        prefix,
                        after,
                        limit,
                        consistent,
                    })
                    .await?,
            ),
            Command::Delete { key, context } => {
                Outcome::write(client.delete(key, context).await?, true)
            }
            Command::AddNode { node } => Outcome::Membership(client.add_node(node).await?),
            Command::RemoveNode { node } => Outcome::Membership(client.remove_node(node).await?),
            Command::AbortChange => Outcome::Aborted(client.abort_change().await?),
            Command::Status => Outcome::Status(client.status().await?),
            Command::Locate { key } => Outcome::Locate(client.locate(key).await?),
            Command::Use { bucket } => {
                // Checks that the bucket exists.
                client.bucket_prefix(&bucket).await?;
                self.bucket = bucket.clone();
                Outcome::Using(bucket)
            }
            Command::BucketCreate { name, spec } => {
                Outcome::Bucket(client.bucket_create(name, spec).await?)
            }
            Command::BucketDrop { name } => Outcome::Bucket(client.bucket_drop(name).await?),
            Command::BucketList => Outcome::Buckets(client.bucket_list().await?),
            Command::UserAdd { name, role } => {
                Outcome::UserAdded(client.user_add(name, role).await?)
            }
            Command::UserList => Outcome::Users(client.user_list().await?),
            Command::UserRemove { name } => Outcome::UserRemoved(client.user_remove(name).await?),
            Command::WaitSettled { secs } => {
                let limit = std::time::Duration::from_secs(secs);
                let started = std::time::Instant::now();
                loop {
                    let status = client.status().await?;
                    if status.transition.is_none() {
                        break Outcome::Settled(status.epoch);
                    }
                    if started.elapsed() >= limit {
                        return Err(Error::Timeout {
                            what: format!(
                                "the ring change of epoch {} is still running; 'status' shows its progress",
                                status.epoch
                            ),
                            millis: secs.saturating_mul(1000),
                        });
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                }
            }
            // Answered above without the node.
            Command::Help { .. } | Command::Quit => Outcome::Help(String::new()),
        })
    }

    /// The connection, opened on first use.
    async fn client(&mut self) -> Result<&Client> {
        if self.client.is_none() {
            self.client = Some(Client::connect_with(self.node.clone(), &self.credentials).await?);
        }
        self.client
            .as_ref()
            .ok_or_else(|| Error::internal("connection vanished"))
    }
}

/// Runs the client as `options` says and returns the process exit status.
pub fn run(options: Options) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("client: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let mut session = Session::with_credentials(
        options.node.clone(),
        options.json,
        options.credentials.clone(),
    )
    .in_bucket(options.bucket.clone());
    if !options.commands.is_empty() {
        let lines = options.commands.into_iter().map(Ok);
        return run_script(&runtime, &mut session, lines);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        run_interactive(&runtime, &mut session);
        runtime.block_on(session.finish());
        return 0;
    }
    run_script(&runtime, &mut session, read_lines(stdin.lock()))
}

/// The lines of a script, each either text or an error saying why it is not.
fn read_lines(mut input: impl BufRead) -> impl Iterator<Item = Result<String>> {
    let mut number = 0u64;
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                number += 1;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                Some(String::from_utf8(buf).map_err(|_| {
                    Error::invalid(format!("line {number} is not valid UTF-8; skipped"))
                }))
            }
            Err(e) => Some(Err(Error::invalid(format!("cannot read stdin: {e}")))),
        }
    })
    // A read error would repeat forever; stop after reporting it once.
    .scan(false, |failed, line| {
        if *failed {
            return None;
        }
        if let Err(Error::InvalidInput { reason }) = &line {
            *failed = reason.starts_with("cannot read stdin");
        }
        Some(line)
    })
}

/// Script and `-c` mode: one result per command; 1 if any failed.
fn run_script(
    runtime: &tokio::runtime::Runtime,
    session: &mut Session,
    lines: impl Iterator<Item = Result<String>>,
) -> u8 {
    let mut failed = false;
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        let step = match line {
            Ok(line) => runtime.block_on(session.line(&line)),
            Err(e) => {
                let outcome = Outcome::Error(e);
                Step::Result(outcome.render(session.json), false)
            }
        };
        match step {
            Step::Quit => break,
            Step::Skip => {}
            Step::Result(text, ok) => {
                failed |= !ok;
                if writeln!(stdout, "{text}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    // stdout is gone (a closed pipe): nobody reads the rest.
                    return 1;
                }
            }
        }
    }
    runtime.block_on(session.finish());
    u8::from(failed)
}

/// The history file: `$DYNAMO_HISTORY`, else `~/.dynamo_history`.
pub fn history_path() -> Option<PathBuf> {
    match std::env::var_os(HISTORY_ENV) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => dirs::home_dir().map(|home| home.join(HISTORY_FILE)),
    }
}

/// Completes command names (ignoring case): the first word, and the word after `help`.
#[derive(Helper, Highlighter, Hinter, Validator)]
struct CommandCompleter;

impl Completer for CommandCompleter {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = line.get(..pos).unwrap_or(line);
        let start = before.rfind([' ', '\t']).map_or(0, |i| i + 1);
        let word = before.get(start..).unwrap_or("");
        let earlier: Vec<&str> = before
            .get(..start)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let completes_a_command = match earlier.as_slice() {
            [] => true,
            [first] => first.eq_ignore_ascii_case("help"),
            _ => false,
        };
        if !completes_a_command {
            return Ok((pos, Vec::new()));
        }
        // Names are case-insensitive, so `LO` completes to `locate`.
        let word = word.to_lowercase();
        let candidates = COMMANDS
            .iter()
            .filter(|c| c.name.starts_with(&word))
            .map(|c| Pair {
                display: c.name.to_string(),
                replacement: format!("{} ", c.name),
            })
            .collect();
        Ok((start, candidates))
    }
}

/// Interactive mode: prompt, history, completion; errors never leave the loop.
fn run_interactive(runtime: &tokio::runtime::Runtime, session: &mut Session) {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| b.history_ignore_space(true).auto_add_history(false).build());
    let editor = config.map_err(|e| e.to_string()).and_then(|config| {
        Editor::<CommandCompleter, DefaultHistory>::with_config(config).map_err(|e| e.to_string())
    });
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("client: cannot open the line editor ({e}); reading commands without it");
            let stdin = std::io::stdin();
            run_script(runtime, session, read_lines(stdin.lock()));
            return;
        }
    };
    editor.set_helper(Some(CommandCompleter));
    let spill = Spill::default();
    editor.bind_sequence(
        Event::Any,
        EventHandler::Conditional(Box::new(spill.clone())),
    );
    let history = history_path();
    match &history {
        Some(path) => match editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "warning: cannot read the history file {}: {e}",
                path.display()
            ),
        },
        None => eprintln!(
            "warning: no home directory and ${HISTORY_ENV} is not set; history is not kept"
        ),
    }
    println!(
        "dynamo client for {}; type help for the commands",
        session.node()
    );
    let prompt = |session: &Session| match session.bucket() {
        crate::ring::DEFAULT_BUCKET => format!("dynamo {}> ", session.node()),
        bucket => format!("dynamo {}/{bucket}> ", session.node()),
    };
    loop {
        let read = editor.readline(&prompt(session));
        let spilled = spill.take();
        match read {
            Ok(mut line) => {
                if !spilled.is_empty() {
                    println!("({} more bytes pasted, not shown)", spilled.len());
                    line.push_str(&spilled);
                }
                if !is_blank_or_comment(&line) && line.len() <= HISTORY_MAX_LINE_BYTES {
                    let _ = editor.add_history_entry(line.as_str());
                }
                // Ctrl-C while a command runs: back to the prompt at once. The
                // request may already be on its way, so say so.
                let step = runtime.block_on(async {
                    tokio::select! {
                        step = session.line(&line) => Some(step),
                        _ = tokio::signal::ctrl_c() => None,
                    }
                });
                match step {
                    Some(Step::Quit) => break,
                    Some(Step::Skip) => {}
                    Some(Step::Result(text, _)) => println!("{text}"),
                    None => println!("{CANCELLED}"),
                }
            }
            // Ctrl-C: drop the line, keep the session.
            Err(ReadlineError::Interrupted) => {}
            // Ctrl-D.
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("client: cannot read the terminal: {e}");
                break;
            }
        }
    }
    if let Some(path) = &history {
        if let Err(e) = editor.save_history(path) {
            eprintln!(
                "warning: cannot write the history file {}: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(line: &str) -> (usize, Vec<String>) {
        let history = DefaultHistory::new();
        let ctx = rustyline::Context::new(&history);
        let (start, pairs) = CommandCompleter.complete(line, line.len(), &ctx).unwrap();
        (start, pairs.into_iter().map(|p| p.display).collect())
    }

    #[test]
    fn a_long_line_spills_characters_typed_at_its_end_and_enter_submits() {
        let spill = Spill::default();
        let key = |c| KeyEvent(KeyCode::Char(c), Modifiers::NONE);
        let enter = KeyEvent(KeyCode::Enter, Modifiers::NONE);
        let n = SPILL_AFTER_BYTES;
        // Short lines, and the cursor inside a long one: rustyline's business.
        assert_eq!(spill.on_key(&key('x'), n - 1, n - 1), None);
        assert_eq!(spill.on_key(&key('x'), n, n - 5), None);
        assert_eq!(spill.on_key(&enter, 10, 10), None);
        // At the end of a long line: kept aside, not drawn.
        assert_eq!(spill.on_key(&key('a'), n, n), Some(Cmd::Noop));
        let shifted = KeyEvent(KeyCode::Char('B'), Modifiers::SHIFT);
        assert_eq!(spill.on_key(&shifted, n, n), Some(Cmd::Noop));
        let tab = KeyEvent(KeyCode::Tab, Modifiers::NONE);
        assert_eq!(spill.on_key(&tab, n, n), Some(Cmd::Noop));
        // Other keys (Ctrl-C, arrows) keep their meaning; Enter submits.
        let ctrl_c = KeyEvent(KeyCode::Char('C'), Modifiers::CTRL);
        assert_eq!(spill.on_key(&ctrl_c, n, n), None);
        assert_eq!(spill.on_key(&enter, n, n), Some(Cmd::AcceptLine));
        assert_eq!(spill.take(), "aB\t");
        assert_eq!(spill.take(), "");
    }

    #[test]
    fn completes_command_names() {
        assert_eq!(
            complete(""),
            (0, COMMANDS.iter().map(|c| c.name.to_string()).collect())
        );
        assert_eq!(complete("g"), (0, vec!["get".to_string()]));
        assert_eq!(complete("re"), (0, vec!["remove-node".to_string()]));
        assert_eq!(complete("e"), (0, vec!["exit".to_string()]));
        assert_eq!(complete("help st"), (5, vec!["status".to_string()]));
        assert_eq!(complete("l"), (0, vec!["locate".to_string()]));
        assert_eq!(complete("LO"), (0, vec!["locate".to_string()]));
        assert_eq!(complete("HELP lo"), (5, vec!["locate".to_string()]));
        assert_eq!(complete("locate k").1, Vec::<String>::new());
        assert_eq!(complete("get k").1, Vec::<String>::new());
        assert_eq!(complete("zz").1, Vec::<String>::new());
    }

    #[test]
    fn script_lines_keep_spacing_and_flag_bad_utf8() {
        let input: &[u8] = b"put k {} a  b \r\n\xff\nlast";
        let lines: Vec<_> = read_lines(input).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].as_ref().unwrap(), "put k {} a  b ");
        assert!(lines[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("line 2 is not valid UTF-8"));
        assert_eq!(lines[2].as_ref().unwrap(), "last");
    }

    #[tokio::test]
    async fn help_and_quit_need_no_node() {
        // Port 1 on localhost: nothing listens, and nothing must be dialled.
        let mut session = Session::new("127.0.0.1:1".parse().unwrap(), true);
        assert_eq!(session.line("quit").await, Step::Quit);
        assert_eq!(session.line("  # comment").await, Step::Skip);
        match session.line("help").await {
            Step::Result(text, true) => assert!(text.starts_with(r#"{"ok":true,"help":"#)),
            other => panic!("{other:?}"),
        }
        match session.line("bogus").await {
            Step::Result(text, false) => assert_eq!(
                text,
                r#"{"ok":false,"error":"unknown command \"bogus\"; type help"}"#
            ),
            other => panic!("{other:?}"),
        }
    }
}
