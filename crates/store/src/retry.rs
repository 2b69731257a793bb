//! Retries with full-jitter exponential backoff inside one overall deadline.
//!
//! The AWS SDK's own retries are turned off so that this one loop decides:
//! transient failures (throttling, 5xx, timeouts, connection errors) are
//! retried until the deadline; permanent ones (not found, access denied,
//! validation) fail at once.
//!
//! A write that is not idempotent (PutParameter makes a new version each
//! time) uses [`Retry::run_checked`]: before it is sent again, a check asks
//! whether the failed attempt took effect after all (its answer was lost:
//! a timeout, a dropped connection, a 5xx after the write), so that a lost
//! answer does not make a second version.

use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use rand::Rng;
use tokio::time::Instant;

use crate::error::StoreError;

/// Error codes AWS documents as safe to retry.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "TooManyUpdates",
    "InternalServerError",
    "InternalFailure",
    "InternalServiceError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// When to give up and how long to wait between attempts.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    deadline: Instant,
    base: Duration,
    cap: Duration,
}

impl Retry {
    /// Retries until `budget` from now has passed.
    pub fn within(budget: Duration) -> Retry {
        Retry::until(Instant::now() + budget)
    }

    /// Retries until `deadline`.
    pub fn until(deadline: Instant) -> Retry {
        Retry {
            deadline,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }

    /// The deadline this policy works to.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs `call` until it succeeds, fails permanently, or the deadline
    /// would pass. `operation` and `target` name the call in errors.
    pub async fn run<T, E, F, Fut>(
        &self,
        operation: &'static str,
        target: &str,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.run_checked(operation, target, call, || std::future::ready(Ok(None)))
            .await
    }

    /// [`Self::run`] for a call that must not take effect twice: after a
    /// transient failure, before `call` is sent again, `landed` tells
    /// whether the failed attempt took effect after all; `Some(value)` is
    /// then the result, and `call` is not sent again. An error from
    /// `landed` ends the loop with it.
    pub async fn run_checked<T, E, F, Fut, L, LFut>(
        &self,
        operation: &'static str,
        target: &str,
        mut call: F,
        mut landed: L,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        L: FnMut() -> LFut,
        LFut: Future<Output = Result<Option<T>, StoreError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let failure = match tokio::time::timeout(remaining, call()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) => classify(&err),
                Err(_) => Failure {
                    code: "Timeout".to_owned(),
                    message: "no answer before the deadline".to_owned(),
                    transient: true,
                    uncertain: true,
                },
            };
            let wait = self.backoff(attempt);
            let retry_at = Instant::now() + wait;
            if !failure.transient || retry_at >= self.deadline {
                tracing::debug!(operation, target, attempt, code = %failure.code, "giving up");
                return Err(StoreError::Aws {
                    operation,
                    target: target.to_owned(),
                    code: failure.code,
                    message: failure.message,
                    transient: failure.transient,
                    attempts: attempt,
                });
            }
            tracing::debug!(operation, target, attempt, code = %failure.code, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            if !failure.uncertain {
                continue;
            }
            if let Some(value) = landed().await? {
                tracing::info!(operation, target, attempt, code = %failure.code,
                    "the failed attempt took effect after all (its answer was lost): not sent again");
                return Ok(value);
            }
        }
    }

    /// Full jitter: a random wait between zero and min(cap, base * 2^attempt).
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis.max(1)))
    }
}

struct Failure {
    code: String,
    message: String,
    transient: bool,
    /// The call may have taken effect: no answer came (a timeout, a lost
    /// connection) or a 5xx did. A 4xx answer (throttling among them) means
    /// the service refused the request before acting on it.
    uncertain: bool,
}

/// Sorts an SDK error into transient or permanent, keeping its code.
fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let inner = service.err();
            let code = inner
                .code()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP{status}"));
            let transient =
                TRANSIENT_CODES.contains(&code.as_str()) || status >= 500 || status == 429;
            Failure {
                message: inner.message().unwrap_or("no message").to_owned(),
                code,
                transient,
                uncertain: status >= 500,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            code: "Timeout".to_owned(),
            message: "the request timed out".to_owned(),
            transient: true,
            uncertain: true,
        },
        SdkError::DispatchFailure(dispatch) => Failure {
            code: "ConnectionError".to_owned(),
            message: error_chain(err, dispatch.is_io()),
            transient: true,
            uncertain: true,
        },
        SdkError::ResponseError(_) => Failure {
            code: "ResponseError".to_owned(),
            message: error_chain(err, false),
            transient: true,
            uncertain: true,
        },
        SdkError::ConstructionFailure(_) => Failure {
            code: "ConstructionFailure".to_owned(),
            message: error_chain(err, false),
            transient: false,
            uncertain: false,
        },
        _ => Failure {
            code: "Unknown".to_owned(),
            message: error_chain(err, false),
            transient: false,
            uncertain: false,
        },
    }
}

/// The error and its sources on one line: the SDK's top-level message for a
/// dispatch failure is just "dispatch failure".
fn error_chain(err: &(dyn std::error::Error + 'static), io: bool) -> String {
    let mut parts = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    let mut line = parts.join(": ");
    if io && !line.contains("io") {
        line.push_str(" (I/O error)");
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_cap() {
        let retry = Retry::within(Duration::from_secs(1));
        for attempt in 1..40 {
            assert!(retry.backoff(attempt) <= Duration::from_secs(2));
        }
    }
}
