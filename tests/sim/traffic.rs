//! What each simulated host writes to the network, frame by frame and
//! method by method: the counters of `make sim-scale` ([`super::scale`]).
//! A stream a host writes through ([`Counted`]) parses the frames it carries
//! (length-delimited bincode of `dynamo::rpc::Node`'s calls and answers) and
//! counts each by its method.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::harness::plain;

/// What each host has written to the network so far (this thread's
/// simulation only), split by RPC method: the scale measurements.
pub fn traffic() -> BTreeMap<String, Traffic> {
    SENT.with(|s| {
        s.borrow()
            .iter()
            .map(|(h, t)| (h.to_string(), t.clone()))
            .collect()
    })
}

/// What one host wrote: every byte, and the frames by the method they
/// belong to (a frame is counted once it is wholly written).
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// To other nodes (not to the driver).
    pub bytes: u64,
    /// Answers to the driver's calls, apart: a measurement's own polls.
    pub driver_bytes: u64,
    /// Connections this host dialled.
    pub dials: u64,
    /// Requests this host sent, per method: (frames, bytes with the frame
    /// header), indexed like [`METHODS`].
    pub calls: Vec<(u64, u64)>,
    /// Answers this host sent, per method, indexed like [`METHODS`].
    pub answers: Vec<(u64, u64)>,
}

impl Traffic {
    /// `self - before`, method by method.
    pub fn since(&self, before: Option<&Traffic>) -> Traffic {
        let minus = |now: &[(u64, u64)], then: Option<&Vec<(u64, u64)>>| -> Vec<(u64, u64)> {
            now.iter()
                .enumerate()
                .map(|(i, (f, b))| {
                    let (f0, b0) = then.and_then(|t| t.get(i)).copied().unwrap_or((0, 0));
                    (f - f0, b - b0)
                })
                .collect()
        };
        Traffic {
            bytes: self.bytes - before.map_or(0, |b| b.bytes),
            driver_bytes: self.driver_bytes - before.map_or(0, |b| b.driver_bytes),
            dials: self.dials - before.map_or(0, |b| b.dials),
            calls: minus(&self.calls, before.map(|b| &b.calls)),
            answers: minus(&self.answers, before.map(|b| &b.answers)),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Traffic) {
        self.bytes += other.bytes;
        self.driver_bytes += other.driver_bytes;
        self.dials += other.dials;
        for (mine, theirs) in [
            (&mut self.calls, &other.calls),
            (&mut self.answers, &other.answers),
        ] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), (0, 0));
            }
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.0 += t.0;
                m.1 += t.1;
            }
        }
    }
}

/// The node service's methods in the order `dynamo::rpc::Node` declares
/// them (a request names its method by that position), then what a frame
/// that is not a call of one of them is counted as.
pub const METHODS: &[&str] = &[
    "write",
    "read",
    "add_node",
    "remove_node",
    "status",
    "locate",
    "replicate",
    "replicate_batch",
    "read_replica",
    "read_at",
    "read_batch",
    "transfer",
    "install_ring",
    "fetch_ring",
    "info",
    "transfer_check",
    "ae_digests",
    "ae_fetch",
    "rejoin",
    "tombstone_check",
    "reap",
    "write_batch",
    "abort_change",
    "fetch_ring_newer",
    "probe",
    "raft_append",
    "raft_vote",
    "raft_snapshot",
    "user_add",
    "user_list",
    "user_remove",
    "scan",
    "scan_replica",
    "read_with",
    "write_with",
    "export",
    "restore_batch",
    "bucket_create",
    "bucket_drop",
    "bucket_list",
    // Not methods: a cancelled call, a server error, a frame not understood.
    "(cancel)",
    "(server error)",
    "(unknown)",
];
const CANCEL: usize = METHODS.len() - 3;
const SERVER_ERROR: usize = METHODS.len() - 2;
const UNKNOWN: usize = METHODS.len() - 1;

thread_local! {
    pub(crate) static SENT: std::cell::RefCell<BTreeMap<Arc<str>, Traffic>> = const {
        std::cell::RefCell::new(BTreeMap::new())
    };
}

/// Which frames a stream carries from its host: calls (a connection it
/// dialled) or answers (one it accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Calls,
    Answers,
}

/// Cuts what a host writes on one stream into the frames of
/// `dynamo::rpc::codec` (a 4-byte big-endian length, then bincode with
/// varint integers, as tarpc's transport writes them) and names the method
/// of each from its first bytes.
#[derive(Debug)]
pub struct Frames {
    role: Role,
    header: [u8; 4],
    have_header: usize,
    remaining: usize,
    size: usize,
    head: Vec<u8>,
}

/// Bytes of a frame kept to find its method: a request's context and id come
/// before it (at most 1 + 9 + 5 + 16 + 9 + 5 + 9 bytes), then the method.
const HEAD_BYTES: usize = 64;

impl Frames {
    pub fn new(role: Role) -> Frames {
        Frames {
            role,
            header: [0; 4],
            have_header: 0,
            remaining: 0,
            size: 0,
            head: Vec::with_capacity(HEAD_BYTES),
        }
    }

    /// Feeds written bytes; `done(method, frame bytes)` for every frame they
    /// complete.
    pub fn feed(&mut self, mut data: &[u8], mut done: impl FnMut(usize, u64)) {
        while !data.is_empty() {
            if self.have_header < 4 {
                let k = (4 - self.have_header).min(data.len());
                self.header[self.have_header..self.have_header + k].copy_from_slice(&data[..k]);
                self.have_header += k;
                data = &data[k..];
                if self.have_header == 4 {
                    self.size = u32::from_be_bytes(self.header) as usize;
                    self.remaining = self.size;
                    self.head.clear();
                }
            } else {
                let k = self.remaining.min(data.len());
                let keep = (HEAD_BYTES - self.head.len()).min(k);
                self.head.extend_from_slice(&data[..keep]);
                self.remaining -= k;
                data = &data[k..];
            }
            if self.have_header == 4 && self.remaining == 0 {
                let method = match self.role {
                    Role::Calls => request_method(&self.head),
                    Role::Answers => answer_method(&self.head),
                };
                done(method.unwrap_or(UNKNOWN), 4 + self.size as u64);
                self.have_header = 0;
            }
        }
    }
}

/// One of bincode's varint integers (`DefaultOptions`): a byte below 251, or
/// a marker (251, 252, 253, 254) and 2, 4, 8 or 16 little-endian bytes.
fn varint(b: &mut &[u8]) -> Option<u128> {
    let (&first, rest) = b.split_first()?;
    let width = match first {
        0..=250 => {
            *b = rest;
            return Some(u128::from(first));
        }
        251 => 2,
        252 => 4,
        253 => 8,
        254 => 16,
        _ => return None,
    };
    let bytes = rest.get(..width)?;
    *b = &rest[width..];
    let mut v = [0u8; 16];
    v[..width].copy_from_slice(bytes);
    Some(u128::from_le_bytes(v))
}

fn method_index(v: u128) -> Option<usize> {
    usize::try_from(v).ok().filter(|&i| i < CANCEL)
}

/// The method of a `tarpc::ClientMessage<NodeRequest>`: `Request { context:
/// { deadline: Duration { secs, nanos }, trace_context: { trace_id: [u8; 16],
/// span_id, sampling } }, id, message }`, the message an enum whose variant
/// is the method; or `Cancel`.
fn request_method(mut b: &[u8]) -> Option<usize> {
    match varint(&mut b)? {
        0 => {}
        1 => return Some(CANCEL),
        _ => return None,
    }
    varint(&mut b)?; // deadline: seconds
    varint(&mut b)?; // deadline: nanoseconds
    b = b.get(16..)?; // trace id
    varint(&mut b)?; // span id
    varint(&mut b)?; // sampling decision
    varint(&mut b)?; // request id
    method_index(varint(&mut b)?)
}

/// The method of a `tarpc::Response<NodeResponse>`: `{ request_id, message:
/// Result<NodeResponse, ServerError> }`, the response an enum whose variant
/// is the method.
fn answer_method(mut b: &[u8]) -> Option<usize> {
    varint(&mut b)?; // request id
    match varint(&mut b)? {
        0 => method_index(varint(&mut b)?),
        1 => Some(SERVER_ERROR),
        _ => None,
    }
}

/// `host`'s counters, made on first use.
pub(crate) fn entry<'a>(
    sent: &'a mut BTreeMap<Arc<str>, Traffic>,
    host: &Arc<str>,
) -> Option<&'a mut Traffic> {
    if !sent.contains_key(host) {
        let empty = Traffic {
            calls: vec![(0, 0); METHODS.len()],
            answers: vec![(0, 0); METHODS.len()],
            ..Traffic::default()
        };
        sent.insert(host.clone(), empty);
    }
    sent.get_mut(host)
}

/// A stream that counts what its host writes.
pub(crate) struct Counted<S> {
    inner: S,
    host: Arc<str>,
    frames: Frames,
    /// The stream answers the driver: counted apart.
    driver: bool,
    /// Bytes of the handshake still to come before the first frame: a plain
    /// ring's hello (8 bytes) or its answer (1 byte); on a ring with a
    /// secret every frame is encrypted and counted as unknown.
    handshake: usize,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, host: Arc<str>, role: Role, driver: bool) -> Counted<S> {
        let handshake = match (plain(), role) {
            (false, _) => 0,
            (true, Role::Calls) => 8,
            (true, Role::Answers) => 1,
        };
        Counted {
            inner,
            host,
            frames: Frames::new(role),
            driver,
            handshake,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let out = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &out {
            let n = *n;
            let this = &mut *self;
            SENT.with(|s| {
                let mut s = s.borrow_mut();
                let Some(t) = entry(&mut s, &this.host) else {
                    return;
                };
                if this.driver {
                    t.driver_bytes += n as u64;
                    return;
                }
                t.bytes += n as u64;
                let per = match this.frames.role {
                    Role::Calls => &mut t.calls,
                    Role::Answers => &mut t.answers,
                };
                let skip = this.handshake.min(n);
                this.handshake -= skip;
                this.frames.feed(&buf[skip..n], |m, bytes| {
                    per[m].0 += 1;
                    per[m].1 += bytes;
                });
            });
        }
        out
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod frames {
    use super::*;
    use bincode::Options;

    fn method_of(role: Role, frame: &[u8]) -> Vec<(&'static str, u64)> {
        let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(frame);
        // Twice, the second time a byte at a time: a frame cut anywhere.
        let mut out = Vec::new();
        let mut f = Frames::new(role);
        f.feed(&framed, |m, b| out.push((METHODS[m], b)));
        for byte in &framed {
            f.feed(std::slice::from_ref(byte), |m, b| out.push((METHODS[m], b)));
        }
        out
    }

    /// The methods are named as tarpc writes them: the variant's position in
    /// `dynamo::rpc::Node`, after a context whose size varies.
    #[test]
    fn frames_are_named_by_their_method() {
        let opts = bincode::DefaultOptions::new();
        for id in [7u64, 300, 1 << 40] {
            let call = tarpc::ClientMessage::Request(tarpc::Request {
                context: dynamo::rpc::context(Duration::from_secs(5)),
                id,
                message: dynamo::rpc::NodeRequest::Info {},
            });
            let bytes = opts.serialize(&call).unwrap();
            let n = bytes.len() as u64 + 4;
            assert_eq!(method_of(Role::Calls, &bytes), [("info", n), ("info", n)]);
            let call = tarpc::ClientMessage::Request(tarpc::Request {
                context: dynamo::rpc::context(Duration::from_secs(1)),
                id,
                message: dynamo::rpc::NodeRequest::FetchRingNewer { epoch: 1 << 33 },
            });
            let bytes = opts.serialize(&call).unwrap();
            assert_eq!(method_of(Role::Calls, &bytes)[0].0, "fetch_ring_newer");
            let answer = tarpc::Response {
                request_id: id,
                message: Ok(dynamo::rpc::NodeResponse::FetchRingNewer(Ok(None))),
            };
            let bytes = opts.serialize(&answer).unwrap();
            assert_eq!(method_of(Role::Answers, &bytes)[0].0, "fetch_ring_newer");
            let answer = tarpc::Response {
                request_id: id,
                message: Ok(dynamo::rpc::NodeResponse::Write(Err(
                    dynamo::error::Error::internal("x"),
                ))),
            };
            let bytes = opts.serialize(&answer).unwrap();
            assert_eq!(method_of(Role::Answers, &bytes)[0].0, "write");
        }
    }
}
