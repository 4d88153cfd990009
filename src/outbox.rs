//! Replica writes coalesced per peer: one `replicate_batch` call carries every
//! write queued for a peer, and the peer applies them with one flush wait.
//!
//! # Why
//!
//! A put on a 3-node ring sends two `replicate` calls; under load a coordinator
//! has dozens in flight to each peer. Each was a request of its own on both
//! sides: a frame, a request slot and a response in tarpc, a task wake-up, a
//! group-commit registration. Coalescing pays those once per batch.
//!
//! # How
//!
//! Each peer has an outbox: a bounded queue ([`QUEUE`] writes) drained by one
//! task. The task takes whatever is queued (at most [`MAX_ITEMS`] writes or
//! [`MAX_BYTES`] of objects, and always at least one) and sends it as one call
//! without waiting: nothing is held back for a batch to fill, so a lone write
//! leaves at once. At most [`MAX_IN_FLIGHT`] batches per peer are in flight;
//! while they are, new writes queue up and leave together in the next one,
//! which is where the batching comes from under load (as group commit does for
//! flushes).
//!
//! # What a caller learns
//!
//! Exactly what a single `replicate` call would tell it ([`CallError`]): the
//! peer's own answer for its write, or the batch's failure. A batch that
//! surely never left (connect refused, queue full) fails every write in it as
//! never delivered; a batch lost in flight or past its deadline is an unknown
//! outcome for each write in it, never sent again. A write that waited in the
//! queue past its caller's deadline may still be sent: its caller was told the
//! outcome is unknown.
//!
//! # Lifetime
//!
//! The task is spawned on the first write to a peer, tracked by the node's
//! background [`TaskTracker`], and ends after [`IDLE`] without writes (the next
//! write starts a new one), so shutdown never waits on an idle outbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::peers::{CallError, Peers};
use crate::rpc::{Addressee, ReplicaWrite};
use crate::types::NodeId;

/// Writes one outbox holds before callers wait for room.
pub const QUEUE: usize = 4096;
/// Most writes in one batch (the receiver refuses more).
pub const MAX_ITEMS: usize = 256;
/// Most object bytes in one batch (a single larger object goes alone): well
/// under the 16 MiB frame.
pub const MAX_BYTES: usize = 4 << 20;
/// Batches in flight to one peer at once.
pub const MAX_IN_FLIGHT: usize = 1;
/// An outbox task with nothing to send for this long ends.
const IDLE: Duration = Duration::from_millis(250);

/// One queued write and where its outcome goes.
struct Queued {
    write: ReplicaWrite,
    deadline: Instant,
    done: oneshot::Sender<Result<(), CallError>>,
}

/// The outboxes of one node, one per peer written to.
pub struct Outboxes {
    peers: Arc<Peers>,
    boxes: Mutex<HashMap<NodeId, mpsc::Sender<Queued>>>,
    tasks: TaskTracker,
}

impl Outboxes {
    /// Outboxes over `peers`' connections; their tasks are tracked by `tasks`.
    pub fn new(peers: Arc<Peers>, tasks: TaskTracker) -> Outboxes {
        Outboxes {
            peers,
            boxes: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    /// Sends `write` to `to.node` within `timeout`, in a batch with the other
    /// writes queued for it, and returns that node's answer for it.
    pub async fn replicate(
        &self,
        to: Addressee,
        write: ReplicaWrite,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let deadline = Instant::now() + timeout;
        let (done, outcome) = oneshot::channel();
        let mut item = Queued {
            write,
            deadline,
            done,
        };
        // A queue whose task just ended idle refuses the write: start a new one.
        for _ in 0..2 {
            let sender = self.sender(&to);
            match tokio::time::timeout_at(deadline, sender.send(item)).await {
                Ok(Ok(())) => return Self::outcome(outcome, deadline, timeout).await,
                Ok(Err(mpsc::error::SendError(back))) => {
                    self.forget(&to.node, &sender);
                    item = back;
                }
                Err(_) => {
                    return Err(CallError::Unreachable(format!(
                        "{} writes already queued for it for {} ms",
                        QUEUE,
                        timeout.as_millis()
                    )))
                }
            }
        }
        Err(CallError::Unreachable("its outbox kept closing".into()))
    }

    async fn outcome(
        outcome: oneshot::Receiver<Result<(), CallError>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), CallError> {
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CallError::Unknown(
                "the batch carrying the write was abandoned".into(),
            )),
            Err(_) => Err(CallError::Unknown(format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// The queue to `to.node`, with a task draining it.
    fn sender(&self, to: &Addressee) -> mpsc::Sender<Queued> {
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = boxes.get(&to.node).filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        boxes.insert(to.node.clone(), tx.clone());
        self.tasks.spawn(drain(self.peers.clone(), to.clone(), rx));
        tx
    }

    /// Drops `sender` from the table unless it was replaced already.
    fn forget(&self, node: &NodeId, sender: &mpsc::Sender<Queued>) {
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        if boxes.get(node).is_some_and(|s| s.same_channel(sender)) {
            boxes.remove(node);
        }
    }
}

/// The outbox task of one peer: sends what is queued, in batches.
async fn drain(peers: Arc<Peers>, to: Addressee, mut rx: mpsc::Receiver<Queued>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = tokio::time::timeout(IDLE, rx.recv()), if in_flight.len() < MAX_IN_FLIGHT => {
                let first = match next {
                    Ok(Some(first)) => first,
                    // Closed, or idle with nothing in flight: end (the table
                    // starts a new task for the next write).
                    Ok(None) => break,
                    Err(_) if in_flight.is_empty() => {
                        rx.close();
                        // Writes that raced the close are still sent.
                        let mut rest = Vec::new();
                        while let Ok(q) = rx.try_recv() {
                            rest.push(q);
                        }
                        if !rest.is_empty() {
                            in_flight.push(send(peers.clone(), to.clone(), rest));
                        }
                        break;
                    }
                    Err(_) => continue,
                };
                let mut bytes = first.write.object.approx_size();
                let mut batch = vec![first];
                while batch.len() < MAX_ITEMS && bytes < MAX_BYTES {
                    match rx.try_recv() {
                        Ok(q) => {
                            bytes += q.write.object.approx_size();
                            batch.push(q);
                        }
                        Err(_) => break,
                    }
                }
                in_flight.push(send(peers.clone(), to.clone(), batch));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Sends one batch and hands each write its outcome.
async fn send(peers: Arc<Peers>, to: Addressee, batch: Vec<Queued>) {
    let now = Instant::now();
    let Some(deadline) = batch.iter().map(|q| q.deadline).max() else {
        return;
    };
    let mut waiting = Vec::with_capacity(batch.len());
    let mut writes = Vec::with_capacity(batch.len());
    for q in batch {
        waiting.push(q.done);
        writes.push(q.write);
    }
    let count = writes.len();
    let node = to.node.clone();
    let out = peers
        .call(
            &node,
            deadline.saturating_duration_since(now),
            |c, ctx| async move { c.replicate_batch(ctx, to, writes).await },
        )
        .await;
    match out {
        Ok(answers) if answers.len() == count => {
            for (done, answer) in waiting.into_iter().zip(answers) {
                let _ = done.send(answer.map_err(CallError::Remote));
            }
        }
        Ok(answers) => {
            let e = CallError::Unknown(format!(
                "{} answers to a batch of {count} writes",
                answers.len()
            ));
            for done in waiting {
                let _ = done.send(Err(e.clone()));
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
        }
    }

    /// Three writes at once to a peer that takes the batch and dies before
    /// answering: each is an unknown outcome, and nothing is sent again.
    #[tokio::test]
    async fn a_batch_lost_with_its_connection_is_unknown_for_every_write_in_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = addressee(&listener);
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            assert!(s.read(&mut buf).await.unwrap() > 0);
            drop(s);
            let again = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
            again.is_ok()
        });
        let tasks = TaskTracker::new();
        let outboxes = Outboxes::new(Arc::new(Peers::default()), tasks.clone());
        let t = Duration::from_secs(2);
        let (a, b, c) = tokio::join!(
            outboxes.replicate(to.clone(), write("a"), t),
            outboxes.replicate(to.clone(), write("b"), t),
            outboxes.replicate(to.clone(), write("c"), t),
        );
        for r in [a, b, c] {
            assert!(matches!(r, Err(CallError::Unknown(_))), "{r:?}");
        }
        assert!(!server.await.unwrap(), "a write was sent a second time");
        // The outbox task ends once idle; the tracker sees it go.
        tasks.close();
        tokio::time::timeout(Duration::from_secs(2), tasks.wait())
            .await
            .expect("the idle outbox task ends");
    }

    /// Nothing listens: every write surely never left, so the coordinator may
    /// hand it to a stand-in.
    #[tokio::test]
    async fn writes_to_a_refusing_peer_are_never_delivered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = addressee(&listener);
        drop(listener);
        let outboxes = Outboxes::new(Arc::new(Peers::default()), TaskTracker::new());
        let t = Duration::from_secs(2);
        let (a, b) = tokio::join!(
            outboxes.replicate(to.clone(), write("a"), t),
            outboxes.replicate(to.clone(), write("b"), t),
        );
        for r in [a, b] {
            assert!(r.as_ref().is_err_and(|e| e.never_delivered()), "{r:?}");
        }
    }
}
