//! The HTTP client the AWS SDK uses inside any image: rustls on ring with
//! the Mozilla roots compiled in (app images often have no CA files), plus
//! an optional extra PEM bundle (`SIDEKEY_CA_FILE`), and host names
//! resolved by hickory's pure-Rust resolver from `/etc/resolv.conf`, so a
//! statically linked agent needs no C library NSS modules.

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

use crate::config::ConfigError;

/// Builds the SDK's HTTP client: bundled roots, the extra CA file if any,
/// and the hickory resolver. The CA file is read and checked here, so a bad
/// one is a configuration error (exit 64) naming `SIDEKEY_CA_FILE`.
pub fn client(ca_file: Option<&Path>) -> Result<SharedHttpClient, ConfigError> {
    let mut trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(bundled_roots_pem());
    if let Some(path) = ca_file {
        trust = trust.with_pem_certificate(read_ca_file(path)?);
    }
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| ConfigError::new("SIDEKEY_CA_FILE", format!("TLS setup failed: {e}")))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_with_resolver(Resolver::default()))
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
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let err = |rule: String| ConfigError::new("SIDEKEY_CA_FILE", rule);
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
pub struct Resolver {
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
    fn a_bad_ca_file_names_the_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, b"not a certificate").expect("write");
        let err = read_ca_file(&path).expect_err("refused");
        assert_eq!(err.variable, "SIDEKEY_CA_FILE");
        assert!(err.rule.contains("no PEM certificate"), "{err}");
        let missing = read_ca_file(&dir.path().join("nope.pem")).expect_err("refused");
        assert!(missing.rule.contains("cannot read"), "{missing}");
    }
}
