//! Choosing and opening a store: `ssm` (SSM + KMS) or `file:DIR` (the
//! embedded local store and its master key).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::error::StoreError;

/// Which backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// AWS SSM Parameter Store with KMS envelopes.
    Ssm,
    /// The embedded local store in a directory.
    File(PathBuf),
}

impl FromStr for Backend {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Backend, StoreError> {
        match s {
            "ssm" => Ok(Backend::Ssm),
            _ => match s.strip_prefix("file:") {
                Some("") => Err(StoreError::Config(
                    "store \"file:\" names no directory: use file:PATH, e.g. file:.sidekey"
                        .to_owned(),
                )),
                Some(path) => Ok(Backend::File(PathBuf::from(path))),
                None => Err(StoreError::Config(format!(
                    "unknown store {s:?}: use \"ssm\" or \"file:PATH\""
                ))),
            },
        }
    }
}

/// AWS client settings; unset values come from the SDK's default chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Parses a duration such as `30s`, `1m`, `500ms`.
pub fn parse_timeout(s: &str) -> Result<Duration, StoreError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        StoreError::Config(format!(
            "invalid timeout {s:?}: {e} (use a duration such as 30s, 2m or 500ms)"
        ))
    })?;
    if d.is_zero() {
        return Err(StoreError::Config(
            "timeout must be greater than zero".to_owned(),
        ));
    }
    Ok(d)
}

/// The AWS SDK configuration sidekey uses: rustls on ring, the SDK's own
/// retries off (sidekey retries with its own deadline), short connect and
/// attempt timeouts.
pub async fn aws_config(settings: &AwsSettings) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config_with(settings, http).await
}

/// [`aws_config()`] over a given HTTP client: the agent brings one with
/// bundled TLS roots and a DNS resolver that needs no C library. Retries,
/// timeouts, region and endpoint are set exactly as in [`aws_config()`]; the
/// client is used by every service and credentials provider.
pub async fn aws_config_with(settings: &AwsSettings, http: SharedHttpClient) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
