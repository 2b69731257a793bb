//! Golden patches: every `tests/fixtures/<case>/review.json` is planned and
//! compared with `expected-patch.json` (`null` = no patch, the pod is
//! skipped) and `expected-warnings.json`. `UPDATE_GOLDEN=1` rewrites the
//! expected files; read the diff before committing it.
//!
//! Each patch is then applied by an independent implementation (Python
//! `jsonpatch`), must give the same pod as [`sidekey_patch::apply`], must
//! pass `kubernetes-validate --strict` and the semantic checks, and planning
//! the patched pod again must skip it.

mod support;

use serde_json::{json, Value};
use sidekey_patch::{apply, plan, Decision, PodView};
use support::{kubernetes_validate, load_cases, python_apply, semantic_problems, Case};

const REQUIRED: [&str; 9] = [
    "env-basic",
    "env-two-containers-selection",
    "env-command-annotation",
    "files-per-key",
    "files-refresh-sidecar",
    "both",
    "pod-with-existing-init-containers-volumes-env-securitycontext",
    "inherit",
    "already-injected",
];

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn write_json(path: &std::path::Path, v: &Value) {
    let mut text = serde_json::to_string_pretty(v).unwrap();
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// (patch or null, warnings) of a case.
fn outcome(case: &Case) -> (Value, Value) {
    match plan(&case.pod(), &case.request(), &case.config) {
        Decision::Inject(p) => (
            serde_json::from_str(p.patch.as_str()).unwrap(),
            json!(p.warnings),
        ),
        Decision::Skip { .. } => (Value::Null, json!([])),
        Decision::Deny(d) => panic!("{}: denied: {d:?}", case.name),
    }
}

#[test]
fn every_required_case_exists() {
    let cases = load_cases();
    for name in REQUIRED {
        assert!(
            cases.iter().any(|c| c.name == name),
            "missing golden case {name}"
        );
    }
}

#[test]
fn golden_patches() {
    let mut failures = Vec::new();
    for case in load_cases() {
        let (patch, warnings) = outcome(&case);
        let patch_file = case.dir.join("expected-patch.json");
        let warn_file = case.dir.join("expected-warnings.json");
        if update() {
            write_json(&patch_file, &patch);
            write_json(&warn_file, &warnings);
            continue;
        }
        if read_json(&patch_file) != patch {
            failures.push(format!(
                "{}: patch differs from expected-patch.json; got:\n{}",
                case.name,
                serde_json::to_string_pretty(&patch).unwrap()
            ));
        }
        if read_json(&warn_file) != warnings {
            failures.push(format!(
                "{}: warnings differ from expected-warnings.json; got: {warnings}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn patched_pods_are_valid_and_idempotent() {
    let cases = load_cases();
    let mut inputs = Vec::new();
    let mut planned = Vec::new();
    for case in &cases {
        match plan(&case.pod(), &case.request(), &case.config) {
            Decision::Inject(p) => {
                inputs.push((
                    case.pod_json.clone(),
                    serde_json::from_str(p.patch.as_str()).unwrap(),
                ));
                planned.push((case, p));
            }
            Decision::Skip { .. } => {}
            Decision::Deny(d) => panic!("{}: denied: {d:?}", case.name),
        }
    }
    assert!(planned.len() >= 8, "expected at least 8 injecting cases");
    let patched = python_apply("golden", &inputs);
    let mut to_validate = Vec::new();
    for ((case, p), by_python) in planned.iter().zip(&patched) {
        let by_rust = apply(&case.pod_json, &p.patch.operations().unwrap()).unwrap();
        assert_eq!(
            &by_rust, by_python,
            "{}: Rust and Python jsonpatch disagree",
            case.name
        );
        let problems = semantic_problems(by_python);
        assert!(problems.is_empty(), "{}: {problems:?}", case.name);
        assert_eq!(
            by_python["metadata"]["annotations"]["sidekey.io/injected"], "true",
            "{}",
            case.name
        );
        // A second review of the patched pod changes nothing.
        let again = serde_json::to_string(by_python).unwrap();
        match plan(
            &PodView::from_json(&again).unwrap(),
            &case.request(),
            &case.config,
        ) {
            Decision::Skip { reason } => assert!(reason.contains("already injected"), "{reason}"),
            other => panic!("{}: second review gave {other:?}", case.name),
        }
        to_validate.push((case.name.clone(), by_python.clone()));
    }
    // The inputs must be valid pods too, so a failure is about the patch.
    let originals: Vec<(String, Value)> = cases
        .iter()
        .map(|c| (format!("{}-original", c.name), c.pod_json.clone()))
        .collect();
    if let Err(e) = kubernetes_validate("originals", &originals) {
        panic!("an input fixture is not a valid pod:\n{e}");
    }
    if let Err(e) = kubernetes_validate("golden", &to_validate) {
        panic!("a patched pod is not valid:\n{e}");
    }
}
