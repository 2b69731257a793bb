//! One audit record per fetch: pod, namespace, environment, the secrets
//! with their versions, the KMS key, the outcome and the duration, and for
//! SSM the AWS calls it took and how many were retried (throttling shows
//! there). Never a value.

use std::io::Stdout;
use std::sync::LazyLock;
use std::time::Duration;

use sidekey_audit::{AuditError, ChainWriter, Component, Event, Outcome, SecretRef};
use sidekey_store::{AwsCallCounter, AwsCalls, Backend};

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

/// The process's count of AWS calls: the agent's AWS HTTP client counts
/// into it ([`crate::store::aws_http`]).
static AWS_CALLS: LazyLock<AwsCallCounter> = LazyLock::new(AwsCallCounter::new);

/// The counter the agent's AWS HTTP client counts its calls into.
pub fn aws_call_counter() -> &'static AwsCallCounter {
    &AWS_CALLS
}

/// Takes the counts of AWS calls made since the last take (the sidecar's
/// records each carry their own fetch's).
pub fn take_aws_calls() -> AwsCalls {
    AWS_CALLS.take()
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
