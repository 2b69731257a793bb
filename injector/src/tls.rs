//! The serving certificate: loaded from two PEM files, served through a
//! rustls [`ResolvesServerCert`] that reads an [`ArcSwapOption`], and
//! reloaded when the files change (cert-manager rotates them in place).
//!
//! [`CertStore::watch`] polls both files every interval and compares a
//! SHA-256 of their content with the last content it tried, so a rotation
//! is picked up within one interval whatever the timestamps say (Kubernetes
//! secret volumes swap a symlink). A new certificate is used by the next
//! TLS handshake; open connections keep theirs. A reload that fails (a
//! missing file, a key that does not match the certificate, a half-written
//! pair) keeps serving the previous certificate and is logged once; it is
//! tried again as soon as the content changes again.
//!
//! The private key's bytes are zeroized after parsing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use ring::digest::{Context, SHA256};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use zeroize::Zeroizing;

/// A certificate or key that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate chain ({detail})")]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{path}: not a PEM private key ({detail})")]
    BadKey { path: PathBuf, detail: String },
    #[error("the key in {key} does not belong to the certificate in {cert}: {detail}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What [`CertStore::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files hold the content tried last time: nothing done.
    Unchanged,
    /// A new certificate is served from the next handshake on.
    Loaded,
}

/// The certificate currently served, and where it comes from.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwapOption<CertifiedKey>,
    /// SHA-256 of the content tried last (loaded or not).
    tried: Mutex<Option<[u8; 32]>>,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// A store for the pair of files; nothing loaded yet (see
    /// [`Self::reload`]). Uses the ring provider.
    pub fn new(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Arc<CertStore> {
        Arc::new(CertStore {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            current: ArcSwapOption::empty(),
            tried: Mutex::new(None),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Whether a certificate is loaded (readiness).
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// The certificate chain served now (leaf first).
    pub fn current_chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.current.load().as_ref().map(|ck| ck.cert.clone())
    }

    /// Reads both files and, when their content changed since the last
    /// try, loads them. On an error the certificate served stays as it was.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let cert_pem = read(&self.cert_path)?;
        let key_pem = Zeroizing::new(read(&self.key_path)?);
        let hash = content_hash(&cert_pem, &key_pem);
        {
            let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
            if *tried == Some(hash) {
                return Ok(Reload::Unchanged);
            }
            *tried = Some(hash);
        }
        let key = self.parse(&cert_pem, &key_pem)?;
        self.current.store(Some(Arc::new(key)));
        Ok(Reload::Loaded)
    }

    fn parse(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCertificate {
                path: self.cert_path.clone(),
                detail: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert_path.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
            path: self.key_path.clone(),
            detail: e.to_string(),
        })?;
        CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| TlsError::Mismatch {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            detail: e.to_string(),
        })
    }

    /// A rustls server configuration that serves this store's current
    /// certificate, offering ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Polls the files every `interval` for ever; `on_reload(ok)` is called
    /// after each load attempt of changed content. Errors are logged once
    /// per distinct message.
    pub async fn watch(self: Arc<Self>, interval: Duration, on_reload: impl Fn(bool)) {
        let mut last_error: Option<String> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let store = self.clone();
            let result = match tokio::task::spawn_blocking(move || store.reload()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the certificate reload task failed");
                    continue;
                }
            };
            match result {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Loaded) => {
                    last_error = None;
                    on_reload(true);
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                }
                Err(e) => {
                    let message = e.to_string();
                    if !matches!(e, TlsError::Read { .. }) {
                        on_reload(false);
                    }
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::error!(error = %message, "cannot reload the serving certificate; still serving the previous one");
                        last_error = Some(message);
                    }
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn content_hash(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&(cert.len() as u64).to_be_bytes());
    ctx.update(cert);
    ctx.update(key);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current.load_full()
    }
}
