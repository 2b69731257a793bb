//! Retries with exponential backoff inside one overall deadline.
//!
//! The retries of one store share what they learn about throttling
//! ([`Throttle`]; issue 19, measured in docs/benchmarks.md). A burst of pods
//! against one account's quota is a crowd of callers that cannot see one
//! another; each agent behaves as one careful caller:
//!
//! - It opens with one call: the others wait for its answer, so that a
//!   burst opens with one call per pod instead of one per walk.
//! - Once throttled, its calls go one at a time, each holding the turn
//!   through its own backoff.
//! - A level, raised by each throttled answer and lowered by each answer
//!   that gets through, sets the backoff: 0.6 s doubling to 6 s, equal
//!   jitter (half of it fixed, half random), so a crowd spreads out and
//!   thins as it learns, and a call that gets through shortens the next
//!   wait instead of starting over. Calls sent together raise it once.
//! - No throttled wait is longer than the time since the store's first
//!   call, which keeps the last pods of a burst close to the others.
//!
//! At 500 pods and 100 reads/s this is 1.8 calls per needed call (5.5 with
//! each call retried on its own). Parameter Store and KMS throttle on
//! separate quotas, so a store keeps one [`Throttle`] for each.
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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

/// What the retries of one store (of its calls to one service) know about
/// throttling: a level that each throttled answer raises and each answer
/// that gets through lowers by one (never below zero), whether any answer
/// other than throttling has come, when the first call was sent, and the
/// turn that calls take one at a time until the first answer and while the
/// level is above zero.
#[derive(Debug, Default)]
pub struct Throttle {
    level: AtomicU32,
    /// An answer other than throttling has come.
    answered: AtomicBool,
    /// When the store's first call was sent.
    opened: std::sync::OnceLock<Instant>,
    turn: tokio::sync::Mutex<()>,
}

impl Throttle {
    fn level(&self) -> u32 {
        self.level.load(Ordering::Relaxed)
    }

    /// Calls take the turn while the store is throttled, and until its first
    /// answer, so that a store opens with one call rather than all of them.
    fn one_at_a_time(&self) -> bool {
        self.level() > 0 || !self.answered.load(Ordering::Relaxed)
    }

    /// A throttled answer to a call sent at level `sent`: the level after
    /// it, one above `sent` (calls sent together raise it once), at most
    /// `top`.
    fn throttled(&self, sent: u32, top: u32) -> u32 {
        let raised = (sent + 1).min(top);
        let before = self
            .level
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.max(raised))
            })
            .unwrap_or(raised);
        before.max(raised)
    }

    /// A new round of calls after a pause (an agent's refresh): it opens
    /// with one call again, as the first round did, since the agents a
    /// burst started refresh at the same moments. The level stays: a store
    /// still throttled goes on one call at a time.
    pub fn reopen(&self) {
        self.answered.store(false, Ordering::Relaxed);
    }

    /// An answer that got through.
    fn got_through(&self) {
        self.answered.store(true, Ordering::Relaxed);
        let _ = self
            .level
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1));
    }
}

/// When to give up and how long to wait between attempts.
#[derive(Debug, Clone)]
pub struct Retry {
    deadline: Instant,
    /// Backoff after a failure that is not throttling.
    transient: Backoff,
    /// Backoff after a throttled answer.
    throttled: Backoff,
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
            transient: Backoff {
                first: Duration::from_millis(100),
                cap: Duration::from_secs(2),
                jitter: Jitter::Full,
            },
            throttled: Backoff {
                first: Duration::from_millis(600),
                cap: Duration::from_secs(6),
                jitter: Jitter::Equal,
            },
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
            let turn = match &self.throttle {
                Some(t) if t.one_at_a_time() => {
                    match tokio::time::timeout(remaining, t.turn.lock()).await {
                        // The store may have got through while this call waited.
                        Ok(turn) => t.one_at_a_time().then_some(turn),
                        Err(_) => {
                            let (code, message) =
                                if t.level() > 0 || t.answered.load(Ordering::Relaxed) {
                                    (
                                        "ThrottlingException",
                                        "throttled: no turn before the deadline",
                                    )
                                } else {
                                    (
                                        "Timeout",
                                        "the store's first call had no answer before the deadline",
                                    )
                                };
                            return Err(StoreError::Aws {
                                operation,
                                target: target.to_owned(),
                                code: code.to_owned(),
                                message: message.to_owned(),
                                transient: true,
                                attempts: attempt - 1,
                            });
                        }
                    }
                }
                _ => None,
            };
            let sent = self.throttle.as_ref().map_or(0, |t| {
                t.opened.get_or_init(Instant::now);
                t.level()
            });
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let failure = match tokio::time::timeout(remaining, call()).await {
                Ok(Ok(value)) => {
                    if let Some(t) = &self.throttle {
                        t.got_through();
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
            if let (Some(t), false) = (&self.throttle, throttled) {
                t.answered.store(true, Ordering::Relaxed);
            }
            let mut exponent = attempt;
            if let (Some(t), true) = (&self.throttle, throttled) {
                exponent = t.throttled(sent, self.throttled.top());
            }
            let wait = if throttled {
                let wait = self.throttled.wait(exponent);
                // Never longer than the store has been calling.
                match self.throttle.as_ref().and_then(|t| t.opened.get()) {
                    Some(opened) => wait.min(opened.elapsed()),
                    None => wait,
                }
            } else {
                self.transient.wait(exponent)
            };
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
            // The check makes calls of its own through this store: they
            // must be able to take the turn.
            drop(turn);
            if let Some(value) = landed().await? {
                tracing::info!(operation, target, attempt, code = %failure.code,
                    "the failed attempt took effect after all (its answer was lost): not sent again");
                return Ok(value);
            }
        }
    }
}

/// Exponential backoff: before attempt n + 1, a wait of at most
/// min(cap, first * 2^(n - 1)), drawn as `jitter` says.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    cap: Duration,
    jitter: Jitter,
}

/// How much of a backoff is random.
#[derive(Debug, Clone, Copy)]
enum Jitter {
    /// Anywhere from zero to the ceiling.
    Full,
    /// At least half the ceiling: for throttling, where the next attempt
    /// must not come back before the crowd has thinned.
    Equal,
}

impl Backoff {
    fn ceiling(&self, exponent: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << exponent.saturating_sub(1).min(16))
            .min(self.cap)
    }

    /// The lowest exponent whose ceiling is the cap: a store's throttling
    /// level goes no higher, so that each answer that gets through
    /// shortens the next wait.
    fn top(&self) -> u32 {
        (1..=17)
            .find(|&e| self.ceiling(e) >= self.cap)
            .unwrap_or(17)
    }

    fn wait(&self, exponent: u32) -> Duration {
        let millis = (self.ceiling(exponent).as_millis() as u64).max(1);
        let low = match self.jitter {
            Jitter::Full => 0,
            Jitter::Equal => millis / 2,
        };
        Duration::from_millis(rand::rng().random_range(low..=millis))
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
    fn backoff_stays_between_its_floor_and_its_cap() {
        let retry = Retry::within(Duration::from_secs(1));
        for attempt in 1..40 {
            assert!(retry.transient.wait(attempt) <= Duration::from_secs(2));
            let throttled = retry.throttled.wait(attempt);
            assert!(throttled <= Duration::from_secs(6));
            assert!(
                throttled >= retry.throttled.ceiling(attempt) / 2,
                "equal jitter"
            );
        }
        assert_eq!(retry.throttled.ceiling(1), Duration::from_millis(600));
        assert_eq!(
            retry.throttled.top(),
            5,
            "0.6, 1.2, 2.4, 4.8, then the 6 s cap"
        );
    }

    #[test]
    fn calls_sent_together_raise_the_level_once() {
        let t = Throttle::default();
        for _ in 0..3 {
            assert_eq!(t.throttled(0, 5), 1);
        }
        assert_eq!(t.throttled(1, 5), 2);
        assert_eq!(t.throttled(9, 5), 5, "never above the top");
        t.got_through();
        assert_eq!(t.level(), 4);
        for _ in 0..9 {
            t.got_through();
        }
        assert_eq!(t.level(), 0, "never below zero");
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

    /// A call through `retry` whose attempts take `call` each; the
    /// attempts numbered up to `throttled` (counted in `made`, shared by
    /// several tasks) are throttled. `in_flight` counts the attempts under
    /// way; `seen` gets, for each attempt in the order they started, how
    /// many were under way with it.
    async fn one_call(
        retry: Retry,
        throttled: u32,
        call: Duration,
        made: Arc<AtomicU32>,
        in_flight: Arc<AtomicU32>,
        seen: Arc<std::sync::Mutex<Vec<u32>>>,
    ) -> Result<u32, StoreError> {
        retry
            .run("GetParameter", "/t/api/K", || {
                let (made, in_flight, seen) =
                    (Arc::clone(&made), Arc::clone(&in_flight), Arc::clone(&seen));
                async move {
                    let n = {
                        let mut seen = seen.lock().expect("seen");
                        let n = made.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.push(in_flight.fetch_add(1, Ordering::SeqCst) + 1);
                        n
                    };
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
    }

    /// Four tasks make one call each through `retry()`, all started
    /// together; the first `throttled` attempts are throttled, each takes
    /// `call`. For each attempt in the order they started, how many were
    /// under way with it.
    async fn four_calls(retry: impl Fn() -> Retry, throttled: u32, call: Duration) -> Vec<u32> {
        let made = Arc::new(AtomicU32::new(0));
        let in_flight = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(one_call(
                    retry(),
                    throttled,
                    call,
                    Arc::clone(&made),
                    Arc::clone(&in_flight),
                    Arc::clone(&seen),
                ))
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("every call gets through");
        }
        let seen = seen.lock().expect("seen").clone();
        seen
    }

    /// Four calls of one store start together: the first goes alone, and
    /// once it is throttled every attempt goes alone until all four got
    /// through (the counts, not the times, are checked).
    #[tokio::test]
    async fn once_throttled_the_calls_of_one_store_go_one_at_a_time() {
        let throttle = Arc::new(Throttle::default());
        let shared = || Retry::within(Duration::from_secs(60)).sharing(Arc::clone(&throttle));
        let seen = four_calls(shared, 6, Duration::from_millis(20)).await;
        assert_eq!(seen.len(), 10, "6 throttled, 4 through");
        assert_eq!(seen, vec![1; 10], "every attempt alone");
        // Raised to 5 (the top) by six throttled answers sent one at a
        // time, lowered by four that got through.
        assert_eq!(throttle.level(), 1);
    }

    /// A store opens with one call; once it is answered (and not
    /// throttled), the others go together.
    #[tokio::test]
    async fn a_store_opens_with_one_call_then_the_others_go_together() {
        let throttle = Arc::new(Throttle::default());
        let shared = || Retry::within(Duration::from_secs(60)).sharing(Arc::clone(&throttle));
        let seen = four_calls(shared, 0, Duration::from_millis(200)).await;
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[..2], [1, 1], "the first call alone: {seen:?}");
        assert!(seen[1..].iter().any(|&n| n > 1), "then together: {seen:?}");
        assert_eq!(throttle.level(), 0);
        // A refresh opens the same way again; without `reopen` its four
        // calls would go together from the start.
        let again = || Retry::within(Duration::from_secs(60)).sharing(Arc::clone(&throttle));
        let together = four_calls(again, 0, Duration::from_millis(200)).await;
        assert!(together[..2].iter().any(|&n| n > 1), "{together:?}");
        throttle.reopen();
        let again = || Retry::within(Duration::from_secs(60)).sharing(Arc::clone(&throttle));
        let seen = four_calls(again, 0, Duration::from_millis(200)).await;
        assert_eq!(seen[..2], [1, 1], "a reopened store opens alone: {seen:?}");
        assert!(seen[1..].iter().any(|&n| n > 1), "then together: {seen:?}");
    }

    /// Without a shared throttle (a `Retry` of its own), nothing waits for
    /// a turn: four calls start together and, throttled once, overlap in
    /// their retries (each lasts 1 s, longer than the spread of the first
    /// throttled waits, 0.3 to 0.6 s).
    #[tokio::test]
    async fn retries_without_a_store_do_not_wait_for_a_turn() {
        let own = || Retry::within(Duration::from_secs(60));
        let seen = four_calls(own, 4, Duration::from_secs(1)).await;
        assert_eq!(seen.len(), 8);
        assert_eq!(seen[3], 4, "the first four together");
        assert!(seen[4..].iter().any(|&n| n > 1), "{seen:?}");
    }

    /// A throttled wait is never longer than the time since the store's
    /// first call: three throttled answers to 10 ms calls cost the shared
    /// retry well under 1.5 s, where a retry of its own waits at least
    /// 0.3 + 0.6 + 1.2 s (the floors of its equal-jitter waits).
    #[tokio::test]
    async fn a_throttled_wait_is_never_longer_than_the_store_has_been_calling() {
        let throttled_three_times = |retry: Retry| {
            let start = Instant::now();
            let counters = (
                Arc::new(AtomicU32::new(0)),
                Arc::new(AtomicU32::new(0)),
                Arc::default(),
            );
            async move {
                let n = one_call(
                    retry,
                    3,
                    Duration::from_millis(10),
                    counters.0,
                    counters.1,
                    counters.2,
                )
                .await
                .expect("through on the fourth attempt");
                assert_eq!(n, 4);
                start.elapsed()
            }
        };
        let shared = Retry::within(Duration::from_secs(60)).sharing(Arc::default());
        let took = throttled_three_times(shared).await;
        assert!(took < Duration::from_millis(1500), "shared: {took:?}");
        let own = Retry::within(Duration::from_secs(60));
        let took = throttled_three_times(own).await;
        assert!(took >= Duration::from_millis(2100), "own: {took:?}");
    }

    /// A write whose answer was lost, on a throttled store, checks whether
    /// it landed with calls through the same store: they must not wait for
    /// the turn the write holds (they would until the deadline).
    #[tokio::test]
    async fn a_lost_write_is_checked_through_the_turn_it_held() {
        let throttle = Arc::new(Throttle::default());
        throttle.throttled(0, 5);
        let retry = Retry::within(Duration::from_secs(20)).sharing(Arc::clone(&throttle));
        let start = Instant::now();
        let landed = retry
            .run_checked(
                "PutParameter",
                "/t/api/K",
                || async {
                    let meta = aws_smithy_types::error::ErrorMetadata::builder()
                        .code("InternalServerError")
                        .build();
                    let status =
                        aws_smithy_runtime_api::http::StatusCode::try_from(500).expect("status");
                    Err::<u32, _>(SdkError::service_error(
                        aws_sdk_ssm::operation::get_parameter::GetParameterError::generic(meta),
                        HttpResponse::new(status, aws_smithy_types::body::SdkBody::empty()),
                    ))
                },
                || {
                    let check = retry.clone();
                    async move {
                        check
                            .run("GetParameter", "/t/api/K", || async {
                                Ok::<
                                    u32,
                                    SdkError<
                                        aws_sdk_ssm::operation::get_parameter::GetParameterError,
                                        HttpResponse,
                                    >,
                                >(7)
                            })
                            .await
                            .map(Some)
                    }
                },
            )
            .await
            .expect("the check finds the write");
        assert_eq!(landed, 7);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    /// A call that waits for the turn past its deadline fails as
    /// transient, with the attempts it made (none), naming what it waited
    /// for: the store's first call, or its throttling.
    #[tokio::test]
    async fn no_turn_before_the_deadline() {
        for (throttled, code, message) in [
            (false, "Timeout", "first call"),
            (
                true,
                "ThrottlingException",
                "throttled: no turn before the deadline",
            ),
        ] {
            let throttle = Arc::new(Throttle::default());
            if throttled {
                throttle.throttled(0, 5);
            }
            // Holds the turn through its one 2 s call: the store's first
            // call, or a call of a throttled store.
            let holder = tokio::spawn(one_call(
                Retry::within(Duration::from_secs(60)).sharing(Arc::clone(&throttle)),
                0,
                Duration::from_secs(2),
                Arc::default(),
                Arc::default(),
                Arc::default(),
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let short = Retry::within(Duration::from_millis(300)).sharing(Arc::clone(&throttle));
            let err = short
                .run("GetParameter", "/t/api/OTHER", || async {
                    Ok::<
                        u32,
                        SdkError<
                            aws_sdk_ssm::operation::get_parameter::GetParameterError,
                            HttpResponse,
                        >,
                    >(0)
                })
                .await
                .expect_err("no turn in 300 ms");
            match err {
                StoreError::Aws {
                    code: got,
                    message: text,
                    transient,
                    attempts,
                    ..
                } => {
                    assert_eq!(got, code);
                    assert!(text.contains(message), "{text}");
                    assert!(transient);
                    assert_eq!(attempts, 0);
                }
                other => panic!("unexpected error: {other}"),
            }
            holder
                .await
                .expect("task")
                .expect("the holder gets through");
        }
    }
}
