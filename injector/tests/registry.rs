//! Issue 18 through the real `sidekey-injector` binary over TLS: a target
//! container without a `command` gets the ENTRYPOINT and CMD of its image,
//! read from a real registry (Debian's docker-registry on loopback with TLS
//! from a generated CA and htpasswd auth; images built by umoci, pushed by
//! skopeo). Unknown tags, wrong passwords and platforms that disagree are
//! denied with the registry's answer; a registry that hangs is cut off at
//! the budget; a second review is served from the cache (the registry's
//! access log shows no second request).

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};
use sidekey_patch::AGENT_INSTALLED;
use sidekey_test_support::registry::{HangingServer, ImageSpec, TestRegistry};

struct Images {
    registry: TestRegistry,
    dir: tempfile::TempDir,
}

impl Images {
    fn ca(&self) -> PathBuf {
        self.registry.ca_file()
    }

    /// A Docker config.json with `password`, written to a file.
    fn auth(&self, name: &str, password: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, self.registry.docker_config(password)).unwrap();
        path
    }

    fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.host())
    }
}

fn images() -> Option<&'static Images> {
    static I: OnceLock<Option<Images>> = OnceLock::new();
    I.get_or_init(|| {
        let missing = TestRegistry::tools_missing();
        if !missing.is_empty() {
            sidekey_test_support::skip(&format!("registry tools missing: {}", missing.join(", ")));
            return None;
        }
        let registry = TestRegistry::start().expect("registry");
        let amd = ImageSpec {
            arch: "amd64",
            entrypoint: Some(&["/bin/app", "--flag"]),
            cmd: Some(&["serve", "--port=8080"]),
        };
        registry.push_image("web/app:1", &amd).unwrap();
        registry.push_image("web/cached:1", &amd).unwrap();
        registry
            .push_image(
                "web/cmdonly:1",
                &ImageSpec {
                    arch: "amd64",
                    entrypoint: None,
                    cmd: Some(&["/usr/bin/worker", "run"]),
                },
            )
            .unwrap();
        let arm = ImageSpec {
            arch: "arm64",
            entrypoint: Some(&["/bin/app-arm64"]),
            cmd: Some(&["serve"]),
        };
        registry.push_index("web/multi:diff", &[amd, arm]).unwrap();
        Some(Images {
            registry,
            dir: tempfile::tempdir().unwrap(),
        })
    })
    .as_ref()
}

struct Webhook {
    _dir: tempfile::TempDir,
    process: Process,
    client: Client,
}

impl Webhook {
    async fn start(args: &[&str]) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, cert, key) = write_certs(dir.path());
        let mut all = vec!["--registry-lookup"];
        all.extend_from_slice(args);
        let process = Process::start(&cert, &key, &all, &[]);
        let client = Client::connect(process.addr, &[&ca.der], Alpn::H2)
            .await
            .unwrap();
        Webhook {
            _dir: dir,
            process,
            client,
        }
    }

    async fn with_registry(i: &Images, password: &str, extra: &[&str]) -> Webhook {
        let ca = i.ca();
        let auth = i.auth(&format!("auth-{password}.json"), password);
        // The registry is on loopback: refused unless named exactly.
        let host = i.registry.host();
        let mut args = vec![
            "--registry-ca",
            ca.to_str().unwrap(),
            "--registry-auth",
            auth.to_str().unwrap(),
            "--registry-allow",
            host.as_str(),
        ];
        args.extend_from_slice(extra);
        Webhook::start(&args).await
    }

    async fn review(&mut self, uid: &str, pod: &Value) -> Value {
        let body = serde_json::to_vec(&review(uid, "team-a", "CREATE", pod.clone())).unwrap();
        let answer = self.client.send("POST", "/mutate", body).await.unwrap();
        let response = answer.response();
        assert_eq!(response["uid"], uid);
        response
    }

    async fn injected(&mut self, uid: &str, pod: &Value) -> Value {
        let response = self.review(uid, pod).await;
        assert_eq!(response["allowed"], true, "{uid}: {response}");
        let patch = patch_of(&response).unwrap_or_else(|| panic!("{uid}: no patch"));
        let mut out = pod.clone();
        sidekey_patch::json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    async fn denied(&mut self, uid: &str, pod: &Value) -> String {
        let response = self.review(uid, pod).await;
        assert_eq!(response["allowed"], false, "{uid}: {response}");
        assert_eq!(response["status"]["code"], 403);
        response["status"]["message"].as_str().unwrap().to_owned()
    }

    async fn metrics(&mut self) -> String {
        self.client
            .send("GET", "/metrics", Vec::new())
            .await
            .unwrap()
            .text()
    }
}

/// An opted-in pod whose one container runs `image` without a command.
fn pod_of(image: &str, args: Option<&[&str]>) -> Value {
    let mut p = pod(opted_in("api"));
    let c = p["spec"]["containers"][0].as_object_mut().unwrap();
    c.remove("command");
    match args {
        Some(a) => c.insert("args".into(), json!(a)),
        None => c.remove("args"),
    };
    c.insert("image".into(), json!(image));
    p
}

fn wrapped(tail: &[&str]) -> Value {
    let mut v = vec![AGENT_INSTALLED, "exec", "--"];
    v.extend_from_slice(tail);
    json!(v)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_is_what_the_runtime_would_run() {
    let Some(i) = images() else { return };
    let mut hook = Webhook::with_registry(i, i.registry.password(), &[]).await;

    // ENTRYPOINT then CMD.
    let out = hook
        .injected("ep-cmd", &pod_of(&i.image("web/app:1"), None))
        .await;
    let c = &out["spec"]["containers"][0];
    assert_eq!(
        c["command"],
        wrapped(&["/bin/app", "--flag", "serve", "--port=8080"])
    );
    assert!(c.get("args").is_none(), "{c}");

    // The container's args replace CMD: the runtime appends them.
    let out = hook
        .injected(
            "ep-args",
            &pod_of(&i.image("web/app:1"), Some(&["--port", "9090"])),
        )
        .await;
    let c = &out["spec"]["containers"][0];
    assert_eq!(c["command"], wrapped(&["/bin/app", "--flag"]));
    assert_eq!(c["args"], json!(["--port", "9090"]));

    // Only a CMD.
    let out = hook
        .injected("cmd-only", &pod_of(&i.image("web/cmdonly:1"), None))
        .await;
    assert_eq!(
        out["spec"]["containers"][0]["command"],
        wrapped(&["/usr/bin/worker", "run"])
    );

    // An index: the node selector picks; without one the platforms must agree.
    let mut multi = pod_of(&i.image("web/multi:diff"), None);
    let m = hook.denied("multi-any", &multi).await;
    for part in [
        i.image("web/multi:diff").as_str(),
        "linux/amd64",
        "linux/arm64",
        "kubernetes.io/arch",
        "sidekey.io/command.api",
    ] {
        assert!(m.contains(part), "{part:?} in {m}");
    }
    multi["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": "arm64"});
    let out = hook.injected("multi-arm64", &multi).await;
    assert_eq!(
        out["spec"]["containers"][0]["command"],
        wrapped(&["/bin/app-arm64", "serve"])
    );

    let text = hook.metrics().await;
    assert_eq!(metric(&text, "sidekey_injector_image_lookups_total"), 5);
    assert_eq!(
        metric(
            &text,
            "sidekey_injector_image_lookup_failures_total{reason=\"platform\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "sidekey_injector_image_lookup_duration_seconds_count"
        ),
        4,
        "app:1 with args came from the cache"
    );
    assert_eq!(
        metric(&text, "sidekey_injector_image_lookup_cache_hits_total"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tag_is_denied_naming_the_image_the_answer_and_the_fix() {
    let Some(i) = images() else { return };
    let mut hook = Webhook::with_registry(i, i.registry.password(), &[]).await;
    let image = i.image("web/app:no-such-tag");
    let m = hook.denied("unknown-tag", &pod_of(&image, None)).await;
    assert!(m.contains(&image), "{m}");
    assert!(
        m.to_lowercase().contains("manifest unknown") || m.contains("ManifestUnknown"),
        "{m}"
    );
    assert!(
        m.contains("sidekey.io/command.api") && m.contains("command"),
        "{m}"
    );
    let text = hook.metrics().await;
    assert_eq!(
        metric(
            &text,
            "sidekey_injector_image_lookup_failures_total{reason=\"not_found\"}"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_denied_without_showing_it() {
    let Some(i) = images() else { return };
    let wrong = "not-the-password-93f1";
    let mut hook = Webhook::with_registry(i, wrong, &[]).await;
    let image = i.image("web/app:1");
    let m = hook.denied("wrong-password", &pod_of(&image, None)).await;
    assert!(m.contains(&image) && m.contains("refused access"), "{m}");
    assert!(
        !m.contains(wrong) && !m.contains(i.registry.password()),
        "{m}"
    );
    let stderr = hook.process.stderr_text();
    assert!(!stderr.contains(wrong) && !stderr.contains(i.registry.password()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_hangs_is_cut_off_at_the_budget() {
    let hang = HangingServer::start().unwrap();
    let allow = hang.host();
    let mut hook =
        Webhook::start(&["--registry-budget", "500ms", "--registry-allow", &allow]).await;
    let image = format!("{}/web/app:1", hang.host());
    let m = hook.denied("hangs", &pod_of(&image, None)).await;
    assert!(m.contains(&image) && m.contains("budget of 500ms"), "{m}");
    let text = hook.metrics().await;
    assert_eq!(
        metric(
            &text,
            "sidekey_injector_image_lookup_failures_total{reason=\"timeout\"}"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_review_is_served_from_the_cache() {
    let Some(i) = images() else { return };
    let mut hook = Webhook::with_registry(i, i.registry.password(), &[]).await;
    let pod = pod_of(&i.image("web/cached:1"), None);
    let before = i.registry.manifest_gets("web/cached");
    let first = hook.injected("cold", &pod).await;
    let after_first = i.registry.manifest_gets("web/cached");
    assert!(after_first > before, "the first review read the registry");
    let second = hook.injected("cached", &pod).await;
    assert_eq!(
        first["spec"]["containers"][0],
        second["spec"]["containers"][0]
    );
    assert_eq!(
        i.registry.manifest_gets("web/cached"),
        after_first,
        "the registry saw no request for the second review"
    );
    let text = hook.metrics().await;
    assert_eq!(metric(&text, "sidekey_injector_image_lookups_total"), 2);
    assert_eq!(
        metric(&text, "sidekey_injector_image_lookup_cache_hits_total"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lookup_a_pod_without_a_command_is_still_told_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, cert, key) = write_certs(dir.path());
    let process = Process::start(&cert, &key, &[], &[]);
    let mut client = Client::connect(process.addr, &[&ca.der], Alpn::H2)
        .await
        .unwrap();
    // No registry is asked: the image is on a port nothing listens on.
    let body = serde_json::to_vec(&review(
        "off",
        "team-a",
        "CREATE",
        pod_of("127.0.0.1:1/web/app:1", None),
    ))
    .unwrap();
    let r = client
        .send("POST", "/mutate", body)
        .await
        .unwrap()
        .response();
    assert_eq!(r["allowed"], false);
    let m = r["status"]["message"].as_str().unwrap();
    assert!(m.contains("sidekey.io/command.api"), "{m}");
    assert!(!m.contains("registry"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outside_the_rules_is_refused_without_a_request() {
    let Some(i) = images() else { return };
    let image = i.image("web/app:1");
    let before = i.registry.manifest_gets("web/app");
    // Loopback, not named exactly; then an allow list without it (the
    // variable, comma-separated).
    for (uid, args, env, rule) in [
        (
            "loopback",
            Vec::<&str>::new(),
            Vec::<(&str, &str)>::new(),
            "is a loopback address",
        ),
        (
            "allow-list",
            vec![],
            vec![("SIDEKEY_INJECTOR_REGISTRY_ALLOW", "ghcr.io,*.corp.example")],
            "is not matched by --registry-allow (ghcr.io, *.corp.example)",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, cert, key) = write_certs(dir.path());
        let ca_file = i.ca();
        let mut all = vec![
            "--registry-lookup",
            "--registry-ca",
            ca_file.to_str().unwrap(),
        ];
        all.extend(args);
        let process = Process::start(&cert, &key, &all, &env);
        let client = Client::connect(process.addr, &[&ca.der], Alpn::H2)
            .await
            .unwrap();
        let mut hook = Webhook {
            _dir: dir,
            process,
            client,
        };
        let m = hook.denied(uid, &pod_of(&image, None)).await;
        assert!(
            m.contains(&image) && m.contains(rule) && m.contains("sidekey.io/command.api"),
            "{uid}: {m}"
        );
        let text = hook.metrics().await;
        assert_eq!(
            metric(
                &text,
                "sidekey_injector_image_lookup_failures_total{reason=\"refused\"}"
            ),
            1,
            "{uid}"
        );
    }
    assert_eq!(
        i.registry.manifest_gets("web/app"),
        before,
        "the registry saw no request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_container_named_as_a_target_is_denied_before_any_lookup() {
    // Init containers are never targets (the planner delivers only to app
    // containers): one without a command is not looked up, the pod is
    // denied naming it.
    let Some(i) = images() else { return };
    let mut hook = Webhook::with_registry(i, i.registry.password(), &[]).await;
    let mut p = pod_of(&i.image("web/app:1"), None);
    p["metadata"]["annotations"]["sidekey.io/containers"] = json!("setup");
    p["spec"]["initContainers"] = json!([{"name": "setup", "image": i.image("web/cmdonly:1")}]);
    let m = hook.denied("init-target", &p).await;
    assert!(m.contains("setup") && m.contains("init container"), "{m}");
    let text = hook.metrics().await;
    assert_eq!(metric(&text, "sidekey_injector_image_lookups_total"), 0);
}
