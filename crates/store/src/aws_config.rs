//! The store's AWS config builder: the one place the SDK configuration of
//! SSM and KMS is made (HTTP client, retries, timeouts, region, endpoint),
//! for the CLI and the agent alike.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::error::StoreError;
use crate::http::StoreHttp;

/// AWS client settings; unset values come from the SDK's default chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// The AWS SDK configuration sidekey uses, over the HTTP client `http`
/// describes (the SDK's default HTTPS client for the CLI; the agent's brings
/// bundled TLS roots, a DNS resolver that needs no C library, and a call
/// counter): the SDK's own retries off (sidekey retries with its own
/// deadline), short connect and attempt timeouts. The client is used by
/// every service and credentials provider.
pub(crate) async fn sdk_config(
    settings: &AwsSettings,
    http: &StoreHttp,
) -> Result<SdkConfig, StoreError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http.build()?)
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
    Ok(loader.load().await)
}
