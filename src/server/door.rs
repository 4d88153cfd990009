//! A connection's first exchange, in the gate's handshake room, and the log
//! of refused connections.

use super::*;

/// The first exchange of a connection (see [`crate::security::wire`]), in
/// the gate's handshake room: None when the caller was refused, pushed out to
/// make room, too slow, or the node is stopping.
pub(super) async fn handshake(
    stream: Box<dyn crate::net::Stream>,
    peer: SocketAddr,
    state: &State,
    gate: &Gate,
    stop: &mut watch::Receiver<bool>,
) -> Option<(
    Box<dyn crate::net::Stream>,
    Caller,
    crate::security::gate::Admission,
)> {
    let mut waiting = gate.enter();
    let security = state.access.security();
    let exchange =
        wire::accept(
            stream,
            &security.keys,
            security.tls.as_deref(),
            |caller| match state.access.admit(caller) {
                Err(e) => wire::Verdict::Refuse {
                    unauthorized: true,
                    reason: match e {
                        Error::Unauthorized { reason } => reason,
                        e => e.to_string(),
                    },
                },
                Ok(role) => match gate.admit(caller, peer.ip()) {
                    Ok(admission) => wire::Verdict::Admit(admission, role),
                    Err(reason) => wire::Verdict::Refuse {
                        unauthorized: false,
                        reason,
                    },
                },
            },
        );
    let outcome = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange) => r,
        _ = &mut waiting.pushed_out => {
            tracing::debug!(%peer, "closed a connection still in its handshake to make room");
            return None;
        }
        _ = stop.changed() => return None,
    };
    match outcome {
        Ok(Ok(Ok(admitted))) => Some(admitted),
        Ok(Ok(Err(reason))) => {
            REFUSALS.note(&peer, &reason);
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "a connection failed its handshake");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "closed a connection that did not finish its handshake in time");
            None
        }
    }
}

/// Refused connections, logged at most once a second (a flood of bad
/// handshakes must not flood the log), with how many went unlogged.
struct RefusalLog {
    last_ms: std::sync::atomic::AtomicU64,
    unlogged: std::sync::atomic::AtomicU64,
}

static REFUSALS: RefusalLog = RefusalLog {
    last_ms: std::sync::atomic::AtomicU64::new(0),
    unlogged: std::sync::atomic::AtomicU64::new(0),
};

impl RefusalLog {
    fn note(&self, peer: &SocketAddr, reason: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Relaxed);
            return;
        }
        let more = self.unlogged.swap(0, Relaxed);
        tracing::warn!(%peer, %reason, more_since_last_line = more, "refused a connection");
    }
}
