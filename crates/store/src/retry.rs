//! Retries with full-jitter exponential backoff inside one overall deadline.
//!
//! The retries of one store share what they learn about throttling
//! ([`Throttle`]): once a call is throttled, the store's calls go one at a
//! time, each holding the turn through its own backoff, until a call gets
//! through. An agent's concurrent walks then wait in the account's queue as
//! one caller instead of four, which is what keeps the calls a burst of
//! pods makes close to the calls they need (issue 19; the AWS SDKs' adaptive
//! retry mode shares a rate per client the same way). A throttled call
//! backs off with a ceiling of 4 s instead of 2 s, and its exponent is the
//! store's throttled-answer count when that is higher than its own
//! attempt count (measured in docs/benchmarks.md: at 500 pods and 100
//! reads/s, 5.5 calls per needed call before, 2.6 with both).
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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use rand::Rng;
use tokio::time::Instant;

use crate::calls::THROTTLING_CODES;
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

/// What the retries of one store know about throttling: how many throttled
/// answers came since the last call that got through, and the turn that
/// calls take one at a time while that count is not zero.
#[derive(Debug, Default)]
pub struct Throttle {
    streak: AtomicU32,
    turn: tokio::sync::Mutex<()>,
}

/// When to give up and how long to wait between attempts.
#[derive(Debug, Clone)]
pub struct Retry {
    deadline: Instant,
    base: Duration,
    cap: Duration,
    throttled_cap: Duration,
    throttle: Option<Arc<Throttle>>,
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
            throttled_cap: Duration::from_secs(4),
            throttle: None,
        }
    }

    /// The same policy, sharing `throttle` with the other retries of its
    /// store.
    pub fn sharing(self, throttle: Arc<Throttle>) -> Retry {
        Retry {
            throttle: Some(throttle),
            ..self
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
            // While the store is being throttled, one call at a time, and
            // it keeps the turn through its backoff below.
            let _turn = match &self.throttle {
                Some(t) if t.streak.load(Ordering::Relaxed) > 0 => {
                    match tokio::time::timeout(remaining, t.turn.lock()).await {
                        Ok(turn) => Some(turn),
                        Err(_) => {
                            return Err(StoreError::Aws {
                                operation,
                                target: target.to_owned(),
                                code: "ThrottlingException".to_owned(),
                                message: "throttled: no turn before the deadline".to_owned(),
                                transient: true,
                                attempts: attempt - 1,
                            })
                        }
                    }
                }
                _ => None,
            };
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let failure = match tokio::time::timeout(remaining, call()).await {
                Ok(Ok(value)) => {
                    if let Some(t) = &self.throttle {
                        t.streak.store(0, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Ok(Err(err)) => classify(&err),
                Err(_) => Failure {
                    code: "Timeout".to_owned(),
                    message: "no answer before the deadline".to_owned(),
                    transient: true,
                    uncertain: true,
                },
            };
            let throttled = THROTTLING_CODES.contains(&failure.code.as_str());
            let mut exponent = attempt;
            if let (Some(t), true) = (&self.throttle, throttled) {
                exponent = exponent.max(t.streak.fetch_add(1, Ordering::Relaxed) + 1);
            }
            let wait = self.backoff(exponent, throttled);
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

    /// Full jitter: a random wait between zero and min(cap, base * 2^attempt),
    /// with the throttling cap after a throttled attempt.
    fn backoff(&self, attempt: u32, throttled: bool) -> Duration {
        let cap = if throttled {
            self.throttled_cap
        } else {
            self.cap
        };
        let ceiling = self.base.saturating_mul(1u32 << attempt.min(16)).min(cap);
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
            assert!(retry.backoff(attempt, false) <= Duration::from_secs(2));
            assert!(retry.backoff(attempt, true) <= Duration::from_secs(4));
        }
    }

    fn throttled_error(
    ) -> SdkError<aws_sdk_ssm::operation::get_parameter::GetParameterError, HttpResponse> {
        let meta = aws_smithy_types::error::ErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .build();
        let status = aws_smithy_runtime_api::http::StatusCode::try_from(400).expect("status");
        SdkError::service_error(
            aws_sdk_ssm::operation::get_parameter::GetParameterError::generic(meta),
            HttpResponse::new(status, aws_smithy_types::body::SdkBody::empty()),
        )
    }

    /// Four tasks make one call each through `retry()`, all started
    /// together; the first `throttled` calls made are throttled, each call
    /// takes `call`. The calls made, and the most in flight at once among
    /// the calls after the first four.
    async fn four_throttled_calls(
        retry: impl Fn() -> Retry,
        throttled: u32,
        call: Duration,
    ) -> (u32, u32) {
        let calls = Arc::new(AtomicU32::new(0));
        let in_flight = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let retry = retry();
            let (calls, in_flight, most) = (
                Arc::clone(&calls),
                Arc::clone(&in_flight),
                Arc::clone(&most),
            );
            tasks.push(tokio::spawn(async move {
                retry
                    .run("GetParameter", "/t/api/K", || {
                        let (calls, in_flight, most) = (
                            Arc::clone(&calls),
                            Arc::clone(&in_flight),
                            Arc::clone(&most),
                        );
                        async move {
                            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            if n > 4 {
                                most.fetch_max(now, Ordering::SeqCst);
                            }
                            tokio::time::sleep(call).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            if n <= throttled {
                                Err(throttled_error())
                            } else {
                                Ok(n)
                            }
                        }
                    })
                    .await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("every call gets through");
        }
        (calls.load(Ordering::SeqCst), most.load(Ordering::SeqCst))
    }

    /// Four calls of one store start together and are throttled; from then
    /// on they go one at a time until they get through (the counts, not
    /// the times, are checked).
    #[tokio::test]
    async fn once_throttled_the_calls_of_one_store_go_one_at_a_time() {
        let throttle = Arc::new(Throttle::default());
        let shared = || Retry::within(Duration::from_secs(60)).sharing(Arc::clone(&throttle));
        let (calls, most) = four_throttled_calls(shared, 6, Duration::from_millis(20)).await;
        assert_eq!(calls, 10, "6 throttled, 4 through");
        assert_eq!(most, 1);
        assert_eq!(throttle.streak.load(Ordering::SeqCst), 0);
    }

    /// Without a shared throttle (a `Retry` of its own), nothing waits for
    /// a turn: the same four calls, throttled once, overlap in their
    /// retries (each call lasts longer than the first backoff, at most
    /// 100 ms).
    #[tokio::test]
    async fn retries_without_a_store_do_not_wait_for_a_turn() {
        let own = || Retry::within(Duration::from_secs(60));
        let (calls, most) = four_throttled_calls(own, 4, Duration::from_millis(300)).await;
        assert_eq!(calls, 8);
        assert!(most > 1);
    }
}
