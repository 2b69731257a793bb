//! `sidekey inject` on the manifests of tests/corpus/manifests and on
//! generated manifests: the output, read back by PyYAML (a YAML 1.1
//! reader), by PyYAML configured with go-yaml v2's rules (as kubectl reads
//! YAML) and by yaml-rust2 (a YAML 1.2 reader), equals the input as kubectl
//! reads it plus exactly what the planner injects, and passes
//! kubernetes-validate --strict.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use sidekey_patch::{Config, Decision, Request};

const NAMESPACE: &str = "staging";

/// Reads each case's input with go-yaml v2's rules (as kubectl does) and
/// its output both with stock PyYAML (YAML 1.1) and with those rules.
/// Anything a reader gives that JSON cannot say as Kubernetes would (a
/// date, a key that is not a string) is marked so that it cannot compare
/// equal to a string.
const READBACK_PY: &str = r#"
import sys, json, re, datetime, yaml

class K8s(yaml.SafeLoader):
    pass

K8s.yaml_implicit_resolvers = {}
def add(tag, regexp, first):
    K8s.add_implicit_resolver('tag:yaml.org,2002:' + tag, re.compile(regexp, re.X), list(first))
add('bool', r'^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$', 'yYnNtTfFoO')
add('null', r'^(?:~|null|Null|NULL|)$', ['~', 'n', 'N', ''])
add('int', r'^[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|0[0-7_]+|[1-9][0-9_]*|0)$', '-+0123456789')
add('float', r'^[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$', '-+0123456789.')
add('merge', r'^(?:<<)$', '<')

TRUE = {'y', 'Y', 'yes', 'Yes', 'YES', 'true', 'True', 'TRUE', 'on', 'On', 'ON'}
def go_bool(loader, node):
    return loader.construct_scalar(node) in TRUE
def go_int(loader, node):
    s = loader.construct_scalar(node).replace('_', '')
    sign = -1 if s.startswith('-') else 1
    s = s.lstrip('+-')
    low = s.lower()
    if low.startswith('0x'): return sign * int(low[2:], 16)
    if low.startswith('0o'): return sign * int(low[2:], 8)
    if low.startswith('0b'): return sign * int(low[2:], 2)
    if len(s) > 1 and s.startswith('0'): return sign * int(s[1:], 8)
    return sign * int(s)
def go_float(loader, node):
    return float(loader.construct_scalar(node).replace('_', ''))
# go-yaml v2 and the merge-key spec: with `<<: [*a, *b]` the earlier mapping
# wins (PyYAML 6.0.4 lets the later one win); keys written in the mapping win.
def flatten_mapping(self, node):
    merge = []
    index = 0
    while index < len(node.value):
        key_node, value_node = node.value[index]
        if key_node.tag == 'tag:yaml.org,2002:merge':
            del node.value[index]
            subs = [value_node] if isinstance(value_node, yaml.MappingNode) else list(value_node.value)
            for sub in reversed(subs):
                self.flatten_mapping(sub)
                merge.extend(sub.value)
        else:
            index += 1
    if merge:
        node.value = merge + node.value
K8s.flatten_mapping = flatten_mapping
K8s.add_constructor('tag:yaml.org,2002:bool', go_bool)
K8s.add_constructor('tag:yaml.org,2002:int', go_int)
K8s.add_constructor('tag:yaml.org,2002:float', go_float)

def as_k8s(v):
    # sigs.k8s.io/yaml: keys become strings, whole floats integers.
    if isinstance(v, dict):
        return {key_k8s(k): as_k8s(x) for k, x in v.items()}
    if isinstance(v, list):
        return [as_k8s(x) for x in v]
    return scalar(v)
def key_k8s(k):
    if isinstance(k, bool): return 'true' if k else 'false'
    if k is None: return 'null'
    if isinstance(k, (int, float)): return json.dumps(scalar(k))
    return k
def strict(v):
    if isinstance(v, dict):
        return {(k if isinstance(k, str) else '!key ' + repr(k)): strict(x) for k, x in v.items()}
    if isinstance(v, list):
        return [strict(x) for x in v]
    return scalar(v)
def scalar(v):
    if isinstance(v, (datetime.date, datetime.datetime)): return '!date ' + v.isoformat()
    if isinstance(v, float) and v == int(v): return int(v)
    if isinstance(v, bytes): return '!bytes ' + repr(v)
    return v

out = []
for case in json.load(sys.stdin):
    out.append({
        'input': [as_k8s(d) for d in yaml.load_all(case['input'], Loader=K8s) if d is not None],
        'output_yaml11': [strict(d) for d in yaml.safe_load_all(case['output']) if d is not None],
        'output_k8s': [as_k8s(d) for d in yaml.load_all(case['output'], Loader=K8s) if d is not None],
    })
json.dump(out, sys.stdout)
"#;

fn venv() -> String {
    std::env::var("SIDEKEY_VENV")
        .unwrap_or_else(|_| format!("{}/../../.venv", env!("CARGO_MANIFEST_DIR")))
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus/manifests")
        .join(name)
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

fn inject(file: &Path, extra: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["inject", "-f"])
        .arg(file)
        .args(["--namespace", NAMESPACE])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run sidekey");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

struct ReadBack {
    input: Vec<Value>,
    output_yaml11: Vec<Value>,
    output_k8s: Vec<Value>,
}

/// One python process for all the cases.
fn read_back(cases: &[(String, String)]) -> Vec<ReadBack> {
    let payload: Vec<Value> = cases
        .iter()
        .map(|(i, o)| json!({"input": i, "output": o}))
        .collect();
    let mut child = Command::new(format!("{}/bin/python", venv()))
        .args(["-c", READBACK_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test venv's python (scripts/venv makes it)");
    let body = serde_json::to_vec(&payload).expect("json");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut stdin, &body).expect("write cases");
    });
    let out = child.wait_with_output().expect("python");
    writer.join().expect("writer");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("python's json");
    answers
        .into_iter()
        .map(|mut a| {
            let take = |a: &mut Value, k: &str| -> Vec<Value> {
                serde_json::from_value(a[k].take()).expect("list of documents")
            };
            ReadBack {
                input: take(&mut a, "input"),
                output_yaml11: take(&mut a, "output_yaml11"),
                output_k8s: take(&mut a, "output_k8s"),
            }
        })
        .collect()
}

/// The output as a YAML 1.2 reader (yaml-rust2's core schema) reads it.
fn read_yaml12(text: &str) -> Vec<Value> {
    use yaml_rust2::{Yaml, YamlLoader};
    fn conv(y: &Yaml) -> Value {
        match y {
            Yaml::Real(s) => {
                let f: f64 = s.parse().expect("real");
                if f.fract() == 0.0 {
                    json!(f as i64)
                } else {
                    json!(f)
                }
            }
            Yaml::Integer(i) => json!(i),
            Yaml::String(s) => json!(s),
            Yaml::Boolean(b) => json!(b),
            Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Yaml::String(s) => s.clone(),
                            other => format!("!key {other:?}"),
                        };
                        (key, conv(v))
                    })
                    .collect(),
            ),
            Yaml::Null => Value::Null,
            other => json!(format!("!{other:?}")),
        }
    }
    YamlLoader::load_from_str(text)
        .expect("YAML 1.2 reader")
        .iter()
        .filter(|d| !d.is_null())
        .map(conv)
        .collect()
}

/// The planner's own result, applied to the input as kubectl reads it:
/// what the output must be.
fn expected(doc: Value, config: &Config) -> Value {
    let mut doc = doc;
    let kind = doc["kind"].as_str().unwrap_or("").to_owned();
    if kind == "List" {
        if let Some(items) = doc["items"].as_array_mut() {
            for item in items.iter_mut() {
                *item = expected(item.take(), config);
            }
        }
        return doc;
    }
    let pointer = match kind.as_str() {
        "Pod" => "",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return doc,
    };
    let template = doc.pointer(pointer).cloned().expect("template");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or(json!({})),
        "spec": template["spec"].clone()});
    let text = serde_json::to_string(&pod).expect("json");
    let view = sidekey_patch::PodView::from_json(&text).expect("pod view");
    let request = Request {
        namespace: NAMESPACE,
        user: None,
    };
    match sidekey_patch::plan(&view, &request, config) {
        Decision::Inject(plan) => {
            let ops = plan.patch.operations().expect("ops");
            let patched = sidekey_patch::apply(&pod, &ops).expect("applies");
            let slot = doc.pointer_mut(pointer).expect("slot");
            for key in ["metadata", "spec"] {
                slot[key] = patched[key].clone();
            }
            doc
        }
        Decision::Skip { .. } => doc,
        Decision::Deny(d) => panic!("the oracle was asked about a denied pod: {d:?}"),
    }
}

/// kubernetes-validate needs `metadata.name`; the API server makes it from
/// `generateName`, as this does for the check.
fn validate(text: &str, name: &str) {
    let text = text
        .replace("generateName: ", "name: ")
        .replace("\"generateName\"", "\"name\"");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, &text).expect("write");
    let check = Command::new(format!("{}/bin/kubernetes-validate", venv()))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("kubernetes-validate (scripts/venv installs it)");
    assert!(
        check.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Every reader reads the output as the input plus the injection.
fn assert_round_trip(name: &str, input: &str, output: &str, back: &ReadBack) {
    let config = Config::default_for(None);
    let want: Vec<Value> = back
        .input
        .iter()
        .cloned()
        .map(|d| expected(d, &config))
        .collect();
    assert_eq!(
        back.output_yaml11, want,
        "{name}: YAML 1.1 (PyYAML) read-back\n{input}\n{output}"
    );
    assert_eq!(
        back.output_k8s, want,
        "{name}: go-yaml v2 rules read-back\n{output}"
    );
    assert_eq!(
        read_yaml12(output),
        want,
        "{name}: YAML 1.2 (yaml-rust2) read-back\n{output}"
    );
}

const PASSING: &[&str] = &[
    "octal-modes.yaml",
    "yaml11-scalars.yaml",
    "merge-keys.yaml",
    "list-and-rc.yaml",
    "generate-name.yaml",
    "windows-args-mixed.yaml",
];

#[test]
fn corpus_outputs_read_back_as_the_input_plus_the_injection_and_validate() {
    let mut cases = Vec::new();
    let mut runs = Vec::new();
    for name in PASSING {
        let path = corpus(name);
        let run = inject(&path, &[]);
        assert_eq!(run.status, 0, "{name}: {}", run.stderr);
        assert!(!run.stderr.contains("line 1 column"), "{}", run.stderr);
        validate(&run.stdout, name);
        cases.push((
            std::fs::read_to_string(&path).expect("read"),
            run.stdout.clone(),
        ));
        runs.push(run);
    }
    let backs = read_back(&cases);
    for ((name, (input, output)), back) in PASSING.iter().zip(&cases).zip(&backs) {
        assert_round_trip(name, input, output, back);
        // Every opted-in workload was injected (no silent pass-through).
        let injected = output.matches("sidekey.io/injected").count();
        let opted = input.matches("sidekey.io/inject: \"true\"").count();
        assert_eq!(injected, opted, "{name}\n{output}");
    }
    // --output json: the same objects (a v1 List for several documents).
    for ((name, _), back) in PASSING.iter().zip(&cases).zip(&backs) {
        let run = inject(&corpus(name), &["--output", "json"]);
        assert_eq!(run.status, 0, "{name}: {}", run.stderr);
        let got: Value = serde_json::from_str(&run.stdout).expect("stdout is one JSON value");
        let want = if back.output_yaml11.len() == 1 {
            back.output_yaml11[0].clone()
        } else {
            json!({"apiVersion": "v1", "kind": "List", "items": back.output_yaml11})
        };
        assert_eq!(got, want, "{name}");
        validate(&run.stdout, &format!("{name}.json"));
    }
}

fn read_output(name: &str) -> (Run, Vec<Value>) {
    let run = inject(&corpus(name), &[]);
    assert_eq!(run.status, 0, "{name}: {}", run.stderr);
    let input = std::fs::read_to_string(corpus(name)).expect("read");
    let back = read_back(&[(input, run.stdout.clone())]).remove(0);
    (run, back.output_yaml11)
}

#[test]
fn octal_modes_stay_numbers_and_yaml11_strings_stay_strings() {
    let (_, docs) = read_output("octal-modes.yaml");
    let volumes = &docs[0]["spec"]["template"]["spec"]["volumes"];
    let by_name = |n: &str| {
        volumes
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == n))
            .cloned()
            .expect("volume")
    };
    assert_eq!(by_name("scripts")["configMap"]["defaultMode"], json!(0o755));
    assert_eq!(by_name("keys")["secret"]["defaultMode"], json!(0o400));
    assert_eq!(by_name("keys")["secret"]["items"][0]["mode"], json!(0o600));
    assert_eq!(docs[1]["data"]["mode"], json!("0755"));

    let (_, docs) = read_output("yaml11-scalars.yaml");
    let env = &docs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"];
    for (name, value) in [
        ("VERBOSE", "yes"),
        ("CACHE", "on"),
        ("DRY_RUN", "NO"),
        ("CONFIRM", "y"),
        ("SHORT_N", "n"),
        ("OFFLINE", "Off"),
        ("LIMIT", "1_000"),
        ("AT", "12:30"),
        ("SINCE", "2024-01-02"),
        ("MODE", "0755"),
        ("NOTHING", "~"),
        ("MERGE", "<<"),
        ("TRUE_WORD", "True"),
        ("FLOAT", "1e3"),
        ("DASH", "- item"),
        ("MULTI", "line one\nline two"),
    ] {
        let got = env
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == name))
            .map(|e| e["value"].clone());
        assert_eq!(got, Some(json!(value)), "{name}");
    }
    assert_eq!(docs[0]["spec"]["suspend"], json!(false));
    assert_eq!(
        docs[0]["spec"]["jobTemplate"]["spec"]["backoffLimit"],
        json!(3)
    );
    let spec = &docs[1]["spec"];
    assert_eq!(spec["replicas"], json!(10));
    assert_eq!(spec["template"]["spec"]["enableServiceLinks"], json!(false));
    assert_eq!(
        spec["template"]["spec"]["automountServiceAccountToken"],
        json!(false)
    );
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        json!(80)
    );
}

#[test]
fn merge_keys_are_applied_to_commands_and_files_mode_mounts() {
    let (run, docs) = read_output("merge-keys.yaml");
    assert!(
        run.stderr.contains("Deployment worker: injected"),
        "{}",
        run.stderr
    );
    let worker = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(worker["name"], json!("worker"));
    assert_eq!(worker["imagePullPolicy"], json!("Always"));
    assert_eq!(
        worker["command"],
        json!([
            "/sidekey/bin/sidekey-agent",
            "exec",
            "--",
            "/worker",
            "--queue",
            "jobs",
            "--prepare"
        ])
    );
    let containers = docs[1]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .expect("containers");
    let sidecar = containers
        .iter()
        .find(|c| c["name"] == "sidecar")
        .expect("sidecar");
    assert_eq!(sidecar["image"], json!("example/sidecar:1"));
    let mounts: Vec<&str> = sidecar["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/data"), "{mounts:?}");
    assert!(mounts.contains(&"/run/secrets/sidekey"), "{mounts:?}");
    assert!(!run.stdout.contains("<<"), "{}", run.stdout);
}

#[test]
fn lists_replication_controllers_generate_name_and_bare_pods_are_injected_and_reported() {
    let (run, docs) = read_output("list-and-rc.yaml");
    for line in [
        "document 1 item 1: Deployment listed: injected",
        "document 1 item 2 item 1: Pod nested: injected",
        "document 2: ReplicationController legacy: injected",
    ] {
        assert!(run.stderr.contains(line), "{line}: {}", run.stderr);
    }
    assert_eq!(docs[0]["kind"], json!("List"));
    assert_eq!(docs[0]["items"][2]["kind"], json!("Service"));
    let (run, _) = read_output("generate-name.yaml");
    for line in [
        "document 1: Job migrate-*: injected",
        "document 2: Pod debug: injected",
    ] {
        assert!(run.stderr.contains(line), "{line}: {}", run.stderr);
    }
}

#[test]
fn every_problem_of_every_document_is_listed_and_nothing_is_printed() {
    let run = inject(&corpus("multi-doc-denied.yaml"), &[]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    for part in [
        "multi-doc-denied.yaml document 3: Deployment wrong-env: denied in namespace staging [sidekey.io/environment]",
        "multi-doc-denied.yaml document 4: Deployment unquoted: pod template annotation sidekey.io/inject is a boolean (true), but annotations must be strings; quote it: sidekey.io/inject: \"true\"",
        "multi-doc-denied.yaml document 5: Job no-command-*: denied",
        "multi-doc-denied.yaml document 6: Deployment unquoted-env: container \"app\" command[2] is a number (8080), but command must be strings; quote it: \"8080\"",
        "multi-doc-denied.yaml document 6: Deployment unquoted-env: container \"app\" env VERBOSE value is a boolean (true), but env values must be strings; quote it: value: \"true\" (or the word as written",
        "5 problems in",
        "nothing printed",
    ] {
        assert!(run.stderr.contains(part), "{part}\n{}", run.stderr);
    }
    assert!(!run.stderr.contains("document 2"), "{}", run.stderr);
    assert!(!run.stderr.contains("line 1 column"), "{}", run.stderr);
    assert!(!run.stderr.contains("Job ?"), "{}", run.stderr);
}

#[test]
fn windows_pods_are_denied_and_args_only_and_mixed_image_pods_are_injected() {
    let run = inject(&corpus("windows.yaml"), &[]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    for part in [
        "windows.yaml document 1: Deployment win-os: denied in namespace staging: the pod runs on Windows (spec.os.name is windows)",
        "windows.yaml document 2: Pod win-selector: denied in namespace staging: the pod runs on Windows (its nodeSelector kubernetes.io/os is windows)",
        "2 problems in",
    ] {
        assert!(run.stderr.contains(part), "{part}\n{}", run.stderr);
    }
    let (run, docs) = read_output("windows-args-mixed.yaml");
    assert!(
        run.stderr.contains("Deployment args-only: injected"),
        "{}",
        run.stderr
    );
    let app = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        app["command"],
        json!(["/sidekey/bin/sidekey-agent", "exec", "--"])
    );
    assert_eq!(app["args"], json!(["/app", "--port", "8080"]));
    let containers = &docs[1]["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[0]["command"],
        json!(["/sidekey/bin/sidekey-agent", "exec", "--", "/web", "serve"])
    );
    assert_eq!(containers[0]["args"], json!(["--port", "8080"]));
    assert_eq!(
        containers[1]["command"],
        json!([
            "/sidekey/bin/sidekey-agent",
            "exec",
            "--",
            "/usr/bin/worker"
        ])
    );
}

// ---- generated manifests -------------------------------------------------

/// Scalars as written in YAML: plain ones that YAML 1.1 reads as something
/// else than a string, and quoted ones that must stay strings.
const TOKENS: &[&str] = &[
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "N",
    "true",
    "False",
    "~",
    "null",
    "0755",
    "0x1F",
    "1_000",
    "-12",
    "+7",
    "3.0",
    "1.5",
    "2.5e3",
    "08",
    "12:30",
    "2024-01-02",
    "2001-12-14t21:59:43.10-05:00",
    "plain",
    "two words",
    "/path/x",
    "\"yes\"",
    "'on'",
    "\"0755\"",
    "\"12:30\"",
    "'<<'",
    "\"- x\"",
    "\"a: b\"",
    "\"#hash\"",
    "\"tab\\there\"",
    "\"line\\nbreak\"",
    "'2024-01-02'",
    "\"~\"",
    "\"\"",
    "\"NULL\"",
    "'1e3'",
    "\"é ü\"",
    "\"\\u0085\"",
    "\"=\"",
    "\"!tag\"",
];

/// Keys that are strings as kubectl reads them.
const KEYS: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "\"on\"",
    "'yes'",
    "\"12:30\"",
    "k-1",
];

#[derive(Debug, Clone)]
struct Gen {
    docs: Vec<DocGen>,
}

#[derive(Debug, Clone)]
struct DocGen {
    workload: bool,
    flow: bool,
    data: Vec<(usize, usize)>,
    merged: Vec<(usize, usize)>,
    env: Vec<usize>,
    command_via_merge: bool,
}

fn doc_strategy() -> impl Strategy<Value = DocGen> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((0..KEYS.len(), 0..TOKENS.len()), 0..5),
        prop::collection::vec((0..KEYS.len(), 0..TOKENS.len()), 0..4),
        prop::collection::vec(0..TOKENS.len(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(workload, flow, data, merged, env, command_via_merge)| DocGen {
                workload,
                flow,
                data,
                merged,
                env,
                command_via_merge,
            },
        )
}

/// A mapping of distinct keys, block or flow.
fn mapping(entries: &[(usize, usize)], flow: bool, indent: &str) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let items: Vec<String> = entries
        .iter()
        .filter(|(k, _)| seen.insert(*k))
        .map(|(k, v)| format!("{}: {}", KEYS[*k], TOKENS[*v]))
        .collect();
    if flow || items.is_empty() {
        format!(" {{{}}}\n", items.join(", "))
    } else {
        let mut s = "\n".to_owned();
        for i in items {
            s.push_str(&format!("{indent}{i}\n"));
        }
        s
    }
}

/// Env values must be strings for the planner: plain tokens that resolve
/// to something else are quoted, the quoted ones kept.
fn env_value(t: &str) -> String {
    if t.starts_with('"') || t.starts_with('\'') {
        t.to_owned()
    } else {
        format!("{t:?}")
    }
}

fn render(g: &Gen) -> String {
    let mut out = String::new();
    for (i, d) in g.docs.iter().enumerate() {
        out.push_str("---\n");
        if d.workload {
            out.push_str(&format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: gen-{i}\n  annotations:\n    note: &note {}\nspec:\n  selector:\n    matchLabels: &labels {{app: gen-{i}}}\n  template:\n    metadata:\n      labels: *labels\n      annotations: {{sidekey.io/inject: \"true\", sidekey.io/services: api, copied: *note}}\n    spec:\n      initContainers:\n        - &base\n          name: init\n          image: example/init:1\n          command: [/init, \"on\"]\n      containers:\n",
                env_value(TOKENS[d.data.first().map(|x| x.1).unwrap_or(0)])
            ));
            if d.command_via_merge {
                out.push_str("        - <<: *base\n          name: app\n");
            } else {
                out.push_str("        - name: app\n          image: example/app:1\n          command: [/app, --flag=yes]\n");
            }
            if d.env.is_empty() {
                out.push_str("          env: []\n");
            } else {
                out.push_str("          env:\n");
                for (j, t) in d.env.iter().enumerate() {
                    if d.flow {
                        out.push_str(&format!(
                            "            - {{name: V{j}, value: {}}}\n",
                            env_value(TOKENS[*t])
                        ));
                    } else {
                        out.push_str(&format!(
                            "            - name: V{j}\n              value: {}\n",
                            env_value(TOKENS[*t])
                        ));
                    }
                }
            }
        } else {
            out.push_str(&format!("apiVersion: example.com/v1\nkind: Example\nmetadata: {{name: ex-{i}}}\nbase: &base{i}"));
            out.push_str(&mapping(&d.data, d.flow, "  "));
            out.push_str(&format!("merged:\n  <<: *base{i}\n"));
            let mut seen = std::collections::BTreeSet::new();
            for (k, v) in &d.merged {
                if seen.insert(*k) {
                    out.push_str(&format!("  {}: {}\n", KEYS[*k], TOKENS[*v]));
                }
            }
            out.push_str("list: [");
            let list: Vec<&str> = d.data.iter().map(|(_, v)| TOKENS[*v]).collect();
            out.push_str(&list.join(", "));
            out.push_str("]\n");
        }
    }
    out
}

#[test]
fn generated_manifests_round_trip_through_every_reader() {
    let strategy = prop::collection::vec(doc_strategy(), 1..4).prop_map(|docs| Gen { docs });
    let mut runner = TestRunner::deterministic();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases = Vec::new();
    for n in 0..64 {
        let g = strategy.new_tree(&mut runner).expect("generate").current();
        let text = render(&g);
        let path = dir.path().join(format!("case-{n}.yaml"));
        std::fs::write(&path, &text).expect("write");
        let run = inject(&path, &[]);
        assert_eq!(run.status, 0, "case {n}: {}\n{text}", run.stderr);
        cases.push((text, run.stdout));
    }
    let backs = read_back(&cases);
    for (n, ((input, output), back)) in cases.iter().zip(&backs).enumerate() {
        assert!(
            !output.contains("<<") || output.contains("\"<<\""),
            "case {n}\n{output}"
        );
        assert_round_trip(&format!("case {n}"), input, output, back);
    }
}

// ---- the same pods through the webhook -------------------------------------

/// The injector binary (target/debug/sidekey-injector, built with the
/// workspace, as tests/tests/whole_life.rs runs it), serving HTTPS on a
/// free port with a certificate made now by rcgen; requests go through
/// curl, which checks the certificate against the test CA.
struct Webhook {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl Webhook {
    fn start() -> Webhook {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "inject-test-ca");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("key");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).expect("write");
        std::fs::write(dir.path().join("tls.crt"), leaf_cert.pem()).expect("write");
        std::fs::write(dir.path().join("tls.key"), leaf_key.serialize_pem()).expect("write");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let bin = std::env::current_exe()
            .expect("test executable")
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("sidekey-injector");
        let child = Command::new(&bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .arg("--audit")
            .arg(format!("file:{}", dir.path().join("audit.jsonl").display()))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("injector.err")).expect("log"),
            ))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (cargo build -p sidekey-injector, or cargo test --workspace, builds it)",
                    bin.display()
                )
            });
        let mut webhook = Webhook { dir, port, child };
        // Ready when /readyz answers (bounded: 300 tries).
        for _ in 0..300 {
            if webhook
                .curl(&["-fsS", &webhook.url("/readyz")], None)
                .status
                .success()
            {
                return webhook;
            }
            if let Ok(Some(status)) = webhook.child.try_wait() {
                let err = std::fs::read_to_string(webhook.dir.path().join("injector.err"))
                    .unwrap_or_default();
                panic!("the injector exited ({status}): {err}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the injector never became ready");
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn curl(&self, args: &[&str], body: Option<&Path>) -> std::process::Output {
        let mut cmd = Command::new("curl");
        cmd.arg("--cacert")
            .arg(self.dir.path().join("ca.crt"))
            .args(args);
        if let Some(b) = body {
            cmd.arg("--data-binary").arg(format!("@{}", b.display()));
        }
        cmd.output().expect("curl")
    }

    /// The pod as the webhook patches it (the patch applied here).
    fn admit(&self, pod: &Value) -> Value {
        use base64::Engine as _;
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "inject-0001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": NAMESPACE,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false
            }
        });
        let body = self.dir.path().join("review.json");
        std::fs::write(&body, review.to_string()).expect("write review");
        let out = self.curl(
            &[
                "-fsS",
                "-H",
                "Content-Type: application/json",
                &self.url("/mutate"),
            ],
            Some(&body),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("review answer");
        let response = &answer["response"];
        assert_eq!(response["allowed"], json!(true), "{response}");
        let patch = response["patch"].as_str().expect("a patch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("base64");
        let patch: sidekey_patch::json_patch::Patch =
            serde_json::from_slice(&bytes).expect("JSON Patch");
        sidekey_patch::apply(pod, &patch).expect("the patch applies")
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every (input template, output template) pair of opted-in workloads,
/// Lists walked.
fn templates(input: &Value, output: &Value, out: &mut Vec<(Value, Value)>) {
    let kind = input["kind"].as_str().unwrap_or("");
    if kind == "List" {
        for (i, o) in input["items"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(output["items"].as_array().into_iter().flatten())
        {
            templates(i, o, out);
        }
        return;
    }
    let pointer = match kind {
        "Pod" => "",
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return,
    };
    let (Some(i), Some(o)) = (input.pointer(pointer), output.pointer(pointer)) else {
        return;
    };
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": i.get("metadata").cloned().unwrap_or(json!({})),
        "spec": i["spec"].clone()});
    if pointer.is_empty() {
        pod["metadata"] = input["metadata"].clone();
    } else {
        let base = input["metadata"]["name"]
            .as_str()
            .or(input["metadata"]["generateName"].as_str())
            .unwrap_or("pod")
            .trim_end_matches('-');
        pod["metadata"]["generateName"] = json!(format!("{base}-"));
    }
    pod["metadata"]["namespace"] = json!(NAMESPACE);
    out.push((pod, o.clone()));
}

#[test]
fn corpus_pods_through_the_webhook_equal_the_inject_output_and_validate() {
    let webhook = Webhook::start();
    let mut cases = Vec::new();
    let mut outputs = Vec::new();
    for name in PASSING {
        let path = corpus(name);
        let run = inject(&path, &["--output", "json"]);
        assert_eq!(run.status, 0, "{name}: {}", run.stderr);
        let got: Value = serde_json::from_str(&run.stdout).expect("json");
        // Several documents come as a v1 List of them.
        outputs.push(if got["kind"] == "List" {
            got["items"].as_array().cloned().expect("items")
        } else {
            vec![got]
        });
        cases.push((std::fs::read_to_string(&path).expect("read"), String::new()));
    }
    let backs = read_back(&cases);
    let mut pods = Vec::new();
    let mut stream = String::new();
    for ((name, back), output) in PASSING.iter().zip(&backs).zip(&outputs) {
        assert_eq!(back.input.len(), output.len(), "{name}");
        let mut pairs = Vec::new();
        for (i, o) in back.input.iter().zip(output) {
            templates(i, o, &mut pairs);
        }
        assert!(!pairs.is_empty(), "{name}");
        for (pod, template) in pairs {
            let patched = webhook.admit(&pod);
            assert_eq!(patched["spec"], template["spec"], "{name}: spec");
            assert_eq!(
                patched["metadata"]["annotations"], template["metadata"]["annotations"],
                "{name}: annotations"
            );
            stream.push_str("---\n");
            stream.push_str(&serde_json::to_string(&patched).expect("json"));
            stream.push('\n');
            pods.push(patched);
        }
    }
    // Pods with generateName only: validate() gives them a name.
    validate(&stream, "webhook-pods.yaml");
    assert!(pods.len() >= 9, "{}", pods.len());
}
