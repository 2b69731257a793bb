//! `sidekey-injector`: the HTTPS mutating admission webhook that adds the
//! sidekey agent to opted-in pods.
//!
//! The planning itself (annotations, scoping, the JSON Patch) is the pure
//! `sidekey-patch` crate; this crate is the edge around it:
//!
//! - [`review`](mod@review): an `admission.k8s.io/v1` AdmissionReview body in, the
//!   answer out (HTTP status, body, outcome, audit event). No I/O.
//! - [`service`]: the routes (`POST /mutate`, `GET /healthz`, `/readyz`,
//!   `/metrics`), the body limit and the request timeout, callable without
//!   a socket ([`Injector::handle`], or as a `tower::Service`).
//! - [`tls`]: the serving certificate and the client CA, reloaded from disk
//!   when they change.
//! - [`server`]: the TLS listener (HTTP/2 and HTTP/1.1), the limits that
//!   bound memory whatever callers do (connections, body bytes in flight,
//!   timeouts) and graceful shutdown.
//! - [`self_managed`]: `--self-managed-tls`: the CA and serving certificate
//!   kept in a Secret (compare-and-swap), the webhook's `caBundle` patched.
//! - [`metrics`], [`audit`], [`args`]; logging is `sidekey_logging`'s.
//!
//! A review body is never logged (a pod's env values may be secrets): logs
//! carry the uid, namespace, name and operation only, and error messages
//! about a body never quote it.
//!
//! This crate must not depend on the AWS SDK, on `sidekey-store` or on the
//! agent.

pub mod args;
pub mod audit;
pub mod metrics;
pub mod response;
pub mod review;
pub mod self_managed;
pub mod server;
pub mod service;
pub mod tls;

pub use args::{Args, Settings, SettingsError};
pub use audit::{AuditSink, AuditTarget, Lost, Pending, SubmitError};
pub use metrics::{Metrics, ReviewOutcome};
pub use review::{review, Reviewed};
pub use server::{run, serve, ServeError, ServeLimits};
pub use service::{Injector, Limits, BODY_LIMIT};
pub use tls::{CertStore, TlsError};
