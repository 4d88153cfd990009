//! One connection to a node: dialling it over a [`crate::net::Network`],
//! starting its tarpc dispatch, telling a connection that closed from one
//! that went silent (given up after [`SILENT_CONNECTION`]), and the deadline
//! every call carries.

use super::*;

/// Opens one connection to `node` over TCP, as a client without a token
/// (the whole of an insecure ring's handshake), and starts its dispatch task.
pub async fn connect(
    node: &NodeId,
    timeout: Duration,
) -> std::result::Result<Connection, ConnectError> {
    connect_as(node, timeout, crate::security::Hello::Client(None)).await
}

/// Opens one connection to `node` over TCP introducing itself with `hello`.
pub async fn connect_as(
    node: &NodeId,
    timeout: Duration,
    hello: crate::security::Hello,
) -> std::result::Result<Connection, ConnectError> {
    let net = crate::security::Secured::new(std::sync::Arc::new(crate::net::Tcp), hello, None);
    connect_over(&net, node, timeout).await
}

/// Opens one connection to `node` over `net` and starts its dispatch task.
pub async fn connect_over(
    net: &dyn Network,
    node: &NodeId,
    timeout: Duration,
) -> std::result::Result<Connection, ConnectError> {
    let node_name = node.clone();
    let unreachable = |reason: String, refused: bool| ConnectError {
        refused,
        error: Error::Unreachable {
            node: node.clone(),
            reason,
        },
    };
    let stream = match tokio::time::timeout(timeout, net.dial(node.as_str())).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
            // A node that refused the handshake said why (see
            // crate::security::wire): a missing or unknown token is the
            // caller's to fix, not a node that is down.
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                let text = e.to_string();
                if let Some(reason) = text.strip_prefix("unauthorized: ") {
                    return Err(ConnectError {
                        refused: false,
                        error: Error::Unauthorized {
                            reason: reason.to_string(),
                        },
                    });
                }
            }
            return Err(unreachable(io_reason(&e), refused));
        }
        Err(_) => {
            return Err(unreachable(
                format!("connect timed out after {} ms", timeout.as_millis()),
                false,
            ))
        }
    };
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = 10_000;
    config.pending_request_buffer = 1024;
    let tarpc::client::NewClient { client, dispatch } = NodeClient::new(config, transport(stream));
    let closed = Arc::new(AtomicBool::new(false));
    let silence = Arc::new(Silence::new());
    let flag = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = dispatch.await {
            tracing::debug!(node = %node_name, "connection broken: {e}");
        }
        flag.store(true, Ordering::Release);
    });
    Ok(Connection {
        client,
        closed,
        silence,
    })
}

/// How long a connection has answered nothing but timeouts (see
/// [`Connection::timed_out`]): milliseconds since it opened when the first of
/// them came, 0 while it answers.
struct Silence {
    opened: tokio::time::Instant,
    since_ms: std::sync::atomic::AtomicU64,
}

impl Silence {
    fn new() -> Silence {
        Silence {
            opened: tokio::time::Instant::now(),
            since_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        // At least 1: 0 means "answering".
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// A connection that has answered nothing but timeouts for this long is given
/// up and replaced: a connection whose packets vanish (a partition that outlasts
/// TCP's patience, a middlebox that lost its state, a peer host that went away
/// without a reset) would otherwise time out every call until the kernel gives
/// up on it, minutes later, while a new connection may get through at once.
/// Five seconds: well past one slow answer (the failure detector pings four
/// times a second with one-second deadlines), short against the kernel's
/// retransmission timeout.
pub const SILENT_CONNECTION: Duration = Duration::from_secs(5);

/// One connection to a node: the tarpc client and whether its dispatch has ended.
///
/// tarpc answers `Shutdown` both for a request it could not hand to a dispatch that
/// was already gone (never sent) and for one in flight when the peer went away (the
/// outcome is unknown). Callers tell the two apart by asking [`Connection::is_closed`]
/// *before* sending: a connection known closed is replaced without sending anything,
/// and a `Shutdown` on a connection that was open is an unknown outcome, never
/// retried as if unsent.
#[derive(Clone)]
pub struct Connection {
    client: NodeClient,
    closed: Arc<AtomicBool>,
    silence: Arc<Silence>,
}

impl Connection {
    /// True once the connection's dispatch has ended (the peer closed it or it broke).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records that a call on this connection was answered.
    pub fn answered(&self) {
        if self.silence.since_ms.load(Ordering::Relaxed) != 0 {
            self.silence.since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Records that a call on this connection timed out; true once it has
    /// answered nothing but timeouts for [`SILENT_CONNECTION`] (replace it).
    pub fn timed_out(&self) -> bool {
        let now = self.silence.now_ms();
        match self
            .silence
            .since_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => false,
            Err(since) => {
                now.saturating_sub(since)
                    >= u64::try_from(SILENT_CONNECTION.as_millis()).unwrap_or(u64::MAX)
            }
        }
    }

    /// True when both are the one connection.
    pub fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.closed, &other.closed)
    }

    /// The client for calls; cheap to clone, multiplexes over the one connection.
    pub fn client(&self) -> NodeClient {
        self.client.clone()
    }
}

/// A short, stable description of an I/O error ("connection refused").
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// A connect that failed; nothing was sent.
#[derive(Debug)]
pub struct ConnectError {
    /// True when the connection was refused: nothing listens at the address.
    pub refused: bool,
    /// What to tell the caller ([`Error::Unreachable`]).
    pub error: Error,
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Error {
        e.error
    }
}

/// A tarpc context whose deadline is `timeout` from now on tokio's clock
/// (`tarpc::context::now`, vendor/tarpc/DYNAMO.md), so that it passes in
/// simulated time as it does on a running node.
pub fn context(timeout: Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = tarpc::context::now() + timeout;
    ctx
}
