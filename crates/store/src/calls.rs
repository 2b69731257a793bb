//! Counting the AWS calls a store makes ([`AwsCallCounter`]), at its HTTP
//! client: every request by service, and every answer that was throttled
//! or failed transiently. The agent's audit record carries these figures,
//! so operators see throttling in the audit trail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_types::config_bag::ConfigBag;

/// Error codes AWS answers when a request rate is exceeded.
pub(crate) const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

/// The AWS calls (HTTP requests) made since they were last taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AwsCalls {
    /// Requests to SSM (`X-Amz-Target: AmazonSSM.*`).
    pub ssm: u64,
    /// Requests to KMS (`X-Amz-Target: TrentService.*`).
    pub kms: u64,
    /// Answers that were throttling errors (`ThrottlingException`, ...).
    pub throttled: u64,
    /// Other transient failures: 5xx, 429, no answer.
    pub failed: u64,
}

impl AwsCalls {
    /// Every request, throttled and failed ones included.
    pub fn total(&self) -> u64 {
        self.ssm + self.kms
    }

    /// Requests that failed transiently: each is tried again unless the
    /// deadline has passed.
    pub fn retries(&self) -> u64 {
        self.throttled + self.failed
    }
}

/// Where the HTTP clients given it ([`crate::StoreHttp::with_counter`])
/// count their calls; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct AwsCallCounter(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    ssm: AtomicU64,
    kms: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
}

impl AwsCallCounter {
    /// A counter at zero.
    pub fn new() -> AwsCallCounter {
        AwsCallCounter::default()
    }

    /// Takes the counts made since the last take (a long-running agent's
    /// records each carry their own fetch's).
    pub fn take(&self) -> AwsCalls {
        let c = &self.0;
        AwsCalls {
            ssm: c.ssm.swap(0, Ordering::Relaxed),
            kms: c.kms.swap(0, Ordering::Relaxed),
            throttled: c.throttled.swap(0, Ordering::Relaxed),
            failed: c.failed.swap(0, Ordering::Relaxed),
        }
    }

    /// Wraps an SDK HTTP client so that every request and every throttled
    /// or failed answer is counted. Only the error code of a 400 answer is
    /// read; answers are passed on unchanged.
    pub(crate) fn wrap(&self, client: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(CountingClient {
            inner: client,
            counts: self.0.clone(),
        })
    }
}

#[derive(Debug)]
struct CountingClient {
    inner: SharedHttpClient,
    counts: Arc<Counts>,
}

impl HttpClient for CountingClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CountingConnector {
            inner: self.inner.http_connector(settings, components),
            counts: self.counts.clone(),
        })
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner
            .validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(
        &self,
        runtime_components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct CountingConnector {
    inner: SharedHttpConnector,
    counts: Arc<Counts>,
}

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let counts = self.counts.clone();
        let target = request.headers().get("x-amz-target").unwrap_or("");
        if target.starts_with("AmazonSSM.") {
            counts.ssm.fetch_add(1, Ordering::Relaxed);
        } else if target.starts_with("TrentService.") {
            counts.kms.fetch_add(1, Ordering::Relaxed);
        }
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let mut response = match call.await {
                Ok(response) => response,
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            let status = response.status().as_u16();
            if status >= 500 || status == 429 {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            } else if status == 400 {
                // An error answer: a small JSON document naming the code.
                let body = ByteStream::new(response.take_body())
                    .collect()
                    .await
                    .map_err(|e| ConnectorError::io(e.into()))?
                    .into_bytes();
                if is_throttling(&body) {
                    counts.throttled.fetch_add(1, Ordering::Relaxed);
                }
                *response.body_mut() = SdkBody::from(body.to_vec());
            }
            Ok(response)
        })
    }
}

/// Whether an AWS JSON error document names a throttling code (`__type`
/// or `code`, with or without a `namespace#` prefix).
fn is_throttling(body: &[u8]) -> bool {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    ["__type", "code"].iter().any(|field| {
        doc.get(field)
            .and_then(serde_json::Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t))
            .is_some_and(|code| THROTTLING_CODES.contains(&code))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_read_from_aws_json_errors() {
        assert!(is_throttling(
            br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
        ));
        assert!(is_throttling(
            br#"{"__type":"com.amazonaws.kms#ThrottlingException"}"#
        ));
        assert!(is_throttling(br#"{"code":"TooManyRequestsException"}"#));
        assert!(!is_throttling(
            br#"{"__type":"ParameterNotFound","message":"x"}"#
        ));
        assert!(!is_throttling(b"not json"));
    }

    #[test]
    fn a_take_returns_the_counts_since_the_last_and_clones_share_them() {
        let counter = AwsCallCounter::new();
        let clone = counter.clone();
        clone.0.ssm.fetch_add(3, Ordering::Relaxed);
        clone.0.kms.fetch_add(2, Ordering::Relaxed);
        clone.0.throttled.fetch_add(1, Ordering::Relaxed);
        let calls = counter.take();
        assert_eq!((calls.total(), calls.retries()), (5, 1));
        assert_eq!(counter.take(), AwsCalls::default());
    }
}
