//! TLS for clients (rustls): on the RPC port, where a client's first byte
//! tells a TLS handshake (0x16) from the node handshake's `D`, and on the HTTP
//! port. Certificates and keys come from PEM files (`--tls-cert`,
//! `--tls-key`); a client trusts the CA file it is given (`--ca`) or the
//! system's roots. Members keep their Noise channel (see [`super`]): TLS is
//! for the people and programs outside the ring.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};
use crate::net::BoxStream;

/// The first byte of a TLS handshake record.
pub const TLS_RECORD: u8 = 0x16;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's TLS: its certificate chain and key.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Reads the certificate chain and key. The key file follows the rule of
    /// every secret file: readable by its owner only.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<std::result::Result<_, _>>())
            .map_err(|e| Error::Config {
                reason: format!("--tls-cert {}: {e}", cert.display()),
            })?;
        if certs.is_empty() {
            return Err(Error::Config {
                reason: format!("--tls-cert {}: holds no certificate", cert.display()),
            });
        }
        // The permission check, before the key is read.
        super::secret::read_secret_lines(key, "--tls-key")?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Config {
            reason: format!("--tls-key {}: {e}", key.display()),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
            .map_err(|e| Error::Config {
                reason: format!("--tls-cert/--tls-key: {e}"),
            })?;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// Runs the server side of a TLS handshake on `s`, whose first byte
    /// (already read) was `first`.
    pub async fn accept(&self, first: u8, s: BoxStream) -> io::Result<BoxStream> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let tls = acceptor.accept(Prefixed::new(vec![first], s)).await?;
        Ok(Box::new(tls))
    }

    /// The rustls configuration (the HTTP port's acceptor).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// A client's TLS: the roots it trusts.
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
}

impl ClientTls {
    /// Trusts the certificates of `ca` (a PEM file), or the system's roots.
    pub fn new(ca: Option<&Path>) -> Result<ClientTls> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(ca) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                    .and_then(|i| i.collect::<std::result::Result<_, _>>())
                    .map_err(|e| Error::Config {
                        reason: format!("--ca {}: {e}", ca.display()),
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(Error::Config {
                        reason: format!("--ca {}: holds no usable certificate", ca.display()),
                    });
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config {
                reason: format!("TLS: {e}"),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the client side of a TLS handshake with `addr` (`HOST:PORT`; the
    /// certificate must name HOST).
    pub async fn connect(&self, addr: &str, s: BoxStream) -> io::Result<BoxStream> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TLS server name {host:?}: {e}"),
            )
        })?;
        let tls = self
            .connector
            .connect(name, s)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        Ok(Box::new(tls))
    }
}

/// A stream that first gives back bytes already read from it.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The HTTP port's listener under TLS: accepts TCP, runs each TLS handshake
/// in a task of its own (a slow or silent client holds up nobody; one that
/// has not finished within [`super::HANDSHAKE_TIMEOUT`] is closed), and hands
/// axum the connections whose handshake succeeded. At most
/// [`super::gate::MAX_HANDSHAKING`] handshakes run at once.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    pub fn new(listener: tokio::net::TcpListener, tls: Arc<ServerTls>) -> TlsListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let handshakes = Arc::new(tokio::sync::Semaphore::new(super::gate::MAX_HANDSHAKING));
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        if tx.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let shake = acceptor.accept(tcp);
                    match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, shake).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
