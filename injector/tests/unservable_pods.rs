//! Issue 22 through the real `sidekey-injector` binary over TLS: Windows
//! pods and pods without a command get a clear denial; args-only
//! containers (`sidekey.io/command: []`) and mixed-image pods
//! (`sidekey.io/command.<container>`) are injected; files delivery shares
//! the files with an unknown app user through fsGroup, or warns when it
//! cannot.

mod common;

use common::*;
use serde_json::{json, Value};
use sidekey_patch::AGENT_INSTALLED;

/// The injector, a client over TLS, and the reviews' answers.
struct Webhook {
    _dir: tempfile::TempDir,
    _process: Process,
    client: Client,
}

impl Webhook {
    async fn start() -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, cert, key) = write_certs(dir.path());
        let process = Process::start(&cert, &key, &[], &[]);
        let client = Client::connect(process.addr, &[&ca.der], Alpn::H2)
            .await
            .unwrap();
        Webhook {
            _dir: dir,
            _process: process,
            client,
        }
    }

    /// The `response` for `pod` created in team-a.
    async fn review(&mut self, uid: &str, pod: &Value) -> Value {
        let body = serde_json::to_vec(&review(uid, "team-a", "CREATE", pod.clone())).unwrap();
        let answer = self.client.send("POST", "/mutate", body).await.unwrap();
        let response = answer.response();
        assert_eq!(response["uid"], uid);
        response
    }

    /// The pod as patched (the answer must allow it with a patch).
    async fn injected(&mut self, uid: &str, pod: &Value) -> (Value, Vec<String>) {
        let response = self.review(uid, pod).await;
        assert_eq!(response["allowed"], true, "{uid}: {response}");
        let patch = patch_of(&response).unwrap_or_else(|| panic!("{uid}: no patch"));
        let mut out = pod.clone();
        sidekey_patch::json_patch::patch(&mut out, &patch).unwrap();
        let warnings = response["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        (out, warnings)
    }

    /// The denial message (the answer must refuse the pod).
    async fn denied(&mut self, uid: &str, pod: &Value) -> String {
        let response = self.review(uid, pod).await;
        assert_eq!(response["allowed"], false, "{uid}: {response}");
        assert_eq!(response["status"]["code"], 403);
        assert!(response.get("patch").is_none());
        response["status"]["message"].as_str().unwrap().to_owned()
    }
}

fn opted(extra: &[(&str, &str)]) -> Value {
    let mut a = opted_in("api");
    for (k, v) in extra {
        a[*k] = json!(v);
    }
    pod(a)
}

fn without_command(pod: &mut Value, i: usize) {
    pod["spec"]["containers"][i]
        .as_object_mut()
        .unwrap()
        .remove("command");
}

fn wrapped(tail: &[&str]) -> Value {
    let mut v = vec![AGENT_INSTALLED, "exec", "--"];
    v.extend_from_slice(tail);
    json!(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pods_are_denied_with_the_reason() {
    let mut hook = Webhook::start().await;
    let mut by_os = opted(&[]);
    by_os["spec"]["os"] = json!({"name": "windows"});
    let m = hook.denied("win-os", &by_os).await;
    assert!(
        m.contains("the pod runs on Windows (spec.os.name is windows)")
            && m.contains("sidekey does not support Windows pods"),
        "{m}"
    );
    let mut by_selector = opted(&[("sidekey.io/delivery", "files")]);
    by_selector["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "windows"});
    let m = hook.denied("win-selector", &by_selector).await;
    assert!(
        m.contains("the pod runs on Windows (its nodeSelector kubernetes.io/os is windows)"),
        "{m}"
    );
    let mut linux = opted(&[]);
    linux["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    hook.injected("linux", &linux).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_a_command_is_told_entrypoint_then_cmd() {
    let mut hook = Webhook::start().await;
    let mut pod = opted(&[]);
    without_command(&mut pod, 0);
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("args");
    let m = hook.denied("no-command", &pod).await;
    for part in [
        "container \"api\" has no command in the pod spec",
        "the image's ENTRYPOINT followed by its CMD (unless the container sets args)",
        "sidekey.io/command.api (this container)",
        "sidekey.io/command (every target without a command)",
    ] {
        assert!(m.contains(part), "{part}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_only_and_mixed_image_pods_are_injected() {
    let mut hook = Webhook::start().await;

    // Args-only: the image has no ENTRYPOINT, the args are the command.
    let mut pod = opted(&[("sidekey.io/command", "[]")]);
    without_command(&mut pod, 0);
    pod["spec"]["containers"][0]["args"] = json!(["python3", "-m", "app"]);
    let (out, warnings) = hook.injected("args-only", &pod).await;
    let c = &out["spec"]["containers"][0];
    assert_eq!(c["command"], wrapped(&[]));
    assert_eq!(c["args"], json!(["python3", "-m", "app"]));
    assert!(warnings.is_empty(), "{warnings:?}");

    // The same without args: nothing would run.
    let mut pod = opted(&[("sidekey.io/command", "[]")]);
    without_command(&mut pod, 0);
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("args");
    let m = hook.denied("args-only-no-args", &pod).await;
    assert!(
        m.contains("annotation sidekey.io/command is [] (the image has no ENTRYPOINT"),
        "{m}"
    );

    // Two images: a command per container.
    let mut pod = opted(&[
        ("sidekey.io/command.api", "[\"/app/api\"]"),
        ("sidekey.io/command.worker", "[]"),
    ]);
    without_command(&mut pod, 0);
    let mut worker = pod["spec"]["containers"][0].clone();
    worker["name"] = json!("worker");
    worker["image"] = json!("registry.example/worker:2");
    worker["args"] = json!(["/app/worker", "--queue", "jobs"]);
    worker.as_object_mut().unwrap().remove("ports");
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(worker);
    let (out, warnings) = hook.injected("mixed", &pod).await;
    let cs = &out["spec"]["containers"];
    assert_eq!(cs[0]["command"], wrapped(&["/app/api"]));
    assert_eq!(cs[0]["args"], json!(["--port", "8080"]));
    assert_eq!(cs[1]["command"], wrapped(&[]));
    assert_eq!(cs[1]["args"], json!(["/app/worker", "--queue", "jobs"]));
    assert!(warnings.is_empty(), "{warnings:?}");

    // A per-container command for a container sidekey does not wrap.
    let mut not_target = pod.clone();
    not_target["metadata"]["annotations"]["sidekey.io/containers"] = json!("api");
    let m = hook.denied("mixed-not-target", &not_target).await;
    assert!(
        m.contains(
            "annotation sidekey.io/command.worker: container \"worker\" is not a target: \
             sidekey.io/containers does not name it"
        ),
        "{m}"
    );
    let mut unknown = pod.clone();
    unknown["metadata"]["annotations"]["sidekey.io/command.wroker"] = json!("[\"/x\"]");
    let m = hook.denied("mixed-typo", &unknown).await;
    assert!(
        m.contains(
            "annotation sidekey.io/command.wroker: \"wroker\" is not a container of this pod"
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_for_an_unknown_user_get_a_group_or_a_warning() {
    let mut hook = Webhook::start().await;
    // The fixture's container runs as 1000: one known user, no group.
    let known = opted(&[("sidekey.io/delivery", "files")]);
    let (out, warnings) = hook.injected("files-known-user", &known).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(out["spec"]["securityContext"], json!({}));
    assert_eq!(
        out["spec"]["initContainers"][0]["securityContext"]["runAsUser"],
        1000
    );
    // The image's own user: fsGroup and --group.
    let mut pod = known.clone();
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let (out, warnings) = hook.injected("files-unknown-user", &pod).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(out["spec"]["securityContext"]["fsGroup"], 65532);
    let init = &out["spec"]["initContainers"][0];
    assert_eq!(init["name"], "sidekey-init");
    let cmd = init["command"].as_array().unwrap();
    assert_eq!(cmd[cmd.len() - 2..], [json!("--group"), json!("65532")]);

    // The injected pod comes back (reinvocation): recognised, no patch.
    let response = hook.review("files-again", &out).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");

    let mut with_secret = pod.clone();
    with_secret["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "tls", "secret": {"secretName": "tls"}}));
    let (out, warnings) = hook.injected("files-secret-volume", &with_secret).await;
    assert!(out["spec"]["securityContext"].get("fsGroup").is_none());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("volume tls (secret) is not (fsGroup would change"),
        "{warnings:?}"
    );
}
