//! One audit record per fetch: pod, namespace, environment, the secrets
//! with their versions, the KMS key, the outcome and the duration, and for
//! SSM the AWS calls it took and how many were retried (throttling shows
//! there). Never a value.

use std::io::Stdout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

use sidekey_audit::{AuditError, ChainWriter, Component, Event, Outcome, SecretRef};
use sidekey_store::Backend;

use crate::config::{AuditTarget, Config};
use crate::fetch::Fetched;

/// Where the agent's records go; a stream keeps its hash chain across the
/// records of one run (the sidecar writes one per change).
#[derive(Debug)]
pub enum AuditSink {
    /// Standard output.
    Stdout(ChainWriter<Stdout>),
    /// Standard error.
    Stderr(ChainWriter<std::io::Stderr>),
    /// A shared file, appended under a lock.
    File(std::path::PathBuf),
}

impl AuditSink {
    /// The sink a configuration names.
    pub fn new(target: &AuditTarget) -> AuditSink {
        match target {
            AuditTarget::Stdout => {
                AuditSink::Stdout(ChainWriter::new(Component::Agent, std::io::stdout()))
            }
            AuditTarget::Stderr => {
                AuditSink::Stderr(ChainWriter::new(Component::Agent, std::io::stderr()))
            }
            AuditTarget::File(path) => AuditSink::File(path.clone()),
        }
    }

    /// Writes one record.
    pub fn write(&mut self, event: Event) -> Result<(), AuditError> {
        match self {
            AuditSink::Stdout(w) => w.write(event).map(drop),
            AuditSink::Stderr(w) => w.write(event).map(drop),
            AuditSink::File(path) => {
                sidekey_audit::append_to_file(path, Component::Agent, event).map(drop)
            }
        }
    }
}

static SSM_CALLS: AtomicU64 = AtomicU64::new(0);
static KMS_CALLS: AtomicU64 = AtomicU64::new(0);
static THROTTLED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Error codes AWS answers when a request rate is exceeded.
const THROTTLING_CODES: &[&str] = &[
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

/// Takes the counts of AWS calls made through [`count_calls`] clients since
/// the last take (the sidecar's records each carry their own fetch's).
pub fn take_aws_calls() -> AwsCalls {
    AwsCalls {
        ssm: SSM_CALLS.swap(0, Ordering::Relaxed),
        kms: KMS_CALLS.swap(0, Ordering::Relaxed),
        throttled: THROTTLED.swap(0, Ordering::Relaxed),
        failed: FAILED.swap(0, Ordering::Relaxed),
    }
}

/// Wraps the SDK's HTTP client so that every request and every throttled or
/// failed answer is counted (for the audit record; see [`take_aws_calls`]).
/// Only the error code of a 400 answer is read; answers are passed on
/// unchanged.
pub fn count_calls(client: SharedHttpClient) -> SharedHttpClient {
    SharedHttpClient::new(CountingClient(client))
}

#[derive(Debug)]
struct CountingClient(SharedHttpClient);

impl HttpClient for CountingClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CountingConnector(
            self.0.http_connector(settings, components),
        ))
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.0.validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(
        &self,
        runtime_components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.0.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[derive(Debug)]
struct CountingConnector(SharedHttpConnector);

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or("");
        if target.starts_with("AmazonSSM.") {
            SSM_CALLS.fetch_add(1, Ordering::Relaxed);
        } else if target.starts_with("TrentService.") {
            KMS_CALLS.fetch_add(1, Ordering::Relaxed);
        }
        let call = self.0.call(request);
        HttpConnectorFuture::new(async move {
            let mut response = match call.await {
                Ok(response) => response,
                Err(e) => {
                    FAILED.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            let status = response.status().as_u16();
            if status >= 500 || status == 429 {
                FAILED.fetch_add(1, Ordering::Relaxed);
            } else if status == 400 {
                // An error answer: a small JSON document naming the code.
                let body = ByteStream::new(response.take_body())
                    .collect()
                    .await
                    .map_err(|e| ConnectorError::io(e.into()))?
                    .into_bytes();
                if is_throttling(&body) {
                    THROTTLED.fetch_add(1, Ordering::Relaxed);
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

/// The record of one fetch. `mode` is `exec`, `init` or `sidecar`;
/// `result` is what was delivered, or the one-line reason it failed.
pub fn fetch_event(
    config: &Config,
    mode: &str,
    result: Result<&Fetched, &str>,
    elapsed: Duration,
) -> Event {
    let mut event = Event::new("fetch");
    event.environment = Some(config.environment().to_string());
    event.namespace = config.namespace().map(str::to_owned);
    event.pod = config.pod().map(str::to_owned);
    event.actor = Some("sidekey-agent".to_owned());
    event.duration_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
    let extra = &mut event.extra;
    extra.insert("mode".into(), mode.into());
    extra.insert(
        "store".into(),
        match config.backend() {
            Backend::Ssm => "ssm",
            Backend::File(_) => "file",
        }
        .into(),
    );
    if matches!(config.backend(), Backend::Ssm) {
        extra.insert("kms_key".into(), config.kms_key().into());
        let calls = take_aws_calls();
        extra.insert(
            "aws".into(),
            serde_json::json!({
                "calls": calls.total(),
                "ssm": calls.ssm,
                "kms": calls.kms,
                "throttled": calls.throttled,
                "retries": calls.retries(),
            }),
        );
    }
    if !config.inherit().is_empty() {
        extra.insert(
            "inherit".into(),
            config
                .inherit()
                .iter()
                .map(|e| serde_json::Value::from(e.as_str()))
                .collect(),
        );
    }
    match result {
        Ok(fetched) => {
            for d in &fetched.secrets {
                let r = SecretRef::new(
                    d.got.path.service().as_str(),
                    d.got.path.key().as_str(),
                    Some(d.got.version),
                );
                // A key picked into two variables, or from two layers, is
                // listed once per (service, key, version).
                if !event.secrets.contains(&r) {
                    event.secrets.push(r);
                }
            }
            // Full names say which layer each value came from, and which
            // variable a pick set.
            extra.insert(
                "parameters".into(),
                fetched
                    .secrets
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "var": d.var,
                            "name": d.got.path.to_string(),
                            "version": d.got.version,
                        })
                    })
                    .collect(),
            );
            if fetched.skipped.is_empty() {
                event.outcome = Outcome::Success;
            } else {
                event.outcome = Outcome::Skipped;
                event.reason = Some(format!(
                    "missing and skipped (SIDEKEY_ON_MISSING=skip): {}",
                    fetched
                        .skipped
                        .iter()
                        .map(|m| format!("{} ({})", m.parameter, m.code))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                extra.insert(
                    "skipped".into(),
                    fetched
                        .skipped
                        .iter()
                        .map(|m| serde_json::json!({"parameter": m.parameter, "code": m.code}))
                        .collect(),
                );
            }
        }
        Err(reason) => {
            event.outcome = Outcome::Failure;
            event.reason = Some(reason.to_owned());
        }
    }
    event
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
}
