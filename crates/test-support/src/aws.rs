//! SDK configuration and child-process environment that can only reach the given endpoint.

use std::time::Duration;

use anyhow::Context;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// Static test access key id.
pub const TEST_ACCESS_KEY_ID: &str = "testing";
/// Static test secret access key.
pub const TEST_SECRET_ACCESS_KEY: &str = "testing";

/// Environment for a child process that talks to AWS in a test: region, static credentials,
/// no instance-metadata service, no shared config or credentials files, and `endpoint` as the
/// endpoint of every service (`AWS_ENDPOINT_URL`).
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// An `SdkConfig` built from explicit values only: it reads no environment variable and no
/// profile file, so it cannot fall back to the instance-metadata service. Endpoint `endpoint`,
/// region `us-east-1`, credentials `testing`/`testing`, HTTP client on rustls with ring,
/// standard retries (override with the service config builder, e.g.
/// `aws_sdk_ssm::config::Builder::from(&config).retry_config(RetryConfig::disabled())`).
///
/// Async only so that call sites read like `aws_config::load_defaults(..).await`; it needs no
/// runtime itself, but the clients made from it do.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let credentials = Credentials::new(
        TEST_ACCESS_KEY_ID,
        TEST_SECRET_ACCESS_KEY,
        None,
        None,
        "sidekey-test-support",
    );
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(http_client)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        )
        .build()
}

/// An SSM client on `endpoint` (see [`sdk_config`]).
pub async fn ssm_client(endpoint: &str) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&sdk_config(endpoint).await)
}

/// A KMS client on `endpoint` (see [`sdk_config`]).
pub async fn kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_config(endpoint).await)
}

/// Creates a symmetric encrypt/decrypt KMS key and returns its ARN.
pub async fn create_kms_key(endpoint: &str) -> anyhow::Result<String> {
    let out = kms_client(endpoint)
        .await
        .create_key()
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .description("sidekey test key")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("KMS CreateKey at {endpoint}: {}", DisplayErrorContext(&e)))?;
    out.key_metadata()
        .and_then(|m| m.arn())
        .map(str::to_owned)
        .context("KMS CreateKey answered without a key ARN")
}

/// Creates alias `alias` (prefixed with `alias/` if it lacks it) for `key_id` (id or ARN).
pub async fn create_kms_alias(endpoint: &str, alias: &str, key_id: &str) -> anyhow::Result<()> {
    let alias = if alias.starts_with("alias/") {
        alias.to_owned()
    } else {
        format!("alias/{alias}")
    };
    kms_client(endpoint)
        .await
        .create_alias()
        .alias_name(&alias)
        .target_key_id(key_id)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "KMS CreateAlias {alias} at {endpoint}: {}",
                DisplayErrorContext(&e)
            )
        })?;
    Ok(())
}
