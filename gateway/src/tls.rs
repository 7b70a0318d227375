//! TLS on the REST and gRPC listeners (rustls, PEM files), reloaded when the files change, and mutual TLS.
//!
//! `--tls-cert` and `--tls-key` name PEM files (the certificate chain, leaf first, and its private key), as
//! cert-manager and most CAs write them. Their modification times are checked every [`TlsConfig::reload_every`]; a
//! changed pair is loaded off the async threads and served from the next handshake on, with no restart and no
//! dropped connection. A pair that does not load (a half-written file, a key that does not match) is logged and the
//! previous one keeps serving. With `--tls-client-ca`, clients must present a certificate signed by that CA
//! (mutual TLS); without one their handshake fails.
//!
//! Handshakes run in each connection's own task under the header-read timeout, so a client that opens a connection
//! and sends nothing holds only its connection slot, for that long.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Where the certificate and key are, and how TLS is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to; `None`: no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for a change.
    pub reload_every: Duration,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("TLS: cannot read {what} from {path}: {message}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, say).
    #[error("TLS: {0}")]
    Config(String),
}

/// The default check for changed certificate files: cert-manager renews days before expiry, so seconds are plenty.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The TLS side of both listeners: one acceptor per protocol (they differ only in ALPN), sharing the reloading
/// certificate.
#[derive(Clone)]
pub struct Tls {
    rest: TlsAcceptor,
    grpc: TlsAcceptor,
    reloads: tokio::sync::watch::Receiver<u64>,
}

/// The certificate served now, swapped when the files change.
#[derive(Debug)]
struct Reloading {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_key_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    fn file_error<'a>(what: &'static str, path: &'a Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + 'a {
        move |e| TlsError::File { what, path: path.to_owned(), message: e.to_string() }
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(file_error("certificates", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error("certificates", cert))?;
    if chain.is_empty() {
        return Err(TlsError::File {
            what: "certificates",
            path: cert.to_owned(),
            message: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(file_error("a private key", key))?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| TlsError::Config(e.to_string()))
}

/// The files' modification times and sizes, to notice a change.
fn stamp(config: &TlsConfig) -> Option<[(SystemTime, u64); 2]> {
    let one = |path: &Path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    Some([one(&config.cert)?, one(&config.key)?])
}

impl Tls {
    /// Loads the certificate (and client CA), and starts watching the files until `stop`. Blocking file reads:
    /// call from a blocking context or at start-up.
    pub fn start(config: &TlsConfig, stop: CancellationToken) -> Result<Self, TlsError> {
        // Stamped before loading: a change while this loads is seen by the first check.
        let seen = stamp(config);
        let reloading =
            Arc::new(Reloading { current: ArcSwap::from_pointee(load_key_pair(&config.cert, &config.key)?) });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|e| TlsError::File {
                        what: "client CA certificates",
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                for cert in certs {
                    roots.add(cert).map_err(|e| TlsError::Config(format!("client CA {}: {e}", path.display())))?;
                }
                if roots.is_empty() {
                    return Err(TlsError::File {
                        what: "client CA certificates",
                        path: path.clone(),
                        message: "no CERTIFICATE block".into(),
                    });
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let base = builder.with_cert_resolver(Arc::clone(&reloading) as Arc<dyn ResolvesServerCert>);
        let with_alpn = |protocols: &[&[u8]]| {
            let mut config = base.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        };
        let (reloaded, reloads) = tokio::sync::watch::channel(0);
        let tls = Self { rest: with_alpn(&[b"h2", b"http/1.1"]), grpc: with_alpn(&[b"h2"]), reloads };
        tokio::spawn(watch(config.clone(), seen, reloading, reloaded, stop));
        Ok(tls)
    }

    /// The acceptor for the REST listener (HTTP/2 and HTTP/1.1 by ALPN).
    pub fn rest(&self) -> &TlsAcceptor {
        &self.rest
    }

    /// Counts the certificate reloads so far, and each new one (a caller can wait for a rotation to be served).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.clone()
    }

    /// The acceptor for the gRPC listener (HTTP/2 only).
    pub fn grpc(&self) -> &TlsAcceptor {
        &self.grpc
    }
}

/// Checks the files every `reload_every` (off the async threads: `stat` and reads are blocking calls) and swaps in a
/// changed pair once it loads; `seen` is the files' stamp when the served pair was loaded.
async fn watch(
    config: TlsConfig,
    mut seen: Option<[(SystemTime, u64); 2]>,
    reloading: Arc<Reloading>,
    reloaded: tokio::sync::watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(config.reload_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let files = config.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let now = stamp(&files);
            if now == seen || now.is_none() {
                return Ok(None);
            }
            load_key_pair(&files.cert, &files.key).map(|pair| Some((pair, now)))
        })
        .await;
        match checked {
            Ok(Ok(None)) => {}
            Ok(Ok(Some((pair, now)))) => {
                reloading.current.store(Arc::new(pair));
                seen = now;
                reloaded.send_modify(|n| *n += 1);
                tracing::info!(cert = %config.cert.display(), "TLS certificate reloaded");
            }
            // Possibly half-written (cert-manager writes the two files one after the other): tried again next tick.
            Ok(Err(error)) => {
                tracing::warn!(%error, "TLS certificate changed but does not load; still serving the old one")
            }
            Err(error) => tracing::warn!(%error, "TLS reload task failed"),
        }
    }
}

/// A connection as accepted: plain TCP, or TLS over TCP.
pub enum MaybeTls {
    /// No TLS.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// The underlying TCP stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// `stream` as is, or after a TLS handshake with `acceptor` bounded by `timeout`.
    pub async fn accept(stream: TcpStream, acceptor: Option<&TlsAcceptor>, timeout: Duration) -> std::io::Result<Self> {
        let Some(acceptor) = acceptor else { return Ok(Self::Plain(stream)) };
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(Self::Tls(Box::new(tls))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}
