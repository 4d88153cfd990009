//! A byte stream encrypted and authenticated with the transport keys of a
//! completed Noise handshake ([`snow`]).
//!
//! Noise messages are at most 65,535 bytes, and a frame of the RPC layer can
//! be far longer, so the stream cuts what it is given into messages: each is
//! a 2-byte big-endian length and that many bytes of ciphertext (the
//! plaintext and its 16-byte tag). A message that does not decrypt (a byte
//! changed on the way, a message replayed, dropped or reordered: the nonce is
//! implicit and counts up) fails the read with `InvalidData`, and the RPC
//! layer closes the connection. Nothing that did not come from the holder of
//! the session's keys ever reaches a decoder.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest Noise message.
pub const MAX_MESSAGE: usize = 65_535;
/// The authentication tag every message carries.
const TAG: usize = 16;
/// Plaintext bytes in one message.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG;
/// Ciphertext queued for the socket before a write waits for it to drain.
const WRITE_BACKLOG: usize = 4 * MAX_MESSAGE;

/// `inner`, with everything written encrypted and everything read decrypted
/// under `session`.
pub struct NoiseStream<S> {
    inner: S,
    session: snow::TransportState,
    /// Bytes read from `inner` not yet decrypted.
    raw: Vec<u8>,
    /// Decrypted bytes not yet read, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext not yet written to `inner`, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// `inner` ended.
    eof: bool,
}

impl<S> NoiseStream<S> {
    /// Wraps `inner`; `raw` holds bytes already read from it past the
    /// handshake (usually none).
    pub fn new(inner: S, session: snow::TransportState, raw: Vec<u8>) -> NoiseStream<S> {
        NoiseStream {
            inner,
            session,
            raw,
            plain: Vec::new(),
            plain_at: 0,
            out: Vec::new(),
            out_at: 0,
            eof: false,
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<S: AsyncRead + Unpin> NoiseStream<S> {
    /// Decrypts the first whole message of `raw` into `plain`; false when
    /// `raw` holds no whole message yet.
    fn open_one(&mut self) -> io::Result<bool> {
        if self.raw.len() < 2 {
            return Ok(false);
        }
        let len = u16::from_be_bytes([self.raw[0], self.raw[1]]) as usize;
        if len < TAG {
            return Err(invalid("an encrypted message shorter than its tag"));
        }
        if self.raw.len() < 2 + len {
            return Ok(false);
        }
        self.plain.clear();
        self.plain.resize(len - TAG, 0);
        self.plain_at = 0;
        let n = self
            .session
            .read_message(&self.raw[2..2 + len], &mut self.plain)
            .map_err(|_| invalid("a message that does not decrypt under the session's keys"))?;
        self.plain.truncate(n);
        self.raw.drain(..2 + len);
        Ok(true)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.open_one()? {
                continue;
            }
            if this.eof {
                return if this.raw.is_empty() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside an encrypted message",
                    )))
                };
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(rb.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> NoiseStream<S> {
    /// Writes queued ciphertext until none is left or `inner` would block.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() - this.out_at >= WRITE_BACKLOG {
            ready!(this.drain(cx))?;
        }
        let take = data.len().min(MAX_PLAINTEXT);
        let start = this.out.len();
        this.out.resize(start + 2 + take + TAG, 0);
        let n = this
            .session
            .write_message(&data[..take], &mut this.out[start + 2..])
            .map_err(|e| io::Error::other(format!("encrypting: {e}")))?;
        this.out[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
        this.out.truncate(start + 2 + n);
        // Start sending at once; what does not fit waits for the next write or
        // the flush.
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
