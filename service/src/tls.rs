//! TLS for the services' listeners: the `--tls-*` options, certificates re-read when their
//! files change (so a renewed certificate is served without a restart), and optional
//! client-certificate verification (mTLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Makes ring the process's rustls crypto provider. Call it first thing in `main`: some
/// dependencies bring aws-lc-rs as well, and with two providers compiled in, rustls (ours,
/// tonic's, async-nats's, sqlx's) cannot pick one by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How often the certificate files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// A listener's TLS: serve TLS when a certificate and key are given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Certificate chain (PEM) to serve TLS with; re-read when the file changes.
    #[arg(long = "tls-cert", env = "ROUTEIQ_TLS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, RSA or SEC1) of --tls-cert.
    #[arg(long = "tls-key", env = "ROUTEIQ_TLS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// CA (PEM) whose certificates clients must present (mutual TLS).
    #[arg(
        long = "tls-client-ca",
        env = "ROUTEIQ_TLS_CLIENT_CA",
        requires = "cert"
    )]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Config(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A listener's loaded TLS: the reloading certificate, and the client verifier when
/// clients must present certificates.
pub struct ServerTls {
    pub resolver: Arc<ReloadingCert>,
    pub client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl ServerTlsArgs {
    /// Loads the certificate (`None` without one) and the client CA, and starts the thread
    /// that re-reads the certificate when its files change.
    pub fn load(&self) -> Result<Option<ServerTls>, TlsError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let resolver = Arc::new(ReloadingCert::load(cert.clone(), key.clone())?);
        resolver.watch();
        let client_verifier = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certs(ca)? {
                    roots.add(c)?;
                }
                Some(
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()?,
                )
            }
            None => None,
        };
        Ok(Some(ServerTls {
            resolver,
            client_verifier,
        }))
    }
}

impl ServerTls {
    /// A rustls server configuration (TLS 1.2 and 1.3) serving the reloading certificate;
    /// with `client_auth`, clients must present a certificate of `--tls-client-ca` when
    /// one is given (a listener probes reach passes false).
    pub fn server_config(&self, client_auth: bool) -> Result<ServerConfig, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match (&self.client_verifier, client_auth) {
            (Some(v), true) => builder.with_client_cert_verifier(Arc::clone(v)),
            _ => builder.with_no_client_auth(),
        };
        Ok(builder.with_cert_resolver(Arc::clone(&self.resolver) as Arc<dyn ResolvesServerCert>))
    }
}

/// Longest a client may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// TLS connections accepted on `listener`, handshakes done apart so a slow client holds
/// up nobody; for servers that take a stream of connections (tonic's
/// `serve_with_incoming`). Failed handshakes are logged and dropped.
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<
    std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, sender) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Every certificate in a PEM file (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let list = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if list.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(list)
}

/// The process's provider ([`install_crypto_provider`]), else ring.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let ck = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(ck)
}

/// The served certificate, replaced when its files change. A replacement that does not
/// load (a half-written file, a key that does not match) is logged and the last good one
/// stays.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingCert {
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let loaded = certified_key(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: ArcSwap::from_pointee(loaded),
        })
    }

    fn stamp(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (modified(&self.cert), modified(&self.key))
    }

    /// Re-reads the files whenever their modification times change, on a thread of its
    /// own (so it serves any runtime, pingora's included).
    fn watch(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("routeiq-tls-reload".into())
            .spawn(move || {
                let mut seen = this.stamp();
                loop {
                    std::thread::sleep(RELOAD_CHECK);
                    let now = this.stamp();
                    if now != seen {
                        seen = now;
                        this.reload();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the certificate reload thread");
        }
    }

    fn reload(&self) {
        match certified_key(&self.cert, &self.key) {
            Ok(ck) => {
                self.current.store(Arc::new(ck));
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::warn!(
                error = %e,
                "TLS certificate files changed but do not load; still serving the previous one"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn served(r: &ReloadingCert) -> Vec<u8> {
        r.current.load().cert[0].to_vec()
    }

    #[test]
    fn reloads_a_good_pair_and_keeps_the_last_good_one_otherwise() {
        install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("routeiq-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c1, k1) = pair(&dir, "first");
        let (c2, k2) = pair(&dir, "second");
        let (cert, key) = (dir.join("live.crt"), dir.join("live.key"));
        std::fs::copy(&c1, &cert).unwrap();
        std::fs::copy(&k1, &key).unwrap();
        let r = ReloadingCert::load(cert.clone(), key.clone()).unwrap();
        let first = served(&r);
        assert_eq!(first, certs(&c1).unwrap()[0].to_vec());

        // A half-done renewal (new certificate, old key) does not load: the first stays.
        std::fs::copy(&c2, &cert).unwrap();
        r.reload();
        assert_eq!(served(&r), first);
        std::fs::write(&key, "not a key").unwrap();
        r.reload();
        assert_eq!(served(&r), first);

        // Both replaced: the second is served.
        std::fs::copy(&k2, &key).unwrap();
        r.reload();
        assert_eq!(served(&r), certs(&c2).unwrap()[0].to_vec());

        assert!(ReloadingCert::load(dir.join("missing.crt"), key).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
