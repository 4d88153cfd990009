//! Group commit: one flush serves every write waiting for it.
//!
//! Writers first apply their change to sled (in memory), then call
//! [`GroupCommit::wait`], which queues a oneshot sender and wakes the flusher
//! thread. The flusher takes the whole queue, calls `Db::flush` once, and answers
//! every waiter it took with the result. Writers that arrive while a flush runs wait
//! for the next one, whose flush covers their change because they wrote before
//! queueing. Under load a flush therefore serves many writes; alone, a write waits
//! for exactly one flush.
//!
//! Under load the flusher also waits [`COMMIT_DELAY`] before a flush when the
//! previous flush served [`COMMIT_DELAY_MIN_BATCH`] or more writers (PostgreSQL's
//! `commit_delay` / `commit_siblings`): every flush costs an `fsync` and a round of
//! sled's I/O threads, so gathering more writers per flush raised put throughput by
//! about 15% (BENCHMARKS.md), while a lone writer (previous batch of one) never waits.
//!
//! The flusher is a plain thread (this layer has no async runtime); waiters hold a
//! runtime-agnostic `futures` oneshot. A flusher thread that cannot be started
//! fails [`GroupCommit::start`], and with it `Storage::open`: no write could
//! ever be acknowledged without it. With `--fsync always` the flusher answers one
//! waiter per flush; with `never` `wait` resolves at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use futures::channel::oneshot;

use crate::config::FsyncMode;
use crate::error::{Error, Result};

type Waiter = oneshot::Sender<Result<()>>;

/// How long a busy flusher waits for more writers before flushing: small next
/// to the queueing a loaded node already has (a loaded ring's put p50 is
/// several ms), large enough to fill a batch. It was 500 us while sled's flush
/// ended in `sync_file_range`; with a real `fdatasync` each flush costs more,
/// and 1 ms gave 0.78x and 0.84x the node CPU per YCSB A operation on a ring
/// (BENCHMARKS.md).
pub const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(1);
/// The previous batch size from which the flusher considers itself busy.
pub const COMMIT_DELAY_MIN_BATCH: usize = 2;

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    stopped: bool,
    /// The flusher sleeps on the condvar. Only then does a new waiter wake it
    /// (a futex call per write otherwise): a busy flusher looks at the queue,
    /// under this mutex, before it sleeps again.
    flusher_asleep: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    flushes: AtomicU64,
}

/// The flusher and its queue.
pub struct GroupCommit {
    shared: Arc<Shared>,
    mode: FsyncMode,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// The flusher's body, as handed to the function that starts its thread.
type Flusher = Box<dyn FnOnce() + Send + 'static>;

impl GroupCommit {
    /// Starts the flusher thread for `db` (none for `FsyncMode::Never`). Fails
    /// if the thread cannot be started: without it no durable write would
    /// ever be acknowledged.
    pub fn start(db: sled::Db, mode: FsyncMode) -> Result<GroupCommit> {
        GroupCommit::start_with(db, mode, |body| {
            thread::Builder::new()
                .name("group-commit".into())
                .spawn(body)
        })
    }

    /// [`GroupCommit::start`] with the thread started by `spawn` (tests make it fail).
    fn start_with(
        db: sled::Db,
        mode: FsyncMode,
        spawn: impl FnOnce(Flusher) -> std::io::Result<thread::JoinHandle<()>>,
    ) -> Result<GroupCommit> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            flushes: AtomicU64::new(0),
        });
        let thread = match mode {
            FsyncMode::Never => None,
            _ => {
                let shared = shared.clone();
                let handle = spawn(Box::new(move || run(db, shared, mode))).map_err(|e| {
                    Error::storage(format!("cannot start the group-commit flusher thread: {e}"))
                })?;
                Some(handle)
            }
        };
        Ok(GroupCommit {
            shared,
            mode,
            thread: Mutex::new(thread),
        })
    }

    /// Resolves once everything written before this call is durable.
    pub fn wait(&self) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let rx = if self.mode == FsyncMode::Never {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            let mut q = lock(&self.shared.queue);
            if q.stopped {
                drop(tx);
            } else {
                q.waiters.push(tx);
            }
            let asleep = q.flusher_asleep;
            drop(q);
            if asleep {
                self.shared.wake.notify_one();
            }
            Some(rx)
        };
        async move {
            match rx {
                None => Ok(()),
                Some(rx) => rx.await.unwrap_or(Err(Error::ShuttingDown)),
            }
        }
    }

    /// How many flushes have served waiters so far.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Flushes what is queued, answers every waiter and stops the thread.
    pub fn stop(&self) {
        lock(&self.shared.queue).stopped = true;
        self.shared.wake.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn run(db: sled::Db, shared: Arc<Shared>, mode: FsyncMode) {
    let mut previous_batch = 0;
    loop {
        let (batch, stopped) = {
            let mut q = lock(&shared.queue);
            while q.waiters.is_empty() && !q.stopped {
                q.flusher_asleep = true;
                q = match shared.wake.wait(q) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                q.flusher_asleep = false;
            }
            if mode == FsyncMode::Batch && previous_batch >= COMMIT_DELAY_MIN_BATCH && !q.stopped {
                drop(q);
                thread::sleep(COMMIT_DELAY);
                q = lock(&shared.queue);
            }
            let batch = match mode {
                FsyncMode::Always if !q.waiters.is_empty() => vec![q.waiters.remove(0)],
                _ => std::mem::take(&mut q.waiters),
            };
            (batch, q.stopped && q.waiters.is_empty())
        };
        previous_batch = batch.len();
        if !batch.is_empty() {
            let result = db.flush().map(|_| ()).map_err(Error::storage);
            shared.flushes.fetch_add(1, Ordering::Relaxed);
            for w in batch {
                let _ = w.send(result.clone());
            }
        }
        if stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    /// A flusher that cannot be started is an error at start, not a store
    /// whose every durable write waits for ever.
    #[test]
    fn a_flusher_that_cannot_start_is_an_error() {
        for mode in [FsyncMode::Batch, FsyncMode::Always] {
            let failed = GroupCommit::start_with(db(), mode, |_| {
                Err(std::io::Error::other("no more threads"))
            });
            let Err(e) = failed else {
                panic!("{mode:?}: started without a flusher");
            };
            assert!(
                e.to_string()
                    .contains("cannot start the group-commit flusher thread: no more threads"),
                "{e}"
            );
        }
        // `never` needs no thread and does not ask for one.
        let never = GroupCommit::start_with(db(), FsyncMode::Never, |_| {
            Err(std::io::Error::other("not asked"))
        })
        .unwrap();
        futures::executor::block_on(never.wait()).unwrap();
        // The real spawn works and serves a waiter.
        let batch = GroupCommit::start(db(), FsyncMode::Batch).unwrap();
        futures::executor::block_on(batch.wait()).unwrap();
        batch.stop();
    }
}
