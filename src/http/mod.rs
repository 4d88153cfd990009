//! The HTTP API, the web page and `/metrics`, served by a node started with
//! `--http-port`.
//!
//! # What it is
//!
//! A second door to the same node: every route calls the coordinator and the
//! membership code the RPC port calls ([`Coordinator::write`],
//! [`Coordinator::read`], [`Membership::add_node`], ...), so there is one
//! implementation of put, get, delete and ring changes. The answers carry the
//! same JSON objects as the client's `--json` mode (rendered by
//! [`crate::repl::format::Outcome`], the one place those shapes live).
//!
//! | route | does |
//! |---|---|
//! | `GET /kv/KEY` | one value: 200 with its bytes and the `Content-Type` it was put with; siblings: 300 with `{"values","context"}`; missing or deleted: 404. Always `X-Dynamo-Context`. `Accept: application/json` asks for the JSON form of one value too |
//! | `PUT /kv/KEY` | the body is the value; the context comes from `X-Dynamo-Context` (absent: `{}`) |
//! | `DELETE /kv/KEY` | a tombstone over the context in `X-Dynamo-Context` |
//! | `GET /locate/KEY`, `GET /status` | the `--json` objects of `locate` and `status` |
//! | `POST`, `DELETE /ring/nodes/HOST:PORT` | `add-node`, `remove-node` (leader only; elsewhere 409 naming the leader) |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) |
//! | `GET /openapi.json` | the OpenAPI 3 description of these routes |
//! | `GET /` | the web page (one HTML file compiled into the binary) |
//!
//! Keys in paths are percent-decoded (`/kv/a%2Fb` is the key `a/b`; a key may
//! hold slashes).
//!
//! # Values and media types
//!
//! A value put over HTTP keeps the `Content-Type` it came with
//! ([`Content::Typed`]); a `GET` answers with it, so a file comes back byte
//! for byte with its type. A value put from the REPL has no type and is served
//! as `application/octet-stream`. Values are limited to
//! [`MAX_VALUE_BYTES`] like everywhere else: a bigger file must be split by
//! the client into keys of its own.
//!
//! # Errors and limits
//!
//! Every error is `{"ok":false,"error":"..."}` with a status chosen from the
//! typed [`Error`] ([`status_of`]): 400 bad input, 404 unknown route or
//! missing key, 405 wrong method, 409 not the leader or a ring change refused,
//! 413 a body over the value limit, 431 headers over [`MAX_HEADER_BYTES`],
//! 503 a quorum not reached, the node unready, or [`MAX_CONCURRENT_REQUESTS`]
//! already running, and 500 only for the node's own faults (its disk). Nothing
//! a client sends is answered with a 500 or a dropped connection.
//!
//! A body is read only up to the value limit (a `Content-Length` over it is
//! refused before reading); hyper caps a request at 100 headers.
//!
//! # Shutdown
//!
//! The server stops accepting when the node stops, and lets requests in
//! flight finish within the node's grace period (see [`crate::server`]).

mod body;
use body::value_of;
mod query;

use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::membership::Membership;
use crate::metrics::{Metrics, Op};
use crate::repl::format::Outcome;
use crate::rpc::WriteRequest;
use crate::security::{Access, Need};
use crate::types::{NodeId, MAX_VALUE_BYTES};
use crate::vclock::{Content, VersionVector};

/// The header that carries a context, as compact JSON.
pub const CONTEXT_HEADER: &str = "x-dynamo-context";
/// Requests served at once; more are answered 503 at once (a bound, not a queue).
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Bytes of request headers accepted (names and values together).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The media type of a value put without one (from the REPL).
pub const DEFAULT_MEDIA_TYPE: &str = "application/octet-stream";

/// The web page, compiled in.
const PAGE: &str = include_str!("page.html");
/// The OpenAPI description, compiled in.
const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub coordinator: Arc<Coordinator>,
    pub membership: Arc<Membership>,
    pub metrics: Arc<Metrics>,
    /// Who may make which request (see [`crate::security`]).
    pub access: Arc<Access>,
}

/// The routes, with the limits applied.
pub fn router(state: HttpState) -> Router {
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    Router::new()
        .route("/", get(page))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/health/live", get(health_live))
        .route("/health/ready", get(health_ready))
        .route("/locate/{*key}", get(locate))
        .route("/kv", get(kv_scan))
        .route("/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/b/{bucket}/kv", get(bucket_scan))
        .route(
            "/b/{bucket}/kv/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .route("/ring/nodes/{node}", post(add_node).delete(remove_node))
        .route("/ring/transition", axum::routing::delete(abort_change))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(axum::middleware::from_fn(move |req, next| {
            limits(limit.clone(), req, next)
        }))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `stop` turns true; requests in
/// flight then finish (bounded by the caller).
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match state.access.security().tls.clone() {
        Some(tls) => {
            let listener = crate::security::tls::TlsListener::new(listener, tls);
            axum::serve(listener, router(state))
                .with_graceful_shutdown(stopped)
                .await
        }
        None => {
            axum::serve(listener, router(state))
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

/// The HTTP status for an error, from its kind (never from its text).
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidInput { .. } | Error::BadContext { .. } | Error::KeyTooLarge { .. } => {
            StatusCode::BAD_REQUEST
        }
        Error::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::TooManySiblings { .. }
        | Error::ObjectTooLarge { .. }
        | Error::NotLeader { .. }
        | Error::Membership { .. } => StatusCode::CONFLICT,
        Error::WriteQuorum { .. }
        | Error::ReadQuorum { .. }
        | Error::Timeout { .. }
        | Error::Unreachable { .. }
        | Error::NoRing { .. }
        | Error::StaleRing { .. }
        | Error::Restoring { .. }
        | Error::Removed { .. }
        | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::Fenced { .. } | Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        Error::NoSuchBucket { .. } => StatusCode::NOT_FOUND,
        Error::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

/// The error object: `ok` and `error` first, as the client's `--json` has them.
#[derive(serde::Serialize)]
struct Failure<'a> {
    ok: bool,
    error: &'a str,
    /// The leader, when the request must go there.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<&'a NodeId>,
}

fn failure(status: StatusCode, error: &str, leader: Option<&NodeId>) -> Response {
    let body = serde_json::to_string(&Failure {
        ok: false,
        error,
        leader,
    })
    .unwrap_or_else(|_| r#"{"ok":false,"error":"internal error: cannot encode the error"}"#.into());
    json(status, body)
}

/// `{"ok":false,"error":...}` with `status`.
fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    failure(status, &message.into(), None)
}

/// The answer for an error; a non-leader's also names the leader.
fn error(e: Error) -> Response {
    let leader = match &e {
        Error::NotLeader { leader } => Some(leader),
        _ => None,
    };
    failure(status_of(&e), &e.to_string(), leader)
}

/// 200 with the `--json` object of `outcome`, or the error's answer.
fn answer(outcome: Result<Outcome>) -> Response {
    match outcome {
        Ok(o) => json(StatusCode::OK, o.to_json()),
        Err(e) => error(e),
    }
}

fn context_header(context: &VersionVector) -> (header::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&context.to_json())
        .unwrap_or_else(|_| HeaderValue::from_static("{}"));
    (header::HeaderName::from_static(CONTEXT_HEADER), value)
}

// ---------------------------------------------------------------------------
// Middleware
// ---------------------------------------------------------------------------

/// What a request needs (see [`crate::security`]): the page and the API
/// description are open (the page asks for a token itself), `/metrics` is
/// open with `--open-metrics`, the rest needs a role.
fn need_of(method: &Method, path: &str, open_metrics: bool) -> Option<Need> {
    match path {
        // Probes (a kubelet's) carry no token.
        "/" | "/openapi.json" | "/health/live" | "/health/ready" => None,
        "/metrics" if open_metrics => None,
        "/metrics" => Some(Need::read("read the metrics")),
        p if p.starts_with("/ring/") => Some(Need::admin("change the ring")),
        p if (p.starts_with("/kv/") || p.starts_with("/b/"))
            && (method == Method::PUT || method == Method::DELETE) =>
        {
            Some(Need::write("put or delete"))
        }
        _ => Some(Need::read("read")),
    }
}

/// Refuses a request without a valid `Authorization: Bearer TOKEN` (401) or
/// whose token's role may not make it (403), before any handler runs: an
/// answer never tells someone who may not read a key whether it exists.
async fn authorize(State(s): State<HttpState>, req: Request, next: Next) -> Response {
    if !s.access.is_secure() {
        return next.run(req).await;
    }
    let open_metrics = s.access.security().open_metrics;
    let Some(need) = need_of(req.method(), req.uri().path(), open_metrics) else {
        return next.run(req).await;
    };
    let token = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(token.trim())
                }
                _ => {
                    return unauthorized(
                        "the Authorization header must be \"Bearer TOKEN\"".to_string(),
                    )
                }
            }
        }
    };
    match s.access.check_bearer(token, need) {
        Ok(()) => next.run(req).await,
        Err(Error::Unauthorized { reason }) => unauthorized(reason),
        Err(e) => error(e),
    }
}

fn unauthorized(reason: String) -> Response {
    let mut r = error(Error::Unauthorized { reason });
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"dynamo\""),
    );
    r
}

/// Refuses oversized headers and requests beyond [`MAX_CONCURRENT_REQUESTS`].
async fn limits(limit: Arc<Semaphore>, req: Request, next: Next) -> Response {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return fail(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("headers too large: {header_bytes} bytes, the limit is {MAX_HEADER_BYTES}"),
        );
    }
    let Ok(_permit) = limit.try_acquire_owned() else {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("busy: {MAX_CONCURRENT_REQUESTS} requests already running; retry"),
        );
    };
    next.run(req).await
}

async fn no_route(method: Method, uri: axum::http::Uri) -> Response {
    fail(
        StatusCode::NOT_FOUND,
        format!("no such route: {method} {}; see /openapi.json", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> Response {
    fail(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; see /openapi.json",
            uri.path()
        ),
    )
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let info = s.membership.info();
    let running = s
        .membership
        .current()
        .is_some_and(|r| r.transition.is_some());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(&info, running),
    )
        .into_response()
}

async fn status(State(s): State<HttpState>) -> Response {
    let out = s
        .metrics
        .time(Op::Status, s.membership.status())
        .await
        .map(Outcome::Status);
    answer(out)
}

/// The key of a `/kv/KEY` or `/locate/KEY` path, percent-decoded.
fn key_of(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    match path {
        Ok(Path(key)) => Ok(key),
        Err(e) => Err(Error::InvalidInput {
            reason: format!("bad key in the path: {}", e.body_text()),
        }),
    }
}

/// `GET /health/live`: the node's HTTP server answers (a liveness probe).
async fn health_live() -> Response {
    json(StatusCode::OK, r#"{"ok":true,"live":true}"#.to_string())
}

/// `GET /health/ready`: 200 once the node is a member of its ring, not
/// removed and not refilling (a readiness probe); 503 saying why not.
async fn health_ready(State(s): State<HttpState>) -> Response {
    match s.membership.readiness() {
        Ok(epoch) => json(
            StatusCode::OK,
            format!(r#"{{"ok":true,"ready":true,"epoch":{epoch}}}"#),
        ),
        Err(why) => fail(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

/// The path of a `/kv/KEY` or `/b/BUCKET/kv/KEY` route.
type KeyPath = std::result::Result<Path<HashMap<String, String>>, PathRejection>;

/// The key a `/kv/KEY` or `/b/BUCKET/kv/KEY` path addresses, as the ring
/// stores it, and the bucket's prefix to show keys without (None for the
/// default bucket).
fn key_in(s: &HttpState, path: KeyPath) -> Result<(String, Option<String>)> {
    let Path(mut params) = path.map_err(|e| Error::InvalidInput {
        reason: format!("bad key in the path: {}", e.body_text()),
    })?;
    let key = params.remove("key").unwrap_or_default();
    crate::types::check_user_key(&key)?;
    match params.get("bucket") {
        None => Ok((key, None)),
        Some(bucket) => match s.coordinator.bucket_prefix(bucket)? {
            Some(prefix) => Ok((format!("{prefix}{key}"), Some(prefix))),
            None => Ok((key, None)),
        },
    }
}

/// `outcome` with its keys shown without `prefix`.
fn shown(outcome: Outcome, prefix: Option<&str>) -> Outcome {
    match prefix {
        Some(p) => outcome.strip_prefix(p),
        None => outcome,
    }
}

async fn locate(
    State(s): State<HttpState>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    let out = match key_of(path) {
        Ok(key) => s.metrics.time(Op::Locate, s.membership.locate(key)).await,
        Err(e) => Err(e),
    };
    answer(out.map(Outcome::Locate))
}

/// The context of `X-Dynamo-Context` (absent: the empty context).
fn context_of(headers: &HeaderMap) -> Result<VersionVector> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(VersionVector::new()),
        Some(v) => {
            let text = v.to_str().map_err(|_| Error::BadContext {
                reason: format!("the {CONTEXT_HEADER} header is not visible ASCII"),
            })?;
            if text.trim().is_empty() {
                return Err(Error::BadContext {
                    reason: format!(
                        "the {CONTEXT_HEADER} header is empty; send {{}} or leave the header out"
                    ),
                });
            }
            VersionVector::parse_context(text.trim())
        }
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// `GET /kv?prefix=&limit=&after=&consistent=`: one page of `scan`.
async fn kv_scan(State(s): State<HttpState>, uri: Uri) -> Response {
    scan_in(&s, &uri, None).await
}

/// `GET /b/BUCKET/kv?prefix=&limit=&after=&consistent=`: `scan` in BUCKET.
async fn bucket_scan(
    State(s): State<HttpState>,
    uri: Uri,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    match path {
        Ok(Path(bucket)) => scan_in(&s, &uri, Some(&bucket)).await,
        Err(e) => error(Error::invalid(format!(
            "bad bucket in the path: {}",
            e.body_text()
        ))),
    }
}

async fn scan_in(s: &HttpState, uri: &Uri, bucket: Option<&str>) -> Response {
    let mut prefix = None;
    let out = async {
        let mut req = query::scan_request(&query::params(uri)?)?;
        prefix = match bucket {
            Some(b) => s.coordinator.bucket_prefix(b)?,
            None => None,
        };
        if let Some(p) = &prefix {
            req.prefix = format!("{p}{}", req.prefix);
            req.after = req.after.map(|a| format!("{p}{a}"));
        }
        s.coordinator.scan(req).await
    }
    .await;
    answer(out.map(|page| shown(Outcome::Scan(page), prefix.as_deref())))
}

async fn kv_get(
    State(s): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    path: KeyPath,
) -> Response {
    let (key, r, prefix) = match key_in(&s, path)
        .and_then(|(k, p)| Ok((k, query::count(&query::params(&uri)?, "r")?, p)))
    {
        Ok(k) => k,
        Err(e) => return error(e),
    };
    let reply = match s
        .metrics
        .time(Op::Get, s.coordinator.read_with(key, r))
        .await
    {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let ctx = context_header(&reply.context);
    match reply.values.len() {
        0 => {
            let what = if reply.context.is_empty() {
                "not found"
            } else {
                "deleted"
            };
            let key = crate::types::user_key(&reply.key);
            let mut r = fail(StatusCode::NOT_FOUND, format!("{what}: {key}"));
            r.headers_mut().insert(ctx.0, ctx.1);
            r
        }
        1 if !wants_json(&headers) => {
            let media_type = reply
                .media_types
                .first()
                .cloned()
                .flatten()
                .unwrap_or_else(|| DEFAULT_MEDIA_TYPE.to_string());
            let media_type = HeaderValue::from_str(&media_type)
                .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_MEDIA_TYPE));
            let value = reply.values.into_iter().next().unwrap_or_default();
            let mut r = Response::new(Body::from(value));
            r.headers_mut().insert(header::CONTENT_TYPE, media_type);
            r.headers_mut().insert(ctx.0, ctx.1);
            r
        }
        n => {
            let status = if n == 1 {
                StatusCode::OK
            } else {
                StatusCode::MULTIPLE_CHOICES
            };
            let outcome = match r {
                Some(r) => Outcome::GetWith(reply, u32::try_from(r).unwrap_or(u32::MAX)),
                None => Outcome::Get(reply),
            };
            let mut r = json(status, shown(outcome, prefix.as_deref()).to_json());
            r.headers_mut().insert(ctx.0, ctx.1);
            r
        }
    }
}

async fn kv_put(
    State(s): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    path: KeyPath,
    body: Body,
) -> Response {
    let start = Instant::now();
    let mut w = None;
    let mut prefix = None;
    let out = async {
        let (key, p) = key_in(&s, path)?;
        prefix = p;
        let (opts, asked) = query::write_options(&uri, &headers, true)?;
        w = asked;
        let context = context_of(&headers)?;
        let value = value_of(&headers, body).await?;
        let media_type = match headers.get(header::CONTENT_TYPE) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Error::InvalidInput {
                        reason: "bad content type: it must be visible ASCII".into(),
                    })?
                    .to_string(),
            ),
        };
        let content = match media_type {
            Some(media_type) => Content::Typed { value, media_type },
            None => Content::Value(value),
        };
        s.coordinator
            .write_with(
                WriteRequest {
                    key,
                    context,
                    content,
                    forwarded: false,
                },
                opts,
            )
            .await
    }
    .await;
    s.metrics
        .record(Op::Put, crate::metrics::Outcome::of(&out), start.elapsed());
    write_answer(out, false, w, prefix.as_deref())
}

fn write_answer(
    out: Result<crate::rpc::WriteReply>,
    delete: bool,
    w: Option<usize>,
    prefix: Option<&str>,
) -> Response {
    match out {
        Ok(reply) => {
            let ctx = context_header(&reply.context);
            let outcome = match w.map(|w| u32::try_from(w).unwrap_or(u32::MAX)) {
                Some(w) if delete => Outcome::DeleteWith(reply, w),
                Some(w) => Outcome::PutWith(reply, w),
                None => Outcome::write(reply, delete),
            };
            let mut r = json(StatusCode::OK, shown(outcome, prefix).to_json());
            r.headers_mut().insert(ctx.0, ctx.1);
            r
        }
        Err(e) => error(e),
    }
}

async fn kv_delete(
    State(s): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    path: KeyPath,
) -> Response {
    let start = Instant::now();
    let mut w = None;
    let mut prefix = None;
    let out = async {
        let (key, p) = key_in(&s, path)?;
        prefix = p;
        let (opts, asked) = query::write_options(&uri, &headers, false)?;
        w = asked;
        let context = context_of(&headers)?;
        s.coordinator
            .write_with(
                WriteRequest {
                    key,
                    context,
                    content: Content::Tombstone,
                    forwarded: false,
                },
                opts,
            )
            .await
    }
    .await;
    s.metrics.record(
        Op::Delete,
        crate::metrics::Outcome::of(&out),
        start.elapsed(),
    );
    write_answer(out, true, w, prefix.as_deref())
}

fn node_of(path: std::result::Result<Path<String>, PathRejection>) -> Result<NodeId> {
    let Path(node) = path.map_err(|e| Error::InvalidInput {
        reason: format!("bad node in the path: {}", e.body_text()),
    })?;
    node.parse::<NodeId>().map_err(|e| Error::InvalidInput {
        reason: format!("bad node {node:?}: {e}; write HOST:PORT"),
    })
}

async fn add_node(
    State(s): State<HttpState>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    ring_change(&s, path, Op::AddNode).await
}

async fn remove_node(
    State(s): State<HttpState>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    ring_change(&s, path, Op::RemoveNode).await
}

/// `DELETE /ring/transition`: `abort-change`.
async fn abort_change(State(s): State<HttpState>) -> Response {
    let out = s
        .metrics
        .time(Op::AbortChange, s.membership.abort_change())
        .await;
    answer(out.map(Outcome::Aborted))
}

/// `add-node` (`op` = [`Op::AddNode`]) or `remove-node` of the node in `path`.
async fn ring_change(
    s: &HttpState,
    path: std::result::Result<Path<String>, PathRejection>,
    op: Op,
) -> Response {
    let out = match node_of(path) {
        Ok(node) if op == Op::AddNode => s.metrics.time(op, s.membership.add_node(node)).await,
        Ok(node) => s.metrics.time(op, s.membership.remove_node(node)).await,
        Err(e) => Err(e),
    };
    answer(out.map(Outcome::Membership))
}
