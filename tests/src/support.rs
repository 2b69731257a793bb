//! What the tests of this crate share: where the binaries, the repository
//! and the test venv are, whether we are root, free ports, and the patched
//! pod as the API server would store it (Python's jsonpatch, an
//! implementation independent of ours, then kubernetes-validate and the
//! checks the schemas do not make).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn venv_bin(name: &str) -> PathBuf {
    match std::env::var_os("SIDEKEY_VENV") {
        Some(v) => PathBuf::from(v).join("bin").join(name),
        None => repo().join(".venv/bin").join(name),
    }
}

pub fn is_root() -> bool {
    Command::new("/usr/bin/id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Applies a base64 JSON Patch with Python's jsonpatch (an implementation
/// independent of ours), names the pod, and validates it.
pub fn apply_and_validate(dir: &Path, pod: &Value, response: &Value) -> Value {
    let patch = response["patch"].as_str().expect("a patch");
    let pod_file = dir.join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).expect("write pod");
    let script = "import base64, json, sys, jsonpatch\n\
                  pod = json.load(open(sys.argv[1]))\n\
                  patch = json.loads(base64.b64decode(sys.argv[2]))\n\
                  print(json.dumps(jsonpatch.apply_patch(pod, patch)))\n";
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(&pod_file)
        .arg(patch)
        .output()
        .expect("python jsonpatch");
    assert!(
        out.status.success(),
        "jsonpatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut patched: Value = serde_json::from_slice(&out.stdout).expect("patched pod");
    // The API server names the pod after admission.
    if patched["metadata"]["name"].is_null() {
        let base = patched["metadata"]["generateName"]
            .as_str()
            .unwrap_or("pod-")
            .to_owned();
        patched["metadata"]["name"] = json!(format!("{base}x7k2p"));
    }
    let patched_file = dir.join("patched.json");
    std::fs::write(&patched_file, patched.to_string()).expect("write");
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&patched_file)
        .stdin(Stdio::null())
        .output()
        .expect("kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    semantic_checks(&patched);
    patched
}

/// What the schemas do not say but the API server checks.
pub fn semantic_checks(pod: &Value) {
    let spec = &pod["spec"];
    let containers: Vec<&Value> = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().into_iter().flatten())
        .collect();
    let mut names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "container names are unique");
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["name"].as_str().unwrap_or(""))
        .collect();
    let mut unique = volumes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), volumes.len(), "volume names are unique");
    for c in containers {
        let mut paths = Vec::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let v = m["name"].as_str().unwrap_or("");
            assert!(volumes.contains(&v), "mount of unknown volume {v}");
            paths.push(m["mountPath"].as_str().unwrap_or(""));
        }
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(n, paths.len(), "duplicate mount paths in {}", c["name"]);
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or("");
            assert!(
                !name.is_empty()
                    && !name.contains('=')
                    && !name.starts_with(|ch: char| ch.is_ascii_digit()),
                "bad env name {name:?}"
            );
        }
    }
}

/// `curl` trusting the test CA in `dir/tls/ca.crt`, with `body` (a file)
/// as the request body.
pub fn curl(dir: &Path, args: &[&str], body: Option<&Path>) -> Output {
    let mut cmd = Command::new("curl");
    cmd.arg("--cacert").arg(dir.join("tls/ca.crt")).args(args);
    if let Some(b) = body {
        cmd.arg("--data-binary").arg(format!("@{}", b.display()));
    }
    cmd.output().expect("curl")
}

/// Where a secret goes and how the CLI reaches the store: `aws` holds the
/// AWS variables (moto's endpoint, region, credentials).
#[derive(Debug)]
pub struct PutTo<'a> {
    pub aws: Vec<(String, String)>,
    pub prefix: &'a str,
    pub kms_key: &'a str,
}

/// Writes `value` as `env/service/key` with the real CLI (`sidekey put`,
/// the value on stdin), its audit record in `dir/cli-audit.jsonl`.
pub fn put_secret(dir: &Path, to: PutTo<'_>, [env, service, key]: [&str; 3], value: &str) {
    let mut child = Command::new(bin_dir().join("sidekey"))
        .args(["put", env, service, key])
        .envs(to.aws)
        .env("SIDEKEY_PREFIX", to.prefix)
        .env("SIDEKEY_KMS_KEY", to.kms_key)
        .env("SIDEKEY_AUDIT_LOG", dir.join("cli-audit.jsonl"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sidekey");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(value.as_bytes())
        .expect("write the value");
    let out = child.wait_with_output().expect("sidekey");
    assert!(
        out.status.success(),
        "sidekey put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `pod` to the injector on `127.0.0.1:port` as the API server
/// would (an AdmissionReview `CREATE` from the ReplicaSet controller, with
/// `uid`, written to `dir/review.json`); the review's `response`.
pub fn admit(dir: &Path, port: u16, uid: &str, pod: &Value, namespace: &str) -> Value {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    });
    let body = dir.join("review.json");
    std::fs::write(&body, review.to_string()).expect("write review");
    let url = format!("https://127.0.0.1:{port}/mutate");
    let out = curl(
        dir,
        &["-fsS", "-H", "Content-Type: application/json", &url],
        Some(&body),
    );
    assert!(
        out.status.success(),
        "review failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("review answer");
    answer["response"].clone()
}
