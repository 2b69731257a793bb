//! Values in a pod's env can be secrets: nothing the planner returns (patch,
//! warnings, denials, skip reasons, even `Debug`) may contain one.

mod support;

use serde_json::{json, Value};
use sidekey_patch::{plan, Decision, PodView, Request};
use support::load_cases;

const MARKER: &str = "marker-9f8e7d";

/// Puts the marker into the env of every container and init container,
/// under names an app would use and names the agent cares about.
fn with_marker(pod: &Value) -> Value {
    let mut pod = pod.clone();
    for list in ["containers", "initContainers"] {
        let Some(cs) = pod["spec"][list].as_array_mut() else {
            continue;
        };
        for c in cs {
            let entries = [
                json!({"name": "DB_PASSWORD", "value": MARKER}),
                json!({"name": "API_TOKEN", "value": format!("Bearer {MARKER}")}),
            ];
            match c["env"].as_array_mut() {
                Some(env) => env.extend(entries),
                None => c["env"] = json!(entries),
            }
        }
    }
    pod
}

fn everything(d: &Decision) -> String {
    let mut out = format!("{d:?}");
    match d {
        Decision::Inject(p) => {
            out.push_str(p.patch.as_str());
            out.push_str(&p.warnings.join("\n"));
        }
        Decision::Deny(ds) => {
            for x in ds {
                out.push_str(&x.to_string());
            }
        }
        Decision::Skip { reason } => out.push_str(reason),
    }
    out
}

fn check(pod: &Value, namespace: &str, config: &sidekey_patch::Config) -> Decision {
    let text = serde_json::to_string(pod).unwrap();
    let d = plan(
        &PodView::from_json(&text).unwrap(),
        &Request {
            namespace,
            user: None,
        },
        config,
    );
    let all = everything(&d);
    assert!(!all.contains(MARKER), "the marker leaked: {all}");
    d
}

#[test]
fn no_value_in_any_outcome() {
    let mut kinds = (0, 0, 0);
    for case in load_cases() {
        let pod = with_marker(&case.pod_json);
        match check(&pod, &case.namespace, &case.config) {
            Decision::Inject(_) => kinds.0 += 1,
            Decision::Deny(_) => kinds.1 += 1,
            Decision::Skip { .. } => kinds.2 += 1,
        }

        // Warnings: skip on missing keys, root user, files without a user.
        let mut noisy = pod.clone();
        noisy["metadata"]["annotations"]["sidekey.io/on-missing"] = json!("skip");
        noisy["spec"]["securityContext"] = json!({"runAsUser": 0});
        if let Decision::Inject(p) = check(&noisy, &case.namespace, &case.config) {
            assert!(!p.warnings.is_empty());
        }

        // Denials of every kind at once, including ones about containers.
        let mut bad = pod.clone();
        let a = &mut bad["metadata"]["annotations"];
        a["sidekey.io/environment"] = json!("production");
        a["sidekey.io/secrets"] = json!("X=/abs/path");
        a["sidekey.io/containers"] = json!("nope");
        a["sidekey.io/refresh"] = json!("1s");
        a["sidekey.io/files-path"] = json!("relative");
        bad["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "SIDEKEY_ENVIRONMENT", "value": MARKER}));
        bad["spec"]["volumes"] = json!([{"name": "sidekey-bin", "emptyDir": {}}]);
        if let Decision::Deny(ds) = check(&bad, &case.namespace, &case.config) {
            assert!(ds.len() >= 4, "{ds:?}");
        }

        // A container without a command (env delivery).
        let mut no_cmd = pod.clone();
        no_cmd["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("sidekey.io/command");
        no_cmd["metadata"]["annotations"]["sidekey.io/delivery"] = json!("env");
        for c in no_cmd["spec"]["containers"].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("command");
        }
        check(&no_cmd, &case.namespace, &case.config);
    }
    assert!(kinds.0 >= 8 && kinds.2 >= 1, "{kinds:?}");
}
