//! Calls coalesced per peer: one call carries every item queued for a peer.
//! Three kinds ride on it: replica writes ([`Replicate`], one `replicate_batch`
//! applied with one flush wait), a client's replica reads ([`ReadAt`], one
//! `read_batch`) and a client's puts and deletes to its node ([`Write`], one
//! `write_batch`).
//!
//! # Why
//!
//! A put on a 3-node ring sends two `replicate` calls, a client-driven get
//! three `read_at` calls, and a load of many clients in one process a `write`
//! per put to each node; under load a node or client has dozens in flight to
//! each peer. Each was a request of its own on both sides: a frame, a `writev`
//! (on loopback the sender's `writev` also runs the receiver's TCP stack), a
//! request slot and a response in tarpc, a task wake-up, and for writes a
//! group-commit registration. Coalescing pays those once per batch.
//!
//! # How
//!
//! Each peer has an outbox: a bounded queue ([`QUEUE`] items) drained by one
//! task. The task takes whatever is queued (at most [`MAX_ITEMS`] items or
//! [`MAX_BYTES`] of objects, and always at least one) and sends it as one call
//! without waiting: nothing is held back for a batch to fill, so a lone item
//! leaves at once. One batch per peer is in flight at a time; while it is,
//! new items queue up and leave together in the next one, which is where the
//! batching comes from under load (as group commit does for flushes). A batch
//! is answered as a whole, so its slowest item holds the others back (a write
//! forwarded to a hung node waits out its deadline): once the last batch sent
//! has been on its way for [`PATIENCE`], the next one leaves without waiting
//! for it, up to [`MAX_IN_FLIGHT`] at once.
//!
//! # An idle outbox
//!
//! An item for a peer with nothing queued and nothing on its way does not go
//! through the task at all: the caller's own task makes the call (a batch of
//! one) when it polls the answer. That saves the hand-over to the outbox task
//! and back, two task wake-ups, which is most of what batching would cost a
//! lone client: one client's sequential put took 0.92x to 0.95x and its get
//! 0.95x to 0.99x the time, in three alternating rounds (BENCHMARKS.md). The
//! call counts as on its way, so items that come meanwhile queue and leave
//! together once it is back (or after [`PATIENCE`]), as behind a batch. Which
//! of the two an item takes changes nothing a caller learns.
//!
//! # What a caller learns
//!
//! Exactly what a single call would tell it ([`CallError`]): the peer's own
//! answer for its item, or the batch's failure. A batch that surely never left
//! (connect refused, queue full) fails every item in it as never delivered; a
//! batch lost in flight or past its deadline is an unknown outcome for each
//! item in it, never sent again (for a write that matters: it may have been
//! applied). An item that waited in the queue past its caller's deadline may
//! still be sent: its caller was told the outcome is unknown.
//!
//! # Lifetime
//!
//! The task is spawned on the first item to a peer, tracked by the owner's
//! [`TaskTracker`], and ends after [`IDLE`] without items (the next item starts
//! a new one), so shutdown never waits on an idle outbox. A direct call runs
//! in its caller's task and ends with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tarpc::client::RpcError;
use tarpc::context::Context;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::peers::{CallError, Peers};
use crate::rpc::{Addressee, NodeClient, ReplicaRead, ReplicaWrite, WriteReply, WriteRequest};
use crate::types::NodeId;
use crate::vclock::Object;

/// Items one outbox holds before callers wait for room.
pub const QUEUE: usize = 4096;
/// Most items in one batch (the receiver refuses more).
pub const MAX_ITEMS: usize = 256;
/// Most object bytes in one batch (a single larger object goes alone): well
/// under the 16 MiB frame.
pub const MAX_BYTES: usize = 4 << 20;
/// Batches in flight to one peer at once when they are slow to come back.
pub const MAX_IN_FLIGHT: usize = 8;
/// How long the last batch sent may be on its way before the next one leaves
/// beside it: well above a loaded ring's p99 (a few ms), far below a deadline.
pub const PATIENCE: Duration = Duration::from_millis(20);
/// An outbox task with nothing to send for this long ends.
const IDLE: Duration = Duration::from_millis(250);

/// The receiving side's check of a batch's length: at most [`MAX_ITEMS`]
/// `what`, else the whole batch is refused.
pub fn check_len(len: usize, what: &str) -> crate::Result<()> {
    if len > MAX_ITEMS {
        return Err(crate::Error::invalid(format!(
            "{len} {what} in one batch, the limit is {MAX_ITEMS}"
        )));
    }
    Ok(())
}

/// The answers of one batch call as the RPC returns them.
type Answers<T> = BoxFuture<'static, Result<crate::Result<Vec<crate::Result<T>>>, RpcError>>;

/// One kind of call an outbox coalesces: many items, one answer per item.
pub trait Batch: 'static {
    type Item: Send + 'static;
    type Answer: Send + 'static;
    /// Bytes an item adds to a batch (counted against [`MAX_BYTES`]).
    fn size(item: &Self::Item) -> usize;
    /// The RPC carrying `items` to `to`; the answers come in the order of
    /// `items`.
    fn call(
        c: NodeClient,
        ctx: Context,
        to: Addressee,
        items: Vec<Self::Item>,
    ) -> Answers<Self::Answer>;
}

/// Replica writes: `replicate_batch`.
pub struct Replicate;

impl Batch for Replicate {
    type Item = ReplicaWrite;
    type Answer = ();
    fn size(item: &ReplicaWrite) -> usize {
        item.object.approx_size()
    }
    fn call(c: NodeClient, ctx: Context, to: Addressee, items: Vec<ReplicaWrite>) -> Answers<()> {
        Box::pin(async move { c.replicate_batch(ctx, to, items).await })
    }
}

/// A client's puts and deletes to its node: `write_batch` (the node
/// coordinates each; `to` names the node, which any node accepts).
pub struct Write;

impl Batch for Write {
    type Item = WriteRequest;
    type Answer = WriteReply;
    fn size(item: &WriteRequest) -> usize {
        item.key.len() + item.content.value().map_or(0, |v| v.len())
    }
    fn call(
        c: NodeClient,
        ctx: Context,
        _: Addressee,
        items: Vec<WriteRequest>,
    ) -> Answers<WriteReply> {
        Box::pin(async move { c.write_batch(ctx, items).await })
    }
}

/// A client's replica reads under its ring epoch: `read_batch`.
pub struct ReadAt;

impl Batch for ReadAt {
    type Item = ReplicaRead;
    type Answer = Object;
    fn size(item: &ReplicaRead) -> usize {
        item.key.len()
    }
    fn call(
        c: NodeClient,
        ctx: Context,
        to: Addressee,
        items: Vec<ReplicaRead>,
    ) -> Answers<Object> {
        Box::pin(async move { c.read_batch(ctx, to, items).await })
    }
}

type Outcome<B> = Result<<B as Batch>::Answer, CallError>;

/// The answer to one item: from its batch once that comes back, or from its
/// own call when it left at once (see "An idle outbox" above).
pub struct Answer<B: Batch>(Route<B>);

enum Route<B: Batch> {
    Queued(oneshot::Receiver<Outcome<B>>),
    Direct(BoxFuture<'static, Outcome<B>>),
}

impl<B: Batch> std::future::Future for Answer<B> {
    type Output = Outcome<B>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Outcome<B>> {
        match &mut self.0 {
            Route::Queued(rx) => std::pin::Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| {
                    Err(CallError::Unknown(
                        "the batch carrying the call was abandoned".into(),
                    ))
                })
            }),
            Route::Direct(call) => call.as_mut().poll(cx),
        }
    }
}

/// What the senders to one peer share with its outbox task: how many calls
/// are on their way to it (batches and direct calls alike), and a wake-up for
/// the task when one comes back.
struct Lane {
    in_flight: AtomicUsize,
    returned: Notify,
    /// When the last call left (the next batch waits for it until
    /// [`PATIENCE`] has passed).
    last_sent: Mutex<Instant>,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            in_flight: AtomicUsize::new(0),
            returned: Notify::new(),
            last_sent: Mutex::new(Instant::now()),
        }
    }

    fn sent_now(&self) {
        *self.last_sent.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last_sent(&self) -> Instant {
        *self.last_sent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One call counted in its lane's `in_flight` until dropped (answered,
/// failed, or abandoned by its caller).
struct OnTheWay(Arc<Lane>);

impl OnTheWay {
    fn new(lane: &Arc<Lane>) -> OnTheWay {
        lane.in_flight.fetch_add(1, Ordering::AcqRel);
        OnTheWay(lane.clone())
    }

    /// Counts a call only if none is on its way yet.
    fn first(lane: &Arc<Lane>) -> Option<OnTheWay> {
        lane.in_flight
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| OnTheWay(lane.clone()))
    }
}

impl Drop for OnTheWay {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.returned.notify_one();
    }
}

/// One queued item and where its outcome goes.
struct Queued<B: Batch> {
    item: B::Item,
    deadline: Instant,
    done: oneshot::Sender<Outcome<B>>,
}

/// One peer's queue and lane.
type Peer<B> = (mpsc::Sender<Queued<B>>, Arc<Lane>);

/// The outboxes of one node or client for one kind of call, one per peer.
pub struct Outboxes<B: Batch> {
    peers: Arc<Peers>,
    boxes: Mutex<HashMap<NodeId, Peer<B>>>,
    tasks: TaskTracker,
}

impl<B: Batch> Outboxes<B> {
    /// Outboxes over `peers`' connections; their tasks are tracked by `tasks`.
    pub fn new(peers: Arc<Peers>, tasks: TaskTracker) -> Outboxes<B> {
        Outboxes {
            peers,
            boxes: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    /// Sends `item` to `to.node` within `timeout`, in a batch with the other
    /// items queued for it, and returns that node's answer for it.
    pub async fn send(&self, to: Addressee, item: B::Item, timeout: Duration) -> Outcome<B> {
        let deadline = Instant::now() + timeout;
        let answer = self.enqueue(to, item, deadline).await?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CallError::Unknown(format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Queues `item` for `to.node` (waiting for room until `deadline`) and
    /// returns its answer to come, which has no timer of its own: for a caller
    /// that waits for several items under one deadline (a client's get asks
    /// three nodes). It comes by the deadline of the call carrying the item
    /// at the latest, which is no earlier than `deadline`. To an idle peer
    /// the item leaves at once, as a call of its own made by the caller's
    /// task when it polls the answer.
    pub async fn enqueue(
        &self,
        to: Addressee,
        item: B::Item,
        deadline: Instant,
    ) -> Result<Answer<B>, CallError> {
        let started = Instant::now();
        let mut item = item;
        // A queue whose task just ended idle refuses the item: start a new one.
        for _ in 0..2 {
            let (sender, lane) = self.lane(&to);
            // Nothing queued: every slot of the channel is free.
            if sender.capacity() == sender.max_capacity() {
                if let Some(on_the_way) = OnTheWay::first(&lane) {
                    lane.sent_now();
                    let peers = self.peers.clone();
                    return Ok(Answer(Route::Direct(Box::pin(async move {
                        let _on_the_way = on_the_way;
                        let mut answers = call::<B>(&peers, to, vec![item], deadline).await?;
                        answers.pop().map_or_else(
                            || Err(CallError::Unknown("no answer to a batch of 1 call".into())),
                            |a| a.map_err(CallError::Remote),
                        )
                    }))));
                }
            }
            let (done, answer) = oneshot::channel();
            let queued = Queued {
                item,
                deadline,
                done,
            };
            match tokio::time::timeout_at(deadline, sender.send(queued)).await {
                Ok(Ok(())) => return Ok(Answer(Route::Queued(answer))),
                Ok(Err(mpsc::error::SendError(back))) => {
                    self.forget(&to.node, &sender);
                    item = back.item;
                }
                Err(_) => {
                    return Err(CallError::Unreachable(format!(
                        "{} calls already queued for it for {} ms",
                        QUEUE,
                        started.elapsed().as_millis()
                    )))
                }
            }
        }
        Err(CallError::Unreachable("its outbox kept closing".into()))
    }

    /// The queue to `to.node`, with a task draining it, and its lane.
    fn lane(&self, to: &Addressee) -> Peer<B> {
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, lane)) = boxes.get(&to.node).filter(|(s, _)| !s.is_closed()) {
            return (s.clone(), lane.clone());
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let lane = Arc::new(Lane::new());
        boxes.insert(to.node.clone(), (tx.clone(), lane.clone()));
        self.tasks
            .spawn(drain::<B>(self.peers.clone(), to.clone(), rx, lane.clone()));
        (tx, lane)
    }

    /// Drops `sender` from the table unless it was replaced already.
    fn forget(&self, node: &NodeId, sender: &mpsc::Sender<Queued<B>>) {
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        if boxes.get(node).is_some_and(|(s, _)| s.same_channel(sender)) {
            boxes.remove(node);
        }
    }
}

/// The outbox task of one peer: sends what is queued, in batches.
async fn drain<B: Batch>(
    peers: Arc<Peers>,
    to: Addressee,
    mut rx: mpsc::Receiver<Queued<B>>,
    lane: Arc<Lane>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        let impatient = lane.last_sent() + PATIENCE;
        let on_the_way = lane.in_flight.load(Ordering::Acquire);
        let room = on_the_way == 0 || (on_the_way < MAX_IN_FLIGHT && Instant::now() >= impatient);
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            // A direct call came back.
            () = lane.returned.notified(), if !room => {}
            () = tokio::time::sleep_until(impatient), if !room && on_the_way < MAX_IN_FLIGHT => {}
            next = tokio::time::timeout(IDLE, rx.recv()), if room => {
                let first = match next {
                    Ok(Some(first)) => first,
                    // Closed, or idle with nothing in flight: end (the table
                    // starts a new task for the next item).
                    Ok(None) => break,
                    Err(_) if in_flight.is_empty() => {
                        rx.close();
                        // Items that raced the close are still sent.
                        let mut rest = Vec::new();
                        while let Ok(q) = rx.try_recv() {
                            rest.push(q);
                        }
                        if !rest.is_empty() {
                            in_flight.push(send::<B>(peers.clone(), to.clone(), rest, OnTheWay::new(&lane)));
                        }
                        break;
                    }
                    Err(_) => continue,
                };
                let mut bytes = B::size(&first.item);
                let mut batch = vec![first];
                while batch.len() < MAX_ITEMS && bytes < MAX_BYTES {
                    match rx.try_recv() {
                        Ok(q) => {
                            bytes += B::size(&q.item);
                            batch.push(q);
                        }
                        Err(_) => break,
                    }
                }
                in_flight.push(send::<B>(peers.clone(), to.clone(), batch, OnTheWay::new(&lane)));
                lane.sent_now();
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Calls `to.node` with `items` (due by `deadline`): one answer per item, in
/// their order, or the failure of the whole call.
async fn call<B: Batch>(
    peers: &Peers,
    to: Addressee,
    items: Vec<B::Item>,
    deadline: Instant,
) -> Result<Vec<crate::Result<B::Answer>>, CallError> {
    let count = items.len();
    let node = to.node.clone();
    let timeout = deadline.saturating_duration_since(Instant::now());
    let answers = peers
        .call(&node, timeout, |c, ctx| B::call(c, ctx, to, items))
        .await?;
    if answers.len() != count {
        return Err(CallError::Unknown(format!(
            "{} answers to a batch of {count} calls",
            answers.len()
        )));
    }
    Ok(answers)
}

/// Sends one batch and hands each item its outcome.
async fn send<B: Batch>(
    peers: Arc<Peers>,
    to: Addressee,
    batch: Vec<Queued<B>>,
    on_the_way: OnTheWay,
) {
    let _on_the_way = on_the_way;
    let Some(deadline) = batch.iter().map(|q| q.deadline).max() else {
        return;
    };
    let mut waiting = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for q in batch {
        waiting.push(q.done);
        items.push(q.item);
    }
    match call::<B>(&peers, to, items, deadline).await {
        Ok(answers) => {
            for (done, answer) in waiting.into_iter().zip(answers) {
                let _ = done.send(answer.map_err(CallError::Remote));
            }
        }
        Err(e) => {
            for done in waiting {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn write(key: &str) -> ReplicaWrite {
        ReplicaWrite {
            epoch: 1,
            key: key.into(),
            object: Arc::new(crate::vclock::Object::new()),
            hint_for: None,
        }
    }

    fn addressee(listener: &TcpListener) -> Addressee {
        Addressee {
            node: listener.local_addr().unwrap().to_string().parse().unwrap(),
            identity: None,
            from: None,
        }
    }

    /// Three writes at once to a peer that takes each call and dies before
    /// answering: each write is an unknown outcome, and none is sent twice.
    /// (The first leaves at once as a call of its own; the two queued behind
    /// it leave together once it is lost, on a new connection.)
    #[tokio::test]
    async fn a_batch_lost_with_its_connection_is_unknown_for_every_write_in_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = addressee(&listener);
        let server = tokio::spawn(async move {
            // Everything every connection carried, until none comes for 500 ms.
            let mut received = Vec::new();
            while let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
            {
                let mut buf = vec![0u8; 1 << 16];
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                received.extend_from_slice(&buf[..n]);
            }
            received
        });
        let tasks = TaskTracker::new();
        let outboxes = Outboxes::<Replicate>::new(Arc::new(Peers::default()), tasks.clone());
        let t = Duration::from_secs(2);
        let keys = ["key-alpha", "key-bravo", "key-charlie"];
        let (a, b, c) = tokio::join!(
            outboxes.send(to.clone(), write(keys[0]), t),
            outboxes.send(to.clone(), write(keys[1]), t),
            outboxes.send(to.clone(), write(keys[2]), t),
        );
        for r in [a, b, c] {
            assert!(matches!(r, Err(CallError::Unknown(_))), "{r:?}");
        }
        let received = server.await.unwrap();
        for key in keys {
            let times = received
                .windows(key.len())
                .filter(|w| *w == key.as_bytes())
                .count();
            assert_eq!(times, 1, "{key} was sent {times} times");
        }
        // The outbox task ends once idle; the tracker sees it go.
        tasks.close();
        tokio::time::timeout(Duration::from_secs(2), tasks.wait())
            .await
            .expect("the idle outbox task ends");
    }

    /// A peer that takes a batch and never answers holds the next item back
    /// for PATIENCE only: it leaves in a batch of its own beside the first.
    #[tokio::test]
    async fn a_batch_stuck_on_its_way_holds_the_next_back_only_for_a_while() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = addressee(&listener);
        let (first_read, first) = oneshot::channel();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1 << 16];
            assert!(s.read(&mut buf).await.unwrap() > 0);
            let _ = first_read.send(());
            // The second batch arrives on the same connection while the
            // first is unanswered.
            let more = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
            (more.is_ok_and(|n| n.is_ok_and(|n| n > 0)), s)
        });
        let outboxes = Arc::new(Outboxes::<Replicate>::new(
            Arc::new(Peers::default()),
            TaskTracker::new(),
        ));
        let send = |key: &'static str| {
            let (outboxes, to) = (outboxes.clone(), to.clone());
            tokio::spawn(async move { outboxes.send(to, write(key), Duration::from_secs(3)).await })
        };
        let _stuck = send("a");
        first.await.unwrap();
        let started = Instant::now();
        let _next = send("b");
        let (arrived, _conn) = server.await.unwrap();
        let after = started.elapsed();
        assert!(
            arrived,
            "the second batch waited for the first one's answer"
        );
        assert!(
            after >= PATIENCE,
            "it left after {after:?}, before PATIENCE"
        );
    }

    /// Nothing listens: every write surely never left, so the coordinator may
    /// hand it to a stand-in.
    #[tokio::test]
    async fn writes_to_a_refusing_peer_are_never_delivered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = addressee(&listener);
        drop(listener);
        let outboxes = Outboxes::<Replicate>::new(Arc::new(Peers::default()), TaskTracker::new());
        let t = Duration::from_secs(2);
        let (a, b) = tokio::join!(
            outboxes.send(to.clone(), write("a"), t),
            outboxes.send(to.clone(), write("b"), t),
        );
        for r in [a, b] {
            assert!(r.as_ref().is_err_and(|e| e.never_delivered()), "{r:?}");
        }
    }
}
