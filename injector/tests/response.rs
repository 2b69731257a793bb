//! Every answer the injector writes, read by kube-core's
//! `AdmissionReview<Pod>` (an independent reader of the same format): it
//! parses, says the same uid, verdict, status, patch and warnings, and
//! written back by kube-core it is the same JSON: no field of ours is
//! unknown to it or dropped by it. Two differences of shape are bridged
//! (kube-core's serde types are not the API server's Go types): the patch
//! is base64 text (Go's `[]byte`), kube-core reads an array of numbers;
//! an allowed answer has no `status`, kube-core requires one.

mod common;

use base64::Engine as _;
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube_core::admission::AdmissionReview;
use proptest::prelude::*;
use serde_json::{json, Value};
use sidekey_injector::ReviewOutcome;
use sidekey_patch::Config;

/// A review of each kind the injector answers with an AdmissionReview:
/// injected, skipped (not a CREATE), invalid (no namespace), denied (a
/// bad annotation).
fn body(case: usize, uid: &str) -> (Value, ReviewOutcome) {
    match case {
        0 => (injectable(uid), ReviewOutcome::Injected),
        1 => (
            review(uid, "team-a", "UPDATE", pod(opted_in("api"))),
            ReviewOutcome::Skipped,
        ),
        2 => {
            let mut r = injectable(uid);
            r["request"].as_object_mut().unwrap().remove("namespace");
            (r, ReviewOutcome::Invalid)
        }
        _ => (
            review(uid, "team-a", "CREATE", pod(opted_in("Not A Service!"))),
            ReviewOutcome::Denied,
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_answer_reads_the_same_through_kube_core(
        case in 0usize..4,
        uid in "[a-f0-9-]{1,36}|(?s).{0,12}",
    ) {
        let (review, outcome) = body(case, &uid);
        let text = serde_json::to_vec(&review).unwrap();
        let reviewed = sidekey_injector::review(&text, &Config::default_for(Some("sidekey")));
        prop_assert_eq!(reviewed.outcome, outcome);
        prop_assert!(reviewed.json);
        let ours: Value = serde_json::from_slice(&reviewed.body).unwrap();

        // kube-core's serde reads `patch` as an array of byte values; the
        // API server (and the injector) carry it as base64 text.
        let mut theirs_in = ours.clone();
        let patch = ours["response"]["patch"].as_str().map(|b64| {
            base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
        });
        if let Some(bytes) = &patch {
            theirs_in["response"]["patch"] = json!(bytes);
        }
        // kube-core's type also requires `status`, which an allowed answer
        // leaves out (the API server's Go type does not require it, nor
        // read it when allowed): given empty, as kube-core writes it.
        let allowed = ours["response"]["allowed"] == json!(true);
        if allowed {
            prop_assert!(ours["response"].get("status").is_none());
            theirs_in["response"]["status"] = json!({});
        }
        let kube: AdmissionReview<Pod> = serde_json::from_value(theirs_in.clone()).unwrap();
        prop_assert_eq!(kube.types.api_version.as_str(), "admission.k8s.io/v1");
        prop_assert_eq!(kube.types.kind.as_str(), "AdmissionReview");
        let response = kube.response.clone().unwrap();
        prop_assert_eq!(response.uid.as_str(), uid.as_str());
        prop_assert_eq!(
            response.allowed,
            matches!(outcome, ReviewOutcome::Injected | ReviewOutcome::Skipped)
        );
        prop_assert_eq!(response.patch.is_some(), outcome == ReviewOutcome::Injected);
        prop_assert_eq!(&response.patch, &patch);
        if let Some(p) = &response.patch {
            // The patch is a JSON Patch.
            let _: sidekey_patch::json_patch::Patch = serde_json::from_slice(p).unwrap();
        }
        match outcome {
            ReviewOutcome::Invalid => {
                prop_assert_eq!(response.result.code, 400);
                prop_assert_eq!(response.result.reason.as_str(), "BadRequest");
                prop_assert!(response.result.message.contains("namespace"), "{}", response.result.message);
            }
            ReviewOutcome::Denied => {
                prop_assert_eq!(response.result.code, 403);
                prop_assert_eq!(response.result.reason.as_str(), "Forbidden");
                prop_assert_eq!(Some(response.result.message.as_str()), reviewed.event.as_ref().and_then(|e| e.reason.as_deref()));
            }
            _ => prop_assert_eq!(response.result.code, 0),
        }
        let warnings = ours["response"].get("warnings").cloned();
        prop_assert_eq!(response.warnings.clone().map(|w| json!(w)), warnings);

        // Written back by kube-core: the same JSON.
        let back = serde_json::to_value(&kube).unwrap();
        prop_assert_eq!(back, theirs_in);
    }
}
