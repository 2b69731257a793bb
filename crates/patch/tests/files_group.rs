//! Files delivery: the secret files are readable by every target. The
//! pod's fsGroup is passed to the agent (`--group`, files 0440); without
//! one, when the app's user is not known to be the agent's, the injector
//! sets fsGroup 65532 if every volume is one the kubelet makes per pod,
//! and warns (changing nothing) when a volume makes it unsafe.

mod support;

use serde_json::{json, Value};
use sidekey_patch::{
    apply, plan, Config, Decision, PodView, Request, CONTAINER_INIT, CONTAINER_SIDECAR, FILES_GROUP,
};
use support::{fixtures, kubernetes_validate, INJECTOR_NS};

fn base_pod() -> Value {
    let text = std::fs::read_to_string(fixtures().join("env-basic/review.json")).unwrap();
    let review: Value = serde_json::from_str(&text).unwrap();
    let mut pod = review["request"]["object"].clone();
    pod["metadata"]["annotations"]["sidekey.io/delivery"] = json!("files");
    pod
}

fn decide(pod: &Value) -> Decision {
    let text = serde_json::to_string(pod).unwrap();
    plan(
        &PodView::from_json(&text).unwrap(),
        &Request {
            namespace: "shop",
            user: None,
        },
        &Config::default_for(Some(INJECTOR_NS)),
    )
}

struct Outcome {
    pod: Value,
    warnings: Vec<String>,
}

fn inject(pod: &Value) -> Outcome {
    match decide(pod) {
        Decision::Inject(p) => Outcome {
            pod: apply(pod, &p.patch.operations().unwrap()).unwrap(),
            warnings: p.warnings,
        },
        other => panic!("expected an injection, got {other:?}"),
    }
}

fn agent(pod: &Value) -> &Value {
    pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CONTAINER_INIT || c["name"] == CONTAINER_SIDECAR)
        .unwrap()
}

/// The agent's `--group`, if any.
fn group_arg(pod: &Value) -> Option<String> {
    let cmd: Vec<&str> = agent(pod)["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let i = cmd.iter().position(|a| *a == "--group")?;
    assert_eq!(i, cmd.len() - 2, "--group is last: {cmd:?}");
    Some(cmd[i + 1].to_owned())
}

fn second_container(pod: &mut Value, security: Value) {
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "worker", "image": "registry.example.com/shop/worker:2",
            "command": ["/worker"], "securityContext": security
        }));
}

fn volume(pod: &mut Value, v: Value) {
    pod["spec"]["volumes"].as_array_mut().unwrap().push(v);
}

#[test]
fn an_unknown_app_user_gets_an_fs_group() {
    // The fixture has `securityContext: {}` and one projected volume.
    let out = inject(&base_pod());
    assert_eq!(
        out.pod["spec"]["securityContext"],
        json!({"fsGroup": FILES_GROUP})
    );
    assert_eq!(group_arg(&out.pod).as_deref(), Some("65532"));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    // The agent keeps the image's user (runAsNonRoot).
    assert_eq!(agent(&out.pod)["securityContext"]["runAsUser"], Value::Null);

    // No securityContext at all; per-pod volumes of every safe kind.
    let mut pod = base_pod();
    pod["spec"]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    volume(
        &mut pod,
        json!({"name": "cfg", "configMap": {"name": "cfg"}}),
    );
    volume(
        &mut pod,
        json!({"name": "meta", "downwardAPI": {"items": []}}),
    );
    volume(&mut pod, json!({"name": "scratch", "emptyDir": {}}));
    let out = inject(&pod);
    assert_eq!(
        out.pod["spec"]["securityContext"],
        json!({"fsGroup": 65532})
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    kubernetes_validate("files-group", &[("unknown-user".into(), out.pod)]).unwrap();
}

#[test]
fn the_pods_fs_group_is_passed_to_the_agent() {
    let mut pod = base_pod();
    pod["spec"]["securityContext"] = json!({"fsGroup": 2000});
    volume(
        &mut pod,
        json!({"name": "data", "persistentVolumeClaim": {"claimName": "d"}}),
    );
    let out = inject(&pod);
    assert_eq!(out.pod["spec"]["securityContext"], json!({"fsGroup": 2000}));
    assert_eq!(group_arg(&out.pod).as_deref(), Some("2000"));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn one_known_user_needs_no_group() {
    for (pod_sc, container_sc) in [
        (json!({"runAsUser": 1000}), Value::Null),
        (json!({}), json!({"runAsUser": 1000})),
    ] {
        let mut pod = base_pod();
        pod["spec"]["securityContext"] = pod_sc.clone();
        if !container_sc.is_null() {
            pod["spec"]["containers"][0]["securityContext"] = container_sc.clone();
        }
        volume(
            &mut pod,
            json!({"name": "tls", "secret": {"secretName": "tls"}}),
        );
        let out = inject(&pod);
        assert_eq!(out.pod["spec"]["securityContext"], pod_sc);
        assert_eq!(group_arg(&out.pod), None);
        assert_eq!(agent(&out.pod)["securityContext"]["runAsUser"], 1000);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }
}

#[test]
fn root_or_different_users_get_an_fs_group() {
    // A root app: the agent runs as 65532, the app shares the group.
    let mut pod = base_pod();
    pod["spec"]["securityContext"] = json!({"runAsUser": 0});
    let out = inject(&pod);
    assert_eq!(
        out.pod["spec"]["securityContext"],
        json!({"runAsUser": 0, "fsGroup": 65532})
    );
    assert_eq!(agent(&out.pod)["securityContext"]["runAsUser"], 65532);
    assert_eq!(group_arg(&out.pod).as_deref(), Some("65532"));

    // Two targets, two users: the second could not read the first's files.
    let mut pod = base_pod();
    pod["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1000});
    second_container(&mut pod, json!({"runAsUser": 1001}));
    let out = inject(&pod);
    assert_eq!(
        out.pod["spec"]["securityContext"],
        json!({"fsGroup": 65532})
    );
    assert_eq!(agent(&out.pod)["securityContext"]["runAsUser"], 1000);
    assert_eq!(group_arg(&out.pod).as_deref(), Some("65532"));
}

#[test]
fn volumes_fs_group_would_change_make_it_a_warning() {
    for (v, shown) in [
        (
            json!({"name": "tls", "secret": {"secretName": "tls"}}),
            "volume tls (secret)",
        ),
        (
            json!({"name": "data", "persistentVolumeClaim": {"claimName": "d"}}),
            "volume data (persistentVolumeClaim)",
        ),
        (
            json!({"name": "host", "hostPath": {"path": "/x"}}),
            "volume host (hostPath)",
        ),
        (
            json!({"name": "mixed", "projected": {"sources": [
                {"configMap": {"name": "c"}}, {"secret": {"name": "tls"}}
            ]}}),
            "volume mixed (projected, with a secret source)",
        ),
    ] {
        let mut pod = base_pod();
        volume(&mut pod, v);
        let out = inject(&pod);
        assert_eq!(out.pod["spec"]["securityContext"], json!({}), "{shown}");
        assert_eq!(group_arg(&out.pod), None, "{shown}");
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        let w = &out.warnings[0];
        assert!(
            w.contains(&format!("{shown} is not (fsGroup would change")),
            "{w}"
        );
        assert!(
            w.contains("the files will be owned by the agent image's user with mode 0400"),
            "{w}"
        );
    }
}

#[test]
fn env_delivery_never_sets_a_group() {
    let mut pod = base_pod();
    pod["metadata"]["annotations"]["sidekey.io/delivery"] = json!("env");
    let out = inject(&pod);
    assert_eq!(out.pod["spec"]["securityContext"], json!({}));
}

/// The injected pod comes back (reinvocation, or re-created from the
/// injected one): the added fsGroup and `--group` are what this injector
/// makes; a `--group` that does not match the pod's fsGroup is not.
#[test]
fn an_injected_pod_with_its_group_is_recognised() {
    for refresh in [false, true] {
        let mut pod = base_pod();
        if refresh {
            pod["metadata"]["annotations"]["sidekey.io/refresh"] = json!("5m");
        }
        let out = inject(&pod);
        match decide(&out.pod) {
            Decision::Skip { reason } => assert!(reason.contains("already injected"), "{reason}"),
            other => panic!("expected a skip, got {other:?}"),
        }
        let mut changed = out.pod.clone();
        changed["spec"]["securityContext"]["fsGroup"] = json!(1234);
        match decide(&changed) {
            Decision::Deny(d) => assert!(
                d.iter().any(|d| d
                    .message
                    .contains("runs another command than this injector")),
                "{d:?}"
            ),
            other => panic!("expected a denial, got {other:?}"),
        }
    }
}
