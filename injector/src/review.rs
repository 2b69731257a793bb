//! One AdmissionReview in, one answer out: no I/O, no clock, no logging.
//!
//! The body is read in two steps, both borrowing from it. A view of the
//! envelope (`ReviewIn`) takes the uid, kind, operation, namespace and
//! user and keeps the object as raw JSON text; only a Pod on CREATE is then
//! read, into the planner's [`PodView`] (the parts of the pod a decision
//! depends on; everything else is skipped, not built). A review of anything
//! else costs one scan of the body. The webhook benchmark measured the parse as where
//! a webhook spends its time: this is why nothing here builds a
//! `serde_json::Value` or a typed `Pod`. The answer is a [`Response`]
//! whose patch is the planner's JSON text.
//!
//! Three answers for a request that cannot be injected:
//! - the body is not a usable AdmissionReview (not JSON, wrong kind or
//!   apiVersion, no request): HTTP 400 with a short text; once the uid is
//!   known (no object, no namespace, an object that is not a Pod) an
//!   AdmissionResponse with `allowed: false`, code 400, reason `BadRequest`;
//! - a bad annotation: `allowed: false`, code 403, reason `Forbidden`, the
//!   planner's denials joined by `"; "` (each names the annotation and the
//!   rule);
//! - an internal failure: HTTP 500; the webhook's `failurePolicy` decides.
//!
//! Messages about a body never quote it: serde's messages can carry a
//! value from the input ("invalid type: string \"...\""), and a pod's env
//! values may be secrets. [`describe_json_error`] keeps the position and
//! the kind of error only.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use sidekey_audit::{Event, Outcome, SecretRef};
use sidekey_model::Selector;
pub use sidekey_patch::describe_json_error;
use sidekey_patch::{
    Config, Decision, Denial, ImageConfig, ImageConfigs, Plan, PodView, Request, Resolution, Text,
};
use sidekey_registry::{LookupError, Need, Platform};

use crate::metrics::ReviewOutcome;
pub use crate::response::Response;

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The envelope's kind.
pub const KIND: &str = "AdmissionReview";
/// The audit event name of a decision.
pub const AUDIT_EVENT: &str = "review";

/// The answer to one body posted to `/mutate`.
#[derive(Debug)]
pub struct Reviewed {
    /// The HTTP status: 200 for an AdmissionReview answer (allowed or not),
    /// 400 or 500 otherwise.
    pub status: StatusCode,
    /// The response body: AdmissionReview JSON for 200, a short text line
    /// otherwise.
    pub body: Vec<u8>,
    /// Whether `body` is JSON.
    pub json: bool,
    /// For metrics.
    pub outcome: ReviewOutcome,
    /// The audit record of the decision, when there is one (every answer
    /// with a uid). What is logged about a review comes from it (never
    /// from the body).
    pub event: Option<Event>,
    /// Why a body without a uid was refused (no event).
    pub refusal: Option<String>,
}

impl Reviewed {
    /// The request's uid, when the body had one.
    pub fn uid(&self) -> Option<&str> {
        self.event.as_ref()?.extra.get("uid")?.as_str()
    }

    /// The namespace as audited: the request's; once the pod is read and
    /// the request has none, the pod's.
    pub fn namespace(&self) -> Option<&str> {
        self.event.as_ref()?.namespace.as_deref()
    }

    /// The pod's name (its `generateName` when it has none yet).
    pub fn name(&self) -> Option<&str> {
        self.event.as_ref()?.pod.as_deref()
    }

    /// The request's operation.
    pub fn operation(&self) -> Option<&str> {
        self.event.as_ref()?.extra.get("operation")?.as_str()
    }

    /// Why the review ended as it did: one line, free of request content
    /// beyond the names above.
    pub fn reason(&self) -> &str {
        match (&self.event, &self.refusal) {
            (Some(e), _) => e.reason.as_deref().unwrap_or(""),
            (None, Some(r)) => r,
            (None, None) => "",
        }
    }
}

/// The envelope, with the object read as `O`: a [`PodView`] in one pass
/// over the body, or (when that fails) the object's JSON text, to answer
/// with what is wrong with it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewIn<'a, O> {
    #[serde(borrow, default)]
    api_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default = "none")]
    request: Option<RequestIn<'a, O>>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct RequestIn<'a, O> {
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow)]
    kind: KindIn<'a>,
    #[serde(borrow, default)]
    sub_resource: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    namespace: Option<Text<'a>>,
    #[serde(borrow)]
    operation: Text<'a>,
    #[serde(borrow, default)]
    user_info: Option<UserIn<'a>>,
    #[serde(default = "none")]
    object: Option<O>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
struct KindIn<'a> {
    #[serde(borrow, default)]
    group: Text<'a>,
    #[serde(borrow, default)]
    version: Text<'a>,
    #[serde(borrow, default)]
    kind: Text<'a>,
}

#[derive(Deserialize)]
struct UserIn<'a> {
    #[serde(borrow, default)]
    username: Option<Text<'a>>,
}

/// Image configs looked up in their registries for the containers
/// without a `command` ([`image_needs`]), by container name.
pub type Looked = std::collections::BTreeMap<String, Result<ImageConfig, LookupError>>;

/// What to look up before [`review_with_images`]: the images of the
/// containers whose image config the planner would use, and the platform
/// the pod's node selector asks for. `None` for a body that is not a pod
/// CREATE needing any (the review then answers without a lookup).
pub fn image_needs(body: &[u8], config: &Config) -> Option<(Vec<Need>, Platform)> {
    let body = std::str::from_utf8(body).ok()?;
    let envelope = serde_json::from_str::<ReviewIn<'_, PodView<'_>>>(body).ok()?;
    let req = envelope.request?;
    if *req.operation != *"CREATE" || !req.kind.group.is_empty() || *req.kind.kind != *"Pod" {
        return None;
    }
    let pod = req.object?;
    let namespace = req.namespace.as_deref().filter(|n| !n.is_empty()).or(pod
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty()))?;
    let user = req.user_info.as_ref().and_then(|u| u.username.as_deref());
    let request = Request { namespace, user };
    let needs: Vec<Need> = sidekey_patch::image_lookups(&pod, &request, config)
        .into_iter()
        .filter_map(|l| {
            Some(Need {
                container: l.container.to_owned(),
                image: l.image?.to_owned(),
            })
        })
        .collect();
    if needs.is_empty() {
        return None;
    }
    let platform = Platform::from_node_selector(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_selector.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    Some((needs, platform))
}

/// Where the pod's registry credentials are (`--registry-pull-secrets`):
/// its namespace, its `imagePullSecrets` and its service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecretRefs {
    /// The pod's namespace.
    pub namespace: String,
    /// `spec.imagePullSecrets[].name`, in order.
    pub secrets: Vec<String>,
    /// `spec.serviceAccountName` (`default` when absent).
    pub service_account: String,
}

#[derive(Deserialize)]
struct RefsReview {
    #[serde(default)]
    request: Option<RefsRequest>,
}

#[derive(Deserialize)]
struct RefsRequest {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    object: Option<RefsPod>,
}

#[derive(Deserialize)]
struct RefsPod {
    #[serde(default)]
    metadata: Option<RefsMeta>,
    #[serde(default)]
    spec: Option<RefsSpec>,
}

#[derive(Deserialize)]
struct RefsMeta {
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefsSpec {
    #[serde(default)]
    image_pull_secrets: Option<Vec<RefsName>>,
    #[serde(default)]
    service_account_name: Option<String>,
    #[serde(default)]
    service_account: Option<String>,
}

#[derive(Deserialize)]
struct RefsName {
    #[serde(default)]
    name: Option<String>,
}

/// The pod's pull-secret references (read only when a lookup needs
/// credentials); `None` for a body that is not a pod with a namespace.
pub fn pull_secret_refs(body: &[u8]) -> Option<PullSecretRefs> {
    let review: RefsReview = serde_json::from_slice(body).ok()?;
    let request = review.request?;
    let pod = request.object?;
    let namespace = request
        .namespace
        .filter(|n| !n.is_empty())
        .or(pod.metadata.and_then(|m| m.namespace))
        .filter(|n| !n.is_empty())?;
    let spec = pod.spec?;
    let mut secrets = Vec::new();
    for n in spec.image_pull_secrets.into_iter().flatten() {
        if let Some(name) = n.name.filter(|n| !n.is_empty()) {
            if !secrets.contains(&name) {
                secrets.push(name);
            }
        }
    }
    let service_account = spec
        .service_account_name
        .or(spec.service_account)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    Some(PullSecretRefs {
        namespace,
        secrets,
        service_account,
    })
}

/// Reviews one body against `config`.
pub fn review(body: &[u8], config: &Config) -> Reviewed {
    review_with_images(body, config, &Looked::new())
}

/// [`review`], with the image configs looked up for its containers
/// without a `command` ([`image_needs`]): a failed lookup denies the pod
/// with the registry's answer and the fix.
pub fn review_with_images(body: &[u8], config: &Config, looked: &Looked) -> Reviewed {
    // JSON text is UTF-8: checked once here, so the parser need not check
    // each string it borrows.
    let Ok(body) = std::str::from_utf8(body) else {
        return bad_request("the body is not an AdmissionReview: it is not UTF-8 text".to_owned());
    };
    // One pass: the object read as a pod (any kind's metadata reads this
    // way; only an opted-in object's spec is read). When that fails, the
    // body is read again with the object as text, to tell a broken
    // envelope (HTTP 400) from a broken object (an invalid answer with
    // its uid).
    let (envelope, object_error) = match serde_json::from_str::<ReviewIn<'_, PodView<'_>>>(body) {
        Ok(r) => (r, None),
        Err(_) => match serde_json::from_str::<ReviewIn<'_, &RawValue>>(body) {
            Ok(r) => {
                let error = r
                    .request
                    .as_ref()
                    .and_then(|q| q.object)
                    .and_then(|o| PodView::from_json(o.get()).err());
                let request = r.request.map(|q| RequestIn {
                    object: None,
                    uid: q.uid,
                    kind: q.kind,
                    sub_resource: q.sub_resource,
                    name: q.name,
                    namespace: q.namespace,
                    operation: q.operation,
                    user_info: q.user_info,
                    dry_run: q.dry_run,
                });
                let envelope = ReviewIn {
                    api_version: r.api_version,
                    kind: r.kind,
                    request,
                };
                (envelope, error)
            }
            Err(e) => {
                return bad_request(format!(
                    "the body is not an AdmissionReview: {}",
                    describe_json_error(&e)
                ))
            }
        },
    };
    if envelope.kind.as_deref() != Some(KIND)
        || envelope.api_version.as_deref() != Some(API_VERSION)
    {
        return bad_request(format!(
            "expected kind {KIND} with apiVersion {API_VERSION}"
        ));
    }
    let Some(request) = envelope.request else {
        return bad_request("the AdmissionReview has no request".to_owned());
    };
    review_request(request, object_error, config, looked)
}

/// `object_error`: why the object could not be read as a pod, when it
/// could not (then `req.object` is `None`).
fn review_request(
    req: RequestIn<'_, PodView<'_>>,
    object_error: Option<sidekey_patch::PodError>,
    config: &Config,
    looked: &Looked,
) -> Reviewed {
    let mut event = Event::new(AUDIT_EVENT);
    event.namespace = req.namespace.as_deref().map(bounded);
    event.pod = req.name.as_deref().filter(|n| !n.is_empty()).map(bounded);
    event.actor = req
        .user_info
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .map(bounded);
    event
        .extra
        .insert("uid".to_owned(), bounded(&req.uid).into());
    event
        .extra
        .insert("operation".to_owned(), bounded(&req.operation).into());
    if req.dry_run == Some(true) {
        event.extra.insert("dry_run".to_owned(), true.into());
    }

    let is_pod = req.kind.group.is_empty()
        && *req.kind.version == *"v1"
        && *req.kind.kind == *"Pod"
        && req.sub_resource.as_deref().unwrap_or("").is_empty();
    if !is_pod {
        let what = if req.kind.group.is_empty() {
            format!("{}/{}", req.kind.version, req.kind.kind)
        } else {
            format!("{}/{}/{}", req.kind.group, req.kind.version, req.kind.kind)
        };
        let sub = req
            .sub_resource
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| format!(" (subresource {s})"))
            .unwrap_or_default();
        let reason = format!("{what}{sub} is not a pod: allowed untouched");
        return skipped(&req.uid, event, reason);
    }
    if *req.operation != *"CREATE" {
        let reason = format!(
            "operation {} is not planned: allowed untouched",
            req.operation
        );
        return skipped(&req.uid, event, reason);
    }
    if let Some(e) = object_error {
        let message = format!("the object is not a valid Pod: {e}");
        return invalid(&req.uid, event, message);
    }
    let Some(pod) = req.object else {
        return invalid(&req.uid, event, "the request has no object".to_owned());
    };
    if event.pod.is_none() {
        event.pod = pod.name().map(bounded);
    }
    if event.namespace.as_deref().is_none_or(str::is_empty) {
        event.namespace = pod
            .metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(bounded);
    }
    let Some(namespace) = event.namespace.as_deref() else {
        return invalid(&req.uid, event, "the request has no namespace".to_owned());
    };
    let request = Request {
        namespace,
        user: event.actor.as_deref(),
    };
    let failed: Vec<Denial> = looked
        .iter()
        .filter_map(|(container, r)| r.as_ref().err().map(|e| (container, e)))
        .map(|(container, e)| {
            Denial::pod(format!(
                "container {container} sets no command, and the ENTRYPOINT and CMD of its image {} cannot be read from its registry: {}; set the container's command, or the annotation sidekey.io/command.{container} (a JSON array), to what the image runs",
                e.image, e.answer
            ))
        })
        .collect();
    if !failed.is_empty() {
        event.environment = environment_of(config, namespace);
        return denied(&req.uid, event, &failed);
    }
    let images: ImageConfigs = looked
        .iter()
        .filter_map(|(c, r)| Some((c.clone(), r.as_ref().ok()?.clone())))
        .collect();
    let decision = match catch_unwind(AssertUnwindSafe(|| {
        sidekey_patch::plan_with_images(&pod, &request, config, &images)
    })) {
        Ok(d) => d,
        Err(_) => return internal(event, "the planner failed"),
    };
    match decision {
        Decision::Skip { reason } => {
            let environment = environment_of(config, namespace);
            event.environment = environment;
            skipped(&req.uid, event, reason)
        }
        Decision::Deny(denials) => {
            let environment = environment_of(config, namespace);
            event.environment = environment;
            denied(&req.uid, event, &denials)
        }
        Decision::Inject(plan) => injected(&req.uid, event, plan),
    }
}

fn environment_of(config: &Config, namespace: &str) -> Option<String> {
    match config.resolve(namespace) {
        Resolution::Environment { environment, .. } => Some(environment.to_string()),
        Resolution::Excluded { .. } | Resolution::Invalid { .. } => None,
    }
}

fn skipped(uid: &str, mut event: Event, reason: String) -> Reviewed {
    event.outcome = Outcome::Skipped;
    event.reason = Some(cut(reason, MAX_DENIAL_CHARS));
    answer(Response::allowed(uid), ReviewOutcome::Skipped, event)
}

fn invalid(uid: &str, mut event: Event, message: String) -> Reviewed {
    event.outcome = Outcome::Failure;
    let message = cut(message, MAX_DENIAL_CHARS);
    event.reason = Some(format!("invalid review: {message}"));
    let response = Response::refused(uid, 400, "BadRequest", message);
    answer(response, ReviewOutcome::Invalid, event)
}

fn denied(uid: &str, mut event: Event, denials: &[Denial]) -> Reviewed {
    let message = join_denials(denials);
    event.outcome = Outcome::Denied;
    event.reason = Some(message.clone());
    let response = Response::refused(uid, 403, "Forbidden", message);
    answer(response, ReviewOutcome::Denied, event)
}

/// The most denials one message (and its audit record) lists; the rest
/// are counted. A pod can hold hundreds of bad annotations: the answer and
/// the audit line stay a few KB whatever it holds.
pub const MAX_DENIALS_SHOWN: usize = 5;

/// The longest text of one denial in a message; longer ones are cut.
pub const MAX_DENIAL_CHARS: usize = 1024;

/// The denials as one message: `"; "`-separated, each prefixed with its
/// annotation unless its message already names it; the first
/// [`MAX_DENIALS_SHOWN`] (each cut at [`MAX_DENIAL_CHARS`]), then how many
/// more there are.
pub fn join_denials(denials: &[Denial]) -> String {
    if denials.is_empty() {
        return "denied by sidekey".to_owned();
    }
    let mut parts: Vec<String> = denials
        .iter()
        .take(MAX_DENIALS_SHOWN)
        .map(|d| {
            let text = match &d.annotation {
                Some(a) if !d.message.contains(a.as_str()) => format!("{a}: {}", d.message),
                _ => d.message.clone(),
            };
            cut(text, MAX_DENIAL_CHARS)
        })
        .collect();
    if denials.len() > MAX_DENIALS_SHOWN {
        parts.push(format!(
            "and {} more problem(s)",
            denials.len() - MAX_DENIALS_SHOWN
        ));
    }
    parts.join("; ")
}

/// The longest name, namespace, user, uid or operation an audit record
/// carries from a request (Kubernetes names are at most 253 characters).
pub const MAX_FIELD_CHARS: usize = 256;

/// A request's field for the audit record, cut at [`MAX_FIELD_CHARS`].
fn bounded(s: &str) -> String {
    if s.len() <= MAX_FIELD_CHARS {
        s.to_owned()
    } else {
        cut(s.to_owned(), MAX_FIELD_CHARS)
    }
}

/// `text` cut to at most `max` characters (on a character boundary), with
/// how long it was.
fn cut(mut text: String, max: usize) -> String {
    let Some((at, _)) = text.char_indices().nth(max) else {
        return text;
    };
    let total = text.chars().count();
    text.truncate(at);
    text.push_str(&format!("... ({total} characters)"));
    text
}

fn injected(uid: &str, mut event: Event, plan: Plan) -> Reviewed {
    event.environment = Some(plan.environment.to_string());
    event.outcome = Outcome::Success;
    event.secrets = plan
        .services
        .iter()
        .map(|s| SecretRef::new(s.to_string(), "*", None))
        .chain(plan.picks.iter().map(|p| {
            let version = match p.selector {
                Selector::Version(v) => Some(v),
                _ => None,
            };
            SecretRef::new(p.service.to_string(), p.key.to_string(), version)
        }))
        .collect();
    if !plan.inherit.is_empty() {
        let inherit: Vec<serde_json::Value> =
            plan.inherit.iter().map(|e| e.to_string().into()).collect();
        event.extra.insert("inherit".to_owned(), inherit.into());
    }
    event
        .extra
        .insert("delivery".to_owned(), plan.delivery.to_string().into());
    // What the operator allowed beyond the defaults, on the record of each
    // pod it applies to.
    if plan.allow_legacy_values {
        event.extra.insert("allow_legacy".to_owned(), true.into());
    }
    if !plan.allow_loader_env.is_empty() {
        event.extra.insert(
            "allow_loader_env".to_owned(),
            plan.allow_loader_env.clone().into(),
        );
    }
    event.extra.insert(
        "containers".to_owned(),
        plan.containers
            .iter()
            .map(|c| serde_json::Value::from(c.as_str()))
            .collect::<Vec<_>>()
            .into(),
    );
    event.reason = Some(format!(
        "injected into {} container(s), environment {}",
        plan.containers.len(),
        plan.environment
    ));
    // The planner's JSON text is the patch, as it is.
    let response = Response::patched(uid, plan.patch.into_bytes(), plan.warnings.clone());
    answer(response, ReviewOutcome::Injected, event)
}

fn answer(response: Response, outcome: ReviewOutcome, event: Event) -> Reviewed {
    Reviewed {
        status: StatusCode::OK,
        body: response.encode(),
        json: true,
        outcome,
        event: Some(event),
        refusal: None,
    }
}

fn bad_request(reason: String) -> Reviewed {
    Reviewed {
        status: StatusCode::BAD_REQUEST,
        body: format!("{reason}\n").into_bytes(),
        json: false,
        outcome: ReviewOutcome::Invalid,
        event: None,
        refusal: Some(reason),
    }
}

fn internal(mut event: Event, reason: &str) -> Reviewed {
    event.outcome = Outcome::Failure;
    event.reason = Some(format!("internal error: {reason}"));
    Reviewed {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: b"internal error\n".to_vec(),
        json: false,
        outcome: ReviewOutcome::Error,
        event: Some(event),
        refusal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secret_refs_read_the_pods_secrets_and_service_account() {
        let body = br#"{"request":{"namespace":"team-a","object":{"metadata":{"name":"p"},"spec":{"serviceAccountName":"puller","imagePullSecrets":[{"name":"regcred"},{"name":""},{"name":"regcred"},{"name":"other"}]}}}}"#;
        assert_eq!(
            pull_secret_refs(body),
            Some(PullSecretRefs {
                namespace: "team-a".into(),
                secrets: vec!["regcred".into(), "other".into()],
                service_account: "puller".into(),
            })
        );
        // The object's namespace when the request has none; `default`.
        let body = br#"{"request":{"object":{"metadata":{"namespace":"team-b"},"spec":{}}}}"#;
        let r = pull_secret_refs(body).unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.service_account.as_str()),
            ("team-b", "default")
        );
        assert!(r.secrets.is_empty());
        assert_eq!(
            pull_secret_refs(br#"{"request":{"object":{"spec":{}}}}"#),
            None
        );
    }

    #[test]
    fn json_errors_never_quote_the_input() {
        const SECRET: &str = "hunter2-secret";
        let cases = [
            format!("{{\"a\": \"{SECRET}\""),
            format!("{{\"a\": {SECRET}}}"),
            format!("[\"{SECRET}\", ]"),
        ];
        for body in &cases {
            let e = serde_json::from_str::<serde_json::Value>(body).unwrap_err();
            let d = describe_json_error(&e);
            assert!(!d.contains(SECRET), "{d}");
        }
        // Data errors from typed parsing quote values in serde's own text.
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Typed {
            priority: i32,
        }
        let e =
            serde_json::from_str::<Typed>(&format!("{{\"priority\":\"{SECRET}\"}}")).unwrap_err();
        assert!(
            e.to_string().contains(SECRET),
            "serde quotes it: the reason for this function"
        );
        let d = describe_json_error(&e);
        assert!(!d.contains(SECRET), "{d}");
        assert!(
            d.starts_with("a field has the wrong type or value at line 1 column"),
            "{d}"
        );
        let e = serde_json::from_str::<ReviewIn<'_, &RawValue>>(
            r#"{"request": {"operation": "CREATE"}}"#,
        )
        .err()
        .unwrap();
        assert!(describe_json_error(&e).starts_with("missing field `uid`"));
    }

    #[test]
    fn denials_are_joined_and_named() {
        let denials = vec![
            Denial {
                annotation: Some("sidekey.io/services".to_owned()),
                message: "a service name may not contain '/'".to_owned(),
            },
            Denial {
                annotation: Some("sidekey.io/delivery".to_owned()),
                message: "sidekey.io/delivery must be env, files or both".to_owned(),
            },
            Denial {
                annotation: None,
                message: "the pod has no containers".to_owned(),
            },
        ];
        assert_eq!(
            join_denials(&denials),
            "sidekey.io/services: a service name may not contain '/'; \
             sidekey.io/delivery must be env, files or both; the pod has no containers"
        );
        assert_eq!(join_denials(&[]), "denied by sidekey");
    }

    #[test]
    fn many_or_long_denials_are_bounded() {
        let many: Vec<Denial> = (0..300)
            .map(|i| Denial::annotation(&format!("sidekey.io/x{i}"), "x".repeat(400)))
            .collect();
        let message = join_denials(&many);
        assert!(message.len() < 3_000, "{} bytes", message.len());
        assert!(message.starts_with("sidekey.io/x0: "), "{message}");
        assert!(message.ends_with("; and 295 more problem(s)"), "{message}");
        let long = join_denials(&[Denial::pod("é".repeat(5_000))]);
        assert_eq!(
            long.chars().count(),
            MAX_DENIAL_CHARS + "... (5000 characters)".len()
        );
        assert!(long.ends_with("... (5000 characters)"), "{long}");
    }

    #[test]
    fn answers_are_encoded_for_the_api_server() {
        use base64::Engine as _;
        let allowed = Response::allowed("u1").encode();
        let v: serde_json::Value = serde_json::from_slice(&allowed).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": "u1", "allowed": true}})
        );

        let patch: sidekey_patch::json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/metadata/annotations/sidekey.io~1injected", "value": "true"}
        ]))
        .unwrap();
        let r = Response::patched(
            "u2",
            serde_json::to_vec(&patch).unwrap(),
            vec!["careful".to_owned()],
        );
        let v: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        assert_eq!(v["response"]["warnings"][0], "careful");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        let back: sidekey_patch::json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, patch);

        let denied = Response::refused("u3", 403, "Forbidden", "no".to_owned());
        let bytes = denied.encode();
        assert!(
            String::from_utf8_lossy(&bytes).ends_with(
                r#","allowed":false,"status":{"status":"Failure","code":403,"message":"no","reason":"Forbidden"}}}"#
            ),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["response"],
            serde_json::json!({"uid": "u3", "allowed": false,
                "status": {"status": "Failure", "code": 403, "reason": "Forbidden", "message": "no"}})
        );
    }

    proptest::proptest! {
        #[test]
        fn any_patch_bytes_come_back_from_the_answer(
            patch in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            uid in "(?s).{0,20}",
            warnings in proptest::option::of(proptest::collection::vec("(?s).{0,20}", 0..3)),
        ) {
            use base64::Engine as _;
            let r = Response::patched(&uid, patch.clone(), warnings.clone().unwrap_or_default());
            let v: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
            let text = v["response"]["patch"].as_str().unwrap();
            proptest::prop_assert_eq!(base64::engine::general_purpose::STANDARD.decode(text).unwrap(), patch);
            proptest::prop_assert_eq!(v["response"]["uid"].as_str().unwrap(), uid.as_str());
            let back: Option<Vec<String>> = serde_json::from_value(v["response"]["warnings"].clone()).unwrap();
            // No warnings: no `warnings` field.
            proptest::prop_assert_eq!(back, warnings.filter(|w| !w.is_empty()));
        }
    }

    #[test]
    fn an_internal_failure_is_http_500_with_an_audit_record() {
        let r = internal(Event::new(AUDIT_EVENT), "boom");
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.outcome, ReviewOutcome::Error);
        assert!(!r.json);
        let event = r.event.unwrap();
        assert_eq!(event.outcome, Outcome::Failure);
        assert_eq!(event.reason.as_deref(), Some("internal error: boom"));
    }
}
