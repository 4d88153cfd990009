//! The network below the wire contract: how a node dials another and accepts
//! connections. Production uses tokio's TCP ([`Tcp`]); a test can hand a node
//! a simulated network instead (turmoil's, in `tests/sim/`), and the node's
//! code above this seam, the RPC framing, `Peers`, the server loop and every
//! call site, runs unchanged over it.
//!
//! The seam is a byte stream: anything that reads and writes bytes
//! asynchronously ([`Stream`]) carries the length-delimited bincode frames of
//! [`crate::rpc`]. Connecting and accepting are the only two operations; name
//! resolution is the network's (`HOST:PORT` as written in a node's identity).
//!
//! Left out: UDP, and the HTTP port, which stays on tokio's TCP (a simulated
//! node serves no HTTP).

use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A connection as the RPC layer sees it, whatever network made it.
pub type BoxStream = Box<dyn Stream>;

/// How a node dials other nodes.
pub trait Network: Send + Sync + 'static {
    /// Connects to `addr` (`HOST:PORT`).
    fn dial<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>>;
}

/// Where a node accepts connections.
pub trait Listener: Send + 'static {
    /// The next connection and the address it came from.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// tokio's TCP: what a real node uses. Every stream has Nagle off (frames are
/// small and latency-bound).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Network for Tcp {
    fn dial<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

impl Listener for tokio::net::TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}
