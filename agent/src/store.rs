//! Opening the configured store: SSM + KMS through the agent's AWS HTTP
//! client (bundled TLS roots, the optional `SIDEKEY_CA_FILE`, hickory DNS,
//! and the call counter the audit record reads), or the local store, whose
//! master key must already exist. The AWS clients themselves are made by
//! `sidekey-store` ([`Store::open_with`]).

use sidekey_store::{Backend, MasterKey, Store, StoreConfig, StoreError, StoreHttp};

use crate::audit;
use crate::config::{Config, ConfigError};
use crate::{Failure, EXIT_UNAVAILABLE};

/// The HTTP client the agent's AWS clients use: nothing needed from the
/// image (bundled roots, DNS without the C library), the extra CA file if
/// any, and every call counted for the audit record. A CA file that cannot
/// be used is a configuration error (exit 64) naming `SIDEKEY_CA_FILE`.
pub fn aws_http(config: &Config) -> Result<StoreHttp, ConfigError> {
    let http = StoreHttp::self_contained().with_counter(audit::aws_call_counter());
    match config.ca_file() {
        Some(path) => http
            .with_ca_file(path)
            .map_err(|e| ConfigError::new("SIDEKEY_CA_FILE", e.rule)),
        None => Ok(http),
    }
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> Result<Store, Failure> {
    let http = match config.backend() {
        Backend::Ssm => aws_http(config)?,
        Backend::File(_) => StoreHttp::default(),
    };
    let store_config = StoreConfig {
        backend: config.backend().clone(),
        prefix: config.prefix().clone(),
        kms_key: config.kms_key().to_owned(),
        aws: config.aws().clone(),
        timeout: config.timeout(),
        actor: "sidekey-agent".to_owned(),
        allow_legacy: config.allow_legacy(),
    };
    Store::open_with(&store_config, &http, MasterKey::MustExist)
        .await
        .map_err(|e| match e {
            StoreError::NoRegion => ConfigError::new(
                "AWS_REGION",
                "no AWS region: set AWS_REGION (EKS sets it with IRSA or Pod Identity)",
            )
            .into(),
            e => Failure::new(
                EXIT_UNAVAILABLE,
                format!("environment {}: {e}", config.environment()),
            ),
        })
}
