//! A pod's whole life with no cluster: each example under deploy/examples
//! goes through the real `sidekey-injector` over TLS, the patch is applied
//! by an independent JSON Patch implementation (Python's jsonpatch) and the
//! pod validated with kubernetes-validate, then its containers run as
//! processes in Kubernetes order (see `sidekey_e2e::Kubelet`) with the real
//! `sidekey-agent` against moto. The checks are on what the app process
//! really sees, and on what is left on disk.

use sidekey_e2e::support::{
    self, apply_and_validate, bin_dir, free_port, is_root, repo, walk, PutTo,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidekey_e2e::{pod_from_workload, Image, Kubelet};
use sidekey_test_support::{assert_no_secret, aws_env, create_kms_key, Moto};

const AGENT_IMAGE: &str = "sidekey/agent:e2e";

/// One test's world: moto, a KMS key, a unique prefix, the injector.
struct World {
    dir: tempfile::TempDir,
    prefix: String,
    kms_key: String,
    injector: Child,
    port: u16,
    /// Values written: never on disk outside tmpfs, never in logs.
    secrets: Vec<String>,
}

impl World {
    fn new(name: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let moto = Moto::shared();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let kms_key = rt
            .block_on(create_kms_key(moto.endpoint()))
            .expect("kms key");
        let prefix = format!("e2e{}{}", name.replace('_', ""), std::process::id());
        // The injector's configuration: the shipped ConfigMap's, with this
        // test's prefix, key and agent image.
        let shipped =
            std::fs::read_to_string(repo().join("deploy/base/configmap.yaml")).expect("configmap");
        let cm: Value = serde_norway::from_str(&shipped).expect("configmap yaml");
        let mut config: Value =
            serde_norway::from_str(cm["data"]["config.yaml"].as_str().expect("config.yaml"))
                .expect("config");
        config["prefix"] = json!(prefix);
        config["kmsKey"] = json!(kms_key);
        config["agentImage"] = json!(AGENT_IMAGE);
        let config_path = dir.path().join("config.yaml");
        std::fs::write(
            &config_path,
            serde_norway::to_string(&config).expect("yaml"),
        )
        .expect("write");

        // A CA and a serving certificate, made now.
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let sh = format!(
            "set -e; cd {0}; \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=e2e-ca -keyout ca.key -out ca.crt 2>/dev/null; \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout tls.key -out tls.csr 2>/dev/null; \
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > ext; \
             openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt 2>/dev/null",
            tls.display()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(sh)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        let injector = Command::new(bin_dir().join("sidekey-injector"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(tls.join("tls.crt"))
            .arg("--tls-key")
            .arg(tls.join("tls.key"))
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("POD_NAMESPACE", "sidekey-system")
            .env("SIDEKEY_LOG", "trace")
            .env(
                "SIDEKEY_AUDIT",
                format!("file:{}", dir.path().join("injector-audit.jsonl").display()),
            )
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("injector.out")).expect("log"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("injector.err")).expect("log"),
            ))
            .spawn()
            .expect("sidekey-injector starts");
        let world = World {
            dir,
            prefix,
            kms_key,
            injector,
            port,
            secrets: Vec::new(),
        };
        world.wait_ready();
        world
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let out = self.curl(
                &["-fsS", &format!("https://127.0.0.1:{}/readyz", self.port)],
                None,
            );
            if out.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "injector never became ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn curl(&self, args: &[&str], body: Option<&Path>) -> std::process::Output {
        support::curl(self.dir.path(), args, body)
    }

    fn aws_env(&self) -> Vec<(String, String)> {
        aws_env(Moto::shared().endpoint())
    }

    /// Writes a secret with the real CLI.
    fn put(&mut self, env: &str, service: &str, key: &str, value: &str) {
        self.secrets.push(value.to_owned());
        let to = PutTo {
            aws: self.aws_env(),
            prefix: &self.prefix,
            kms_key: &self.kms_key,
        };
        support::put_secret(self.dir.path(), to, [env, service, key], value);
    }

    /// Sends the pod through the injector as the API server would, applies
    /// the patch independently and validates the result.
    fn admit(&self, pod: &Value, namespace: &str) -> Value {
        support::admit(self.dir.path(), self.port, "e2e-0001", pod, namespace)
    }

    /// No value in the agent's own output: the injected containers'
    /// stdout and stderr, and what an app container printed before the app
    /// started (the agent's audit record and logs).
    fn scan_output(&self, run: &sidekey_e2e::PodRun) {
        let needles: Vec<&[u8]> = self.secrets.iter().map(|s| s.as_bytes()).collect();
        for c in &run.containers {
            assert_no_secret(&format!("stderr of {}", c.name), &c.stderr, &needles);
            let stdout = c.stdout_str();
            let agent_part = match stdout.find("APP-STARTED") {
                Some(i) => &stdout[..i],
                None => &stdout[..],
            };
            assert_no_secret(
                &format!("agent output in {}", c.name),
                agent_part.as_bytes(),
                &needles,
            );
        }
    }

    /// Both leak checks: the agent's output and the test's directories.
    fn scan(&self, run: &sidekey_e2e::PodRun) {
        self.scan_output(run);
        self.scan_disk();
    }

    fn scan_disk(&self) {
        let needles: Vec<&[u8]> = self.secrets.iter().map(|s| s.as_bytes()).collect();
        for entry in walk(self.dir.path()) {
            if let Ok(bytes) = std::fs::read(&entry) {
                assert_no_secret(&entry.display().to_string(), &bytes, &needles);
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.injector.kill();
        let _ = self.injector.wait();
    }
}

/// The app's image: a script that shows what the process sees.
fn app_image(dir: &Path, path: &str) -> Image {
    let script = dir.join(format!("app-{}", path.replace('/', "_")));
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo APP-STARTED\n\
         env | grep -E '^(DB_|API_|SHARED|ONLY|SIDEKEY_)' | sort | sed 's/^/ENV /'\n\
         if [ -d /run/secrets/sidekey ]; then\n\
           for f in /run/secrets/sidekey/*; do\n\
             printf 'FILE %s %s %s\\n' \"$(basename \"$f\")\" \"$(stat -L -c %a \"$f\")\" \"$(cat \"$f\" | tr '\\n' '|')\";\n\
           done\n\
         fi\n",
    )
    .expect("write app");
    Image::default()
        .with_file(path, &script, 0o755)
        .with_entrypoint(&[path])
}

fn agent_image() -> Image {
    Image::default().with_file("/sidekey-agent", bin_dir().join("sidekey-agent"), 0o755)
}

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/examples").join(name)).expect("example");
    // The last document is the workload (a Namespace may come first).
    let mut workload = Value::Null;
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if v["kind"] != "Namespace" {
            workload = v;
        }
    }
    workload
}

/// Admits and runs one example in `namespace`.
fn live(
    w: &World,
    file: &str,
    namespace: &str,
    app_path: &str,
    app_image_name: &str,
) -> sidekey_e2e::PodRun {
    let pod = pod_from_workload(&example(file), namespace).expect("pod");
    let response = w.admit(&pod, namespace);
    assert_eq!(response["allowed"], true, "{response}");
    let patched = apply_and_validate(w.dir.path(), &pod, &response);
    let mut kubelet = Kubelet::new(w.dir.path()).expect("kubelet");
    kubelet.extra_env = w.aws_env();
    kubelet.image(AGENT_IMAGE, agent_image());
    kubelet.image(app_image_name, app_image(w.dir.path(), app_path));
    kubelet.run(&patched).expect("pod runs")
}

/// What an app container printed, once it exited 0.
fn app_output(run: &sidekey_e2e::PodRun, name: &str) -> String {
    let app = run
        .container(name)
        .unwrap_or_else(|| panic!("{name} never ran"));
    assert_eq!(app.status, Some(0), "{}", app.stderr_str());
    app.stdout_str()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            sidekey_test_support::skip(
                "playing the kubelet needs root (mount namespaces, tmpfs); CI runs as root",
            );
            return;
        }
    };
}

#[test]
fn env_delivery_app_sees_exactly_its_secrets() {
    require_root!();
    let mut w = World::new("env");
    w.put("staging", "api", "DB_PASSWORD", "e2e-staging-db-password-1");
    w.put("staging", "api", "API_TOKEN", "e2e-staging-api-token-2");
    w.put("other", "api", "DB_PASSWORD", "e2e-other-env-password-3");
    let run = live(
        &w,
        "env-deployment.yaml",
        "staging",
        "/app/api",
        "ghcr.io/example/api:1.4.2",
    );
    let out = app_output(&run, "api");
    assert!(out.contains("APP-STARTED"));
    assert!(
        out.contains("ENV DB_PASSWORD=e2e-staging-db-password-1"),
        "{out}"
    );
    assert!(
        out.contains("ENV API_TOKEN=e2e-staging-api-token-2"),
        "{out}"
    );
    assert!(
        !out.contains("e2e-other-env-password-3"),
        "another environment leaked in"
    );
    assert!(
        !out.contains("ENV SIDEKEY_"),
        "SIDEKEY_* must not reach the app: {out}"
    );
    w.scan(&run);
}

#[test]
fn env_delivery_fails_closed_when_a_secret_is_missing() {
    require_root!();
    let w = World::new("missing");
    // Nothing written for service `api`.
    let run = live(
        &w,
        "env-deployment.yaml",
        "staging",
        "/app/api",
        "ghcr.io/example/api:1.4.2",
    );
    let app = run.container("api").expect("api container");
    assert_eq!(app.status, Some(69), "{}", app.stderr_str());
    assert!(
        !app.stdout_str().contains("APP-STARTED"),
        "the app ran without its secrets"
    );
    let err = app.stderr_str();
    assert!(
        err.contains("staging") && err.contains("ParameterNotFound"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn inheritance_environment_values_override_staging() {
    require_root!();
    let mut w = World::new("inherit");
    w.put("staging", "api", "DB_PASSWORD", "e2e-base-staging-password");
    w.put("staging", "api", "API_TOKEN", "e2e-base-staging-token-only");
    w.put("pr-123", "api", "DB_PASSWORD", "e2e-pr-123-own-password");
    let run = live(
        &w,
        "inherit-staging.yaml",
        "pr-123",
        "/app/api",
        "ghcr.io/example/api:pr-123",
    );
    let out = app_output(&run, "api");
    assert!(
        out.contains("ENV DB_PASSWORD=e2e-pr-123-own-password"),
        "{out}"
    );
    assert!(
        out.contains("ENV API_TOKEN=e2e-base-staging-token-only"),
        "{out}"
    );
    w.scan(&run);
}

#[test]
fn files_with_refresh_native_sidecar_then_the_job_completes() {
    require_root!();
    let mut w = World::new("files");
    w.put("staging", "db", "DB_URL", "e2e-postgres-url-value-9");
    let run = live(
        &w,
        "job-native-sidecar.yaml",
        "staging",
        "/app/migrate",
        "ghcr.io/example/migrate:1.0.0",
    );
    let out = app_output(&run, "migrate");
    // per-key: one file, mode 0400 or 0440 (fsGroup), the exact value.
    assert!(
        out.contains("FILE DB_URL 400 e2e-postgres-url-value-9")
            || out.contains("FILE DB_URL 440 e2e-postgres-url-value-9"),
        "{out}"
    );
    assert!(
        run.container("sidekey-sidecar").is_some(),
        "the sidecar ran"
    );
    w.scan(&run);
}

#[test]
fn files_dotenv_for_a_deployment() {
    require_root!();
    let mut w = World::new("dotenv");
    w.put("staging", "web", "SHARED", "e2e-web-shared-value");
    let run = live(
        &w,
        "files-refresh-deployment.yaml",
        "staging",
        "/app/web",
        "ghcr.io/example/web:2.0.0",
    );
    let out = app_output(&run, "web");
    assert!(out.contains("e2e-web-shared-value"), "{out}");
    w.scan(&run);
}

#[test]
fn both_deliveries_env_and_files_in_one_container() {
    require_root!();
    let mut w = World::new("both");
    w.put("staging", "api", "DB_PASSWORD", "e2e-both-db-password-5");
    w.put("staging", "shared", "SHARED_FLAG", "e2e-both-shared-flag-6");
    let run = live(
        &w,
        "both-delivery.yaml",
        "staging",
        "/app/worker",
        "ghcr.io/example/worker:3.1.0",
    );
    let out = app_output(&run, "worker");
    // Later services win; both reach the environment and the JSON file.
    assert!(
        out.contains("ENV DB_PASSWORD=e2e-both-db-password-5"),
        "{out}"
    );
    assert!(
        out.contains("ENV SHARED_FLAG=e2e-both-shared-flag-6"),
        "{out}"
    );
    // No user in the pod: the injector set fsGroup, the file is 0440.
    assert!(out.contains("FILE secrets.json 440"), "{out}");
    assert!(
        out.contains("\"DB_PASSWORD\":\"e2e-both-db-password-5\"")
            || out.contains("\"DB_PASSWORD\": \"e2e-both-db-password-5\""),
        "{out}"
    );
    w.scan(&run);
}

/// An app that shows its arguments, its user and groups, its variables and
/// whether it can read each secret file.
fn showing_app_image(dir: &Path, path: &str) -> Image {
    let script = dir.join(format!("show-{}", path.replace('/', "_")));
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo APP-STARTED\n\
         echo \"ARGS $0 $*\"\n\
         echo \"USER $(id -u) GROUPS $(id -G)\"\n\
         env | grep -E '^(DB_|SIDEKEY_)' | sort | sed 's/^/ENV /'\n\
         for f in /run/secrets/sidekey/*; do\n\
           if v=$(cat \"$f\" 2>/dev/null); then\n\
             printf 'FILE %s %s %s\\n' \"$(basename \"$f\")\" \"$(stat -L -c %a \"$f\")\" \"$v\";\n\
           else\n\
             printf 'UNREADABLE %s\\n' \"$(basename \"$f\")\";\n\
           fi\n\
         done\n",
    )
    .expect("write app");
    Image::default().with_file(path, &script, 0o755)
}

/// Runs the mixed-image example's pod as admitted (or as `edit` leaves
/// it): `api` on an image with an ENTRYPOINT and user 4321, `worker` on
/// one without ENTRYPOINT and user 4322, the agent image's user 65532.
fn run_mixed(w: &World, edit: fn(&mut Value)) -> sidekey_e2e::PodRun {
    let pod = pod_from_workload(&example("mixed-images.yaml"), "staging").expect("pod");
    let response = w.admit(&pod, "staging");
    assert_eq!(response["allowed"], true, "{response}");
    let mut patched = apply_and_validate(w.dir.path(), &pod, &response);
    edit(&mut patched);
    let mut kubelet = Kubelet::new(w.dir.path()).expect("kubelet");
    kubelet.extra_env = w.aws_env();
    kubelet.image(AGENT_IMAGE, agent_image().with_user(65532));
    kubelet.image(
        "ghcr.io/example/api:1.4.2",
        showing_app_image(w.dir.path(), "/app/api")
            .with_entrypoint(&["/app/api"])
            .with_user(4321),
    );
    kubelet.image(
        "ghcr.io/example/queue-worker:1.0.0",
        showing_app_image(w.dir.path(), "/app/worker").with_user(4322),
    );
    kubelet.run(&patched).expect("pod runs")
}

/// Per-container commands for two images, one of them args-only
/// (`sidekey.io/command.worker: []`): each app runs with its own args,
/// under its image's user, with its secrets in its environment and in
/// files it can read through the fsGroup the injector set.
#[test]
fn mixed_images_args_only_and_unknown_users_get_their_secrets() {
    require_root!();
    let mut w = World::new("mixed");
    w.put("staging", "api", "DB_PASSWORD", "e2e-mixed-db-password-7");
    let run = run_mixed(&w, |_| {});
    let api = app_output(&run, "api");
    assert!(api.contains("ARGS /app/api --port 8080\n"), "{api}");
    let worker = app_output(&run, "worker");
    assert!(
        worker.contains("ARGS /app/worker --queue jobs\n"),
        "{worker}"
    );
    for (out, uid) in [(&api, 4321), (&worker, 4322)] {
        assert!(
            out.contains(&format!("USER {uid} GROUPS {uid} 65532\n")),
            "{out}"
        );
        assert!(
            out.contains("ENV DB_PASSWORD=e2e-mixed-db-password-7"),
            "{out}"
        );
        assert!(
            out.contains("FILE DB_PASSWORD 440 e2e-mixed-db-password-7"),
            "{out}"
        );
        assert!(!out.contains("UNREADABLE"), "{out}");
    }
    w.scan(&run);
}

/// The control: the same pod without the fsGroup and `--group` the
/// injector added (what it made before) leaves the files unreadable to
/// the apps' own users.
#[test]
fn mixed_images_without_the_group_cannot_read_the_files() {
    require_root!();
    let mut w = World::new("nogroup");
    w.put("staging", "api", "DB_PASSWORD", "e2e-nogroup-db-password-8");
    let run = run_mixed(&w, |pod| {
        assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 65532);
        pod["spec"]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("fsGroup");
        for c in pod["spec"]["initContainers"].as_array_mut().unwrap() {
            let cmd = c["command"].as_array_mut().unwrap();
            if let Some(i) = cmd.iter().position(|a| a == "--group") {
                cmd.truncate(i);
            }
        }
    });
    for name in ["api", "worker"] {
        let out = app_output(&run, name);
        assert!(out.contains("UNREADABLE DB_PASSWORD"), "{out}");
        assert!(!out.contains("FILE DB_PASSWORD"), "{out}");
    }
    w.scan(&run);
}
