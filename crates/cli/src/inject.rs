//! `sidekey inject`: the injector's planner, offline. Reads manifests
//! (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob; other
//! kinds pass through), plans each pod template exactly as the webhook
//! would for `--namespace`, and prints the mutated YAML.

use std::path::Path;

use serde_json::Value;
use sidekey_patch::{Config, Decision, Request};

use crate::Failure;

/// Where a kind keeps its pod template.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Runs `sidekey inject`.
pub fn run(file: &Path, namespace: Option<&str>, config: Option<&Path>) -> Result<(), Failure> {
    let config = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::failed(format!("cannot read {}: {e}", path.display())))?;
            Config::from_yaml(&text)
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        }
        None => Config::default_for(None),
    };
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?
    };
    let mut out = Vec::new();
    for (index, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let what = format!("{} document {}", file.display(), index + 1);
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Failure::usage(format!("{what}: {e}")))?;
        if value.is_null() {
            continue;
        }
        out.push(inject_one(value, namespace, &config, &what)?);
    }
    let mut yaml = String::new();
    for doc in &out {
        yaml.push_str("---\n");
        yaml.push_str(&serde_norway::to_string(doc).map_err(|e| Failure::failed(e.to_string()))?);
    }
    print!("{yaml}");
    Ok(())
}

fn inject_one(
    mut doc: Value,
    namespace: Option<&str>,
    config: &Config,
    what: &str,
) -> Result<Value, Failure> {
    let kind = doc["kind"].as_str().unwrap_or("").to_owned();
    let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_owned();
    let Some(pointer) = template_pointer(&kind) else {
        return Ok(doc);
    };
    let namespace = namespace
        .or(doc["metadata"]["namespace"].as_str())
        .unwrap_or("default")
        .to_owned();
    let template = doc
        .pointer(pointer)
        .cloned()
        .ok_or_else(|| Failure::usage(format!("{what}: {kind} {name} has no pod template")))?;
    let pod_json = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    let pod_text = serde_json::to_string(&pod_json)
        .map_err(|e| Failure::failed(format!("{what}: {kind} {name}: {e}")))?;
    let pod = sidekey_patch::PodView::from_json(&pod_text).map_err(|e| {
        Failure::usage(format!(
            "{what}: {kind} {name}: not a valid pod template: {e}"
        ))
    })?;
    let request = Request {
        namespace: &namespace,
        user: None,
    };
    match sidekey_patch::plan(&pod, &request, config) {
        Decision::Skip { reason } => {
            eprintln!("sidekey: {kind} {name}: unchanged ({reason})");
            Ok(doc)
        }
        Decision::Deny(denials) => {
            let reasons: Vec<String> = denials.iter().map(|d| d.to_string()).collect();
            Err(Failure::failed(format!(
                "{kind} {name} in namespace {namespace} would be denied: {}",
                reasons.join("; ")
            )))
        }
        Decision::Inject(plan) => {
            for w in &plan.warnings {
                eprintln!("sidekey: warning: {kind} {name}: {w}");
            }
            let ops = plan
                .patch
                .operations()
                .map_err(|e| Failure::failed(format!("{kind} {name}: {e}")))?;
            let patched = sidekey_patch::apply(&pod_json, &ops)
                .map_err(|e| Failure::failed(format!("{kind} {name}: {e}")))?;
            if pointer.is_empty() {
                // A Pod: the patched pod, minus nothing.
                let mut pod = patched;
                if doc["metadata"]["namespace"].is_null() {
                    if let Some(m) = pod["metadata"].as_object_mut() {
                        m.remove("namespace");
                    }
                }
                return Ok(pod);
            }
            let slot = doc
                .pointer_mut(pointer)
                .ok_or_else(|| Failure::failed(format!("{kind} {name}: template vanished")))?;
            slot["metadata"] = patched["metadata"].clone();
            slot["spec"] = patched["spec"].clone();
            eprintln!(
                "sidekey: {kind} {name}: injected (environment {}, containers {})",
                plan.environment,
                plan.containers.join(",")
            );
            Ok(doc)
        }
    }
}
