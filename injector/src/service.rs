//! The routes, callable without a socket: [`Injector::handle`] takes any
//! `http::Request` whose body is an `http_body::Body`, and [`Injector`] is
//! also a `tower::Service`.
//!
//! | route | answer |
//! |---|---|
//! | `POST /mutate` | the review ([`crate::review`](mod@crate::review)); 413 beyond [`BODY_LIMIT`], 408 past the request timeout; 503 when its audit record cannot be queued or written within the request timeout ([`crate::audit`]) |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once a certificate is loaded, 503 before |
//! | `GET /metrics` | Prometheus text |
//!
//! Any other path is 404; a known path with another method is 405 with an
//! `Allow` header.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use sidekey_patch::Config;

use crate::audit::{AuditSink, Lost, SubmitError};
use crate::metrics::{Metrics, ReviewOutcome};
use crate::review::{image_needs, pull_secret_refs, review_with_images, Looked, PullSecretRefs};
use crate::tls::CertStore;
use sidekey_registry::{Credentials, LazyCredentials, PodCredentials, Registry};

/// The largest review body read: 3 MiB (the API server's own request limit
/// is 3 MiB, so a larger body cannot be a real review).
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// Per-request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body read, in bytes.
    pub body: usize,
    /// Longest time from a request's headers to its answer (the body read
    /// included).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body: BODY_LIMIT,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The webhook: configuration, metrics, audit sink and readiness. Cheap to
/// clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Injector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    metrics: Metrics,
    audit: AuditSink,
    certs: Option<Arc<CertStore>>,
    limits: Limits,
    /// Reads the ENTRYPOINT and CMD of containers without a command from
    /// their registries (`--registry-lookup`); `None`: such containers need
    /// `sidekey.io/command`.
    registry: Option<Arc<Registry>>,
    /// The Kubernetes client reading pull secrets
    /// (`--registry-pull-secrets`), made on first use.
    kube: KubeCell,
}

/// The Kubernetes client, made on first use (`Debug` says whether).
#[derive(Default)]
struct KubeCell(tokio::sync::OnceCell<kube::Client>);

impl std::fmt::Debug for KubeCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KubeCell(made: {})", self.0.initialized())
    }
}

/// A Kubernetes API error in words: the API server's status message (it
/// names the object and the verb, never a Secret's data).
fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// A boxed error, as `http_body_util` uses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response type of every route.
pub type HttpResponse = Response<Full<Bytes>>;

impl Injector {
    /// A webhook with `config`, writing audit records to `audit`. `certs`
    /// decides readiness (`None`: always ready, for tests without TLS).
    pub fn new(
        config: Config,
        audit: AuditSink,
        certs: Option<Arc<CertStore>>,
        limits: Limits,
    ) -> Injector {
        Injector {
            inner: Arc::new(Inner {
                config,
                metrics: Metrics::default(),
                audit,
                certs,
                limits,
                registry: None,
                kube: KubeCell::default(),
            }),
        }
    }

    /// The same webhook, reading the image config of containers without a
    /// `command` from their registries through `registry`. Call it on a
    /// new [`Injector`], before it is cloned (a clone keeps its lookup).
    pub fn with_registry(mut self, registry: Option<Arc<Registry>>) -> Injector {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.registry = registry,
            None => tracing::error!("with_registry on a shared injector: lookup not enabled"),
        }
        self
    }

    /// The registry lookup, when enabled.
    pub fn registry(&self) -> Option<&Registry> {
        self.inner.registry.as_deref()
    }

    /// The metrics (tests read counters directly).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The audit sink.
    pub fn audit(&self) -> &AuditSink {
        &self.inner.audit
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.inner.certs.as_ref().is_none_or(|c| c.is_loaded())
    }

    /// Answers one request. Never fails: every error is an HTTP answer.
    pub async fn handle<B>(&self, req: Request<B>) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path();
        match path {
            "/mutate" => {
                if req.method() != Method::POST {
                    return not_allowed("POST");
                }
                self.mutate(req).await
            }
            "/healthz" | "/readyz" | "/metrics" => {
                if req.method() != Method::GET && req.method() != Method::HEAD {
                    return not_allowed("GET, HEAD");
                }
                match path {
                    "/healthz" => text(StatusCode::OK, "ok\n"),
                    "/readyz" if self.is_ready() => text(StatusCode::OK, "ready\n"),
                    "/readyz" => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no serving certificate loaded yet\n",
                    ),
                    _ => {
                        let mut body = self.inner.metrics.render();
                        if let Some(registry) = &self.inner.registry {
                            crate::metrics::render_registry(&mut body, registry.stats());
                        }
                        let mut r = text(StatusCode::OK, body);
                        r.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        );
                        r
                    }
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn mutate<B>(&self, req: Request<B>) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let limits = self.inner.limits;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.body as u64) {
            return self.refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large(limits.body),
                started,
            );
        }
        let read = async {
            let body = match Limited::new(req.into_body(), limits.body).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return Err(self.refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        too_large(limits.body),
                        started,
                    ));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read a review body");
                    return Err(self.refuse(
                        StatusCode::BAD_REQUEST,
                        "cannot read the body\n".to_owned(),
                        started,
                    ));
                }
            };
            tracing::trace!(bytes = body.len(), "review received");
            Ok(body)
        };
        // A review usually arrives whole with its headers (one HTTP/2 DATA
        // frame), so it is read at the first poll, without arming a timer;
        // otherwise the deadline counts from the headers.
        let deadline = tokio::time::Instant::from_std(started + limits.request_timeout);
        let mut read = std::pin::pin!(read);
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        let body = match first {
            Poll::Ready(r) => r,
            Poll::Pending => match tokio::time::timeout_at(deadline, read).await {
                Ok(r) => r,
                Err(_) => Err(self.refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request took too long\n".to_owned(),
                    started,
                )),
            },
        };
        match body {
            Ok(body) => self.answer(body, started, deadline).await,
            Err(refused) => refused,
        }
    }

    /// The image configs of the review's containers without a command,
    /// looked up within the registry lookup's budget (nothing when the
    /// lookup is off or no container needs one).
    async fn look_up_images(&self, body: &[u8]) -> Looked {
        let Some(registry) = &self.inner.registry else {
            return Looked::new();
        };
        let Some((needs, platform)) = image_needs(body, &self.inner.config) else {
            return Looked::new();
        };
        if !registry.settings().pod_pull_secrets {
            return registry
                .lookup_all(&needs, &platform, &Credentials::none())
                .await;
        }
        let Some(refs) = pull_secret_refs(body) else {
            return registry
                .lookup_all(&needs, &platform, &Credentials::none())
                .await;
        };
        let lazy = LazyCredentials::new(Box::pin(self.pod_credentials(refs)));
        registry.lookup_all_with(&needs, &platform, &lazy).await
    }

    /// The credentials of the pod's `imagePullSecrets` and of its service
    /// account's, read through the Kubernetes API (not cached: a lookup
    /// needs them only on an image-config cache miss that anonymous access
    /// could not serve). Problems name the secret and the rule, never a
    /// value.
    async fn pod_credentials(&self, refs: PullSecretRefs) -> PodCredentials {
        let mut out = PodCredentials::new();
        let client = match self
            .inner
            .kube
            .0
            .get_or_try_init(kube::Client::try_default)
            .await
        {
            Ok(c) => c.clone(),
            Err(e) => {
                out.problem(format!(
                    "cannot reach the Kubernetes API to read the pod's pull secrets: {e}"
                ));
                return out;
            }
        };
        let ns = refs.namespace.as_str();
        let mut names: Vec<(String, String)> = refs
            .secrets
            .iter()
            .map(|n| (n.clone(), "the pod's imagePullSecrets".to_owned()))
            .collect();
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client.clone(), ns);
        let sa = refs.service_account.as_str();
        match accounts.get_opt(sa).await {
            Ok(Some(account)) => {
                for r in account.image_pull_secrets.into_iter().flatten() {
                    if !r.name.is_empty() && !names.iter().any(|(n, _)| *n == r.name) {
                        names.push((r.name, format!("service account {ns}/{sa}")));
                    }
                }
            }
            Ok(None) => out.problem(format!("service account {ns}/{sa} does not exist")),
            Err(e) => out.problem(format!(
                "cannot get service account {ns}/{sa} (the injector needs get on serviceaccounts): {}",
                kube_error(&e)
            )),
        }
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client, ns);
        for (name, via) in names {
            let what = format!("pull secret {ns}/{name} (from {via})");
            match secrets.get_opt(&name).await {
                Ok(Some(secret)) => {
                    let data: std::collections::BTreeMap<String, Vec<u8>> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    match Credentials::from_pull_secret(secret.type_.as_deref(), &data, &what) {
                        Ok(c) => out.add(what, c),
                        Err(problem) => out.problem(problem),
                    }
                }
                Ok(None) => out.problem(format!("{what} does not exist")),
                Err(e) => out.problem(format!(
                    "cannot get {what} (the injector needs get on secrets): {}",
                    kube_error(&e)
                )),
            }
        }
        out
    }

    /// Reviews `body`, and answers once its audit record is written (or
    /// has failed); 503 when the record cannot be queued or is not written
    /// by `deadline` (the audit output is stalled).
    async fn answer(
        &self,
        body: Bytes,
        started: Instant,
        deadline: tokio::time::Instant,
    ) -> HttpResponse {
        let looked = self.look_up_images(&body).await;
        let reviewed = review_with_images(&body, &self.inner.config, &looked);
        drop(body);
        let took = started.elapsed();
        let r = &reviewed;
        let uid = r.uid().unwrap_or("-");
        let namespace = r.namespace().unwrap_or("-");
        let name = r.name().unwrap_or("-");
        let operation = r.operation().unwrap_or("-");
        let outcome = r.outcome.as_str();
        let reason = r.reason();
        match r.outcome {
            ReviewOutcome::Error => {
                tracing::error!(
                    uid,
                    namespace,
                    name,
                    operation,
                    outcome,
                    reason,
                    "review failed"
                )
            }
            ReviewOutcome::Invalid => {
                tracing::info!(
                    uid,
                    namespace,
                    name,
                    operation,
                    outcome,
                    reason,
                    "review refused"
                )
            }
            ReviewOutcome::Denied => {
                tracing::info!(
                    uid,
                    namespace,
                    name,
                    operation,
                    outcome,
                    reason,
                    "review denied"
                )
            }
            _ => {
                tracing::debug!(
                    uid,
                    namespace,
                    name,
                    operation,
                    outcome,
                    reason,
                    "review answered"
                )
            }
        }
        let mut reviewed = reviewed;
        if let Some(event) = &mut reviewed.event {
            event.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
            let submitted = self.inner.audit.submit(event);
            let uid = reviewed.uid().unwrap_or("-");
            match submitted {
                Ok(mut pending) => match tokio::time::timeout_at(deadline, &mut pending).await {
                    Ok(Ok(())) => {}
                    Ok(Err(lost)) => self.audit_lost(uid, &lost),
                    Err(_) => {
                        // The record stays queued and is written when the
                        // output drains; a failure then is still counted.
                        let this = self.clone();
                        let owned = uid.to_owned();
                        tokio::spawn(async move {
                            if let Err(lost) = pending.await {
                                this.audit_lost(&owned, &lost);
                            }
                        });
                        self.inner.metrics.audit_timed_out();
                        return self.audit_stalled(
                            uid,
                            "the review's audit record was not written within the request timeout (the audit output is stalled)".to_owned(),
                            started,
                        );
                    }
                },
                Err(SubmitError::Lost(lost)) => self.audit_lost(uid, &lost),
                Err(full @ SubmitError::Full { .. }) => {
                    self.inner.metrics.audit_queue_full();
                    return self.audit_stalled(uid, full.to_string(), started);
                }
            }
        }
        self.inner
            .metrics
            .review(reviewed.outcome, reviewed.namespace(), started.elapsed());
        let content_type = if reviewed.json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        let mut r = Response::new(Full::new(Bytes::from(reviewed.body)));
        *r.status_mut() = reviewed.status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    }

    /// Logs and counts an audit record that could not be written (the
    /// review is answered anyway).
    fn audit_lost(&self, uid: &str, e: &Lost) {
        self.inner.metrics.audit_failures(e.records);
        let cause = std::error::Error::source(&e.error)
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::error!(
            uid,
            records = e.records,
            first_seq = e.first_seq,
            last_seq = e.last_seq,
            error = %e.error,
            cause,
            "cannot write audit records"
        );
    }

    /// A review refused because its audit record cannot be written now:
    /// 503, so that the API server applies the webhook's failure policy
    /// and retries later.
    fn audit_stalled(&self, uid: &str, why: String, started: Instant) -> HttpResponse {
        tracing::error!(uid, reason = %why, "review refused: the audit log is stalled");
        self.inner
            .metrics
            .review(ReviewOutcome::Error, None, started.elapsed());
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}; try again\n"),
        );
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    fn refuse(&self, status: StatusCode, message: String, started: Instant) -> HttpResponse {
        tracing::info!(
            status = status.as_u16(),
            reason = message.trim_end(),
            "review refused"
        );
        self.inner
            .metrics
            .review(ReviewOutcome::Invalid, None, started.elapsed());
        text(status, message)
    }
}

fn too_large(limit: usize) -> String {
    format!("the body is larger than {limit} bytes\n")
}

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_allowed(allow: &'static str) -> HttpResponse {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

impl<B> tower_service::Service<Request<B>> for Injector
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}
