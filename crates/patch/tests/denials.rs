//! Denials, skips and warnings: a table of bad pods, each asserting the
//! annotation named and a distinctive part of the message.

mod support;

use rstest::rstest;
use serde_json::{json, Value};
use sidekey_patch::{plan, Config, Decision, Denial, PodView, Request};
use support::{fixtures, INJECTOR_NS};

const REMOVE: &str = "\u{0}remove";

fn base_pod() -> Value {
    let text = std::fs::read_to_string(fixtures().join("env-basic/review.json")).unwrap();
    let review: Value = serde_json::from_str(&text).unwrap();
    review["request"]["object"].clone()
}

fn config() -> Config {
    Config::from_yaml(
        r#"
environments:
  - namespaces: "long-*"
    environment: "{namespace}-{namespace}-{namespace}-{namespace}"
"#,
    )
    .unwrap()
    .with_injector_namespace(INJECTOR_NS)
}

fn decide(pod: &Value, namespace: &str, config: &Config) -> Decision {
    let text = serde_json::to_string(pod).unwrap();
    plan(
        &PodView::from_json(&text).unwrap(),
        &Request {
            namespace,
            user: Some("system:serviceaccount:kube-system:replicaset-controller"),
        },
        config,
    )
}

fn with(annotations: &[(&str, &str)], mutate: fn(&mut Value)) -> Value {
    let mut pod = base_pod();
    for (k, v) in annotations {
        if *v == REMOVE {
            pod["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove(*k);
        } else {
            pod["metadata"]["annotations"][*k] = json!(v);
        }
    }
    mutate(&mut pod);
    pod
}

fn noop(_: &mut Value) {}

fn no_command(p: &mut Value) {
    p["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
}

fn files(p: &mut Value) {
    p["metadata"]["annotations"]["sidekey.io/delivery"] = json!("files");
}

fn denials(d: Decision) -> Vec<Denial> {
    match d {
        Decision::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[rstest]
// Pods never choose an environment, prefix, store or key.
#[case::environment(&[("sidekey.io/environment", "production")], noop, Some("sidekey.io/environment"), "cannot choose its environment")]
#[case::inherit(&[("sidekey.io/inherit", "production")], noop, Some("sidekey.io/inherit"), "cannot choose base environments")]
#[case::prefix(&[("sidekey.io/prefix", "other")], noop, Some("sidekey.io/prefix"), "cannot choose the parameter prefix")]
#[case::store(&[("sidekey.io/store", "file:/tmp/x")], noop, Some("sidekey.io/store"), "cannot choose the store")]
#[case::kms_key(&[("sidekey.io/kms-key", "alias/other")], noop, Some("sidekey.io/kms-key"), "cannot choose the KMS key")]
#[case::unknown_typo(&[("sidekey.io/servics", "api")], noop, Some("sidekey.io/servics"), "did you mean sidekey.io/services?")]
#[case::unknown(&[("sidekey.io/x-debug", "1")], noop, Some("sidekey.io/x-debug"), "refuses unknown sidekey.io/ annotations")]
// Picks that leave the environment.
#[case::pick_absolute(&[("sidekey.io/secrets", "DB=/sidekey/prod/db/PASSWORD")], noop, Some("sidekey.io/secrets"), "absolute parameter paths")]
#[case::pick_dotdot(&[("sidekey.io/secrets", "DB=../prod/PASSWORD")], noop, Some("sidekey.io/secrets"), "\"..\" and \".\" segments")]
#[case::pick_other_env(&[("sidekey.io/secrets", "DB=prod/db/PASSWORD")], noop, Some("sidekey.io/secrets"), "another environment or prefix cannot be named")]
#[case::pick_percent(&[("sidekey.io/secrets", "DB=db%2F..%2Fprod/PASSWORD")], noop, Some("sidekey.io/secrets"), "percent-encoding")]
#[case::pick_backslash(&[("sidekey.io/secrets", "DB=db\\PASSWORD")], noop, Some("sidekey.io/secrets"), "backslash")]
#[case::pick_lookalike(&[("sidekey.io/secrets", "DB=db/PASSW\u{FF2F}RD")], noop, Some("sidekey.io/secrets"), "Unicode look-alikes are refused")]
#[case::service_upper(&[("sidekey.io/services", "Api")], noop, Some("sidekey.io/services"), "upper-case")]
#[case::service_slash(&[("sidekey.io/services", "api/../prod")], noop, Some("sidekey.io/services"), "a service is one path segment")]
#[case::nothing_requested(&[("sidekey.io/services", REMOVE)], noop, Some("sidekey.io/services"), "both empty or absent")]
#[case::both_empty(&[("sidekey.io/services", " "), ("sidekey.io/secrets", "")], noop, Some("sidekey.io/services"), "both empty or absent")]
// Refresh.
#[case::refresh_env(&[("sidekey.io/refresh", "5m")], noop, Some("sidekey.io/refresh"), "refresh applies to files only")]
#[case::refresh_short(&[("sidekey.io/refresh", "5s")], files, Some("sidekey.io/refresh"), "below the minimum of 10s")]
#[case::refresh_garbage(&[("sidekey.io/refresh", "soon")], files, Some("sidekey.io/refresh"), "is not a duration")]
// files-path.
#[case::path_relative(&[("sidekey.io/files-path", "run/secrets")], files, Some("sidekey.io/files-path"), "it is not absolute")]
#[case::path_dotdot(&[("sidekey.io/files-path", "/run/../etc")], files, Some("sidekey.io/files-path"), "\"..\" or \".\" segment")]
#[case::path_root(&[("sidekey.io/files-path", "/")], files, Some("sidekey.io/files-path"), "root directory")]
#[case::path_double_slash(&[("sidekey.io/files-path", "/run//secrets")], files, Some("sidekey.io/files-path"), "contains \"//\"")]
#[case::path_trailing(&[("sidekey.io/files-path", "/run/secrets/")], files, Some("sidekey.io/files-path"), "ends with '/'")]
#[case::path_agent(&[("sidekey.io/files-path", "/sidekey/files")], files, Some("sidekey.io/files-path"), "under /sidekey")]
#[case::path_collides(&[("sidekey.io/files-path", "/var/run/secrets/kubernetes.io")], files, Some("sidekey.io/files-path"), "already mounts volume \"kube-api-access-x7k2p\"")]
#[case::path_same(&[("sidekey.io/files-path", "/var/run/secrets/kubernetes.io/serviceaccount")], files, Some("sidekey.io/files-path"), "(at the same path)")]
// Enumerations.
#[case::files_format(&[("sidekey.io/files-format", "yaml")], noop, Some("sidekey.io/files-format"), "must be one of per-key, dotenv, json")]
#[case::delivery(&[("sidekey.io/delivery", "Files")], noop, Some("sidekey.io/delivery"), "must be one of env, files, both")]
#[case::on_missing(&[("sidekey.io/on-missing", "ignore")], noop, Some("sidekey.io/on-missing"), "must be one of fail, skip")]
// Containers.
#[case::containers_unknown(&[("sidekey.io/containers", "wrker")], noop, Some("sidekey.io/containers"), "\"wrker\" is not a container of this pod; the pod's app containers are api")]
#[case::containers_empty(&[("sidekey.io/containers", "")], noop, Some("sidekey.io/containers"), "names no container")]
#[case::containers_twice(&[("sidekey.io/containers", "api,api")], noop, Some("sidekey.io/containers"), "listed twice")]
#[case::containers_init(&[("sidekey.io/containers", "migrate")], |p: &mut Value| p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]), Some("sidekey.io/containers"), "is an init container")]
// Commands.
#[case::command_not_json(&[("sidekey.io/command", "/app/server")], no_command, Some("sidekey.io/command"), "must be a JSON array of strings")]
#[case::command_empty_program(&[("sidekey.io/command", "[\"\", \"x\"]")], no_command, Some("sidekey.io/command"), "its first element (the program) is empty")]
#[case::command_numbers(&[("sidekey.io/command", "[1, 2]")], no_command, Some("sidekey.io/command"), "must be a JSON array of strings")]
#[case::no_command(&[], no_command, Some("sidekey.io/command"), "container \"api\" has no command in the pod spec: sidekey starts the app through its agent (/sidekey/bin/sidekey-agent exec -- COMMAND) and must know what the image runs: the image's ENTRYPOINT followed by its CMD (unless the container sets args)")]
// Names the injector owns.
#[case::volume_taken(&[], |p: &mut Value| p["spec"]["volumes"].as_array_mut().unwrap().push(json!({"name": "sidekey-bin", "emptyDir": {}})), None, "already has a volume named sidekey-bin")]
#[case::container_taken(&[], |p: &mut Value| p["spec"]["initContainers"] = json!([{"name": "sidekey-install", "image": "x"}]), None, "already has a container named sidekey-install")]
#[case::env_override(&[], |p: &mut Value| p["spec"]["containers"][0]["env"].as_array_mut().unwrap().push(json!({"name": "SIDEKEY_ENVIRONMENT", "value": "production"})), None, "sets SIDEKEY_ENVIRONMENT in its env")]
#[case::bin_mount_taken(&[], |p: &mut Value| p["spec"]["containers"][0]["volumeMounts"].as_array_mut().unwrap().push(json!({"name": "kube-api-access-x7k2p", "mountPath": "/sidekey"})), None, "collides with the agent's directory /sidekey/bin")]
fn denied(
    #[case] annotations: &[(&str, &str)],
    #[case] mutate: fn(&mut Value),
    #[case] annotation: Option<&str>,
    #[case] fragment: &str,
) {
    let pod = with(annotations, mutate);
    let all = denials(decide(&pod, "shop", &config()));
    assert!(
        all.iter()
            .any(|d| d.annotation.as_deref() == annotation && d.message.contains(fragment)),
        "no denial for {annotation:?} containing {fragment:?} in {all:#?}"
    );
    for d in &all {
        assert!(!d.message.contains('\n'), "multi-line message: {d}");
        assert_eq!(d.to_string(), d.message);
    }
}

#[test]
fn namespace_mapped_to_an_invalid_environment_is_denied() {
    let ns = "long-abcdefghijklmnopqrst";
    let all = denials(decide(&base_pod(), ns, &config()));
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].annotation, None);
    assert!(
        all[0].message.contains("not a valid environment"),
        "{}",
        all[0]
    );
    assert!(all[0].message.contains(ns));
}

#[test]
fn every_problem_is_reported() {
    let pod = with(
        &[
            ("sidekey.io/environment", "prod"),
            ("sidekey.io/services", "Api"),
            ("sidekey.io/delivery", "file"),
            ("sidekey.io/refresh", "1s"),
            ("sidekey.io/command", "x"),
        ],
        noop,
    );
    let all = denials(decide(&pod, "shop", &config()));
    let named: Vec<_> = all.iter().filter_map(|d| d.annotation.as_deref()).collect();
    for a in [
        "sidekey.io/environment",
        "sidekey.io/services",
        "sidekey.io/delivery",
        "sidekey.io/refresh",
        "sidekey.io/command",
    ] {
        assert!(named.contains(&a), "{a} missing from {all:#?}");
    }
}

fn skip_reason(d: Decision) -> String {
    match d {
        Decision::Skip { reason } => reason,
        other => panic!("expected skip, got {other:?}"),
    }
}

#[rstest]
#[case::absent(REMOVE, "shop", "is absent")]
#[case::capital(" True", "shop", "rather than \"true\"")]
#[case::yes("yes", "shop", "rather than \"true\"")]
#[case::empty("", "shop", "rather than \"true\"")]
#[case::kube_system("true", "kube-system", "excluded")]
#[case::kube_public("true", "kube-public", "excluded")]
#[case::own_namespace("true", INJECTOR_NS, "injector's own namespace")]
fn skipped(#[case] inject: &str, #[case] namespace: &str, #[case] fragment: &str) {
    // Even a pod with bad annotations is only skipped when not in scope.
    let pod = with(
        &[
            ("sidekey.io/inject", inject),
            ("sidekey.io/environment", "production"),
        ],
        noop,
    );
    let reason = skip_reason(decide(&pod, namespace, &config()));
    assert!(reason.contains(fragment), "{reason}");
}

#[test]
fn excluded_namespaces_are_globs_and_replace_the_defaults() {
    let config = Config::from_yaml("excludedNamespaces: [\"team-*\"]")
        .unwrap()
        .with_injector_namespace("sidekey");
    let pod = base_pod();
    assert!(skip_reason(decide(&pod, "team-a", &config)).contains("team-*"));
    assert!(skip_reason(decide(&pod, "sidekey", &config)).contains("own namespace"));
    assert!(matches!(
        decide(&pod, "kube-system", &config),
        Decision::Inject(_)
    ));
}

#[test]
fn already_injected_is_skipped() {
    let text = std::fs::read_to_string(fixtures().join("already-injected/review.json")).unwrap();
    let review: Value = serde_json::from_str(&text).unwrap();
    // The fixture's agent image is the golden cases' one.
    let golden = Config::default_for(Some(INJECTOR_NS))
        .with_agent_image(support::TEST_IMAGE)
        .unwrap();
    let reason = skip_reason(decide(&review["request"]["object"], "shop", &golden));
    assert!(reason.contains("already injected"), "{reason}");
    // Another injector's image: the marker does not count.
    let all = denials(decide(&review["request"]["object"], "shop", &config()));
    assert!(
        all.iter()
            .any(|d| d.annotation.as_deref() == Some("sidekey.io/injected")
                && d.message.contains("runs another image")),
        "{all:#?}"
    );
}

fn warnings(pod: &Value) -> Vec<String> {
    match decide(pod, "shop", &config()) {
        Decision::Inject(p) => p.warnings,
        other => panic!("expected inject, got {other:?}"),
    }
}

#[test]
fn warnings_are_given() {
    let w = warnings(&with(&[("sidekey.io/on-missing", "skip")], noop));
    assert!(w.iter().any(|w| w.contains("on-missing is skip")), "{w:?}");

    let w = warnings(&with(&[], |p| {
        p["spec"]["securityContext"] = json!({"runAsUser": 0});
    }));
    assert!(w.iter().any(|w| w.contains("runs as root")), "{w:?}");

    // Files delivery without a known user: sidekey sets fsGroup, no
    // warning; with a secret volume it cannot, and says so.
    let w = warnings(&with(&[("sidekey.io/delivery", "files")], noop));
    assert!(w.is_empty(), "files delivery without a known user: {w:?}");
    let w = warnings(&with(&[("sidekey.io/delivery", "files")], |p| {
        p["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "tls", "secret": {"secretName": "tls"}}));
    }));
    assert!(
        w.iter()
            .any(|w| w.contains("no runAsUser") && w.contains("volume tls (secret) is not")),
        "files delivery without a known user, with a secret volume: {w:?}"
    );

    let w = warnings(&with(&[("sidekey.io/files-format", "json")], noop));
    assert!(w.iter().any(|w| w.contains("is ignored")), "{w:?}");

    let w = warnings(&with(&[("sidekey.io/command", "[\"/x\"]")], noop));
    assert!(
        w.iter()
            .any(|w| w.contains("sidekey.io/command is ignored")),
        "{w:?}"
    );
}

#[test]
fn root_app_user_never_makes_a_root_agent() {
    let pod = with(&[("sidekey.io/delivery", "both")], |p| {
        p["spec"]["securityContext"] = json!({"runAsUser": 0, "runAsGroup": 0});
    });
    let Decision::Inject(plan) = decide(&pod, "shop", &config()) else {
        panic!("expected inject")
    };
    let patch: Value = serde_json::from_str(plan.patch.as_str()).unwrap();
    let inits = patch
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["path"] == "/spec/initContainers")
        .unwrap();
    for c in inits["value"].as_array().unwrap() {
        assert_eq!(c["securityContext"]["runAsUser"], 65532, "{c}");
        assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    }
}
