//! What a wrapped container runs: the container's command, the
//! `sidekey.io/command` annotations, or the image's config
//! ([`ImageConfig`]), each checked against the container runtime's rule
//! (containerd's, from Docker): what runs after injection is
//! `sidekey-agent exec --` followed by exactly what ran before.

mod support;

use serde_json::{json, Value};
use sidekey_patch::{
    apply, image_lookups, plan_with_images, Config, Decision, Denial, ImageConfig, ImageConfigs,
    ImageLookup, PodView, Request, AGENT_INSTALLED,
};
use support::{fixtures, INJECTOR_NS};

fn base_pod() -> Value {
    let text = std::fs::read_to_string(fixtures().join("env-basic/review.json")).unwrap();
    let review: Value = serde_json::from_str(&text).unwrap();
    review["request"]["object"].clone()
}

fn config() -> Config {
    Config::default_for(Some(INJECTOR_NS))
}

fn decide(pod: &Value, images: &ImageConfigs) -> Decision {
    let text = serde_json::to_string(pod).unwrap();
    plan_with_images(
        &PodView::from_json(&text).unwrap(),
        &Request {
            namespace: "shop",
            user: None,
        },
        &config(),
        images,
    )
}

fn injected(pod: &Value, images: &ImageConfigs) -> Value {
    match decide(pod, images) {
        Decision::Inject(p) => apply(pod, &p.patch.operations().unwrap()).unwrap(),
        other => panic!("expected an injection, got {other:?}"),
    }
}

fn denials(pod: &Value, images: &ImageConfigs) -> Vec<Denial> {
    match decide(pod, images) {
        Decision::Deny(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
    ImageConfig {
        entrypoint: strs(entrypoint),
        cmd: strs(cmd),
    }
}

fn images(name: &str, config: ImageConfig) -> ImageConfigs {
    [(name.to_owned(), config)].into_iter().collect()
}

/// The pod's first container with `command` and `args` set as given
/// (`None`: absent).
fn pod_with(command: Option<&[&str]>, args: Option<&[&str]>) -> Value {
    let mut pod = base_pod();
    let c = pod["spec"]["containers"][0].as_object_mut().unwrap();
    c.remove("command");
    c.remove("args");
    if let Some(cmd) = command {
        c.insert("command".into(), json!(cmd));
    }
    if let Some(args) = args {
        c.insert("args".into(), json!(args));
    }
    pod
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// What the container runtime runs for `container` on `image` (containerd
/// `buildLinuxSpec`, after Docker): a command (not empty) runs with the
/// args; else the image's ENTRYPOINT (`[""]` is none) with the args, or
/// with the image's CMD when there are no args. `None`: "no command
/// specified".
fn runtime_runs(container: &Value, image: &ImageConfig) -> Option<Vec<String>> {
    // The kubelet expands the container's own command and args, never the
    // image's ENTRYPOINT and CMD.
    let expand = |words: Vec<String>| -> Vec<String> {
        words
            .iter()
            .map(|w| kubelet_expand(w, &container["env"]))
            .collect()
    };
    let command = expand(string_list(&container["command"]));
    let mut args = expand(string_list(&container["args"]));
    let mut run = command.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        run = if image.entrypoint == [String::new()] {
            Vec::new()
        } else {
            image.entrypoint.clone()
        };
    }
    run.extend(args);
    (!run.is_empty()).then_some(run)
}

/// The kubelet's expansion of a command or args word
/// (`k8s.io/kubernetes/third_party/forked/golang/expansion`): `$$` is `$`,
/// `$(NAME)` is the value of the container's env entry NAME when it has
/// one (else kept as written), any other `$` is kept.
fn kubelet_expand(word: &str, env: &Value) -> String {
    let value_of = |name: &str| {
        env.as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned)
    };
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match value_of(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn wrapped(run: &[String]) -> Vec<String> {
    [AGENT_INSTALLED, "exec", "--"]
        .iter()
        .map(|s| s.to_string())
        .chain(run.iter().cloned())
        .collect()
}

#[test]
fn wrapped_tail_follows_the_kubelet_rule() {
    let nginx = image(&["/docker-entrypoint.sh"], &["nginx", "-g", "daemon off;"]);
    assert_eq!(
        nginx.wrapped_tail(false),
        ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    );
    assert_eq!(nginx.wrapped_tail(true), ["/docker-entrypoint.sh"]);
    let python = image(&[], &["python3", "app.py"]);
    assert_eq!(python.wrapped_tail(false), ["python3", "app.py"]);
    assert!(python.wrapped_tail(true).is_empty());
    let blank = image(&[""], &["/bin/app"]);
    assert_eq!(blank.wrapped_tail(false), ["/bin/app"]);
    assert!(blank.wrapped_tail(true).is_empty());
    assert!(ImageConfig::default().wrapped_tail(false).is_empty());
    // The kubelet expands `$$` and `$(VAR)` in a command, not in an image's
    // CMD: the words are written so that its expansion gives them back.
    let dollars = image(
        &["/bin/sh", "-c"],
        &["echo $$ $(SIDEKEY_ENVIRONMENT) $$(X)"],
    );
    assert_eq!(
        dollars.wrapped_tail(false),
        ["/bin/sh", "-c", "echo $$$$ $$(SIDEKEY_ENVIRONMENT) $$$$(X)"]
    );
}

/// Every combination of image config and container args: the injected
/// container runs `sidekey-agent exec --` and then exactly what it ran
/// before; where nothing ran before, the pod is denied.
#[test]
fn with_image_configs_the_app_runs_as_before() {
    let entrypoints: [&[&str]; 4] = [&[], &[""], &["/entry"], &["/bin/sh", "-c"]];
    let cmds: [&[&str]; 4] = [
        &[],
        &["serve"],
        &["run", "--port", "80"],
        &[
            "sh",
            "-c",
            "echo $$ $HOME $$(X) $(SIDEKEY_ENVIRONMENT) $(PATH",
        ],
    ];
    let argses: [Option<&[&str]>; 3] = [None, Some(&[]), Some(&["--flag", "x y"])];
    let mut cases = 0;
    for entrypoint in entrypoints {
        for cmd in cmds {
            for args in argses {
                let config = image(entrypoint, cmd);
                let pod = pod_with(None, args);
                let before = runtime_runs(&pod["spec"]["containers"][0], &config);
                let configs = images("api", config.clone());
                let label = format!("{entrypoint:?} {cmd:?} {args:?}");
                match before {
                    Some(run) => {
                        let out = injected(&pod, &configs);
                        let c = &out["spec"]["containers"][0];
                        assert_eq!(runtime_runs(c, &config), Some(wrapped(&run)), "{label}");
                        assert_eq!(c["args"], pod["spec"]["containers"][0]["args"], "{label}");
                        cases += 1;
                    }
                    None => {
                        let d = denials(&pod, &configs);
                        assert!(
                            d.iter()
                                .any(|d| d.message.contains("neither ENTRYPOINT nor CMD")),
                            "{label}: {d:?}"
                        );
                    }
                }
            }
        }
    }
    assert!(cases > 20, "{cases}");
}

#[test]
fn a_container_command_wins_over_the_image_config() {
    let pod = pod_with(Some(&["/app/own"]), Some(&["a"]));
    let out = injected(&pod, &images("api", image(&["/entry"], &["cmd"])));
    assert_eq!(
        out["spec"]["containers"][0]["command"],
        json!([AGENT_INSTALLED, "exec", "--", "/app/own"])
    );
    assert_eq!(out["spec"]["containers"][0]["args"], json!(["a"]));
}

#[test]
fn the_annotation_wins_over_the_image_config() {
    let mut pod = pod_with(None, None);
    pod["metadata"]["annotations"]["sidekey.io/command"] = json!("[\"/from/annotation\"]");
    let out = injected(&pod, &images("api", image(&["/entry"], &["cmd"])));
    assert_eq!(
        out["spec"]["containers"][0]["command"],
        json!([AGENT_INSTALLED, "exec", "--", "/from/annotation"])
    );
}

#[test]
fn an_image_config_of_another_container_does_not_count() {
    let pod = pod_with(None, Some(&["serve"]));
    let d = denials(&pod, &images("other", image(&["/entry"], &[])));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].annotation.as_deref(), Some("sidekey.io/command"));
}

/// Without an image config, the denial says exactly what is needed, for a
/// container with and without args.
#[test]
fn the_no_command_denial_says_entrypoint_then_cmd() {
    let common = "the image's ENTRYPOINT followed by its CMD (unless the container sets args)";
    let d = denials(&pod_with(None, None), &ImageConfigs::new());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].annotation.as_deref(), Some("sidekey.io/command"));
    let m = &d[0].message;
    assert!(
        m.starts_with("container \"api\" has no command in the pod spec"),
        "{m}"
    );
    assert!(m.contains(common), "{m}");
    assert!(
        m.contains(
            "this container sets no args, so that is the image's ENTRYPOINT followed by its CMD"
        ),
        "{m}"
    );
    assert!(m.contains("sidekey.io/command"), "{m}");
    assert!(m.contains(".Config.Entrypoint"), "{m}");

    let d = denials(&pod_with(None, Some(&["serve"])), &ImageConfigs::new());
    let m = &d[0].message;
    assert!(m.contains(common), "{m}");
    assert!(
        m.contains("this container sets args, so that is the image's ENTRYPOINT alone"),
        "{m}"
    );
}

fn annotate(pod: &mut Value, key: &str, value: &str) {
    pod["metadata"]["annotations"][key] = json!(value);
}

/// A second app container `sidecar` (another image), no command.
fn two_containers(args_of_second: Option<&[&str]>) -> Value {
    let mut pod = pod_with(None, None);
    let mut second = json!({"name": "worker", "image": "registry.example.com/shop/worker:2"});
    if let Some(args) = args_of_second {
        second["args"] = json!(args);
    }
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(second);
    pod
}

fn warnings(pod: &Value) -> Vec<String> {
    match decide(pod, &ImageConfigs::new()) {
        Decision::Inject(p) => p.warnings,
        other => panic!("expected an injection, got {other:?}"),
    }
}

/// `sidekey.io/command: []`: the image has no ENTRYPOINT, the args are the
/// command; the wrapped command is `exec --` alone and the args follow.
#[test]
fn an_empty_command_annotation_wraps_the_args() {
    let mut pod = pod_with(None, Some(&["python3", "-m", "http.server"]));
    annotate(&mut pod, "sidekey.io/command", "[]");
    let out = injected(&pod, &ImageConfigs::new());
    let c = &out["spec"]["containers"][0];
    assert_eq!(c["command"], json!([AGENT_INSTALLED, "exec", "--"]));
    assert_eq!(c["args"], json!(["python3", "-m", "http.server"]));
    // What the runtime runs (the command is set: the image is not read).
    assert_eq!(
        runtime_runs(c, &image(&["/never"], &["never"])),
        Some(wrapped(&strs(&["python3", "-m", "http.server"])))
    );
}

#[test]
fn an_empty_command_annotation_needs_args() {
    for (key, args) in [
        ("sidekey.io/command", None),
        ("sidekey.io/command", Some(&[][..])),
        ("sidekey.io/command.api", None),
    ] {
        let mut pod = pod_with(None, args);
        annotate(&mut pod, key, "[]");
        let d = denials(&pod, &ImageConfigs::new());
        assert_eq!(d.len(), 1, "{key}: {d:?}");
        assert_eq!(d[0].annotation.as_deref(), Some(key));
        assert!(
            d[0].message.starts_with(&format!(
                "annotation {key} is [] (the image has no ENTRYPOINT: the container's args are \
                 the command), but container \"api\" sets no args"
            )),
            "{}",
            d[0].message
        );
    }
}

/// Per-container commands for containers on different images; the
/// pod-wide annotation covers the others; a container's own command wins.
#[test]
fn per_container_commands_win_over_the_pod_wide_one() {
    let mut pod = two_containers(Some(&["--queue", "jobs"]));
    annotate(&mut pod, "sidekey.io/command.worker", "[\"/worker/bin\"]");
    annotate(&mut pod, "sidekey.io/command", "[\"/app/api\",\"serve\"]");
    let out = injected(&pod, &ImageConfigs::new());
    let cs = &out["spec"]["containers"];
    assert_eq!(
        cs[0]["command"],
        json!([AGENT_INSTALLED, "exec", "--", "/app/api", "serve"])
    );
    assert_eq!(
        cs[1]["command"],
        json!([AGENT_INSTALLED, "exec", "--", "/worker/bin"])
    );
    assert_eq!(cs[1]["args"], json!(["--queue", "jobs"]));
    assert!(warnings(&pod).is_empty(), "{:?}", warnings(&pod));

    // Only per-container annotations: each container gets its own.
    let mut pod = two_containers(Some(&["main.py"]));
    annotate(&mut pod, "sidekey.io/command.api", "[\"/app/api\"]");
    annotate(&mut pod, "sidekey.io/command.worker", "[]");
    let out = injected(&pod, &ImageConfigs::new());
    let cs = &out["spec"]["containers"];
    assert_eq!(
        cs[0]["command"],
        json!([AGENT_INSTALLED, "exec", "--", "/app/api"])
    );
    assert_eq!(cs[1]["command"], json!([AGENT_INSTALLED, "exec", "--"]));
    assert_eq!(cs[1]["args"], json!(["main.py"]));

    // Without one for worker, worker is denied and named.
    let mut pod = two_containers(None);
    annotate(&mut pod, "sidekey.io/command.api", "[\"/app/api\"]");
    let d = denials(&pod, &ImageConfigs::new());
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].message
            .starts_with("container \"worker\" has no command in the pod spec"),
        "{}",
        d[0].message
    );
    assert!(d[0]
        .message
        .contains("sidekey.io/command.worker (this container)"));
}

#[test]
fn per_container_commands_are_checked() {
    let cases: [(&str, &str, Option<&str>, &str); 6] = [
        (
            "sidekey.io/command.nope",
            "[\"/x\"]",
            None,
            "annotation sidekey.io/command.nope: \"nope\" is not a container of this pod; the key \
             names the app container whose command it gives, and the pod's app containers are \
             api, worker",
        ),
        (
            "sidekey.io/command.setup",
            "[\"/x\"]",
            None,
            "annotation sidekey.io/command.setup: \"setup\" is an init container (sidekey wraps \
             only app containers)",
        ),
        (
            "sidekey.io/command.worker",
            "[\"/x\"]",
            Some("api"),
            "annotation sidekey.io/command.worker: container \"worker\" is not a target: \
             sidekey.io/containers does not name it",
        ),
        (
            "sidekey.io/command.",
            "[\"/x\"]",
            None,
            "annotation sidekey.io/command.: it names no container",
        ),
        (
            "sidekey.io/command.Api",
            "[\"/x\"]",
            None,
            "annotation sidekey.io/command.Api: \"Api\" is not a container name",
        ),
        (
            "sidekey.io/command.worker",
            "/worker/bin",
            None,
            "annotation sidekey.io/command.worker: it must be a JSON array of strings",
        ),
    ];
    for (key, value, containers, message) in cases {
        let mut pod = two_containers(Some(&["x"]));
        pod["spec"]["containers"][0]["command"] = json!(["/app/api"]);
        pod["spec"]["initContainers"] =
            json!([{"name": "setup", "image": "busybox", "command": ["true"]}]);
        annotate(&mut pod, "sidekey.io/command", "[\"/fallback\"]");
        if let Some(c) = containers {
            annotate(&mut pod, "sidekey.io/containers", c);
        }
        annotate(&mut pod, key, value);
        let d = denials(&pod, &ImageConfigs::new());
        assert_eq!(d.len(), 1, "{key}: {d:?}");
        assert_eq!(d[0].annotation.as_deref(), Some(key));
        assert!(d[0].message.starts_with(message), "{key}: {}", d[0].message);
    }
}

#[test]
fn unused_command_annotations_are_warned_about() {
    // api has its own command: its annotation is ignored; worker has its
    // own annotation, so the pod-wide one is unused.
    let mut pod = two_containers(Some(&["x"]));
    pod["spec"]["containers"][0]["command"] = json!(["/app/api"]);
    annotate(&mut pod, "sidekey.io/command.api", "[\"/other\"]");
    annotate(&mut pod, "sidekey.io/command.worker", "[\"/worker/bin\"]");
    annotate(&mut pod, "sidekey.io/command", "[\"/fallback\"]");
    let w = warnings(&pod);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with(
        "annotation sidekey.io/command.api is ignored: container \"api\" has its own command"
    ));
    assert!(w[1].starts_with("annotation sidekey.io/command is ignored"));
}

/// A pod injected with `[]` (the wrapped command `exec --` alone, the args
/// after it) passes the marker check when it comes back (reinvocation).
#[test]
fn an_args_only_pod_is_recognised_when_it_comes_back() {
    let mut pod = pod_with(None, Some(&["python3", "app.py"]));
    annotate(&mut pod, "sidekey.io/command", "[]");
    let out = injected(&pod, &ImageConfigs::new());
    match decide(&out, &ImageConfigs::new()) {
        Decision::Skip { reason } => assert!(reason.contains("already injected"), "{reason}"),
        other => panic!("expected a skip, got {other:?}"),
    }
    // Without args, `exec --` alone is not the wrapped command.
    let mut emptied = out.clone();
    emptied["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("args");
    let d = denials(&emptied, &ImageConfigs::new());
    assert!(
        d.iter()
            .any(|d| d.message.contains("does not start its command with")),
        "{d:?}"
    );
}

/// Windows pods are denied, through `spec.os.name` or a node selector,
/// with every other problem; Linux ones are not.
#[test]
fn windows_pods_are_denied() {
    let cases: [(&str, Value, &str); 3] = [
        (
            "os",
            json!({"os": {"name": "windows"}}),
            "spec.os.name is windows",
        ),
        (
            "selector",
            json!({"nodeSelector": {"kubernetes.io/os": "windows"}}),
            "its nodeSelector kubernetes.io/os is windows",
        ),
        (
            "beta selector",
            json!({"nodeSelector": {"beta.kubernetes.io/os": "windows"}}),
            "its nodeSelector beta.kubernetes.io/os is windows",
        ),
    ];
    for (label, fields, why) in cases {
        for files in [false, true] {
            let mut pod = pod_with(Some(&["/app/api"]), None);
            for (k, v) in fields.as_object().unwrap() {
                pod["spec"][k] = v.clone();
            }
            if files {
                annotate(&mut pod, "sidekey.io/delivery", "files");
            }
            let d = denials(&pod, &ImageConfigs::new());
            assert_eq!(d.len(), 1, "{label}: {d:?}");
            assert_eq!(d[0].annotation, None);
            assert_eq!(
                d[0].message,
                format!(
                    "the pod runs on Windows ({why}): sidekey's agent and what the injector adds \
                     (a Linux binary, runAsNonRoot, seccomp, memory volumes) are Linux-only, and \
                     sidekey does not support Windows pods; remove sidekey.io/inject from this \
                     pod, or run it on Linux nodes"
                ),
                "{label}"
            );
        }
    }
    // Other problems are reported with it.
    let mut pod = pod_with(None, None);
    pod["spec"]["os"] = json!({"name": "windows"});
    assert_eq!(denials(&pod, &ImageConfigs::new()).len(), 2);
    // Linux, stated either way, is injected.
    let mut pod = pod_with(Some(&["/app/api"]), None);
    pod["spec"]["os"] = json!({"name": "linux"});
    pod["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    injected(&pod, &ImageConfigs::new());
}

fn lookups(pod: &Value, namespace: &str) -> Vec<(String, Option<String>)> {
    let text = serde_json::to_string(pod).unwrap();
    let view = PodView::from_json(&text).unwrap();
    image_lookups(
        &view,
        &Request {
            namespace,
            user: None,
        },
        &config(),
    )
    .into_iter()
    .map(|ImageLookup { container, image }| (container.to_owned(), image.map(str::to_owned)))
    .collect()
}

/// The containers to look up are exactly those whose image config the
/// plan reads.
#[test]
fn image_lookups_name_the_containers_the_plan_needs() {
    let api = (
        "api".to_owned(),
        Some("registry.example.com/shop/api:1.4.2".to_owned()),
    );
    let worker = (
        "worker".to_owned(),
        Some("registry.example.com/shop/worker:2".to_owned()),
    );
    let pod = two_containers(None);
    assert_eq!(lookups(&pod, "shop"), [api.clone(), worker.clone()]);
    // Excluded namespace, files delivery, a pod-wide command: none.
    assert!(lookups(&pod, "kube-system").is_empty());
    let mut files = pod.clone();
    annotate(&mut files, "sidekey.io/delivery", "files");
    assert!(lookups(&files, "shop").is_empty());
    let mut pod_wide = pod.clone();
    annotate(&mut pod_wide, "sidekey.io/command", "[]");
    assert!(lookups(&pod_wide, "shop").is_empty());
    // A per-container command, a container with its own, a selection.
    let mut one = pod.clone();
    annotate(&mut one, "sidekey.io/command.api", "[\"/app/api\"]");
    assert_eq!(lookups(&one, "shop"), std::slice::from_ref(&worker));
    let mut own = pod.clone();
    own["spec"]["containers"][1]["command"] = json!(["/w"]);
    assert_eq!(lookups(&own, "shop"), std::slice::from_ref(&api));
    let mut selected = pod.clone();
    annotate(&mut selected, "sidekey.io/containers", "worker");
    assert_eq!(lookups(&selected, "shop"), std::slice::from_ref(&worker));
    // Not opted in, refused annotations: none.
    let mut out = pod.clone();
    out["metadata"]["annotations"]["sidekey.io/inject"] = json!("false");
    assert!(lookups(&out, "shop").is_empty());
    let mut bad = pod.clone();
    annotate(&mut bad, "sidekey.io/delivery", "nope");
    assert!(lookups(&bad, "shop").is_empty());
    // With those configs the plan injects, and the injected pod needs none.
    let configs: ImageConfigs = [
        ("api".to_owned(), image(&["/app/api"], &["serve"])),
        ("worker".to_owned(), image(&[], &["/worker"])),
    ]
    .into_iter()
    .collect();
    let out = injected(&pod, &configs);
    assert!(matches!(decide(&out, &configs), Decision::Skip { .. }));
    assert!(lookups(&out, "shop").is_empty());
}
