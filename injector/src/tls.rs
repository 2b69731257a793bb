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
//!
//! With a client CA ([`CertStore::with_client_ca`], `--client-ca`), every
//! caller must present a certificate that chains to that PEM bundle (rustls'
//! `WebPkiClientVerifier`), or the handshake fails: nothing is read from
//! the connection and nothing is audited. The bundle is polled with the
//! pair and reloaded the same way: a new bundle applies from the next
//! handshake; one that does not load keeps the previous one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use ring::digest::{Context, SHA256};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
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
    #[error("--client-ca {path}: {detail}")]
    ClientCa { path: PathBuf, detail: String },
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

/// The certificate currently served, the client CA required (if any), and
/// where they come from.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    client_ca: Option<PathBuf>,
    current: Arc<ArcSwapOption<CertifiedKey>>,
    /// SHA-256 of the content tried last (loaded or not).
    tried: Mutex<Option<[u8; 32]>>,
    /// SHA-256 of the client CA bundle tried last.
    ca_tried: Mutex<Option<[u8; 32]>>,
    /// The configuration handshakes use; `None` while a required client CA
    /// has not loaded (every handshake is then refused).
    config: ArcSwapOption<ServerConfig>,
    provider: Arc<CryptoProvider>,
    /// The pair is given by [`Self::install_pem`] (self-managed TLS) and
    /// never read from files.
    memory: bool,
}

impl CertStore {
    /// A store for the pair of files; nothing loaded yet (see
    /// [`Self::reload`]). Uses the ring provider. No client certificate is
    /// asked for.
    pub fn new(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Arc<CertStore> {
        CertStore::with_client_ca(cert_path, key_path, None)
    }

    /// A store for the pair of files and, when `client_ca` is given, a PEM
    /// bundle every client certificate must chain to. Nothing is loaded
    /// yet, and with a client CA no handshake succeeds until
    /// [`Self::reload`] has loaded it.
    pub fn with_client_ca(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Arc<CertStore> {
        CertStore::build(cert_path.into(), key_path.into(), client_ca, false)
    }

    /// A store whose certificate and key only ever come from
    /// [`Self::install_pem`], held in memory (no file is read or written
    /// for them); the client CA bundle, if any, is read and watched as in
    /// [`Self::with_client_ca`].
    pub fn in_memory(client_ca: Option<PathBuf>) -> Arc<CertStore> {
        let none = PathBuf::from("(memory)");
        CertStore::build(none.clone(), none, client_ca, true)
    }

    fn build(
        cert_path: PathBuf,
        key_path: PathBuf,
        client_ca: Option<PathBuf>,
        memory: bool,
    ) -> Arc<CertStore> {
        let store = Arc::new(CertStore {
            cert_path,
            key_path,
            memory,
            client_ca,
            current: Arc::new(ArcSwapOption::empty()),
            tried: Mutex::new(None),
            ca_tried: Mutex::new(None),
            config: ArcSwapOption::empty(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        });
        if store.client_ca.is_none() {
            // Cannot fail with the ring provider's defaults; if it ever did,
            // `server_config` reports it.
            if let Ok(config) = store.build_config(None) {
                store.config.store(Some(config));
            }
        }
        store
    }

    /// The client CA bundle required, if any.
    pub fn client_ca(&self) -> Option<&Path> {
        self.client_ca.as_deref()
    }

    /// Whether a certificate is loaded (readiness).
    /// With a client CA, that bundle must be loaded too.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some() && self.config.load().is_some()
    }

    /// The certificate chain served now (leaf first).
    pub fn current_chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.current.load().as_ref().map(|ck| ck.cert.clone())
    }

    /// Reads the pair (and the client CA bundle, if any) and loads what
    /// changed since the last try. On an error what is served stays as it
    /// was; the first error is returned (the other file is still tried).
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let pair = self.reload_pair();
        let ca = self.reload_client_ca();
        match (pair, ca) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(Reload::Loaded), _) | (_, Ok(Reload::Loaded)) => Ok(Reload::Loaded),
            _ => Ok(Reload::Unchanged),
        }
    }

    fn reload_client_ca(&self) -> Result<Reload, TlsError> {
        let Some(path) = &self.client_ca else {
            return Ok(Reload::Unchanged);
        };
        let pem = read(path)?;
        let hash = content_hash(&pem, b"");
        {
            let mut tried = self.ca_tried.lock().unwrap_or_else(|p| p.into_inner());
            if *tried == Some(hash) {
                return Ok(Reload::Unchanged);
            }
            *tried = Some(hash);
        }
        let verifier = client_verifier(path, &pem, &self.provider)?;
        let config = self.build_config(Some(verifier))?;
        self.config.store(Some(config));
        Ok(Reload::Loaded)
    }

    fn reload_pair(&self) -> Result<Reload, TlsError> {
        if self.memory {
            return Ok(Reload::Unchanged);
        }
        let cert_pem = read(&self.cert_path)?;
        let key_pem = Zeroizing::new(read(&self.key_path)?);
        self.load_pair(&cert_pem, &key_pem)
    }

    /// Serves `cert_pem` (a PEM chain, leaf first) with `key_pem` from the
    /// next handshake on, unless they are what was tried last. The key is
    /// parsed from the caller's buffer; nothing is written anywhere. On an
    /// error what is served stays as it was.
    pub fn install_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Reload, TlsError> {
        self.load_pair(cert_pem, key_pem)
    }

    fn load_pair(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Reload, TlsError> {
        let hash = content_hash(cert_pem, key_pem);
        {
            let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
            if *tried == Some(hash) {
                return Ok(Reload::Unchanged);
            }
            *tried = Some(hash);
        }
        let key = self.parse(cert_pem, key_pem)?;
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

    /// The rustls server configuration for the next handshake: it serves
    /// this store's current certificate, offers ALPN `h2` and `http/1.1`,
    /// TLS 1.2 and 1.3, and requires a client certificate when a client CA
    /// is configured. `None` while a required client CA has not loaded yet.
    pub fn current_config(&self) -> Option<Arc<ServerConfig>> {
        self.config.load_full()
    }

    /// [`Self::current_config`], or why there is none.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        if let Some(config) = self.current_config() {
            return Ok(config);
        }
        match &self.client_ca {
            Some(path) => Err(TlsError::ClientCa {
                path: path.clone(),
                detail: "not loaded yet".to_owned(),
            }),
            None => self.build_config(None),
        }
    }

    fn build_config(
        &self,
        verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let resolver = Resolver(self.current.clone());
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Polls the files every `interval` for ever; `on_reload(ok)` is called
    /// after each load attempt of changed content. Errors are logged once
    /// per distinct message.
    pub async fn watch(self: Arc<Self>, interval: Duration, on_reload: impl Fn(bool)) {
        let mut last_error: [Option<String>; 2] = [None, None];
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let store = self.clone();
            let results = match tokio::task::spawn_blocking(move || {
                [store.reload_pair(), store.reload_client_ca()]
            })
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the certificate reload task failed");
                    continue;
                }
            };
            for (i, result) in results.into_iter().enumerate() {
                let what = if i == 0 {
                    "serving certificate"
                } else {
                    "client CA"
                };
                match result {
                    Ok(Reload::Unchanged) => {}
                    Ok(Reload::Loaded) => {
                        last_error[i] = None;
                        on_reload(true);
                        if i == 0 {
                            tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                        } else {
                            let path = self.client_ca.as_deref().unwrap_or(Path::new("-"));
                            tracing::info!(client_ca = %path.display(), "client CA reloaded");
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        if !matches!(e, TlsError::Read { .. }) {
                            on_reload(false);
                        }
                        if last_error[i].as_deref() != Some(message.as_str()) {
                            tracing::error!(error = %message, "cannot reload the {what}; still using the previous one");
                            last_error[i] = Some(message);
                        }
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
struct Resolver(Arc<ArcSwapOption<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }
}

/// Reads and checks a client CA bundle: at least one PEM certificate, each
/// usable as a trust anchor. The error names `--client-ca` and the file.
pub fn load_client_ca(path: &Path) -> Result<(), TlsError> {
    let pem = read(path).map_err(|e| TlsError::ClientCa {
        path: path.to_owned(),
        detail: match e {
            TlsError::Read { source, .. } => format!("cannot read the file: {source}"),
            other => other.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    client_verifier(path, &pem, &provider).map(|_| ())
}

fn client_verifier(
    path: &Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |detail: String| TlsError::ClientCa {
        path: path.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate bundle ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate in the file (a bundle of CA certificates is required)".to_owned(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| bad(format!("certificate {} is not a usable CA: {e}", i + 1)))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(format!("cannot build the client verifier: {e}")))
}
