//! Fuzz targets: one function for each input a node or the client takes from
//! the network or from a person, fed arbitrary bytes.
//!
//! # What they are for
//!
//! Everything here is a harness, not part of a node. Each function takes one
//! input as bytes, runs it through the same code a node or the client runs
//! it through, and checks what must hold whatever the bytes are. A panic is a
//! finding: either the code under test panicked on input it must refuse with
//! an error, or an `assert!` here found a property broken. The functions are
//! called from two places, so a finding is checked the same way in both:
//!
//! * the coverage-guided fuzzer, `fuzz/` (cargo-fuzz and libFuzzer, nightly,
//!   `make fuzz`): one target per function, each a one-line call;
//! * the test `tests/fuzz_corpus.rs` (stable, part of `make test`): every
//!   seed in `fuzz/corpus/<target>/` and every input that once crashed a
//!   target, kept for good in `fuzz/regressions/<target>/`.
//!
//! # The targets
//!
//! | function | input | checks |
//! |---|---|---|
//! | [`rpc_frame`] | one frame body | the server's framing ([`rpc::ServerCodec`], its deadline clamp) and its bincode decoding into `ClientMessage<NodeRequest>`, then the same bytes as a client decodes a `Response<NodeResponse>`: no panic; a decoded deadline is at most [`rpc::MAX_DEADLINE`] away |
//! | [`repl_parse`] | one REPL line (UTF-8) | the lexer and [`crate::repl::parse`]: no panic, the lexer always advances, a parsed command passes the checks the parser promises, both renderings of the result are produced and the JSON one is JSON |
//! | [`context_parse`] | one context (UTF-8) | [`VersionVector::parse_context`]: no panic, errors are `BadContext`, a parsed context keeps the invariants and reads back equal from its own JSON |
//! | [`http_routes`] | one HTTP request as text | the HTTP routes of an in-memory single node: no panic, an answer within 10 s, a status the OpenAPI description lists for the route (404 and 405 off the routes), errors as `{"ok":false,"error":...}`, JSON bodies that parse, contexts that parse |
//!
//! # The HTTP target's node
//!
//! [`http_routes`] sends each request through [`tower::ServiceExt::oneshot`]
//! to the routes of one node ([`crate::server::NodeHandle::http_router`]), a
//! real node (`--in-memory`, N = W = R = 1, the leader of its own ring)
//! started once on a runtime of its own. It has no socket: its RPC listener
//! never accepts and its network refuses every dial, so a fuzzed `add-node`
//! or a forward reaches no address at all, on this machine or off it. Every
//! [`HTTP_REQUESTS_PER_NODE`] requests the node is shut down and a fresh one
//! started, so the keys a long run writes do not pile up in memory.
//!
//! Requests are written as text, one per input, close to the wire:
//!
//! ```text
//! PUT /kv/k?x=1
//! Content-Type: text/plain
//! X-Dynamo-Context: {}
//!
//! the body, byte for byte to the end of the input
//! ```
//!
//! The first line is the method and the target (origin form, `/...`; a
//! third word such as `HTTP/1.1` is ignored), then one `Name: value` header a
//! line up to an empty line, then the body. An input hyper would refuse
//! before routing (a bad method, target, header name or value) is skipped.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use bytes::BytesMut;
use futures::future::BoxFuture;
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_serde::Deserializer;
use tarpc::{ClientMessage, Response};
use tokio_util::codec::Decoder;
use tower::ServiceExt;

use crate::config::{Flags, NodeConfig};
use crate::error::Error;
use crate::http::MAX_HEADER_BYTES;
use crate::net::{BoxStream, Listener, Network};
use crate::repl::format::{help_text, Outcome};
use crate::repl::parse::{parse, Command, Lexer};
use crate::rpc::{self, NodeRequest, NodeResponse};
use crate::server::NodeHandle;
use crate::types::{check_key, check_value, MAX_CONTEXT_ENTRIES, MAX_FRAME_BYTES};
use crate::vclock::VersionVector;

// ---------------------------------------------------------------------------
// rpc_frame
// ---------------------------------------------------------------------------

/// How the server decodes a frame (`rpc::ServerTransport`).
type ServerFormat = Bincode<ClientMessage<NodeRequest>, Response<NodeResponse>>;
/// How a client decodes a frame (`rpc::transport`).
type ClientFormat = Bincode<Response<NodeResponse>, ClientMessage<NodeRequest>>;

/// One frame body from a peer: framed with its length, cut by the server's
/// codec (which clamps a request's deadline), decoded as the server decodes
/// it; then the same body decoded as a client decodes a node's answer.
pub fn rpc_frame(body: &[u8]) {
    let Ok(len) = u32::try_from(body.len()) else {
        return;
    };
    let mut wire = BytesMut::with_capacity(4 + body.len());
    wire.extend_from_slice(&len.to_be_bytes());
    wire.extend_from_slice(body);
    let frame = match rpc::ServerCodec::default().decode(&mut wire) {
        Ok(Some(frame)) => frame,
        Ok(None) => panic!("a whole frame of {} bytes was not read", body.len()),
        Err(e) => {
            assert!(
                body.len() > MAX_FRAME_BYTES,
                "a frame of {} bytes was refused: {e}",
                body.len()
            );
            return;
        }
    };
    assert!(wire.is_empty(), "{} bytes left after one frame", wire.len());

    let decoded = Pin::new(&mut ServerFormat::default()).deserialize(&frame);
    if let Ok(ClientMessage::Request(request)) = &decoded {
        // The clamp bounds the seconds; the nanoseconds add less than 5 s.
        let latest = tarpc::context::now() + rpc::MAX_DEADLINE + Duration::from_secs(5);
        assert!(
            request.context.deadline <= latest,
            "a deadline past the clamp got through: {:?} from now",
            request.context.deadline - tarpc::context::now()
        );
    }

    let answer: io::Result<Response<NodeResponse>> =
        Pin::new(&mut ClientFormat::default()).deserialize(&BytesMut::from(body));
    drop(answer);
}

// ---------------------------------------------------------------------------
// repl_parse
// ---------------------------------------------------------------------------

/// One line a person typed into the REPL (or a script line): the lexer on its
/// own, then [`parse`], then the result rendered both ways.
pub fn repl_parse(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::repl::is_blank_or_comment(line);
    walk_lexer(line, false);
    walk_lexer(line, true);

    // What the REPL prints without a node: the error, or the help text.
    let outcome = match parse(line) {
        Ok(Command::Help { topic }) => Outcome::Help(help_text(topic.as_deref())),
        Ok(command) => return check_command(line, &command),
        Err(e) => Outcome::Error(e),
    };
    let _ = outcome.render(false);
    let json = outcome.render(true);
    assert!(
        serde_json::from_str::<serde_json::Value>(&json).is_ok(),
        "--json rendered something that is not JSON: {json:?}"
    );
}

/// Reads `line` token by token (`contexts`: as CONTEXT tokens) to its end or
/// its first error; every token must move the cursor.
fn walk_lexer(line: &str, contexts: bool) {
    let mut lexer = Lexer::new(line);
    for _ in 0..=line.len() {
        let token = if contexts {
            lexer.next_context()
        } else {
            lexer.next_token()
        };
        match token {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let _ = lexer.rest_of_line();
                assert!(lexer.at_end(), "the rest of the line left something");
                return;
            }
        }
    }
    panic!("the lexer read more tokens than {line:?} has bytes");
}

/// What [`parse`] promises about a command it accepted.
fn check_command(line: &str, command: &Command) {
    let context_ok = |context: &VersionVector| {
        assert!(context.len() <= MAX_CONTEXT_ENTRIES, "{line:?}");
        assert_eq!(
            VersionVector::parse_context(&context.to_json())
                .ok()
                .as_ref(),
            Some(context),
            "{line:?}: the context does not read back"
        );
    };
    match command {
        Command::Put {
            key,
            context,
            value,
            w,
            ttl_ms,
        } => {
            assert!(ttl_ms.is_none_or(|t| t > 0), "{line:?}: ttl of 0 accepted");
            assert!(w.is_none_or(|w| w >= 1), "{line:?}: w of 0 accepted");
            assert!(check_key(key).is_ok(), "{line:?}: bad key accepted");
            assert!(check_value(value).is_ok(), "{line:?}: bad value accepted");
            context_ok(context);
        }
        Command::Delete { key, context } => {
            assert!(check_key(key).is_ok(), "{line:?}: bad key accepted");
            context_ok(context);
        }
        Command::Get { key, r } | Command::GetVerbose { key, r } => {
            assert!(r.is_none_or(|r| r >= 1), "{line:?}: r of 0 accepted");
            assert!(check_key(key).is_ok(), "{line:?}: bad key accepted");
        }
        Command::Locate { key } => {
            assert!(check_key(key).is_ok(), "{line:?}: bad key accepted");
        }
        Command::Scan {
            prefix,
            after,
            limit,
            ..
        } => {
            assert!(prefix.len() <= crate::types::MAX_KEY_BYTES, "{line:?}");
            assert!(
                after.as_deref().is_none_or(|a| check_key(a).is_ok()),
                "{line:?}"
            );
            assert!(
                (1..=crate::coordinator::scan::MAX_SCAN_LIMIT).contains(limit),
                "{line:?}"
            );
        }
        Command::AddNode { node } | Command::RemoveNode { node } => {
            assert!(node.port() > 0, "{line:?}: a node without a port");
        }
        Command::WaitSettled { secs } => {
            assert!(
                (1..=crate::repl::parse::MAX_WAIT_SECS).contains(secs),
                "{line:?}"
            );
        }
        Command::Use { bucket } => {
            assert!(
                bucket == crate::ring::DEFAULT_BUCKET
                    || crate::ring::check_bucket_name(bucket).is_ok(),
                "{line:?}: bad bucket name accepted"
            );
        }
        Command::BucketCreate { name, .. } | Command::BucketDrop { name } => {
            assert!(
                crate::ring::check_bucket_name(name).is_ok(),
                "{line:?}: bad bucket name accepted"
            );
        }
        Command::BucketList => assert!(command.needs_node()),
        Command::Help { .. } | Command::Quit => assert!(!command.needs_node()),
        Command::AbortChange | Command::Status | Command::UserList => {
            assert!(command.needs_node())
        }
        Command::UserAdd { name, .. } | Command::UserRemove { name } => {
            assert!(
                crate::types::check_user_name(name).is_ok(),
                "{line:?}: bad user name accepted"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// context_parse
// ---------------------------------------------------------------------------

/// One context as a person types it (the REPL's CONTEXT, the HTTP API's
/// `X-Dynamo-Context`).
pub fn context_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match VersionVector::parse_context(text) {
        Ok(context) => {
            assert!(context.len() <= MAX_CONTEXT_ENTRIES, "too many entries");
            assert!(
                context.iter().all(|(_, counter)| counter > 0),
                "a zero counter was kept"
            );
            let json = context.to_json();
            assert_eq!(
                VersionVector::parse_context(&json).ok().as_ref(),
                Some(&context),
                "{json} does not read back as the context it was written from"
            );
            assert_eq!(
                serde_json::from_str::<VersionVector>(&json).ok().as_ref(),
                Some(&context),
                "{json} does not decode as the context it was written from"
            );
        }
        Err(Error::BadContext { reason }) => assert!(!reason.is_empty()),
        Err(e) => panic!("a bad context must be BadContext, got {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// http_routes
// ---------------------------------------------------------------------------

/// Requests one fuzzed node serves before it is replaced by a fresh one.
pub const HTTP_REQUESTS_PER_NODE: u64 = 20_000;
/// How long one request may take before it counts as hung.
const HTTP_DEADLINE: Duration = Duration::from_secs(10);
/// The port in the fuzzed node's identity (nothing listens on it).
const HTTP_NODE_PORT: u16 = 1;

/// One HTTP request, written as text (see the module docs), to the routes of
/// an in-memory node.
pub fn http_routes(data: &[u8]) {
    let Some(request) = http_request(data) else {
        return;
    };
    let method = request.method().clone();
    let uri = request.uri().clone();
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();

    let harness = HttpHarness::get();
    let router = harness.router();
    let asked = format!("{method} {uri}");
    let (status, headers, body) = harness.rt.block_on(async move {
        let answer = tokio::time::timeout(HTTP_DEADLINE, router.oneshot(request)).await;
        let Ok(Ok(response)) = answer else {
            panic!("{asked}: no answer within {HTTP_DEADLINE:?}");
        };
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => panic!("{asked}: the answer's body failed: {e}"),
        };
        (parts.status, parts.headers, body)
    });
    let shown = || {
        format!(
            "{method} {uri} -> {status}: {}",
            String::from_utf8_lossy(&body)
        )
    };

    let allowed = if header_bytes > MAX_HEADER_BYTES {
        vec![StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE]
    } else {
        harness.documented(&method, uri.path())
    };
    assert!(
        allowed.contains(&status),
        "{}: expected one of {allowed:?}",
        shown()
    );
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    let mut body_context = None;
    if method != Method::HEAD && (is_json || status.as_u16() >= 400) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            panic!("{}: the body is not JSON", shown());
        };
        if status.as_u16() >= 400 {
            assert!(
                value["ok"] == false && value["error"].is_string(),
                "{}: an error must be {{\"ok\":false,\"error\":...}}",
                shown()
            );
        }
        body_context = value
            .get("context")
            .map(|c| serde_json::from_value::<VersionVector>(c.clone()).ok());
    }
    if let Some(header) = headers.get(crate::http::CONTEXT_HEADER) {
        let text = header.to_str().unwrap_or_default();
        let Ok(context) = VersionVector::parse_context(text) else {
            panic!("{}: the context header {text:?} does not parse", shown());
        };
        // The header and the body carry the same context (a client may pass
        // either to its next put).
        if let Some(in_body) = body_context {
            assert_eq!(
                in_body.as_ref(),
                Some(&context),
                "{}: the context header {text:?} is not the body's",
                shown()
            );
        }
    }
}

/// The request an input describes; None for one hyper would refuse before
/// any route ran.
fn http_request(data: &[u8]) -> Option<Request<Body>> {
    let (line, mut rest) = split_line(data);
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let method = Method::from_bytes(words.next()?.as_bytes()).ok()?;
    let target = words.next()?;
    if !target.starts_with('/') {
        return None;
    }
    let uri = Uri::try_from(target).ok()?;
    let mut request = Request::builder().method(method).uri(uri);
    let body = loop {
        if rest.is_empty() {
            break &[][..];
        }
        let (line, after) = split_line(rest);
        rest = after;
        if line.is_empty() {
            break rest;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let name = HeaderName::from_bytes(name).ok()?;
        let value = HeaderValue::from_bytes(value.trim_ascii()).ok()?;
        request = request.header(name, value);
    };
    request.body(Body::from(body.to_vec())).ok()
}

/// The first line of `data` (without its `\n` or `\r\n`) and what follows it.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    (line.strip_suffix(b"\r").unwrap_or(line), rest)
}

/// The fuzzed node, its runtime and what its OpenAPI description documents.
struct HttpHarness {
    rt: tokio::runtime::Runtime,
    node: Mutex<Option<FuzzNode>>,
    /// (path template, method, statuses) for every documented operation.
    operations: Vec<(String, Method, Vec<StatusCode>)>,
}

struct FuzzNode {
    handle: NodeHandle,
    router: axum::Router,
    served: u64,
}

impl HttpHarness {
    fn get() -> &'static HttpHarness {
        static HARNESS: OnceLock<HttpHarness> = OnceLock::new();
        HARNESS.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("the fuzz runtime did not start: {e}"));
            let node = rt.block_on(start_fuzz_node());
            let operations = rt.block_on(operations(&node.router));
            HttpHarness {
                rt,
                node: Mutex::new(Some(node)),
                operations,
            }
        })
    }

    /// The current node's routes, replacing the node once it has served
    /// [`HTTP_REQUESTS_PER_NODE`] requests.
    fn router(&self) -> axum::Router {
        let mut slot = self.node.lock().unwrap_or_else(|e| e.into_inner());
        if slot
            .as_ref()
            .is_none_or(|n| n.served >= HTTP_REQUESTS_PER_NODE)
        {
            if let Some(old) = slot.take() {
                let _ = self.rt.block_on(old.handle.shutdown());
            }
            *slot = Some(self.rt.block_on(start_fuzz_node()));
        }
        let Some(node) = slot.as_mut() else {
            unreachable!("a node was just put in the slot")
        };
        node.served += 1;
        node.router.clone()
    }

    /// The statuses an answer to `method path` may have: those the OpenAPI
    /// description lists for the route, 405 on a route without the method,
    /// 404 off the routes.
    fn documented(&self, method: &Method, path: &str) -> Vec<StatusCode> {
        // axum answers HEAD with the GET route.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let mut on_route = false;
        for (template, m, statuses) in &self.operations {
            if matches_template(template, path) {
                on_route = true;
                if m == method {
                    return statuses.clone();
                }
            }
        }
        if on_route {
            vec![StatusCode::METHOD_NOT_ALLOWED]
        } else {
            vec![StatusCode::NOT_FOUND]
        }
    }
}

/// True if `path` is one the route `template` serves: a `{key}` takes the
/// rest of the path (slashes too, at least one byte), a `{node}` one segment.
fn matches_template(template: &str, path: &str) -> bool {
    match template.split_once('{') {
        None => template == path,
        Some((prefix, param)) => match path.strip_prefix(prefix) {
            None => false,
            Some(rest) if param.starts_with("key") => !rest.is_empty(),
            Some(rest) => !rest.is_empty() && !rest.contains('/'),
        },
    }
}

/// Every documented operation, from the node's own `/openapi.json`.
async fn operations(router: &axum::Router) -> Vec<(String, Method, Vec<StatusCode>)> {
    let get = Request::get("/openapi.json").body(Body::empty());
    let answer = match get {
        Ok(request) => router.clone().oneshot(request).await,
        Err(e) => panic!("cannot build a request: {e}"),
    };
    let body = match answer {
        Ok(r) => axum::body::to_bytes(r.into_body(), usize::MAX).await,
        Err(e) => match e {},
    };
    let doc: serde_json::Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("/openapi.json is not JSON"));
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let (Ok(method), Some(responses)) = (
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()),
                op["responses"].as_object(),
            ) else {
                continue;
            };
            let statuses = responses
                .keys()
                .filter_map(|s| s.parse::<u16>().ok())
                .filter_map(|s| StatusCode::from_u16(s).ok())
                .collect();
            operations.push((path.clone(), method, statuses));
        }
    }
    assert!(!operations.is_empty(), "/openapi.json documents nothing");
    operations
}

/// A network on which every dial is refused at once.
struct Nowhere;

impl Network for Nowhere {
    fn dial<'a>(&'a self, _addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the fuzzed node dials nobody",
            ))
        })
    }
}

/// A listener that never accepts.
struct Deaf(SocketAddr);

impl Listener for Deaf {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(futures::future::pending())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0)
    }
}

/// A fresh in-memory node, the leader of its own one-node ring.
async fn start_fuzz_node() -> FuzzNode {
    let config = NodeConfig::from_flags(Flags {
        host: Some("127.0.0.1".into()),
        port: Some(HTTP_NODE_PORT),
        in_memory: true,
        qsize: Some(1),
        write_n: Some(1),
        read_n: Some(1),
        insecure: true,
        ..Flags::default()
    })
    .unwrap_or_else(|e| panic!("the fuzzed node's flags: {e}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], HTTP_NODE_PORT));
    let handle =
        crate::server::start_over(config, Box::new(Deaf(addr)), std::sync::Arc::new(Nowhere))
            .await
            .unwrap_or_else(|e| panic!("the fuzzed node did not start: {e}"));
    let router = handle.http_router();
    FuzzNode {
        handle,
        router,
        served: 0,
    }
}
