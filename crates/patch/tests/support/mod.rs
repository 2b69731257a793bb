//! Shared test helpers: golden cases, the independent JSON Patch
//! implementation (Python `jsonpatch`), `kubernetes-validate`, and the
//! checks the schemas cannot express.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sidekey_patch::{Config, PodView, Request};

/// The injector namespace the tests use.
pub const INJECTOR_NS: &str = "sidekey-system";
/// The agent image for cases without a `config.yaml`, so fixtures do not
/// change with the release version.
pub const TEST_IMAGE: &str = "sidekey/agent:golden";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One golden case: `tests/fixtures/<name>/`.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub review: Value,
    pub pod_json: Value,
    /// The pod's JSON text, as the planner reads it.
    pub pod_text: String,
    pub namespace: String,
    pub user: Option<String>,
    pub config: Config,
}

impl Case {
    /// The pod as the planner reads it.
    pub fn pod(&self) -> PodView<'_> {
        PodView::from_json(&self.pod_text)
            .unwrap_or_else(|e| panic!("{}: pod does not parse: {e}", self.name))
    }

    pub fn request(&self) -> Request<'_> {
        Request {
            namespace: &self.namespace,
            user: self.user.as_deref(),
        }
    }
}

pub fn load_case(dir: &Path) -> Case {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(dir.join("review.json"))
        .unwrap_or_else(|e| panic!("{name}: review.json: {e}"));
    let review: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{name}");
    let req = &review["request"];
    let pod_json = req["object"].clone();
    let pod_text = serde_json::to_string(&pod_json).unwrap();
    let namespace = req["namespace"].as_str().unwrap().to_owned();
    let user = req["userInfo"]["username"].as_str().map(str::to_owned);
    let config = match std::fs::read_to_string(dir.join("config.yaml")) {
        Ok(yaml) => Config::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("{name}: config.yaml: {e}"))
            .with_injector_namespace(INJECTOR_NS),
        Err(_) => Config::default_for(Some(INJECTOR_NS))
            .with_agent_image(TEST_IMAGE)
            .unwrap(),
    };
    Case {
        name,
        dir: dir.to_owned(),
        review,
        pod_json,
        pod_text,
        namespace,
        user,
        config,
    }
}

pub fn load_cases() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("review.json").is_file())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| load_case(d)).collect()
}

/// The Python virtual environment with `jsonpatch` and
/// `kubernetes-validate`: `$SIDEKEY_VENV`, else the workspace's `.venv`.
pub fn venv() -> PathBuf {
    match std::env::var_os("SIDEKEY_VENV") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
    }
}

fn tool(name: &str) -> PathBuf {
    let p = venv().join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/venv (or set SIDEKEY_VENV)",
        p.display()
    );
    p
}

/// A scratch directory under the target directory's tmp (no extra deps).
pub fn scratch(label: &str) -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("sidekey-patch-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const APPLY_PY: &str = r#"
import json, sys, jsonpatch
for d in sys.argv[1:]:
    with open(d + "/pod.json") as f:
        pod = json.load(f)
    with open(d + "/patch.json") as f:
        patch = jsonpatch.JsonPatch(json.load(f))
    with open(d + "/patched.json", "w") as f:
        json.dump(patch.apply(pod), f)
"#;

/// Applies each (pod, patch) with Python's `jsonpatch` (one process for
/// all), returning the patched pods.
pub fn python_apply(label: &str, items: &[(Value, Value)]) -> Vec<Value> {
    let root = scratch(label);
    let mut dirs = Vec::new();
    for (i, (pod, patch)) in items.iter().enumerate() {
        let d = root.join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("pod.json"), serde_json::to_vec(pod).unwrap()).unwrap();
        std::fs::write(d.join("patch.json"), serde_json::to_vec(patch).unwrap()).unwrap();
        dirs.push(d);
    }
    let out = Command::new(tool("python"))
        .arg("-c")
        .arg(APPLY_PY)
        .args(&dirs)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python jsonpatch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dirs.iter()
        .map(|d| serde_json::from_slice(&std::fs::read(d.join("patched.json")).unwrap()).unwrap())
        .collect()
}

/// Validates pods with `kubernetes-validate --strict -k 1.33.0`. A pod
/// without a name (only `generateName`) gets one first, as the API server
/// does before validation.
pub fn kubernetes_validate(label: &str, pods: &[(String, Value)]) -> Result<(), String> {
    let root = scratch(&format!("{label}-validate"));
    let mut files = Vec::new();
    for (i, (name, pod)) in pods.iter().enumerate() {
        let mut pod = pod.clone();
        if pod["metadata"].get("name").is_none() {
            let base = pod["metadata"]["generateName"].as_str().unwrap_or("pod-");
            pod["metadata"]["name"] = json!(format!("{base}x7z9q"));
        }
        let file = root.join(format!("{i}-{name}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&pod).unwrap()).unwrap();
        files.push(file);
    }
    let out = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0", "--quiet"])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn valid_env_name(n: &str) -> bool {
    // Kubernetes accepts any printable ASCII except '='; sidekey's own
    // names are C identifiers, which we check for the injected ones.
    !n.is_empty() && !n.contains('=') && n.bytes().all(|b| (b' '..=b'~').contains(&b))
}

fn c_identifier(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The rules the API server checks that the OpenAPI schemas do not:
/// unique container and volume names, every mount names a volume, no
/// duplicate mount paths (nor env names) in a container, valid env names.
pub fn semantic_problems(pod: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let spec = &pod["spec"];
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    let mut seen = HashSet::new();
    for v in &volumes {
        if !seen.insert(*v) {
            p.push(format!("duplicate volume name {v}"));
        }
    }
    let mut names = HashSet::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("");
            if !names.insert(name.to_owned()) {
                p.push(format!("duplicate container name {name}"));
            }
            let mut paths = HashSet::new();
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let vol = m["name"].as_str().unwrap_or("");
                if !volumes.contains(&vol) {
                    p.push(format!("{name}: mount names missing volume {vol}"));
                }
                let path = m["mountPath"].as_str().unwrap_or("");
                if !paths.insert(path.to_owned()) {
                    p.push(format!("{name}: duplicate mount path {path}"));
                }
            }
            let mut env_names = HashSet::new();
            for e in c["env"].as_array().into_iter().flatten() {
                let n = e["name"].as_str().unwrap_or("");
                if !valid_env_name(n) {
                    p.push(format!("{name}: invalid env name {n:?}"));
                }
                if (n.starts_with("SIDEKEY_") || n.starts_with("AWS_")) && !c_identifier(n) {
                    p.push(format!(
                        "{name}: injected env name {n:?} is not a C identifier"
                    ));
                }
                if !env_names.insert(n.to_owned()) {
                    p.push(format!("{name}: duplicate env name {n}"));
                }
            }
        }
    }
    p
}

/// Annotations map from pairs.
pub fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
