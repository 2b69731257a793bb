//! The injector configuration: the input is the YAML text of
//! `--config`. Parsing and validating it never panics; a configuration
//! that is accepted resolves namespaces and plans a pod without panicking,
//! and its patches hold the planner's properties
//! (`sidekey_fuzz::plan_and_check`: a patch applies to the pod, and the
//! patched pod is skipped when reviewed again). The namespaces planned in
//! are `default`, the injector's own and one per environment rule (its
//! glob with `*` made `x`): the ones the fuzzed rules speak about.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sidekey_fuzz::{plan_and_check, INJECTOR_NAMESPACE};
use sidekey_patch::{Config, PodView, Resolution};

/// An opted-in pod with both deliveries and a refreshing sidecar, one
/// container with a command, one without (planned with an image config),
/// one not selected: every part of a configuration that reaches a patch.
const POD: &str = r#"{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {
    "name": "api-0",
    "annotations": {
      "sidekey.io/inject": "true",
      "sidekey.io/services": "api,shared",
      "sidekey.io/secrets": "DB_URL=db/URL@3,TOKEN=auth/TOKEN@current",
      "sidekey.io/delivery": "both",
      "sidekey.io/refresh": "5m",
      "sidekey.io/containers": "api,worker"
    }
  },
  "spec": {
    "securityContext": {"runAsUser": 1000},
    "volumes": [{"name": "cache", "emptyDir": {}}],
    "containers": [
      {"name": "api", "image": "example.com/api:1", "command": ["/api"], "args": ["--port", "80"],
       "env": [{"name": "MODE", "value": "x"}],
       "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
      {"name": "worker", "image": "example.com/worker:1"},
      {"name": "proxy", "image": "example.com/proxy:1", "command": ["/proxy"]}
    ]
  }
}"#;

fn pod_json() -> &'static Value {
    static POD_JSON: OnceLock<Value> = OnceLock::new();
    POD_JSON.get_or_init(|| serde_json::from_str(POD).expect("the pod is JSON"))
}

fn check(config: &Config, pod: &PodView<'_>) {
    let rules: Vec<String> = config
        .environment_rules()
        .iter()
        .take(3)
        .map(|r| r.namespaces().replace('*', "x"))
        .collect();
    let namespaces = ["default", INJECTOR_NAMESPACE]
        .into_iter()
        .chain(rules.iter().map(String::as_str));
    for namespace in namespaces {
        match config.resolve(namespace) {
            Resolution::Environment { .. } | Resolution::Excluded { .. } => {}
            Resolution::Invalid { .. } => continue,
        }
        let _ = config.rule_for(namespace);
        let _ = format!("{:?}", config.agent_policy(namespace));
        plan_and_check(pod, pod_json(), namespace, config);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_yaml(text) {
        Ok(config) => config.with_injector_namespace(INJECTOR_NAMESPACE),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _ = (e.field_path(), e.line());
            return;
        }
    };
    let _ = config.settings().resources().to_json();
    let pod = PodView::from_json(POD).expect("the pod parses");
    check(&config, &pod);
});
