//! The fuzz targets' kept inputs, on stable, in every `cargo test`: each seed
//! of `fuzz/corpus/<target>/` and each input that once made a target fail,
//! kept for good in `fuzz/regressions/<target>/`, through the same harness
//! function the fuzzer calls ([`dynamo::fuzz`]). A file that panics fails
//! the test, named.
//!
//! `write_rpc_frame_seeds` (ignored) rewrites the `rpc_frame` seeds that are
//! real requests and answers encoded as a client and a node encode them:
//! `cargo test --test fuzz_corpus -- --ignored write_rpc_frame_seeds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo::error::ReplicaFailure;
use dynamo::ring::RingState;
use dynamo::rpc::{
    Addressee, AeAnswer, AeQuery, NodeRequest, NodeResponse, ReplicaRead, ReplicaWrite, Sender,
    WriteReply, WriteRequest,
};
use dynamo::types::{NodeId, Replication};
use dynamo::vclock::{Content, Object, VersionVector};
use dynamo::Error;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of one folder, sorted; none when it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed and every regression of `target` through `harness`.
fn replay(target: &str, harness: fn(&[u8])) {
    let seeds = files_in(&fuzz_dir().join("corpus").join(target));
    assert!(
        !seeds.is_empty(),
        "fuzz/corpus/{target}/ holds no seed: the corpus is missing"
    );
    let regressions = files_in(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| harness(&data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed: {failed:#?}",
        failed.len(),
        seeds.len() + regressions.len()
    );
}

#[test]
fn rpc_frame_corpus_and_regressions() {
    replay("rpc_frame", dynamo::fuzz::rpc_frame);
}

#[test]
fn repl_parse_corpus_and_regressions() {
    replay("repl_parse", dynamo::fuzz::repl_parse);
}

#[test]
fn context_parse_corpus_and_regressions() {
    replay("context_parse", dynamo::fuzz::context_parse);
}

#[test]
fn http_routes_corpus_and_regressions() {
    replay("http_routes", dynamo::fuzz::http_routes);
}

// ---------------------------------------------------------------------------
// The rpc_frame seeds
// ---------------------------------------------------------------------------

fn node(s: &str) -> NodeId {
    s.parse().expect("node id")
}

fn context(s: &str) -> VersionVector {
    VersionVector::parse_context(s).expect("context")
}

/// A request body as `rpc::transport` sends it.
fn request(id: u64, deadline: Duration, message: NodeRequest) -> Vec<u8> {
    let mut ctx = tarpc::context::current();
    ctx.deadline = Instant::now() + deadline;
    let msg = tarpc::ClientMessage::Request(tarpc::Request {
        context: ctx,
        id,
        message,
    });
    bincode::Options::serialize(bincode::DefaultOptions::new(), &msg).expect("encode")
}

/// An answer body as a node sends it.
fn answer(id: u64, message: NodeResponse) -> Vec<u8> {
    let msg = tarpc::Response {
        request_id: id,
        message: Ok(message),
    };
    bincode::Options::serialize(bincode::DefaultOptions::new(), &msg).expect("encode")
}

#[test]
#[ignore = "rewrites fuzz/corpus/rpc_frame/; run by hand after a protocol change"]
fn write_rpc_frame_seeds() {
    let a = node("127.0.0.1:13337");
    let b = node("127.0.0.1:13338");
    let ctx = context(r#"{"127.0.0.1:13337":2,"127.0.0.1:13338":1}"#);
    let mut object = Object::new();
    object
        .update(
            &a,
            &VersionVector::new(),
            Content::Value(Bytes::from("v1")),
            0,
        )
        .expect("update");
    object
        .update(
            &b,
            &VersionVector::new(),
            Content::Typed {
                value: Bytes::from("{\"x\":1}"),
                media_type: "application/json".into(),
            },
            0,
        )
        .expect("update");
    let object = Arc::new(object);
    let mut tomb = Object::new();
    tomb.update(&a, &ctx, Content::Tombstone, 0)
        .expect("update");
    let uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let to = Addressee {
        node: b.clone(),
        identity: Some(uuid),
        from: Some(Sender {
            node: a.clone(),
            identity: uuid,
            epoch: 3,
        }),
    };
    let write = WriteRequest {
        key: "user:42".into(),
        context: ctx.clone(),
        content: Content::Value(Bytes::from("hello world")),
        forwarded: false,
    };
    let ring = RingState::bootstrap(a.clone(), Replication { n: 3, w: 2, r: 2 });
    let t = Duration::from_secs(2);

    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "write",
            request(1, t, NodeRequest::Write { req: write.clone() }),
        ),
        (
            "write-typed-forwarded",
            request(
                2,
                t,
                NodeRequest::Write {
                    req: WriteRequest {
                        content: Content::Typed {
                            value: Bytes::from_static(b"\x00\x01binary"),
                            media_type: "application/octet-stream".into(),
                        },
                        forwarded: true,
                        ..write.clone()
                    },
                },
            ),
        ),
        (
            "delete",
            request(
                3,
                t,
                NodeRequest::Write {
                    req: WriteRequest {
                        content: Content::Tombstone,
                        ..write.clone()
                    },
                },
            ),
        ),
        (
            "write-batch",
            request(
                4,
                t,
                NodeRequest::WriteBatch {
                    writes: vec![write.clone(), write.clone()],
                },
            ),
        ),
        ("read", request(5, t, NodeRequest::Read { key: "k".into() })),
        (
            "add-node",
            request(6, t, NodeRequest::AddNode { node: b.clone() }),
        ),
        (
            "remove-node",
            request(7, t, NodeRequest::RemoveNode { node: b.clone() }),
        ),
        ("abort-change", request(8, t, NodeRequest::AbortChange {})),
        ("status", request(9, t, NodeRequest::Status {})),
        (
            "locate",
            request(10, t, NodeRequest::Locate { key: "k".into() }),
        ),
        (
            "replicate",
            request(
                11,
                t,
                NodeRequest::Replicate {
                    to: to.clone(),
                    epoch: 3,
                    key: "k".into(),
                    object: object.clone(),
                    hint_for: None,
                },
            ),
        ),
        (
            "replicate-batch-hint",
            request(
                12,
                t,
                NodeRequest::ReplicateBatch {
                    to: to.clone(),
                    writes: vec![
                        ReplicaWrite {
                            epoch: 3,
                            key: "k".into(),
                            object: object.clone(),
                            hint_for: Some(a.clone()),
                        },
                        ReplicaWrite {
                            epoch: 0,
                            key: "gone".into(),
                            object: Arc::new(tomb.clone()),
                            hint_for: None,
                        },
                    ],
                },
            ),
        ),
        (
            "read-replica",
            request(
                13,
                t,
                NodeRequest::ReadReplica {
                    to: Addressee::in_ring(&dynamo::ring::Ring::new(ring.clone()), &a),
                    key: "k".into(),
                },
            ),
        ),
        (
            "read-at",
            request(
                14,
                t,
                NodeRequest::ReadAt {
                    to: to.clone(),
                    epoch: 3,
                    key: "k".into(),
                    count: true,
                },
            ),
        ),
        (
            "read-batch",
            request(
                15,
                t,
                NodeRequest::ReadBatch {
                    to: to.clone(),
                    reads: vec![
                        ReplicaRead {
                            epoch: 3,
                            key: "a".into(),
                            count: true,
                        },
                        ReplicaRead {
                            epoch: 3,
                            key: "b".into(),
                            count: false,
                        },
                    ],
                },
            ),
        ),
        (
            "transfer",
            request(
                16,
                t,
                NodeRequest::Transfer {
                    to: to.clone(),
                    items: vec![("k".into(), object.clone())],
                },
            ),
        ),
        (
            "install-ring",
            request(17, t, NodeRequest::InstallRing { ring }),
        ),
        ("fetch-ring", request(18, t, NodeRequest::FetchRing {})),
        ("info", request(19, t, NodeRequest::Info {})),
        (
            "transfer-check",
            request(
                20,
                t,
                NodeRequest::TransferCheck {
                    to: to.clone(),
                    digests: vec![("k".into(), 0xdead_beef)],
                },
            ),
        ),
        (
            "ae-digests-keys-from",
            request(
                21,
                t,
                NodeRequest::AeDigests {
                    to: to.clone(),
                    epoch: 3,
                    from: a.clone(),
                    query: AeQuery::KeysFrom {
                        segments: vec![1, 2, 65535],
                        after: Some("k".into()),
                    },
                },
            ),
        ),
        (
            "ae-digests-segments",
            request(
                22,
                t,
                NodeRequest::AeDigests {
                    to: to.clone(),
                    epoch: 3,
                    from: a.clone(),
                    query: AeQuery::Segments(vec![0, 7, 255]),
                },
            ),
        ),
        (
            "ae-fetch",
            request(
                23,
                t,
                NodeRequest::AeFetch {
                    to: to.clone(),
                    epoch: 3,
                    keys: vec!["a".into(), "b".into()],
                },
            ),
        ),
        (
            "rejoin",
            request(
                24,
                t,
                NodeRequest::Rejoin {
                    node: b.clone(),
                    identity: uuid,
                },
            ),
        ),
        (
            "tombstone-check",
            request(
                25,
                t,
                NodeRequest::TombstoneCheck {
                    to: to.clone(),
                    epoch: 3,
                    keys: vec!["gone".into()],
                },
            ),
        ),
        (
            "reap",
            request(
                26,
                t,
                NodeRequest::Reap {
                    to: to.clone(),
                    epoch: 3,
                    items: vec![("gone".into(), 42)],
                },
            ),
        ),
        // A deadline far past the clamp (the clamp's own case).
        (
            "status-deadline-far",
            request(
                27,
                Duration::from_secs(86_400 * 365),
                NodeRequest::Status {},
            ),
        ),
        (
            "cancel",
            bincode::Options::serialize(
                bincode::DefaultOptions::new(),
                &tarpc::ClientMessage::<NodeRequest>::Cancel {
                    trace_context: Default::default(),
                    request_id: 5,
                },
            )
            .expect("encode"),
        ),
        // Answers, as a client decodes them.
        (
            "answer-write",
            answer(
                1,
                NodeResponse::Write(Ok(WriteReply {
                    key: "user:42".into(),
                    context: ctx.clone(),
                    values: vec![Bytes::from("hello world")],
                    coordinator: a.clone(),
                    acks: vec![a.clone(), b.clone()],
                    hinted: 0,
                })),
            ),
        ),
        (
            "answer-error",
            answer(
                5,
                NodeResponse::Read(Err(Error::ReadQuorum {
                    needed: 2,
                    answered: 1,
                    failures: vec![ReplicaFailure {
                        node: b.clone(),
                        reason: "unreachable".into(),
                    }],
                })),
            ),
        ),
        (
            "answer-ae-keys-page",
            answer(
                21,
                NodeResponse::AeDigests(Ok(AeAnswer::KeysPage {
                    keys: vec![("k".into(), 7)],
                    next: None,
                })),
            ),
        ),
    ];
    let dir = fuzz_dir().join("corpus").join("rpc_frame");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, body) in seeds {
        dynamo::fuzz::rpc_frame(&body);
        std::fs::write(dir.join(name), body).expect("write seed");
    }
}
