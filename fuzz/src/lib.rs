//! What the fuzz targets share: the injector configuration they plan
//! with, and the planner's properties checked on every pod that parses.

use std::sync::OnceLock;

use serde_json::Value;
use sidekey_patch::{
    apply, image_lookups, plan_with_images, Config, Decision, ImageConfig, ImageConfigs, PodView,
    Request,
};

/// The configuration of `deploy/base/configmap.yaml`, plus a rule with
/// an environment template, legacy values and loader variables, and a
/// region: every part of the configuration that reaches a patch.
pub const CONFIG_YAML: &str = r#"prefix: sidekey
store: ssm
kmsKey: alias/sidekey
region: eu-west-1
agentImage: ghcr.io/sidekey/agent:0.1.0
imagePullPolicy: IfNotPresent
timeout: 30s
audit: stdout
excludedNamespaces: [kube-system, kube-public, sidekey-system]
environments:
  - namespaces: "pr-*"
    inherit: [staging]
  - namespaces: "team-*"
    environment: "{namespace}-env"
  - namespaces: prod
    environment: production
    allowLegacyValues: true
    allowLoaderEnv: [NODE_OPTIONS]
resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
filesSizeLimit: 1Mi
defaults: {delivery: env, filesFormat: per-key, onMissing: fail}
"#;

/// The namespace the injector runs in.
pub const INJECTOR_NAMESPACE: &str = "sidekey-system";

/// The namespace a pod is planned in when it names none.
pub const DEFAULT_NAMESPACE: &str = "team-a";

/// [`CONFIG_YAML`], parsed once.
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_yaml(CONFIG_YAML)
            .expect("the fuzz configuration is valid")
            .with_injector_namespace(INJECTOR_NAMESPACE)
    })
}

/// What a container without a `command` runs, for the registry lookups
/// the planner asks for.
fn image_config() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/app".to_owned(), "--flag".to_owned()],
        cmd: vec!["serve".to_owned()],
    }
}

/// Plans `pod` in `namespace` (with an image config for every lookup the
/// planner asks for) and checks, when the decision is to inject:
///
/// - the patch is RFC 6902 JSON Patch text and applies to `pod_json`;
/// - the patched pod parses as a pod again, and planning it again skips
///   it (a reinvocation adds nothing and is not refused).
///
/// `pod_json` must be the same document as `pod` (the caller parses both
/// from one text without duplicate keys). Panics when a check fails.
pub fn plan_and_check(pod: &PodView<'_>, pod_json: &Value, namespace: &str, config: &Config) {
    let request = Request {
        namespace,
        user: Some("system:serviceaccount:ci:deployer"),
    };
    let images: ImageConfigs = image_lookups(pod, &request, config)
        .into_iter()
        .map(|l| (l.container.to_owned(), image_config()))
        .collect();
    let plan = match plan_with_images(pod, &request, config, &images) {
        Decision::Inject(plan) => plan,
        Decision::Skip { reason } => {
            assert!(!reason.is_empty(), "a skip says why");
            return;
        }
        Decision::Deny(denials) => {
            assert!(!denials.is_empty(), "a denial says why");
            for d in &denials {
                one_line(d);
            }
            return;
        }
    };
    let ops = match plan.patch.operations() {
        Ok(ops) => ops,
        Err(e) => panic!("the patch is not JSON Patch ({e}): {}", plan.patch.as_str()),
    };
    let patched = match apply(pod_json, &ops) {
        Ok(p) => p,
        Err(e) => panic!("{e}; patch: {}", plan.patch.as_str()),
    };
    let text = serde_json::to_string(&patched).expect("a JSON value serialises");
    let again = match PodView::from_json(&text) {
        Ok(p) => p,
        Err(e) => panic!("the patched pod does not parse: {e}"),
    };
    match plan_with_images(&again, &request, config, &images) {
        Decision::Skip { .. } => {}
        Decision::Inject(p) => panic!(
            "planning the patched pod again patches it again: {}",
            p.patch.as_str()
        ),
        Decision::Deny(d) => panic!("planning the patched pod again denies it: {d:?}"),
    }
}

/// Checks that `e`'s message is one non-empty line without control
/// characters (messages quote input escaped). Panics otherwise.
pub fn one_line(e: &impl std::fmt::Display) {
    let m = e.to_string();
    assert!(!m.is_empty(), "an empty message");
    assert!(
        !m.chars().any(char::is_control),
        "a message with a control character: {m:?}"
    );
}

/// The namespace a pod is planned in: its own (`metadata.namespace`) when
/// it names one, else [`DEFAULT_NAMESPACE`].
pub fn namespace_of<'a>(pod: &'a PodView<'_>) -> &'a str {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}
