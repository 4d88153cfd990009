//! Turning one line a person typed into a [`Command`].
//!
//! # Tokens
//!
//! Tokens are separated by spaces (a tab counts as a space). A token that begins
//! with a double quote runs to the matching closing quote and may hold spaces;
//! inside it `\"` stands for a quote and `\\` for a backslash (any other backslash
//! is kept as written, so `"C:\dir"` needs no doubling). The closing quote must end
//! the token: `"a"b` is refused rather than guessed at. A token that does *not*
//! begin with a quote runs to the next space and every character in it is literal,
//! which is what lets a context such as `{"127.0.0.1:13337":2}` be typed, and
//! pasted back from `get`, as one token without escaping. Where a CONTEXT is
//! expected, a token that begins with `{` runs to its matching `}`, so a context
//! written with spaces (`{"127.0.0.1:13337": 2, "127.0.0.1:13338": 1}`, valid
//! JSON) is one token too.
//!
//! Command names are case-insensitive (`GET k` is `get k`, and so is `help GET`'s
//! topic); keys, contexts, values and addresses are taken exactly as written.
//!
//! # Positional, not split-then-parse
//!
//! `put`'s VALUE is either one quoted token or *the rest of the line, verbatim*:
//! `put k {} hello   world` stores `hello   world` with its three spaces. Splitting
//! the whole line into tokens first would lose that spacing, so the [`Lexer`] is a
//! cursor: the parser takes the tokens it needs one at a time and, for a VALUE,
//! asks for the untouched remainder of the line instead. A quoted VALUE must be
//! the last thing on the line; text after it is an error, since silently dropping
//! or concatenating it would store something the user did not write.
//!
//! # Validation happens here
//!
//! Everything that can be checked without a node is checked before anything is
//! sent: arity (errors name the usage line), the context's syntax
//! ([`VersionVector::parse_context`]), key and value sizes ([`check_key`],
//! [`check_value`]) and node addresses. The node checks again; this only makes the
//! common mistakes fast and local. Errors are [`Error::InvalidInput`] (or the more
//! specific variant the checker returns), so they print like any other error.
//!
//! Left out: variables, pipes, multi-line input, and escapes beyond `\"` and `\\`.

use crate::coordinator::scan::{DEFAULT_SCAN_LIMIT, MAX_SCAN_LIMIT};
use crate::error::{Error, Result};
use crate::types::{check_user_key as check_key, check_value, Key, NodeId, Value};
use crate::vclock::VersionVector;

/// One command, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `put [--w N] [--ttl DURATION] KEY CONTEXT VALUE`.
    Put {
        key: Key,
        context: VersionVector,
        value: Value,
        /// A per-request W.
        w: Option<u32>,
        /// The value expires this many milliseconds after it is stored.
        ttl_ms: Option<u64>,
    },
    /// `get [--r N] KEY`.
    Get { key: Key, r: Option<u32> },
    /// `get -v KEY`: the same, saying which replicas answered.
    GetVerbose { key: Key, r: Option<u32> },
    /// `scan [PREFIX] [--limit N] [--after KEY] [--consistent]`.
    Scan {
        prefix: String,
        after: Option<Key>,
        limit: u32,
        consistent: bool,
    },
    /// `delete KEY CONTEXT`.
    Delete { key: Key, context: VersionVector },
    /// `add-node HOST:PORT`.
    AddNode { node: NodeId },
    /// `remove-node HOST:PORT`.
    RemoveNode { node: NodeId },
    /// `abort-change`.
    AbortChange,
    /// `status`.
    Status,
    /// `wait-settled [SECONDS]`.
    WaitSettled { secs: u64 },
    /// `locate KEY`.
    Locate { key: Key },
    /// `user add NAME ROLE`.
    UserAdd {
        name: String,
        role: crate::types::Role,
    },
    /// `user list`.
    UserList,
    /// `user remove NAME`.
    UserRemove { name: String },
    /// `use BUCKET`: later commands address BUCKET.
    Use { bucket: String },
    /// `bucket create NAME [n=N] [w=W] [r=R] [storage=disk|memory] [quota=SIZE] [ttl=DURATION]`.
    BucketCreate {
        name: String,
        spec: crate::ring::BucketSpec,
    },
    /// `bucket list`.
    BucketList,
    /// `bucket drop NAME`.
    BucketDrop { name: String },
    /// `help [COMMAND]`.
    Help { topic: Option<String> },
    /// `quit` or `exit`.
    Quit,
}

impl Command {
    /// True if running the command needs a connection to the node.
    pub fn needs_node(&self) -> bool {
        !matches!(self, Command::Help { .. } | Command::Quit)
    }

    /// The command with its keys (and a scan's prefix and `after`) under
    /// `prefix`, a bucket's (see [`crate::types::bucket_key`]).
    pub fn in_bucket(self, prefix: &str) -> Command {
        let under = |key: Key| format!("{prefix}{key}");
        match self {
            Command::Put {
                key,
                context,
                value,
                w,
                ttl_ms,
            } => Command::Put {
                key: under(key),
                context,
                value,
                w,
                ttl_ms,
            },
            Command::Get { key, r } => Command::Get { key: under(key), r },
            Command::GetVerbose { key, r } => Command::GetVerbose { key: under(key), r },
            Command::Scan {
                prefix: p,
                after,
                limit,
                consistent,
            } => Command::Scan {
                prefix: under(p),
                after: after.map(under),
                limit,
                consistent,
            },
            Command::Delete { key, context } => Command::Delete {
                key: under(key),
                context,
            },
            Command::Locate { key } => Command::Locate { key: under(key) },
            other => other,
        }
    }

    /// True if the command addresses keys (of the bucket in use).
    pub fn addresses_keys(&self) -> bool {
        matches!(
            self,
            Command::Put { .. }
                | Command::Get { .. }
                | Command::GetVerbose { .. }
                | Command::Scan { .. }
                | Command::Delete { .. }
                | Command::Locate { .. }
        )
    }
}

/// A command name, its usage line and what it does: the source of `help`, the
/// usage errors and tab completion.
pub struct CommandInfo {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
}

/// Every command, in the order `help` lists them.
/// How long `wait-settled` waits by default: a change of a few hundred thousand
/// keys settles well within it on this project's machine (BENCHMARKS.md).
pub const DEFAULT_WAIT_SECS: u64 = 120;
/// The longest `wait-settled` accepts (a day).
pub const MAX_WAIT_SECS: u64 = 86_400;

pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "put",
        usage: "put [--w N] [--ttl DURATION] KEY CONTEXT VALUE",
        summary: "store VALUE under KEY; CONTEXT is {} or the context printed by get; --w N \
                  waits for N acknowledgements instead of the ring's W; --ttl 30s (ms, s, m, h, \
                  d) makes the value expire",
    },
    CommandInfo {
        name: "get",
        usage: "get [-v] [--r N] KEY",
        summary: "every current version (sibling) of KEY and their merged context; -v also names \
                  the replicas that answered; --r N waits for N answers instead of the ring's R",
    },
    CommandInfo {
        name: "scan",
        usage: "scan [PREFIX] [--limit N] [--after KEY] [--consistent]",
        summary: "keys in key order (those starting with PREFIX), 100 a page unless --limit says; \
                  pass the printed --after KEY for the next page; --consistent asks R replicas of \
                  every range; it asks every node",
    },
    CommandInfo {
        name: "delete",
        usage: "delete KEY CONTEXT",
        summary: "delete the versions of KEY that CONTEXT has seen",
    },
    CommandInfo {
        name: "add-node",
        usage: "add-node HOST:PORT",
        summary: "add a running node to the ring; data moves to it in the background (leader only)",
    },
    CommandInfo {
        name: "remove-node",
        usage: "remove-node HOST:PORT",
        summary: "remove a node; its data moves to the new owners in the background (leader only)",
    },
    CommandInfo {
        name: "abort-change",
        usage: "abort-change",
        summary: "end the running ring change; the ring returns to the members it had before it \
                  (leader only)",
    },
    CommandInfo {
        name: "status",
        usage: "status",
        summary: "leader, ring epoch, N/W/R, every member's state and key count, a ring change's progress",
    },
    CommandInfo {
        name: "locate",
        usage: "locate KEY",
        summary: "the key's preference list in order, the nodes a ring change is moving it to, \
                  the fallbacks next in line, and each one's state",
    },
    CommandInfo {
        name: "wait-settled",
        usage: "wait-settled [SECONDS]",
        summary: "wait until no ring change is running (at most SECONDS, default 120); for scripts \
                  that make several changes",
    },
    CommandInfo {
        name: "user",
        usage: "user add NAME ROLE | user list | user remove NAME",
        summary: "the ring's users (admin): add one with a role (admin, readwrite or readonly; its \
                  token is printed once), list them, or remove one (its token stops working)",
    },
    CommandInfo {
        name: "use",
        usage: "use BUCKET",
        summary: "later commands address the keys of BUCKET (use default returns to the keys \
                  written without one)",
    },
    CommandInfo {
        name: "bucket",
        usage: "bucket create NAME [n=N] [w=W] [r=R] [storage=disk|memory] [quota=SIZE] \
                [ttl=DURATION] | bucket list | bucket drop NAME",
        summary: "buckets: namespaces with their own N/W/R, storage, size quota and default TTL; \
                  create (or change W, R, quota, TTL of) and drop at the leader (admin); drop \
                  removes the bucket's keys from every node in the background",
    },
    CommandInfo {
        name: "help",
        usage: "help [COMMAND]",
        summary: "this text, or the usage of one command",
    },
    CommandInfo {
        name: "quit",
        usage: "quit",
        summary: "leave (also exit, or Ctrl-D)",
    },
    CommandInfo {
        name: "exit",
        usage: "exit",
        summary: "leave",
    },
];

/// The entry of `name` in [`COMMANDS`].
pub fn command_info(name: &str) -> Option<&'static CommandInfo> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// One token and whether it was written in quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub quoted: bool,
}

/// A cursor over one line. See the module docs for the token rules.
pub struct Lexer<'a> {
    line: &'a str,
    /// Byte offset of the next unread character; always on a char boundary.
    pos: usize,
}

fn is_separator(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `line` (which carries no line terminator).
    pub fn new(line: &'a str) -> Self {
        Lexer { line, pos: 0 }
    }

    /// What is left of the line, from the cursor on.
    fn remaining(&self) -> &'a str {
        self.line.get(self.pos..).unwrap_or("")
    }

    fn skip_separators(&mut self) {
        let rest = self.remaining();
        let trimmed = rest.trim_start_matches(is_separator);
        self.pos += rest.len() - trimmed.len();
    }

    /// True if only separators are left.
    pub fn at_end(&self) -> bool {
        self.remaining().trim_start_matches(is_separator).is_empty()
    }

    /// The next token, or `None` at the end of the line.
    pub fn next_token(&mut self) -> Result<Option<Token>> {
        self.skip_separators();
        let rest = self.remaining();
        if rest.is_empty() {
            return Ok(None);
        }
        if let Some(body) = rest.strip_prefix('"') {
            let (text, used) = unquote(body)?;
            // `used` counts the bytes of body up to and including the closing quote.
            let after = body.get(used..).unwrap_or("");
            if let Some(c) = after.chars().next() {
                if !is_separator(c) {
                    return Err(Error::invalid(format!(
                        "unexpected {c:?} right after a closing quote; \
                         put a space between tokens"
                    )));
                }
            }
            self.pos += 1 + used;
            return Ok(Some(Token { text, quoted: true }));
        }
        let end = rest.find(is_separator).unwrap_or(rest.len());
        let text = rest.get(..end).unwrap_or(rest).to_string();
        self.pos += end;
        Ok(Some(Token {
            text,
            quoted: false,
        }))
    }

    /// A CONTEXT: a token that begins with `{` runs to its matching `}` (a JSON
    /// object, spaces inside allowed: `{"127.0.0.1:13337": 2}` is one context);
    /// any other token as [`Lexer::next_token`] reads it.
    pub fn next_context(&mut self) -> Result<Option<Token>> {
        self.skip_separators();
        let rest = self.remaining();
        if !rest.starts_with('{') {
            return self.next_token();
        }
        let Some(end) = object_end(rest) else {
            return Err(Error::BadContext {
                reason: format!(
                    "{rest:?} has no closing '}}'; write it as {{}} or \
                     {{\"HOST:PORT\":N,...}} as get prints it"
                ),
            });
        };
        let (text, after) = rest.split_at(end);
        if let Some(c) = after.chars().next() {
            if !is_separator(c) {
                return Err(Error::BadContext {
                    reason: format!(
                        "unexpected {c:?} right after the context's closing '}}'; \
                         put a space between the context and what follows"
                    ),
                });
            }
        }
        self.pos += end;
        Ok(Some(Token {
            text: text.to_string(),
            quoted: false,
        }))
    }

    /// The rest of the line after the separators that follow the last token,
    /// verbatim (inner and trailing spacing kept); the cursor moves to the end.
    pub fn rest_of_line(&mut self) -> &'a str {
        self.skip_separators();
        let rest = self.remaining();
        self.pos = self.line.len();
        rest
    }

    /// True if the next token would begin with a quote.
    fn next_is_quoted(&self) -> bool {
        self.remaining()
            .trim_start_matches(is_separator)
            .starts_with('"')
    }
}

/// The byte length of the JSON object `s` begins with (up to and including its
/// matching `}`), braces inside strings ignored; None if it never closes.
fn object_end(s: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in s.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Reads a quoted token's body (the text after the opening quote) up to the
/// closing quote. Returns the unescaped text and the bytes consumed, closing quote
/// included.
fn unquote(body: &str) -> Result<(String, usize)> {
    let mut text = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((text, i + c.len_utf8())),
            '\\' => match chars.clone().next() {
                Some((_, next @ ('"' | '\\'))) => {
                    text.push(next);
                    chars.next();
                }
                // Any other backslash is literal.
                _ => text.push('\\'),
            },
            c => text.push(c),
        }
    }
    Err(Error::invalid(
        "unterminated quote: a token that begins with \" must end with \"",
    ))
}

/// The usage error of the command `name`.
fn usage(name: &str) -> Error {
    match command_info(name) {
        Some(info) => Error::invalid(format!("usage: {}", info.usage)),
        None => unknown(name),
    }
}

fn unknown(name: &str) -> Error {
    Error::invalid(format!("unknown command {name:?}; type help"))
}

/// True if the line holds no command: blank, or a `#` comment.
pub fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.is_empty() || trimmed.starts_with('#')
}

/// Parses one line. The caller skips blank and comment lines
/// ([`is_blank_or_comment`]); here they are a usage error.
pub fn parse(line: &str) -> Result<Command> {
    let mut lexer = Lexer::new(line);
    let Some(name) = lexer.next_token()? else {
        return Err(Error::invalid("empty command; type help"));
    };
    // Names are case-insensitive; an unknown one is reported as typed.
    let typed = name.text;
    let name = typed.to_lowercase();
    let command = match name.as_str() {
        "put" => {
            let (mut w, mut ttl_ms) = (None, None);
            loop {
                if let Some(n) = take_count_option(&mut lexer, &name, "--w")? {
                    w = Some(n);
                } else if let Some(t) = take_option(&mut lexer, &name, "--ttl")? {
                    ttl_ms = Some(crate::types::parse_duration(&t)?);
                } else {
                    break;
                }
            }
            let key = take_key(&mut lexer, &name)?;
            let context = take_context(&mut lexer, &name)?;
            let value = take_value(&mut lexer)?;
            return Ok(Command::Put {
                key,
                context,
                value,
                w,
                ttl_ms,
            });
        }
        "get" => {
            let mut verbose = false;
            let mut r = None;
            // Options come before KEY; a last token is always the key, so
            // `get -v` alone reads the key named "-v".
            let key = loop {
                let first = take(&mut lexer, &name)?;
                let option = !first.quoted && !lexer.at_end();
                match first.text.as_str() {
                    "-v" | "--verbose" if option => verbose = true,
                    "--r" if option => r = Some(count(&take(&mut lexer, &name)?.text, "--r")?),
                    _ => {
                        check_key(&first.text)?;
                        break first.text;
                    }
                }
            };
            if verbose {
                Command::GetVerbose { key, r }
            } else {
                Command::Get { key, r }
            }
        }
        "scan" => parse_scan(&mut lexer, &name)?,
        "delete" => {
            let key = take_key(&mut lexer, &name)?;
            let context = take_context(&mut lexer, &name)?;
            Command::Delete { key, context }
        }
        "add-node" => Command::AddNode {
            node: take_node(&mut lexer, &name)?,
        },
        "remove-node" => Command::RemoveNode {
            node: take_node(&mut lexer, &name)?,
        },
        "abort-change" => Command::AbortChange,
        "status" => Command::Status,
        "locate" => Command::Locate {
            key: take_key(&mut lexer, &name)?,
        },
        "wait-settled" => {
            let secs = match lexer.next_token()? {
                Some(t) => match t.text.parse::<u64>() {
                    Ok(s) if (1..=MAX_WAIT_SECS).contains(&s) => s,
                    _ => {
                        return Err(Error::invalid(format!(
                            "wait-settled: SECONDS must be a whole number from 1 to {MAX_WAIT_SECS}, got {:?}",
                            t.text
                        )))
                    }
                },
                None => DEFAULT_WAIT_SECS,
            };
            Command::WaitSettled { secs }
        }
        "user" => {
            let sub = take(&mut lexer, &name)?.text.to_lowercase();
            match sub.as_str() {
                "add" => {
                    let user = take(&mut lexer, &name)?.text;
                    crate::types::check_user_name(&user)?;
                    let role = take(&mut lexer, &name)?.text.to_lowercase().parse()?;
                    Command::UserAdd { name: user, role }
                }
                "list" => Command::UserList,
                "remove" => {
                    let user = take(&mut lexer, &name)?.text;
                    crate::types::check_user_name(&user)?;
                    Command::UserRemove { name: user }
                }
                _ => return Err(usage(&name)),
            }
        }
        "use" => {
            let bucket = take(&mut lexer, &name)?.text;
            if bucket != crate::ring::DEFAULT_BUCKET {
                crate::ring::check_bucket_name(&bucket)?;
            }
            Command::Use { bucket }
        }
        "bucket" => {
            let sub = take(&mut lexer, &name)?.text.to_lowercase();
            match sub.as_str() {
                "create" => {
                    let bucket = take(&mut lexer, &name)?.text;
                    crate::ring::check_bucket_name(&bucket)?;
                    let mut words = Vec::new();
                    while let Some(t) = lexer.next_token()? {
                        words.push(t.text);
                    }
                    let spec = crate::ring::BucketSpec::parse(words.iter().map(String::as_str))?;
                    Command::BucketCreate { name: bucket, spec }
                }
                "list" => Command::BucketList,
                "drop" => {
                    let bucket = take(&mut lexer, &name)?.text;
                    crate::ring::check_bucket_name(&bucket)?;
                    Command::BucketDrop { name: bucket }
                }
                _ => return Err(usage(&name)),
            }
        }
        "help" => {
            let topic = match lexer.next_token()? {
                Some(t) => match command_info(&t.text.to_lowercase()) {
                    Some(info) => Some(info.name.to_string()),
                    None => return Err(unknown(&t.text)),
                },
                None => None,
            };
            Command::Help { topic }
        }
        "quit" | "exit" => Command::Quit,
        _ => return Err(unknown(&typed)),
    };
    if !lexer.at_end() {
        return Err(usage(&name));
    }
    Ok(command)
}

/// `scan`'s arguments: an optional PREFIX and the options, in any order.
fn parse_scan(lexer: &mut Lexer<'_>, name: &str) -> Result<Command> {
    let (mut prefix, mut after, mut limit, mut consistent) = (None, None, None, false);
    while let Some(token) = lexer.next_token()? {
        match token.text.as_str() {
            "--limit" if !token.quoted => {
                let text = take(lexer, name)?.text;
                limit = Some(match text.parse::<u32>() {
                    Ok(n) if (1..=MAX_SCAN_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(Error::invalid(format!(
                            "scan: --limit must be a whole number from 1 to {MAX_SCAN_LIMIT}, got {text:?}"
                        )))
                    }
                });
            }
            "--after" if !token.quoted => after = Some(take_key(lexer, name)?),
            "--consistent" if !token.quoted => consistent = true,
            _ if prefix.is_none() => {
                if token.text.len() > crate::types::MAX_KEY_BYTES {
                    check_key(&token.text)?;
                }
                prefix = Some(token.text);
            }
            _ => return Err(usage(name)),
        }
    }
    Ok(Command::Scan {
        prefix: prefix.unwrap_or_default(),
        after,
        limit: limit.unwrap_or(DEFAULT_SCAN_LIMIT),
        consistent,
    })
}

/// An option `flag N` (a count from 1) if the next token is `flag`, unquoted;
/// else nothing is read.
fn take_count_option(lexer: &mut Lexer<'_>, name: &str, flag: &str) -> Result<Option<u32>> {
    match take_option(lexer, name, flag)? {
        Some(text) => Ok(Some(count(&text, flag)?)),
        None => Ok(None),
    }
}

/// The argument of an option `flag ARG` if the next token is `flag`,
/// unquoted; else nothing is read.
fn take_option(lexer: &mut Lexer<'_>, name: &str, flag: &str) -> Result<Option<String>> {
    let at = lexer.pos;
    match lexer.next_token()? {
        Some(t) if !t.quoted && t.text == flag => Ok(Some(take(lexer, name)?.text)),
        _ => {
            lexer.pos = at;
            Ok(None)
        }
    }
}

/// A per-request count (`--r`, `--w`): a whole number from 1 (the node
/// checks it against N).
fn count(text: &str, flag: &str) -> Result<u32> {
    match text.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Error::invalid(format!(
            "{flag} must be a whole number from 1 to N, got {text:?}"
        ))),
    }
}

fn take(lexer: &mut Lexer<'_>, name: &str) -> Result<Token> {
    lexer.next_token()?.ok_or_else(|| usage(name))
}

fn take_key(lexer: &mut Lexer<'_>, name: &str) -> Result<Key> {
    let key = take(lexer, name)?.text;
    check_key(&key)?;
    Ok(key)
}

fn take_context(lexer: &mut Lexer<'_>, name: &str) -> Result<VersionVector> {
    let token = lexer.next_context()?.ok_or_else(|| usage(name))?;
    VersionVector::parse_context(&token.text)
}

fn take_node(lexer: &mut Lexer<'_>, name: &str) -> Result<NodeId> {
    take(lexer, name)?.text.parse()
}

/// A VALUE: one quoted token that ends the line, or the rest of the line.
fn take_value(lexer: &mut Lexer<'_>) -> Result<Value> {
    let text = if lexer.next_is_quoted() {
        let token = take(lexer, "put")?;
        if !lexer.at_end() {
            return Err(Error::invalid(
                "text after the quoted VALUE; quote the whole value, or leave it unquoted \
                 to store the rest of the line",
            ));
        }
        token.text
    } else {
        let rest = lexer.rest_of_line();
        if rest.is_empty() {
            return Err(Error::invalid(
                "usage: put KEY CONTEXT VALUE (VALUE is missing; write \"\" to store an empty value)",
            ));
        }
        rest.to_string()
    };
    check_value(text.as_bytes())?;
    Ok(Value::from(text))
}

#[cfg(test)]
mod tests;
