//! The HTTP client the store's AWS clients use ([`StoreHttp`]): rustls on
//! ring always; for a caller that runs inside any image (the agent), the
//! Mozilla roots compiled in (app images often have no CA files), an
//! optional extra PEM bundle, and host names resolved by hickory's
//! pure-Rust resolver from `/etc/resolv.conf`, so a statically linked
//! binary needs no C library NSS modules; and, optionally, a count of the
//! calls made ([`AwsCallCounter`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use base64::Engine;
use hickory_resolver::TokioResolver;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::calls::AwsCallCounter;
use crate::error::StoreError;

/// How the store's AWS clients reach AWS. The default is the SDK's HTTPS
/// client (rustls on ring, the platform's roots and resolver), what the CLI
/// uses; [`StoreHttp::self_contained`] is the agent's.
#[derive(Debug, Clone, Default)]
pub struct StoreHttp {
    /// `None`: the SDK's default trust store (the platform's roots).
    trust: Option<TrustStore>,
    /// Resolve host names with hickory instead of the C library.
    hickory: bool,
    counter: Option<AwsCallCounter>,
}

/// A CA file that cannot be used; the message names the file and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}")]
pub struct CaFileError {
    /// What is wrong, naming the file.
    pub rule: String,
}

impl StoreHttp {
    /// A client that needs nothing from the image it runs in: the bundled
    /// Mozilla roots only (webpki-root-certs), host names through hickory.
    pub fn self_contained() -> StoreHttp {
        StoreHttp {
            trust: Some(
                TrustStore::empty()
                    .with_native_roots(false)
                    .with_pem_certificate(bundled_roots_pem()),
            ),
            hickory: true,
            counter: None,
        }
    }

    /// Trusts the certificates of a PEM bundle as well. The file is read
    /// and checked here (every certificate must be able to be a trust
    /// anchor), so a bad one is an error before any call.
    pub fn with_ca_file(mut self, path: &Path) -> Result<StoreHttp, CaFileError> {
        let pem = read_ca_file(path)?;
        self.trust = Some(self.trust.unwrap_or_default().with_pem_certificate(pem));
        Ok(self)
    }

    /// Counts every call made through this client, and every throttled or
    /// failed answer, into `counter`.
    pub fn with_counter(mut self, counter: &AwsCallCounter) -> StoreHttp {
        self.counter = Some(counter.clone());
        self
    }

    /// The SDK's HTTP client this describes.
    pub(crate) fn build(&self) -> Result<SharedHttpClient, StoreError> {
        let builder =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring));
        let builder = match &self.trust {
            None => builder,
            Some(trust) => builder.tls_context(
                TlsContext::builder()
                    .with_trust_store(trust.clone())
                    .build()
                    .map_err(|e| StoreError::Config(format!("TLS setup failed: {e}")))?,
            ),
        };
        let client = if self.hickory {
            builder.build_with_resolver(Resolver::default())
        } else {
            builder.build_https()
        };
        Ok(match &self.counter {
            Some(counter) => counter.wrap(client),
            None => client,
        })
    }
}

/// The Mozilla root certificates (webpki-root-certs) as one PEM bundle, the
/// form the SDK's trust store takes.
pub fn bundled_roots_pem() -> Vec<u8> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut pem = Vec::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2200);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let b64 = engine.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

/// Reads a PEM bundle and checks that every certificate in it can be a
/// trust anchor (the SDK would panic on one that cannot).
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, CaFileError> {
    let err = |rule: String| CaFileError { rule };
    let bytes =
        std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{} is not a PEM bundle: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            err(format!(
                "certificate {} in {} cannot be a trust anchor: {e}",
                i + 1,
                path.display()
            ))
        })?;
    }
    Ok(bytes)
}

/// Host names through hickory, configured from `/etc/resolv.conf` on first
/// use (an endpoint given as an IP address never gets here).
#[derive(Clone, Default)]
struct Resolver {
    inner: Arc<tokio::sync::OnceCell<TokioResolver>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("initialised", &self.inner.initialized())
            .finish()
    }
}

impl ResolveDns for Resolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            let resolver = self
                .inner
                .get_or_try_init(|| async {
                    TokioResolver::builder_tokio().and_then(|b| b.build())
                })
                .await
                .map_err(|e| {
                    ResolveDnsError::new(format!("cannot configure DNS from /etc/resolv.conf: {e}"))
                })?;
            let found = resolver
                .lookup_ip(name)
                .await
                .map_err(|e| ResolveDnsError::new(format!("cannot resolve {name}: {e}")))?;
            let addrs: Vec<_> = found.iter().collect();
            tracing::debug!(host = name, addresses = addrs.len(), "resolved");
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_roots_parse_back() {
        let pem = bundled_roots_pem();
        let parsed = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .expect("valid PEM");
        assert_eq!(parsed.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(parsed.len() > 100);
        assert_eq!(
            parsed[0].as_ref(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref()
        );
    }

    #[test]
    fn a_bad_ca_file_is_refused_naming_the_file_and_the_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, b"not a certificate").expect("write");
        let err = StoreHttp::self_contained()
            .with_ca_file(&path)
            .expect_err("refused");
        assert!(err.rule.contains("no PEM certificate"), "{err}");
        assert!(err.rule.contains(&path.display().to_string()), "{err}");
        let missing = read_ca_file(&dir.path().join("nope.pem")).expect_err("refused");
        assert!(missing.rule.contains("cannot read"), "{missing}");
    }
}
