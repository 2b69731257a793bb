//! A pod author trying to switch the checks off or steer the agent: a
//! forged `sidekey.io/injected` marker, `SIDEKEY_*` variables from `env`
//! or `envFrom` in any container, mounts of the injector's volumes. And
//! what must keep working: a reinvocation after other webhooks and the API
//! server changed the injected pod.

mod support;

use rstest::rstest;
use serde_json::{json, Value};
use sidekey_patch::{apply, plan, Config, Decision, Denial, PodView, Request};
use support::{fixtures, INJECTOR_NS, TEST_IMAGE};

fn config() -> Config {
    Config::default_for(Some(INJECTOR_NS))
        .with_agent_image(TEST_IMAGE)
        .unwrap()
}

fn pod_of(case: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(case).join("review.json")).unwrap();
    let review: Value = serde_json::from_str(&text).unwrap();
    review["request"]["object"].clone()
}

fn decide_with(pod: &Value, config: &Config) -> Decision {
    let text = serde_json::to_string(pod).unwrap();
    plan(
        &PodView::from_json(&text).unwrap(),
        &Request {
            namespace: "shop",
            user: Some("alice"),
        },
        config,
    )
}

fn decide(pod: &Value) -> Decision {
    decide_with(pod, &config())
}

fn denials(d: Decision) -> Vec<Denial> {
    match d {
        Decision::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn injected_with(pod: &Value, config: &Config) -> Value {
    match decide_with(pod, config) {
        Decision::Inject(p) => apply(pod, &p.patch.operations().unwrap()).unwrap(),
        other => panic!("expected an injection, got {other:?}"),
    }
}

/// `case`'s pod as the injector patched it.
fn injected(case: &str) -> Value {
    injected_with(&pod_of(case), &config())
}

fn assert_skipped(pod: &Value) {
    match decide(pod) {
        Decision::Skip { reason } => assert!(reason.contains("already injected"), "{reason}"),
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn assert_denied(pod: &Value, needle: &str) {
    let all = denials(decide(pod));
    assert!(
        all.iter().any(|d| d.message.contains(needle)),
        "{needle:?} not in {all:#?}"
    );
}

fn assert_marker_denied(pod: &Value, needle: &str) {
    let all = denials(decide(pod));
    assert!(
        all.iter()
            .any(|d| d.annotation.as_deref() == Some("sidekey.io/injected")
                && d.message.contains("the marker counts only when")
                && d.message.contains(needle)),
        "{needle:?} not in {all:#?}"
    );
}

fn init<'a>(pod: &'a mut Value, name: &str) -> &'a mut Value {
    pod["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn env_of(c: &mut Value) -> &mut Vec<Value> {
    c["env"].as_array_mut().unwrap()
}

const CASES: [&str; 7] = [
    "env-basic",
    "env-two-containers-selection",
    "env-command-annotation",
    "files-per-key",
    "files-refresh-sidecar",
    "both",
    "pod-with-existing-init-containers-volumes-env-securitycontext",
];

#[test]
fn a_reinvocation_after_other_webhooks_and_the_api_server_is_skipped() {
    for case in CASES {
        let mut pod = injected(case);
        assert_skipped(&pod);
        let spec = &mut pod["spec"];
        // The IRSA webhook: credentials in every container, ours included.
        if spec["volumes"].is_null() {
            spec["volumes"] = json!([]);
        }
        spec["volumes"].as_array_mut().unwrap().push(
            json!({"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "token"}}]}}),
        );
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_array_mut().unwrap() {
                if c["env"].is_null() {
                    c["env"] = json!([]);
                }
                let env = env_of(c);
                // The API server drops empty values.
                for e in env.iter_mut() {
                    if e["value"] == "" {
                        e.as_object_mut().unwrap().remove("value");
                    }
                }
                env.push(
                    json!({"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/shop"}),
                );
                if c["volumeMounts"].is_null() {
                    c["volumeMounts"] = json!([]);
                }
                let mounts = c["volumeMounts"].as_array_mut().unwrap();
                mounts.push(json!({"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true}));
                c["terminationMessagePath"] = json!("/dev/termination-log");
            }
        }
        // A mesh adds its own container, with no sidekey part.
        spec["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "mesh-proxy", "image": "mesh:1", "args": ["proxy"]}));
        // Quantities as the API server writes them back.
        for v in spec["volumes"].as_array_mut().unwrap() {
            if v["name"] == "sidekey-secrets" {
                v["emptyDir"]["sizeLimit"] = json!("1024Ki");
            }
        }
        assert_skipped(&pod);
    }
}

#[test]
fn a_forged_marker_without_the_injectors_parts_is_denied() {
    let mut pod = pod_of("env-basic");
    pod["metadata"]["annotations"]["sidekey.io/injected"] = json!("true");
    assert_marker_denied(&pod, "the volume sidekey-bin is missing");
    assert_marker_denied(&pod, "the init container sidekey-install is missing");
    assert_marker_denied(&pod, "no app container has been injected");
}

/// The attack from the issue: the marker, an agent init container of the
/// author's own and their own SIDEKEY_ENVIRONMENT.
#[test]
fn a_forged_marker_with_the_authors_own_agent_and_environment_is_denied() {
    let mut pod = injected("files-per-key");
    let c = init(&mut pod, "sidekey-init");
    for e in env_of(c) {
        if e["name"] == "SIDEKEY_ENVIRONMENT" {
            e["value"] = json!("production");
        }
    }
    assert_marker_denied(
        &pod,
        "container \"sidekey-init\" has the agent setting SIDEKEY_ENVIRONMENT with another value",
    );
    // The same in env delivery, in the app container.
    let mut pod = injected("env-basic");
    for e in env_of(&mut pod["spec"]["containers"][0]) {
        if e["name"] == "SIDEKEY_ENVIRONMENT" {
            e["value"] = json!("production");
        }
    }
    assert_marker_denied(&pod, "SIDEKEY_ENVIRONMENT with another value");
}

#[rstest]
#[case::image("files-per-key", |p: &mut Value| init(p, "sidekey-init")["image"] = json!("evil/agent:1"), "runs another image")]
#[case::command("files-per-key", |p: &mut Value| init(p, "sidekey-init")["command"] = json!(["/bin/sh", "-c", "cat /x"]), "runs another command")]
#[case::install_command("env-basic", |p: &mut Value| init(p, "sidekey-install")["command"] = json!(["/sidekey-agent", "install", "/tmp"]), "runs another command")]
#[case::args("files-per-key", |p: &mut Value| init(p, "sidekey-init")["args"] = json!(["--format", "json"]), "has args")]
#[case::env_from("env-basic", |p: &mut Value| init(p, "sidekey-install")["envFrom"] = json!([{"configMapRef": {"name": "x"}}]), "has envFrom")]
#[case::ca_file("files-per-key", |p: &mut Value| {
    for e in env_of(init(p, "sidekey-init")) {
        if e["name"] == "SIDEKEY_CA_FILE" { e["value"] = json!("/tmp/evil-ca.pem"); }
    }
}, "SIDEKEY_CA_FILE with another value")]
#[case::setting_removed("files-per-key", |p: &mut Value| env_of(init(p, "sidekey-init")).retain(|e| e["name"] != "SIDEKEY_LOG"), "lacks the agent setting SIDEKEY_LOG")]
#[case::setting_twice("env-basic", |p: &mut Value| env_of(&mut p["spec"]["containers"][0]).push(json!({"name": "SIDEKEY_ENVIRONMENT", "value": "production"})), "sets the agent setting SIDEKEY_ENVIRONMENT more than once")]
#[case::unknown_setting("env-basic", |p: &mut Value| env_of(&mut p["spec"]["containers"][0]).push(json!({"name": "SIDEKEY_FUTURE", "value": "x"})), "sets SIDEKEY_FUTURE, which this injector does not set")]
#[case::install_settings("env-basic", |p: &mut Value| init(p, "sidekey-install")["env"] = json!([{"name": "SIDEKEY_LOG", "value": "trace"}]), "sets SIDEKEY_LOG, which this injector does not set")]
#[case::volume_size("env-basic", |p: &mut Value| {
    for v in p["spec"]["volumes"].as_array_mut().unwrap() {
        if v["name"] == "sidekey-bin" { v["emptyDir"]["sizeLimit"] = json!("1Gi"); }
    }
}, "the volume sidekey-bin is not the memory emptyDir")]
#[case::volume_disk("files-per-key", |p: &mut Value| {
    for v in p["spec"]["volumes"].as_array_mut().unwrap() {
        if v["name"] == "sidekey-secrets" { v["emptyDir"] = json!({}); }
    }
}, "the volume sidekey-secrets is not the memory emptyDir")]
#[case::volume_host_path("env-basic", |p: &mut Value| {
    for v in p["spec"]["volumes"].as_array_mut().unwrap() {
        if v["name"] == "sidekey-bin" { *v = json!({"name": "sidekey-bin", "hostPath": {"path": "/opt/agent"}}); }
    }
}, "the volume sidekey-bin is not the memory emptyDir")]
#[case::extra_volume("env-basic", |p: &mut Value| p["spec"]["volumes"].as_array_mut().unwrap().push(json!({"name": "sidekey-secrets", "emptyDir": {}})), "it has the volume sidekey-secrets")]
#[case::sidecar_restart("files-refresh-sidecar", |p: &mut Value| { init(p, "sidekey-sidecar").as_object_mut().unwrap().remove("restartPolicy"); }, "another restartPolicy")]
#[case::unwrapped("env-basic", |p: &mut Value| p["spec"]["containers"][0]["command"] = json!(["/app/api"]), "does not start its command with /sidekey/bin/sidekey-agent exec --")]
#[case::writable_target_mount("env-basic", |p: &mut Value| {
    for m in p["spec"]["containers"][0]["volumeMounts"].as_array_mut().unwrap() {
        if m["name"] == "sidekey-bin" { m["readOnly"] = json!(false); }
    }
}, "mounts the injector's volumes otherwise than it does")]
#[case::sub_path("files-per-key", |p: &mut Value| {
    for m in p["spec"]["containers"][0]["volumeMounts"].as_array_mut().unwrap() {
        if m["name"] == "sidekey-secrets" { m["subPath"] = json!("x"); }
    }
}, "mounts the injector's volumes otherwise than it does")]
#[case::init_binary_replaced("env-basic", |p: &mut Value| p["spec"]["initContainers"].as_array_mut().unwrap().push(json!({"name": "swap", "image": "busybox", "command": ["cp", "/evil", "/b/sidekey-agent"], "volumeMounts": [{"name": "sidekey-bin", "mountPath": "/b"}]})), "container \"swap\" mounts the volume sidekey-bin")]
#[case::other_init_settings("env-basic", |p: &mut Value| p["spec"]["initContainers"].as_array_mut().unwrap().push(json!({"name": "mine", "image": "sidekey/agent:golden", "command": ["/sidekey-agent", "init", "--dir", "/x"], "env": [{"name": "SIDEKEY_ENVIRONMENT", "value": "production"}]})), "container \"mine\" sets SIDEKEY_ENVIRONMENT")]
#[case::non_target("env-two-containers-selection", |p: &mut Value| {
    let c = p["spec"]["containers"].as_array_mut().unwrap().iter_mut().find(|c| c["volumeMounts"].as_array().is_none_or(|m| !m.iter().any(|m| m["name"] == "sidekey-bin"))).unwrap();
    if c["volumeMounts"].is_null() { c["volumeMounts"] = json!([]); }
    c["volumeMounts"].as_array_mut().unwrap().push(json!({"name": "sidekey-bin", "mountPath": "/sidekey/bin"}));
}, "carries the injector's parts and is not named in sidekey.io/containers")]
#[case::prefix("env-basic", |p: &mut Value| p["spec"]["containers"][0]["envFrom"] = json!([{"prefix": "SIDEKEY_", "configMapRef": {"name": "steer"}}]), "with the prefix \"SIDEKEY_\"")]
#[case::device("env-basic", |p: &mut Value| p["spec"]["containers"][0]["volumeDevices"] = json!([{"name": "sidekey-bin", "devicePath": "/dev/x"}]), "uses the volume sidekey-bin as a device")]
#[case::app_named_like_ours("env-basic", |p: &mut Value| p["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "sidekey-init", "image": "x"})), "sidekey-init is an app container")]
fn tampering_with_an_injected_pod_is_denied(
    #[case] case: &str,
    #[case] tamper: fn(&mut Value),
    #[case] needle: &str,
) {
    let mut pod = injected(case);
    assert_skipped(&pod);
    tamper(&mut pod);
    let all = denials(decide(&pod));
    assert!(
        all.iter().any(|d| d.message.contains(needle)),
        "{needle:?} not in {all:#?}"
    );
}

#[test]
fn a_pod_injected_under_another_configuration_is_denied() {
    let other = Config::from_yaml("kmsKey: alias/other\nagentImage: sidekey/agent:golden\n")
        .unwrap()
        .with_injector_namespace(INJECTOR_NS);
    let pod = injected_with(&pod_of("env-basic"), &other);
    assert_marker_denied(&pod, "SIDEKEY_KMS_KEY with another value");
}

#[test]
fn the_marker_in_an_excluded_namespace_is_not_sidekeys_business() {
    let mut pod = pod_of("env-basic");
    pod["metadata"]["annotations"]["sidekey.io/injected"] = json!("true");
    let text = serde_json::to_string(&pod).unwrap();
    let d = plan(
        &PodView::from_json(&text).unwrap(),
        &Request {
            namespace: "kube-system",
            user: None,
        },
        &config(),
    );
    assert!(matches!(d, Decision::Skip { .. }), "{d:?}");
}

fn with_container(pod: &mut Value, list: &str, c: Value) {
    if pod["spec"][list].is_null() {
        pod["spec"][list] = json!([]);
    }
    pod["spec"][list].as_array_mut().unwrap().push(c);
}

#[rstest]
#[case::env_init("env", |p: &mut Value| with_container(p, "initContainers", json!({"name": "setup", "image": "x", "env": [{"name": "SIDEKEY_CA_FILE", "value": "/x"}]})), "container \"setup\" sets SIDEKEY_CA_FILE in its env")]
#[case::files_target("files", |p: &mut Value| p["spec"]["containers"][0]["env"].as_array_mut().unwrap().push(json!({"name": "SIDEKEY_LOG", "value": "trace"})), "sets SIDEKEY_LOG in its env")]
#[case::both_other_app("both", |p: &mut Value| with_container(p, "containers", json!({"name": "side", "image": "x", "env": [{"name": "SIDEKEY_ENVIRONMENT", "value": "prod"}]})), "container \"side\" sets SIDEKEY_ENVIRONMENT")]
#[case::prefix_full("env", |p: &mut Value| p["spec"]["containers"][0]["envFrom"] = json!([{"prefix": "SIDEKEY_", "configMapRef": {"name": "steer"}}]), "ConfigMap \"steer\" with the prefix \"SIDEKEY_\"")]
#[case::prefix_longer("files", |p: &mut Value| p["spec"]["containers"][0]["envFrom"] = json!([{"prefix": "SIDEKEY_CA", "secretRef": {"name": "s"}}]), "Secret \"s\" with the prefix \"SIDEKEY_CA\"")]
#[case::prefix_s("env", |p: &mut Value| p["spec"]["containers"][0]["envFrom"] = json!([{"prefix": "S", "configMapRef": {"name": "c"}}]), "with the prefix \"S\"")]
#[case::prefix_side_init("files", |p: &mut Value| with_container(p, "initContainers", json!({"name": "setup", "image": "x", "envFrom": [{"prefix": "SIDE", "configMapRef": {"name": "c"}}]})), "container \"setup\" takes variables from ConfigMap \"c\" with the prefix \"SIDE\"")]
#[case::mount_app("env", |p: &mut Value| with_container(p, "containers", json!({"name": "side", "image": "x", "volumeMounts": [{"name": "sidekey-bin", "mountPath": "/agent"}]})), "container \"side\" mounts the volume sidekey-bin")]
#[case::mount_init("env", |p: &mut Value| with_container(p, "initContainers", json!({"name": "swap", "image": "x", "volumeMounts": [{"name": "sidekey-bin", "mountPath": "/b"}]})), "container \"swap\" mounts the volume sidekey-bin")]
#[case::mount_secrets_sub_path("files", |p: &mut Value| with_container(p, "containers", json!({"name": "side", "image": "x", "volumeMounts": [{"name": "sidekey-secrets", "mountPath": "/s", "subPath": "API_TOKEN"}]})), "container \"side\" mounts the volume sidekey-secrets")]
#[case::mount_target_rw("files", |p: &mut Value| p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "sidekey-secrets", "mountPath": "/elsewhere"}]), "mounts the volume sidekey-secrets at \"/elsewhere\"")]
#[case::device("env", |p: &mut Value| p["spec"]["containers"][0]["volumeDevices"] = json!([{"name": "sidekey-bin", "devicePath": "/dev/agent"}]), "uses the volume sidekey-bin as a device")]
#[case::volume("env", |p: &mut Value| p["spec"]["volumes"] = json!([{"name": "sidekey-bin", "emptyDir": {}}]), "already has a volume named sidekey-bin")]
fn a_fresh_pod_cannot_steer_the_agent_or_reach_its_volumes(
    #[case] delivery: &str,
    #[case] attack: fn(&mut Value),
    #[case] needle: &str,
) {
    let mut pod = pod_of("env-basic");
    pod["metadata"]["annotations"]["sidekey.io/delivery"] = json!(delivery);
    pod["metadata"]["annotations"]["sidekey.io/containers"] = json!("api");
    assert!(matches!(decide(&pod), Decision::Inject(_)));
    attack(&mut pod);
    assert_denied(&pod, needle);
}

#[test]
fn env_from_without_a_sidekey_prefix_is_allowed_and_cannot_override_a_setting() {
    let mut pod = pod_of("env-basic");
    pod["spec"]["containers"][0]["envFrom"] = json!([
        {"configMapRef": {"name": "anything"}},
        {"prefix": "APP_", "secretRef": {"name": "app"}},
        {"prefix": "SIDEKEYS", "configMapRef": {"name": "other"}},
    ]);
    let patched = injected_with(&pod, &config());
    // Every variable the agent reads is in `env`, which wins over envFrom.
    let names: Vec<&str> = patched["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for known in agent_variables() {
        assert!(
            names.contains(&known.as_str()),
            "{known} not set: {names:?}"
        );
    }
    assert_skipped(&patched);
}

/// The variables the agent reads: its `KNOWN_VARIABLES`, read from its
/// source so that a variable added there without the injector setting it
/// fails here.
fn agent_variables() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../agent/src/config.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find("pub const KNOWN_VARIABLES: &[&str] = &[")
        .expect("KNOWN_VARIABLES in agent/src/config.rs");
    let list = &text[start..];
    let list = &list[..list.find("];").unwrap()];
    let names: Vec<String> = list
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| l.starts_with('"'))
        .map(|l| l.trim_end_matches(',').trim_matches('"').to_owned())
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    names
}

#[test]
fn every_agent_container_sets_every_variable_the_agent_reads() {
    for case in CASES {
        let pod = injected(case);
        let spec = &pod["spec"];
        let agents = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(spec["initContainers"].as_array().unwrap())
            .filter(|c| {
                c["env"]
                    .as_array()
                    .is_some_and(|env| env.iter().any(|e| e["name"] == "SIDEKEY_ENVIRONMENT"))
            })
            .collect::<Vec<_>>();
        assert!(!agents.is_empty(), "{case}");
        for c in agents {
            let names: Vec<&str> = c["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            for known in agent_variables() {
                assert!(
                    names.iter().filter(|n| **n == known).count() == 1,
                    "{case}: {} sets {known} {} times",
                    c["name"],
                    names.iter().filter(|n| **n == known).count()
                );
            }
        }
    }
}

#[test]
fn environment_rules_allow_legacy_values_and_loader_variables() {
    let config = Config::from_yaml(
        r#"
agentImage: sidekey/agent:golden
environments:
  - namespaces: shop
    allowLegacyValues: true
    allowLoaderEnv: [NODE_OPTIONS, JAVA_TOOL_OPTIONS]
"#,
    )
    .unwrap()
    .with_injector_namespace(INJECTOR_NS);
    let pod = injected_with(&pod_of("env-basic"), &config);
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
            .unwrap()
    };
    assert_eq!(value("SIDEKEY_ALLOW_LEGACY"), "true");
    assert_eq!(
        value("SIDEKEY_ALLOW_LOADER_ENV"),
        "NODE_OPTIONS,JAVA_TOOL_OPTIONS"
    );
    // Reinvoked under the same configuration: skipped; under the default
    // one (no such allowance): denied.
    match decide_with(&pod, &config) {
        Decision::Skip { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_marker_denied(&pod, "SIDEKEY_ALLOW_LEGACY with another value");

    // Without a rule: false and empty.
    let pod = injected("env-basic");
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "SIDEKEY_ALLOW_LEGACY" && e["value"] == "false"));
    assert!(env
        .iter()
        .any(|e| e["name"] == "SIDEKEY_ALLOW_LOADER_ENV" && e["value"] == ""));
}

#[rstest]
#[case::syntax("[NODE OPTIONS]", "environments[0].allowLoaderEnv[0]")]
#[case::comma("[\"A,B\"]", "environments[0].allowLoaderEnv[0]")]
#[case::digit("[1X]", "environments[0].allowLoaderEnv[0]")]
#[case::own("[SIDEKEY_LOG]", "environments[0].allowLoaderEnv[0]")]
#[case::twice("[LD_PRELOAD, LD_PRELOAD]", "environments[0].allowLoaderEnv[1]")]
fn bad_loader_allowances_are_refused(#[case] list: &str, #[case] field: &str) {
    let e = Config::from_yaml(&format!(
        "environments:\n  - namespaces: shop\n    allowLoaderEnv: {list}\n"
    ))
    .unwrap_err();
    assert_eq!(e.field_path(), Some(field), "{e}");
    let e = Config::from_yaml("environments:\n  - namespaces: shop\n    allowLegacyValues: yes\n")
        .unwrap_err();
    assert!(e.to_string().contains("allowLegacyValues"), "{e}");
}
