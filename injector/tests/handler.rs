//! The webhook called directly (no socket): routes, the three kinds of bad
//! request, skips, injection, denials, warnings, metrics and audit records.

mod common;

use common::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use sidekey_injector::{Injector, Limits, ReviewOutcome, BODY_LIMIT};
use sidekey_patch::Config;

#[tokio::test]
async fn routes_methods_and_probes() {
    let inj = injector();
    assert_eq!(
        call(&inj, "GET", "/healthz", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&inj, "GET", "/readyz", "").await.status,
        StatusCode::OK
    );
    let metrics = call(&inj, "GET", "/metrics", "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .content_type
        .starts_with("text/plain; version=0.0.4"));
    assert!(metrics
        .text()
        .contains("# TYPE sidekey_injector_reviews_total counter"));

    assert_eq!(
        call(&inj, "GET", "/", "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&inj, "POST", "/validate", "{}").await.status,
        StatusCode::NOT_FOUND
    );
    let wrong = call(&inj, "GET", "/mutate", "").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        call(&inj, "POST", "/healthz", "").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(&inj, "DELETE", "/metrics", "").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn readyz_waits_for_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs =
        sidekey_injector::CertStore::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let inj = Injector::new(
        Config::default_for(None),
        sidekey_injector::AuditSink::memory(),
        Some(certs.clone()),
        Limits::default(),
    );
    assert_eq!(
        call(&inj, "GET", "/readyz", "").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(&inj, "GET", "/healthz", "").await.status,
        StatusCode::OK
    );
    let leaf = Ca::new("ca").leaf(7);
    leaf.install(&dir.path().join("tls.crt"), &dir.path().join("tls.key"));
    certs.reload().unwrap();
    assert_eq!(
        call(&inj, "GET", "/readyz", "").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_or_413() {
    let inj = injector();
    let not_json = call(&inj, "POST", "/mutate", "{\"kind\": ").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert!(
        not_json.text().contains("not an AdmissionReview"),
        "{}",
        not_json.text()
    );

    let garbage = call(&inj, "POST", "/mutate", "\u{1}\u{2}not json").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);

    let mut wrong_kind = injectable("u1");
    wrong_kind["kind"] = json!("ConversionReview");
    let a = mutate(&inj, &wrong_kind).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.text().contains("expected kind AdmissionReview"),
        "{}",
        a.text()
    );

    let mut beta = injectable("u2");
    beta["apiVersion"] = json!("admission.k8s.io/v1beta1");
    assert_eq!(mutate(&inj, &beta).await.status, StatusCode::BAD_REQUEST);

    let no_request = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"});
    let a = mutate(&inj, &no_request).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.text().contains("no request"), "{}", a.text());

    let mut no_uid = injectable("u3");
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let a = mutate(&inj, &no_uid).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.text().contains("missing field `uid`"), "{}", a.text());

    // 4 MiB: refused before it is all read.
    let big = vec![b' '; 4 * 1024 * 1024];
    let a = call(&inj, "POST", "/mutate", big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(inj.metrics().reviews(ReviewOutcome::Invalid), 7);
    assert!(
        inj.audit().lines().is_empty(),
        "no decision, no audit record"
    );
}

/// A streamed body of 64 KiB frames with no length known in advance (no
/// Content-Length).
struct Chunks(std::vec::IntoIter<bytes::Bytes>);

impl hyper::body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn a_body_over_the_limit_without_content_length_is_413() {
    let inj = injector();
    let chunks: Vec<bytes::Bytes> = (0..64)
        .map(|_| bytes::Bytes::from(vec![b' '; 64 * 1024]))
        .collect();
    let req = hyper::Request::post("/mutate")
        .body(Chunks(chunks.into_iter()))
        .unwrap();
    let resp = inj.handle(req).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Exactly the limit is read (and is not a review).
    let a = call(&inj, "POST", "/mutate", vec![b' '; BODY_LIMIT]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// A body that never sends anything.
struct Stalled;

impl hyper::body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408() {
    let inj = Injector::new(
        Config::default_for(None),
        sidekey_injector::AuditSink::memory(),
        None,
        Limits {
            request_timeout: std::time::Duration::from_millis(50),
            ..Limits::default()
        },
    );
    let req = hyper::Request::post("/mutate").body(Stalled).unwrap();
    assert_eq!(inj.handle(req).await.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(inj.metrics().reviews(ReviewOutcome::Invalid), 1);
}

#[tokio::test]
async fn an_object_that_is_not_a_pod_gets_an_invalid_answer() {
    let inj = injector();
    let mut r = injectable("uid-bad-object");
    r["request"]["object"]["spec"]["containers"] = json!("not a list");
    let resp = mutate(&inj, &r).await.response();
    assert_eq!(resp["uid"], "uid-bad-object");
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 400);
    assert_eq!(resp["status"]["reason"], "BadRequest");
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(message.contains("not a valid Pod"), "{message}");
    assert!(
        !message.contains("not a list"),
        "the message quotes the input: {message}"
    );

    // A pod that does not opt in is not the webhook's business, valid or not.
    let mut not_opted_in = review("uid-not-opted", "team-a", "CREATE", pod(json!({})));
    not_opted_in["request"]["object"]["spec"]["containers"] = json!("not a list");
    let resp = mutate(&inj, &not_opted_in).await.response();
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());

    let mut no_object = injectable("uid-no-object");
    no_object["request"]["object"] = Value::Null;
    let resp = mutate(&inj, &no_object).await.response();
    assert_eq!(resp["allowed"], false);
    assert!(resp["status"]["message"]
        .as_str()
        .unwrap()
        .contains("no object"));

    assert_eq!(inj.metrics().reviews(ReviewOutcome::Invalid), 2);
    assert_eq!(inj.metrics().reviews(ReviewOutcome::Skipped), 1);
    let records = audit_records(&inj);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["outcome"], "failure");
    assert_eq!(records[0]["uid"], "uid-bad-object");
}

#[tokio::test]
async fn other_kinds_and_operations_are_allowed_untouched() {
    let inj = injector();
    let mut deployment = injectable("u-deploy");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment["request"]["object"] =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}});
    let mut update = injectable("u-update");
    update["request"]["operation"] = json!("UPDATE");
    let mut delete = injectable("u-delete");
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["object"] = Value::Null;
    let mut binding = injectable("u-binding");
    binding["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Binding"});
    binding["request"]["subResource"] = json!("binding");
    let mut ephemeral = injectable("u-ephemeral");
    ephemeral["request"]["subResource"] = json!("ephemeralcontainers");
    // Another kind that carries the opt-in on its own metadata and whose
    // spec cannot be read as a pod's (the one-pass read fails and the
    // second read finds it is not a pod).
    let mut custom = injectable("u-custom");
    custom["request"]["kind"] = json!({"group": "example.io", "version": "v1", "kind": "Widget"});
    custom["request"]["object"] = json!({
        "apiVersion": "example.io/v1", "kind": "Widget",
        "metadata": {"name": "w", "annotations": opted_in("api")},
        "spec": {"containers": "three", "volumes": 7}
    });

    for (review, uid) in [
        (&deployment, "u-deploy"),
        (&update, "u-update"),
        (&delete, "u-delete"),
        (&binding, "u-binding"),
        (&ephemeral, "u-ephemeral"),
        (&custom, "u-custom"),
    ] {
        let resp = mutate(&inj, review).await.response();
        assert_eq!(resp["uid"], uid);
        assert_eq!(resp["allowed"], true, "{uid}");
        assert!(resp.get("patch").is_none(), "{uid}");
    }
    assert_eq!(inj.metrics().reviews(ReviewOutcome::Skipped), 6);
}

#[tokio::test]
async fn excluded_namespaces_and_pods_without_opt_in_get_no_patch() {
    let inj = injector();
    let cases = [
        review("u1", "kube-system", "CREATE", pod(opted_in("api"))),
        review("u2", "kube-public", "CREATE", pod(opted_in("api"))),
        review("u3", "sidekey", "CREATE", pod(opted_in("api"))),
        review("u4", "team-a", "CREATE", pod(json!({}))),
        review(
            "u5",
            "team-a",
            "CREATE",
            pod(json!({"sidekey.io/inject": "false", "sidekey.io/services": "api"})),
        ),
        review(
            "u6",
            "team-a",
            "CREATE",
            pod(json!({"sidekey.io/inject": "yes", "sidekey.io/services": "api"})),
        ),
    ];
    for r in &cases {
        let resp = mutate(&inj, r).await.response();
        assert_eq!(resp["allowed"], true, "{r}");
        assert!(resp.get("patch").is_none(), "{}", r["request"]["uid"]);
    }
    assert_eq!(inj.metrics().reviews(ReviewOutcome::Skipped), 6);
    assert_eq!(inj.metrics().reviews(ReviewOutcome::Injected), 0);
    let records = audit_records(&inj);
    assert_eq!(records.len(), 6);
    assert!(records
        .iter()
        .all(|r| r["outcome"] == "skipped" && r["event"] == "review"));
    assert!(
        records[2]["reason"]
            .as_str()
            .unwrap()
            .contains("own namespace"),
        "{}",
        records[2]
    );
}

#[tokio::test]
async fn an_opted_in_pod_is_injected_and_a_second_review_is_not() {
    let inj = injector();
    let review1 = injectable("uid-1");
    let resp = mutate(&inj, &review1).await.response();
    assert_eq!(resp["uid"], "uid-1");
    assert_eq!(resp["allowed"], true);
    let patch = patch_of(&resp).expect("a patch");
    let patched = sidekey_patch::apply(&review1["request"]["object"], &patch).unwrap();
    let init = patched["spec"]["initContainers"]
        .as_array()
        .expect("init containers");
    assert_eq!(init[0]["name"], sidekey_patch::CONTAINER_INSTALL);
    assert_eq!(
        patched["metadata"]["annotations"]["sidekey.io/injected"],
        "true"
    );

    // Reinvocation: the patched pod is reviewed again.
    let review2 = review("uid-2", "team-a", "CREATE", patched);
    let resp = mutate(&inj, &review2).await.response();
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());

    let m = inj.metrics();
    assert_eq!(m.reviews(ReviewOutcome::Injected), 1);
    assert_eq!(m.reviews(ReviewOutcome::Skipped), 1);
    assert_eq!(m.injections("team-a"), 1);

    let records = audit_records(&inj);
    assert_eq!(records.len(), 2);
    let r = &records[0];
    assert_eq!(r["component"], "injector");
    assert_eq!(r["event"], "review");
    assert_eq!(r["outcome"], "success");
    assert_eq!(r["namespace"], "team-a");
    assert_eq!(r["environment"], "team-a");
    assert_eq!(r["pod"], "api-7d9f8b6c5-");
    assert_eq!(
        r["actor"],
        "system:serviceaccount:kube-system:replicaset-controller"
    );
    assert_eq!(r["secrets"], json!([{"service": "api", "key": "*"}]));
    assert_eq!(r["uid"], "uid-1");
    assert_eq!(records[1]["outcome"], "skipped");
    assert_eq!(records[1]["seq"], 2);
}

#[tokio::test]
async fn picks_are_audited_by_key_and_version() {
    let inj = injector();
    let annotations = json!({
        "sidekey.io/inject": "true",
        "sidekey.io/services": "api",
        "sidekey.io/secrets": "DB_URL=db/URL@3,TOKEN=auth/TOKEN"
    });
    let resp = mutate(&inj, &review("u", "team-b", "CREATE", pod(annotations)))
        .await
        .response();
    assert_eq!(resp["allowed"], true, "{resp}");
    let records = audit_records(&inj);
    assert_eq!(
        records[0]["secrets"],
        json!([
            {"service": "api", "key": "*"},
            {"service": "db", "key": "URL", "version": 3},
            {"service": "auth", "key": "TOKEN"}
        ])
    );
}

#[tokio::test]
async fn migration_allowances_reach_the_agent_and_the_audit_record() {
    let config = Config::from_yaml(
        "environments:\n  - namespaces: legacy\n    allowLegacyValues: true\n    allowLoaderEnv: [NODE_OPTIONS]\n",
    )
    .unwrap()
    .with_injector_namespace("sidekey");
    let inj = Injector::new(
        config,
        sidekey_injector::AuditSink::memory(),
        None,
        Limits::default(),
    );
    for (uid, namespace) in [("u-legacy", "legacy"), ("u-plain", "team-a")] {
        let resp = mutate(
            &inj,
            &review(uid, namespace, "CREATE", pod(opted_in("api"))),
        )
        .await
        .response();
        assert_eq!(resp["allowed"], true, "{resp}");
        let patched =
            sidekey_patch::apply(&pod(opted_in("api")), &patch_of(&resp).unwrap()).unwrap();
        let env = patched["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone();
        let value = |n: &str| env.iter().find(|e| e["name"] == n).unwrap()["value"].clone();
        let legacy = namespace == "legacy";
        assert_eq!(
            value("SIDEKEY_ALLOW_LEGACY"),
            if legacy { "true" } else { "false" }
        );
        assert_eq!(
            value("SIDEKEY_ALLOW_LOADER_ENV"),
            if legacy { "NODE_OPTIONS" } else { "" }
        );
    }
    let records = audit_records(&inj);
    assert_eq!(records[0]["allow_legacy"], true);
    assert_eq!(records[0]["allow_loader_env"], json!(["NODE_OPTIONS"]));
    assert!(records[1].get("allow_legacy").is_none(), "{}", records[1]);
    assert!(
        records[1].get("allow_loader_env").is_none(),
        "{}",
        records[1]
    );
}

#[tokio::test]
async fn bad_annotations_are_denied_with_403_naming_the_annotation() {
    let inj = injector();
    let cases = [
        (
            "sidekey.io/services",
            json!({"sidekey.io/inject": "true", "sidekey.io/services": "../prod/api"}),
        ),
        (
            "sidekey.io/secrets",
            json!({"sidekey.io/inject": "true", "sidekey.io/secrets": "X=/sidekey/prod/api/KEY"}),
        ),
        (
            "sidekey.io/delivery",
            json!({"sidekey.io/inject": "true", "sidekey.io/services": "api", "sidekey.io/delivery": "smoke-signals"}),
        ),
    ];
    for (annotation, annotations) in cases {
        let resp = mutate(&inj, &review("u", "team-a", "CREATE", pod(annotations)))
            .await
            .response();
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 403);
        assert_eq!(resp["status"]["reason"], "Forbidden");
        let message = resp["status"]["message"].as_str().unwrap();
        assert!(message.contains(annotation), "{annotation}: {message}");
        assert!(resp.get("patch").is_none());
    }
    // A container without a command and no sidekey.io/command.
    let mut no_command = pod(opted_in("api"));
    no_command["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let resp = mutate(&inj, &review("u", "team-a", "CREATE", no_command))
        .await
        .response();
    assert_eq!(resp["allowed"], false);
    assert!(resp["status"]["message"]
        .as_str()
        .unwrap()
        .contains("sidekey.io/command"));

    assert_eq!(inj.metrics().reviews(ReviewOutcome::Denied), 4);
    assert_eq!(inj.metrics().denials("team-a"), 4);
    let records = audit_records(&inj);
    assert!(records
        .iter()
        .all(|r| r["outcome"] == "denied" && r["environment"] == "team-a"));
    assert!(records[0]["reason"]
        .as_str()
        .unwrap()
        .contains("sidekey.io/services"));
}

#[tokio::test]
async fn warnings_reach_the_answer() {
    let inj = injector();
    // A container with no known user and a secret volume (no fsGroup can
    // be added): the planner warns about file ownership.
    let mut p = pod(
        json!({"sidekey.io/inject": "true", "sidekey.io/services": "api", "sidekey.io/delivery": "files"}),
    );
    p["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    p["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "tls", "secret": {"secretName": "tls"}}));
    let resp = mutate(&inj, &review("u", "team-a", "CREATE", p))
        .await
        .response();
    assert_eq!(resp["allowed"], true, "{resp}");
    let warnings = resp["warnings"].as_array().expect("warnings");
    assert!(!warnings.is_empty());
}

#[tokio::test]
async fn metrics_text_follows_the_counters() {
    let inj = injector();
    mutate(&inj, &injectable("a")).await;
    mutate(&inj, &injectable("b")).await;
    mutate(
        &inj,
        &review("c", "kube-system", "CREATE", pod(opted_in("api"))),
    )
    .await;
    call(&inj, "POST", "/mutate", "nope").await;
    let text = call(&inj, "GET", "/metrics", "").await.text();
    for line in [
        "sidekey_injector_reviews_total{outcome=\"injected\"} 2",
        "sidekey_injector_reviews_total{outcome=\"skipped\"} 1",
        "sidekey_injector_reviews_total{outcome=\"invalid\"} 1",
        "sidekey_injector_reviews_total{outcome=\"denied\"} 0",
        "sidekey_injector_injections_total{namespace=\"team-a\"} 2",
        "sidekey_injector_review_duration_seconds_count{outcome=\"injected\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn tower_service_interface() {
    use tower_service::Service;
    let mut inj = injector();
    std::future::poll_fn(|cx| {
        Service::<hyper::Request<http_body_util::Full<bytes::Bytes>>>::poll_ready(&mut inj, cx)
    })
    .await
    .unwrap();
    let req = hyper::Request::get("/healthz")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = inj.call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

mod against_kube_core {
    //! The injector reads a review's envelope through its own borrowed
    //! view; kube-core's typed `AdmissionReview<Pod>` is an independent
    //! reading of the same body. On generated reviews both say the same:
    //! uid, operation, namespace, name, user, dry run, and whether it is a
    //! pod CREATE (planned) or not (skipped untouched).

    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube_core::admission::{AdmissionRequest, AdmissionReview};
    use proptest::prelude::*;

    fn kinds() -> impl Strategy<Value = (&'static str, &'static str, &'static str)> {
        prop::sample::select(vec![
            ("", "v1", "Pod"),
            ("", "v1", "Pod"),
            ("", "v1", "Pod"),
            ("apps", "v1", "Deployment"),
            ("", "v1", "ConfigMap"),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn the_injectors_reading_of_a_review_is_kube_cores(
            uid in "[a-f0-9-]{1,36}",
            namespace in "ns-[a-z0-9]{1,12}",
            operation in prop::sample::select(vec!["CREATE", "CREATE", "UPDATE", "DELETE", "CONNECT"]),
            name in prop::option::of("[a-z0-9-]{1,20}"),
            user in prop::option::of("[a-z:.-]{1,30}"),
            dry_run in prop::option::of(any::<bool>()),
            (group, version, kind) in kinds(),
            sub_resource in prop::option::of(prop::sample::select(vec!["", "status", "ephemeralcontainers"])),
        ) {
            let mut body = review(&uid, &namespace, operation, pod(opted_in("api")));
            let request = &mut body["request"];
            request["kind"] = json!({"group": group, "version": version, "kind": kind});
            if let Some(n) = &name {
                request["name"] = json!(n);
            }
            match &user {
                Some(u) => request["userInfo"]["username"] = json!(u),
                None => {
                    request["userInfo"].as_object_mut().unwrap().remove("username");
                }
            }
            match dry_run {
                Some(d) => request["dryRun"] = json!(d),
                None => {
                    request.as_object_mut().unwrap().remove("dryRun");
                }
            }
            if let Some(sub) = sub_resource {
                request["subResource"] = json!(sub);
            }
            let text = serde_json::to_vec(&body).unwrap();

            let kube: AdmissionReview<Pod> = serde_json::from_slice(&text).unwrap();
            let kube: AdmissionRequest<Pod> = kube.try_into().unwrap();
            let ours = sidekey_injector::review(&text, &Config::default_for(Some("sidekey")));

            prop_assert_eq!(ours.uid(), Some(kube.uid.as_str()));
            let operation_text = serde_json::to_value(&kube.operation).unwrap();
            prop_assert_eq!(ours.operation(), operation_text.as_str());
            prop_assert_eq!(ours.namespace(), kube.namespace.as_deref());
            let actor = ours.event.as_ref().and_then(|e| e.actor.as_deref());
            prop_assert_eq!(actor, kube.user_info.username.as_deref());
            let dry = ours
                .event
                .as_ref()
                .and_then(|e| e.extra.get("dry_run"))
                .and_then(Value::as_bool);
            prop_assert_eq!(dry.unwrap_or(false), kube.dry_run);
            // The answer carries the uid kube-core read.
            let answer: Value = serde_json::from_slice(&ours.body).unwrap();
            prop_assert_eq!(answer["response"]["uid"].as_str(), Some(kube.uid.as_str()));

            let planned = kube.kind.group.is_empty()
                && kube.kind.version == "v1"
                && kube.kind.kind == "Pod"
                && kube.sub_resource.as_deref().unwrap_or("").is_empty()
                && operation_text == "CREATE";
            if planned {
                prop_assert_eq!(ours.outcome, ReviewOutcome::Injected);
                // The name: the request's, else the object's generateName.
                let object = kube.object.as_ref().unwrap();
                let expected = Some(kube.name.as_str())
                    .filter(|n| !n.is_empty())
                    .or(object.metadata.generate_name.as_deref());
                prop_assert_eq!(ours.name(), expected);
            } else {
                prop_assert_eq!(ours.outcome, ReviewOutcome::Skipped);
                prop_assert_eq!(
                    ours.name(),
                    Some(kube.name.as_str()).filter(|n| !n.is_empty())
                );
            }
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            prop_oneof![
                Just("AdmissionReview"),
                Just("admission.k8s.io/v1"),
                Just("Pod"),
                Just("v1"),
                Just("CREATE"),
                Just("true"),
                Just("team-a"),
                Just("sidekey.io/inject")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("kind".to_owned()),
                        Just("apiVersion".to_owned()),
                        Just("request".to_owned()),
                        Just("uid".to_owned()),
                        Just("object".to_owned()),
                        Just("operation".to_owned()),
                        Just("namespace".to_owned()),
                        Just("metadata".to_owned()),
                        Just("spec".to_owned()),
                        Just("annotations".to_owned()),
                        Just("containers".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn check(answer: &Answer) {
        match answer.status.as_u16() {
            200 => {
                let v = answer.json();
                assert_eq!(v["kind"], "AdmissionReview");
                assert!(v["response"]["allowed"].is_boolean());
            }
            400 | 413 => assert!(answer.content_type.starts_with("text/plain")),
            other => panic!("unexpected status {other}: {}", answer.text()),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_body_gets_a_well_formed_answer(body in arb_json()) {
            let inj = injector();
            let answer = runtime().block_on(mutate(&inj, &body));
            check(&answer);
        }

        #[test]
        fn any_object_inside_a_valid_review_gets_a_well_formed_answer(object in arb_json()) {
            let inj = injector();
            let answer = runtime().block_on(mutate(&inj, &review("u", "team-a", "CREATE", object)));
            check(&answer);
        }

        #[test]
        fn any_annotation_strings_get_a_well_formed_answer(
            services in ".{0,40}", secrets in ".{0,60}", delivery in ".{0,12}", containers in ".{0,20}"
        ) {
            let inj = injector();
            let annotations = json!({
                "sidekey.io/inject": "true",
                "sidekey.io/services": services,
                "sidekey.io/secrets": secrets,
                "sidekey.io/delivery": delivery,
                "sidekey.io/containers": containers,
            });
            let answer = runtime().block_on(mutate(&inj, &review("u", "team-a", "CREATE", pod(annotations))));
            check(&answer);
            let r = answer.response();
            if r["allowed"] == false {
                prop_assert_eq!(&r["status"]["code"], &json!(403));
            }
        }

        #[test]
        fn any_bytes_get_a_well_formed_answer(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let inj = injector();
            let answer = runtime().block_on(call(&inj, "POST", "/mutate", body));
            check(&answer);
        }
    }
}
