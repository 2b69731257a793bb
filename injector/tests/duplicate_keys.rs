//! A review with a key given twice where the injector reads it is refused
//! with the key's name (Go's decoder, which wrote or will apply the object,
//! takes the last of a repeated key; serde the first): the envelope's keys
//! with HTTP 400, the pod's with a refusal that names the key and carries
//! the review's uid. The value repeated is never quoted.

mod common;

use common::*;
use hyper::StatusCode;

const SECRET: &str = "s3cr3t-dup-marker";

/// The review of `injectable("dup-1")` as text, with `from` replaced by `to`.
fn edited(from: &str, to: &str) -> String {
    let text = serde_json::to_string(&injectable("dup-1")).unwrap();
    assert!(text.contains(from), "{from}");
    let out = text.replacen(from, to, 1);
    // Still JSON: only the repeated key is wrong.
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    out
}

/// A review whose `request` is given twice, the first with another uid.
fn twice_the_request() -> String {
    let review = injectable("dup-1");
    let mut first = review["request"].clone();
    first["uid"] = SECRET.into();
    format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{first},"request":{}}}"#,
        review["request"]
    )
}

#[tokio::test]
async fn a_repeated_envelope_key_is_http_400_naming_it() {
    let inj = injector();
    for (body, key) in [
        (twice_the_request(), "request"),
        (
            edited(
                "\"uid\":\"dup-1\"",
                &format!("\"uid\":\"dup-1\",\"uid\":\"{SECRET}\""),
            ),
            "uid",
        ),
        (
            edited(
                "\"operation\":\"CREATE\"",
                &format!("\"operation\":\"CREATE\",\"operation\":\"{SECRET}\""),
            ),
            "operation",
        ),
    ] {
        let a = call(&inj, "POST", "/mutate", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
        let text = a.text();
        assert!(text.contains(&format!("duplicate field `{key}`")), "{text}");
        assert!(text.contains("a key may appear once"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
    }
    assert!(inj.audit().lines().is_empty());
}

#[tokio::test]
async fn a_repeated_pod_key_is_refused_naming_it() {
    let inj = injector();
    for (body, what) in [
        (
            edited(
                "\"sidekey.io/inject\":\"true\"",
                &format!("\"sidekey.io/inject\":\"true\",\"sidekey.io/inject\":\"{SECRET}\""),
            ),
            "a key appears twice in `annotations`",
        ),
        (
            edited(
                "\"command\":[",
                &format!("\"command\":[\"/{SECRET}\"],\"command\":["),
            ),
            "duplicate field `command`",
        ),
        (
            edited(
                "\"metadata\":{",
                &format!("\"metadata\":{{\"name\":\"{SECRET}\"}},\"metadata\":{{"),
            ),
            "duplicate field `metadata`",
        ),
    ] {
        let a = call(&inj, "POST", "/mutate", body).await;
        let r = a.response();
        assert_eq!(r["uid"], "dup-1");
        assert_eq!(r["allowed"], false, "{r}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{message}");
        assert!(!a.text().contains(SECRET), "{}", a.text());
    }
    let records = audit_records(&inj);
    assert_eq!(records.len(), 3);
    assert!(!inj.audit().lines().concat().contains(SECRET));
}
