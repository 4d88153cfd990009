//! What a node takes from the machine it runs on besides the network and the
//! clock: threads for blocking work, and randomness for new identities.
//!
//! - [`spawn`] runs blocking work (sled scans, batch merges, opening the
//!   store) off the async threads, on tokio's blocking pool as
//!   `spawn_blocking` does.
//! - [`new_uuid`] draws a node's incarnation (a fresh random UUID).
//!
//! The simulation (`tests/sim`) runs every node of a ring on one thread under
//! a simulated clock. A job on a real thread finishes at a moment the
//! simulation does not choose, and a random UUID orders actors differently in
//! every run: the same seed would give different runs. [`simulate`] makes
//! [`spawn`] run each job in place on the caller's thread and draws UUIDs from
//! a generator seeded by the run's seed, so a run is a function of its seed.
//! A real node never calls it. (The network and the clock go through
//! [`crate::net`] and tokio's clock, which the simulation replaces too.)

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

static INLINE: AtomicBool = AtomicBool::new(false);
static UUIDS: Mutex<Option<StdRng>> = Mutex::new(None);

/// From now on, in this process, [`spawn`] runs each job in place and
/// [`new_uuid`] draws from a generator seeded with `seed` (the simulation).
pub fn simulate(seed: u64) {
    INLINE.store(true, Ordering::Relaxed);
    *UUIDS.lock().unwrap_or_else(|e| e.into_inner()) = Some(StdRng::seed_from_u64(seed));
}

/// A fresh random UUID (seeded under [`simulate`]).
pub fn new_uuid() -> uuid::Uuid {
    match UUIDS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        Some(rng) => uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
        None => uuid::Uuid::new_v4(),
    }
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
    if INLINE.load(Ordering::Relaxed) {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
            .map_err(|_| Failed("panicked".into()));
    }
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Failed(e.to_string()))
}
