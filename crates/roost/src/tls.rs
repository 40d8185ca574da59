//! TLS for every listener (`--tls-cert`, `--tls-key`): one rustls configuration whose
//! certificate is swapped in place when the files change or on SIGHUP, so renewals (e.g.
//! certbot) need no restart. Handshakes run in each connection's task, under a timeout.

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The certificate and key files, and the key pair currently served.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner())))
    }
}

impl CertFiles {
    /// Loads both PEM files; fails with the file and the reason when they are unusable.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let current = RwLock::new(Arc::new(load_key_pair(cert, key)?));
        Ok(Arc::new(Self { cert: cert.to_owned(), key: key.to_owned(), current }))
    }

    /// A TLS acceptor serving the current certificate (ALPN: HTTP/1.1 for the web listener).
    pub fn acceptor(self: &Arc<Self>, alpn_http: bool) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        if alpn_http {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        TlsAcceptor::from(Arc::new(config))
    }

    fn reload(&self) {
        match load_key_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => warn!(error = format!("{e:#}"), "TLS certificate not reloaded; still serving the previous one"),
        }
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((time(&self.cert)?, time(&self.key)?))
    }

    /// Reloads on SIGHUP, and when either file's modification time changes (checked every
    /// `poll`), until `shutdown`.
    pub async fn watch(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                warn!(error = %e, "no SIGHUP handler; certificates reload on file change only");
                None
            }
        };
        let mut seen = self.modified();
        let mut ticker = tokio::time::interval(poll);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup => self.reload(),
                _ = ticker.tick() => {
                    let now = self.modified();
                    if now.is_some() && now != seen {
                        seen = now;
                        self.reload();
                    }
                }
            }
        }
    }
}

/// Completes the TLS handshake of a connection to `listener` by `deadline`. A failed or too slow
/// handshake is logged and gives `None`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    listener: &'static str,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            info!(%peer, listener, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            info!(%peer, listener, "TLS handshake timed out");
            None
        }
    }
}

fn load_key_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{}: no certificate in the file", cert.display());
    let key_der = match PrivateKeyDer::from_pem_slice(&read(key)?) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => anyhow::bail!("{}: no private key in the file", key.display()),
        Err(e) => return Err(e).with_context(|| format!("{}: not a PEM private key", key.display())),
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let pair = CertifiedKey::from_der(chain, key_der, &provider)
        .with_context(|| format!("{} and {} do not form a usable key pair", cert.display(), key.display()))?;
    Ok(pair)
}
