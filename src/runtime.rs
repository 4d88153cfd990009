//! What a node takes from the machine it runs on besides the network and the
//! clock: threads for blocking work, and randomness for new identities.
//!
//! - [`spawn`] runs blocking work (sled scans, batch merges, opening the
//!   store) off the async threads, on tokio's blocking pool as
//!   `spawn_blocking` does.
//! - [`new_uuid`] draws a node's incarnation (a fresh random UUID).
//! - [`disk_latency`] is the time a flush takes beyond the flush itself:
//!   nothing on a real node.
//!
//! The simulation (`tests/sim`) runs every node of a ring on one thread under
//! a simulated clock. A job on a real thread finishes at a moment the
//! simulation does not choose, and a random UUID orders actors differently in
//! every run: the same seed would give different runs. [`simulate`] makes
//! [`spawn`] run each job in place on the caller's thread and draws UUIDs from
//! a generator seeded by the run's seed, so a run is a function of its seed.
//! The simulation's nodes flush nothing to a real disk (`--fsync never`), so
//! [`disk_latency`] gives each wait for durability a simulated flush time
//! drawn from a generator seeded the same way: the windows in which a caller can be
//! cancelled mid-commit exist in the simulation as on a real disk. A real
//! node never calls [`simulate`]. (The network and the clock go through
//! [`crate::net`] and tokio's clock, which the simulation replaces too.)

use std::cell::RefCell;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A simulation's generators, per thread: turmoil runs a whole simulated
/// ring on the thread that steps it, and tests run side by side on threads
/// of their own, each with its own seed.
struct Simulated {
    uuids: StdRng,
    flushes: StdRng,
    draws: StdRng,
}

thread_local! {
    static SIMULATED: RefCell<Option<Simulated>> = const { RefCell::new(None) };
}

/// The longest simulated flush.
const MAX_FLUSH_US: u64 = 20_000;

/// From now on, on this thread, [`spawn`] runs each job in place and
/// [`new_uuid`] and [`disk_latency`] draw from generators seeded with `seed`
/// (the simulation).
pub fn simulate(seed: u64) {
    SIMULATED.with(|s| {
        *s.borrow_mut() = Some(Simulated {
            uuids: StdRng::seed_from_u64(seed),
            flushes: StdRng::seed_from_u64(seed.wrapping_add(1)),
            draws: StdRng::seed_from_u64(seed.wrapping_add(2)),
        })
    });
}

fn simulated() -> bool {
    SIMULATED.with(|s| s.borrow().is_some())
}

/// Waits as long as a flush takes beyond sled's own: nothing, but under
/// [`simulate`] up to 20 ms of simulated time.
pub async fn disk_latency() {
    let pause = SIMULATED.with(|s| {
        s.borrow_mut()
            .as_mut()
            .map(|s| s.flushes.random_range(0..MAX_FLUSH_US))
    });
    if let Some(us) = pause {
        tokio::time::sleep(std::time::Duration::from_micros(us)).await;
    }
}

/// A fresh random UUID (seeded under [`simulate`]).
pub fn new_uuid() -> uuid::Uuid {
    let drawn = SIMULATED.with(|s| s.borrow_mut().as_mut().map(|s| s.uuids.random()));
    match drawn {
        Some(bytes) => uuid::Builder::from_random_bytes(bytes).into_uuid(),
        None => uuid::Uuid::new_v4(),
    }
}

/// The wall clock, in milliseconds since the Unix epoch: what decides
/// whether a version with an expiry ([`crate::vclock::Content::Expiring`]) can
/// still be read. Nodes' clocks are not assumed to agree (the reaper's essay
/// says what a skew does).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random number for the node's logic (the Raft election timeouts draw
/// theirs here): from the operating system's generator, seeded under
/// [`simulate`].
pub fn random_u64() -> u64 {
    SIMULATED
        .with(|s| s.borrow_mut().as_mut().map(|s| s.draws.random()))
        .unwrap_or_else(rand::random)
}

/// A blocking job panicked (or its task was cancelled).
#[derive(Debug)]
pub struct Failed(String);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a blocking job failed: {}", self.0)
    }
}

/// Runs `job` off the async threads (or in place under [`simulate`]).
pub async fn spawn<F, T>(job: F) -> Result<T, Failed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if simulated() {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
            .map_err(|_| Failed("panicked".into()));
    }
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Failed(e.to_string()))
}
